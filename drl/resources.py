"""Memory checks before a run allocates: refuse what cannot fit, with the bytes needed and available.

A config that passes validation can still ask for more memory than the machine has (a million envs,
a rollout of 10**9 steps): allocating it would end in an out-of-memory abort, a swap storm or a
C++ frame dump. Every runner calls these checks before it builds what they measure:

* :func:`check_env_fits` before building the envs: counts the copies a gymnasium adapter would
  create (one Python env object, or one subprocess, per copy) and, for torch-batched envs, measures
  the per-copy memory on a seven-copy probe and scales it to ``num_envs``;
* :func:`check_storage_fits` before allocating the rollout/replay storage: ``capacity x num_envs x``
  the bytes of one step of the agent's storage fields.

Available memory is ``MemAvailable`` of ``/proc/meminfo`` for the CPU (Linux) and
``torch.cuda.mem_get_info`` for a CUDA device; where it cannot be read, nothing is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from drl.config import ConfigError

__all__ = [
    "ResourceError",
    "available_bytes",
    "format_bytes",
    "step_bytes",
    "storage_bytes",
    "check_fits",
    "check_storage_fits",
    "check_env_fits",
    "per_env_bytes",
    "ENV_WORKING_FACTOR",
    "MAX_SYNC_ADAPTER_ENVS",
    "MAX_ASYNC_ADAPTER_ENVS",
]

# Copies of a gymnasium (CPU) env: one Python object each, stepped in one loop ("sync"), or one
# subprocess each ("async"). Past these counts a run spends minutes building envs or exhausts the
# process table; the torch-batched drl/ envs are the way to that many copies.
MAX_SYNC_ADAPTER_ENVS = 65_536
MAX_ASYNC_ADAPTER_ENVS = 1_024
_PROBE_ENVS = 7  # copies of the probe env measuring per-copy memory (an odd count: few constants have 7 rows)
# Stepping a batched env allocates its next state, observation, reward and flags beside the state it
# holds: measured peak resident memory per copy while stepping 10**7 copies on the CPU is ~7x the
# persistent tensors (CartPole 177 vs 25 bytes, Pendulum 118 vs 21).
ENV_WORKING_FACTOR = 8


class ResourceError(ConfigError):
    """The run would need more memory (or processes) than this machine offers; the message gives both."""


def format_bytes(num: int) -> str:
    """``1536`` -> ``'1.5 KiB'``; powers of 1024 up to EiB; past 10**21 bytes, a power of ten."""
    num = int(num)
    if num >= 10**21:
        return f"~10**{len(str(num)) - 1} B"
    if num < 1024:
        return f"{num} B"
    for power, unit in enumerate(("KiB", "MiB", "GiB", "TiB", "PiB", "EiB"), start=1):
        if num < 1024 ** (power + 1) or unit == "EiB":
            return f"{num / 1024**power:.3g} {unit}"
    raise AssertionError("unreachable")


def _count(num: int) -> str:
    """``1234567`` -> ``'1,234,567'``; past 10**21, a power of ten (a huge config value stays one short line)."""
    return f"{num:,}" if num < 10**21 else f"~10**{len(str(num)) - 1}"


def available_bytes(device: str | torch.device) -> int | None:
    """Memory a new allocation on ``device`` can take now, or ``None`` when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
        except (RuntimeError, AssertionError, ValueError):
            return None
        return int(free)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024  # the file counts kB (KiB)
        except (OSError, ValueError, IndexError):
            return None
    return None


def step_bytes(fields: Mapping[str, Any]) -> int:
    """Bytes of one step of one env for storage fields ``{name: Field(shape, dtype)}``."""
    total = 0
    for field in fields.values():
        count = 1
        for size in field.shape:
            count *= int(size)
        total += count * _itemsize(field.dtype)
    return total


def storage_bytes(capacity: int, num_envs: int, fields: Mapping[str, Any]) -> int:
    """Bytes of a ``[capacity, num_envs, *shape]`` storage holding ``fields``."""
    return int(capacity) * int(num_envs) * step_bytes(fields)


def check_fits(needed: int, device: str | torch.device, what: str, advice: str) -> None:
    """Raise :class:`ResourceError` when ``needed`` bytes exceed what ``device`` has available.

    Args:
        needed: bytes the allocation takes.
        device: where it is allocated.
        what: what is allocated, with the numbers it is made of (goes into the message).
        advice: which config keys to lower (goes into the message).
    """
    available = available_bytes(device)
    if available is None or needed <= available:
        return
    raise ResourceError(
        f"{what} needs {format_bytes(needed)} ({_count(needed)} bytes) on {device}, but only "
        f"{format_bytes(available)} ({available:,} bytes) is available; {advice}"
    )


