"""Learned-reward demonstration (issue 15): PPO on the env reward vs GAIL / AIRL from expert demos vs a
preference reward model, on drl/Pendulum-v0, and what each learned reward costs in steps/s.

    python -m benchmarks.learned_reward [--seeds 3] [--steps N] [--expert-steps N] [--only NAME ...]
                                        [--device cpu|cuda|auto] [--out benchmarks/results/learned_reward]
                                        [--dry-run]

First a PPO expert is trained (``configs/ppo/drl-Pendulum-v0.yaml``, seed 100, ``--expert-steps``) and
``EXPERT_EPISODES`` episodes of its deterministic policy are recorded as a drl demo file; a uniform random
policy's return over as many episodes is the floor. Variants (``--only`` names), each from its config with
``--steps`` (default: the config's budget) and otherwise unchanged settings:

* ``ppo``: ``configs/ppo/drl-Pendulum-v0.yaml``, the env's reward;
* ``gail`` / ``airl``: ``configs/ppo/drl-Pendulum-v0-{gail,airl}.yaml`` on the recorded demos, the env
  reward replaced (the agent never sees it);
* ``preference``: ``configs/ppo/drl-Pendulum-v0-preference.yaml``, the reward learned from the synthetic
  oracle's labels (the number of labels asked is reported).

Pendulum's returns are negative, so "x% of a return" is read on the normalised score ``(R - R_random) /
(R_ref - R_random)``. Claims (issue 15): GAIL/AIRL reach >= 0.8 of the expert's score; the preference model
>= 0.7 of PPO-with-true-reward's at the same env steps. Cost: training steps/s (evaluation excluded) of each
variant next to ``ppo`` in the same run. Writes ``results.json``, ``report.md`` and ``curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, seed_band, study_header, wrapped_config_line
from benchmarks.harness.report import number as _n

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
ENV_ID = "drl/Pendulum-v0"
EXPERT_CONFIG = "configs/ppo/drl-Pendulum-v0.yaml"
EXPERT_SEED = 100
EXPERT_EPISODES = 20
EVAL_EPISODES = 10
PLOT = "curves.png"


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    config: str


VARIANTS = [
    Variant("ppo", "PPO, env reward", EXPERT_CONFIG),
    Variant("gail", "PPO + GAIL reward (demos)", "configs/ppo/drl-Pendulum-v0-gail.yaml"),
    Variant("airl", "PPO + AIRL reward (demos)", "configs/ppo/drl-Pendulum-v0-airl.yaml"),
    Variant("preference", "PPO + preference reward model (oracle)", "configs/ppo/drl-Pendulum-v0-preference.yaml"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learned_reward",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0 .. N-1)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: each config's)")
    parser.add_argument("--expert-steps", type=int, default=None,
                        help=f"the expert's budget (default: {EXPERT_CONFIG})")
    script.add_only(parser, [v.name for v in VARIANTS])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "learned_reward")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "expert_steps"), [v.name for v in VARIANTS])
    return args


def _episode_returns(demos: dict[str, Any]) -> list[float]:
    index, rewards = demos["episode_index"], demos["rewards"].double()
    return [float(rewards[index == e].sum()) for e in range(int(demos["meta"]["episodes"]))]


# --- the expert and the floor ----------------------------------------------------------------
def expert_demos(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train the PPO expert, record its demos; the expert's and a random policy's mean episode return."""
    from drl.api import load_agent, load_config
    from envs.tasks.demos import collect_demos, save_demos

    overrides: dict[str, Any] = {"seed": EXPERT_SEED, "progress": False, "checkpoint_interval": 0,
                                 "torch_threads": 1, "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "env": {"num_eval_envs": EVAL_EPISODES}}
    if args.expert_steps is not None:
        overrides["total_steps"] = args.expert_steps
    cfg = load_config(config_file=ROOT / EXPERT_CONFIG, overrides=overrides)
    run_dir, _, _ = script.train_run(cfg, work / "expert")
    agent, _ = load_agent(run_dir)

    def expert(env: Any, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return agent.act(obs, deterministic=True, update_stats=False)[0]

    demos = collect_demos(ENV_ID, EXPERT_EPISODES, seed=EXPERT_SEED, policy=expert)
    path = save_demos(demos, work / "expert.pt")
    generator = torch.Generator().manual_seed(EXPERT_SEED)
    uniform = collect_demos(ENV_ID, EXPERT_EPISODES, seed=EXPERT_SEED + 1,
                            policy=lambda env, obs: torch.rand(obs.shape[0], 1, generator=generator) * 4 - 2)
    return {"path": str(path), "expert_return": statistics.fmean(_episode_returns(demos)),
            "random_return": statistics.fmean(_episode_returns(uniform)), "expert_steps": cfg.total_steps,
            "demo_steps": int(demos["meta"]["num_steps"])}


# --- one run --------------------------------------------------------------------------------
def run(variant: Variant, seed: int, args: argparse.Namespace, demo_path: str, work: Path) -> dict[str, Any]:
    from drl.api import load_config
    from drl.config import load_yaml, to_dict

    raw = load_yaml(ROOT / variant.config)
    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "env": {"num_eval_envs": EVAL_EPISODES}}
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    if raw.get("wrappers"):
        overrides["wrappers"] = [dict(w, demos=demo_path) if w["name"] == "gail" else w for w in raw["wrappers"]]
    cfg = load_config(config_file=ROOT / variant.config, overrides=overrides)
    _, summary, rows = script.train_run(cfg, work / f"{variant.name}-s{seed}")
    points = script.eval_points(rows)
    queries = [float(r["preference/total_queries"]) for r in rows if r.get("preference/total_queries")]
    train_s = summary["wall_s"] - summary["eval_s"]
    return {"points": points, "final": points[-1]["eval_return"] if points else None,
            "steps": summary["steps"], "train_s": train_s, "sps": summary["steps"] / max(train_s, 1e-9),
            "queries": queries[-1] if queries else None,
            "config": {"file": variant.config, "total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs,
                       "eval_interval": cfg.eval_interval, "algo": to_dict(cfg.algo),
                       "wrappers": [dict(w, demos="<the expert demos>") if "demos" in w else w for w in cfg.wrappers]}}


# --- summary, report, plot ------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values), statistics.pstdev(values)) if values else (None, None)


def score(value: float | None, reference: float | None, floor: float) -> float | None:
    """``(value - floor) / (reference - floor)``: 1 at the reference's return, 0 at the random policy's."""
    if value is None or reference is None or reference == floor:
        return None
    return (value - floor) / (reference - floor)


def summarise(runs: list[dict[str, Any]], variants: list[Variant], expert: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for v in variants:
        done = [r for r in runs if r["variant"] == v.name and "error" not in r]
        final_mean, final_std = _stats([r["final"] for r in done if r["final"] is not None])
        sps_mean, _ = _stats([r["sps"] for r in done])
        queries, _ = _stats([r["queries"] for r in done if r["queries"] is not None])
        out.append({"variant": v.name, "label": v.label, "seeds": len(done),
                    "errors": len([r for r in runs if r["variant"] == v.name]) - len(done),
                    "final_mean": final_mean, "final_std": final_std, "sps": sps_mean, "queries": queries})
    by = {s["variant"]: s for s in out}
    ppo_final = by.get("ppo", {}).get("final_mean")
    for s in out:
        s["expert_score"] = score(s["final_mean"], expert["expert_return"], expert["random_return"])
        s["ppo_score"] = score(s["final_mean"], ppo_final, expert["random_return"])
        s["relative_sps"] = s["sps"] / by["ppo"]["sps"] if s["sps"] and by.get("ppo", {}).get("sps") else None
    return out


def claim_lines(summary: list[dict[str, Any]]) -> list[str]:
    lines = []
    for s in summary:
        if s["variant"] in ("gail", "airl"):
            ok = s["expert_score"] is not None and s["expert_score"] >= 0.8
            lines.append(f"- {s['variant']} reaches >= 0.8 of the expert's score: {'yes' if ok else 'no'} "
                         f"({_n(s['expert_score'], 2)})")
        elif s["variant"] == "preference":
            ok = s["ppo_score"] is not None and s["ppo_score"] >= 0.7
            lines.append(f"- preference reaches >= 0.7 of PPO-with-true-reward's score: {'yes' if ok else 'no'} "
                         f"({_n(s['ppo_score'], 2)}, {_n(s['queries'], 0)} oracle labels)")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary, expert = results["meta"], results["summary"], results["expert"]
    lines = study_header(f"Learned rewards (GAIL, AIRL, preferences) vs the env reward, {ENV_ID}", meta)
    lines += [f"{meta['seeds']} seeds per variant. Expert: PPO ({EXPERT_CONFIG}, {expert['expert_steps']:,} steps, "
              f"seed {EXPERT_SEED}), {EXPERT_EPISODES} recorded episodes ({expert['demo_steps']:,} transitions), "
              f"mean return {_n(expert['expert_return'], 1)}; a uniform random policy: "
              f"{_n(expert['random_return'], 1)}. Final = the last evaluation ({EVAL_EPISODES} deterministic "
              "episodes, Pendulum's own return), mean +- std over seeds; score = (R - random) / (reference - "
              "random). Steps/s: training only (evaluation excluded), the same machine and run.", "",
              "## Claims (issue 15)", ""]
    lines += claim_lines(summary)
    lines += ["", "| variant | final eval return | score vs expert | score vs PPO | steps/s | x PPO's steps/s | "
              "labels |", "|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['label']} (`{s['variant']}`) | {_n(s['final_mean'], 1)} +- {_n(s['final_std'], 1)} | "
                     f"{_n(s['expert_score'], 2)} | {_n(s['ppo_score'], 2)} | {_n(s['sps'], 0)} | "
                     f"{_n(s['relative_sps'], 2)} | {_n(s['queries'], 0)} |")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT), key="variant",
                        config_line=_config_line,
                        failed_line=lambda r: f"- {r['variant']} seed {r['seed']} failed: `{r['error']}`")


