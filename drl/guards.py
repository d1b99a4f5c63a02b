"""Guards that stop a run loudly instead of letting it go wrong quietly.

Three kinds of failure, each one exception with one line of message and its own CLI exit code:

* :class:`NonFiniteError` (exit 3): a NaN or infinite reward, observation, stored rollout value,
  loss, gradient norm or parameter. The runner checks the rollout's ``[T, N]`` tensors once per
  rollout (one fused device sync) and the agent's metrics and state once per update, so the
  per-step path pays nothing. :func:`drl.checkpoint.save_checkpoint` refuses non-finite agent
  state, so the last good checkpoint is never overwritten by a diverged one.
* :class:`EnvStepError` (exit 4, defined in :mod:`envs.core` so the env adapters can raise it): an
  env's ``step()``/``reset()`` raised; the message names the env id, the env index when one env is
  known to be the cause, the rollout step, the global step and the seed.
* :class:`RunWriteError` (exit 5): the run folder cannot be written (read-only, full disk, a path
  under a file). Writers go through :func:`writing` / :func:`atomic_write_text`, which turn the
  ``OSError`` into one line naming the path and what to do.

Exit code 2 stays what it was: bad input (config, arguments, a foreign checkpoint).

Where a non-finite value is found, and what is named. The rollout check reads the env's rewards
and every floating storage field, and names the earliest step, then the lowest env index there,
preferring the env's own reward over values derived from it (a reward scaler spreads one NaN
return to every env). With observation normalisation on, a NaN observation corrupts the running
statistics at the next step, so every env's normalised obs is NaN from then on; it is still named
at its source because the stored final obs of the step that returned it is normalised without
updating the statistics. An infinite obs is clipped by the normaliser until the statistics turn
NaN, so with normalisation on it is named one step late (and possibly at env 0). An exception
raised while acting (e.g. ``torch.multinomial`` on NaN probabilities) triggers the same search
over the steps so far and the latest obs before it is reported as itself.

Runners share these helpers: :func:`check_rollout` on whatever ``[T, N, ...]`` tensors they
collect, :func:`check_update` on an agent's metrics and ``state_dict()`` after each update.
Agents only follow a naming convention: a metric named ``loss``, ``*_loss`` or ``*grad_norm``
must be finite (see :func:`must_be_finite`); other metrics may be NaN to mean "undefined this
iteration" (e.g. explained variance of constant returns).
"""

from __future__ import annotations

import errno
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from envs.core import EnvStepError

__all__ = [
    "EXIT_NON_FINITE",
    "EXIT_ENV_ERROR",
    "EXIT_WRITE_ERROR",
    "NonFiniteError",
    "EnvStepError",
    "RunWriteError",
    "all_finite",
    "first_non_finite",
    "value_name",
    "find_rollout_non_finite",
    "check_rollout",
    "non_finite_entries",
    "must_be_finite",
    "check_update",
    "check_payload",
    "writing",
    "atomic_write_text",
]

EXIT_NON_FINITE = 3
EXIT_ENV_ERROR = 4
EXIT_WRITE_ERROR = 5


def value_name(value: float) -> str:
    """``"nan"``, ``"inf"`` or ``"-inf"`` for a non-finite float."""
    if math.isnan(value):
        return "nan"
    return "inf" if value > 0 else "-inf"


class NonFiniteError(RuntimeError):
    """A NaN or infinite value where training needs a finite one.

    Attributes:
        quantity: what was non-finite: ``"reward"``, ``"obs"``, a storage field
            (``"final_obs/policy"``), a loss metric (``"loss policy_loss"``), ``"grad_norm"``,
            ``"parameter model.head.log_std"``, ...
        value: ``"nan"``, ``"inf"`` or ``"-inf"`` (the first offending element).
        env_index: the env that produced it, when one is known (rollout values).
        t: the row of the rollout (``0 <= t < num_steps``): for env outputs (reward, final obs)
            the step that returned them, for stored inputs (obs, actions) the step that used them.
        global_step: the run's env-step count at that step, counted like ``metrics.csv``
            (``num_envs`` per vector step, this step included).
        iteration: the iteration (1-based) the value belongs to.
        detail: the rest of the line (other offenders, what was and was not written).
    """

    def __init__(self, quantity: str, value: str = "nan", env_index: int | None = None, t: int | None = None,
                 global_step: int | None = None, iteration: int | None = None, detail: str = ""):
        self.quantity = quantity
        self.value = value
        self.env_index = env_index
        self.t = t
        self.global_step = global_step
        self.iteration = iteration
        self.detail = detail
        super().__init__(quantity)

    def __str__(self) -> str:
        text = f"non-finite {self.quantity} ({self.value})"
        if self.env_index is not None:
            text += f" from env {self.env_index}"
        where = []
        if self.t is not None:
            where.append(f"rollout step t={self.t}")
        if self.iteration is not None:
            where.append(f"iteration {self.iteration}")
        if self.global_step is not None:
            where.append(f"global_step {self.global_step}")
        if where:
            text += " at " + ", ".join(where)
        return text + (f"; {self.detail}" if self.detail else "")


