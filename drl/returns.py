"""Return estimators as pure functions on ``[T, N, ...]`` tensors.

Every function broadcasts over trailing axes (agents, tasks, reward streams): ``rewards`` may be
``[T, N]`` or ``[T, N, A]``; masks are ``[T, N]`` or match the rewards' shape.

Time limits are handled the way Stable-Baselines3 does, not the way most peers do:
``next_values[t]`` is the value of the *true* next observation (``info["final_obs"]``), so a
truncated step bootstraps from V(final_obs) and only a terminated step does not bootstrap.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "n_step_targets", "discounted_sum", "n_step_replay", "td_target"]


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


def n_step_replay(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    steps: torch.Tensor,
    envs: torch.Tensor,
    head: int,
    size: int,
    gamma: float,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n-step returns of sampled transitions, read from a replay ring ``[C, N, ...]``.

    For the transition at ring row ``steps[b]`` of env ``envs[b]`` the window walks the rows
    ``steps[b], steps[b] + 1, ...`` (modulo ``C``: the ring wraps) for at most ``n`` rows. It stops
    early, *after* the first row whose episode ended (``terminated`` or ``truncated``), and it never
    walks past the newest written row ``(head - 1) mod C``: the row after it is either unwritten or
    the oldest, unrelated data. With ``m`` the number of rows walked (``1 <= m <= n``)::

        returns   = sum_{k<m} gamma^k r[steps + k]
        discounts = gamma^m * (1 - terminated[last])      (0 when the window ended by termination)
        last      = steps + m - 1  (mod C)

    and the TD target is ``returns + discounts * Q_target(next_obs[last, envs], a')`` (:func:`td_target`).
    Convention (Stable-Baselines3's, the env contract's): ``next_obs`` holds the *true* next obs
    (``info["final_obs"]``), so a window cut by truncation bootstraps from that row's final obs with
    ``gamma^m``, while a terminated row never bootstraps. A window cut by the newest row also
    bootstraps from that row's ``next_obs`` with ``gamma^m``. n-step returns in replay: Hessel et al.
    2018 (Rainbow), Eq. 2; Seo et al. 2025 (FastTD3).

    Vectorised over the batch: a loop over ``k < n`` only, no host sync.

    Args:
        rewards: ``[C, N]`` or ``[C, N, ...]`` (trailing reward axes, e.g. agents or reward streams,
            are carried through to ``returns``).
        terminated: ``[C, N]`` bool, the MDP ended at that row (no bootstrap).
        truncated: ``[C, N]`` bool, the episode was cut at that row (bootstrap from its next_obs).
        steps: ``[B]`` int64 ring rows of the sampled transitions (held rows; see
            :meth:`drl.storage.ReplayBuffer.sample_indices`).
        envs: ``[B]`` int64 env indices of the sampled transitions.
        head: next write position of the ring (``ReplayBuffer.step``), in ``[0, C)``.
        size: rows held (``len(replay)``), in ``[1, C]``; windows never cover more than ``size`` rows.
        gamma: discount in ``[0, 1]``.
        n: window length, ``>= 1``; ``n = 1`` gives the one-step target ``r + gamma (1 - terminated) Q``.

    Returns:
        ``(returns, discounts, last_steps)``: ``returns`` ``[B, ...]`` (the rewards' dtype and trailing
        axes); ``discounts`` ``[B]`` (the rewards' dtype; ``[B, 1, ...]`` with trailing reward axes, so
        it broadcasts against ``returns``); ``last_steps`` ``[B]`` int64 ring rows whose ``next_obs``
        is bootstrapped.

    Raises:
        ValueError: ``n < 1``, ``head``/``size`` out of range, or masks not ``[C, N]``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    capacity = rewards.shape[0]
    if not 1 <= size <= capacity or not 0 <= head < capacity:
        raise ValueError(f"need 1 <= size <= C and 0 <= head < C (C = {capacity}), got size {size}, head {head}")
    if terminated.shape != rewards.shape[:2] or truncated.shape != rewards.shape[:2]:
        raise ValueError(f"terminated and truncated must be [C, N] = {list(rewards.shape[:2])}, "
                         f"got {list(terminated.shape)} and {list(truncated.shape)}")
    steps = steps.to(rewards.device)
    envs = envs.to(rewards.device)
    extra = (1,) * (rewards.dim() - 2)  # trailing reward axes
    # rows that may still be walked after steps: up to the newest row, and fewer than size in all
    room = torch.remainder(head - 1 - steps, capacity).clamp_(max=size - 1)
    returns = rewards[steps, envs].clone()
    last = steps
    walked = torch.ones_like(steps)
    alive = torch.ones_like(steps, dtype=torch.bool)
    for k in range(1, n):
        ended = terminated[last, envs] | truncated[last, envs]
        alive = alive & ~ended & (room >= k)
        rows = torch.remainder(steps + k, capacity)
        reward = rewards[rows, envs] * (gamma**k)
        returns = returns + torch.where(alive.view(-1, *extra), reward, torch.zeros_like(reward))
        last = torch.where(alive, rows, last)
        walked = walked + alive
    not_terminated = (~terminated[last, envs]).to(rewards.dtype)
    discounts = torch.pow(torch.full_like(not_terminated, gamma), walked.to(rewards.dtype)) * not_terminated
    return returns, discounts.view(-1, *extra), last


def td_target(returns: torch.Tensor, discounts: torch.Tensor, next_values: torch.Tensor) -> torch.Tensor:
    """TD target ``returns + discounts * next_values`` (Sutton & Barto 2018, Eq. 7.1 for n steps).

    With ``(returns, discounts, last_steps)`` from :func:`n_step_replay`, ``next_values`` is the target
    critic's value of ``next_obs[last_steps, envs]`` (e.g. ``min_i Q'_i(s', a') - alpha log pi(a'|s')``
    for SAC). One step is the ``n = 1`` case: ``returns = r``, ``discounts = gamma (1 - terminated)``,
    so a truncated step bootstraps from its true final obs and a terminated step never does. A
    distributional critic shifts its support the same way: ``z' = returns + discounts * z`` (then
    projects; Bellemare et al. 2017, Eq. 7).

    Args:
        returns: ``[B, ...]`` discounted reward sums.
        discounts: ``[B]`` or broadcastable against ``returns`` (``[B, 1, ...]``).
        next_values: ``[B, ...]`` values of the bootstrap observations (use ``.detach()`` / no_grad).

    Returns:
        ``[B, ...]`` targets (broadcast of the three).
    """
    while discounts.dim() < next_values.dim():
        discounts = discounts.unsqueeze(-1)
    return returns + discounts * next_values