def _config_line(run: dict[str, Any]) -> str:
    return wrapped_config_line(run["variant"], run["config"])


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, s in enumerate(results["summary"]):
        curves = [r["points"] for r in results["runs"]
                  if r["variant"] == s["variant"] and "error" not in r and r["points"]]
        if not curves:
            continue
        seed_band(ax, curves, "eval_return", f"C{i}", f"{s['label']} ({len(curves)})")
    expert = results["expert"]
    ax.axhline(expert["expert_return"], color="black", linestyle="--", linewidth=1, label="expert (demos)")
    ax.axhline(expert["random_return"], color="grey", linestyle=":", linewidth=1, label="uniform random")
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"eval return ({EVAL_EPISODES} episodes, Pendulum's own)")
    return save_figure(fig, out / PLOT, axes=(ax,))


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    print(f"learned_reward: {args.seeds} seeds, {'config budgets' if args.steps is None else f'{args.steps:,} steps'},"
          f" device {args.device}")
    for v in variants:
        print(f"  {v.name:<11} {v.label}  ({v.config})")
    if args.dry_run:
        return 0
    began, meta = script.start("learned_reward", argv, args.out, seeds=args.seeds, device=args.device,
                               eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "variants": [vars(v) for v in variants], "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-learned-reward-") as tmp:
        results["expert"] = expert_demos(args, Path(tmp))
        print(f"expert: return {_n(results['expert']['expert_return'], 1)}, random "
              f"{_n(results['expert']['random_return'], 1)}", flush=True)
        by_name = {v.name: v for v in variants}
        results["runs"] = script.run_grid(
            {"variant": list(by_name), "seed": list(range(args.seeds))},
            lambda variant, seed: run(by_name[variant], seed, args, results["expert"]["path"], Path(tmp)),
            "{variant} seed {seed}", lambda r: f"final {_n(r['final'], 1)}, {_n(r['sps'], 0)} steps/s",
            loops=("seed", "variant"))
    return script.finish(results, began, args.out,
                         lambda runs: summarise(runs, variants, results["expert"]), write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
