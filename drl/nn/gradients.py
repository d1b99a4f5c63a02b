"""Gradients of a parameter list held in one flat buffer.

Every parameter's ``.grad`` is a view into one tensor, so zeroing, the global gradient norm and
clipping are one op each instead of one per parameter (which is what dominates small-network
updates on the CPU). Autograd accumulates into an existing ``.grad`` in place, so the views stay.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["FlatGradients"]


class FlatGradients:
    """Owns the ``.grad`` of ``parameters``; never set those grads to None (``zero()`` instead)."""

    def __init__(self, parameters: Iterable[nn.Parameter]):
        self.parameters = list(parameters)
        first = self.parameters[0]
        self.buffer = torch.zeros(sum(p.numel() for p in self.parameters), dtype=first.dtype, device=first.device)
        self.attach()

    def attach(self) -> None:
        """(Re)point every ``.grad`` at its slice of the buffer."""
        offset = 0
        for p in self.parameters:
            p.grad = self.buffer[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    def zero(self) -> None:
        if self.parameters[0].grad is None:  # e.g. after copy.deepcopy, which does not copy grads
            self.attach()
        self.buffer.zero_()

    def clip_norm_(self, max_norm: float) -> torch.Tensor:
        """Scale all gradients so their global L2 norm is at most ``max_norm``; returns the norm before."""
        norm = torch.linalg.vector_norm(self.buffer)
        self.buffer.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        return norm
