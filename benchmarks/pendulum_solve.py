"""Wall-clock to solve Pendulum: SB3 SAC vs drl SAC/TD3 vs drl's parallel mode, on one CPU core.

    python -m benchmarks.pendulum_solve [--seeds 3] [--device cpu|cuda|auto] [--steps 20000]
                                        [--parallel-steps N] [--eval-every 1000] [--threshold -200]
                                        [--only NAME ...] [--out benchmarks/results/pendulum_solve] [--dry-run]

Solved = the first evaluation (10 deterministic episodes) with a mean return >= ``--threshold``
(-200). The clock is training time only: evaluations are excluded (drl: ``wall_s - eval_s`` of the
evaluating row of its ``metrics.csv``; SB3: the evaluations run inside the harness's callback are
timed and subtracted). Building the envs and the model is excluded on both sides. One torch thread.

Variants (``--only`` names), each run for ``--seeds`` seeds, interleaved seed by seed:

* ``sb3-sac``: ``stable_baselines3.SAC`` with its default hyperparameters on gymnasium ``Pendulum-v1``,
  one env, evaluated every ``--eval-every`` env steps;
* ``drl-sac`` / ``drl-td3``: drl's SAC / TD3 with their tuned ``configs/<agent>/Pendulum-v1.yaml``
  (drl's defaults if there is none), one env, evaluated every ``--eval-every`` env steps;
* ``drl-sac-parallel`` / ``drl-td3-parallel``: drl's parallel mode, SAC / TD3 on the torch-batched
  ``drl/Pendulum-v0`` with many envs (``configs/<agent>/drl-Pendulum-v0.yaml``: its num_envs,
  batch, UTD, n-step, budget), on ``--device``; evaluated after every iteration (num_envs x
  num_steps env steps).

The step budgets (``--steps`` for the one-env variants, the config's ``total_steps`` or
``--parallel-steps`` for the parallel ones) are limits, not targets: a run that never solves says so.
Target (issue 9): the parallel mode solves >= 10x sooner than SB3 on the CPU.

Writes ``results.json``, ``report.md`` and ``eval_vs_wall.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, one_plot, save_figure
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
THRESHOLD = -200.0
TARGET_SPEEDUP = 10.0  # parallel mode vs SB3, median wall-clock to solve, on the CPU
EVAL_EPISODES = 10
PLOT = "eval_vs_wall.png"


@dataclass(frozen=True)
class SolveVariant:
    """One thing timed to a solve.

    Args:
        name: ``--only`` name.
        label: name in tables and legends.
        lib: ``"drl"`` or ``"sb3"``.
        agent: ``"sac"`` or ``"td3"``.
        env_id: ``Pendulum-v1`` (gymnasium, one env, CPU) or ``drl/Pendulum-v0`` (parallel mode).
        parallel: torch-batched env with the config's many envs, on ``--device``.
    """

    name: str
    label: str
    lib: str
    agent: str
    env_id: str
    parallel: bool = False


VARIANTS = [
    SolveVariant("sb3-sac", "SB3 SAC (Pendulum-v1, 1 env)", "sb3", "sac", "Pendulum-v1"),
    SolveVariant("drl-sac", "drl SAC (Pendulum-v1, 1 env)", "drl", "sac", "Pendulum-v1"),
    SolveVariant("drl-td3", "drl TD3 (Pendulum-v1, 1 env)", "drl", "td3", "Pendulum-v1"),
    SolveVariant("drl-sac-parallel", "drl SAC parallel (drl/Pendulum-v0)", "drl", "sac", "drl/Pendulum-v0", True),
    SolveVariant("drl-td3-parallel", "drl TD3 parallel (drl/Pendulum-v0)", "drl", "td3", "drl/Pendulum-v0", True),
]
REFERENCE = "sb3-sac"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pendulum_solve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0 .. N-1)")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                        help="device of the parallel-mode variants (the one-env variants always run on the CPU)")
    parser.add_argument("--steps", type=int, default=20_000, help="env step budget of the one-env variants")
    parser.add_argument("--parallel-steps", type=int, default=None,
                        help="env step budget of the parallel variants (default: their config's total_steps)")
    parser.add_argument("--eval-every", type=int, default=1_000, help="env steps between evaluations (one-env)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="solved at mean eval return >= this")
    script.add_only(parser, [v.name for v in VARIANTS])
    script.add_out(parser, RESULTS_DIR / "pendulum_solve")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "eval_every", "parallel_steps"), [v.name for v in VARIANTS])
    return args


# --- the solve time -------------------------------------------------------------------------
def eval_points(rows: list[dict[str, str]]) -> list[dict[str, float]]:
    """The evaluations of a drl run, from its ``metrics.csv`` rows (``drl.logging.read_metrics``).

    One point per row with a finite ``eval_return``: ``step`` (``global_step``), ``train_s``
    (``wall_s - eval_s``: training seconds up to that row, every evaluation so far excluded; the
    runner re-reads its clock after evaluating and adds the evaluation to ``eval_s``) and
    ``eval_return``.
    """
    return script.eval_points(rows, train_s=True)


def first_solve(points: list[dict[str, float]], threshold: float = THRESHOLD) -> dict[str, float] | None:
    """The first evaluation point with ``eval_return >= threshold`` (None: never solved)."""
    return next((dict(p) for p in points if p["eval_return"] >= threshold), None)


def solve_from_metrics(csv_path: Path, threshold: float = THRESHOLD) -> tuple[list[dict], dict | None]:
    """``(evaluation points, first solve)`` of a drl run folder's ``metrics.csv``."""
    from drl.logging import read_metrics

    points = eval_points(read_metrics(csv_path))
    return points, first_solve(points, threshold)


