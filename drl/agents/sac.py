"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", 2018b).

All of SAC's math is in this file: the tanh-squashed Gaussian policy with its exact log-density, the
soft clipped double-Q target, the actor loss and the automatic entropy temperature. Shared
plumbing (replay access, the fused update, obs groups) is in :mod:`drl.agents.off_policy_base`,
the batched Q ensemble and categorical critic in :mod:`drl.nn.critics`.

One update is ONE loss ``critic_loss + actor_loss + alpha_loss`` over one flat parameter vector:
each term reads the other groups' parameters detached, so its gradient reaches only its own group,
and Adam (per coordinate, one state per group) then makes the same step as three optimisers. The
actor loss reads the critic before this step's critic update (SB3 reads it after).

Entropy and action scaling: the policy acts ``a = tanh(u)`` in ``[-1, 1]^A`` and the env receives
``center + scale * a``. SAC regularises the entropy of ``a`` (the normalised action), as SB3 and the
authors' code do, so ``target_entropy = -|A|`` means the same for every action range. The density
of the env action differs by the constant ``-sum log(scale)``; :func:`squashed_gaussian` adds it
when given ``log_scale`` (and is tested against a numerical change of variables with it).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from drl.agents.off_policy_base import OffPolicyAgent, OffPolicyConfig, scalar_parameter
from drl.config import TrainConfig, check, check_range
from drl.nn.critics import EnsembleMLP, QEnsemble, q_values, td_critic_loss

__all__ = ["SACConfig", "SAC", "squashed_gaussian", "LOG_STD_MIN", "LOG_STD_MAX"]

