"""Minibatch samplers, kept apart from the storage they index.

* :class:`MinibatchSampler`: shuffled single steps of a flattened rollout (feed-forward PPO);
* :class:`ChunkSampler`: shuffled whole chunks of ``seq_len`` consecutive steps of one env, each
  with its initial recurrent state (recurrent PPO).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

__all__ = ["MinibatchSampler", "ChunkSampler"]


class MinibatchSampler:
    """Shuffled minibatches of indices into ``num_samples`` rows, for ``num_epochs`` passes.

    Args:
        num_samples: rows in the flattened rollout (``T * N``).
        minibatch_size: rows per minibatch; must divide ``num_samples``.
        generator: torch generator, so sampling follows the run's seed.
    """

    def __init__(self, num_samples: int, minibatch_size: int, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu"):
        if minibatch_size < 1 or num_samples % minibatch_size != 0:
            raise ValueError(
                f"minibatch_size ({minibatch_size}) must be >= 1 and divide the rollout size ({num_samples})"
            )
        self.num_samples = num_samples
        self.minibatch_size = minibatch_size
        self.generator = generator
        self.device = torch.device(device)

    @property
    def num_minibatches(self) -> int:
        return self.num_samples // self.minibatch_size

    def permutation(self) -> torch.Tensor:
        """A random order ``[num_samples]`` of all rows; consecutive slices are the minibatches."""
        return torch.randperm(self.num_samples, generator=self.generator).to(self.device)

    def epoch(self) -> Iterator[torch.Tensor]:
        """One pass: ``num_minibatches`` disjoint index tensors ``[minibatch_size]`` covering every row."""
        yield from self.permutation().view(self.num_minibatches, self.minibatch_size)

    def minibatches(self, batch: Mapping[str, torch.Tensor]) -> Iterator[dict[str, torch.Tensor]]:
        """One pass over ``batch`` (``{name: [num_samples, ...]}``) in a new random order: one gather
        per field, then the minibatches are contiguous views ``[minibatch_size, ...]``."""
        order = self.permutation()
        shuffled = {k: v[order] for k, v in batch.items()}
        for start in range(0, self.num_samples, self.minibatch_size):
            yield {k: v[start:start + self.minibatch_size] for k, v in shuffled.items()}


class ChunkSampler:
    """Minibatches of whole sequence chunks of a rollout ``[T, N]``, for recurrent policies.

    Each env's ``T`` steps are cut into ``T / seq_len`` chunks of ``seq_len`` consecutive steps, so
    there are ``C = (T / seq_len) * N`` chunks; chunk ``c = i * N + n`` holds steps
    ``i * seq_len ... (i + 1) * seq_len - 1`` of env ``n``. A minibatch is ``minibatch_size /
    seq_len`` whole chunks, drawn without replacement in a new random order each epoch. A chunk
    is unrolled from the recurrent state stored at its first step (:meth:`initial`), and the state
    is zeroed before each later step of the chunk that starts an episode (:meth:`resets`).

    Args:
        num_steps: ``T``, steps per env in the rollout; ``seq_len`` must divide it.
        num_envs: ``N``.
        seq_len: steps per chunk.
        minibatch_size: steps per minibatch; a multiple of ``seq_len`` that divides ``T * N``.
        generator: torch generator, so the order follows the run's seed.

    Raises:
        ValueError: a size that does not divide as stated.
    """

    def __init__(self, num_steps: int, num_envs: int, seq_len: int, minibatch_size: int,
                 generator: torch.Generator | None = None, device: str | torch.device = "cpu"):
        if seq_len < 1 or num_steps % seq_len != 0:
            raise ValueError(f"seq_len ({seq_len}) must be >= 1 and divide num_steps ({num_steps})")
        if minibatch_size % seq_len != 0 or (num_steps * num_envs) % minibatch_size != 0:
            raise ValueError(f"minibatch_size ({minibatch_size}) must be a multiple of seq_len ({seq_len}) and "
                             f"divide the rollout size ({num_steps * num_envs})")
        self.num_steps, self.num_envs, self.seq_len = num_steps, num_envs, seq_len
        self.num_chunks = num_steps // seq_len * num_envs
        self.chunks_per_minibatch = minibatch_size // seq_len
        self.generator = generator
        self.device = torch.device(device)

    def chunks(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, *shape] -> [C, seq_len, *shape]`` (a copy)."""
        shape = x.shape[2:]
        x = x.reshape(self.num_steps // self.seq_len, self.seq_len, self.num_envs, *shape)
        return x.transpose(1, 2).reshape(self.num_chunks, self.seq_len, *shape)

    def initial(self, x: torch.Tensor) -> torch.Tensor:
        """``[T, N, *shape] -> [C, *shape]``: ``x`` at each chunk's first step (its initial recurrent state)."""
        x = x.reshape(self.num_steps // self.seq_len, self.seq_len, self.num_envs, *x.shape[2:])
        return x[:, 0].reshape(self.num_chunks, *x.shape[3:])

    def resets(self, done: torch.Tensor) -> torch.Tensor:
        """``done [T, N]`` (terminated or truncated at step t) -> ``[C, seq_len]`` bool: step ``k`` of the chunk
        starts an episode (the previous step ended one). False at ``k = 0``: the stored initial state
        of a chunk is the one the rollout used there, already zero if an episode started."""
        resets = self.chunks(done).roll(1, dims=1)
        resets[:, 0] = False
        return resets

    def split(self, steps: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor], done: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Rollout fields ``[T, N, ...]`` -> the arguments of :meth:`minibatches`: ``steps`` as chunks
        ``[C, seq_len, ...]`` plus ``resets`` (from ``done [T, N]``), ``initial`` at each chunk's first
        step ``[C, ...]``."""
        chunked = {name: self.chunks(x) for name, x in steps.items()} | {"resets": self.resets(done)}
        return chunked, {name: self.initial(x) for name, x in initial.items()}

    def permutation(self) -> torch.Tensor:
        """A random order ``[C]`` of the chunks."""
        return torch.randperm(self.num_chunks, generator=self.generator).to(self.device)

    def minibatches(self, steps: Mapping[str, torch.Tensor], initial: Mapping[str, torch.Tensor]
                    ) -> Iterator[dict[str, torch.Tensor]]:
        """One pass in a new random order over per-step fields ``steps`` (``[C, seq_len, ...]``, see
        :meth:`chunks`) and per-chunk fields ``initial`` (``[C, ...]``).

        Yields ``{name: [B * seq_len, ...]}`` for the per-step fields (chunk-major: row ``b * seq_len + k``
        is step ``k`` of chunk ``b``) and ``{name: [B, ...]}`` for the per-chunk ones, ``B =
        minibatch_size / seq_len`` chunks.
        """
        order = self.permutation()
        shuffled_steps = {k: v[order] for k, v in steps.items()}
        shuffled_initial = {k: v[order] for k, v in initial.items()}
        size = self.chunks_per_minibatch
        for start in range(0, self.num_chunks, size):
            minibatch = {k: v[start:start + size].flatten(0, 1) for k, v in shuffled_steps.items()}
            minibatch |= {k: v[start:start + size] for k, v in shuffled_initial.items()}
            yield minibatch
