"""Learning-curve plots from run folders' ``metrics.csv`` (matplotlib, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["read_metrics", "plot_runs"]


def read_metrics(run_dir: str | Path) -> dict[str, list[float]]:
    """Columns of ``run_dir/metrics.csv`` as float lists (empty cells -> NaN)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a drl run folder: no metrics.csv in it")
    with path.open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"'{path}' has no rows yet")
    columns: dict[str, list[float]] = {k: [] for k in rows[0]}
    for row in rows:
        for key in columns:
            value = row.get(key, "")
            columns[key].append(float(value) if value not in ("", None) else float("nan"))
    return columns


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """Training and evaluation return vs env steps (and vs wall-clock) for one or more runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_steps, ax_time) = plt.subplots(1, 2, figsize=(12, 4.5))
    for i, run_dir in enumerate(run_dirs):
        m = read_metrics(run_dir)
        label = labels[i] if labels else Path(run_dir).name
        line = ax_steps.plot(m["global_step"], m["episode_return"], alpha=0.6, label=f"{label} (train)")[0]
        ax_time.plot(m["wall_s"], m["episode_return"], alpha=0.6, color=line.get_color(), label=f"{label} (train)")
        evals = [(s, w, r) for s, w, r in zip(m["global_step"], m["wall_s"], m["eval_return"], strict=True) if r == r]
        if evals:
            steps, walls, rets = zip(*evals, strict=True)
            ax_steps.plot(steps, rets, "o-", color=line.get_color(), label=f"{label} (eval)")
            ax_time.plot(walls, rets, "o-", color=line.get_color(), label=f"{label} (eval)")
    ax_steps.set_xlabel("env steps")
    ax_time.set_xlabel("wall-clock seconds")
    for ax in (ax_steps, ax_time):
        ax.set_ylabel("episode return")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
