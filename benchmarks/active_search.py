"""AAWR vs symmetric AWR vs BC on drl/ActiveSearch-v0 (Hu et al. 2025's comparison), same budgets.

    python -m benchmarks.active_search [--seeds 5] [--offline-updates 20000] [--steps 50000]
                                       [--demo-episodes 50] [--eval-episodes 50] [--eval-every 5000]
                                       [--device cpu|cuda|auto] [--jobs 1] [--work DIR]
                                       [--env drl/ActiveSearch-v0] [--import MODULE]
                                       [--only NAME ...] [--out benchmarks/results/active_search] [--dry-run]

Variants (``--only`` names), each from its config file with the benchmark's budgets laid over it:

* ``aawr``: AAWR, IQL critics on the privileged "critic" group (configs/aawr/drl-ActiveSearch-v0.yaml);
* ``awr``: symmetric AWR, the same code and settings with the critics on the "policy" group
  (configs/aawr/drl-ActiveSearch-v0-symmetric.yaml);
* ``bc``: behaviour cloning, uniform weights, every batch from the demos (AAWR's code:
  configs/aawr/drl-ActiveSearch-v0-bc.yaml);
* ``aawr-gru``: AAWR with a GRU actor (memory of where the target was seen; critics as ``aawr``), trained on
  sequences of 32 steps (configs/aawr/drl-ActiveSearch-v0-gru.yaml).

Every variant gets the same ``--offline-updates`` gradient steps on the demos, then ``--steps`` online env
steps with one update each (BC's still on demos only), and the same evaluations. Demos are recorded once per
seed with the task's scripted, suboptimal expert (``--demo-episodes`` episodes, the seed's own), and all the
variants of that seed learn from the same file. The score is the success rate of the deterministic policy
over ``--eval-episodes`` evaluation episodes: the eval return, since the task's reward is 1 at success and 0
otherwise (one success per episode at most). Two numbers per run: after the offline phase (its closing
evaluation) and at the end of the online phase.

``--env`` runs the same comparison on another privileged task with a scripted expert; ``--import MODULE``
imports a module first (one that registers such a task, e.g. the tests' stand-in ``tests.aawr_standin``).
Writes ``results.json``, ``report.md`` and ``success.png`` to ``--out``.

Cost: a run is ``offline_updates + steps`` gradient steps of [256, 256] networks (5 Q heads, V and the policy;
BC only the policy). Measured eagerly with one torch thread on a loaded 2-core machine (load average ~5):
42 ms per AAWR/AWR update, 12 ms per BC update, so at the defaults (70k updates) an AAWR or AWR run takes
~50 min there and the three variants (5 seeds) ~9 h; an idle core, ``compile`` (auto from 20k updates) or
``--device cuda`` cut that, as do smaller ``--offline-updates`` / ``--steps`` (the same for every variant).
``aawr-gru`` unrolls its GRU over 32 steps per sampled transition and trains eagerly: about twice an AAWR
update (measured side by side on the same loaded machine), ``--only aawr awr bc`` leaves it out.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, one_plot, save_figure

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
PLOT = "success.png"


@dataclass(frozen=True)
class Variant:
    """One learner: ``--only`` name, label, registry agent and config file (relative to configs/)."""

    name: str
    label: str
    agent: str
    config: str


VARIANTS = [
    Variant("aawr", "AAWR (privileged critics)", "aawr", "aawr/drl-ActiveSearch-v0.yaml"),
    Variant("awr", "symmetric AWR", "aawr", "aawr/drl-ActiveSearch-v0-symmetric.yaml"),
    Variant("bc", "BC", "aawr", "aawr/drl-ActiveSearch-v0-bc.yaml"),
    Variant("aawr-gru", "AAWR, GRU actor", "aawr", "aawr/drl-ActiveSearch-v0-gru.yaml"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.active_search", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds per variant (0 .. N-1)")
    parser.add_argument("--offline-updates", type=int, default=20_000, help="gradient steps on demos first")
    parser.add_argument("--steps", type=int, default=50_000, help="online env steps (one update each)")
    parser.add_argument("--demo-episodes", type=int, default=50, help="scripted-expert episodes per seed")
    parser.add_argument("--eval-episodes", type=int, default=50, help="episodes per evaluation")
    parser.add_argument("--eval-every", type=int, default=5_000, help="online env steps between evaluations")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each in its own process on one torch "
                        "thread (results do not depend on it)")
    parser.add_argument("--work", type=Path, default=None, help="keep demos, run folders and each finished run's "
                        "record here; a rerun with the same --work skips the runs already recorded (default: a "
                        "temporary folder, removed at the end)")
    parser.add_argument("--env", default="drl/ActiveSearch-v0", help="a privileged task with a scripted expert")
    parser.add_argument("--import", dest="modules", action="append", default=[], metavar="MODULE",
                        help="import this module first (e.g. one that registers the --env task)")
    script.add_only(parser, [v.name for v in VARIANTS])
    script.add_out(parser, RESULTS_DIR / "active_search")
    args = parser.parse_args(argv)
    if args.offline_updates < 0:
        parser.error(f"--offline-updates must be >= 0, got {args.offline_updates}")
    script.check_args(parser, args, ("seeds", "steps", "demo_episodes", "eval_episodes", "eval_every", "jobs"),
                      [v.name for v in VARIANTS])
    return args


# --- one run --------------------------------------------------------------------------------
def success_points(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    """``[{step, success}]`` of the rows with an evaluation (``metrics.csv`` rows); step 0 = end of the offline
    phase (its row is keyed 0), then online env steps."""
    return script.eval_points(rows, name="success")


def run_config(variant: Variant, seed: int, demos: Path, args: argparse.Namespace) -> Any:
    """The variant's config file with the benchmark's env, budgets, evaluations and demos laid over it."""
    from drl.api import load_config

    overrides: dict[str, Any] = {
        "seed": seed, "progress": False, "device": args.device, "checkpoint_interval": 0, "torch_threads": 1,
        "total_steps": args.steps, "eval_interval": args.eval_every, "eval_episodes": args.eval_episodes,
        "env": {"id": args.env, "num_envs": 1, "num_eval_envs": min(args.eval_episodes, 10)},
        "algo": {"demos": str(demos), "offline_updates": args.offline_updates, "updates_per_step": 1,
                 "save_replay": False, "offline_log_interval": max(1, min(1_000, args.offline_updates)),
                 "num_steps": min(1_000, args.eval_every)}}  # an evaluation is due at an iteration's end
    return load_config(variant.agent, config_file=CONFIG_DIR / variant.config, overrides=overrides)


def run_one(variant: Variant, seed: int, demos: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.config import to_dict

    cfg = run_config(variant, seed, demos, args)
    _, summary, rows = script.train_run(cfg, work / f"{variant.name}-s{seed}")
    points = success_points(rows)
    offline = next((p["success"] for p in points if p["step"] == 0), None) if args.offline_updates else None
    return {"points": points, "offline_success": offline, "final_success": summary.get("final_eval_return"),
            "wall_s": summary.get("wall_s"), "steps": summary.get("steps"),
            "config": {"source": getattr(cfg, "source", "").replace(f"{CONFIG_DIR.parent}/", ""),
                       "algo": to_dict(cfg.algo) | {"demos": demos.name}}}  # no paths of this machine


def _unit(variant: Variant, seed: int, demos: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One (variant, seed) run, as :func:`script.attempt` records it; importable, so a worker process can run it."""
    for module in args.modules:
        importlib.import_module(module)
    record = script.attempt({"variant": variant.name, "seed": seed}, f"{variant.name} seed {seed}",
                            lambda: run_one(variant, seed, demos, args, work),
                            lambda r: f"success {_pct(r['offline_success'])} after offline, "
                                      f"{_pct(r['final_success'])} at the end")
    if "error" not in record:  # kept for a rerun with the same --work (a failed run is retried)
        path = work / "records" / f"{variant.name}-s{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, default=str))
    return record


