"""Exploration bonuses on sparse-reward tasks: PPO alone vs PPO with each intrinsic bonus, at equal env steps.

    python -m benchmarks.exploration [--seeds 3] [--env ID ...] [--steps N] [--only NAME ...]
                                     [--device cpu|cuda|auto] [--out benchmarks/results/exploration] [--dry-run]

Issue 14's demonstrations: on MountainCarContinuous PPO alone stays near return 0 while PPO + a bonus reaches
>= 90; on MiniGrid DoorKey-8x8 and MultiRoom-N4-S5 PPO + the combined (global x episodic) bonus solves
them sooner, or at all, than PPO alone (MultiRoom-N2-S4 is too easy to show it: PPO alone passes its
threshold at the first evaluation).

Every variant of a task runs the task's base config (``configs/ppo/<env>.yaml``: PPO alone) with only the
bonus switched on: a ``bonus`` wrapper (:mod:`drl.wrappers.bonuses`; its settings per task in
:data:`TASKS`) and PPO's separate intrinsic value head (``algo.intrinsic_value``, RND's two streams:
advantage ``2 A_E + 1 A_I``, the intrinsic stream non-episodic, gamma_I 0.99). Variants (``--only`` names):

* ``ppo``: no bonus;
* ``rnd``: global RND; ``icm``: global ICM (not run by default);
* ``count``: episodic count ``1/sqrt(n)`` of the task's grid cell (MiniGrid: the exact observation);
* ``e3b``: episodic E3B;
* ``rnd-e3b``: RND x E3B (product, Henaff et al. 2023's combination); ``rnd+e3b``: their sum (not run by
  default).

The committed bonus configs (``configs/ppo/<env>-rnd.yaml``, ``...-combined.yaml``) are these variants
written out (a test checks they match). Each run evaluates (10 deterministic episodes) every
``eval_interval`` env steps. Reported per task and variant: final evaluation return (mean +- std over seeds),
seeds reaching the task's threshold, median env steps to it. Writes ``results.json``, ``report.md`` and
``curves.png`` (mean eval return vs env steps, band: min to max over seeds) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, eval_curves_plot, study_header
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "ppo"
EVAL_EPISODES = 10
PLOT = "curves.png"
INTRINSIC_HEAD = {"intrinsic_value": True, "intrinsic_gamma": 0.99, "extrinsic_coef": 2.0, "intrinsic_coef": 1.0}

# per task: the base config (PPO alone), the solved threshold, and the bonus settings its variants share
TASKS: dict[str, dict[str, Any]] = {
    "drl/MountainCarContinuous-v0": {
        "threshold": 90.0,
        "bonus": {"coef": 1.0, "hidden": [64, 64], "embed_dim": 32, "count_key": "grid", "grid_cell": [0.1, 0.01]},
    },
    "MiniGrid-DoorKey-8x8-v0": {
        "threshold": 0.8,
        "bonus": {"coef": 0.05, "hidden": [128, 128], "embed_dim": 32, "count_key": "grid", "grid_cell": 1.0},
    },
    "MiniGrid-MultiRoom-N2-S4-v0": {
        "threshold": 0.5,
        "bonus": {"coef": 0.05, "hidden": [128, 128], "embed_dim": 32, "count_key": "grid", "grid_cell": 1.0},
    },
    "MiniGrid-MultiRoom-N4-S5-v0": {
        "threshold": 0.5,
        "bonus": {"coef": 0.05, "hidden": [128, 128], "embed_dim": 32, "count_key": "grid", "grid_cell": 1.0},
    },
}
# variant -> the bonus wrapper's parts (None: no bonus); the default run leaves out DEFAULT_SKIPPED
VARIANTS: dict[str, dict[str, str] | None] = {
    "ppo": None,
    "rnd": {"global_bonus": "rnd", "episodic_bonus": "none"},
    "icm": {"global_bonus": "icm", "episodic_bonus": "none"},
    "count": {"global_bonus": "none", "episodic_bonus": "count"},
    "e3b": {"global_bonus": "none", "episodic_bonus": "e3b"},
    "rnd-e3b": {"global_bonus": "rnd", "episodic_bonus": "e3b", "combine": "product"},
    "rnd+e3b": {"global_bonus": "rnd", "episodic_bonus": "e3b", "combine": "sum"},
}
DEFAULT_SKIPPED = ("icm", "rnd+e3b")
_COUNT_ONLY = ("count_key", "grid_cell")  # bonus settings that only the count reads


def config_file(env_id: str) -> Path:
    return CONFIGS / f"{env_id.replace('/', '-')}.yaml"


def variant_overrides(env_id: str, variant: str) -> dict[str, Any]:
    """What ``variant`` changes in the task's base config: the ``bonus`` wrapper and the intrinsic head."""
    parts = VARIANTS[variant]
    if parts is None:
        return {}
    shared = TASKS[env_id]["bonus"]
    if parts["episodic_bonus"] != "count":
        shared = {k: v for k, v in shared.items() if k not in _COUNT_ONLY}
    return {"wrappers": [{"name": "bonus", **parts, **shared}], "algo": dict(INTRINSIC_HEAD)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.exploration", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant and task (0 .. N-1)")
    parser.add_argument("--env", nargs="+", default=list(TASKS), help=f"tasks, of {list(TASKS)}")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: each config's)")
    script.add_only(parser, list(VARIANTS))
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "exploration")
    args = parser.parse_args(argv)
    for env_id in args.env:
        if env_id not in TASKS:
            parser.error(f"--env {env_id}: not one of the tasks {list(TASKS)}")
    script.check_args(parser, args, ("seeds", "steps"), list(VARIANTS))
    return args


