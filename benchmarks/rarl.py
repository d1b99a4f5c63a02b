"""RARL vs PPO: nominal return and robustness to mass and friction errors, at the same protagonist env steps.

    python -m benchmarks.rarl [--envs InvertedPendulum-v5 Hopper-v5] [--seeds 3] [--steps N] [--episodes 10]
                              [--scales 0.5:1.5:11] [--heatmap-scales 0.5:1.5:11] [--heatmap-episodes 3]
                              [--eval-every N] [--only ppo rarl] [--set KEY=VALUE ...] [--device cpu]
                              [--out benchmarks/results/rarl] [--append] [--dry-run]

Per env and seed: PPO (``configs/ppo/<env>.yaml``) for ``--steps`` env steps and RARL
(``configs/rarl/<env>.yaml``) for the same protagonist env steps: the env steps of the rollouts the
protagonist learns from, so RARL's ``total_steps`` is ``--steps x (N_mu + N_nu) / N_mu`` (twice at 1:1).
Default ``--steps``: the PPO config's. Each run's last checkpoint is then swept with ``drl robustness``
(:func:`drl.robustness.robustness`): all body masses x ``--scales`` (friction nominal), all geom friction
x ``--scales`` (masses nominal), and the mass x friction grid ``--heatmap-scales`` squared. RARL is swept
as its protagonist alone (no adversary at test time); its final evaluations with and without the adversary
come from its training log (``eval_return_adversary``, ``eval_return``).

Reported per env and method (mean +- std over seeds): nominal return (the last training evaluation), RARL
with its adversary on, and per sweep the mean over the grid and the worst grid point. Writes
``results.json``, ``report.md``, ``<env>-mass.png``, ``<env>-friction.png`` and ``<env>-heatmap.png``
to ``--out``. ``--append`` keeps the runs of ``--out``'s earlier ``results.json`` that this call does not redo
(another env, method or seed), so one env or method can be rerun without the others; the report's command
line then lists every call, in order, and the machine line is the last call's, with a line per earlier call.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, mean_std, one_plot, pyplot, save_figure
from benchmarks.harness.report import number as _n
from drl.robustness import label_grid_axes

RESULTS_DIR = Path(__file__).resolve().parent / "results"
METHODS = {"ppo": "PPO", "rarl": "RARL (protagonist; no adversary at test)"}
EVAL_EPISODES = 10
SWEEPS = ("mass", "friction", "both")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rarl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["InvertedPendulum-v5", "Hopper-v5"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="protagonist env steps (default: the PPO config's total_steps)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per point of the mass/friction sweeps")
    parser.add_argument("--scales", default="0.5:1.5:11")
    parser.add_argument("--heatmap-scales", default="0.5:1.5:11")
    parser.add_argument("--heatmap-episodes", type=int, default=3)
    parser.add_argument("--eval-every", type=int, help="protagonist env steps between evaluations (default: "
                        "the PPO config's eval_interval)")
    parser.add_argument("--only", nargs="+", choices=list(METHODS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--append", action="store_true",
                        help="keep the earlier runs in OUT/results.json that this call does not redo")
    script.add_out(parser, RESULTS_DIR / "rarl")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "episodes", "heatmap_episodes", "eval_every"),
                      list(METHODS))
    from drl.robustness import parse_scales

    try:
        args.scale_list, args.heatmap_list = parse_scales(args.scales), parse_scales(args.heatmap_scales)
    except ValueError as err:
        parser.error(str(err))
    return args


def config(method: str, env: str, seed: int, args: argparse.Namespace) -> Any:
    """The tuned config of ``method`` on ``env`` with the benchmark's seed, budget and evaluation."""
    from drl.api import config_path_for, load_config
    from drl.config import merge, parse_overrides

    ppo = load_config(config_file=config_path_for("ppo", env))
    steps = args.steps or ppo.total_steps
    every = args.eval_every or ppo.eval_interval
    factor = 1.0
    if method == "rarl":
        algo = load_config(config_file=config_path_for("rarl", env)).algo
        factor = (algo.protagonist_iterations + algo.adversary_iterations) / algo.protagonist_iterations
    overrides = {"seed": seed, "progress": False, "log_interval": -1, "checkpoint_interval": 0, "torch_threads": 1,
                 "device": args.device, "total_steps": int(round(steps * factor)),
                 "eval_interval": int(round(every * factor)), "eval_episodes": EVAL_EPISODES,
                 "env": {"num_eval_envs": min(EVAL_EPISODES, 5)}}
    return load_config(config_file=config_path_for(method, env),
                       overrides=merge(overrides, parse_overrides(args.set)))