# --- one run of each kind -------------------------------------------------------------------
def drl_config(variant: SolveVariant, seed: int, args: argparse.Namespace) -> Any:
    """The variant's tuned config (drl's defaults if none) with the benchmark's budget/eval settings."""
    from drl.api import load_config

    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "eval_episodes": EVAL_EPISODES, "env": {"num_eval_envs": EVAL_EPISODES},
                                 "algo": {"save_replay": False}}
    if variant.parallel:
        overrides["device"] = args.device
        overrides["eval_interval"] = 1  # after every iteration
        if args.parallel_steps is not None:
            overrides["total_steps"] = args.parallel_steps
    else:
        overrides |= {"device": "cpu", "total_steps": args.steps, "eval_interval": args.eval_every,
                      "env": {"num_envs": 1, "num_eval_envs": EVAL_EPISODES, "vectorization": "sync"}}
    return load_config(variant.agent, variant.env_id, overrides=overrides)


def run_drl(variant: SolveVariant, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.config import to_dict

    cfg = drl_config(variant, seed, args)
    source = getattr(cfg, "source", "")
    _, summary, rows = script.train_run(cfg, work / f"{variant.name}-s{seed}")
    points = eval_points(rows)
    solve = first_solve(points, args.threshold)
    algo = to_dict(cfg.algo)
    return {"num_envs": cfg.env.num_envs, "device": str(cfg.device), "budget": cfg.total_steps, "points": points,
            "solve": solve, "steps": int(summary.get("steps", points[-1]["step"] if points else 0)),
            "config": {"source": source, "total_steps": cfg.total_steps, "eval_interval": cfg.eval_interval,
                       "num_envs": cfg.env.num_envs, "algo": algo}}


def run_sb3(variant: SolveVariant, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """SB3's SAC/TD3 with its defaults (as the side-by-side rows give it), evaluated in the harness's callback."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from benchmarks.harness.sides import (
        _readable,
        _recorder,
        evaluate_actor,
        sb3_actor,
        sb3_offpolicy_kwargs,
    )
    from benchmarks.harness.suites import sb3_offpolicy_defaults
    from drl.runners.on_policy import EVAL_SEED_OFFSET

    torch.set_num_threads(1)
    venv = make_vec_env(variant.env_id, n_envs=1, seed=seed, vec_env_cls=DummyVecEnv)
    kwargs = sb3_offpolicy_kwargs(variant.agent, sb3_offpolicy_defaults(variant.agent),
                                  int(venv.action_space.shape[0]))
    model = getattr(sb3, variant.agent.upper())("MlpPolicy", venv, seed=seed, device="cpu", verbose=0, **kwargs)

    def evaluate(m: Any) -> list[float]:
        return evaluate_actor(sb3_actor(m, venv), variant.env_id, EVAL_EPISODES, seed + EVAL_SEED_OFFSET)

    callback = _recorder()
    gc.collect()
    callback.setup(args.eval_every, args.eval_every, evaluate)  # starts the clock
    model.learn(total_timesteps=args.steps, callback=callback)
    venv.close()
    curve = callback.curve
    points = [{"step": s, "train_s": t, "eval_return": r}
              for s, t, r in zip(curve["step"], curve["train_s"], curve["eval_return"], strict=True)
              if math.isfinite(r)]
    return {"num_envs": 1, "device": "cpu", "budget": args.steps, "points": points,
            "solve": first_solve(points, args.threshold), "steps": curve["step"][-1] if curve["step"] else 0,
            "config": {"source": f"stable_baselines3.{variant.agent.upper()} defaults", **_readable(kwargs)}}


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant: seeds solved, median seconds / env steps to solve, and SB3's median over it."""
    out = []
    for v in variants:
        vr = sorted((r for r in runs if r["variant"] == v["name"] and "error" not in r), key=lambda r: r["seed"])
        solved = [r["solve"] for r in vr if r["solve"]]
        out.append({**v, "seeds": len(vr), "solved": len(solved), "errors": sum(
            1 for r in runs if r["variant"] == v["name"] and "error" in r),
            "median_s": statistics.median([s["train_s"] for s in solved]) if solved else None,
            "median_step": statistics.median([s["step"] for s in solved]) if solved else None,
            "num_envs": vr[0]["num_envs"] if vr else None, "device": vr[0]["device"] if vr else v.get("device"),
            "budget": vr[0]["budget"] if vr else None})
    ref = next((s for s in out if s["name"] == REFERENCE), None)
    ref_ok = ref is not None and ref["seeds"] and ref["solved"] == ref["seeds"]
    for s in out:
        all_solved = s["seeds"] and s["solved"] == s["seeds"]
        s["sb3_over_this"] = ref["median_s"] / s["median_s"] if ref_ok and all_solved and s["median_s"] else None
    return out


def target_lines(summary: list[dict[str, Any]]) -> list[str]:
    """One verdict per parallel variant: SB3's median seconds to solve / the variant's >= 10x (CPU only)."""
    lines = []
    for s in summary:
        if not s.get("parallel") or s["status"] != "ok":
            continue
        if not str(s["device"]).startswith("cpu"):
            verdict = f"ran on {s['device']}: the target is for the CPU"
        elif s["sb3_over_this"] is None:
            verdict = "not judged (every seed of both must solve)"
        else:
            verdict = f"{s['sb3_over_this']:.1f}x: {'met' if s['sb3_over_this'] >= TARGET_SPEEDUP else 'not met'}"
        lines.append(f"- {s['label']} vs SB3 SAC, median wall-clock to solve: {verdict}")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = header_lines("Wall-clock to solve Pendulum (eval return >= {:g})".format(meta["threshold"]), meta)
    lines += [machine_line(meta, software=("torch", "stable_baselines3")), "",
             f"Solved = the first evaluation ({EVAL_EPISODES} deterministic episodes) with mean return >= "
             f"{meta['threshold']:g}. The one-env variants evaluate every {meta['eval_every']:,} env steps, the "
             "parallel ones after every iteration. Time = training seconds: evaluations (drl: `eval_s` of its "
             "`metrics.csv`; SB3: timed in the callback and subtracted) and the construction of envs and model are "
             "excluded on both sides. SB3 evaluates in one gymnasium env with the harness's loop, drl with its "
             "runner's evaluation on its eval envs (10 at once). `SB3 / this` = SB3's median time / this median "
             "time, given only when every seed of both solved.", "",
             f"**Target (issue 9): the parallel mode solves >= {TARGET_SPEEDUP:g}x sooner than SB3 on the CPU.**", ""]
    lines += target_lines(summary) or ["- no parallel-mode variant ran"]
    lines += ["", "| variant | env | device | num_envs | step budget | solved | median s to solve | "
              "median env steps | per seed (s @ env steps) | SB3 / this |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        if s["status"] != "ok":
            lines.append(f"| {s['label']} | {s['env_id']} | - | - | - | - | - | - | {s['status']} | - |")
            continue
        per_seed = ", ".join(
            (f"s{r['seed']}: {_n(r['solve']['train_s'], 1)} @ {_n(r['solve']['step'])}" if r["solve"]
             else f"s{r['seed']}: not solved (best {_n(max((p['eval_return'] for p in r['points']), default=None))})")
            if "error" not in r else f"s{r['seed']}: failed"
            for r in results["runs"] if r["variant"] == s["name"])
        ratio = f"{s['sb3_over_this']:.1f}x" if s["sb3_over_this"] is not None else "-"
        lines.append(f"| {s['label']} | {s['env_id']} | {s['device']} | {_n(s['num_envs'])} | {_n(s['budget'])} | "
                     f"{s['solved']}/{s['seeds']} | {_n(s['median_s'], 1)} | {_n(s['median_step'])} | {per_seed} | "
                     f"{ratio} |")
    return close_report(lines, results["runs"], out, ("eval return vs training wall-clock", PLOT))


def write_plot(results: dict[str, Any], out: Path) -> Path:
    fig, ax = one_plot()
    for i, s in enumerate(results["summary"]):
        color = f"C{i}"
        first = True
        for r in results["runs"]:
            if r["variant"] != s["name"] or "error" in r or not r["points"]:
                continue
            xs = [max(p["train_s"], 1e-3) for p in r["points"]]
            ax.plot(xs, [p["eval_return"] for p in r["points"]], color=color, marker=".", alpha=0.8,
                    label=s["label"] if first else None)
            first = False
    ax.axhline(results["meta"]["threshold"], color="grey", linestyle="--", linewidth=1,
               label=f"solved ({results['meta']['threshold']:g})")
    ax.set_xscale("log")
    ax.set_xlabel("training wall-clock (s, evaluations excluded; log scale)")
    ax.set_ylabel(f"eval return ({EVAL_EPISODES} deterministic episodes)")
    ax.set_title("Pendulum: evaluation return vs wall-clock (one line per seed)", fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax])


# --- main -----------------------------------------------------------------------------------
def _status(variant: SolveVariant) -> str:
    from drl.registry import AGENTS

    if variant.lib == "drl" and variant.agent not in AGENTS:
        return f"skipped: drl has no '{variant.agent}' agent (drl.registry.AGENTS)"
    return "ok"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
    variants = [{"name": v.name, "label": v.label, "lib": v.lib, "agent": v.agent, "env_id": v.env_id,
                 "parallel": v.parallel, "device": args.device if v.parallel else "cpu", "status": _status(v)}
                for v in chosen]
    print(f"pendulum_solve: {args.seeds} seeds, threshold {args.threshold:g}, one-env budget {args.steps:,} steps "
          f"(eval every {args.eval_every:,}), parallel budget "
          f"{'the configs' if args.parallel_steps is None else f'{args.parallel_steps:,}'} on {args.device}")
    for v in variants:
        print(f"  {v['name']:<18} {v['label']:<40} {v['status']}")
    if args.dry_run:
        return 0
    began, meta = script.start("pendulum_solve", argv, args.out, threshold=args.threshold,
                               eval_every=args.eval_every, eval_episodes=EVAL_EPISODES, seeds=args.seeds,
                               device=args.device)
    results: dict[str, Any] = {"meta": meta, "variants": variants, "runs": []}
    by_name = {v.name: v for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="drl-pendulum-solve-") as tmp:
        for seed in range(args.seeds):
            for v in variants:
                if v["status"] != "ok":
                    continue
                variant = by_name[v["name"]]
                results["runs"].append(script.attempt(
                    {"variant": v["name"], "seed": seed}, f"{v['name']} seed {seed}",
                    lambda variant=variant, seed=seed: run_sb3(variant, seed, args) if variant.lib == "sb3"
                    else run_drl(variant, seed, args, Path(tmp)),
                    lambda r: (f"solved at {r['solve']['train_s']:.1f} s, {r['solve']['step']:,} env steps"
                               if r["solve"] else f"not solved in {r['steps']:,} env steps")))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, variants), write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