# --- one run --------------------------------------------------------------------------------
def run(env_id: str, variant: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.api import load_config
    from drl.config import merge, to_dict

    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "env": {"num_eval_envs": EVAL_EPISODES}}
    if args.steps is not None:
        overrides["total_steps"] = args.steps
    cfg = load_config(config_file=config_file(env_id), overrides=merge(overrides, variant_overrides(env_id, variant)))
    _, summary, rows = script.train_run(cfg, work / f"{env_id.replace('/', '-')}-{variant}-s{seed}")
    points = script.eval_points(rows)
    solve = next((p["step"] for p in points if p["eval_return"] >= TASKS[env_id]["threshold"]), None)
    return {"points": points, "final": points[-1]["eval_return"] if points else None, "solve_step": solve,
            "steps": summary["steps"], "train_s": summary["wall_s"] - summary["eval_s"],
            "config": {"file": f"configs/ppo/{config_file(env_id).name}", "total_steps": cfg.total_steps,
                       "num_envs": cfg.env.num_envs, "eval_interval": cfg.eval_interval,
                       "algo": to_dict(cfg.algo), "wrappers": cfg.wrappers}}


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], envs: list[str], variants: list[str]) -> list[dict[str, Any]]:
    out = []
    for env_id in envs:
        for v in variants:
            mine = [r for r in runs if r["env"] == env_id and r["variant"] == v]
            done = [r for r in mine if "error" not in r]
            finals = [r["final"] for r in done if r["final"] is not None]
            solves = [r["solve_step"] for r in done if r["solve_step"] is not None]
            out.append({"env": env_id, "variant": v, "seeds": len(done), "errors": len(mine) - len(done),
                        "final_mean": statistics.fmean(finals) if finals else None,
                        "final_std": statistics.pstdev(finals) if finals else None,
                        "solved": len(solves), "median_solve_step": statistics.median(solves) if solves else None,
                        "train_s_mean": statistics.fmean([r["train_s"] for r in done]) if done else None})
    return out


