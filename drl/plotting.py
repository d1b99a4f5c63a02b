"""Learning-curve plots from run folders' ``metrics.csv`` (matplotlib, no display needed).

Runs are grouped by (agent, env id), read from each run's ``config.yaml``. Runs of different envs
are never drawn on one axis: each env gets its own row of subplots and a :class:`PlotWarning`
says so. Several runs of one (agent, env) (seeds) are aggregated on a common step grid into the
mean with a 95% percentile-bootstrap confidence band and the interquartile mean (IQM, the mean of
the middle 50% of runs, as rliable recommends for RL evaluation); a single run is drawn as is.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from drl.logging import read_metrics as read_metric_rows

__all__ = ["read_metrics", "plot_runs", "run_key", "group_runs", "iqm", "bootstrap_ci", "aggregate_curves",
           "aggregate_runs", "Aggregate", "PlotWarning"]


class PlotWarning(UserWarning):
    """Something about the plotted runs the reader should know (e.g. different envs)."""


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """Columns of ``run_dir/metrics.csv`` as float lists (empty cells -> NaN)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a drl run folder: no metrics.csv in it")
    rows = read_metric_rows(path)  # complete rows only: a run being written or killed mid-row plots too
    if not rows:
        raise ValueError(f"'{path}' has no rows yet")
    columns: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for key in columns:
            value = row.get(key, "")
            columns[key].append(float(value) if value not in ("", None) else float("nan"))
    return columns


def run_key(run_dir: str | Path) -> tuple[str, str]:
    """``(agent, env id)`` of a run from its ``config.yaml`` (``("?", folder name)`` when it has none)."""
    from drl.config import ConfigError, load_yaml

    try:
        raw = load_yaml(Path(run_dir) / "config.yaml")
    except ConfigError:
        return "?", Path(run_dir).name
    env = raw.get("env") if isinstance(raw.get("env"), dict) else {}
    return str(raw.get("agent", "?")), str(env.get("id", Path(run_dir).name))


def group_runs(run_dirs: Sequence[str | Path]) -> dict[tuple[str, str], list[Path]]:
    """Run folders grouped by ``(agent, env id)``, in first-seen order."""
    groups: dict[tuple[str, str], list[Path]] = {}
    for run_dir in run_dirs:
        groups.setdefault(run_key(run_dir), []).append(Path(run_dir))
    return groups


