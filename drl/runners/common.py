"""What every runner shares around its loop: run folders, resume checkpoints, stop signals.

Run folders are claimed exclusively: a fresh run never writes into a folder that holds another
run's files, two runs started in the same second with default names get two folders, and
``config.yaml`` is hard-linked into place (which fails if it exists), so two processes racing for
one folder cannot both own it.

Stop signals (SIGINT, SIGTERM) follow one rule. Outside an :meth:`StopSignals.interruptible`
section the first signal only sets a flag that the loop checks at its safe points (after each env
step of a rollout), so the state of the last completed iteration can be checkpointed. Inside one (an agent's
``update()``, an evaluation) the handler raises :class:`TrainingInterrupted` at once: the runner
discards the half-done iteration and saves the state it held when that iteration began (the last
completed one), never a half-updated agent. A second signal raises :class:`TrainingInterrupted` anywhere except inside a
:meth:`StopSignals.shielded` section (a checkpoint write).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml

from drl.checkpoint import CheckpointError, load_run_checkpoint, remove_stale_temp_files

__all__ = [
    "TrainingInterrupted", "StopSignals", "children_ignore_sigint", "signal_name", "resume_command",
    "default_run_dir", "check_run_dir_free", "claim_unique_dir", "create_run_dir", "RUN_FILES",
    "find_resume_checkpoint", "note",
]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# what a run writes into its folder: --overwrite removes exactly these
RUN_FILES = ("config.yaml", "metrics.csv", "summary.json", "curve.png", "tensorboard", "checkpoints", ".drl.lock")
LOCK_FILE = ".drl.lock"


class RunLock:
    """An advisory lock (``flock``) on a run folder, held by the process that trains in it.

    The operating system drops it when that process ends, however it ends (``kill -9`` included),
    so a stale lock never blocks a resume. Where ``fcntl`` is missing (Windows) it does nothing.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self._file: Any = None

    def acquire(self) -> RunLock:
        """Take the lock; raises ``FileExistsError`` (one line, with the owner's pid) if another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        f = (self.run_dir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            owner = f.read().strip()
            f.close()
            raise FileExistsError(
                f"run folder '{self.run_dir}' is in use by another drl process{f' (pid {owner})' if owner else ''}; "
                "wait for it to finish or stop it first") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def check_not_in_use(run_dir: str | Path) -> None:
    """Raise ``FileExistsError`` if a live process holds ``run_dir``'s :class:`RunLock`."""
    if (Path(run_dir) / LOCK_FILE).is_file():
        RunLock(run_dir).acquire().release()


def signal_name(signum: int) -> str:
    """``2 -> 'SIGINT'``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def resume_command(run_dir: str | Path) -> str:
    """The exact command that continues the run in ``run_dir``."""
    return f"drl train --resume {run_dir}"


class TrainingInterrupted(KeyboardInterrupt):
    """A stop signal interrupted work that cannot be finished consistently (an update, an evaluation).

    A ``KeyboardInterrupt`` (the user asked to stop), so ``except Exception`` in agent or env code
    does not swallow it and callers that handle Ctrl-C handle it too. ``exit_code`` is the shell
    convention ``128 + signum`` (130, 143).
    """

    def __init__(self, signum: int):
        super().__init__(f"interrupted by {signal_name(signum)}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """SIGINT/SIGTERM handling for a training loop (see the module docstring for the rule).

    Use ``with stop.installed():`` around the loop; ``stop.signum`` is the first signal received
    (None until then). Handlers are only installed from the main thread; elsewhere the object is
    inert (``signum`` stays None unless :meth:`request` is called).
    """

    def __init__(self, collective: bool = False) -> None:
        self.signum: int | None = None
        # several ranks (drl.distributed): a signal never aborts a block mid-way (the ranks would leave it at
        # different collectives and hang); every rank stops where they agree on it (the runner's any_rank)
        self.collective = collective
        self.count = 0
        self._interruptible = 0
        self._shielded = 0

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def request(self, signum: int) -> None:
        """What the handler does; callable directly (tests, a watchdog)."""
        self.count += 1
        if self.signum is None:
            self.signum = signum
        if self._shielded:
            return
        if self._interruptible or self.count >= 2:
            raise TrainingInterrupted(self.signum)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.request(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        """Install the handlers for the block; the previous handlers come back after it."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                try:
                    previous[sig] = signal.signal(sig, self._handle)
                except (ValueError, OSError):  # embedded interpreters may refuse
                    pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)  # None: set outside Python

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block a stop signal aborts at once with :class:`TrainingInterrupted` (also if one came before);
        with ``collective``, a plain block (the stop is taken where the ranks agree on it)."""
        if self.collective:
            yield
            return
        if self.signum is not None:
            raise TrainingInterrupted(self.signum)
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """A block no signal aborts (checkpoint writes); a stop requested meanwhile is seen afterwards."""
        self._shielded += 1
        try:
            yield
        finally:
            self._shielded -= 1


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Worker processes started in this block (async envs) ignore SIGINT.

    A terminal's Ctrl-C goes to the whole process group; the workers must leave it to the main
    process, which stops the run at a safe point and closes them, instead of each dying with a
    ``KeyboardInterrupt`` traceback and taking the env down mid-step. (``SIG_IGN`` is the one
    disposition a child keeps across fork and exec.) A Ctrl-C inside the block itself is ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


# --- run folders ----------------------------------------------------------------------------
def default_run_dir(agent: str, env_id: str, seed: int, root: str | Path = "runs") -> Path:
    """``runs/<agent>-<env>-s<seed>-<YYYYmmdd-HHMMSS>`` (made unique by :func:`create_run_dir`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{agent}-{env_id.replace('/', '-').replace(':', '-')}-s{seed}-{stamp}"


def _holds_files(folder: Path, keep: tuple[str, ...] = ()) -> bool:
    """Any file below ``folder`` (empty subfolders, e.g. from an interrupted start, do not count),
    outside its top-level entries named in ``keep``."""
    return any(not p.is_dir() and p.relative_to(folder).parts[0] not in keep for p in folder.rglob("*"))


def _looks_like_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in RUN_FILES)


