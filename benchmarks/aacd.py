"""AACD (critic transfer, TacSL) vs asymmetric PPO from scratch vs DAgger, at equal env steps.

    python -m benchmarks.aacd [--env drl/CartPoleNoVel-v0] [--seeds 5] [--teacher-steps N] [--steps N]
                              [--eval-every N] [--threshold X] [--only NAME ...] [--set KEY=VALUE ...]
                              [--out benchmarks/results/aacd] [--dry-run]

Per seed: one privileged teacher (stage 1: PPO whose actor and critic read the "critic" obs group,
``configs/aacd/<env>.yaml`` through :func:`drl.agents.aacd.teacher_config`, ``--teacher-steps`` env
steps), then every variant for the same ``--steps`` env steps (the teacher's steps are shared, not
counted):

* ``frozen``: AACD, the teacher's critic loaded and frozen (``critic_mode: frozen``);
* ``finetune``: AACD, the teacher's critic loaded and trained (``critic_mode: finetune``);
* ``scratch``: asymmetric PPO with a random privileged critic (``critic_mode: scratch``; TacSL's baseline);
* ``dagger``: a student imitating the teacher's actor (``configs/dagger/<env>.yaml``).

Every variant's actor reads only the "policy" group. Each is evaluated every ``--eval-every`` env steps
(10 deterministic episodes). Reported per variant: the final evaluation (median and range over seeds)
and the env steps to the first evaluation >= ``--threshold`` (median over the seeds that reached it).
``--set`` overrides go to every stage-2 variant (e.g. a recurrent actor once PPO has one).

Writes ``results.json``, ``report.md`` and ``curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, one_plot, save_figure
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
EVAL_EPISODES = 10
PLOT = "curves.png"
# a return a memoryless actor on the partial observation reaches only with a good critic (see the configs)
THRESHOLDS = {"drl/CartPoleNoVel-v0": 100.0, "drl/PendulumNoVel-v0": -600.0}
VARIANTS = {  # name -> (agent, algo overrides, label)
    "frozen": ("aacd", {"critic_mode": "frozen"}, "AACD, frozen teacher critic"),
    "finetune": ("aacd", {"critic_mode": "finetune"}, "AACD, fine-tuned teacher critic"),
    "scratch": ("aacd", {"critic_mode": "scratch"}, "asymmetric PPO, random critic"),
    "dagger": ("dagger", {}, "DAgger student"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aacd", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="drl/CartPoleNoVel-v0")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--teacher-steps", type=int, help="stage 1 env steps (default: the aacd config's)")
    parser.add_argument("--steps", type=int, help="env steps of every variant (default: the aacd config's)")
    parser.add_argument("--eval-every", type=int, default=10_000)
    parser.add_argument("--threshold", type=float, help="eval return counted as reached (default per env)")
    parser.add_argument("--only", nargs="+", choices=list(VARIANTS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="stage-2 override")
    script.add_out(parser, RESULTS_DIR / "aacd")
    args = parser.parse_args(argv)
    if args.threshold is None:
        args.threshold = THRESHOLDS.get(args.env, 0.0)
    return args


def config(agent: str, args: argparse.Namespace, seed: int, algo: dict[str, Any], total_steps: int | None) -> Any:
    """``configs/<agent>/<--env>.yaml`` (defaults if none) with the benchmark's seed, budget and evaluation."""
    from drl.api import config_path_for, load_config
    from drl.config import merge, parse_overrides

    tuned = config_path_for(agent, args.env)
    overrides: dict[str, Any] = {"agent": agent, "seed": seed, "progress": False, "log_interval": -1,
                                 "checkpoint_interval": 0, "torch_threads": 1, "eval_interval": args.eval_every,
                                 "eval_episodes": EVAL_EPISODES,
                                 "env": {"id": args.env, "num_eval_envs": EVAL_EPISODES}, "algo": algo}
    if total_steps is not None:
        overrides["total_steps"] = total_steps
    overrides = merge(overrides, parse_overrides(args.set)) if agent != "aac" else overrides
    return load_config(config_file=tuned if tuned.is_file() else None, agent=agent, overrides=overrides)