def claim_lines(summary: list[dict[str, Any]]) -> list[str]:
    """Issue 14's claims per task, stated from the numbers (no judgement beyond them)."""
    lines = []
    for env_id in dict.fromkeys(s["env"] for s in summary):
        by = {s["variant"]: s for s in summary if s["env"] == env_id}
        base = by.get("ppo")
        for name, s in by.items():
            if name == "ppo" or base is None:
                continue
            lines.append(f"- {env_id}: `{name}` final {_n(s['final_mean'], 2)} (threshold reached by {s['solved']}/"
                         f"{s['seeds']} seeds, median {_n(s['median_solve_step'])} env steps) vs PPO alone "
                         f"{_n(base['final_mean'], 2)} ({base['solved']}/{base['seeds']}, median "
                         f"{_n(base['median_solve_step'])})")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("Exploration bonuses: PPO alone vs PPO + intrinsic bonuses", meta)
    lines += [f"{meta['seeds']} seeds per variant; every variant of a task runs the task's base config with only the "
              "`bonus` wrapper and PPO's intrinsic value head switched on (see Configs). Final = the last evaluation "
              f"({EVAL_EPISODES} deterministic episodes) of each seed, mean +- std over seeds; steps to threshold = "
              "median over the seeds that reached it (first evaluation at or above).", "", "## Claims (issue 14)",
              ""]
    lines += claim_lines(summary)
    lines += ["", "| task | variant | final return | reached threshold | median env steps to threshold | "
              "mean training s |", "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['env']} | `{s['variant']}` | {_n(s['final_mean'], 2)} +- {_n(s['final_std'], 2)} | "
                     f"{s['solved']}/{s['seeds']} (>= {TASKS[s['env']]['threshold']:g}) | "
                     f"{_n(s['median_solve_step'])} | {_n(s['train_s_mean'], 1)} |")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT), key="env",
                        config_line=_task_config,
                        failed_line=lambda r: f"- {r['env']} {r['variant']} seed {r['seed']} failed: `{r['error']}`")


def _task_config(run: dict[str, Any]) -> str:
    config = run["config"]
    algo = {k: v for k, v in config["algo"].items() if k not in INTRINSIC_HEAD}
    return (f"- {run['env']}: `{config['file']}`, total_steps {config['total_steps']:,}, num_envs "
            f"{config['num_envs']}, eval_interval {config['eval_interval']:,}; algo `{json.dumps(algo, default=str)}`;"
            f" bonus variants add `{json.dumps(INTRINSIC_HEAD)}` and the wrapper "
            f"`{json.dumps(TASKS[run['env']]['bonus'])}` with each variant's parts "
            f"`{json.dumps({k: v for k, v in VARIANTS.items() if v})}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    return eval_curves_plot(results, out / PLOT, "variant", {e: TASKS[e]["threshold"] for e in TASKS}, EVAL_EPISODES)


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v for v in VARIANTS if (v in args.only if args.only else v not in DEFAULT_SKIPPED)]
    print(f"exploration: {args.seeds} seeds, tasks {args.env}, variants {variants}, budget "
          f"{'the configs' if args.steps is None else f'{args.steps:,}'} env steps, device {args.device}")
    if args.dry_run:
        return 0
    began, meta = script.start("exploration", argv, args.out, seeds=args.seeds, device=args.device,
                               thresholds={e: TASKS[e]["threshold"] for e in args.env}, eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "variants": variants, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-exploration-") as tmp:
        results["runs"] = script.run_grid(
            {"env": args.env, "variant": variants, "seed": list(range(args.seeds))},
            lambda env, variant, seed: run(env, variant, seed, args, Path(tmp)), "{env} {variant} seed {seed}",
            lambda r: f"final {_n(r['final'], 2)}, threshold at {_n(r['solve_step'])} env steps",
            loops=("env", "seed", "variant"))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, args.env, variants), write_report,
                         write_plot)


if __name__ == "__main__":
    sys.exit(main())
