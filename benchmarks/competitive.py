"""Competitive HAPPO on drl/PursuitEvasion-v0: both teams' win rates against a league of frozen opponents.

    python -m benchmarks.competitive [--seeds 3] [--steps N] [--league-every K] [--episodes E]
                                     [--schedules simultaneous alternate] [--set KEY=VALUE ...]
                                     [--device cpu|cuda|auto] [--out benchmarks/results/competitive] [--dry-run]

Per schedule and seed: ``happo-competitive`` with ``configs/happo-competitive/drl-PursuitEvasion-v0.yaml``
(only ``algo.schedule`` switched) for ``--steps`` env steps (default: the config's ``total_steps``); every
``--league-every`` iterations (default: the config's ``league_interval``) each team's policy is snapshotted into
the other team's pool and both teams play ``--episodes`` episodes (default: the config's ``league_episodes``)
against every opponent in their pool (:class:`drl.runners.competitive.CompetitiveRunner`; the run's
``win_rates.csv`` is what is read here).

Reported per schedule and team (mean +- std over seeds), at iteration 0 and at the last evaluation: the win rate
against the opponent's iteration-0 snapshot (``iter_0``, the untrained opponent), against its first snapshot
after that (``iter_<K>``, early in training) and against the env's scripted opponents (``random``, and
``fleeing`` / ``greedy``). A team improves against the frozen league when its final mean win rate over the
iteration-0 pool (``iter_0`` and the scripted opponents, which every evaluation has) exceeds its iteration-0 value
by more than twice the standard error over seeds (one seed: not judged). Against ``iter_0`` a team can start
saturated (untrained pursuers almost never catch anything, so the evaders win nearly all of those games); the
scripted opponents and the early snapshot then carry the signal. Also judged the same way: the gain since
frozen, the team's final win rate against each snapshot minus its win rate against it when it was taken.
Writes ``results.json``, ``report.md`` and ``win_rates.png`` (win rate vs env steps, one panel per team, mean and
min-max band over seeds) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, study_header
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ENV = "drl/PursuitEvasion-v0"
AGENT = "happo-competitive"
SCHEDULES = ("simultaneous", "alternate", "ladder")
TEAMS = ("pursuers", "evaders")
PLOT = "win_rates.png"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.competitive", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per schedule (0 .. N-1)")
    parser.add_argument("--steps", type=int, help="env steps per run (default: the config's total_steps)")
    parser.add_argument("--league-every", type=int, help="iterations between league evaluations (default: config)")
    parser.add_argument("--episodes", type=int, help="episodes per opponent in a league evaluation (default: config)")
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=["simultaneous", "alternate"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "competitive")
    parser.set_defaults(only=None)  # the schedules are chosen with --schedules
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "league_every", "episodes"), [])
    return args


def config(schedule: str, seed: int, args: argparse.Namespace) -> Any:
    """The tuned config with the benchmark's schedule, seed, budget and league settings."""
    from drl.api import config_path_for, load_config
    from drl.config import merge, parse_overrides

    algo: dict[str, Any] = {"schedule": schedule}
    if args.league_every:
        algo["league_interval"] = args.league_every
    if args.episodes:
        algo["league_episodes"] = args.episodes
    overrides: dict[str, Any] = {"seed": seed, "progress": False, "log_interval": -1, "checkpoint_interval": 0,
                                 "torch_threads": 1, "device": args.device, "eval_interval": 0, "algo": algo}
    if args.steps:
        overrides["total_steps"] = args.steps
    return load_config(config_file=config_path_for(AGENT, ENV), overrides=merge(overrides, parse_overrides(args.set)))


def read_win_rates(run_dir: Path, steps_per_iteration: int) -> dict[str, list[dict[str, Any]]]:
    """``{team: [{"iteration", "step", "rates": {opponent: win rate}}]}`` from a run's ``win_rates.csv``."""
    from drl.runners.competitive import WIN_RATES_CSV

    table: dict[str, dict[int, dict[str, float]]] = {}
    with (run_dir / WIN_RATES_CSV).open() as f:
        for row in csv.DictReader(f):
            table.setdefault(row["team"], {}).setdefault(int(row["iteration"]), {})[row["opponent"]] = float(
                row["win_rate"])
    return {team: [{"iteration": it, "step": it * steps_per_iteration, "rates": rates}
                   for it, rates in sorted(by_it.items())] for team, by_it in table.items()}


