"""Checkpoints: atomic save (temp file + rename), safe load (``weights_only=True``).

A checkpoint is a plain dict of tensors, numbers and strings, tagged with a format marker so a
foreign or corrupt file is told apart from a drl checkpoint with a clear error.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drl.guards import check_payload, writing

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "remove_stale_temp_files", "rng_state",
           "set_rng_state", "FORMAT"]

FORMAT = "drl-checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, corrupt, foreign, or from an incompatible version."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically: a crash never leaves a half-written checkpoint.

    Raises:
        NonFiniteError: a tensor of ``payload`` holds a NaN or inf (nothing is written: the
            checkpoint already at ``path`` stays).
        RunWriteError: the folder is not writable or the disk is full (``path`` is untouched).
    """
    path = Path(path)
    check_payload(payload, path)
    data = {"format": FORMAT, "version": VERSION, **payload}
    with writing(path, name_cause=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``*.tmp`` files a kill during an atomic write (e.g. :func:`save_checkpoint`) left in ``folder``.

    Only call this when no other process writes there (a run folder is owned by one run).
    Returns the files removed.
    """
    removed = []
    for tmp in sorted(Path(folder).glob("*.tmp")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a drl checkpoint; raises :class:`CheckpointError` with the reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for bad files: pickle, zip, unpickler errors
        raise CheckpointError(
            f"'{path}' is not a loadable drl checkpoint (corrupt, truncated, or not a torch file): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is a torch file but not a drl checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {data.get('version')}, this drl reads {VERSION}")
    return data


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    # generator states are CPU byte tensors (a checkpoint loaded with map_location=cuda moved them)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
