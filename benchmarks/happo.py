"""HAPPO vs MAPPO on multi-agent MuJoCo, at a stated env-step budget, against HARL's published returns.

    python -m benchmarks.happo [--envs mamujoco:HalfCheetah-2x3 mamujoco:Walker2d-2x3] [--seeds 3] [--steps N]
                               [--eval-every N] [--only happo mappo] [--set KEY=VALUE ...] [--device cpu|cuda|auto]
                               [--out benchmarks/results/happo] [--append] [--dry-run]

Per env and seed: HAPPO (``configs/happo/<env>.yaml``) and MAPPO (``configs/mappo/<env>.yaml``: the same
hyperparameters, only ``update_scheme`` switched), each for ``--steps`` env steps (default: the configs'
``total_steps``, HARL's 1e7) with an evaluation every ``--eval-every`` steps (default: the configs'). Any env with
both configs works (``--envs drl/HalfCheetah-2x3-v0`` for the MJWarp partition on a GPU, ``drl/Rendezvous-v0`` for
a quick check).

Reported per env and method (mean +- std over seeds): the last evaluation's team return (the greedy policy, the
mean over its episodes), the best evaluation, the per-agent returns of the last evaluation, and the training
throughput (env steps/s, evaluations excluded). HAPPO beats MAPPO only beyond twice the standard error of the
difference over seeds. Reference rows: HARL's HAPPO and MAPPO curves at 1e7 steps (read off the plots of Zhong
et al. 2024, JMLR; see ``REFERENCE``), comparable only when ``--steps`` is 1e7. Writes ``results.json``,
``report.md`` and ``curves.png`` (eval return vs env steps, mean and min-max band over seeds, one panel per env)
to ``--out``. ``--append`` keeps the runs of ``--out``'s earlier ``results.json`` that this call does not redo
(another env, method or seed; the same budget, evaluation interval and ``--set``, else refused):
:func:`benchmarks.harness.script.append_runs`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import script
from benchmarks.harness.report import close_report, mean_std, pyplot, save_figure, study_header
from benchmarks.harness.report import number as _n
from benchmarks.masked_velocity import _verdict

RESULTS_DIR = Path(__file__).resolve().parent / "results"
METHODS = {"happo": "HAPPO", "mappo": "MAPPO"}
PLOT = "curves.png"
REFERENCE_STEPS = 10_000_000
# HARL (Zhong et al. 2024), MaMuJoCo team return at 1e7 env steps, read off the published curves
# (shared/PAPERS.md "HAPPO"): {env: {method: return}}; MAPPO "similar" to HAPPO on these tasks.
REFERENCE = {
    "mamujoco:HalfCheetah-2x3": {"happo": 7000.0},
    "drl/HalfCheetah-2x3-v0": {"happo": 7000.0},
    "mamujoco:Walker2d-2x3": {"happo": 5400.0},
    "mamujoco:Ant-4x2": {"happo": 6000.0},
    "mamujoco:Hopper-3x1": {"happo": 3500.0},
    "mamujoco:Walker2d-6x1": {"happo": 4400.0},
    "mamujoco:Humanoid-17x1": {"happo": 6700.0, "mappo": 600.0},
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.happo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["mamujoco:HalfCheetah-2x3", "mamujoco:Walker2d-2x3"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per env and method (0 .. N-1)")
    parser.add_argument("--steps", type=int, help="env steps per run (default: the configs' total_steps)")
    parser.add_argument("--eval-every", type=int, help="env steps between evaluations (default: the configs')")
    parser.add_argument("--only", nargs="+", choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--append", action="store_true",
                        help="keep the earlier runs in OUT/results.json that this call does not redo")
    script.add_out(parser, RESULTS_DIR / "happo")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "eval_every"), list(METHODS))
    from drl.api import config_path_for

    for env in args.envs:
        for method in args.only or METHODS:
            if not config_path_for(method, env).is_file():
                parser.error(f"--envs: no config {config_path_for(method, env).name} in configs/{method}/ for "
                             f"'{env}'; add one or pick an env that has both")
    return args


def config(method: str, env: str, seed: int, args: argparse.Namespace) -> Any:
    """The tuned config of ``method`` on ``env`` with the benchmark's seed, budget and evaluation."""
    from drl.api import config_path_for, load_config
    from drl.config import merge, parse_overrides

    overrides: dict[str, Any] = {"seed": seed, "progress": False, "log_interval": -1, "checkpoint_interval": 0,
                                 "torch_threads": 1, "device": args.device}
    if args.steps:
        overrides["total_steps"] = args.steps
    if args.eval_every:
        overrides["eval_interval"] = args.eval_every
    return load_config(config_file=config_path_for(method, env), overrides=merge(overrides, parse_overrides(args.set)))