def run_one(schedule: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train one run; its league table per team, the early snapshot's name and throughput."""
    cfg = config(schedule, seed, args)
    run_dir, summary, _ = script.train_run(cfg, work / f"{schedule}-s{seed}")
    per_iteration = cfg.algo.num_steps * cfg.env.num_envs
    curves = read_win_rates(run_dir, per_iteration)
    return {"curves": curves, "steps": summary["steps"], "train_sps": summary["train_sps"],
            "early": f"iter_{cfg.algo.league_interval}",
            "config": {"total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs, "env_kwargs": cfg.env.kwargs,
                       **vars(cfg.algo)}}


def _stats(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}


def opponents(run: dict[str, Any], team: str) -> list[str]:
    """The opponents reported for ``team``: ``iter_0``, the early snapshot, the scripted ones."""
    first = run["curves"][team][0]["rates"]
    scripted = [o for o in first if not o.startswith("iter_")]
    return ["iter_0", run["early"], *scripted]


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per schedule and team: win rates at iteration 0 and at the last evaluation against each reported
    opponent (mean, std over seeds) and the verdict on the gain against ``iter_0``."""
    out = []
    for schedule in dict.fromkeys(r["schedule"] for r in runs):
        ok = [r for r in runs if r["schedule"] == schedule and "error" not in r]
        if not ok:
            continue
        for team in TEAMS:
            names = opponents(ok[0], team)
            start = {o: _stats([r["curves"][team][0]["rates"][o] for r in ok if o in r["curves"][team][0]["rates"]])
                     for o in names}
            final = {o: _stats([r["curves"][team][-1]["rates"][o] for r in ok if o in r["curves"][team][-1]["rates"]])
                     for o in names}
            gains = [_pool_mean(r, team, -1) - _pool_mean(r, team, 0) for r in ok]
            since = [g for g in (_gain_since_frozen(r, team) for r in ok) if g is not None]
            out.append({"schedule": schedule, "team": team, "seeds": len(ok), "steps": ok[0]["steps"],
                        "start": start, "final": final, "gain": _stats(gains), "verdict": _verdict(gains),
                        "gain_since_frozen": _stats(since), "verdict_since_frozen": _verdict(since),
                        "train_sps": _stats([r["train_sps"] for r in ok])})
    return out


def _pool_mean(run: dict[str, Any], team: str, index: int) -> float:
    """``team``'s mean win rate at evaluation ``index`` over the iteration-0 pool (``iter_0`` and the scripted
    opponents: the opponents every evaluation has)."""
    names = list(run["curves"][team][0]["rates"])
    rates = run["curves"][team][index]["rates"]
    return statistics.fmean(rates[o] for o in names)


def _gain_since_frozen(run: dict[str, Any], team: str) -> float | None:
    """The mean over the opponent's snapshots ``iter_k`` taken before the last evaluation (and still in the
    pool) of ``team``'s final win rate against it minus its win rate against it at iteration ``k``, when the
    snapshot was the opponent's current policy; None without such snapshots."""
    curves = run["curves"][team]
    final = curves[-1]["rates"]
    gains = [final[name] - p["rates"][name] for p in curves[:-1]
             if (name := f"iter_{p['iteration']}") in p["rates"] and name in final]
    return statistics.fmean(gains) if gains else None


def _verdict(gains: list[float]) -> str:
    """Improved when the mean gain exceeds twice its standard error over seeds."""
    if len(gains) < 2:
        return "not judged (one seed)"
    mean = statistics.fmean(gains)
    se = statistics.stdev(gains) / math.sqrt(len(gains))
    if mean > 2 * se and mean > 0:
        return f"yes (+{mean:.2f}, 2 SE {2 * se:.2f})"
    return f"not shown ({mean:+.2f}, 2 SE {2 * se:.2f})"


