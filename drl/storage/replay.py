"""Ring-mode storage (replay) and a sampler that mixes demonstrations with online data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from drl.storage.rollout import Field, RolloutBuffer

__all__ = ["ReplayBuffer", "MixedSampler"]


class ReplayBuffer(RolloutBuffer):
    """The rollout storage in ring mode: ``[capacity, N, *shape]`` tensors, oldest overwritten.

    Used by off-policy agents (SAC/TD3, residual RL, AAWR); a demonstration set is a ReplayBuffer
    filled once (see :meth:`from_tensors`). ``capacity`` counts vectorised steps (rounds): the buffer
    holds ``capacity * num_envs`` transitions. ``step`` is the next write row (the ring's head) and
    ``len(self)`` the rows held; n-step targets over the ring: :func:`drl.returns.n_step_replay`.
    """

    #: rows whose per-row views are cached for :meth:`add` (a cached row costs ~0.6 kB per field on
    #: the host, so a 1M-row single-env buffer falls back to indexed writes instead of ~4 GB of views)
    max_cached_rows: int = 1 << 14

    def add(self, transition: Mapping[str, torch.Tensor]) -> None:
        """Write one step ``{name: [N, *shape]}`` at row ``step``, overwriting the oldest when full."""
        self._check_fields(transition)
        if self.capacity <= self.max_cached_rows:
            rows = self._rows[self.step]
            if rows is None:
                rows = self._rows[self.step] = {name: tensor[self.step] for name, tensor in self.data.items()}
            for name, value in transition.items():
                rows[name].copy_(value)
        else:
            for name, value in transition.items():
                self.data[name][self.step] = value
        self.step = (self.step + 1) % self.capacity
        self.full = self.full or self.step == 0

    def sample_indices(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform draw with replacement over the held transitions: ``(steps[B], envs[B])``.

        Both int64 on the buffer's device. The draw happens on the generator's device (a CPU
        generator serves a CUDA buffer: drawn on the host, then moved), so the same generator state
        gives the same indices whatever the buffer's device.

        Raises:
            RuntimeError: the buffer is empty.
        """
        size = len(self)
        if size == 0:
            raise RuntimeError("cannot sample from an empty replay buffer")
        draw_device = generator.device if generator is not None else torch.device("cpu")
        flat_index = torch.randint(size * self.num_envs, (batch_size,), generator=generator, device=draw_device)
        flat_index = flat_index.to(self.device)
        return flat_index // self.num_envs, flat_index % self.num_envs

    def gather(
        self, steps: torch.Tensor, envs: torch.Tensor, names: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The transitions at ring rows ``steps[B]`` of envs ``envs[B]``: ``{name: [B, *shape]}`` (copies).

        ``names`` picks fields (default: all), e.g. ``next_obs/<group>`` at the n-step window's
        ``last_steps`` from :func:`drl.returns.n_step_replay`.
        """
        return {name: self.data[name][steps, envs] for name in (names if names is not None else self.data)}

    def window(self, steps: torch.Tensor, envs: torch.Tensor, length: int,
               since_start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last ``length`` rows up to ``steps[B]`` of the same env, for sequence (history, recurrent) views.

        Returns ``(rows [B, length], valid [B, length])``, oldest first: ``rows[b, j]`` is ring row
        ``steps[b] - (length - 1 - j)`` (modulo the capacity: the ring wraps), so ``rows[:, -1] = steps``;
        read a field with ``data[name][rows, envs[:, None]]`` ``[B, length, *shape]``. ``valid[b, j]`` is
        true where that row belongs to the same episode as ``steps[b]``: it is held (not older than the
        oldest row, nor overwritten) and no row from it up to the one before ``steps[b]`` ended an episode
        (``terminated`` or ``truncated``). The invalid rows are a prefix of each window (padding before the
        episode's first step); ``valid[:, -1]`` is always true.

        Args:
            steps: int64 ``[B]`` held ring rows (e.g. from :meth:`sample_indices`).
            envs: int64 ``[B]`` their envs.
            length: ``L >= 1`` rows per window.
            since_start: int64 ``[B]`` or None: where the data knows it (flat demonstrations with an episode
                index), how many rows of ``steps[b]``'s episode precede it; rows further back are invalid too.
        """
        back = torch.arange(length - 1, -1, -1, device=steps.device)  # [L] rows back from steps: L-1 ... 0
        rows = torch.remainder(steps.unsqueeze(1) - back, self.capacity)  # [B, L]
        oldest = self.step if self.full else 0
        held_before = torch.remainder(steps - oldest, self.capacity)  # rows held before steps[b]
        earlier, column = rows[:, :-1], envs.unsqueeze(1)
        ended = self.data["terminated"][earlier, column] | self.data["truncated"][earlier, column]  # [B, L-1]
        # an end at row j cuts rows 0..j off: a row is valid when no row from it to L-2 ended an episode
        cut = ended.flip(1).cumsum(1).flip(1) > 0
        valid = torch.cat([~cut, torch.ones_like(steps, dtype=torch.bool).unsqueeze(1)], 1)
        valid &= back <= held_before.unsqueeze(1)
        if since_start is not None:
            valid &= back <= since_start.unsqueeze(1)
        return rows, valid

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Uniform sample with replacement: ``{name: [batch_size, *shape]}``.

        :meth:`sample_indices` then :meth:`gather`: the same generator state gives the same rows.
        """
        return self.gather(*self.sample_indices(batch_size, generator))

    def state_dict(self) -> dict[str, Any]:
        """The held rows and the ring position, to save with a checkpoint.

        Layout: ``{"capacity", "num_envs", "step", "full", "data": {name: [len(self), N, *shape]}}``
        with the rows in *ring* order (row i is ring row i; when full the oldest row is ``step``).
        Unused capacity is not included: a partly filled buffer gives copies of its first ``step``
        rows; a full one gives its tensors themselves (no copy: save them before the next :meth:`add`).
        """
        held = len(self)
        data = {name: tensor if held == self.capacity else tensor[:held].clone() for name, tensor in self.data.items()}
        return {"capacity": self.capacity, "num_envs": self.num_envs, "step": self.step, "full": self.full,
                "data": data}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (onto this buffer's device), checking every field first.

        With the same capacity the ring is restored row for row, so :meth:`sample_indices` with the
        same generator state draws the same transitions as before saving. Into a buffer of another
        capacity the held rows are laid out oldest first from row 0 (same transitions, other rows).

        Raises:
            ValueError: naming the field, when a field is missing or unknown, its shape or dtype
                differs, ``num_envs`` differs, or the held rows exceed this buffer's ``capacity``.
                Nothing is changed then.
        """
        for key in ("capacity", "num_envs", "step", "full", "data"):
            if key not in state:
                raise ValueError(f"replay state lacks '{key}'")
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"replay state 'num_envs' is {state['num_envs']}, this buffer has {self.num_envs}")
        data = state["data"]
        for name in self.fields:
            if name not in data:
                raise ValueError(f"replay state lacks field '{name}'")
        for name in data:
            if name not in self.fields:
                raise ValueError(f"replay state has field '{name}' this buffer does not declare")
        held = None
        for name, tensor in data.items():
            expected = (self.num_envs, *self.fields[name].shape)
            if tuple(tensor.shape[1:]) != expected:
                raise ValueError(f"replay field '{name}' has shape {list(tensor.shape[1:])} per row, "
                                 f"this buffer expects {list(expected)}")
            if tensor.dtype != self.fields[name].dtype:
                raise ValueError(f"replay field '{name}' has dtype {tensor.dtype}, "
                                 f"this buffer expects {self.fields[name].dtype}")
            if held is not None and tensor.shape[0] != held:
                raise ValueError(f"replay field '{name}' holds {tensor.shape[0]} rows, other fields {held}")
            held = tensor.shape[0]
        saved_capacity, step, full = int(state["capacity"]), int(state["step"]), bool(state["full"])
        held = held or 0
        if not 0 <= step < saved_capacity or held != (saved_capacity if full else step):
            raise ValueError(f"replay state 'step' {step} / 'full' {full} do not match {held} rows held "
                             f"of capacity {saved_capacity}")
        if held > self.capacity:
            raise ValueError(f"replay state holds {held} rows, more than this buffer's 'capacity' {self.capacity}")
        if saved_capacity == self.capacity:
            for name, tensor in data.items():
                self.data[name][:held].copy_(tensor)
            self.step, self.full = step % self.capacity, full
            return
        order = torch.remainder(torch.arange(held) + (step if full else 0), max(held, 1))  # oldest first
        for name, tensor in data.items():
            self.data[name][:held].copy_(tensor[order.to(tensor.device)])
        self.full = held == self.capacity
        self.step = held % self.capacity

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

    def sample_indices(self, batch_size: int, generator: torch.Generator | None = None
                       ) -> list[tuple[ReplayBuffer, torch.Tensor, torch.Tensor]]:
        """Where each row of a batch comes from: ``[(buffer, steps[b], envs[b]), ...]``, demos first.

        ``round(demo_fraction * batch_size)`` rows come from ``demos`` and the rest from ``online``
        (all from ``demos`` while ``online`` is empty); parts with no rows are left out. The indices
        are :meth:`ReplayBuffer.sample_indices` of each buffer, drawn in that order from ``generator``,
        so an agent can read each part its own way (e.g. n-step returns within each buffer).
        """
        num_demo = round(self.demo_fraction * batch_size)
        if len(self.online) == 0:
            num_demo = batch_size  # nothing online yet: all from demos
        parts = []
        if num_demo > 0:
            parts.append((self.demos, *self.demos.sample_indices(num_demo, generator)))
        if batch_size - num_demo > 0:
            parts.append((self.online, *self.online.sample_indices(batch_size - num_demo, generator)))
        return parts

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``{name: [batch_size, *shape]}``: the first ``round(f * B)`` rows come from demos (see
        :meth:`sample_indices`)."""
        parts = [buffer.gather(steps, envs) for buffer, steps, envs in self.sample_indices(batch_size, generator)]
        names = self.online.fields.keys()
        return {name: torch.cat([p[name] for p in parts]) for name in names}
