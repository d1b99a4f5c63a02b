"""Action distributions as small modules: features -> (action, log_prob, entropy).

The math is written out (no ``torch.distributions`` objects on the hot path): it is short, it is
visible, and it avoids per-step validation overhead.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

from drl.nn.mlp import orthogonal_init

__all__ = ["CategoricalHead", "GaussianHead", "make_action_head", "LOG_STD_MIN", "LOG_STD_MAX"]

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
# Bounds of every Gaussian log-std, free parameter or state-dependent output. Below about -88 the
# float32 ``exp(-log_std)`` in the log-prob overflows and one update turns every weight NaN; above
# the upper bound exploration is wider than any bounded action range needs.
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


class CategoricalHead(nn.Module):
    """Discrete actions. ``features[B, F] -> logits[B, n]``; actions are int64 ``[B]``."""

    def __init__(self, in_dim: int, num_actions: int):
        super().__init__()
        self.logits = orthogonal_init(nn.Linear(in_dim, num_actions), 0.01)

    def sample(self, features: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(action[B], log_prob[B])``."""
        log_probs = torch.log_softmax(self.logits.forward(features), dim=-1)
        if deterministic:
            action = log_probs.argmax(-1)
        else:
            action = torch.multinomial(log_probs.exp(), 1).squeeze(-1)
        return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)

    def evaluate(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(log_prob[B], entropy[B])`` of given ``action[B]``."""
        log_probs = torch.log_softmax(self.logits(features), dim=-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1), entropy

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        return action


class GaussianHead(nn.Module):
    """Continuous actions: diagonal Gaussian, optionally tanh-squashed into the action bounds.

    Args:
        in_dim: feature width.
        low, high: action bounds ``[A]``.
        log_std_init: initial log standard deviation, in ``[LOG_STD_MIN, LOG_STD_MAX]`` = ``[-20, 2]``.
        state_dependent_std: the log-std comes from the features (a second linear output)
            instead of a free parameter.
        squash: sample ``u ~ N(mu, std)`` and act ``tanh(u)`` rescaled to the bounds, with the
            change-of-variables correction in the log-prob; otherwise actions are clipped to the
            bounds only when sent to the env (the stored action stays unclipped).

    The log-std used is clamped to ``[LOG_STD_MIN, LOG_STD_MAX]`` in both modes: a free log-std
    parameter driven below the bound acts as ``LOG_STD_MIN`` (and gets no gradient there).

    Raises:
        ValueError: ``log_std_init`` outside ``[LOG_STD_MIN, LOG_STD_MAX]``.
    """

    def __init__(self, in_dim: int, low: torch.Tensor, high: torch.Tensor, log_std_init: float = 0.0,
                 state_dependent_std: bool = False, squash: bool = False):
        super().__init__()
        if not LOG_STD_MIN <= log_std_init <= LOG_STD_MAX:
            raise ValueError(f"log_std_init must be in [{LOG_STD_MIN:g}, {LOG_STD_MAX:g}] (the log-std is clamped "
                             f"to that range), got {log_std_init}")
        act_dim = low.numel()
        self.mean = orthogonal_init(nn.Linear(in_dim, act_dim), 0.01)
        self.state_dependent_std = state_dependent_std
        if state_dependent_std:
            self.log_std_layer = orthogonal_init(nn.Linear(in_dim, act_dim), 0.01)
            nn.init.constant_(self.log_std_layer.bias, log_std_init)
        else:
            self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.squash = squash
        self.register_buffer("low", low.float())
        self.register_buffer("high", high.float())

    def _mean_log_std(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.mean.forward(features)  # .forward: skips module-call overhead on the per-step path
        if self.state_dependent_std:
            log_std = self.log_std_layer.forward(features).clamp(LOG_STD_MIN, LOG_STD_MAX)
        else:
            log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).expand_as(mean)
        return mean, log_std

    def _gaussian_log_prob(self, u: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
        z = (u - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(-1)

    def _squash_correction(self, u: torch.Tensor) -> torch.Tensor:
        """``sum log |d tanh(u) / du|`` computed stably: ``2 (log 2 - u - softplus(-2u))``."""
        return (2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)

    def sample(self, features: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(action[B, A], log_prob[B])``; with squashing the action is the pre-tanh ``u``."""
        mean, log_std = self._mean_log_std(features)
        # u = mean + std * noise, so the standardised residual in the log-prob is the noise itself
        log_norm = log_std.sum(-1) + _LOG_SQRT_2PI * mean.shape[-1]
        if deterministic:
            u, log_prob = mean, -log_norm.expand(mean.shape[:-1])
        else:
            noise = torch.randn_like(mean)
            u = torch.addcmul(mean, log_std.exp(), noise)
            log_prob = torch.sub(noise.square().sum(-1).mul_(-0.5), log_norm)
        if self.squash:
            log_prob = log_prob - self._squash_correction(u)
        return u, log_prob

    def evaluate(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(log_prob[B], entropy[B])``; the squashed entropy is the one-sample estimate."""
        mean, log_std = self._mean_log_std(features)
        log_prob = self._gaussian_log_prob(action, mean, log_std)
        if self.squash:
            log_prob = log_prob - self._squash_correction(action)
            entropy = -log_prob
        else:
            entropy = (log_std + 0.5 + _LOG_SQRT_2PI).sum(-1)
        return log_prob, entropy

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """Map the stored action to what the env receives: tanh-rescaled or clipped to bounds."""
        if self.squash:
            return self.low + 0.5 * (torch.tanh(action) + 1.0) * (self.high - self.low)
        return torch.clamp(action, self.low, self.high)


def make_action_head(space: gym.Space, in_dim: int, log_std_init: float = 0.0, state_dependent_std: bool = False,
                     squash: bool = False) -> CategoricalHead | GaussianHead:
    """The head for a gymnasium action space (Discrete or bounded Box)."""
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(space.n))
    if isinstance(space, gym.spaces.Box):
        low = torch.as_tensor(space.low, dtype=torch.float32).flatten()
        high = torch.as_tensor(space.high, dtype=torch.float32).flatten()
        if squash and not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ValueError("squash=True needs finite action bounds; this Box is unbounded")
        return GaussianHead(in_dim, low, high, log_std_init, state_dependent_std, squash)
    raise TypeError(f"unsupported action space {space}; drl's policy heads support Discrete and Box")