def _ms(stats: dict[str, Any]) -> str:
    return "-" if stats["mean"] is None else f"{stats['mean']:.2f} +- {stats['std']:.2f}"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("Competitive HAPPO on drl/PursuitEvasion-v0: win rates against the frozen league", meta)
    budget = meta["steps"] or "the config's total_steps"
    lines += [f"{meta['seeds']} seeds per schedule; budget {budget} env steps per run. Each team's deterministic "
              "policy plays every opponent in its pool: `iter_0` = the other team's untrained policy, `iter_K` = "
              "its snapshot after the first K iterations, and the env's scripted opponents. Entries: win rate "
              "mean +- std over seeds, at iteration 0 -> at the last evaluation.", "",
              "| schedule | team | seeds | steps | opponent | win rate at 0 | final win rate |",
              "|---|---|---|---|---|---|---|"]
    for s in summary:
        for o in s["final"]:
            lines.append(f"| {s['schedule']} | {s['team']} | {s['seeds']} | {_n(s['steps'])} | {o} | "
                         f"{_ms(s['start'][o])} | {_ms(s['final'][o])} |")
    lines += ["", "Gain since frozen: for each snapshot `iter_k` of the opponent, the team's final win rate against "
              "it minus its win rate against it at iteration k (when it was the opponent's current policy), "
              "averaged over the snapshots; mean +- std over seeds.", "",
              "| schedule | team | gain over the iteration-0 pool | gain since frozen |", "|---|---|---|---|"]
    lines += [f"| {s['schedule']} | {s['team']} | {_ms(s['gain'])} | {_ms(s['gain_since_frozen'])} |" for s in summary]
    lines += ["", "## Claims", ""]
    for s in summary:
        lines.append(f"- {s['schedule']}: {s['team']} improve against the frozen league (final minus initial mean "
                     f"win rate over iter_0 and the scripted opponents): {s['verdict']}; against each snapshot "
                     f"since it was frozen: {s['verdict_since_frozen']}")
    return close_report(lines, results["runs"], out, ("win rate vs env steps", PLOT), key="schedule",
                        config_line=lambda r: f"- `{r['schedule']}` seed {r['seed']}: `{r['config']}`",
                        failed_line=lambda r: f"- {r['schedule']} seed {r['seed']} failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    """Win rate vs env steps, one panel per (schedule, team): one line per reported opponent (mean over seeds,
    min-max band)."""
    plt = pyplot()
    ok = [r for r in results["runs"] if "error" not in r]
    schedules = list(dict.fromkeys(r["schedule"] for r in ok)) or ["-"]
    fig, axes = plt.subplots(len(schedules), len(TEAMS), figsize=(12, 4.2 * len(schedules)), squeeze=False)
    for row, schedule in enumerate(schedules):
        mine = [r for r in ok if r["schedule"] == schedule]
        for col, team in enumerate(TEAMS):
            ax = axes[row][col]
            if mine:
                for i, opponent in enumerate(opponents(mine[0], team)):
                    series = [[(p["step"], p["rates"][opponent]) for p in r["curves"][team] if opponent in p["rates"]]
                              for r in mine]
                    length = min(len(s) for s in series)
                    if length == 0:
                        continue
                    steps = [x for x, _ in series[0][:length]]
                    values = np.array([[y for _, y in s[:length]] for s in series])
                    ax.plot(steps, values.mean(0), color=f"C{i}", marker="o", markersize=3,
                            label=f"vs {opponent} ({len(series)} seeds)")
                    ax.fill_between(steps, values.min(0), values.max(0), color=f"C{i}", alpha=0.15)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("env steps")
            ax.set_ylabel("win rate")
            ax.set_title(f"{team} ({schedule})", fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax for r in axes for ax in r])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    print(f"competitive: {ENV}, schedules {args.schedules}, {args.seeds} seeds, "
          f"steps {args.steps or 'from the config'}")
    if args.dry_run:
        return 0
    began, meta = script.start("competitive", argv, args.out, env=ENV, seeds=args.seeds, steps=args.steps,
                               league_every=args.league_every, episodes=args.episodes, schedules=args.schedules,
                               device=args.device, overrides=args.set)
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-competitive-") as tmp:
        results["runs"] = script.run_grid(
            {"schedule": args.schedules, "seed": list(range(args.seeds))},
            lambda schedule, seed: run_one(schedule, seed, args, Path(tmp)), "{schedule} seed {seed}",
            lambda r: ", ".join(f"{t} vs iter_0 {r['curves'][t][0]['rates']['iter_0']:.2f} -> "
                                f"{r['curves'][t][-1]['rates']['iter_0']:.2f}" for t in TEAMS))
    return script.finish(results, began, args.out, summarise, write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