def run_seed(seed: int, args: argparse.Namespace, work: Path, names: list[str]) -> list[dict[str, Any]]:
    """The teacher of ``seed``, then every variant on it; one record per run."""
    from drl.agents.aacd import teacher_config

    stage2 = config("aacd", args, seed, {} if args.teacher_steps is None else {"teacher_steps": args.teacher_steps},
                    args.steps)
    teacher_cfg = teacher_config(stage2)
    teacher_dir, _, rows = script.train_run(teacher_cfg, work / f"teacher-s{seed}")
    records = [{"variant": "teacher", "seed": seed, "points": script.eval_points(rows),
                "steps": teacher_cfg.total_steps}]
    print(f"teacher seed {seed}: final eval {records[0]['points'][-1]['eval_return']:.1f}", flush=True)

    def run(agent: str, algo: dict[str, Any], name: str) -> dict[str, Any]:
        cfg = config(agent, args, seed, {**algo, "teacher": str(teacher_dir)}, stage2.total_steps)
        _, summary, rows = script.train_run(cfg, work / f"{name}-s{seed}")
        return {"points": script.eval_points(rows), "steps": summary["steps"], "wall_s": summary["wall_s"],
                "config": {k: v for k, v in vars(cfg.algo).items() if k != "teacher"}}

    for name in names:
        agent, algo, _ = VARIANTS[name]
        records.append(script.attempt({"variant": name, "seed": seed}, f"{name} seed {seed}",
                                      lambda agent=agent, algo=algo, name=name: run(agent, algo, name),
                                      lambda r: f"final eval {r['points'][-1]['eval_return']:.1f}"))
    return records


def summarise(runs: list[dict[str, Any]], names: list[str], threshold: float) -> list[dict[str, Any]]:
    """Per variant: final eval (median, min, max over seeds), seeds reaching ``threshold``, median steps to it."""
    out = []
    for name in ["teacher", *names]:
        ok = [r for r in runs if r["variant"] == name and "error" not in r and r["points"]]
        finals = [r["points"][-1]["eval_return"] for r in ok]
        reach = [next((p["step"] for p in r["points"] if p["eval_return"] >= threshold), None) for r in ok]
        reached = [s for s in reach if s is not None]
        out.append({"variant": name, "seeds": len(ok), "final_median": statistics.median(finals) if finals else None,
                    "final_min": min(finals, default=None), "final_max": max(finals, default=None),
                    "reached": len(reached), "median_steps_to_threshold": statistics.median(reached) if reached
                    else None, "errors": sum(1 for r in runs if r["variant"] == name and "error" in r)})
    return out


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    labels = {"teacher": "teacher (privileged actor; stage 1)"} | {k: lab for k, (_, _, lab) in VARIANTS.items()}
    lines = header_lines(f"AACD vs asymmetric PPO vs DAgger on {meta['env']}", meta)
    lines += [machine_line(meta, gpu=False), "",
              f"{meta['seeds']} seeds; per seed one teacher, then every variant for the same env steps. Evaluation: "
             f"{EVAL_EPISODES} deterministic episodes every {meta['eval_every']:,} env steps. Threshold "
             f"{meta['threshold']:g}.", "",
             "| variant | seeds | final eval, median (min - max) | seeds reaching the threshold | "
             "median env steps to it |", "|---|---|---|---|---|"]
    for s in results["summary"]:
        lines.append(f"| {labels.get(s['variant'], s['variant'])} | {s['seeds']} | {_n(s['final_median'], 1)} "
                     f"({_n(s['final_min'], 1)} - {_n(s['final_max'], 1)}) | {s['reached']}/{s['seeds']} | "
                     f"{_n(s['median_steps_to_threshold'])} |")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT))


def write_plot(results: dict[str, Any], out: Path) -> Path:
    """Eval return vs env steps: the median over seeds per variant, min-max band; the teacher dashed."""
    fig, ax = one_plot()
    for i, s in enumerate(results["summary"]):
        runs = [r for r in results["runs"] if r["variant"] == s["variant"] and "error" not in r and r["points"]]
        if not runs:
            continue
        steps = sorted({p["step"] for r in runs for p in r["points"]})
        by_step = [[p["eval_return"] for r in runs for p in r["points"] if p["step"] == x] for x in steps]
        style = "--" if s["variant"] == "teacher" else "-"
        ax.plot(steps, [statistics.median(v) for v in by_step], style, color=f"C{i}", marker=".",
                label=s["variant"])
        ax.fill_between(steps, [min(v) for v in by_step], [max(v) for v in by_step], color=f"C{i}", alpha=0.15)
    ax.axhline(results["meta"]["threshold"], color="grey", linestyle=":", linewidth=1, label="threshold")
    ax.set_xlabel("env steps (each variant; the teacher's own steps for the teacher)")
    ax.set_ylabel(f"eval return ({EVAL_EPISODES} deterministic episodes)")
    ax.set_title(f"{results['meta']['env']}: median over {results['meta']['seeds']} seeds, min-max band",
                 fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    names = args.only or list(VARIANTS)
    print(f"aacd: {args.env}, {args.seeds} seeds, "
          f"variants {names}, threshold {args.threshold:g}")
    if args.dry_run:
        return 0
    began, meta = script.start("aacd", argv, args.out, env=args.env, threshold=args.threshold,
                               eval_every=args.eval_every, seeds=args.seeds, overrides=args.set)
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-aacd-") as tmp:
        for seed in range(args.seeds):
            results["runs"] += run_seed(seed, args, Path(tmp), names)
    return script.finish(results, began, args.out, lambda runs: summarise(runs, names, args.threshold),
                         write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