LOG_STD_MIN = -20.0  # SB3's clamp of the actor's log-std
LOG_STD_MAX = 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC hyperparameters (defaults: Stable-Baselines3's SAC)."""

    ent_coef: float | Literal["auto"] = "auto"  # "auto": learn alpha; a number: fixed alpha
    ent_coef_init: float = 1.0  # alpha's start when learned (SB3: log_alpha = 0)
    target_entropy: float | Literal["auto"] = "auto"  # "auto": -|A|
    alpha_learning_rate: float | None = None  # null: learning_rate

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        if self.ent_coef != "auto":
            check(self.ent_coef > 0, f"{prefix}.ent_coef", f"must be 'auto' or > 0, got {self.ent_coef}")
        check_range(self.ent_coef_init, f"{prefix}.ent_coef_init", 1e-30, 1e30)
        check(self.alpha_learning_rate is None or self.alpha_learning_rate > 0, f"{prefix}.alpha_learning_rate",
              f"must be > 0 or null, got {self.alpha_learning_rate}")


def squashed_gaussian(mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor,
                      log_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised sample of a tanh-squashed Gaussian and its exact log-density (Haarnoja et al. 2018, App. C).

    ``u = mean + exp(log_std) * noise``, ``a = tanh(u)`` and, by the change of variables,
    ``log pi(a) = log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2)``, with
    ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))`` (exact, and finite where ``tanh(u)`` rounds to 1).

    Args:
        mean, log_std, noise: ``[B, A]``; ``noise`` standard normal (zeros: the mode).
        log_scale: ``[A]`` ``log((high - low) / 2)``: give it for the density of the env action
            ``center + scale * a`` (subtracts ``sum log scale``); None: the density of ``a``.

    Returns:
        ``(a[B, A] in (-1, 1), log_prob[B])``.
    """
    u = mean + log_std.exp() * noise
    log_prob = (-0.5 * noise.square() - log_std - _LOG_SQRT_2PI).sum(-1)
    log_prob = log_prob - (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    if log_scale is not None:
        log_prob = log_prob - log_scale.sum()
    return torch.tanh(u), log_prob


class SAC(OffPolicyAgent):
    """SAC with a K-head Q ensemble (REDQ target subset), optional LayerNorm, categorical or MSE critic.

    Parameter groups (one flat vector): ``critic`` (a :class:`QEnsemble`), ``actor`` (an MLP giving
    mean and log-std), ``log_alpha``. The target is a copy of the critic (Polyak, ``tau``).
    See :class:`drl.agents.off_policy_base.OffPolicyAgent` for the constructor.

    Raises:
        TypeError: a non-Box action space ("SAC needs a Box action space; for Discrete actions use: ppo").
    """

    # trains under `drl train --nproc N` / torchrun: every update goes through drl.optim.TrainStep or FusedUpdate,
    # which average the gradients across ranks (drl.distributed); subclasses inherit it
    distributed: ClassVar[bool] = True

    name = "SAC"
    config_class = SACConfig

    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict]:
        cfg: SACConfig = self.cfg
        out = cfg.num_atoms if cfg.critic_type == "categorical" else 1
        critic = QEnsemble(critic_dim, action_dim, cfg.critic_hidden, cfg.num_q, out, cfg.activation, cfg.layer_norm)
        actor = EnsembleMLP(actor_dim, cfg.actor_hidden, 2 * action_dim, 1, cfg.activation, cfg.layer_norm)
        learned = cfg.ent_coef == "auto"
        log_alpha = scalar_parameter(math.log(cfg.ent_coef_init if learned else cfg.ent_coef))
        nets = nn.ModuleDict({"critic": critic, "actor": actor, "log_alpha": log_alpha})
        target = nn.ModuleDict({"critic": copy.deepcopy(critic)})
        self.critic, self.actor = critic, actor
        self.target_entropy = float(-action_dim if cfg.target_entropy == "auto" else cfg.target_entropy)
        self.learn_alpha = learned
        self.groups_stepped = ("critic", "actor", "log_alpha") if learned else ("critic", "actor")
        alpha_lr = cfg.learning_rate if cfg.alpha_learning_rate is None else cfg.alpha_learning_rate
        return nets, {"critic": cfg.lr("critic"), "actor": cfg.lr("actor"), "log_alpha": alpha_lr}, target

    def _mean_log_std(self, params: list[torch.Tensor], obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor: ``obs[B, D] -> (mean[B, A], log_std[B, A])``, the log-std clamped to ``[-20, 2]``."""
        mean, log_std = self.actor.apply_params(params, obs).squeeze(0).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _policy_action(self, actor_obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self._mean_log_std(self.actor.own_params(), actor_obs)
        if deterministic:
            return torch.tanh(mean)
        return squashed_gaussian(mean, log_std, self.normal(tuple(mean.shape)))[0]

    def _draw_noise(self, batch: dict[str, torch.Tensor]) -> None:
        shape = (self.cfg.batch_size, self.action_dim)
        batch["noise"] = self.normal(shape)  # the reparameterised sample at s
        batch["next_noise"] = self.normal(shape)  # a' ~ pi(.|s') in the target

    def _update_once(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.step(batch, "all", self.groups_stepped, polyak=True)

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: SACConfig = self.cfg
        support = self.support if cfg.critic_type == "categorical" else None
        obs_actor, obs_critic = batch[f"obs/{cfg.actor_obs}"], batch[f"obs/{cfg.critic_obs}"]
        log_alpha = params["log_alpha"][0]
        alpha = log_alpha.detach().exp()

        # soft target: y = R + d (min_m Q'_m(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s'), no gradient
        next_mean, next_log_std = self._mean_log_std(detached["actor"], batch[f"next_obs/{cfg.actor_obs}"])
        next_action, next_log_prob = squashed_gaussian(next_mean, next_log_std, batch["next_noise"])
        target_out = self.critic.q(target["critic"], batch[f"next_obs/{cfg.critic_obs}"], next_action,
                                   batch.get("heads"))
        out = self.critic.q(params["critic"], obs_critic, batch["actions"])
        critic_loss = td_critic_loss(out, target_out, batch["returns"], batch["discounts"], -alpha * next_log_prob,
                                     support)

        # actor: E[alpha log pi(a|s) - Q(s, a)], a reparameterised; the critic's weights detached.
        # Q = min over the heads for K <= 2 (clipped double Q, SB3), their mean for K > 2 (REDQ, Alg. 1)
        mean, log_std = self._mean_log_std(params["actor"], obs_actor)
        action, log_prob = squashed_gaussian(mean, log_std, batch["noise"])
        q_pi = q_values(self.critic.q(detached["critic"], obs_critic, action), support)  # [K, B]
        q_pi = q_pi.min(dim=0).values if cfg.num_q <= 2 else q_pi.mean(dim=0)
        actor_loss = (alpha * log_prob - q_pi).mean()

        # temperature (Haarnoja et al. 2018b, Eq. 18): J(alpha) = E[-alpha (log pi + target_entropy)],
        # on log alpha: entropy above target (log pi + H_target < 0) -> alpha decreases, below -> increases
        alpha_loss = -(log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        loss = critic_loss + actor_loss + (alpha_loss if self.learn_alpha else 0.0)
        stats = {"critic_loss": critic_loss.detach(), "actor_loss": actor_loss.detach(), "alpha": alpha,
                 "entropy": -log_prob.detach().mean(), "q": q_values(out.detach(), support).mean()}
        if self.learn_alpha:  # a fixed ent_coef has no temperature loss to report
            stats["alpha_loss"] = alpha_loss.detach()
        return loss, stats
