"""Masked-velocity tasks: privileged critic and recurrent actor vs plain PPO, at equal env steps.

    python -m benchmarks.masked_velocity [--seeds 5] [--env drl/CartPoleNoVel-v0 drl/PendulumNoVel-v0]
                                         [--steps N] [--only NAME ...] [--device cpu|cuda|auto]
                                         [--out benchmarks/results/masked_velocity] [--dry-run]

The policy sees positions only (CartPole: ``x, theta``; Pendulum: ``cos, sin``); the ``"critic"``
group holds the full state. Issue 10's claims: asymmetric PPO beats symmetric PPO at equal steps,
and the recurrent actor beats the feed-forward one.

Variants (``--only`` names), all from one config per task (``configs/ppo/<env>.yaml``, the
tuned recurrent PPO) with one or two switches flipped, so every variant of a task has the same
budget, envs, rollout, minibatches and learning rate:

* ``ppo``: feed-forward actor and critic on ``"policy"`` (``rnn_type: none, critic_obs: policy``);
* ``aac``: asymmetric actor-critic, the critic on ``"critic"`` (``rnn_type: none, critic_obs: critic``);
* ``ppo-gru``: GRU actor and GRU critic on ``"policy"`` (``rnn_type: gru, critic_obs: policy``);
* ``aac-gru``: GRU actor on ``"policy"``, feed-forward critic on ``"critic"`` (``rnn_type: gru, critic_obs: critic``).

Each run evaluates (10 deterministic episodes) every ``eval_interval`` env steps of its config.
Reported per task and variant: the final evaluation return (mean +- std over seeds), the seeds that
reach the task's threshold and the median env steps to reach it (first evaluation at or above).
Writes ``results.json``, ``report.md`` and ``curves.png`` (mean eval return vs env steps, band: min
to max over seeds) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, eval_curves_plot, study_header
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EVAL_EPISODES = 10
PLOT = "curves.png"
# solved at a mean eval return >= this (CartPole: gymnasium's threshold; Pendulum: near the full-state optimum)
THRESHOLDS = {"drl/CartPoleNoVel-v0": 475.0, "drl/PendulumNoVel-v0": -250.0}


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    rnn_type: str
    critic_obs: str


VARIANTS = [
    Variant("ppo", "PPO (symmetric, feed-forward)", "none", "policy"),
    Variant("aac", "asymmetric PPO (feed-forward)", "none", "critic"),
    Variant("ppo-gru", "PPO, GRU actor and critic", "gru", "policy"),
    Variant("aac-gru", "asymmetric PPO, GRU actor", "gru", "critic"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.masked_velocity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant and task (0 .. N-1)")
    parser.add_argument("--env", nargs="+", default=list(THRESHOLDS),
                        help="task ids (each needs configs/ppo/<env>.yaml)")
    parser.add_argument("--steps", type=int, default=None,
                        help="env steps per run (default: each config's total_steps)")
    script.add_only(parser, [v.name for v in VARIANTS])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "masked_velocity")
    args = parser.parse_args(argv)
    for env_id in args.env:
        if not config_file(env_id).is_file():
            parser.error(f"--env {env_id}: no config {config_file(env_id)}")
    script.check_args(parser, args, ("seeds", "steps"), [v.name for v in VARIANTS])
    return args


def config_file(env_id: str) -> Path:
    from drl.api import config_path_for

    return config_path_for("ppo", env_id)


def threshold(env_id: str) -> float:
    return THRESHOLDS.get(env_id, math.inf)


# --- one run --------------------------------------------------------------------------------
def run(env_id: str, variant: Variant, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.api import load_config
    from drl.config import to_dict

    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "env": {"id": env_id, "num_eval_envs": EVAL_EPISODES},
                                 "algo": {"rnn_type": variant.rnn_type, "critic_obs": variant.critic_obs}}
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    cfg = load_config(config_file=config_file(env_id), overrides=overrides)
    _, summary, rows = script.train_run(cfg, work / f"{env_id.replace('/', '-')}-{variant.name}-s{seed}")
    points = script.eval_points(rows)
    solve = next((p["step"] for p in points if p["eval_return"] >= threshold(env_id)), None)
    return {"points": points, "final": points[-1]["eval_return"] if points else None, "solve_step": solve,
            "steps": summary["steps"], "train_s": summary["wall_s"] - summary["eval_s"],
            "config": {"file": f"configs/ppo/{config_file(env_id).name}", "total_steps": cfg.total_steps,
                       "num_envs": cfg.env.num_envs, "eval_interval": cfg.eval_interval, "algo": to_dict(cfg.algo)}}


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], envs: list[str], variants: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for env_id in envs:
        for v in variants:
            mine = [r for r in runs if r["env"] == env_id and r["variant"] == v.name]
            done = [r for r in mine if "error" not in r]
            finals = [r["final"] for r in done if r["final"] is not None]
            solves = [r["solve_step"] for r in done if r["solve_step"] is not None]
            out.append({"env": env_id, "variant": v.name, "label": v.label, "seeds": len(done),
                        "errors": len(mine) - len(done),
                        "final_mean": statistics.fmean(finals) if finals else None,
                        "final_std": statistics.pstdev(finals) if finals else None,
                        "solved": len(solves), "median_solve_step": statistics.median(solves) if solves else None,
                        "train_s_mean": statistics.fmean([r["train_s"] for r in done]) if done else None})
    return out


def _verdict(by: dict[str, dict[str, Any]], better: str, worse: str) -> str:
    """``better`` beats ``worse`` when its mean final return is higher by more than twice the standard error
    of the difference of the two means (seed noise: ``sqrt(s_a^2 / n_a + s_b^2 / n_b)``, sample variances over
    seeds); lower by as much: "no"; in between: within seed noise."""
    a, b = by.get(better, {}), by.get(worse, {})
    if a.get("final_mean") is None or b.get("final_mean") is None:
        return "not judged (a variant did not run)"
    text = f"{_n(a['final_mean'], 1)} vs {_n(b['final_mean'], 1)}"
    if min(a["seeds"], b["seeds"]) < 2:
        return f"{text}: not judged (one seed)"
    # final_std is the population std over seeds: s^2 / n with the sample variance is pstd^2 / (n - 1)
    noise = math.sqrt(a["final_std"] ** 2 / (a["seeds"] - 1) + b["final_std"] ** 2 / (b["seeds"] - 1))
    diff = a["final_mean"] - b["final_mean"]
    if diff > 2 * noise:
        return f"{text}: yes"
    if diff < -2 * noise:
        return f"{text}: no"
    return f"{text}: within seed noise (difference {_n(diff, 1)}, 2 s.e. {_n(2 * noise, 1)})"


def claim_lines(summary: list[dict[str, Any]]) -> list[str]:
    """Issue 10's two claims per task, judged on the mean final return over seeds against seed noise."""
    lines = []
    for env_id in dict.fromkeys(s["env"] for s in summary):
        by = {s["variant"]: s for s in summary if s["env"] == env_id}
        lines += [f"- {env_id}: asymmetric beats symmetric PPO (`aac` vs `ppo`): {_verdict(by, 'aac', 'ppo')}; "
                  f"with GRU actors (`aac-gru` vs `ppo-gru`): {_verdict(by, 'aac-gru', 'ppo-gru')}",
                  f"- {env_id}: the recurrent actor beats the feed-forward one (`ppo-gru` vs `ppo`): "
                  f"{_verdict(by, 'ppo-gru', 'ppo')}; asymmetric (`aac-gru` vs `aac`): "
                  f"{_verdict(by, 'aac-gru', 'aac')}"]
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("Masked-velocity tasks: asymmetric critic and recurrent actor", meta)
    lines += [f"{meta['seeds']} seeds per variant; every variant of a task runs the same config "
             "(`configs/ppo/<env>.yaml`) with only `rnn_type` and `critic_obs` switched, so env steps, envs, "
             f"rollout and optimiser settings are equal. Final = the last evaluation ({EVAL_EPISODES} deterministic "
             "episodes) of each seed, mean +- std over seeds. Steps to threshold = median over the seeds that "
             "reached it (first evaluation at or above).", "", "## Claims (issue 10)", ""]
    lines += claim_lines(summary)
    lines += ["", "| task | variant | final return | reached threshold | median env steps to threshold | "
              "mean training s |", "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['env']} | {s['label']} (`{s['variant']}`) | {_n(s['final_mean'], 1)} +- "
                     f"{_n(s['final_std'], 1)} | {s['solved']}/{s['seeds']} (>= {threshold(s['env']):g}) | "
                     f"{_n(s['median_solve_step'])} | {_n(s['train_s_mean'], 1)} |")
    return close_report(  # one config line per task: what its variants share
        lines, results["runs"], out, ("eval return vs env steps", PLOT), key="env", config_line=_task_config,
        failed_line=lambda r: f"- {r['env']} {r['variant']} seed {r['seed']} failed: `{r['error']}`")


