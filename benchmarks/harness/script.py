"""The frame of the single-study scripts (pendulum_solve, masked_velocity, aacd, active_search): their shared
arguments, the meta of ``results.json``, one run through :mod:`drl.api`, and the closing writes."""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import math
import shlex
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.machine import load_average, machine_info, versions

__all__ = ["add_only", "add_out", "check_args", "start", "attempt", "run_grid", "train_run", "eval_points", "finish"]


# --- arguments ------------------------------------------------------------------------------
def add_only(parser: argparse.ArgumentParser, names: list[str]) -> None:
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None, help=f"run only these variants: {names}")


def add_out(parser: argparse.ArgumentParser, default: Path) -> None:
    """``--out`` and ``--dry-run``."""
    parser.add_argument("--out", type=Path, default=default)
    parser.add_argument("--dry-run", action="store_true", help="print the plan, then exit")


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple[str, ...],
               names: list[str]) -> None:
    """Each of ``positive`` (destinations; None passes) >= 1, every ``--only`` name known, CUDA there if asked."""
    for dest in positive:
        value = getattr(args, dest)
        if value is not None and value < 1:
            parser.error(f"--{dest.replace('_', '-')} must be >= 1, got {value}")
    for name in args.only or []:
        if name not in names:
            parser.error(f"--only: unknown variant '{name}'; valid variants: {names}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was requested but CUDA is not available; use --device cpu or auto")


