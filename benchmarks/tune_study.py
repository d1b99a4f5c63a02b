"""A small hyperparameter study with ``drl tune`` (Optuna), then the tuned config against the default on fresh seeds.

    python -m benchmarks.tune_study [--agent ppo] [--env CartPole-v1] [--trials 20] [--steps 50000] [--evals 5]
                                    [--pruner median|hyperband|none] [--seeds 3] [--device cpu]
                                    [--out benchmarks/results/tune_study] [--dry-run]

1. A study of ``--trials`` trials (TPE sampler, seed 0; ``--pruner`` on the ``--evals`` evaluation returns of
   each trial; search space ``configs/<agent>/tune.yaml``; every trial trains ``--steps`` env steps with
   seed 0) in ``<out>/study`` (its ``study.db``, ``trials.csv``, ``best.yaml``).
2. The default config (``drl train <agent> --env <env>``: the tuned ``configs/<agent>/<env>.yaml`` when there
   is one) and the study's ``best.yaml`` each trained for ``--seeds`` fresh seeds (1, 2, ...: not the seed the
   study selected on, so the comparison is not biased by the selection) with the same ``--steps``.

Writes ``results.json``, ``report.md`` (the trials, the best parameters, default vs tuned final evaluation
return) and ``trials.png`` (each trial's final or last evaluation return by trial number) to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, one_plot, save_figure
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PLOT = "trials.png"
VARIANTS = ["default", "tuned"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tune_study", description=__doc__.split("\n\n")[0])
    parser.add_argument("--agent", default="ppo")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per trial and per comparison run")
    parser.add_argument("--evals", type=int, default=5, help="evaluations per trial (the pruner's values)")
    parser.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    parser.add_argument("--seeds", type=int, default=3, help="fresh seeds for the default-vs-tuned comparison")
    parser.add_argument("--device", default="cpu")
    script.add_out(parser, RESULTS_DIR / "tune_study")
    return parser


def _trial_rows(study_dir: Path) -> list[dict[str, str]]:
    import csv

    with (study_dir / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def _compare(args: argparse.Namespace, best: Path, out: Path) -> list[dict[str, Any]]:
    from drl.api import load_config
    from drl.config import to_dict

    runs = []
    for seed in range(1, args.seeds + 1):
        for variant in VARIANTS:
            overrides = {"total_steps": args.steps, "seed": seed, "device": args.device, "progress": False,
                         "log_interval": -1, "eval_episodes": 10, "eval_interval": max(1, args.steps // args.evals)}
            if variant == "tuned":
                cfg = load_config(config_file=best, overrides=overrides)
            else:
                cfg = load_config(args.agent, args.env, overrides=overrides)
            record: dict[str, Any] = {"variant": variant, "seed": seed, "config": to_dict(cfg)}

            def run(cfg: Any = cfg, variant: str = variant, seed: int = seed) -> dict[str, Any]:
                _, summary, rows = script.train_run(cfg, out / "runs" / f"{variant}-s{seed}")
                return {"final_eval_return": summary.get("final_eval_return"), "curve": script.eval_points(rows)}

            runs.append(script.attempt(record, f"{variant} seed {seed}", run,
                                       lambda r: f"final eval return {_n(r['final_eval_return'], 1)}"))
    return runs


def _summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant in VARIANTS:
        values = [r["final_eval_return"] for r in runs if r["variant"] == variant and "error" not in r
                  and r.get("final_eval_return") is not None]
        rows.append({"variant": variant, "runs": len(values),
                     "mean": statistics.fmean(values) if values else None,
                     "std": statistics.pstdev(values) if len(values) > 1 else None})
    return rows


def _write_report(results: dict[str, Any], out: Path) -> Path:
    meta, study = results["meta"], results["study"]
    lines = header_lines(f"drl tune: {meta['agent']} on {meta['env']}", meta)
    lines += [machine_line(meta, software=("torch", "optuna")), "",
              f"Study: {len(study['trials'])} trials of {meta['steps']:,} env steps (TPE, seed 0; pruner "
              f"`{meta['pruner']}` on {meta['evals']} evaluations per trial; search space "
              f"`configs/{meta['agent']}/tune.yaml`): {study['pruned']} pruned, {study['failed']} failed.", ""]
    if study["best_trial"] is not None:
        lines += [f"Best: trial {study['best_trial']}, final eval return {_n(study['best_value'], 1)}; its config "
                  f"is `{study['best_config']}`.", ""]
    lines += ["## Default vs tuned (fresh seeds)", "", "| config | runs | final eval return (mean) | std |",
              "|---|---|---|---|"]
    lines += [f"| {row['variant']} | {row['runs']} | {_n(row['mean'], 1)} | {_n(row['std'], 1)} |"
              for row in results["summary"]]
    lines += ["", "## Trials", ""]
    keys = [k for k in (study["trials"][0] if study["trials"] else {}) if k not in ("number", "state", "value")]
    lines += ["| " + " | ".join(["trial", "state", "value", *keys]) + " |", "|" + "---|" * (3 + len(keys))]
    lines += ["| " + " | ".join([t["number"], t["state"], t["value"], *[t[k] for k in keys]]) + " |"
              for t in study["trials"]]
    return close_report(lines, results["runs"], out, ("trial values", PLOT))


def _write_plot(results: dict[str, Any], out: Path) -> Path:
    fig, ax = one_plot()
    for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
        points = [(int(t["number"]), float(t["value"])) for t in results["study"]["trials"]
                  if t["state"] == state and t["value"] not in ("", None)]
        if points:
            ax.scatter(*zip(*points, strict=True), marker=marker, label=state.lower())
    ax.set_xlabel("trial")
    ax.set_ylabel("final (or last, if pruned) eval return")
    return save_figure(fig, out / PLOT, axes=[ax])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser()
    args = parser.parse_args(argv)
    args.only = None
    script.check_args(parser, args, ("trials", "steps", "evals", "seeds"), VARIANTS)
    if args.dry_run:
        print(f"study: {args.trials} trials x {args.steps} steps of {args.agent} on {args.env}; then default vs "
              f"tuned x {args.seeds} seeds -> {args.out}")
        return 0
    from drl.tune import tune

    began, meta = script.start("tune_study", argv, args.out, agent=args.agent, env=args.env, steps=args.steps,
                               evals=args.evals, pruner=args.pruner, trials=args.trials)
    study_dir = args.out / "study"
    result = tune(args.agent, args.env, args.trials, out=study_dir, evals=args.evals, pruner=args.pruner,
                  overrides={"total_steps": args.steps, "device": args.device})
    study = {"trials": _trial_rows(study_dir), "pruned": result.pruned, "failed": result.failed,
             "best_trial": result.best_trial, "best_value": result.best_value,
             # named from the report's folder: a machine's absolute path never goes into a committed report
             "best_config": (result.best_config.resolve().relative_to(args.out.resolve()).as_posix()
                             if result.best_config else None)}
    runs = _compare(args, result.best_config, args.out) if result.best_config else []
    results = {"meta": meta, "study": study, "runs": runs}
    return script.finish(results, began, args.out, _summarise, _write_report, _write_plot)


if __name__ == "__main__":
    sys.exit(main())
