"""PPO's separate intrinsic value head (Burda et al. 2018, RND, Sec. 2.3), selected by ``algo.intrinsic_value``.

With an intrinsic bonus in the reward (the ``bonus`` wrapper reports what it added in
``info["intrinsic_reward"]``), PPO splits each stored reward into an extrinsic part ``r_E = r - r_I`` and the
intrinsic part ``r_I``, and learns two values over the critic's input: ``V_E`` (the critic) and ``V_I``
(a second MLP of the same shape). Two GAE computations::

    A_E, R_E = GAE(r_E, V_E, gamma,           lambda)   episodic: ends at terminated / truncated
    A_I, R_I = GAE(r_I, V_I, intrinsic_gamma, lambda)   non-episodic (RND): no episode ends, unless
                                                        intrinsic_episodic: true
    A = extrinsic_coef * A_E + intrinsic_coef * A_I      (RND: 2 and 1)

and a value loss on each head (summed, each with the agent's clipping). ``normalize_reward`` scales ``r_E``
only (the bonus wrapper normalises its own). In the non-episodic stream the intrinsic return runs on across
an episode end: a step bootstraps from ``V_I(final_obs)`` and its advantage takes in the next episode's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from drl.config import check, check_range
from drl.returns import gae

if TYPE_CHECKING:
    from drl.agents.ppo import PPOConfig

__all__ = ["INFO_KEY", "FIELD", "validate", "split_rewards", "combined_advantages"]

INFO_KEY = "intrinsic_reward"  # what the bonus wrappers put in the env's info, [N] per step
FIELD = "intrinsic_rewards"  # the rollout field PPO stores it in


def validate(cfg: PPOConfig, prefix: str) -> None:
    """One ConfigError naming the key for a bad intrinsic-head setting."""
    check(0 <= cfg.intrinsic_gamma <= 1, f"{prefix}.intrinsic_gamma", f"must be in [0, 1], got {cfg.intrinsic_gamma}")
    for name in ("extrinsic_coef", "intrinsic_coef"):
        check_range(getattr(cfg, name), f"{prefix}.{name}", 0, 1e6, what="a weight of the advantages")
    # a run without a wrapper that reports info['intrinsic_reward'] stops at its first step, naming it (the
    # CLI's --wrapper flags join the config after it is validated, so they cannot be checked here)


def split_rewards(rewards: torch.Tensor, intrinsic: torch.Tensor) -> torch.Tensor:
    """The extrinsic part ``r - r_I`` of the stored rewards ``[T, N]``."""
    return rewards - intrinsic


def combined_advantages(cfg: PPOConfig, extrinsic_advantages: torch.Tensor, intrinsic_rewards: torch.Tensor,
                        values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
                        truncated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, R_I)``: the mixed advantages ``extrinsic_coef * A_E + intrinsic_coef * A_I`` and the intrinsic
    head's returns, all ``[T, N]``, from ``V_I(obs_t)`` ``values`` and ``V_I(final_obs_t)`` ``next_values``."""
    if not cfg.intrinsic_episodic:
        terminated = truncated = torch.zeros_like(terminated)
    advantages, returns = gae(intrinsic_rewards, values, next_values, terminated, truncated,
                              cfg.intrinsic_gamma, cfg.gae_lambda)
    return cfg.extrinsic_coef * extrinsic_advantages + cfg.intrinsic_coef * advantages, returns
