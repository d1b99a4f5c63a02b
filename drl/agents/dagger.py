"""DAgger-style student distillation (Ross et al. 2011; the policy distillation of TacSL, Akinola et al. 2024).

A student actor on the partial observation (``actor_obs: policy``) learns to imitate the actor of a
trained teacher run (which reads the privileged group, e.g. an ``aac`` run with ``actor_obs: critic``).

Each rollout step (iteration ``i``, counted from 0):

* the expert's action ``a*`` (the teacher's deterministic action) is computed and ALWAYS recorded as
  the label, with the student's observation;
* the executed action is ``a*`` with probability ``beta_i``, else the student's own action (each
  env, each step, an independent draw from the agent's generator);
* ``beta_i = max(beta_min, beta_init * beta_decay**i)`` (Ross et al. 2011, Sec. 3: ``beta_i = p**(i-1)``
  with ``beta_1 = 1``: the first rollout is pure expert).

After the rollout its ``(obs, a*)`` pairs join the aggregated dataset (a ring buffer of
``buffer_size`` pairs) and the student takes ``num_updates`` Adam steps on minibatches drawn uniformly
from all of it: mean squared error on its mean (Box actions, in units normalised to ``[-1, 1]`` by
the action bounds) or cross-entropy on its logits (Discrete actions).

The student acts deterministically (its mean clipped to the bounds, or its argmax): it is a
regressor, as in DAgger, not a stochastic policy. Evaluation runs the student alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn
from torch.nn import functional as F

from drl.agents.aacd import load_teacher, teacher_input_dims
from drl.config import MAX_STEPS, PATH, ConfigError, TrainConfig, check, check_range
from drl.nn import RunningMeanStd, make_mlp
from drl.nn.deploy import CallActor, DeployedActor, FrozenNormalizer
from drl.nn.mlp import flat_dim, group_space
from drl.optim import TrainStep
from drl.storage import Field, RolloutBuffer

__all__ = ["DAggerConfig", "DAgger"]

MAX_WIDTH = 65_536


@dataclass
class DAggerConfig:
    """DAgger hyperparameters (rollout sizes as PPO's: the on-policy runner reads ``num_steps``)."""

    num_steps: int = 64  # rollout length per env (one aggregation round = one iteration)
    buffer_size: int = 200_000  # (obs, expert action) pairs kept in the aggregated dataset (ring buffer)
    num_updates: int = 50  # Adam steps on the aggregated dataset after each rollout
    minibatch_size: int = 256
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 1.0
    beta_init: float = 1.0  # probability of executing the expert's action in the first rollout
    beta_decay: float = 0.5  # per iteration: beta_i = max(beta_min, beta_init * beta_decay**i)
    beta_min: float = 0.0
    actor_hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "silu"] = "tanh"
    actor_obs: str = "policy"  # obs group the student reads
    normalize_obs: bool = False
    # a drl run folder whose actor is the expert (required; --teacher RUN_DIR)
    teacher: str | None = field(default=None, metadata=PATH)
    teacher_checkpoint: Literal["best", "latest"] = "best"

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check_range(self.num_steps, key("num_steps"), 1, MAX_STEPS)
        batch = self.num_steps * train.env.num_envs
        check_range(self.buffer_size, key("buffer_size"), batch, MAX_STEPS,
                    what=f"one rollout, num_steps x num_envs = {batch:,} pairs, must fit")
        check_range(self.num_updates, key("num_updates"), 0, 10**9)
        check_range(self.minibatch_size, key("minibatch_size"), 1, 2**31 - 1)
        check(self.learning_rate > 0, key("learning_rate"), f"must be > 0, got {self.learning_rate}")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, key("max_grad_norm"), "must be > 0 or null")
        check_range(self.beta_init, key("beta_init"), 0.0, 1.0)
        check_range(self.beta_decay, key("beta_decay"), 0.0, 1.0)
        check_range(self.beta_min, key("beta_min"), 0.0, self.beta_init, what="at most beta_init")
        check(all(1 <= w <= MAX_WIDTH for w in self.actor_hidden), key("actor_hidden"),
              f"widths must be in [1, {MAX_WIDTH}], got {self.actor_hidden}")
        check(self.actor_obs.isidentifier(), key("actor_obs"), f"must be an obs group name, got {self.actor_obs!r}")


