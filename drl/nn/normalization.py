"""Running statistics for observation normalisation and reward scaling."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RunningMeanStd", "RewardScaler"]


class RunningMeanStd(nn.Module):
    """Running mean / variance over the batch axis (Chan et al. parallel update).

    Buffers are saved with the module's state dict, so a checkpoint restores the statistics.

    Args:
        shape: per-sample shape (e.g. ``(obs_dim,)``).
        clip: normalised values are clipped to ``[-clip, clip]``.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip
        self.epsilon = epsilon

    @torch.no_grad()
    def update(self, batch: torch.Tensor) -> None:
        """Fold ``batch[B, *shape]`` into the statistics."""
        batch = batch.to(torch.float64)
        batch_mean = batch.mean(0)
        batch_var = batch.var(0, unbiased=False)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        m2 = self.var * self.count + batch_var * batch_count + delta.square() * self.count * batch_count / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)`` clipped, in ``x``'s dtype."""
        mean = self.mean.to(x.dtype)
        std = torch.sqrt(self.var + self.epsilon).to(x.dtype)
        return torch.clamp((x - mean) / std, -self.clip, self.clip)


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return (as SB3's VecNormalize).

    The per-env discounted return is reset at every episode end (terminated or truncated).
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.return_stats = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon

    @torch.no_grad()
    def scale(self, reward: torch.Tensor, done: torch.Tensor, update: bool = True) -> torch.Tensor:
        """``reward[N] -> reward / std(return)`` clipped; ``done[N]`` ends the running returns."""
        if update:
            self.returns = self.returns * self.gamma + reward.to(torch.float64)
            self.return_stats.update(self.returns)
            self.returns = self.returns.masked_fill(done, 0.0)
        std = torch.sqrt(self.return_stats.var + self.epsilon).to(reward.dtype)
        return torch.clamp(reward / std, -self.clip, self.clip)