def check_storage_fits(capacity: int, num_envs: int, fields: Mapping[str, Any], device: str | torch.device,
                       capacity_key: str = "algo.num_steps", num_envs_key: str = "env.num_envs",
                       extra_bytes_per_step: int = 0) -> int:
    """Check that a ``[capacity, num_envs, ...]`` storage of ``fields`` fits on ``device``; return its bytes.

    ``extra_bytes_per_step`` adds what the runner keeps per (step, env) beside the storage (e.g. the
    env reward and done flag of the episode statistics). Raises :class:`ResourceError`.
    """
    per_step = step_bytes(fields) + int(extra_bytes_per_step)
    needed = int(capacity) * int(num_envs) * per_step
    check_fits(needed, device,
               f"the rollout storage ({capacity_key} x {num_envs_key} = {_count(capacity)} x {_count(num_envs)} steps "
               f"of {per_step:,} bytes)",
               f"lower config key '{capacity_key}' or '{num_envs_key}'")
    return needed


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _arrays(obj: Any, depth: int = 2) -> Iterable[Any]:
    """Tensors and array-likes (warp arrays) among ``obj``'s attributes, dict values and list items."""
    seen: set[int] = set()
    stack = [(obj, depth)]
    while stack:
        item, level = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, torch.Tensor) or (hasattr(item, "capacity") and hasattr(item, "ptr")
                                              and hasattr(item, "shape")):
            yield item
            continue
        if level <= 0:
            continue
        if isinstance(item, Mapping):
            children = list(item.values())
        elif isinstance(item, (list, tuple)):
            children = list(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            children = list(vars(item).values())
        else:
            continue
        stack.extend((child, level - 1) for child in children)


def per_env_bytes(env: Any, depth: int = 2) -> int:
    """Bytes per env copy of a batched env: its tensors (and warp arrays) with a leading ``num_envs`` axis.

    Arrays shared by every copy (models, constants) are not counted; storage shared by several
    views is counted once.
    """
    num_envs = int(env.num_envs)
    tasks = getattr(env, "task_envs", None)  # a multi-task env (envs.multi_task): its task envs' copies add up
    seen: set[int] = set()
    total = sum(per_env_bytes(task, depth) * int(task.num_envs) for task in tasks) if tasks else 0
    for array in _arrays(env, depth):
        shape = tuple(array.shape)
        if not shape or shape[0] != num_envs:
            continue
        if isinstance(array, torch.Tensor):
            key, nbytes = array.untyped_storage().data_ptr(), array.untyped_storage().nbytes()
        else:
            key, nbytes = int(array.ptr or 0), int(array.capacity)
        if key in seen:
            continue
        seen.add(key)
        total += nbytes
    return total // num_envs


def check_env_fits(env_id: str, counts: Mapping[str, int], device: str | torch.device, vectorization: str = "sync",
                   env_kwargs: dict[str, Any] | None = None) -> None:
    """Refuse env counts this machine cannot hold, before the envs are built.

    Args:
        env_id: the env every count builds.
        counts: config key -> number of copies, e.g. ``{"env.num_envs": 8, "env.num_eval_envs": 4}``
            (separate vector envs, all on ``device``).
        device: where the envs live.
        vectorization: ``"sync"`` or ``"async"`` (gymnasium ids only).
        env_kwargs: the env's keyword arguments (the probe is built with them).

    Gymnasium ids (the CPU adapter) are bounded by :data:`MAX_SYNC_ADAPTER_ENVS` /
    :data:`MAX_ASYNC_ADAPTER_ENVS` copies per vector env. Torch-batched ``drl/`` envs are measured
    on a seven-copy probe (:func:`per_env_bytes`) and their total checked against ``device``'s memory.
    Raises :class:`ResourceError`.
    """
    from envs import ENVS, make_vec_env

    if env_id.startswith("isaaclab:"):  # Isaac Lab's own torch-batched simulation: it checks its memory itself
        return
    if env_id not in ENVS:
        limit = MAX_ASYNC_ADAPTER_ENVS if vectorization == "async" else MAX_SYNC_ADAPTER_ENVS
        what = "one subprocess" if vectorization == "async" else "one Python env object"
        for key, num_envs in counts.items():
            if num_envs > limit:
                raise ResourceError(
                    f"config key '{key}': {num_envs:,} copies of the gymnasium env '{env_id}' "
                    f"({vectorization}: {what} per copy) is more than the {limit:,} this adapter builds; "
                    "use fewer copies or a torch-batched drl/ env"
                )
        return
    total = sum(counts.values())
    probe_envs = _PROBE_ENVS * ENVS[env_id].num_tasks  # a multi-task env's copies come in multiples of its tasks
    if max(counts.values(), default=0) <= probe_envs:
        return
    probe = make_vec_env(env_id, probe_envs, device, vectorization, env_kwargs)
    try:
        per_copy = per_env_bytes(probe)
    finally:
        probe.close()
    keys = " + ".join(counts)
    check_fits(per_copy * ENV_WORKING_FACTOR * total, device,
               f"{keys} = {total:,} copies of '{env_id}' ({per_copy:,} bytes of state each, x{ENV_WORKING_FACTOR} "
               "while stepping)",
               f"lower config key {' or '.join(repr(k) for k in counts)}")