class DAgger:
    """DAgger agent for the on-policy runner: ``act`` mixes expert and student, ``update`` aggregates and fits.

    Args: as :class:`drl.agents.ppo.PPO` (``generator`` draws the beta mixing and the minibatches).

    Raises:
        ConfigError: no ``teacher``; the teacher cannot be loaded; its action space differs, or it reads
            an obs group this env lacks or has with another width (one message listing the differences).
    """

    config_class = DAggerConfig
    # what update() reports beyond the runner's standard columns (metrics.csv columns)
    metric_columns = ["beta", "expert_fraction", "rollout_loss", "imitation_loss", "grad_norm", "dataset_size"]

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: DAggerConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None,
                 with_teacher: bool = True):
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.action_space = action_space
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.grouped_obs = isinstance(observation_space, gym.spaces.Dict)
        self.obs_dim = flat_dim(group_space(observation_space, cfg.actor_obs, "actor", "DAgger").shape)
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            out_dim, self.label_field = int(action_space.n), Field((), torch.int64)
        elif isinstance(action_space, gym.spaces.Box):
            out_dim = flat_dim(action_space.shape)
            self.label_field = Field((out_dim,))
            low = torch.as_tensor(action_space.low, dtype=torch.float32).flatten().to(self.device)
            high = torch.as_tensor(action_space.high, dtype=torch.float32).flatten().to(self.device)
            self.action_center, self.action_scale = (high + low) / 2, (high - low) / 2
        else:
            raise TypeError(f"DAgger needs a Discrete or Box action space, got {action_space}")
        self.actor = make_mlp(self.obs_dim, cfg.actor_hidden, out_dim, cfg.activation, output_gain=0.01).to(self.device)
        self.train_step = TrainStep(self.actor, self._loss, cfg.learning_rate, cfg.max_grad_norm)
        self.obs_normalizer = RunningMeanStd((self.obs_dim,)).to(self.device)
        # the aggregated dataset: raw observations (normalised when sampled) and expert labels
        self.data_obs = torch.zeros(cfg.buffer_size, self.obs_dim, device=self.device)
        self.data_labels = torch.zeros((cfg.buffer_size, *self.label_field.shape), dtype=self.label_field.dtype,
                                       device=self.device)
        self.data_size = 0
        self.data_pos = 0
        self.iteration = 0  # rollouts aggregated so far: the current rollout's beta is beta_at(iteration)
        self.teacher = self._load_teacher(observation_space) if with_teacher else None

    @classmethod
    def for_evaluation(cls, *args: Any, **kwargs: Any) -> DAgger:
        """The student alone, as :func:`drl.api.load_agent` rebuilds it: no teacher is read (evaluation and
        videos act deterministically), so a trained run evaluates without its teacher's folder."""
        return cls(*args, **kwargs, with_teacher=False)

    def _load_teacher(self, observation_space: gym.Space) -> Any:
        cfg = self.cfg
        if cfg.teacher is None:
            raise ConfigError("config key 'algo.teacher': DAgger imitates the actor of a trained teacher run; give "
                              "--teacher RUN_DIR (e.g. an aac run with algo.actor_obs: critic)")
        teacher, _ = load_teacher(cfg.teacher, cfg.teacher_checkpoint, self.device)
        differences = []
        if teacher.action_space != self.action_space:
            differences.append(f"its action space is {teacher.action_space}, this env's {self.action_space}")
        spaces = observation_space.spaces if self.grouped_obs else {"policy": observation_space}
        for group, width in teacher_input_dims(teacher).items():
            if group not in spaces:
                differences.append(f"it reads obs group '{group}', this env has {list(spaces)}")
            elif flat_dim(spaces[group].shape) != width:
                differences.append(f"its obs group '{group}' has width {width}, this env's "
                                   f"{flat_dim(spaces[group].shape)}")
        if differences:
            raise ConfigError(f"config key 'algo.teacher': teacher run '{cfg.teacher}' does not fit this env: "
                              f"{'; '.join(differences)}")
        return teacher

    # --- the schedule -------------------------------------------------------------------------
    def beta_at(self, iteration: int) -> float:
        """P(expert action executed) in rollout ``iteration``: ``max(beta_min, beta_init * beta_decay**iteration)``."""
        cfg = self.cfg
        return max(cfg.beta_min, cfg.beta_init * cfg.beta_decay**iteration)

    @property
    def beta(self) -> float:
        return self.beta_at(self.iteration)

    # --- acting -------------------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        return {f"obs/{self.cfg.actor_obs}": Field((self.obs_dim,)), "expert_actions": self.label_field,
                "expert_executed": Field((), torch.bool)}

    def _student_obs(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs[self.cfg.actor_obs] if self.grouped_obs else obs
        return (x if x.dim() == 2 else x.flatten(1)).float()

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.obs_normalizer.normalize(x) if self.cfg.normalize_obs else x

    def _to_env(self, output: torch.Tensor) -> torch.Tensor:
        """Student output ``[N, out]`` -> env action: argmax ``[N]``, or ``center + scale * clip(mean, -1, 1)``."""
        if self.discrete:
            return output.argmax(-1)
        return torch.addcmul(self.action_center, self.action_scale, output.clamp(-1.0, 1.0))

    def _label(self, expert_env_action: torch.Tensor) -> torch.Tensor:
        """Expert env action -> regression label (Box: normalised to ``[-1, 1]``; Discrete: the index)."""
        if self.discrete:
            return expert_env_action.reshape(-1).long()
        return (expert_env_action.reshape(expert_env_action.shape[0], -1) - self.action_center) / self.action_scale

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(env_action, record)``. ``deterministic`` (evaluation): the student alone, nothing recorded.

        Otherwise the executed action is the expert's where a ``U(0, 1)`` draw ``< beta``, else the
        student's; the record holds the student's raw obs ``[N, D]``, the expert's label and the mask.
        """
        x = self._student_obs(obs)
        if self.cfg.normalize_obs and update_stats and not deterministic:
            self.obs_normalizer.update(x)
        student = self._to_env(self.actor(self._normalized(x)))
        if deterministic:
            return student, {}
        if self.teacher is None:
            raise RuntimeError("this DAgger student was loaded for evaluation, with no teacher: only "
                               "act(obs, deterministic=True) runs it")
        expert, _ = self.teacher.act(obs, deterministic=True, update_stats=False)
        expert = expert.reshape(student.shape).to(student.dtype)
        draw = torch.rand(x.shape[0], generator=self.generator, device=self.generator.device).to(self.device)
        executed_expert = draw < self.beta
        mask = executed_expert if self.discrete else executed_expert.unsqueeze(-1)
        record = {f"obs/{self.cfg.actor_obs}": x, "expert_actions": self._label(expert),
                  "expert_executed": executed_expert}
        return torch.where(mask, expert, student), record

    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: Any) -> dict[str, torch.Tensor]:
        """DAgger learns from labels, not rewards: the record is complete as :meth:`act` made it."""
        return record

    # --- learning -----------------------------------------------------------------------------
    def _loss(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Cross-entropy on the logits (Discrete) or mean squared error on the mean (Box) of the expert's labels."""
        output = self.actor(mb["obs"])
        if self.discrete:
            loss = F.cross_entropy(output, mb["labels"])
        else:
            loss = (output - mb["labels"]).square().mean()
        return {"loss": loss}

    def _aggregate(self, obs: torch.Tensor, labels: torch.Tensor) -> None:
        """Write ``[M, ...]`` pairs into the ring buffer (the oldest are overwritten once it is full)."""
        rows = (self.data_pos + torch.arange(obs.shape[0], device=self.device)) % self.cfg.buffer_size
        self.data_obs[rows] = obs
        self.data_labels[rows] = labels
        self.data_pos = (self.data_pos + obs.shape[0]) % self.cfg.buffer_size
        self.data_size = min(self.data_size + obs.shape[0], self.cfg.buffer_size)

    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """Aggregate the rollout's ``(obs, expert label)`` pairs, then ``num_updates`` Adam steps on minibatches
        drawn uniformly (with replacement) from the whole dataset. ``progress`` is unused.

        Metrics: ``beta`` (of this rollout), ``expert_fraction`` (of its actions that were the expert's),
        ``rollout_loss`` (the student's loss on this rollout's pairs before the update: DAgger's error on its
        own state distribution), ``imitation_loss`` (mean over the steps), ``dataset_size``, ``grad_norm``.
        """
        cfg = self.cfg
        batch = storage.flat([f"obs/{cfg.actor_obs}", "expert_actions", "expert_executed"])
        obs, labels = batch[f"obs/{cfg.actor_obs}"], batch["expert_actions"]
        with torch.no_grad():
            rollout_loss = self._loss({"obs": self._normalized(obs), "labels": labels})["loss"].item()
        metrics = {"beta": self.beta, "expert_fraction": batch["expert_executed"].float().mean().item(),
                   "rollout_loss": rollout_loss}
        self._aggregate(obs, labels)
        losses, norms = [], []
        for _ in range(cfg.num_updates):
            index = torch.randint(self.data_size, (cfg.minibatch_size,), generator=self.generator,
                                  device=self.generator.device).to(self.device)
            out = self.train_step({"obs": self._normalized(self.data_obs[index]), "labels": self.data_labels[index]})
            losses.append(out["loss"])
            norms.append(out["grad_norm"])
        self.iteration += 1
        nan = float("nan")
        metrics |= {"imitation_loss": torch.stack(losses).mean().item() if losses else nan,
                    "grad_norm": torch.stack(norms).mean().item() if norms else nan,
                    "dataset_size": float(self.data_size), "learning_rate": cfg.learning_rate}
        return metrics

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"actor": self.actor.state_dict(), "optimizer": self.train_step.adam.state_dict(),
                "obs_normalizer": self.obs_normalizer.state_dict(), "data_obs": self.data_obs,
                "data_labels": self.data_labels, "data_size": self.data_size, "data_pos": self.data_pos,
                "iteration": self.iteration}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actor.load_state_dict(state["actor"])
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.data_obs.copy_(state["data_obs"])
        self.data_labels.copy_(state["data_labels"])
        self.data_size, self.data_pos = int(state["data_size"]), int(state["data_pos"])
        self.iteration = int(state["iteration"])

    def on_env_reset(self) -> None:
        """Nothing per env to restart."""

    @property
    def policy(self) -> nn.Module:
        """The student network (normalised obs -> logits, or the mean in normalised action units)."""
        return self.actor

    def export_actor(self) -> DeployedActor:
        """The student as one traceable module: raw ``actor_obs`` ``[N, D]`` -> its env action (argmax ``[N]``
        int64, or ``center + scale * clip(mean, -1, 1)`` ``[N, A]``), as ``act(obs, deterministic=True)``."""

        def actor(x: torch.Tensor) -> torch.Tensor:
            return self._to_env(self.actor(x))

        rms = self.obs_normalizer if self.cfg.normalize_obs else None
        return DeployedActor(FrozenNormalizer(rms), CallActor(actor, self.actor), self.obs_dim, self.cfg.actor_obs)