# --- the run --------------------------------------------------------------------------------
def start(module: str, argv: list[str], out: Path, **fields: Any) -> tuple[datetime.datetime, dict[str, Any]]:
    """Makes ``out``, one torch thread; the start time and ``results["meta"]``: command, date, machine,
    versions, ``fields``, load average."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    now = datetime.datetime.now().astimezone()
    return now, {"command": f"python -m benchmarks.{module} " + shlex.join(argv),
                 "date": now.isoformat(timespec="seconds"), "machine": machine_info(), "versions": versions(),
                 **fields, "load_start": load_average()}


def attempt(record: dict[str, Any], name: str, run: Callable[[], dict[str, Any]],
            done: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """``record`` with what ``run()`` returns, ``done(record)`` printed after ``name: ``; a failure is kept as
    ``record["error"]`` (one failed run must not lose the others)."""
    try:
        record |= run()
        print(f"{name}: {done(record)}", flush=True)
    except Exception as err:  # noqa: BLE001
        traceback.print_exc()
        record["error"] = f"{type(err).__name__}: {err}"
        print(f"{name}: FAILED: {record['error']}", flush=True)
    return record


def run_grid(axes: dict[str, list[Any]], run: Callable[..., dict[str, Any]], label: str,
             describe: Callable[[dict[str, Any]], str], loops: tuple[str, ...] | None = None
             ) -> list[dict[str, Any]]:
    """Every point of the grid ``axes`` (``{name: values}``) through :func:`attempt`, in order: the record is
    ``{name: value}`` (keys in the order of ``axes``), the printed name ``label.format(**record)``, the run
    ``run(**record)``. ``loops`` nests the axes, outermost first (default: the order of ``axes``); the records
    come back in that order."""
    loops = tuple(axes) if loops is None else loops
    if sorted(loops) != sorted(axes):
        raise ValueError(f"loops {loops} must name each axis of {list(axes)} once")
    records = []
    for values in itertools.product(*(axes[name] for name in loops)):
        point = dict(zip(loops, values, strict=True))
        record = {name: point[name] for name in axes}
        records.append(attempt(record, label.format(**record), lambda point=point: run(**point), describe))
    return records


def append_runs(path: Path, axes: dict[str, list[Any]], meta: dict[str, Any], same: tuple[str, ...]
                ) -> list[dict[str, Any]]:
    """``--append``: the runs of an earlier ``results.json`` at ``path`` that this call does not redo (a run is
    redone when its value of every axis in ``axes`` (``{name: values}``, as :func:`run_grid`'s) is in this call's
    grid). ``meta`` (this call's, from :func:`start`) gains the earlier calls: ``command`` becomes every call's
    command joined by ``"; "``, ``envs`` the union (when both have it), and ``earlier_calls`` each earlier call's
    date, duration, load and versions (:func:`earlier_call_lines` writes them). No file: no runs.

    Raises:
        ValueError: the file is not a results.json; or a field of ``same`` (a budget, sweep or ``--set`` setting in
            ``meta``) differs from the earlier call's, so the runs could not be averaged together; the message
            names it and both values.
    """
    if not path.is_file():
        return []
    try:
        earlier = json.loads(path.read_text())
        before = earlier["meta"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"--append: {path} is not a results.json this script wrote ({err}); move it away or "
                         "write to another --out") from err
    for name in same:
        if name in before and before.get(name) != meta.get(name):
            raise ValueError(f"--append: {path} was made with {name} = {before.get(name)!r}, this call has "
                             f"{meta.get(name)!r}; rerun with the same setting or write to another --out")
    meta["command"] = f"{before['command']}; {meta['command']}"
    if "envs" in meta and "envs" in before:
        meta["envs"] = list(dict.fromkeys([*before["envs"], *meta["envs"]]))
    call = {k: before.get(k) for k in ("date", "elapsed_s", "load_start", "load_end", "versions")}
    meta["earlier_calls"] = [*before.get("earlier_calls", []), call]
    return [r for r in earlier["runs"] if not all(r.get(name) in values for name, values in axes.items())]


def earlier_call_lines(meta: dict[str, Any]) -> list[str]:
    """One report line per earlier call whose runs were kept by :func:`append_runs` (the machine line is the
    last call's)."""
    return [f"Runs kept from an earlier call (`--append`): made {c['date']}, which took "
            f"{c['elapsed_s']:,.0f} s, load average at start / end {c['load_start']} / {c['load_end']}."
            for c in meta.get("earlier_calls", [])]


def train_run(cfg: Any, run_dir: Path) -> tuple[Path, dict[str, Any], list[dict[str, str]]]:
    """``drl.api.train`` on one torch thread after a garbage collection: the run folder, its summary and its
    ``metrics.csv`` rows."""
    from drl.api import train
    from drl.logging import read_metrics

    torch.set_num_threads(1)
    gc.collect()
    run_dir, summary = train(cfg, run_dir)
    return run_dir, summary, read_metrics(run_dir / "metrics.csv")


def eval_points(rows: list[dict[str, str]], name: str = "eval_return", train_s: bool = False) -> list[dict]:
    """``[{step[, train_s], name}]`` of the ``metrics.csv`` rows with a finite ``eval_return``; ``train_s`` is
    ``wall_s - eval_s`` (training seconds up to that row, every evaluation so far excluded)."""
    points = []
    for row in rows:
        value = float(row["eval_return"]) if row.get("eval_return") not in (None, "") else math.nan
        if math.isfinite(value):
            point: dict[str, Any] = {"step": int(float(row["global_step"]))}
            if train_s:
                point["train_s"] = float(row["wall_s"]) - float(row.get("eval_s") or 0.0)
            points.append(point | {name: value})
    return points


def finish(results: dict[str, Any], began: datetime.datetime, out: Path,
           summarise: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
           write_report: Callable[[dict[str, Any], Path], Path], write_plot: Callable[[dict[str, Any], Path], Path],
           kept: list[dict[str, Any]] | None = None) -> int:
    """Elapsed time, load average, summary; ``results.json``, the report and the plot in ``out``; the report
    printed. ``kept``: earlier runs (:func:`append_runs`) put before this call's. Exit status 0 when any of this
    call's runs succeeded (kept runs do not make a failed call a success)."""
    from benchmarks.run import _clean

    ran = results["runs"]
    results["runs"] = [*(kept or []), *ran]

    results["meta"]["elapsed_s"] = (datetime.datetime.now().astimezone() - began).total_seconds()
    results["meta"]["load_end"] = load_average()
    results["summary"] = summarise(results["runs"])
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1, allow_nan=False, default=str))
    report = write_report(results, out)
    write_plot(results, out)
    print(report.read_text())
    return 0 if any("error" not in r for r in ran) else 1
