"""Minibatch index samplers, kept apart from the storage they index."""

from __future__ import annotations

from collections.abc import Iterator

import torch

__all__ = ["MinibatchSampler"]


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