def run_one(method: str, env: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train, then the three sweeps of the last checkpoint; one record."""
    from drl.robustness import robustness

    cfg = config(method, env, seed, args)
    run_dir, summary, rows = script.train_run(cfg, work / f"{env}-{method}-s{seed}")
    points = script.eval_points(rows)
    adversary = [float(r["eval_return_adversary"]) for r in rows if r.get("eval_return_adversary")]
    record: dict[str, Any] = {"points": points, "steps": summary["steps"], "wall_s": summary["wall_s"],
                              "nominal": points[-1]["eval_return"] if points else None,
                              "with_adversary": adversary[-1] if adversary else None,
                              "config": {"total_steps": cfg.total_steps, **vars(cfg.algo)}}
    for param in SWEEPS:
        heat = param == "both"
        result = robustness(run_dir, param, args.heatmap_list if heat else args.scale_list,
                            args.heatmap_episodes if heat else args.episodes, out=run_dir / f"robustness-{param}",
                            checkpoint="latest", device=args.device)
        record[param] = {"points": result["points"], "grid_mean": result["grid_mean"],
                         "worst_point_mean": result["worst_point_mean"]}
    return record



def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (env, method): seeds, nominal, with adversary, and per sweep the grid mean and worst point (mean, std)."""
    out = []
    for env in dict.fromkeys(r["env"] for r in runs):
        for method in METHODS:
            ok = [r for r in runs if r["env"] == env and r["method"] == method and "error" not in r]
            if not ok and not any(r["env"] == env and r["method"] == method for r in runs):
                continue
            row = {"env": env, "method": method, "seeds": len(ok), "nominal": mean_std([r["nominal"] for r in ok]),
                   "with_adversary": mean_std([r["with_adversary"] for r in ok])}
            for param in SWEEPS:
                row[param] = {"grid_mean": mean_std([r[param]["grid_mean"] for r in ok]),
                              "worst_point_mean": mean_std([r[param]["worst_point_mean"] for r in ok])}
            out.append(row)
    return out


def _ms(stats: dict[str, float | None]) -> str:
    return "-" if stats["mean"] is None else f"{_n(stats['mean'], 1)} +- {_n(stats['std'], 1)}"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = header_lines("RARL vs PPO: robustness to mass and friction errors", meta)
    lines += [machine_line(meta, gpu=False)]
    lines += script.earlier_call_lines(meta)
    lines += ["",
              f"{meta['seeds']} seeds per method; the same protagonist env steps per env (RARL's total is scaled by "
              f"(N_mu + N_nu) / N_mu). Sweeps of the last checkpoint: masses of all bodies and friction of all "
              f"geoms x {meta['scales']} ({meta['episodes']} episodes per point), and the mass x friction grid "
              f"{meta['heatmap_scales']} squared ({meta['heatmap_episodes']} episodes per point). RARL is swept "
              "without its adversary. Entries: mean +- std over seeds.", "",
              "| env | method | seeds | nominal | RARL with adversary | mass: grid mean | mass: worst point | "
              "friction: grid mean | friction: worst point | heatmap: grid mean | heatmap: worst point |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in results["summary"]:
        cells = [s["env"], METHODS[s["method"]], str(s["seeds"]), _ms(s["nominal"]),
                 _ms(s["with_adversary"]) if s["method"] == "rarl" else "-"]
        for param in SWEEPS:
            cells += [_ms(s[param]["grid_mean"]), _ms(s[param]["worst_point_mean"])]
        lines.append("| " + " | ".join(cells) + " |")
    envs = list(dict.fromkeys(s["env"] for s in results["summary"]))
    for env in envs[1:]:
        lines += ["", f"![{env}: return vs mass scale]({env}-mass.png)"]
    return close_report(lines, results["runs"], out, (f"{envs[0]}: return vs mass scale", f"{envs[0]}-mass.png")
                        if envs else ("", ""), key="method",
                        config_line=lambda r: f"- `{r['method']}` ({r['env']}): `{r['config']}`",
                        failed_line=lambda r: f"- {r['method']} on {r['env']} seed {r['seed']} failed: `{r['error']}`")


def _curve(results: dict[str, Any], env: str, param: str, out: Path) -> Path:
    """Return vs scale of one sweep: per method the mean over seeds of each point's mean, min-max band over seeds."""
    key = "mass_scale" if param == "mass" else "friction_scale"
    fig, ax = one_plot()
    for i, method in enumerate(METHODS):
        runs = [r for r in results["runs"] if r["env"] == env and r["method"] == method and "error" not in r]
        if not runs:
            continue
        scales = sorted({p[key] for r in runs for p in r[param]["points"]})
        per_seed = np.array([[next(p["mean"] for p in r[param]["points"] if p[key] == x) for x in scales]
                             for r in runs])
        ax.plot(scales, per_seed.mean(0), marker="o", color=f"C{i}", label=f"{METHODS[method]} ({len(runs)} seeds)")
        ax.fill_between(scales, per_seed.min(0), per_seed.max(0), color=f"C{i}", alpha=0.15)
    ax.set_xlabel(f"{param} scale (all {'bodies' if param == 'mass' else 'geoms'})")
    ax.set_ylabel("return (mean over episodes and seeds)")
    ax.set_title(f"{env}: return vs {param} scale; band: min-max over seeds", fontsize=10)
    return save_figure(fig, out / f"{env}-{param}.png", axes=[ax])


def _heatmaps(results: dict[str, Any], env: str, out: Path) -> Path:
    """Mean return over the mass x friction grid, one panel per method (mean over seeds), shared colour scale."""
    plt = pyplot()
    grids = {}
    for method in METHODS:
        runs = [r for r in results["runs"] if r["env"] == env and r["method"] == method and "error" not in r]
        if not runs:
            continue
        masses = sorted({p["mass_scale"] for p in runs[0]["both"]["points"]})
        frictions = sorted({p["friction_scale"] for p in runs[0]["both"]["points"]})
        grid = np.zeros((len(masses), len(frictions)))
        for r in runs:
            for p in r["both"]["points"]:
                grid[masses.index(p["mass_scale"]), frictions.index(p["friction_scale"])] += p["mean"] / len(runs)
        grids[method] = (grid, masses, frictions)
    fig, axes = plt.subplots(1, max(len(grids), 1), figsize=(5.5 * max(len(grids), 1), 4.5), squeeze=False)
    low = min((g.min() for g, _, _ in grids.values()), default=0.0)
    high = max((g.max() for g, _, _ in grids.values()), default=1.0)
    for ax, (method, (grid, masses, frictions)) in zip(axes[0], grids.items(), strict=False):
        image = ax.imshow(grid, origin="lower", aspect="auto", vmin=low, vmax=high, cmap="viridis")
        label_grid_axes(ax, masses, frictions)
        ax.set_title(METHODS[method], fontsize=9)
        fig.colorbar(image, ax=ax, label="mean return")
    fig.suptitle(f"{env}: mass x friction", fontsize=10)
    fig.tight_layout()
    path = out / f"{env}-heatmap.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_plots(results: dict[str, Any], out: Path) -> Path:
    paths = []
    for env in dict.fromkeys(r["env"] for r in results["runs"] if "error" not in r):
        paths += [_curve(results, env, "mass", out), _curve(results, env, "friction", out),
                  _heatmaps(results, env, out)]
    return paths[0] if paths else out


SAME_ON_APPEND = ("steps", "episodes", "scales", "heatmap_scales", "heatmap_episodes", "eval_every", "overrides")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    methods = args.only or list(METHODS)
    print(f"rarl: {args.envs}, {args.seeds} seeds, methods {methods}, mass/friction scales {args.scale_list}, "
          f"heatmap {args.heatmap_list}")
    if args.dry_run:
        return 0
    began, meta = script.start("rarl", argv, args.out, envs=args.envs, seeds=args.seeds, steps=args.steps,
                               episodes=args.episodes, scales=args.scale_list, heatmap_scales=args.heatmap_list,
                               heatmap_episodes=args.heatmap_episodes, eval_every=args.eval_every,
                               overrides=args.set)
    try:
        grid = {"env": args.envs, "method": methods, "seed": list(range(args.seeds))}
        earlier = script.append_runs(args.out / "results.json", grid, meta, SAME_ON_APPEND) if args.append else []
    except ValueError as err:
        print(f"python -m benchmarks.rarl: error: {err}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-rarl-") as tmp:
        results["runs"] = script.run_grid(
            {"env": args.envs, "method": methods, "seed": list(range(args.seeds))},
            lambda env, method, seed: run_one(method, env, seed, args, Path(tmp)), "{method} {env} seed {seed}",
            lambda r: f"nominal {_n(r['nominal'], 1)}, mass grid mean {_n(r['mass']['grid_mean'], 1)}, "
                      f"worst {_n(r['mass']['worst_point_mean'], 1)}",
            loops=("env", "seed", "method"))
    return script.finish(results, began, args.out, summarise, write_report, write_plots, kept=earlier)


if __name__ == "__main__":
    sys.exit(main())
