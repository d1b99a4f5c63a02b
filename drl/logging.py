"""Run logging: TensorBoard events, ``metrics.csv``, a rich progress bar, and a plain stdout table.

When the progress bar is off or stdout is not a terminal (a redirected log, a batch job), a
:class:`ConsoleTable` prints the run header at once and a compact row every ``log_interval``
iterations (default: at most every ~10 s), each flushed, so a ``tail -f`` shows the run live.
"""

from __future__ import annotations

import collections
import csv
import io
import math
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from drl.guards import atomic_write_text

__all__ = ["RunLogger", "CSV_COLUMNS", "ConsoleTable", "EpisodeWindow", "flat_config", "read_metrics",
           "truncate_metrics"]

# Fixed columns, so rows written before and after a resume line up. Learning columns first.
# ``episode_return``/``episode_length`` are the means over the last EpisodeWindow.size finished episodes
# (defined from the first finished episode on); ``episodes`` counts the episodes that finished in the
# iteration and ``iter_episode_return`` is their mean return (empty when none finished).
CSV_COLUMNS = [
    "global_step", "iteration", "episode_return", "episode_length", "episodes", "eval_return", "eval_return_std",
    "policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "explained_variance", "learning_rate",
    "epochs", "action_std", "wall_s", "eval_s", "sps", "iter_episode_return",
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
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept)
    atomic_write_text(csv_path, text.getvalue())
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
        logged_step: rows (and TensorBoard events) after this step are dropped on resume; default
            ``start_step`` (a run resumed inside an iteration drops the partial row it logged).

        grow_columns: a row with keys that are not columns yet (an agent's own metrics) adds them:
            the file is rewritten once with the wider header, earlier rows get empty cells there.
            Off: such keys are not written to ``metrics.csv`` (TensorBoard gets every key).
    """

    def __init__(self, run_dir: Path, total_steps: int, start_step: int = 0, progress: bool = True,
                 extra_columns: list[str] | None = None, config: dict[str, Any] | None = None,
                 config_source: str | None = None, log_interval: int = 0, stream: TextIO | None = None,
                 logged_step: int | None = None, grow_columns: bool = False):
        from torch.utils.tensorboard import SummaryWriter

        stream = stream if stream is not None else sys.stdout
        interactive = progress and _is_terminal(stream)
        self.columns = CSV_COLUMNS + [c for c in (extra_columns or []) if c not in CSV_COLUMNS]
        self.table = (ConsoleTable(stream, log_interval, declared=extra_columns)
                      if not interactive and log_interval >= 0 else None)
        ConsoleTable.print_header(stream, run_dir, config_source, config, start_step, total_steps)
        progress = interactive  # a bar on a redirected stream only prints at the very end

        self.run_dir = run_dir
        logged_step = start_step if logged_step is None else logged_step
        csv_path = run_dir / "metrics.csv"
        if csv_path.is_file() and csv_path.stat().st_size > 0:
            # a resumed run: keep the rows up to the checkpoint's step, drop what ran past it
            with csv_path.open(newline="") as f:
                header = next(csv.reader(f), [])
            self.columns += [c for c in header if c and c not in self.columns]  # columns an agent added
            truncate_metrics(csv_path, logged_step, self.columns)
        else:
            with csv_path.open("w", newline="") as f:
                csv.DictWriter(f, fieldnames=self.columns).writeheader()
        self._csv_path = csv_path
        self.grow_columns = grow_columns
        self._open_csv()
        tb_dir = run_dir / "tensorboard"
        # TensorBoard hides events at steps >= purge_step from earlier sessions: the checkpoint's own row stays
        resumed_tb = tb_dir.is_dir() and any(tb_dir.glob("events.out.tfevents.*"))
        self.tb = SummaryWriter(log_dir=str(tb_dir), purge_step=logged_step + 1 if resumed_tb else None)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} steps"),
            TextColumn("{task.fields[sps]:,.0f} steps/s"), TextColumn("return {task.fields[ret]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), disable=not progress, transient=False,
        )
        self.task = self.progress.add_task("train", total=total_steps, completed=start_step, sps=0.0, ret="-")
        self.progress.start()

    def _open_csv(self) -> None:
        self._csv_file = self._csv_path.open("a", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=self.columns, extrasaction="ignore")

    def log(self, row: dict[str, Any]) -> None:
        """Record one iteration; non-finite and missing values are written as empty cells."""
        step = int(row["global_step"])
        new_columns = [key for key in row if key not in self.columns] if self.grow_columns else []
        if new_columns:  # e.g. an off-policy agent's metrics, from its first update on
            self._csv_file.close()
            self.columns += new_columns
            truncate_metrics(self._csv_path, step, self.columns)  # the same rows under the wider header
            self._open_csv()
        for key, value in row.items():
            if key not in ("global_step", "iteration") and isinstance(value, (int, float)) and math.isfinite(value):
                self.tb.add_scalar(key, value, step)
        clean = {k: (v if not (isinstance(v, float) and not math.isfinite(v)) else "") for k, v in row.items()}
        self._csv.writerow(clean)
        self._csv_file.flush()
        ret = row.get("episode_return")
        ret_text = f"{ret:.1f}" if isinstance(ret, float) and math.isfinite(ret) else "-"
        self.progress.update(self.task, completed=step, sps=row.get("sps", 0.0), ret=ret_text)
        if self.table is not None:
            self.table.add(row)

    def close(self) -> None:
        if self.table is not None:
            self.table.finish()
        self.progress.stop()
        self.tb.close()
        self._csv_file.close()


class Stopwatch:
    """Wall-clock seconds since creation, continuing from ``offset`` (a resumed run)."""

    def __init__(self, offset: float = 0.0):
        self.start = time.perf_counter() - offset

    def __call__(self) -> float:
        return time.perf_counter() - self.start


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or file-like without isatty
        return False


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> ``{"algo.learning_rate": 3e-4, ...}`` (lists and kwargs dicts kept as values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and key != "kwargs":
            out.update(flat_config(value, f"{name}."))
        else:
            out[name] = value
    return out


class EpisodeWindow:
    """Mean return and length over the last ``size`` finished episodes (rsl_rl / SB3's rolling window).

    The value logged as ``episode_return`` is therefore defined at every iteration once the first
    episode has finished, and a curve does not break off in iterations where no episode ended.

    Args:
        size: number of most recent episodes averaged (100, as SB3's ``ep_info_buffer``).
    """

    def __init__(self, size: int = 100):
        if size < 1:
            raise ValueError(f"EpisodeWindow size must be >= 1, got {size}")
        self.size = size
        self.returns: collections.deque[float] = collections.deque(maxlen=size)
        self.lengths: collections.deque[float] = collections.deque(maxlen=size)

    def extend(self, returns: Iterable[float], lengths: Iterable[float]) -> None:
        """Add finished episodes in the order they ended (the oldest fall out of the window)."""
        self.returns.extend(float(r) for r in returns)
        self.lengths.extend(float(n) for n in lengths)

    @property
    def mean_return(self) -> float:
        """Mean return of the window; NaN before the first finished episode."""
        return math.fsum(self.returns) / len(self.returns) if self.returns else math.nan

    @property
    def mean_length(self) -> float:
        """Mean length (env steps) of the window; NaN before the first finished episode."""
        return math.fsum(self.lengths) / len(self.lengths) if self.lengths else math.nan

    def state_dict(self) -> dict[str, list[float]]:
        return {"returns": list(self.returns), "lengths": list(self.lengths)}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.extend(state.get("returns", []), state.get("lengths", []))


class ConsoleTable:
    """A compact fixed-width table of training progress on a plain stream (a log file, a pipe).

    One row per printed iteration; the header line repeats every ``header_every`` rows. A row is
    printed for the first iteration, for every iteration with an evaluation, and then every
    ``log_interval`` iterations, or, with ``log_interval = 0``, when ``seconds`` have passed since
    the last printed row. :meth:`finish` prints the last row if it was not printed yet.

    Args:
        stream: where to write (flushed after each row).
        log_interval: iterations between rows; 0 chooses by time (``seconds``).
        seconds: the time-based interval in wall-clock seconds.
        clock: monotonic seconds (injectable for tests).
        declared: the metric columns the run declared up front (the agent's ``metric_columns``): their
            losses get a column from the first row (``-`` while empty), so the header is printed once
            even when the losses come later (an off-policy warm-up) or alternate (RARL's two players).
    """

    # (row key, column title, width); losses are the row's ``*_loss`` keys and ``entropy``
    LEADING = [("global_step", "global_step", 12), ("iteration", "iter", 6), ("episode_return", "ep_return", 10),
               ("episode_length", "ep_length", 9), ("eval_return", "eval_return", 11)]
    TRAILING = [("sps", "sps", 8), ("wall_s", "time_s", 8)]
    header_every = 25

    def __init__(self, stream: TextIO, log_interval: int = 0, seconds: float = 10.0,
                 clock: Callable[[], float] = time.monotonic, declared: list[str] | None = None):
        self.stream = stream
        self.declared = [k for k in declared or [] if k.endswith("_loss") or k == "entropy"]
        self.log_interval = log_interval
        self.seconds = seconds
        self.clock = clock
        self.columns: list[tuple[str, str, int]] | None = None
        self.rows_printed = 0
        self.last_print = -math.inf
        self.pending: dict[str, Any] | None = None  # the latest row not printed yet

    @staticmethod
    def print_header(stream: TextIO, run_dir: Path, config_source: str | None, config: dict[str, Any] | None,
                     start_step: int = 0, total_steps: int | None = None) -> None:
        """The run folder, where the config came from, and every resolved hyperparameter (flushed)."""
        lines = [f"run folder: {run_dir}"]
        if start_step:
            lines.append(f"resuming at step {start_step:,}" + (f" of {total_steps:,}" if total_steps else ""))
        if config_source:
            lines.append(f"config: {config_source}")
        if config is not None:
            items = [f"{k}={v}" for k, v in flat_config(config).items()]
            line = " "
            for item in items:
                if len(line) + len(item) + 1 > 118 and line.strip():
                    lines.append(line)
                    line = " "
                line += " " + item
            if line.strip():
                lines.append(line)
        print("\n".join(lines), file=stream, flush=True)

    def _choose_columns(self, row: dict[str, Any]) -> list[tuple[str, str, int]]:
        keys = self.declared + [k for k in row if k.endswith("_loss") and k not in self.declared]
        losses = [(k, k, max(10, len(k))) for k in keys if k != "entropy"]
        if "entropy" in row or "entropy" in self.declared:
            losses.append(("entropy", "entropy", 8))
        return self.LEADING + losses + self.TRAILING

    @staticmethod
    def _cell(value: Any, width: int) -> str:
        if isinstance(value, bool) or value is None or value == "":
            text = "-"
        elif isinstance(value, int):
            text = f"{value}"
        elif isinstance(value, float):
            if not math.isfinite(value):
                text = "-"
            elif value == int(value) and abs(value) < 1e12:
                text = f"{int(value)}"
            elif abs(value) >= 1e5 or abs(value) < 1e-3:
                text = f"{value:.3g}"
            else:
                text = f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"
        else:
            text = str(value)
        return text.rjust(width)

    def format_row(self, row: dict[str, Any]) -> str:
        assert self.columns is not None
        return " ".join(self._cell(row.get(key), width) for key, _, width in self.columns)

    def header(self) -> str:
        assert self.columns is not None
        return " ".join(title.rjust(width) for _, title, width in self.columns)

    def _due(self, row: dict[str, Any]) -> bool:
        if self.rows_printed == 0:
            return True
        value = row.get("eval_return")
        if isinstance(value, float) and math.isfinite(value):
            return True
        if self.log_interval > 0:
            return int(row.get("iteration", 0)) % self.log_interval == 0
        return self.clock() - self.last_print >= self.seconds

    def add(self, row: dict[str, Any]) -> None:
        """Offer one iteration's row; it is printed when due (see the class docstring)."""
        if self._due(row):
            self._print(row)
        else:
            self.pending = row

    def finish(self) -> None:
        """Print the last offered row if it was held back."""
        if self.pending is not None:
            self._print(self.pending)

    def _print(self, row: dict[str, Any]) -> None:
        wanted = self._choose_columns(row)
        grown = self.columns is not None and any(column not in self.columns for column in wanted)
        if self.columns is None:
            self.columns = wanted
        elif grown:  # losses that start later (an off-policy warm-up): add their columns, say so with a header
            middle = self.columns[len(self.LEADING):-len(self.TRAILING)]
            middle += [column for column in wanted[len(self.LEADING):-len(self.TRAILING)] if column not in middle]
            self.columns = self.LEADING + middle + self.TRAILING
        lines = []
        if self.rows_printed % self.header_every == 0 or grown:
            lines.append(self.header())
        lines.append(self.format_row(row))
        print("\n".join(lines), file=self.stream, flush=True)
        self.rows_printed += 1
        self.last_print = self.clock()
        self.pending = None


def git_commit(path: Path | None = None) -> tuple[str | None, bool | None]:
    """``(commit hash, dirty)`` of the git checkout holding ``path`` (default: this package); dirty means
    tracked files differ from the commit. ``(None, None)`` outside a checkout or without git."""
    import subprocess

    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=False)
        if head.returncode != 0 or not head.stdout.strip():
            return None, None
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None, None
    return head.stdout.strip(), (bool(status.stdout.strip()) if status.returncode == 0 else None)


def run_metadata() -> dict[str, Any]:
    """What reproduces a run: drl and torch versions, the git commit of the code, the command line."""
    import torch

    import drl

    commit, dirty = git_commit()
    return {"drl_version": drl.__version__, "torch_version": torch.__version__, "git_commit": commit,
            "git_dirty": dirty, "command": list(sys.argv)}


def _hparam_value(value: Any) -> int | float | str | bool:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)  # TensorBoard stores numbers as doubles: an int past 2**53 is not one exactly
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # lists, dicts, None: TensorBoard's hparams take scalars and strings only


def write_hparams(run_dir: Path, config: dict[str, Any], summary: dict[str, Any]) -> None:
    """TensorBoard hparams (the flat config) with the run's final metrics, in ``run_dir/tensorboard``.

    Metrics are the summary's finite numbers among ``final_eval_return``, ``best_eval_return``,
    ``sps`` and ``train_sps``, logged under ``hparam/<name>``.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    hparams = {k: _hparam_value(v) for k, v in flat_config(config).items()}
    metrics = {f"hparam/{k}": float(summary[k]) for k in ("final_eval_return", "best_eval_return", "sps", "train_sps")
               if isinstance(summary.get(k), (int, float)) and math.isfinite(summary[k])}
    step = int(summary.get("steps", 0))
    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))  # one events file, beside the run's scalars
    try:
        for part in hparams_summary(hparams, metrics):
            writer.file_writer.add_summary(part, step)
        for key, value in metrics.items():
            writer.add_scalar(key, value, step)
    finally:
        writer.close()