def iqm(values: Sequence[float] | np.ndarray) -> float:
    """Interquartile mean: drop ``floor(n / 4)`` values at each end of the sorted values, average the rest.

    This is ``scipy.stats.trim_mean(values, 0.25)``, rliable's IQM. E.g. ``iqm([1, 2, 3, 4]) == 2.5``,
    ``iqm([1, 2, 3, 4, 100]) == 3.0``. NaN for no values.
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0:
        return math.nan
    cut = int(0.25 * x.size)
    return float(x[cut:x.size - cut].mean())


def bootstrap_ci(values: Sequence[float] | np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of ``values`` (resampled with replacement).

    One value gives ``(v, v)``; no values give ``(nan, nan)``. Deterministic for a given ``seed``.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return math.nan, math.nan
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


@dataclass
class Aggregate:
    """Statistics over runs at each point of a common step grid (all arrays ``[G]``)."""

    steps: np.ndarray
    mean: np.ndarray
    iqm: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    num_runs: int


def _interpolate(steps: Sequence[float], values: Sequence[float], grid: np.ndarray) -> np.ndarray:
    s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
    finite = np.isfinite(s) & np.isfinite(v)
    if not finite.any():
        return np.full(grid.shape, np.nan)
    return np.interp(grid, s[finite], v[finite], left=np.nan, right=np.nan)


def aggregate_curves(curves: Sequence[tuple[Sequence[float], Sequence[float]]], confidence: float = 0.95,
                     resamples: int = 2000, seed: int = 0) -> Aggregate:
    """Aggregate ``[(steps, values), ...]`` of several runs on a common step grid.

    The grid is every step any run logged, limited to the range where every run has a finite value
    (so no point averages a different subset of runs); each run is linearly interpolated onto it
    (NaN cells skipped). Raises ``ValueError`` for no curves or when the runs share no step range.
    """
    if not curves:
        raise ValueError("no runs to aggregate")
    starts, ends = [], []
    for steps, values in curves:
        s, v = np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        ok = np.isfinite(s) & np.isfinite(v)
        if not ok.any():
            raise ValueError("a run has no finite value to aggregate")
        starts.append(s[ok].min())
        ends.append(s[ok].max())
    low, high = max(starts), min(ends)
    if low > high:
        raise ValueError(f"the runs share no step range (one ends at {high:g} before another starts at {low:g})")
    grid = np.unique(np.concatenate([np.asarray(s, dtype=np.float64) for s, _ in curves]))
    grid = grid[(grid >= low) & (grid <= high)]
    table = np.stack([_interpolate(s, v, grid) for s, v in curves])  # [R, G]
    bands = [bootstrap_ci(table[:, g], confidence, resamples, seed) for g in range(grid.size)]
    return Aggregate(steps=grid, mean=table.mean(axis=0), iqm=np.array([iqm(table[:, g]) for g in range(grid.size)]),
                     ci_low=np.array([b[0] for b in bands]), ci_high=np.array([b[1] for b in bands]),
                     num_runs=len(curves))


def aggregate_runs(run_dirs: Sequence[str | Path], column: str = "episode_return",
                   **kwargs: float) -> dict[tuple[str, str], Aggregate]:
    """:func:`aggregate_curves` of ``column`` vs ``global_step`` for each (agent, env) group of runs."""
    out = {}
    for key, dirs in group_runs(run_dirs).items():
        curves = []
        for run_dir in dirs:
            m = read_metrics(run_dir)
            if column not in m:
                raise ValueError(f"'{run_dir}/metrics.csv' has no column '{column}'")
            curves.append((m["global_step"], m[column]))
        out[key] = aggregate_curves(curves, **kwargs)
    return out


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, labels: list[str] | None = None,
              aggregate: bool = True) -> Path:
    """Training and evaluation return vs env steps (and vs wall-clock) for one or more runs.

    One row of subplots per env (a :class:`PlotWarning` when there is more than one). Within a row,
    several runs of one agent are drawn (with ``aggregate``) as their mean with a 95% bootstrap band
    and their IQM (dashed), on a common step grid; the wall-clock panel shows each run. ``labels``
    name single runs (one per run dir, in order).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dirs = [Path(d) for d in run_dirs]
    label_of = {d: (labels[i] if labels else d.name) for i, d in enumerate(run_dirs)}
    groups = group_runs(run_dirs)
    envs = list(dict.fromkeys(env for _, env in groups))
    if len(envs) > 1:
        warnings.warn(f"the runs are of {len(envs)} different envs ({', '.join(envs)}): one row of plots per env",
                      PlotWarning, stacklevel=2)
    fig, axes = plt.subplots(len(envs), 2, figsize=(12, 4.5 * len(envs)), squeeze=False)
    for row, env in enumerate(envs):
        ax_steps, ax_time = axes[row]
        for (agent, group_env), dirs in groups.items():
            if group_env != env:
                continue
            metrics = [read_metrics(d) for d in dirs]
            if aggregate and len(dirs) > 1:
                _plot_group(ax_steps, ax_time, agent, dirs, metrics)
            else:
                for d, m in zip(dirs, metrics, strict=True):
                    _plot_single(ax_steps, ax_time, label_of[d], m)
        ax_steps.set_title(env if len(envs) > 1 else "")
        ax_steps.set_xlabel("env steps")
        ax_time.set_xlabel("wall-clock seconds")
        for ax in (ax_steps, ax_time):
            ax.set_ylabel("episode return")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:  # a panel with nothing labelled gets no (empty) legend
                ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _plot_single(ax_steps: Any, ax_time: Any, label: str, m: dict[str, list[float]]) -> None:
    line = ax_steps.plot(m["global_step"], m["episode_return"], alpha=0.6, label=f"{label} (train)")[0]
    ax_time.plot(m["wall_s"], m["episode_return"], alpha=0.6, color=line.get_color(), label=f"{label} (train)")
    evals = [(s, w, r) for s, w, r in zip(m["global_step"], m["wall_s"], m["eval_return"], strict=True) if r == r]
    if evals:
        steps, walls, rets = zip(*evals, strict=True)
        ax_steps.plot(steps, rets, "o-", color=line.get_color(), label=f"{label} (eval)")
        ax_time.plot(walls, rets, "o-", color=line.get_color(), label=f"{label} (eval)")


def _plot_group(ax_steps: Any, ax_time: Any, agent: str, dirs: list[Path],
                metrics: list[dict[str, list[float]]]) -> None:
    n = len(dirs)
    color = None
    try:
        train = aggregate_curves([(m["global_step"], m["episode_return"]) for m in metrics])
        longest = max(max(m["global_step"], default=0) for m in metrics)
        if train.steps.size and train.steps[-1] < longest:  # aggregated only where every run has data
            shortest = min(zip(dirs, metrics, strict=True), key=lambda dm: max(dm[1]["global_step"], default=0))
            warnings.warn(f"{agent}: seeds aggregated up to step {train.steps[-1]:g}, where '{shortest[0].name}' "
                          f"stops (the longest run reaches {longest:g}); leave it out to see the rest",
                          PlotWarning, stacklevel=3)
        marker = "o" if train.steps.size < 3 else None  # a line of one point would not show
        line = ax_steps.plot(train.steps, train.mean, marker=marker, label=f"{agent} train mean ({n} runs)")[0]
        color = line.get_color()
        ax_steps.fill_between(train.steps, train.ci_low, train.ci_high, color=color, alpha=0.2, label="95% CI")
        ax_steps.plot(train.steps, train.iqm, "--", color=color, alpha=0.8, label=f"{agent} train IQM")
    except ValueError as err:
        warnings.warn(f"{agent}: training returns not aggregated: {err}", PlotWarning, stacklevel=3)
    try:
        ev = aggregate_curves([(m["global_step"], m["eval_return"]) for m in metrics])
        ax_steps.plot(ev.steps, ev.mean, "o-", color=color, label=f"{agent} eval mean ({n} runs)")
        ax_steps.fill_between(ev.steps, ev.ci_low, ev.ci_high, color=color, alpha=0.1)
    except ValueError:
        pass  # no evaluation shared by every run
    for d, m in zip(dirs, metrics, strict=True):
        ax_time.plot(m["wall_s"], m["episode_return"], alpha=0.5, color=color, label=f"{d.name} (train)")
