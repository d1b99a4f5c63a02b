"""SubPO: policy gradient on marginal-gain rewards (Prajapat et al. 2024, "Submodular Reinforcement
Learning", ICLR 2024).

The objective is ``J(pi) = E[F(tau)]`` with ``F`` monotone submodular over the states of the trajectory.
With the step reward ``r_t = F(s_{t+1} | tau_{0:t})`` (the ``submodular`` wrapper,
:mod:`drl.wrappers.submodular`) the return telescopes to ``F(tau)``, and SubPO's gradient (paper, Eq. 4)

    grad J = E[ sum_t grad log pi(a_t | s_t) (sum_{j >= t} F(s_{j+1} | tau_{0:j}) - b(tau_{0:t})) ]

is the policy gradient of these rewards, with a reward-to-go and a baseline. The policy sees what it needs
of the history through its observation (the ``coverage_obs`` wrapper: time and a visited map).

Two estimators of the advantage (``estimator``):

* ``reinforce`` (the paper's tabular code): the Monte-Carlo reward-to-go ``G_t`` (discounted by
  ``gamma``, default 1: the objective is the undiscounted F) minus a baseline ``b``: the critic's
  ``V(obs_t)`` (``baseline: critic``) or the mean of ``G_t`` over the envs at the same rollout step
  (``baseline: batch_mean``; a time-indexed baseline when episodes are aligned with the rollout, as in
  the configs: every env starts together and the horizon divides ``num_steps``). An episode still running
  at the rollout's end bootstraps from ``V(final_obs)``.
* ``gae``: actor-critic with GAE (the paper's continuous tasks): exactly PPO's advantages.

Everything else (the policy, the clipped surrogate, value loss, optimiser) is :class:`drl.agents.ppo.PPO`:
with one epoch over one minibatch of the whole rollout (the ``configs/subpo`` REINFORCE configs) the
probability ratio is 1 and the surrogate's gradient is the plain policy gradient above.

The modular-RL baseline (the same F made additive, repeats counted) is a reward, not an agent: the
wrapper's ``modular: true`` (``configs/subpo/*-modular.yaml``); this agent is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import gymnasium as gym
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.config import TrainConfig, check
from drl.returns import discounted_sum
from drl.storage import RolloutBuffer

__all__ = ["SubPOConfig", "SubPO"]


@dataclass
class SubPOConfig(PPOConfig):
    """SubPO hyperparameters: PPO's, plus the advantage estimator and its baseline. Defaults: an episodic,
    undiscounted REINFORCE step (one epoch over the whole rollout as one minibatch, no clipping in effect)."""

    estimator: Literal["reinforce", "gae"] = "reinforce"
    baseline: Literal["critic", "batch_mean"] = "critic"  # of reinforce
    gamma: float = 1.0
    num_epochs: int = 1
    minibatch_size: int = 0  # 0: the whole rollout (num_steps x num_envs) in one minibatch
    learning_rate: float = 1e-3

    def validate(self, prefix: str, train: TrainConfig) -> None:
        check(self.minibatch_size >= 0, f"{prefix}.minibatch_size",
              f"must be >= 0 (0: the whole rollout), got {self.minibatch_size}")
        check(self.estimator in ("reinforce", "gae"), f"{prefix}.estimator",
              f"must be reinforce or gae, got {self.estimator!r}")
        check(self.baseline in ("critic", "batch_mean"), f"{prefix}.baseline",
              f"must be critic or batch_mean, got {self.baseline!r}")
        check(not (self.estimator == "reinforce" and self.recurrent), f"{prefix}.rnn_type",
              "must be none with estimator reinforce (use estimator gae for a recurrent policy)")
        PPOConfig.validate(self.resolved(train.env.num_envs), prefix, train)

    def resolved(self, num_envs: int) -> SubPOConfig:
        """This config with ``minibatch_size: 0`` replaced by the rollout's size ``num_steps x num_envs``."""
        return replace(self, minibatch_size=self.minibatch_size or self.num_steps * num_envs)


class SubPO(PPO):
    """SubPO agent: :class:`PPO` with the advantages of :class:`SubPOConfig`'s ``estimator``."""

    config_class = SubPOConfig
    cfg: SubPOConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: SubPOConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        super().__init__(observation_space, action_space, cfg.resolved(num_envs), num_envs, device, generator,
                         total_steps)

    @torch.no_grad()
    def compute_returns(self, storage: RolloutBuffer, rewards: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values, advantages, returns)`` ``[T, N]``; ``gae``: PPO's. ``reinforce``: ``returns = G_t`` (the
        within-episode reward-to-go, an unfinished last episode bootstrapped from ``V(final_obs)``) and
        ``advantages = G_t - b_t`` with ``b`` the critic's values or the per-step mean of ``G`` over envs."""
        if self.cfg.estimator == "gae":
            return super().compute_returns(storage, rewards)
        cfg = self.cfg
        rewards = storage["rewards"] if rewards is None else rewards
        steps, n = storage.capacity, storage.num_envs
        key = cfg.critic_obs
        values = self.model.value(storage[f"obs/{key}"].reshape(steps * n, -1)).view(steps, n)
        next_values = self.model.value(storage[f"final_obs/{key}"].reshape(steps * n, -1)).view(steps, n)
        done = storage["terminated"] | storage["truncated"]
        # bootstrap where the episode goes on unseen: a time-limit cut, or still running at the rollout's end
        cut = storage["truncated"].clone()
        cut[-1] |= ~done[-1]
        returns = discounted_sum(rewards + cfg.gamma * cut.float() * next_values, done | cut, cfg.gamma)
        baseline = values if cfg.baseline == "critic" else returns.mean(dim=1, keepdim=True).expand_as(returns)
        return values, returns - baseline, returns
