"""Ring-mode storage (replay) and a sampler that mixes demonstrations with online data."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from drl.storage.rollout import Field, RolloutBuffer

__all__ = ["ReplayBuffer", "MixedSampler"]


class ReplayBuffer(RolloutBuffer):
    """The rollout storage in ring mode: ``[capacity, N, *shape]`` tensors, oldest overwritten.

    Used by off-policy agents (SAC/TD3, residual RL, AAWR); a demonstration set is a ReplayBuffer
    filled once (see :meth:`from_tensors`).
    """

    def add(self, transition: Mapping[str, torch.Tensor]) -> None:
        """Write one step ``{name: [N, *shape]}``, overwriting the oldest when full."""
        self._write(self.step, transition)
        self.step = (self.step + 1) % self.capacity
        self.full = self.full or self.step == 0

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Uniform sample with replacement: ``{name: [batch_size, *shape]}``."""
        size = len(self)
        if size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        flat_index = torch.randint(size * self.num_envs, (batch_size,), generator=generator).to(self.device)
        steps, envs = flat_index // self.num_envs, flat_index % self.num_envs
        return {name: tensor[steps, envs] for name, tensor in self.data.items()}

    def state_dict(self) -> dict[str, object]:
        """The held rows ``{"data": {name: [len(self), N, *shape]}, "step": int, "full": bool}`` (copies)."""
        held = len(self)
        return {"data": {name: tensor[:held].clone() for name, tensor in self.data.items()},
                "step": self.step, "full": self.full}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` naming the first field whose name, shape or
        dtype does not match this buffer (capacity, num_envs and fields must be the same)."""
        data, step, full = state["data"], int(state["step"]), bool(state["full"])  # type: ignore[call-overload]
        if not isinstance(data, Mapping) or data.keys() != self.data.keys():
            names = sorted(data) if isinstance(data, Mapping) else data
            raise ValueError(f"replay state has fields {names}, this buffer has {sorted(self.data)}")
        held = self.capacity if full else step
        if not 0 <= step < self.capacity:
            raise ValueError(f"replay state: step {step} is outside this buffer's capacity {self.capacity}")
        for name, tensor in self.data.items():
            saved = data[name]
            expected = (held, *tensor.shape[1:])
            if not isinstance(saved, torch.Tensor) or tuple(saved.shape) != expected or saved.dtype != tensor.dtype:
                got = f"{saved.dtype} {tuple(saved.shape)}" if isinstance(saved, torch.Tensor) else type(saved).__name__
                raise ValueError(f"replay state: field '{name}' is {got}, this buffer holds {tensor.dtype} {expected}")
        for name, tensor in self.data.items():
            tensor[:held].copy_(data[name])
        self.step, self.full = step, full

    @classmethod
    def from_tensors(cls, data: Mapping[str, torch.Tensor], device: str | torch.device = "cpu") -> ReplayBuffer:
        """A full buffer holding flat ``{name: [M, *shape]}`` tensors (e.g. demonstrations), N = 1."""
        sizes = {name: t.shape[0] for name, t in data.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"all tensors need the same number of rows, got {sizes}")
        rows = next(iter(sizes.values()))
        fields = {name: Field(tuple(t.shape[1:]), t.dtype) for name, t in data.items()}
        buffer = cls(rows, 1, fields, device)
        for name, t in data.items():
            buffer.data[name].copy_(t.unsqueeze(1))
        buffer.full = True
        return buffer


class MixedSampler:
    """Batches with a fixed fraction from demonstrations, the rest from online replay (RLPD-style).

    Args:
        demos: buffer of demonstrations.
        online: online replay buffer with the same field names (at least those requested).
        demo_fraction: share of each batch drawn from ``demos``, in ``[0, 1]``.
    """

    def __init__(self, demos: ReplayBuffer, online: ReplayBuffer, demo_fraction: float = 0.5):
        if not 0.0 <= demo_fraction <= 1.0:
            raise ValueError(f"demo_fraction must be in [0, 1], got {demo_fraction}")
        missing = set(online.fields) - set(demos.fields)
        if missing:
            raise KeyError(f"demonstrations lack fields the online buffer has: {sorted(missing)}")
        self.demos = demos
        self.online = online
        self.demo_fraction = demo_fraction

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``{name: [batch_size, *shape]}``: the first ``round(f * B)`` rows come from demos."""
        num_demo = round(self.demo_fraction * batch_size)
        if len(self.online) == 0:
            num_demo = batch_size  # nothing online yet: all from demos
        parts = []
        if num_demo > 0:
            parts.append(self.demos.sample(num_demo, generator))
        if batch_size - num_demo > 0:
            parts.append(self.online.sample(batch_size - num_demo, generator))
        names = self.online.fields.keys()
        return {name: torch.cat([p[name] for p in parts]) for name in names}
