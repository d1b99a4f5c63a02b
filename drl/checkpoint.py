"""Checkpoints: atomic save (temp file + rename), safe load (``weights_only=True``).

A checkpoint is a plain dict of tensors, numbers and strings, tagged with a format marker so a
foreign or corrupt file is told apart from a drl checkpoint with a clear error.
"""

from __future__ import annotations

import io
import pickle
import random
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drl.guards import atomic_write_bytes, check_payload

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_run_checkpoint",
    "check_state_matches",
    "load_agent_state",
    "remove_stale_temp_files",
    "rng_state",
    "set_rng_state",
    "FORMAT",
    "RUN_CHECKPOINT_KEYS",
]

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
    buffer = io.BytesIO()  # serialised in memory first: torch.save reports a failed file write (a full
    torch.save(data, buffer)  # disk) as a RuntimeError, a plain write raises the OSError that names it
    atomic_write_bytes(path, buffer.getbuffer())
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
    """Load and check a drl checkpoint; raises :class:`CheckpointError` with the reason.

    Loading is restricted to tensors and plain Python data (``weights_only=True``): a file that
    would import anything else while unpickling is refused, and the message names what it asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols before refusing a foreign file
            data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for bad files: pickle, zip, unpickler errors
        raise CheckpointError(_explain_load_error(path, err)) from err
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is a torch file but not a drl checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise CheckpointError(f"'{path}' has checkpoint version {data.get('version')}, this drl reads {VERSION}")
    return data


_BLOCKED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def _explain_load_error(path: Path, err: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed, without torch's advice to load unsafely."""
    text = str(err)
    blocked = _BLOCKED_GLOBAL.search(text)
    if blocked:
        return (f"checkpoint '{path}' was refused: loading it would import '{blocked.group(1)}', and a drl "
                "checkpoint holds only tensors and plain Python data (a file from other code, or tampered with)")
    if isinstance(err, pickle.UnpicklingError) and "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1]
        first = next((line.strip() for line in detail.splitlines() if line.strip()), "")
    else:
        first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if "weights_only" in first or "Weights only" in first:  # never relay the advice to load unsafely
        first = ""
    return (f"checkpoint '{path}' is not a loadable drl checkpoint (corrupt, truncated, or not a torch file): "
            f"{type(err).__name__}{': ' + first if first else ''}")


# What a run's checkpoint (``latest.pt`` / ``best.pt``) holds, and the type of each entry.
RUN_CHECKPOINT_KEYS: dict[str, type | tuple[type, ...]] = {
    "agent": str,
    "env": str,
    "config": dict,
    "agent_state": dict,
    "runner": dict,
    "rng": dict,
    "generator": torch.Tensor,
}
_RNG_KEYS = ("python", "numpy", "torch")


def load_run_checkpoint(path: str | Path, map_location: str | torch.device = "cpu",
                        required: Mapping[str, type | tuple[type, ...]] | None = None) -> dict[str, Any]:
    """:func:`load_checkpoint`, then check that the entries a run needs are there with the right types.

    ``required`` defaults to :data:`RUN_CHECKPOINT_KEYS`. Raises :class:`CheckpointError` naming the
    first missing or mistyped entry.
    """
    data = load_checkpoint(path, map_location)
    for key, kind in (RUN_CHECKPOINT_KEYS if required is None else required).items():
        if key not in data:
            raise CheckpointError(f"checkpoint '{path}' has no '{key}' entry; it is damaged or not a run checkpoint")
        if not isinstance(data[key], kind):
            raise CheckpointError(f"checkpoint '{path}': '{key}' is a {type(data[key]).__name__}, expected "
                                  f"{_kind_name(kind)}; it is damaged or not a run checkpoint")
    if "rng" in data and isinstance(data["rng"], dict):
        missing = [key for key in _RNG_KEYS if key not in data["rng"]]
        if missing:
            raise CheckpointError(f"checkpoint '{path}': 'rng' lacks {missing}; it is damaged")
    return data


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {dict: "mapping", str: "string", torch.Tensor: "tensor"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _shape(tensor: torch.Tensor) -> str:
    return f"[{', '.join(str(s) for s in tensor.shape)}]"


def check_state_matches(expected: Any, found: Any, path: str | Path, where: str = "agent_state") -> None:
    """Check that a saved state has the structure of ``expected`` (what this config builds).

    Mappings must have the same keys (an empty expected mapping accepts any: lazily filled state),
    tensors the same shape, lists and tuples the same length; other values are not compared.
    Raises :class:`CheckpointError` naming the first difference, e.g. ``agent_state.model.
    actor_body.0.weight has shape [64, 4], this config builds [32, 4]``.
    """
    hint = "was it trained with another config?"
    if isinstance(expected, Mapping):
        if not isinstance(found, Mapping):
            raise CheckpointError(f"checkpoint '{path}': {where} is a {type(found).__name__}, this agent keeps a "
                                  f"mapping there; {hint}")
        if not expected:
            return
        missing = [str(k) for k in expected if k not in found]
        unexpected = [str(k) for k in found if k not in expected]
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint '{path}': {where} "
                + "; ".join(part for part in (f"lacks {missing}" if missing else "",
                                               f"has unexpected {unexpected}" if unexpected else "") if part)
                + f"; {hint}"
            )
        for key, value in expected.items():
            check_state_matches(value, found[key], path, f"{where}.{key}")
    elif isinstance(expected, torch.Tensor):
        if not isinstance(found, torch.Tensor):
            raise CheckpointError(f"checkpoint '{path}': {where} is a {type(found).__name__}, this agent keeps a "
                                  f"tensor of shape {_shape(expected)} there; {hint}")
        if found.shape != expected.shape:
            raise CheckpointError(f"checkpoint '{path}': {where} has shape {_shape(found)}, this config builds "
                                  f"{_shape(expected)}; {hint}")
    elif isinstance(expected, (list, tuple)):
        if not isinstance(found, (list, tuple)) or len(found) != len(expected):
            raise CheckpointError(f"checkpoint '{path}': {where} should be a sequence of {len(expected)} items, "
                                  f"got {found!r:.80}; {hint}")
        for i, (e, f) in enumerate(zip(expected, found, strict=True)):
            check_state_matches(e, f, path, f"{where}[{i}]")


def load_agent_state(agent: Any, state: Any, path: str | Path) -> None:
    """Check ``state`` against ``agent.state_dict()`` (:func:`check_state_matches`), then load it.

    Raises :class:`CheckpointError` for a structure or shape mismatch, or when the agent's own
    ``load_state_dict`` refuses the values.
    """
    check_state_matches(agent.state_dict(), state, path)
    try:
        agent.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise CheckpointError(f"checkpoint '{path}': the agent state does not load into this agent: {first}") from err


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
    np.random.set_state(("MT19937", np_state["keys"].cpu().numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    # generator states are CPU byte tensors (a checkpoint loaded with map_location=cuda moved them)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
