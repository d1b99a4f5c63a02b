"""Return estimators as pure functions on ``[T, N, ...]`` tensors.

Every function broadcasts over trailing axes (agents, tasks, reward streams): ``rewards`` may be
``[T, N]`` or ``[T, N, A]``; masks are ``[T, N]`` or match the rewards' shape.

Time limits are handled the way Stable-Baselines3 does, not the way most peers do:
``next_values[t]`` is the value of the *true* next observation (``info["final_obs"]``), so a
truncated step bootstraps from V(final_obs) and only a terminated step does not bootstrap.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "n_step_targets", "discounted_sum"]


def _expand_like(mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``mask[T, N]`` -> float mask broadcastable against ``target[T, N, ...]``."""
    mask = mask.to(target.dtype)
    while mask.dim() < target.dim():
        mask = mask.unsqueeze(-1)
    return mask


def _reverse_scan(x: torch.Tensor, decay: torch.Tensor) -> torch.Tensor:
    """``out[t] = x[t] + decay[t] * out[t + 1]`` (``out[T] = 0``), along the time axis of ``[T, ...]``."""
    out = torch.empty_like(x)
    running = torch.zeros_like(x[0])
    for t in range(x.shape[0] - 1, -1, -1):
        running = x[t] + decay[t] * running
        out[t] = running
    return out


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation.

    Args:
        rewards: ``[T, N, ...]`` reward of step t.
        values: ``[T, N, ...]`` V(obs_t).
        next_values: ``[T, N, ...]`` V(true next obs of step t); for a finished env this is the
            episode's final obs, not the first obs of the next episode.
        terminated: ``[T, N]`` bool, the MDP ended at step t (no bootstrap).
        truncated: ``[T, N]`` bool, the episode was cut at step t (bootstrap, but do not carry the
            advantage across the episode boundary).
        gamma: discount.
        gae_lambda: GAE lambda.

    Returns:
        ``(advantages, returns)`` both ``[T, N, ...]``; ``returns = advantages + values``.
    """
    not_terminated = 1.0 - _expand_like(terminated, rewards)
    not_done = 1.0 - _expand_like(terminated | truncated, rewards)
    deltas = rewards + gamma * not_terminated * next_values - values
    advantages = _reverse_scan(deltas, gamma * gae_lambda * not_done)
    return advantages, advantages + values


def discounted_sum(rewards: torch.Tensor, episode_end: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reward-to-go ``sum_k gamma^k r_{t+k}`` within each episode, no bootstrap: ``[T, N, ...]``."""
    return _reverse_scan(rewards, gamma * (1.0 - _expand_like(episode_end, rewards)))


def n_step_targets(
    rewards: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    n: int,
) -> torch.Tensor:
    """n-step TD targets ``sum_{k<m} gamma^k r_{t+k} + gamma^m V(s_{t+m})`` along a trajectory.

    The sum stops early at an episode end (m < n): at a terminated step nothing is bootstrapped,
    at a truncated step it bootstraps from ``next_values`` of that step (V(final_obs)). Steps whose
    n-step window runs past the end of the rollout use the window that fits.

    Args:
        rewards, next_values: ``[T, N, ...]``; ``next_values[t]`` = V(true next obs of step t).
        terminated, truncated: ``[T, N]`` bool.
    Returns:
        ``[T, N, ...]`` targets.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    num_steps = rewards.shape[0]
    term = _expand_like(terminated, rewards)
    done = _expand_like(terminated | truncated, rewards)
    targets = torch.empty_like(rewards)
    for t in range(num_steps):
        total = torch.zeros_like(rewards[0])
        discount = torch.ones_like(rewards[0])
        alive = torch.ones_like(rewards[0])  # 1 until the window hits an episode end
        last = min(t + n, num_steps) - 1
        for k in range(t, last + 1):
            total = total + alive * discount * rewards[k]
            # bootstrap here if the episode ends at k (truncation) or the window ends at k
            ends_here = done[k] if k < last else torch.ones_like(done[k])
            bootstrap = alive * ends_here * (1.0 - term[k])
            total = total + bootstrap * discount * gamma * next_values[k]
            alive = alive * (1.0 - ends_here)
            discount = discount * gamma
        targets[t] = total
    return targets