def record_demos(seed: int, args: argparse.Namespace, work: Path) -> tuple[Path, float]:
    """The seed's demo file (scripted expert, ``--demo-episodes`` episodes) and the expert's success rate."""
    from envs.tasks.demos import collect_demos, save_demos

    demos = collect_demos(args.env, args.demo_episodes, seed=seed)
    return save_demos(demos, work / f"demos-s{seed}.pt"), demos["meta"]["success_rate"]


# --- summary and report ----------------------------------------------------------------------
def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "std": None, "median": None}
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0, "median": statistics.median(values)}


def summarise(runs: list[dict[str, Any]], variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: mean / std / median over seeds of the success after the offline phase and at the end."""
    out = []
    for v in variants:
        ok = [r for r in runs if r["variant"] == v["name"] and "error" not in r]
        out.append({**v, "seeds": len(ok), "errors": sum(1 for r in runs if r["variant"] == v["name"] and "error" in r),
                    "offline": _stats([r["offline_success"] for r in ok if r["offline_success"] is not None]),
                    "final": _stats([r["final_success"] for r in ok if r["final_success"] is not None])})
    return out


def _pct(x: Any) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = header_lines(f"AAWR vs symmetric AWR vs BC on {meta['env']}", meta)
    lines += [machine_line(meta, extra=(f"device {meta['device']}", "one torch thread"), load=False), "",
              f"Budgets, the same for every variant: {meta['offline_updates']:,} offline gradient steps on the demos, "
             f"then {meta['steps']:,} online env steps with one update each; evaluation: {meta['eval_episodes']} "
             f"deterministic episodes every {meta['eval_every']:,} online steps and at the end of the offline phase. "
             f"Demos: {meta['demo_episodes']} scripted-expert episodes recorded once per seed (expert success per "
             f"seed: {', '.join(_pct(x) for x in meta['expert_success'])}); all variants of a seed share them. "
             "Success = the eval return (reward 1 at success, else 0). Mean +- std (population) over seeds."
             + (f" {meta['recorded_before']} of the runs were recorded by earlier invocations with the same "
                "`--work` folder (the time above is this call's; each run's own is in `results.json`, `wall_s`)."
                if meta.get("recorded_before") else ""), "",
             "| variant | seeds | success after offline | final success | median final | per seed (offline -> final) |",
             "|---|---|---|---|---|---|"]
    for s in results["summary"]:
        per_seed = ", ".join(
            f"s{r['seed']}: failed" if "error" in r else
            f"s{r['seed']}: {_pct(r['offline_success'])} -> {_pct(r['final_success'])}"
            for r in results["runs"] if r["variant"] == s["name"])
        off, fin = s["offline"], s["final"]
        lines.append(f"| {s['label']} | {s['seeds']} | {_pct(off['mean'])} +- {_pct(off['std'])} | "
                     f"{_pct(fin['mean'])} +- {_pct(fin['std'])} | {_pct(fin['median'])} | {per_seed} |")
    lines += ["", "Paper (Hu et al. 2025, sim, 10 seeds, read off plots): AAWR / AWR / BC roughly 95 / 45 / 25 "
              "(camouflaged pick), 100 / 70 / 40 (active-perception task with a wrist camera)."]
    return close_report(lines, results["runs"], out, ("success vs online env steps", PLOT))


def write_plot(results: dict[str, Any], out: Path) -> Path:
    fig, ax = one_plot()
    for i, s in enumerate(results["summary"]):
        color = f"C{i}"
        curves = [r["points"] for r in results["runs"]
                  if r["variant"] == s["name"] and "error" not in r and r["points"]]
        for points in curves:
            ax.plot([p["step"] for p in points], [p["success"] for p in points], color=color, alpha=0.25, linewidth=1)
        steps = sorted({p["step"] for points in curves for p in points})
        means = [statistics.fmean([p["success"] for points in curves for p in points if p["step"] == step])
                 for step in steps]
        if steps:
            ax.plot(steps, means, color=color, marker="o", linewidth=2, label=f"{s['label']} (mean of {len(curves)})")
    ax.set_xlabel("online env steps (0: end of the offline phase)")
    ax.set_ylabel(f"success rate ({results['meta']['eval_episodes']} eval episodes)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{results['meta']['env']}: success vs online steps (thin: one seed)", fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax], legend=8)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    for module in args.modules:
        importlib.import_module(module)
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
    variants = [{"name": v.name, "label": v.label, "agent": v.agent, "config": v.config} for v in chosen]
    print(f"active_search: {args.env}, {args.seeds} seeds, {args.offline_updates:,} offline updates + "
          f"{args.steps:,} online steps, {args.demo_episodes} demo episodes per seed, on {args.device}")
    for v in chosen:
        print(f"  {v.name:<8} {v.label:<28} configs/{v.config}")
    if args.dry_run:
        return 0
    shown = [("DIR" if i and argv[i - 1] == "--work" else a) for i, a in enumerate(argv)]  # no local paths
    began, meta = script.start("active_search", shown, args.out, env=args.env, seeds=args.seeds,
                               offline_updates=args.offline_updates, steps=args.steps,
                               demo_episodes=args.demo_episodes, eval_episodes=args.eval_episodes,
                               eval_every=args.eval_every, device=args.device)
    results: dict[str, Any] = {"meta": meta | {"expert_success": []}, "variants": variants, "runs": []}
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="drl-active-search-")))
        work.mkdir(parents=True, exist_ok=True)
        plan = {k: str(getattr(args, k)) for k in ("offline_updates", "steps", "demo_episodes", "eval_episodes",
                                                   "eval_every", "device", "env")}
        plan_path = work / "plan.json"
        if plan_path.exists() and json.loads(plan_path.read_text()) != plan:
            print(f"--work holds runs of another plan ({plan_path.read_text().strip()}); use a new --work folder",
                  file=sys.stderr)
            return 2
        plan_path.write_text(json.dumps(plan))
        units, done = [], {}
        for seed in range(args.seeds):
            demos, expert = record_demos(seed, args, work)
            results["meta"]["expert_success"].append(expert)
            print(f"seed {seed}: {args.demo_episodes} demo episodes, expert success {_pct(expert)}", flush=True)
            for v in chosen:
                record = work / "records" / f"{v.name}-s{seed}.json"
                if record.exists():  # finished by an earlier invocation with this --work
                    done[(v.name, seed)] = json.loads(record.read_text())
                else:
                    units.append((v, seed, demos, args, work))
        print(f"{len(done)} runs already recorded in --work, {len(units)} to run", flush=True)
        results["meta"]["recorded_before"] = len(done)
        if args.jobs == 1:
            new = [_unit(*unit) for unit in units]
        else:  # each run alone in a fresh process: same result as in series (one torch thread, own seed)
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context) as pool:
                new = list(pool.map(_unit, *zip(*units, strict=True))) if units else []
        done |= {(r["variant"], r["seed"]): r for r in new}
        results["runs"] = [done[(v.name, seed)] for seed in range(args.seeds) for v in chosen]
    return script.finish(results, began, args.out, lambda runs: summarise(runs, variants), write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