class RunWriteError(OSError):
    """A file of the run could not be written; ``errno``/``strerror``/``filename`` are the cause's."""

    def __init__(self, path: str | bytes | Path, cause: OSError):
        strerror = cause.strerror or str(cause) or type(cause).__name__
        self.path = Path(os.fsdecode(path))  # some writers (TensorBoard's) name their file in bytes
        super().__init__(cause.errno, strerror, str(self.path))

    def __str__(self) -> str:
        if self.errno == errno.ENOSPC:
            advice = "free space on that disk or choose another --run-dir"
        else:
            advice = "choose a writable --run-dir"
        return f"cannot write {self.path}: {self.strerror}; {advice} (the files written before are kept)"


# --- finiteness checks ----------------------------------------------------------------------------
def _floating(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [t for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point element of ``tensors`` is finite: one host sync per device.

    Non-floating tensors (bool, int: always finite) and empty ones are skipped. Small tensors
    (a network's parameters) are concatenated and checked in one kernel; large ones one each.
    """
    small: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for t in _floating(tensors):
        if t.numel() <= _SMALL:
            small.setdefault((t.device, t.dtype), []).append(t.reshape(-1))
        else:
            flags.setdefault(t.device, []).append(torch.isfinite(t).all())
    for (device, _), group in small.items():
        flags.setdefault(device, []).append(torch.isfinite(torch.cat(group)).all())
    return all(bool(torch.stack(device_flags).all()) for device_flags in flags.values())


_SMALL = 1 << 16  # elements up to which a tensor joins the concatenated check


def first_non_finite(x: torch.Tensor) -> tuple[tuple[int, ...], float] | None:
    """``(index, value)`` of the first non-finite element of ``x`` in row-major order, or None.

    For a rollout tensor ``[T, N, ...]`` the index starts ``(t, n, ...)``: the earliest step, then
    the lowest env index at that step.
    """
    if not x.is_floating_point() or x.numel() == 0:
        return None
    bad = ~torch.isfinite(x.reshape(-1))
    hits = torch.nonzero(bad)
    if hits.numel() == 0:
        return None
    flat = int(hits[0, 0])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), x.shape))
    return index, float(x.reshape(-1)[flat])


def find_rollout_non_finite(tensors: Mapping[str, torch.Tensor], rows: int | None = None
                            ) -> tuple[str, int, int, float] | None:
    """The earliest non-finite element over named ``[T, N, ...]`` tensors: ``(name, t, n, value)``.

    Args:
        tensors: name -> ``[T, N, ...]``; on a tie in ``t`` the name listed first wins (list the
            env's raw outputs before values derived from them, so the source is named).
        rows: only the first ``rows`` steps are valid (a rollout cut short); None: all.

    Returns None when everything is finite, after one fused check.
    """
    valid = {name: (x if rows is None else x[:rows]) for name, x in tensors.items()}
    if all_finite(valid.values()):
        return None
    best: tuple[str, int, int, float] | None = None
    for name, x in valid.items():
        if x.dim() < 2:
            continue
        hit = first_non_finite(x)
        if hit is not None and (best is None or hit[0][0] < best[1]):
            best = (name, hit[0][0], hit[0][1], hit[1])
    return best


def check_rollout(tensors: Mapping[str, torch.Tensor], start_step: int, num_envs: int, iteration: int,
                  rows: int | None = None, detail: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the first non-finite value of a rollout.

    Args:
        tensors: name -> ``[T, N, ...]`` (see :func:`find_rollout_non_finite` for the order).
        start_step: the run's global step before the rollout's first step.
        num_envs: N.
        iteration: the iteration (1-based) the rollout belongs to.
        rows: only the first ``rows`` steps are valid.
        detail: appended to the message.

    Raises:
        NonFiniteError: with ``quantity`` the tensor's name, ``env_index`` n, ``t``, and
            ``global_step = start_step + (t + 1) * num_envs``.
    """
    hit = find_rollout_non_finite(tensors, rows)
    if hit is None:
        return
    name, t, n, value = hit
    raise NonFiniteError(name, value_name(value), env_index=n, t=t, global_step=start_step + (t + 1) * num_envs,
                         iteration=iteration, detail=detail)


def _walk(tree: Any, prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from _walk(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _walk(value, f"{prefix}.{i}" if prefix else str(i))


def non_finite_entries(tree: Any, prefix: str = "") -> list[tuple[str, float]]:
    """``[(dotted name, first bad value)]`` of the floating tensors in a nested dict/list with a NaN or inf.

    One fused check when everything is finite (the usual case); Python numbers are not checked.
    """
    named = [(name, t) for name, t in _walk(tree, prefix) if t.is_floating_point() and t.numel()]
    if all_finite(t for _, t in named):
        return []
    found = []
    for name, t in named:
        hit = first_non_finite(t)
        if hit is not None:
            found.append((name, hit[1]))
    return found


def must_be_finite(metric: str) -> bool:
    """Whether an update metric must be finite: ``loss``, ``*_loss`` and ``*grad_norm`` must."""
    return metric == "loss" or metric.endswith("_loss") or metric.endswith("grad_norm")


def _listing(items: list[tuple[str, float]], limit: int = 3) -> str:
    shown = ", ".join(f"{name}={value_name(value)}" for name, value in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


def check_update(metrics: Mapping[str, Any], agent_state: Any, global_step: int, iteration: int,
                 detail: str = "") -> None:
    """After an update: the loss/grad-norm metrics (see :func:`must_be_finite`) and every floating
    tensor of the agent's ``state_dict()`` (parameters, optimiser moments, normaliser statistics)
    must be finite.

    Raises:
        NonFiniteError: naming the first non-finite loss metric (``loss <name>``), else the grad
            norm, else the first non-finite state entry (``parameter <name>``), and listing the
            others in ``detail``.
    """
    bad_metrics = [(k, float(v)) for k, v in metrics.items()
                   if must_be_finite(k) and isinstance(v, (int, float)) and not math.isfinite(v)]
    bad_state = non_finite_entries(agent_state)
    if not bad_metrics and not bad_state:
        return
    losses = [(k, v) for k, v in bad_metrics if not k.endswith("grad_norm")]
    grads = [(k, v) for k, v in bad_metrics if k.endswith("grad_norm")]
    if losses:
        quantity, value = f"loss {losses[0][0]}", losses[0][1]
    elif grads:
        quantity, value = grads[0][0], grads[0][1]
    else:
        quantity, value = f"parameter {bad_state[0][0]}", bad_state[0][1]
    parts = []
    if bad_metrics:
        parts.append("metrics " + _listing(bad_metrics))
    if bad_state:
        parts.append(f"{len(bad_state)} non-finite agent state tensors: " + _listing(bad_state))
    parts.append("the update diverged (lower the learning rate, check rewards and observations)")
    if detail:
        parts.append(detail)
    raise NonFiniteError(quantity, value_name(value), global_step=global_step, iteration=iteration,
                         detail="; ".join(parts))


def check_payload(payload: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to write a checkpoint whose tensors hold a NaN or inf.

    Raises:
        NonFiniteError: naming the first non-finite entry (``checkpoint entry agent_state.model...``).
    """
    bad = non_finite_entries(payload)
    if bad:
        raise NonFiniteError(f"checkpoint entry {bad[0][0]}", value_name(bad[0][1]),
                             detail=f"refusing to write {path}; the file already there is kept"
                                    + (f"; also {_listing(bad[1:])}" if len(bad) > 1 else ""))


# --- writes ---------------------------------------------------------------------------------------
@contextmanager
def writing(path: str | Path, name_cause: bool = True) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into :class:`RunWriteError` naming the file.

    Args:
        path: the file or folder being written.
        name_cause: name the file the cause names when it names one (e.g. the missing parent
            folder); False: always name ``path`` (an atomic write's temp file is not worth naming).

    ``FileExistsError`` passes through unchanged: it means "already there", not "cannot write".
    """
    try:
        yield
    except (RunWriteError, FileExistsError):
        raise
    except OSError as err:
        raise RunWriteError((err.filename if name_cause else None) or path, err) from err


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` through a temp file (``<name>.<random>.tmp``), fsync and a rename:
    the old file survives any failure, and no temp file is left but after a kill.

    Raises:
        RunWriteError: the folder is not writable or the disk is full.
    """
    path = Path(path)
    with writing(path, name_cause=False):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` in UTF-8."""
    return atomic_write_bytes(path, text.encode())
