"""Embedding-reward demonstration (issue 15): PPO on drl/PandaReach-v0 rewarded only by the similarity of an
embedding of the next observation to the mean embedding of goal demos' final observations, against the
untrained baselines (a uniform random policy, and the PPO policy at step 0).

    python -m benchmarks.embedding_reward [--seeds 3] [--steps N] [--demo-episodes 100] [--action-noise 0.5]
                                          [--encoder-steps 2000] [--device cpu|cuda|auto]
                                          [--out benchmarks/results/embedding_reward] [--dry-run]

Per seed: ``--demo-episodes`` episodes of the env's scripted expert with Gaussian action noise
(``--action-noise``, in half-widths of the action box) are recorded as a drl demo file; an encoder of the
``critic`` group's positions (EE position, goal, goal - EE: what a camera would see; not the joint readings) is
trained on them by :func:`drl.nn.encoders.train_progress_encoder` (``--encoder-steps``) and saved; PPO then
trains from ``configs/ppo/drl-PandaReach-v0-embedding.yaml`` (wrapper ``embedding_reward``, the env reward
replaced; ``--steps`` overrides its budget) with both files. The env's own reward is the sparse success, so
the logged evaluation return (``EVAL_EPISODES`` deterministic episodes) is the success rate the agent never
saw. Claim (issue 15): the final success rate is above the untrained baselines: above the random policy's
(``RANDOM_EPISODES`` episodes) and above the step-0 evaluation, in the mean over seeds and for every seed.
Writes ``results.json``, ``report.md`` and ``curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, study_header, wrapped_config_line
from benchmarks.harness.report import number as _n

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
ENV_ID = "drl/PandaReach-v0"
CONFIG = "configs/ppo/drl-PandaReach-v0-embedding.yaml"
GROUP = "critic"
FEATURES = list(range(14, 17)) + list(range(25, 31))  # critic group of reach: EE position, goal, goal - EE
EVAL_EPISODES = 50
RANDOM_EPISODES = 100
PLOT = "curves.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embedding_reward",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds (0 .. N-1): demos, encoder and PPO each")
    parser.add_argument("--steps", type=int, default=None, help=f"PPO env steps per run (default: {CONFIG}'s)")
    parser.add_argument("--demo-episodes", type=int, default=100, help="scripted-expert episodes per seed")
    parser.add_argument("--action-noise", type=float, default=0.5, help="noise on the expert's actions")
    parser.add_argument("--encoder-steps", type=int, default=2000, help="Adam steps of the encoder")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "embedding_reward")
    args = parser.parse_args(argv)
    args.only = None
    if args.action_noise < 0:
        parser.error(f"--action-noise must be >= 0, got {args.action_noise}")
    script.check_args(parser, args, ("seeds", "steps", "demo_episodes", "encoder_steps"), [])
    return args


# --- the goal demos, the encoder, the floor ----------------------------------------------------
def prepare(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Record the noisy expert's demos and train the encoder on them: their files and the demos' success rate."""
    from drl.nn.encoders import save_encoder, train_progress_encoder
    from envs.tasks.demos import collect_demos, save_demos

    demos = collect_demos(ENV_ID, args.demo_episodes, seed=seed, num_envs=8, env_kwargs={"reward_type": "sparse"},
                          action_noise=args.action_noise)
    demo_file = save_demos(demos, work / f"demos-s{seed}.pt")
    encoder = train_progress_encoder(demos, group=GROUP, steps=args.encoder_steps, features=FEATURES, seed=seed)
    encoder_file = save_encoder(encoder, work / f"encoder-s{seed}.pt")
    return {"demos": str(demo_file), "encoder": str(encoder_file), "demo_success": demos["meta"]["success_rate"],
            "demo_steps": int(demos["meta"]["num_steps"])}


def random_success(seed: int) -> float:
    """Success rate of uniform random actions over ``RANDOM_EPISODES`` episodes."""
    from envs.tasks.demos import collect_demos

    generator = torch.Generator().manual_seed(seed + 1000)
    demos = collect_demos(ENV_ID, RANDOM_EPISODES, seed=seed + 1000, num_envs=10,
                          env_kwargs={"reward_type": "sparse"},
                          policy=lambda env, obs: torch.rand(env.num_envs, 3, generator=generator) * 2 - 1)
    return float(demos["meta"]["success_rate"])


def untrained_success(cfg: Any, run_dir: Path) -> float:
    """The success rate of the run's PPO policy before any update (built as the run builds it, same seed),
    evaluated as the runner evaluates (``EVAL_EPISODES`` deterministic episodes, the eval env seed)."""
    from drl.registry import AGENTS
    from drl.runners.base import EVAL_SEED_OFFSET, evaluate_policy

    spec = AGENTS[cfg.agent]
    runner = spec.runner_class(cfg, spec.agent_class, run_dir)
    try:
        returns = evaluate_policy(runner.agent, runner.eval_env, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET)
    finally:
        runner.close()
    return statistics.fmean(returns)


