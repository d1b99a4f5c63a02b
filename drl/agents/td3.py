"""Twin Delayed DDPG (Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods").

All of TD3's math is in this file: the deterministic tanh actor, Gaussian exploration noise, target
policy smoothing, the clipped double-Q target and the delayed actor and target updates. Shared
plumbing (replay access, the fused update, obs groups) is in :mod:`drl.agents.off_policy_base`,
the batched Q ensemble and categorical critic (FastTD3, Seo et al. 2025) in :mod:`drl.nn.critics`.

Delayed updates: every update steps the critic; every ``policy_delay``-th also steps the actor and
Polyak-averages both targets (as SB3). The two kinds are two variants of the fused step (two
compiled graphs when compiling), and on a critic-only step the actor's parameters, Adam moments
and Adam step count are not touched at all (a zero gradient would still move Adam's parameters).
On an actor step the actor loss reads the critic before this step's critic update (SB3: after).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from drl.agents.off_policy_base import OffPolicyAgent, OffPolicyConfig
from drl.config import TrainConfig, check_range
from drl.nn.critics import EnsembleMLP, QEnsemble, q_values, td_critic_loss

__all__ = ["TD3Config", "TD3", "smoothed_target_action"]


@dataclass
class TD3Config(OffPolicyConfig):
    """TD3 hyperparameters (defaults: Stable-Baselines3's TD3; exploration noise: the rl-zoo's 0.1).

    SB3's TD3 class explores with no action noise unless given one; its zoo and the paper use
    Gaussian noise of std 0.1 (in units of the half action range), the default here.
    """

    learning_rate: float = 1e-3
    actor_hidden: list[int] = field(default_factory=lambda: [400, 300])
    critic_hidden: list[int] = field(default_factory=lambda: [400, 300])
    policy_delay: int = 2  # critic updates per actor (and target) update
    target_policy_noise: float = 0.2  # std of the target smoothing noise (normalised action units)
    target_noise_clip: float = 0.5  # the smoothing noise is clipped to +-this
    exploration_noise: float = 0.1  # std of the Gaussian exploration noise (normalised action units)

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check_range(self.policy_delay, f"{prefix}.policy_delay", 1, 1_000_000)
        check_range(self.target_policy_noise, f"{prefix}.target_policy_noise", 0.0, 100.0)
        check_range(self.target_noise_clip, f"{prefix}.target_noise_clip", 0.0, 100.0)
        check_range(self.exploration_noise, f"{prefix}.exploration_noise", 0.0, 100.0)


def smoothed_target_action(target_action: torch.Tensor, noise: torch.Tensor, noise_std: float,
                           noise_clip: float) -> torch.Tensor:
    """Target policy smoothing (Fujimoto et al. 2018, Eq. 14): ``clip(mu'(s') + clip(std * eps, -c, c), -1, 1)``.

    Args:
        target_action: ``[B, A]`` the target actor's action in ``[-1, 1]``.
        noise: ``[B, A]`` standard normal ``eps``.
        noise_std, noise_clip: ``std`` and ``c``.
    """
    return (target_action + (noise_std * noise).clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


class TD3(OffPolicyAgent):
    """TD3 with a K-head Q ensemble (REDQ target subset), optional LayerNorm, MSE or categorical critic.

    Parameter groups (one flat vector): ``critic`` (a :class:`QEnsemble`) and ``actor``
    (``tanh(MLP(obs))``); targets: copies of both. The actor maximises Q1 (K = 2, as the paper and SB3)
    or the mean of the heads (K > 2). See :class:`drl.agents.off_policy_base.OffPolicyAgent` for the
    constructor.

    Raises:
        TypeError: a non-Box action space ("TD3 needs a Box action space; for Discrete actions use: ppo").
    """

    # trains under `drl train --nproc N` / torchrun: every update goes through drl.optim.TrainStep or FusedUpdate,
    # which average the gradients across ranks (drl.distributed); subclasses inherit it
    distributed: ClassVar[bool] = True

    name = "TD3"
    config_class = TD3Config

    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict]:
        cfg: TD3Config = self.cfg
        out = cfg.num_atoms if cfg.critic_type == "categorical" else 1
        critic = QEnsemble(critic_dim, action_dim, cfg.critic_hidden, cfg.num_q, out, cfg.activation, cfg.layer_norm)
        actor = EnsembleMLP(actor_dim, cfg.actor_hidden, action_dim, 1, cfg.activation, cfg.layer_norm)
        nets = nn.ModuleDict({"critic": critic, "actor": actor})
        self.critic, self.actor = critic, actor
        self.actor_heads = torch.zeros(1, dtype=torch.int64, device=self.device) if cfg.num_q <= 2 else None
        return nets, {"critic": cfg.lr("critic"), "actor": cfg.lr("actor")}, copy.deepcopy(nets)

    def _mu(self, params: list[torch.Tensor], obs: torch.Tensor) -> torch.Tensor:
        """Deterministic actor ``tanh(MLP(obs))``: ``[B, D] -> [B, A]`` in ``[-1, 1]``."""
        return torch.tanh(self.actor.apply_params(params, obs).squeeze(0))

    def _policy_action(self, actor_obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        action = self._mu(self.actor.own_params(), actor_obs)
        if deterministic or self.cfg.exploration_noise == 0:
            return action
        noise = self.normal(tuple(action.shape))
        return (action + self.cfg.exploration_noise * noise).clamp(-1.0, 1.0)

    def _draw_noise(self, batch: dict[str, torch.Tensor]) -> None:
        batch["target_noise"] = self.normal((self.cfg.batch_size, self.action_dim))

    def _update_once(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if (self.num_updates + 1) % self.cfg.policy_delay == 0:
            return self.step(batch, "all", ("critic", "actor"), polyak=True)
        return self.step(batch, "critic", ("critic",), polyak=False)

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: TD3Config = self.cfg
        support = self.support if cfg.critic_type == "categorical" else None
        obs_critic = batch[f"obs/{cfg.critic_obs}"]

        # target: y = R + d min_m Q'_m(s', a'), a' = smoothed target action; no gradient
        next_action = smoothed_target_action(self._mu(target["actor"], batch[f"next_obs/{cfg.actor_obs}"]),
                                             batch["target_noise"], cfg.target_policy_noise, cfg.target_noise_clip)
        target_out = self.critic.q(target["critic"], batch[f"next_obs/{cfg.critic_obs}"], next_action,
                                   batch.get("heads"))
        out = self.critic.q(params["critic"], obs_critic, batch["actions"])
        critic_loss = td_critic_loss(out, target_out, batch["returns"], batch["discounts"], None, support)
        stats = {"critic_loss": critic_loss.detach(), "q": q_values(out.detach(), support).mean()}
        if variant == "critic":
            return critic_loss, stats

        # delayed actor: maximise Q_1(s, mu(s)) (K > 2: the heads' mean), the critic's weights detached
        action = self._mu(params["actor"], batch[f"obs/{cfg.actor_obs}"])
        q_pi = q_values(self.critic.q(detached["critic"], obs_critic, action, self.actor_heads), support)
        actor_loss = -q_pi.mean()
        stats["actor_loss"] = actor_loss.detach()
        return critic_loss + actor_loss, stats
