"""Building blocks of an exported (deployable) policy: pure-torch modules, traceable to TorchScript and ONNX.

An agent's ``export_actor()`` returns a :class:`DeployedActor`: the raw actor obs group ``obs [N, D]``
float32 -> the env action its ``act(obs, deterministic=True, update_stats=False)`` returns (``[N, A]``
float32 in the action space's bounds, or ``[N]`` int64 for a Discrete space). Everything the agent does
between the two is inside: the observation normaliser (its statistics frozen at export time), the network,
and the squashing/clipping/rescaling into the env's bounds. :func:`drl.export.export_policy` traces it.

These modules avoid what cannot be traced: the numba kernels of :class:`RunningMeanStd` (a trace would
record their output as a constant), per-env state (recurrent cores, action chunks), Python-side caches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from drl.config import ConfigError
from drl.nn.normalization import RunningMeanStd

__all__ = ["ExportError", "FrozenNormalizer", "CallActor", "DeployedActor", "base_group_check"]


class ExportError(ConfigError):
    """A policy cannot be exported; the message says why in one line."""


class FrozenNormalizer(nn.Module):
    """``clamp((x - mean) / sqrt(var + eps), -clip, clip)`` with the statistics of ``rms`` as they are now,
    in float32 (rounded from float64 as :meth:`RunningMeanStd.std_as` rounds them); None: the identity.

    ``x [N, D] -> [N, D]``."""

    def __init__(self, rms: RunningMeanStd | None):
        super().__init__()
        self.enabled = rms is not None
        if rms is None:
            return
        with torch.no_grad():
            self.register_buffer("mean", rms.mean.detach().reshape(-1).to(torch.float32).clone())
            self.register_buffer("std", rms.var.detach().add(rms.epsilon).sqrt().reshape(-1).to(torch.float32))
        self.clip = float(rms.clip)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return torch.clamp((x - self.mean) / self.std, -self.clip, self.clip)


class CallActor(nn.Module):
    """``fn(normalised obs [N, D]) -> env action``, with the modules whose parameters ``fn`` reads held as
    sub-modules (so a trace records them as the exported model's weights, not as loose constants)."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *modules: nn.Module):
        super().__init__()
        self.held = nn.ModuleList(modules)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


class DeployedActor(nn.Module):
    """The exported policy: ``obs [N, D]`` (the raw actor obs group, flattened) -> env action.

    Args:
        normalizer: the actor group's frozen normaliser (:class:`FrozenNormalizer`; identity when off).
        actor: normalised obs ``[N, D]`` -> env action (``[N, A]`` float32, or ``[N]`` int64).
        obs_dim: ``D``, the width of the input.
        group: the obs group it reads (``"policy"`` for a plain Box env): metadata for users.
    """

    def __init__(self, normalizer: FrozenNormalizer, actor: nn.Module, obs_dim: int, group: str):
        super().__init__()
        self.normalizer = normalizer
        self.actor = actor
        self.obs_dim = int(obs_dim)
        self.group = group

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.actor(self.normalizer(obs.float()))


def base_group_check(base: DeployedActor, group: str) -> DeployedActor:
    """``base`` (a residual's exported base) if it reads obs group ``group`` too (one graph input for both).

    Raises:
        ExportError: it reads another group.
    """
    if base.group != group:
        raise ExportError(f"the base policy reads obs group '{base.group}' but the residual's actor reads '{group}': "
                          "an exported policy has one input, so both must read the same group")
    return base
