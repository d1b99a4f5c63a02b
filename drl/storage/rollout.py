"""``RolloutBuffer``: named ``[T, N, *shape]`` tensors on the env's device.

The agent declares its fields; the buffer knows nothing about any algorithm. Extra axes come
from the field shapes, so the storage serves every agent without a rewrite:

* obs groups: ``"obs/policy"``, ``"obs/critic"`` (see :func:`flatten_obs`);
* an agent axis: ``Field((num_agents, act_dim))``, or one field per agent when their spaces
  differ (``"actions/agent_0"``, ``"actions/agent_1"``);
* a task index per env: ``Field((), torch.int64)`` named ``"task_id"``;
* two players on one env: ``"actions/protagonist"``, ``"actions/adversary"``;
* extra reward streams: ``"rewards_intrinsic"`` next to ``"rewards"``.

In ring mode (:class:`drl.storage.replay.ReplayBuffer`) the same tensors hold a replay memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch

__all__ = ["Field", "RolloutBuffer", "flatten_obs", "unflatten_obs"]


@dataclass(frozen=True)
class Field:
    """One stored quantity: per-env ``shape`` (without the T and N axes) and ``dtype``."""

    shape: tuple[int, ...] = ()
    dtype: torch.dtype = torch.float32


def flatten_obs(prefix: str, obs: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"policy": x, "critic": y}`` -> ``{"obs/policy": x, "obs/critic": y}``; a tensor -> ``{"obs": x}``."""
    if isinstance(obs, Mapping):
        return {f"{prefix}/{group}": value for group, value in obs.items()}
    return {prefix: obs}


def unflatten_obs(prefix: str, data: Mapping[str, torch.Tensor]) -> torch.Tensor | dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_obs` on a dict of stored tensors."""
    if prefix in data:
        return data[prefix]
    start = prefix + "/"
    groups = {key[len(start):]: value for key, value in data.items() if key.startswith(start)}
    if not groups:
        raise KeyError(f"no field '{prefix}' or '{prefix}/<group>' in {sorted(data)}")
    return groups


class RolloutBuffer:
    """Fixed-horizon storage of ``capacity`` steps for ``num_envs`` envs.

    Args:
        capacity: number of steps T held.
        num_envs: number of envs N.
        fields: name -> :class:`Field`; every tensor is allocated once as ``[T, N, *shape]``.
        device: where the tensors live (the env's device: no host round trip on the hot path).
    """

    def __init__(self, capacity: int, num_envs: int, fields: Mapping[str, Field], device: str | torch.device = "cpu"):
        if capacity < 1 or num_envs < 1:
            raise ValueError(f"capacity and num_envs must be >= 1, got {capacity} and {num_envs}")
        self.capacity = capacity
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.fields = dict(fields)
        self.data: dict[str, torch.Tensor] = {
            name: torch.zeros((capacity, num_envs, *f.shape), dtype=f.dtype, device=self.device)
            for name, f in self.fields.items()
        }
        self.step = 0  # next write position
        self.full = False
        # per-step views {name: data[name][t]}, made on first use: copy_ into a view costs less than
        # indexed assignment, and the same views serve every rollout
        self._rows: list[dict[str, torch.Tensor] | None] = [None] * capacity

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.data[name]

    def __contains__(self, name: str) -> bool:
        return name in self.data

    def __len__(self) -> int:
        """Number of valid steps held."""
        return self.capacity if self.full else self.step

    def add(self, transition: Mapping[str, torch.Tensor]) -> None:
        """Write one step ``{name: [N, *shape]}`` at the cursor; every declared field is required."""
        if self.step >= self.capacity:
            raise RuntimeError(f"rollout buffer is full ({self.capacity} steps); call clear() first")
        self._check_fields(transition)
        rows = self._rows[self.step]
        if rows is None:
            rows = self._rows[self.step] = {name: tensor[self.step] for name, tensor in self.data.items()}
        for name, value in transition.items():
            rows[name].copy_(value)
        self.step += 1
        self.full = self.step == self.capacity

    def _check_fields(self, transition: Mapping[str, torch.Tensor]) -> None:
        if transition.keys() != self.data.keys():
            missing = sorted(self.data.keys() - transition.keys())
            unknown = sorted(transition.keys() - self.data.keys())
            raise KeyError(f"transition fields do not match the buffer: missing {missing}, unknown {unknown}")

    def _write(self, index: int | torch.Tensor, transition: Mapping[str, torch.Tensor]) -> None:
        self._check_fields(transition)
        for name, value in transition.items():
            self.data[name][index] = value

    def clear(self) -> None:
        """Start a new rollout (tensors are reused, not reallocated)."""
        self.step = 0
        self.full = False

    def flat(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """Views ``[T * N, *shape]`` of the valid steps, for minibatching."""
        steps = len(self)
        return {
            name: self.data[name][:steps].reshape(steps * self.num_envs, *self.fields[name].shape)
            for name in (names if names is not None else self.data)
        }

    def items(self) -> Iterator[tuple[str, torch.Tensor]]:
        return iter(self.data.items())