def check_run_dir_free(run_dir: str | Path, overwrite: bool = False, keep: tuple[str, ...] = ()) -> None:
    """Raise ``FileExistsError`` (one line) if a fresh run may not use ``run_dir``.

    Cheap and early (before envs are built); :func:`create_run_dir` makes the race-free claim.
    ``keep``: top-level sub-folders that belong to this run (an agent's ``run_subfolders``, e.g. the
    teacher run AACD trains first) and do not make the folder taken.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"run folder '{run_dir}' exists and is not a folder; choose another --run-dir")
    if not run_dir.is_dir() or not _holds_files(run_dir, keep):
        return
    if not overwrite:
        raise FileExistsError(
            f"run folder '{run_dir}' already holds files; continue that run with --resume {run_dir}, "
            "replace it with --overwrite, or choose another --run-dir"
        )
    check_not_in_use(run_dir)  # --overwrite never deletes the files of a run that is still training
    if not _looks_like_run(run_dir):
        raise FileExistsError(
            f"'{run_dir}' is not empty and not a drl run folder (none of {list(RUN_FILES)}); "
            "--overwrite only replaces drl run folders: choose another --run-dir"
        )


def claim_unique_dir(run_dir: str | Path) -> Path:
    """Create ``run_dir``, or ``<name>-2``, ``<name>-3``, ... on a collision (each try an atomic ``mkdir``)."""
    run_dir = Path(run_dir)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    base, n = run_dir, 1
    while True:
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")


def create_run_dir(run_dir: str | Path, config: dict[str, Any], *, unique: bool = False,
                   overwrite: bool = False, keep: tuple[str, ...] = ()) -> Path:
    """Claim a run folder for a fresh run and write its ``config.yaml``; returns the folder.

    Args:
        run_dir: the folder (its parents are created).
        config: the resolved config, written as YAML to ``config.yaml`` (atomically and exclusively).
        unique: the name is a default: on a collision take ``<name>-2``, ``<name>-3``, ... (each
            try an atomic ``mkdir``), so concurrent runs never share a folder.
        overwrite: an existing drl run folder is replaced (its run files removed first).
        keep: top-level sub-folders already written for this run (see :func:`check_run_dir_free`).

    Raises:
        FileExistsError: the folder holds files (and ``overwrite`` is off or it is not a drl run
            folder), or another process claimed it first.
    """
    run_dir = Path(run_dir)
    if unique:
        run_dir = claim_unique_dir(run_dir)
    else:
        check_run_dir_free(run_dir, overwrite, keep)
        if overwrite and run_dir.is_dir():
            for name in RUN_FILES:
                entry = run_dir / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                elif entry.exists() or entry.is_symlink():
                    entry.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    # complete in a temp file, then hard-linked into place: exclusive (link fails if the name exists) and atomic
    tmp = run_dir / f"config.yaml.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        try:
            os.link(tmp, run_dir / "config.yaml")
        except FileExistsError:
            raise
        except OSError:  # no hard links on this filesystem: exclusive create, then write
            with (run_dir / "config.yaml").open("x") as f:
                f.write(tmp.read_text())
    except FileExistsError:
        raise FileExistsError(
            f"run folder '{run_dir}' was claimed by another run meanwhile; choose another --run-dir"
        ) from None
    finally:
        tmp.unlink()
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    return run_dir


# --- resume ---------------------------------------------------------------------------------
def find_resume_checkpoint(run_dir: str | Path, map_location: str | torch.device = "cpu"
                           ) -> tuple[Path, dict[str, Any]] | None:
    """The newest consistent checkpoint of a run: ``(path, loaded checkpoint)``, or None if there is none.

    Stale ``*.tmp`` files (a kill during a checkpoint, log or config write) are removed from the
    run folder and its ``checkpoints/`` first. Candidates are
    ``latest.pt`` and ``best.pt`` (both written at iteration boundaries); the one with the larger
    ``runner.global_step`` wins, ``latest.pt`` on a tie. So a run killed before its first periodic
    checkpoint resumes from ``best.pt`` when an evaluation wrote one.

    Raises:
        CheckpointError: a candidate exists but cannot be loaded.
    """
    checkpoint_dir = Path(run_dir) / "checkpoints"
    remove_stale_temp_files(run_dir)
    if not checkpoint_dir.is_dir():
        return None
    remove_stale_temp_files(checkpoint_dir)
    best: tuple[Path, dict[str, Any]] | None = None
    for name in ("latest.pt", "best.pt"):
        path = checkpoint_dir / name
        if not path.is_file():
            continue
        ckpt = load_run_checkpoint(path, map_location=map_location)
        runner = ckpt.get("runner")
        if not isinstance(runner, dict) or not isinstance(runner.get("global_step"), int):
            raise CheckpointError(f"'{path}' has no runner state (runner.global_step) to resume from")
        if best is None or runner["global_step"] > best[1]["runner"]["global_step"]:
            best = (path, ckpt)
    return best


def note(message: str) -> None:
    """One line for the user on stderr (stdout stays for results)."""
    print(f"drl: {message}", file=sys.stderr, flush=True)