def _task_config(run: dict[str, Any]) -> str:
    """A task's config line: file, budget, envs, evaluation, and the algo settings its variants share (they
    switch only rnn_type and critic_obs)."""
    config = run["config"]
    shared = {k: v for k, v in config["algo"].items() if k not in ("rnn_type", "critic_obs")}
    return (f"- {run['env']}: `{config['file']}`, total_steps {config['total_steps']:,}, num_envs "
            f"{config['num_envs']}, eval_interval {config['eval_interval']:,}; algo "
            f"`{json.dumps(shared, default=str)}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    envs = {s["env"] for s in results["summary"]}
    return eval_curves_plot(results, out / PLOT, "label", {e: threshold(e) for e in envs}, EVAL_EPISODES)


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    print(f"masked_velocity: {args.seeds} seeds, tasks {args.env}, budget "
          f"{'the configs' if args.steps is None else f'{args.steps:,}'} env steps, device {args.device}")
    for v in variants:
        print(f"  {v.name:<8} {v.label}")
    if args.dry_run:
        return 0
    began, meta = script.start("masked_velocity", argv, args.out, seeds=args.seeds, device=args.device,
                               thresholds={e: threshold(e) for e in args.env}, eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "variants": [vars(v) for v in variants], "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-masked-velocity-") as tmp:
        by_name = {v.name: v for v in variants}
        results["runs"] = script.run_grid(
            {"env": args.env, "variant": list(by_name), "seed": list(range(args.seeds))},
            lambda env, variant, seed: run(env, by_name[variant], seed, args, Path(tmp)),
            "{env} {variant} seed {seed}",
            lambda r: f"final {_n(r['final'], 1)}, threshold at {_n(r['solve_step'])} env steps",
            loops=("env", "seed", "variant"))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, args.env, variants), write_report,
                         write_plot)


if __name__ == "__main__":
    sys.exit(main())
