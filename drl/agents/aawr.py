"""Asymmetric advantage-weighted regression (AAWR; Hu et al. 2025, "Real-World RL of Active Perception Behaviors").

All of AAWR's math is in this file. The policy ``pi(a | z)`` reads the robot's observation ``z`` (obs group
``actor_obs``, default ``"policy"``); the critics read the privileged state ``s`` (``critic_obs``, default
``"critic"``) and are trained with IQL (Kostrikov et al. 2022):

* ``V(s)``: expectile regression toward the target ``Q'(s, a) = min`` over ``num_q_target_pair`` (2) target
  heads drawn at random from the ``num_q`` (5), each update anew (the official code's choice):
  ``L_V = E[|expectile - 1(u < 0)| u^2]``, ``u = Q'(s, a) - V(s)`` (IQL Eq. 5, expectile 0.7);
* ``Q_k(s, a)``: TD toward ``y = r + gamma (1 - terminated) V(s')`` (IQL Eq. 6; n-step windows with
  ``n_step > 1``): ``L_Q = 0.5 sum_k E[(Q_k(s, a) - y)^2]``;
* the policy: maximise ``E[w log pi(a | z)]`` over the data's actions with ``w = min(exp(A / beta), max_weight)``
  and ``A = Q'(s, a) - V(s)`` (AAWR Eq. 3; official: ``exp(3 A)`` clipped at 100, so ``beta = 1/3``).

Which Q the advantage reads (``advantage_q``): by default ``min``, the same random-pair minimum of the
target heads that ``V`` is the expectile of (IQL's choice, min of its two target heads), so ``A > 0``
means "above the expectile" of exactly the quantity ``V`` estimates and the binary weights ``1[A > 0]``
select the top ``1 - expectile`` share of actions in expectation; ``mean`` (all K target heads) is the
less pessimistic option.

Weighting (``weighting``): ``exp`` (AWR), ``binary`` (``1[A > 0]``, the paper's online option) or
``uniform`` (``w = 1``: behaviour cloning); ``online_weighting`` (null: the same) switches it for the
online phase, e.g. ``exp`` offline and ``binary`` online (each weighting is its own variant of the fused
update). With ``uniform`` the critic and value losses are not computed at all (that variant of the update
steps only the actor): under uniform weights they cannot change
a single actor gradient, so BC gets the same batches, the same number of actor steps and the same learning
rate as AAWR and AWR, only without the cost of critics it never reads (configs/aawr/drl-ActiveSearch-v0-bc.yaml
also sets ``critic_obs: policy``, so nothing privileged is needed or stored). Symmetric AWR (the paper's baseline) is
this code with ``critic_obs: policy``.

Demonstrations (``demos``: a file of :mod:`envs.tasks.demos`) fill a demo replay buffer; offline updates
sample it alone, online updates draw ``round(demo_fraction * batch_size)`` rows of each batch from it
(:class:`drl.storage.replay.MixedSampler`) and the rest from the online replay. Without demos AAWR trains
online only (``learning_starts`` gives a uniform warm-up); BC (``weighting: uniform``) or
``demo_fraction: 1`` without demos is refused by :meth:`AAWR.load_demos`.

The policy is a Gaussian on ``R^A`` with mean ``tanh(mu(z))`` in ``(-1, 1)^A`` and log-std ``clamp(.., -5, 2)``
(both from one MLP); acting samples it and clamps to ``[-1, 1]`` (the replay stores the clamped action),
the deterministic action is the mean. Demo actions at the bounds: the log-density is the Gaussian's
own at ``a``, finite for every ``a`` including ``+-1`` (a tanh-squashed density would need
``atanh(+-1) = inf`` there and blow up on demos recorded against the action limits); demo actions are
normalised with the replay's affine map and clamped into ``[-1, 1]`` (what the env does to them).

One Adam over all losses (official) is one Adam per parameter group here
(:class:`drl.agents.off_policy_base.FusedUpdate`: per coordinate the same steps, all groups step together);
the gradient of the summed loss is clipped to a global norm of ``max_grad_norm`` (10) first, as officially.
Not implemented: a history window of policy observations (the policy reads the current ``z`` only).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from drl.agents.off_policy_base import OffPolicyAgent, OffPolicyConfig
from drl.config import MAX_STEPS, PATH, TrainConfig, check, check_range
from drl.nn.critics import EnsembleMLP, QEnsemble, td_critic_loss

__all__ = ["AAWRConfig", "AAWR", "expectile_loss", "awr_weights", "gaussian_log_prob", "LOG_STD_MIN",
           "LOG_STD_MAX"]

LOG_STD_MIN = -5.0  # IQL's clamp of the policy's log-std
LOG_STD_MAX = 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass
class AAWRConfig(OffPolicyConfig):
    """AAWR hyperparameters (defaults: the official AAWR code's, see the module docstring)."""

    learning_starts: int = 0  # the (pre-trained) policy acts from the first online step
    tau: float = 0.01  # Polyak rate of the target Q heads ...
    target_update_interval: int = 2  # ... applied every this many updates
    num_q: int = 5
    num_q_target_pair: int = 2
    critic_obs: str = "critic"  # "policy": symmetric AWR
    expectile: float = 0.7  # V is this expectile of the target Q (0.5: the mean, SARSA-like)
    beta: float = 1.0 / 3.0  # temperature: w = exp(A / beta)
    max_weight: float = 100.0  # w is clipped to at most this
    weighting: Literal["exp", "binary", "uniform"] = "exp"  # uniform: behaviour cloning
    online_weighting: Literal["exp", "binary", "uniform"] | None = None  # online phase; null: weighting
    max_grad_norm: float | None = 10.0  # the official code's clip of the global gradient norm
    advantage_q: Literal["min", "mean"] = "min"  # the target Q in A: the random-pair min, or the mean of all heads
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    # demonstrations (envs/tasks/demos.py format); null: none (pure online; BC needs them)
    demos: str | None = field(default=None, metadata=PATH)
    demo_fraction: float = 0.5  # share of each online batch drawn from the demos (RLPD-style)
    offline_updates: int = 20_000  # gradient steps on demos only before the first env step
    offline_log_interval: int = 1_000  # offline gradient steps per metrics row (and latest.pt)

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check_range(self.target_update_interval, f"{prefix}.target_update_interval", 1, MAX_STEPS)
        check(0.0 < self.expectile < 1.0, f"{prefix}.expectile", f"must be in (0, 1), got {self.expectile}")
        check_range(self.beta, f"{prefix}.beta", 0.0, 1e30, low_open=True)
        check_range(self.max_weight, f"{prefix}.max_weight", 0.0, 1e30, low_open=True)
        check_range(self.demo_fraction, f"{prefix}.demo_fraction", 0.0, 1.0)
        check_range(self.offline_updates, f"{prefix}.offline_updates", 0, MAX_STEPS)
        check_range(self.offline_log_interval, f"{prefix}.offline_log_interval", 1, MAX_STEPS)
        check(self.critic_type == "mse", f"{prefix}.critic_type", f"AAWR's IQL critics are scalar ('mse'), got "
              f"{self.critic_type!r}")
        check(self.demos is None or (isinstance(self.demos, str) and self.demos != ""), f"{prefix}.demos",
              f"must be the path of a demo file (drl demos ENV --out FILE) or null, got {self.demos!r}")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric L2 (Kostrikov et al. 2022, Eq. 5): ``mean(|expectile - 1(diff < 0)| diff^2)``.

    ``diff = Q'(s, a) - V(s)`` ``[B]``: residuals where Q is above V weigh ``expectile``, below ``1 - expectile``.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def awr_weights(advantages: torch.Tensor, beta: float, max_weight: float,
                weighting: Literal["exp", "binary", "uniform"]) -> torch.Tensor:
    """Per-sample regression weights ``[B]`` from ``advantages`` ``[B]`` (no gradient flows through them).

    ``exp``: ``min(exp(A / beta), max_weight)`` (AWR, Peng et al. 2019, Eq. 7; computed as
    ``exp(min(A / beta, log max_weight))``, so a large ``A`` never overflows to inf); ``binary``:
    ``1[A > 0]``; ``uniform``: 1 (behaviour cloning).
    """
    advantages = advantages.detach()
    if weighting == "exp":
        return torch.exp(torch.clamp(advantages / beta, max=math.log(max_weight)))
    if weighting == "binary":
        return (advantages > 0).to(advantages.dtype)
    return torch.ones_like(advantages)


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(a; mean, exp(log_std)^2)`` summed over the action axis: ``[B, A] -> [B]`` (finite at ``a = +-1``)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(-1)


