"""Run logging: TensorBoard events, ``metrics.csv``, and a rich progress bar."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["RunLogger", "CSV_COLUMNS"]

# Fixed columns, so rows written before and after a resume line up. Learning columns first.
CSV_COLUMNS = [
    "global_step", "iteration", "episode_return", "episode_length", "episodes", "eval_return", "eval_return_std",
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance", "learning_rate",
    "epochs", "action_std", "wall_s", "eval_s", "sps",
]
TIMING_COLUMNS = {"wall_s", "eval_s", "sps"}  # differ between identical runs


class RunLogger:
    """Writes one row per iteration to ``metrics.csv`` and TensorBoard, and drives the progress bar.

    Args:
        run_dir: the run folder.
        total_steps: for the progress bar's ETA.
        start_step: steps already done (a resumed run).
        progress: show the rich progress bar.
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, progress: bool = True,
                 extra_columns: list[str] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.columns = CSV_COLUMNS + [c for c in (extra_columns or []) if c not in CSV_COLUMNS]
        csv_path = run_dir / "metrics.csv"
        new_file = not csv_path.exists() or csv_path.stat().st_size == 0
        self._csv_file = csv_path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        if new_file:
            self._csv.writeheader()
        self.tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step if start_step else None)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, sps=0.0, ret="-")
        self.progress.start()

    def log(self, row: dict[str, Any]) -> None:
        """Record one iteration; non-finite and missing values are written as empty cells."""
        step = int(row["global_step"])
        for key, value in row.items():
            if key not in ("global_step", "iteration") and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(key, value, step)
        clean = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else "") for k, v in row.items()}
        self._csv.writerow(clean)
        self._csv_file.flush()
        ret = row.get("episode_return")
        ret_text = f"{ret:.1f}" if isinstance(ret, float) and math.isfinite(ret) else "-"
        self.progress.update(self.task, completed=step, sps=row.get("sps", 0.0), ret=ret_text)

    def close(self) -> None:
        self.progress.stop()
        self.tb.close()
        self._csv_file.close()


class Stopwatch:
    """Wall-clock seconds since creation, continuing from ``offset`` (a resumed run)."""

    def __init__(self, offset: float = 0.0):
        self.start = time.perf_counter() - offset

    def __call__(self) -> float:
        return time.perf_counter() - self.start
