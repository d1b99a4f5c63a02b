"""Run logging: TensorBoard events, ``metrics.csv``, and a rich progress bar."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

__all__ = ["RunLogger", "CSV_COLUMNS", "read_metrics", "truncate_metrics"]

# Fixed columns, so rows written before and after a resume line up. Learning columns first.
CSV_COLUMNS = [
    "global_step", "iteration", "episode_return", "episode_length", "episodes", "eval_return", "eval_return_std",
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance", "learning_rate",
    "epochs", "action_std", "wall_s", "eval_s", "sps",
]
TIMING_COLUMNS = {"wall_s", "eval_s", "sps"}  # differ between identical runs


def read_metrics(csv_path: Path) -> list[dict[str, str]]:
    """The complete rows of a ``metrics.csv``.

    A last line without its newline (a kill during the write) and rows whose ``global_step`` is
    not an integer are left out.
    """
    text = csv_path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    rows = []
    for row in csv.DictReader(text.splitlines()):
        try:
            int(row.get("global_step") or "")
        except ValueError:
            continue
        if None in row or None in row.values():  # more or fewer cells than columns: a torn row
            continue
        rows.append(row)
    return rows


def truncate_metrics(csv_path: Path, last_step: int, columns: list[str]) -> int:
    """Rewrite ``metrics.csv`` atomically with only its rows at ``global_step <= last_step``.

    Used on resume: rows a killed run wrote after its checkpoint are redone by the resumed run.
    The header becomes ``columns`` (cells are matched by name). Returns the number of rows kept.
    """
    kept = [row for row in read_metrics(csv_path) if int(row["global_step"]) <= last_step]
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, csv_path)
    return len(kept)


class RunLogger:
    """Writes one row per iteration to ``metrics.csv`` and TensorBoard, and drives the progress bar.

    Args:
        run_dir: the run folder.
        total_steps: for the progress bar's ETA.
        start_step: steps already done (a resumed run). An existing ``metrics.csv`` is cut back to
            its rows at ``global_step <= start_step`` and TensorBoard purges later events, so the
            logs continue exactly from the checkpoint.
        progress: show the rich progress bar.
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, progress: bool = True,
                 extra_columns: list[str] | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.columns = CSV_COLUMNS + [c for c in (extra_columns or []) if c not in CSV_COLUMNS]
        csv_path = run_dir / "metrics.csv"
        if csv_path.is_file() and csv_path.stat().st_size > 0:
            # a resumed run: keep the rows up to the checkpoint's step, drop what ran past it
            truncate_metrics(csv_path, start_step, self.columns)
        else:
            with csv_path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writeheader()
        self._csv_file = csv_path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")
        tb_dir = run_dir / "tensorboard"
        # TensorBoard hides events at steps >= purge_step from earlier sessions: the checkpoint's own row stays
        resumed_tb = tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*"))
        self.tb = SummaryWriter(log_dir=str(tb_dir), purge_step=start_step + 1 if resumed_tb else None)
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
