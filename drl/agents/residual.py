"""Residual off-policy RL on a frozen base policy (ResFiT: Ankile et al. 2025, "Residual Off-Policy RL for
Finetuning Behavior Cloning Policies").

All of the residual's math is in this file; the TD3 learner it extends is :mod:`drl.agents.td3`, the base
:mod:`drl.base_policy`. In normalised action units (``[-1, 1]^A``, ``a_norm = (a - center) / scale``):

* the base ``a_b = clamp(base(obs) in norm. units, -1, 1)``, frozen (no gradient, never in the optimiser);
* the residual actor ``r(z, a_b) = residual_scale * tanh(MLP([z, a_b]))`` (``z`` the actor group, normalised
  with ``normalize_obs``); the MLP's last layer starts at zero, so ``r = 0`` and training starts exactly at
  the base;
* the executed action ``a = clamp(a_b + r(z, a_b) + sigma eps, -1, 1)`` with exploration noise ``sigma``
  (``exploration_noise``; 0 when deterministic), sent to the env as ``center + scale * a``;
* the learner is TD3's on the executed action: a ``num_q``-head Q ensemble (LayerNorm with ``layer_norm``),
  target ``y = R^(n) + gamma^n (1 - d) min_{m in M} Q'_m(s', a')`` over a random pair ``M``
  (``num_q_target_pair``) with ``a' = clamp(a'_b + r'(z', a'_b) + clip(sigma' eps, -c, c), -1, 1)`` (target
  policy smoothing: ``target_policy_noise``, ``target_noise_clip``), n-step returns, ``updates_per_step``
  (UTD) gradient steps per env step; the actor maximises the mean over the heads of
  ``Q(s, clamp(a_b + r(z, a_b), -1, 1))``, every ``policy_delay``-th update, and not at all during the first
  ``critic_warmup_updates`` updates (critic-only warm-up);
* batches are ``demo_fraction`` (0.5) demonstrations and the rest online transitions (RLPD) when ``demos``
  is set (their rewards are the file's: record them with the reward the run uses);
* the replay's warm-up (the first ``learning_starts`` env steps) acts with the base plus uniform noise
  ``U(-warmup_noise, warmup_noise)`` (the off-policy runner's warm-up hook :meth:`Residual.random_act`).

The next state's base action ``a'_b`` is stored with each transition, computed once when the transition is
recorded: the action the base will execute at the true next obs if the episode goes on
(:meth:`drl.base_policy.BasePolicy.peek`; a chunked base's temporal ensemble continues, so ``a'_b`` of step t
is ``a_b`` of step t + 1). A demo file's ``a_b`` and ``a'_b`` are the base's as if it had driven each demo
episode (:meth:`drl.base_policy.BasePolicy.along_episodes`).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from drl.agents.td3 import TD3, TD3Config, smoothed_target_action
from drl.base_policy import BasePolicy, load_base_policy
from drl.config import MAX_STEPS, PATH, TrainConfig, check, check_range
from drl.nn.critics import EnsembleMLP, QEnsemble, q_values, td_critic_loss
from drl.nn.deploy import CallActor, DeployedActor, FrozenNormalizer, base_group_check
from drl.storage import Field

__all__ = ["ResidualConfig", "Residual", "residual_action", "zero_last_layer"]


@dataclass
class ResidualConfig(TD3Config):
    """Residual TD3 hyperparameters (defaults: ResFiT's learner, see the module docstring)."""

    base: str | None = field(default=None, metadata=PATH)  # required: a drl run folder or an SB3 .zip
    residual_scale: float = 0.1  # bound of the correction, normalised action units (ResFiT: 0.1-0.2)
    critic_warmup_updates: int = 1000  # critic-only gradient steps before the first actor update
    warmup_noise: float = 0.05  # half-width of the uniform noise on the base during the replay warm-up
    learning_starts: int = 1000  # env steps of base + noise before any update
    updates_per_step: float = 4.0  # UTD
    n_step: int = 3
    num_q: int = 10
    num_q_target_pair: int = 2
    layer_norm: bool = True
    learning_rate: float = 3e-4
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    exploration_noise: float = 0.05
    # demonstrations (envs/tasks/demos.py format), mixed into each batch; null: online batches only
    demos: str | None = field(default=None, metadata=PATH)
    demo_fraction: float = 0.5
    offline_updates: int = 0  # gradient steps on the demos alone before the first env step (the runner's)
    offline_log_interval: int = 1_000

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check(self.base is None or (isinstance(self.base, str) and self.base != ""), f"{prefix}.base",
              f"must be a drl run folder or a Stable-Baselines3 .zip, got {self.base!r}")
        check_range(self.residual_scale, f"{prefix}.residual_scale", 0.0, 2.0, low_open=True,
                    what="normalised action units; 2 spans the whole range")
        check_range(self.critic_warmup_updates, f"{prefix}.critic_warmup_updates", 0, MAX_STEPS)
        check_range(self.warmup_noise, f"{prefix}.warmup_noise", 0.0, 2.0)
        check_range(self.demo_fraction, f"{prefix}.demo_fraction", 0.0, 1.0)
        check_range(self.offline_updates, f"{prefix}.offline_updates", 0, MAX_STEPS)
        check_range(self.offline_log_interval, f"{prefix}.offline_log_interval", 1, MAX_STEPS)
        check(self.critic_type == "mse", f"{prefix}.critic_type", f"the residual's critic is scalar ('mse'), got "
              f"{self.critic_type!r}")


def zero_last_layer(net: EnsembleMLP) -> None:
    """Zero the output layer's weight and bias of ``net``: its output is 0 for every input at the start."""
    last = len(net.widths) - 2
    with torch.no_grad():
        getattr(net, f"weight{last}").zero_()
        getattr(net, f"bias{last}").zero_()


def residual_action(base_action: torch.Tensor, residual_out: torch.Tensor, residual_scale: float) -> torch.Tensor:
    """``clamp(a_b + residual_scale * tanh(residual_out), -1, 1)``: ``[B, A]`` normalised units."""
    return (base_action + residual_scale * torch.tanh(residual_out)).clamp(-1.0, 1.0)


class Residual(TD3):
    """Residual TD3 on a frozen base (module docstring). Constructor as :class:`OffPolicyAgent`'s; the base is
    loaded from ``algo.base`` first (:func:`drl.base_policy.load_base_policy`).

    Raises:
        BasePolicyError: (a ConfigError) the base file is bad or its spaces do not match the env's.
    """

    name = "Residual"
    config_class = ResidualConfig
    extra_fields = ("base_actions",)
    extra_next_fields = ("next_base_actions",)

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: ResidualConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        # checked here, not in validate(): a config file may leave the base to --base
        check(cfg.base is not None, "algo.base", "the residual needs a frozen base policy: a drl run folder or a "
              "Stable-Baselines3 .zip (drl train residual --base PATH)")
        self.base: BasePolicy = load_base_policy(cfg.base, observation_space, action_space, num_envs, device,
                                                 cfg.actor_obs)
        super().__init__(observation_space, action_space, cfg, num_envs, device, generator, total_steps)

    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict]:
        cfg: ResidualConfig = self.cfg
        critic = QEnsemble(critic_dim, action_dim, cfg.critic_hidden, cfg.num_q, 1, cfg.activation, cfg.layer_norm)
        actor = EnsembleMLP(actor_dim + action_dim, cfg.actor_hidden, action_dim, 1, cfg.activation, cfg.layer_norm)
        zero_last_layer(actor)  # r = 0 at the start: the executed action is the base's
        nets = nn.ModuleDict({"critic": critic, "actor": actor})
        self.critic, self.actor = critic, actor
        self.actor_heads = None  # the actor maximises the mean over all heads
        return nets, {"critic": cfg.lr("critic"), "actor": cfg.lr("actor")}, copy.deepcopy(nets)

    # --- acting -----------------------------------------------------------------------------
    def _normalized_base(self, env_action: torch.Tensor) -> torch.Tensor:
        """The base's env-unit action ``[N, A]`` -> normalised units, clamped into ``[-1, 1]``."""
        return ((env_action.to(self.device) - self.action_center) / self.action_scale).clamp(-1.0, 1.0)

    def _mu(self, params: list[torch.Tensor], obs: torch.Tensor, base_action: torch.Tensor) -> torch.Tensor:
        """``clamp(a_b + scale * tanh(MLP([z, a_b])), -1, 1)``: ``[B, D], [B, A] -> [B, A]``."""
        out = self.actor.apply_params(params, torch.cat([obs, base_action], dim=-1)).squeeze(0)
        return residual_action(base_action, out, self.cfg.residual_scale)

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(env_action [N, A], record)``: base + residual (+ exploration noise unless ``deterministic``); the
        record holds the normalised executed action and the base's (``base_actions``)."""
        cfg: ResidualConfig = self.cfg
        groups = self._groups_of(obs)
        base = self._normalized_base(self.base(obs))
        action = self._mu(self.actor.own_params(), self._normalized(cfg.actor_obs, groups[cfg.actor_obs]), base)
        if not deterministic and cfg.exploration_noise > 0:
            action = (action + cfg.exploration_noise * self.normal(tuple(action.shape))).clamp(-1.0, 1.0)
        record = self._record(groups, action, update_stats and not deterministic)
        record["base_actions"] = base
        return self.env_action(action), record

    def export_actor(self) -> DeployedActor:
        """Base and residual in one traceable module: raw ``actor_obs`` ``x [N, D]`` -> ``center + scale *
        clamp(a_b + residual_scale * tanh(MLP([norm(x), a_b])), -1, 1)`` with ``a_b = clamp((base(x) - center) /
        scale, -1, 1)``, the base being its run's own exported actor (its own normaliser inside).

        Raises:
            ExportError: the base cannot be exported (an SB3 model, a chunked or recurrent policy), or it reads
                another obs group than the residual's actor.
        """
        group = self.cfg.actor_obs
        base = base_group_check(self.base.export_actor(), group)
        normalizer = FrozenNormalizer(self.obs_normalizers[group] if self.cfg.normalize_obs else None)

        def actor(x: torch.Tensor) -> torch.Tensor:
            base_action = self._normalized_base(base(x))
            return self.env_action(self._mu(self.actor.own_params(), normalizer(x), base_action))

        return DeployedActor(FrozenNormalizer(None), CallActor(actor, base, normalizer, self.actor),
                             self.obs_dims[group], group)

    @torch.inference_mode()
    def random_act(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The replay warm-up's action: ``clamp(a_b + U(-warmup_noise, warmup_noise), -1, 1)``."""
        groups = self._groups_of(obs)
        base = self._normalized_base(self.base(obs))
        uniform = torch.rand(tuple(base.shape), generator=self.generator, device=self.generator.device)
        action = (base + self.cfg.warmup_noise * (2.0 * uniform.to(self.device) - 1.0)).clamp(-1.0, 1.0)
        record = self._record(groups, action, True)
        record["base_actions"] = base
        return self.env_action(action), record

    def storage_fields(self) -> dict[str, Field]:
        """TD3's transition plus the base's action at obs and at the true next obs (normalised)."""
        return super().storage_fields() | {"base_actions": Field((self.action_dim,)),
                                           "next_base_actions": Field((self.action_dim,))}

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """TD3's, plus ``next_base_actions`` (what the base executes at the true next obs if the episode goes on:
        :meth:`~drl.base_policy.BasePolicy.peek`); then the base's per-env state restarts where an episode ended."""
        record = super().record_outcome(record, reward, terminated, truncated, final_obs)
        record["next_base_actions"] = self._normalized_base(self.base.peek(final_obs))
        self.base.end_episodes(terminated | truncated)
        return record

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """An evaluation's envs get base state of their own (a chunked base); the training state is back on exit."""
        with self.base.fresh_memory(num_envs) as end_episodes:
            yield end_episodes

    def on_env_reset(self) -> None:
        """Every training env restarts: so does the base's per-env state."""
        self.base.reset()

    def _demo_extra_rows(self, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The base's actions at the demos' obs and next obs, as if it had driven each demo episode."""
        obs, next_obs = ({key.split("/", 1)[1]: value.float().to(self.device) for key, value in data.items()
                          if key.startswith(f"{part}/")} for part in ("obs", "next_obs"))
        if not self.grouped_obs:
            obs, next_obs = obs["policy"], next_obs["policy"]
        actions, next_actions = self.base.along_episodes(obs, next_obs, data["episode_index"].to(self.device))
        return {"base_actions": self._normalized_base(actions),
                "next_base_actions": self._normalized_base(next_actions)}

    # --- learning ---------------------------------------------------------------------------
    def _update_once(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Critic only during the warm-up (``critic_warmup_updates``), then TD3's delayed actor updates."""
        if self.num_updates < self.cfg.critic_warmup_updates:
            return self.step(batch, "critic", ("critic",), polyak=True)
        return super()._update_once(batch)

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: ResidualConfig = self.cfg
        obs_critic = batch[f"obs/{cfg.critic_obs}"]

        # target: y = R + d min_{m in M} Q'_m(s', a'), a' = smoothed (base' + target residual'); no gradient
        next_action = smoothed_target_action(
            self._mu(target["actor"], batch[f"next_obs/{cfg.actor_obs}"], batch["next_base_actions"]),
            batch["target_noise"], cfg.target_policy_noise, cfg.target_noise_clip)
        target_out = self.critic.q(target["critic"], batch[f"next_obs/{cfg.critic_obs}"], next_action,
                                   batch.get("heads"))
        out = self.critic.q(params["critic"], obs_critic, batch["actions"])
        critic_loss = td_critic_loss(out, target_out, batch["returns"], batch["discounts"], None, None)
        stats = {"critic_loss": critic_loss.detach(), "q": q_values(out.detach(), None).mean()}
        if variant == "critic":
            return critic_loss, stats

        # delayed actor: maximise the heads' mean Q(s, clamp(a_b + r(z, a_b))), the critic's weights detached
        action = self._mu(params["actor"], batch[f"obs/{cfg.actor_obs}"], batch["base_actions"])
        actor_loss = -q_values(self.critic.q(detached["critic"], obs_critic, action), None).mean()
        stats["actor_loss"] = actor_loss.detach()
        stats["residual"] = (action.detach() - batch["base_actions"]).abs().mean()
        return critic_loss + actor_loss, stats

