"""On-policy residual RL: PPO learning a bounded correction on a frozen base policy (the comparison of ResFiT,
Ankile et al. 2025, for :mod:`drl.agents.residual`).

All of the residual's math is here; PPO's (clipped surrogate, GAE, value loss) is :mod:`drl.agents.ppo`'s,
unchanged. In normalised action units (``a_norm = (a - center) / scale``):

* the base ``a_b = clamp(base(obs) in norm. units, -1, 1)`` (:mod:`drl.base_policy`; frozen, stored with each
  step as ``base_actions``);
* PPO's Gaussian policy reads ``[z, a_b]`` (``z`` its obs group, normalised with ``normalize_obs``) and draws
  ``u ~ N(mu(z, a_b), sigma^2)``; the mean layer starts at zero, so the deterministic policy starts exactly at
  the base;
* the executed action is ``a = clamp(a_b + residual_scale * u, -1, 1)`` (sent as ``center + scale * a``). The
  clamp is part of the environment to PPO: the log-probabilities and the ratio are those of ``u``, as PPO's
  own action clipping is.

Feed-forward only (a recurrent PPO is refused); the numba actor is not used (its kernel knows no base input).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import gymnasium as gym
import torch

from drl.agents.off_policy_base import box_action_space
from drl.agents.ppo import PPO, PPOConfig
from drl.base_policy import BasePolicy, load_base_policy
from drl.config import PATH, TrainConfig, check, check_range
from drl.nn.deploy import CallActor, DeployedActor, FrozenNormalizer, base_group_check
from drl.nn.mlp import flat_dim
from drl.storage import Field

__all__ = ["PPOResidualConfig", "PPOResidual"]


@dataclass
class PPOResidualConfig(PPOConfig):
    """PPO's hyperparameters plus the base and the correction's bound."""

    base: str | None = field(default=None, metadata=PATH)  # required: a drl run folder or an SB3 .zip
    residual_scale: float = 0.1  # a = clamp(a_b + residual_scale * u, -1, 1), normalised units
    log_std_init: float = 0.0  # sigma = 1 at the start: exploration of +-residual_scale around the base

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check(self.base is None or (isinstance(self.base, str) and self.base != ""), f"{prefix}.base",
              f"must be a drl run folder or a Stable-Baselines3 .zip, got {self.base!r}")
        check_range(self.residual_scale, f"{prefix}.residual_scale", 0.0, 2.0, low_open=True,
                    what="normalised action units; 2 spans the whole range")
        check(self.rnn_type == "none", f"{prefix}.rnn_type", "the PPO residual is feed-forward: set it to 'none'")
        check(not self.squash_actions, f"{prefix}.squash_actions", "the residual is bounded by residual_scale and "
              "the clamp; set it to false")


class PPOResidual(PPO):
    """PPO on ``[obs, base action]`` whose action is a correction of the base (module docstring). Constructor as
    :class:`PPO`'s; the base is loaded from ``algo.base`` first.

    Raises:
        ConfigError: ``algo.base`` not set; BasePolicyError (a ConfigError): a bad base file or mismatched spaces.
        TypeError: a non-Box action space.
    """

    name = "PPO-residual"
    config_class = PPOResidualConfig
    extra_fields = ("base_actions",)

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: PPOResidualConfig,
                 num_envs: int, device: torch.device, generator: torch.Generator | None = None,
                 total_steps: int | None = None):
        box = box_action_space(action_space, self.name)
        check(cfg.base is not None, "algo.base", "the residual needs a frozen base policy: a drl run folder or a "
              "Stable-Baselines3 .zip (drl train ppo-residual --base PATH)")
        self.base: BasePolicy = load_base_policy(cfg.base, observation_space, action_space, num_envs, device,
                                                 cfg.actor_obs)
        self.action_dim = flat_dim(box.shape)
        low = torch.as_tensor(box.low, dtype=torch.float32).flatten().to(device)
        high = torch.as_tensor(box.high, dtype=torch.float32).flatten().to(device)
        self.action_center, self.action_scale = (high + low) / 2, (high - low) / 2
        super().__init__(observation_space, action_space, cfg, num_envs, device, generator, total_steps)
        with torch.no_grad():  # mu = 0 at the start: the deterministic action is the base's
            self.model.head.mean.weight.zero_()
            self.model.head.mean.bias.zero_()

    def _actor_dim(self, obs_dim: int) -> int:
        return obs_dim + self.action_dim  # [z, a_b]

    def _make_numba_actor(self) -> None:
        return None

    def storage_fields(self) -> dict[str, Field]:
        """PPO's fields plus the base's normalised action at each step."""
        return super().storage_fields() | {"base_actions": Field((self.action_dim,))}

    def _features(self, mb: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        """The actor reads ``[z, a_b]``; the critic its obs group, as PPO's."""
        features = super()._features(mb, role)
        return torch.cat([features, mb["base_actions"]], dim=-1) if role == "actor" else features

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(env_action [N, A], record)``: ``clamp(a_b + residual_scale * u, -1, 1)`` in env units; the record
        holds the normalised obs groups, ``u`` (``actions``), its ``log_probs`` and ``base_actions``."""
        groups = self._normalize(self._groups_of(obs, self.groups), update=update_stats)
        base = ((self.base(obs).to(self.device) - self.action_center) / self.action_scale).clamp(-1.0, 1.0)
        u, log_prob = self.model.act(torch.cat([groups[self.cfg.actor_obs], base], dim=-1), deterministic)
        action = (base + self.cfg.residual_scale * u).clamp(-1.0, 1.0)
        record = {f"obs/{g}": x for g, x in groups.items()} | {"actions": u, "log_probs": log_prob,
                                                               "base_actions": base}
        return torch.addcmul(self.action_center, self.action_scale, action), record

    def export_actor(self) -> DeployedActor:
        """Base and residual in one traceable module: raw ``actor_obs`` ``x [N, D]`` -> ``center + scale *
        clamp(a_b + residual_scale * mu([norm(x), a_b]), -1, 1)`` with ``a_b = clamp((base(x) - center) / scale,
        -1, 1)`` and ``mu`` the Gaussian's mean; the base is its run's own exported actor (normaliser inside).

        Raises:
            ExportError: the base cannot be exported (an SB3 model, a chunked or recurrent policy), or it reads
                another obs group than the residual's actor.
        """
        group, model = self.cfg.actor_obs, self.model
        base = base_group_check(self.base.export_actor(), group)
        normalizer = FrozenNormalizer(self.obs_normalizers[group] if self.cfg.normalize_obs else None)
        center, scale = self.action_center, self.action_scale

        def actor(x: torch.Tensor) -> torch.Tensor:
            base_action = ((base(x) - center) / scale).clamp(-1.0, 1.0)
            u = model.act(torch.cat([normalizer(x), base_action], dim=-1), deterministic=True)[0]
            return torch.addcmul(center, scale, (base_action + self.cfg.residual_scale * u).clamp(-1.0, 1.0))

        return DeployedActor(FrozenNormalizer(None), CallActor(actor, base, normalizer, model.actor_body, model.head),
                             flat_dim(self.group_shapes[group]), group)

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """PPO's; the base's per-env state restarts where an episode ended."""
        self.base.end_episodes(terminated | truncated)
        return super().record_outcome(record, reward, terminated, truncated, final_obs)

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """An evaluation's envs get base state of their own; the training state is back on exit."""
        with self.base.fresh_memory(num_envs) as end_episodes:
            yield end_episodes

    def on_env_reset(self) -> None:
        super().on_env_reset()
        self.base.reset()