# --- one run --------------------------------------------------------------------------------
def run(seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.api import load_config
    from drl.config import load_yaml, to_dict

    files = prepare(seed, args, work)
    raw = load_yaml(ROOT / CONFIG)
    wrappers = [dict(w, goal_demos=files["demos"], encoder_file=files["encoder"]) if w["name"] == "embedding_reward"
                else w for w in raw["wrappers"]]
    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "env": {"num_eval_envs": 10}, "wrappers": wrappers}
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    cfg = load_config(config_file=ROOT / CONFIG, overrides=overrides)
    untrained = untrained_success(cfg, work / f"untrained-s{seed}")
    _, summary, rows = script.train_run(cfg, work / f"ppo-s{seed}")
    points = [{"step": 0, "success": untrained}] + script.eval_points(rows, name="success")  # step 0: untrained
    sims = [float(r["embedding_reward/similarity"]) for r in rows if r.get("embedding_reward/similarity")]
    train_s = summary["wall_s"] - summary["eval_s"]
    return {"points": points, "final": points[-1]["success"] if points else None,
            "untrained": untrained,
            "random": random_success(seed), "demo_success": files["demo_success"], "demo_steps": files["demo_steps"],
            "similarity_first": sims[0] if sims else None, "similarity_last": sims[-1] if sims else None,
            "steps": summary["steps"], "sps": summary["steps"] / max(train_s, 1e-9),
            "config": {"file": CONFIG, "total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs,
                       "eval_interval": cfg.eval_interval, "algo": to_dict(cfg.algo),
                       "wrappers": [dict(w, goal_demos="<the seed's demos>", encoder_file="<the seed's encoder>")
                                    for w in cfg.wrappers]}}


# --- summary, report, plot ------------------------------------------------------------------
def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds that ran, and whether the claim holds (mean and every seed above both floors)."""
    done = [r for r in runs if "error" not in r and r.get("final") is not None]
    finals = [r["final"] for r in done]
    out = {"seeds": len(done), "errors": len(runs) - len(done), "final_mean": _mean(finals),
           "final_std": statistics.pstdev(finals) if finals else None, "untrained_mean": _mean([r["untrained"]
                                                                                               for r in done]),
           "random_mean": _mean([r["random"] for r in done]), "demo_success": _mean([r["demo_success"] for r in done]),
           "sps": _mean([r["sps"] for r in done])}
    floors = [v for v in (out["untrained_mean"], out["random_mean"]) if v is not None]
    every = all(r["final"] > max(r["random"], r["untrained"] if r["untrained"] is not None else 0.0) for r in done)
    out["claim"] = bool(done) and len(done) >= 3 and out["final_mean"] > max(floors, default=0.0) and every
    return out


def claim_line(summary: dict[str, Any]) -> str:
    verdict = "yes" if summary["claim"] else "no"
    return (f"- PPO on the embedding reward ends above the untrained baselines (mean and every seed, >= 3 seeds): "
            f"{verdict} (final success {_n(summary['final_mean'], 2)} +- {_n(summary['final_std'], 2)}; step 0 "
            f"{_n(summary['untrained_mean'], 2)}; random policy {_n(summary['random_mean'], 2)})")


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header(f"Embedding-similarity reward from goal demos vs untrained baselines, {ENV_ID}", meta)
    lines += [f"{summary['seeds']} seeds. Goal demos per seed: {meta['demo_episodes']} scripted-expert episodes with "
              f"action noise {meta['action_noise']} (success {_n(summary['demo_success'], 2)}); encoder: "
              f"train_progress_encoder on the '{GROUP}' positions ({meta['encoder_steps']} steps). Success = the "
              f"evaluation return on the env's sparse reward ({EVAL_EPISODES} deterministic episodes), which the "
              f"agent never sees; random policy: {RANDOM_EPISODES} episodes of uniform actions.", "",
              "## Claim (issue 15)", "", claim_line(summary), "",
              "| seed | final success | step-0 success | random policy | similarity first -> last iter | steps/s |",
              "|---|---|---|---|---|---|"]
    for r in results["runs"]:
        if "error" in r:
            continue
        lines.append(f"| {r['seed']} | {_n(r['final'], 2)} | {_n(r['untrained'], 2)} | {_n(r['random'], 2)} | "
                     f"{_n(r['similarity_first'], 3)} -> {_n(r['similarity_last'], 3)} | {_n(r['sps'], 0)} |")
    return close_report(lines, results["runs"], out, ("success rate vs env steps", PLOT), key="seed",
                        config_line=_config_line, failed_line=lambda r: f"- seed {r['seed']} failed: `{r['error']}`")


def _config_line(run: dict[str, Any]) -> str:
    return wrapped_config_line(f"seed {run['seed']}", run["config"])


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results["runs"]:
        if "error" not in r and r.get("points"):
            ax.plot([p["step"] for p in r["points"]], [p["success"] for p in r["points"]], color="C0", alpha=0.7,
                    label=f"PPO on the embedding reward, seed {r['seed']}")
    random = results["summary"].get("random_mean")
    if random is not None:
        ax.axhline(random, color="grey", linestyle=":", linewidth=1, label="uniform random policy")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"success rate ({EVAL_EPISODES} episodes)")
    ax.set_ylim(-0.02, 1.02)
    return save_figure(fig, out / PLOT, axes=(ax,))


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    budget = "the config budget" if args.steps is None else f"{args.steps:,} steps"
    print(f"embedding_reward: {args.seeds} seeds, {budget}, {args.demo_episodes} demo episodes (noise "
          f"{args.action_noise}), device {args.device} ({CONFIG})")
    if args.dry_run:
        return 0
    began, meta = script.start("embedding_reward", argv, args.out, seeds=args.seeds, device=args.device,
                               demo_episodes=args.demo_episodes, action_noise=args.action_noise,
                               encoder_steps=args.encoder_steps, eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-embedding-reward-") as tmp:
        results["runs"] = script.run_grid(
            {"seed": list(range(args.seeds))}, lambda seed: run(seed, args, Path(tmp)), "seed {seed}",
            lambda r: f"final success {_n(r['final'], 2)} (step 0 {_n(r['untrained'], 2)}, random "
                      f"{_n(r['random'], 2)}), {_n(r['sps'], 0)} steps/s")
    return script.finish(results, began, args.out, summarise, write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