class AAWR(OffPolicyAgent):
    """AAWR / symmetric AWR / BC: IQL critics on ``critic_obs``, an advantage-weighted Gaussian policy on ``actor_obs``.

    Parameter groups (one flat vector, in this order): ``critic`` (a K-head :class:`QEnsemble`), ``value``
    (V), ``actor``. The target is a copy of ``critic`` (Polyak ``tau`` every ``target_update_interval``
    updates). See :class:`drl.agents.off_policy_base.OffPolicyAgent` for the constructor; demonstrations
    are loaded by :meth:`load_demos` (the offline-to-online runner calls it before training).

    What :class:`drl.runners.offline_to_online.OfflineToOnlineRunner` calls besides the off-policy
    contract: :meth:`load_demos`, :meth:`offline_update`; :meth:`update` draws ``demo_fraction`` of each
    batch from the demos (:class:`MixedSampler`).

    Raises:
        TypeError: a non-Box action space ("AAWR needs a Box action space; for Discrete actions use: ppo").
    """

    name = "AAWR"
    config_class = AAWRConfig

    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict]:
        cfg: AAWRConfig = self.cfg
        critic = QEnsemble(critic_dim, action_dim, cfg.critic_hidden, cfg.num_q, 1, cfg.activation, cfg.layer_norm)
        value = EnsembleMLP(critic_dim, cfg.critic_hidden, 1, 1, cfg.activation, cfg.layer_norm)
        actor = EnsembleMLP(actor_dim, cfg.actor_hidden, 2 * action_dim, 1, cfg.activation, cfg.layer_norm)
        self.critic, self.value, self.actor = critic, value, actor
        nets = nn.ModuleDict({"critic": critic, "value": value, "actor": actor})
        target = nn.ModuleDict({"critic": copy.deepcopy(critic)})
        return nets, {"critic": cfg.lr("critic"), "value": cfg.lr("critic"), "actor": cfg.lr("actor")}, target

    # --- the policy -------------------------------------------------------------------------
    def _mean_log_std(self, params: list[torch.Tensor], obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Actor: ``obs[B, D] -> (mean[B, A] in (-1, 1), log_std[B, A] in [-5, 2])``."""
        mu, log_std = self.actor.apply_params(params, obs).squeeze(0).chunk(2, dim=-1)
        return torch.tanh(mu), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _policy_action(self, actor_obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        mean, log_std = self._mean_log_std(self.actor.own_params(), actor_obs)
        if deterministic:
            return mean
        return (mean + log_std.exp() * self.normal(tuple(mean.shape))).clamp(-1.0, 1.0)

    def _draw_noise(self, batch: dict[str, torch.Tensor]) -> None:
        """Nothing: every loss reads the data's actions (no sampled action, no target noise)."""

    # --- the losses -------------------------------------------------------------------------
    def _target_q(self, target: list[torch.Tensor], obs: torch.Tensor, actions: torch.Tensor,
                  heads: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min over the drawn target heads [B], mean over all target heads [B])`` at the data's ``(s, a)``."""
        all_heads = self.critic.q(target, obs, actions).squeeze(-1)  # [K, B]
        drawn = all_heads if heads is None else all_heads.index_select(0, heads)  # [M, B]
        return drawn.min(dim=0).values, all_heads.mean(dim=0)

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: AAWRConfig = self.cfg
        obs_actor, obs_critic = batch[f"obs/{cfg.actor_obs}"], batch[f"obs/{cfg.critic_obs}"]
        actions = batch["actions"]
        mean, log_std = self._mean_log_std(params["actor"], obs_actor)
        log_prob = gaussian_log_prob(actions, mean, log_std)  # [B]
        stats: dict[str, torch.Tensor] = {"log_prob": log_prob.detach().mean(), "std": log_std.detach().exp().mean()}
        if variant == "uniform":  # behaviour cloning: maximise E[log pi(a|z)]; no critic is read
            actor_loss = -log_prob.mean()
            stats["actor_loss"] = actor_loss.detach()
            return actor_loss, stats

        with torch.no_grad():
            q_min, q_mean = self._target_q(target["critic"], obs_critic, actions, batch.get("heads"))
        # V(s): expectile of the random-pair min of the target heads (IQL Eq. 5)
        v = self.value.apply_params(params["value"], obs_critic).view(-1)  # [B]
        value_loss = expectile_loss(q_min - v, cfg.expectile)
        # Q_k(s, a): TD toward y = R + d V(s'), V read detached (IQL Eq. 6); d = gamma^m (1 - terminated)
        next_v = self.value.apply_params(detached["value"], batch[f"next_obs/{cfg.critic_obs}"]).view(1, -1, 1)
        out = self.critic.q(params["critic"], obs_critic, actions)  # [K, B, 1]
        critic_loss = td_critic_loss(out, next_v, batch["returns"], batch["discounts"])
        # policy: maximise E[w log pi(a|z)], w = min(exp(A / beta), max_weight), A = Q'(s, a) - V(s)
        advantages = (q_min if cfg.advantage_q == "min" else q_mean) - v.detach()
        weights = awr_weights(advantages, cfg.beta, cfg.max_weight, variant)  # variant: exp | binary
        actor_loss = -(weights * log_prob).mean()
        stats |= {"critic_loss": critic_loss.detach(), "value_loss": value_loss.detach(),
                  "actor_loss": actor_loss.detach(), "q": out.detach().mean(), "v": v.detach().mean(),
                  "advantage": advantages.mean(), "weight": weights.mean(),
                  "weight_clipped": (advantages / cfg.beta >= math.log(cfg.max_weight)).float().mean()}
        return critic_loss + value_loss + actor_loss, stats

    def _update_once(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One fused step; the weighting (the step's variant) is ``weighting`` on demos only (the offline
        phase), ``online_weighting`` (when set) on mixed batches."""
        cfg = self.cfg
        weighting = cfg.weighting if self._offline or cfg.online_weighting is None else cfg.online_weighting
        if weighting == "uniform":
            return self.step(batch, "uniform", ("actor",), polyak=False)
        polyak = (self.num_updates + 1) % cfg.target_update_interval == 0
        return self.step(batch, weighting, None, polyak=polyak)

    # --- demonstrations ---------------------------------------------------------------------
    def load_demos(self) -> int:
        """:meth:`OffPolicyAgent.load_demos`; without demos, BC (``weighting: uniform``) and ``demo_fraction: 1``
        are refused (ConfigError naming ``algo.demos``)."""
        cfg = self.cfg
        if cfg.demos is None:  # checked here, not in validate(): a config file may leave the demos to --demos
            check(cfg.weighting != "uniform", "algo.demos", "behaviour cloning (weighting: uniform) needs "
                  "demonstrations: set algo.demos (drl train ... --demos FILE)")
            check(cfg.demo_fraction < 1.0, "algo.demos", f"demo_fraction {cfg.demo_fraction} draws every batch "
                  "from demonstrations: set algo.demos (drl train ... --demos FILE)")
        return super().load_demos()