def run_one(method: str, env: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train one run; its evaluation curve (team and per agent), final and best return, throughput."""
    cfg = config(method, env, seed, args)
    _, summary, rows = script.train_run(cfg, work / f"{env.replace('/', '-').replace(':', '-')}-{method}-s{seed}")
    points = script.eval_points(rows)
    agents = [key.split("/", 1)[1] for key in (rows[-1] if rows else {}) if key.startswith("eval_return/")]
    last_eval = next((r for r in reversed(rows) if r.get("eval_return") not in (None, "")), {})
    per_agent = {a: float(last_eval[f"eval_return/{a}"]) for a in agents if last_eval.get(f"eval_return/{a}")}
    return {"points": points, "steps": summary["steps"], "train_sps": summary["train_sps"],
            "final": points[-1]["eval_return"] if points else None,
            "best": max((p["eval_return"] for p in points), default=None), "per_agent": per_agent,
            "config": {"total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs, **vars(cfg.algo)}}



def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, method): seeds, final / best return and train steps/s (mean, std over seeds), per-agent finals."""
    out = []
    for env in dict.fromkeys(r["env"] for r in runs):
        for method in METHODS:
            mine = [r for r in runs if r["env"] == env and r["method"] == method]
            if not mine:
                continue
            ok = [r for r in mine if "error" not in r]
            final = mean_std([r["final"] for r in ok])
            agents = list(dict.fromkeys(a for r in ok for a in r["per_agent"]))
            out.append({"env": env, "method": method, "seeds": len(ok), "final": final,
                        "final_mean": final["mean"], "final_std": final["std"],
                        "best": mean_std([r["best"] for r in ok]), "train_sps": mean_std([r["train_sps"] for r in ok]),
                        "per_agent": {a: mean_std([r["per_agent"].get(a) for r in ok]) for a in agents},
                        "steps": ok[0]["steps"] if ok else None})
    return out


def _ms(stats: dict[str, float | None], digits: int = 1) -> str:
    return "-" if stats["mean"] is None else f"{_n(stats['mean'], digits)} +- {_n(stats['std'], digits)}"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("HAPPO vs MAPPO on multi-agent MuJoCo", meta)
    lines[-1:-1] = script.earlier_call_lines(meta)
    budget = meta["steps"] or "the configs' total_steps"
    lines += [f"{meta['seeds']} seeds per method; budget {budget} env steps per run (all envs together). HAPPO and "
              "MAPPO run the same config (`configs/<method>/<env>.yaml`; the MaMuJoCo ones hold HARL's tuned values) "
              "with only `update_scheme` switched. Final = the last evaluation (greedy team, the mean over its "
              "episodes); entries mean +- std over seeds; steps/s: training only, evaluations excluded.", "",
              "| env | method | seeds | steps | final return | best return | per-agent final | train steps/s |",
              "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        agents = ", ".join(f"{a} {_ms(v)}" for a, v in s["per_agent"].items()) or "-"
        lines.append(f"| {s['env']} | {METHODS[s['method']]} | {s['seeds']} | {_n(s['steps'])} | {_ms(s['final'])} | "
                     f"{_ms(s['best'])} | {agents} | {_ms(s['train_sps'], 0)} |")
    for env in dict.fromkeys(s["env"] for s in summary):
        for method, value in REFERENCE.get(env, {}).items():
            lines.append(f"| {env} | HARL {METHODS[method]} (published, read off the curve) | - | "
                         f"{_n(REFERENCE_STEPS)} | ~{_n(value)} | - | - | - |")
    lines += ["", "HARL's numbers are at 1e7 env steps (MAPPO: \"similar\" to HAPPO except Humanoid 17x1); a run "
              "with a smaller budget is not comparable to them.", "", "## Claims", ""]
    for env in dict.fromkeys(s["env"] for s in summary):
        by = {s["method"]: s for s in summary if s["env"] == env}
        lines.append(f"- {env}: HAPPO beats MAPPO (final return): {_verdict(by, 'happo', 'mappo')}")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT), key="method",
                        config_line=lambda r: f"- `{r['method']}` ({r['env']}): `{r['config']}`",
                        failed_line=lambda r: f"- {r['method']} on {r['env']} seed {r['seed']} failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    """Eval return vs env steps per env: each method's mean over seeds, min-max band; HARL's value as a line."""
    plt = pyplot()
    envs = list(dict.fromkeys(r["env"] for r in results["runs"]))
    fig, axes = plt.subplots(1, max(len(envs), 1), figsize=(6 * max(len(envs), 1), 4.5), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=False):
        for i, method in enumerate(METHODS):
            curves = [r["points"] for r in results["runs"]
                      if r["env"] == env and r["method"] == method and "error" not in r and r["points"]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = [p["step"] for p in curves[0][:length]]
            values = np.array([[p["eval_return"] for p in c[:length]] for c in curves])
            ax.plot(steps, values.mean(0), color=f"C{i}", marker="o", markersize=3,
                    label=f"{METHODS[method]} ({len(curves)} seeds)")
            ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.15)
            reference = REFERENCE.get(env, {}).get(method)
            if reference is not None:
                ax.axhline(reference, color=f"C{i}", linestyle="--", linewidth=1,
                           label=f"HARL {METHODS[method]} at 1e7 steps")
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval team return")
        ax.set_title(env, fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax for ax in axes[0][:len(envs)]])


SAME_ON_APPEND = ("steps", "eval_every", "device", "overrides")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    methods = args.only or list(METHODS)
    print(f"happo: {args.envs}, {args.seeds} seeds, methods {methods}, steps {args.steps or 'from the configs'}")
    if args.dry_run:
        return 0
    began, meta = script.start("happo", argv, args.out, envs=args.envs, seeds=args.seeds, steps=args.steps,
                               eval_every=args.eval_every, device=args.device, overrides=args.set)
    grid = {"env": args.envs, "method": methods, "seed": list(range(args.seeds))}
    try:
        earlier = script.append_runs(args.out / "results.json", grid, meta, SAME_ON_APPEND) if args.append else []
    except ValueError as err:
        print(f"python -m benchmarks.happo: error: {err}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-happo-") as tmp:
        results["runs"] = script.run_grid(
            {"env": args.envs, "method": methods, "seed": list(range(args.seeds))},
            lambda env, method, seed: run_one(method, env, seed, args, Path(tmp)), "{method} {env} seed {seed}",
            lambda r: f"final {_n(r['final'], 1)}, best {_n(r['best'], 1)}, {_n(r['train_sps'])} steps/s",
            loops=("env", "seed", "method"))
    return script.finish(results, began, args.out, summarise, write_report, write_plot, kept=earlier)


if __name__ == "__main__":
    sys.exit(main())
