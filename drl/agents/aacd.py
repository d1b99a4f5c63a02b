"""AACD: asymmetric actor-critic distillation (critic transfer), as in TacSL (Akinola et al. 2024).

Not actor imitation: the *critic* is what is transferred.

* Stage 1 (the teacher): PPO whose actor and critic both read the privileged obs group
  (``actor_obs = critic_obs = "critic"``), a run of its own (``drl train aac --set
  algo.actor_obs=critic``, or trained by this agent itself, see :func:`prepare_teacher`).
* Stage 2 (this agent): ordinary PPO with a NEW, randomly initialised actor on the partial
  observation (``actor_obs: policy``); its critic keeps the privileged inputs and starts as the
  teacher's (weights and, with ``normalize_obs``, the critic group's observation normaliser).

``critic_mode``:

* ``frozen``: the loaded critic never changes. Its parameters are left out of the optimised flat
  vector (no gradient reaches them, and Adam cannot move them: a zero learning rate would not be
  enough, Adam's step ``lr * m / sqrt(v)`` is only zero while ``lr`` is), and neither its obs
  normaliser nor (with ``normalize_reward``) the reward scale it was trained for is updated, so V is
  exactly the teacher's function of the privileged state, in the teacher's units. TacSL: learns fastest.
* ``finetune``: the loaded critic is trained with the PPO value loss as usual, optionally at its own
  ``critic_learning_rate``. TacSL: best asymptote.
* ``scratch``: no teacher; a random critic on the privileged group: plain asymmetric actor-critic
  (Pinto et al. 2017), TacSL's baseline. Any ``teacher`` is ignored.

Everything else (rollouts, GAE, clipped surrogate, value loss, entropy) is :class:`drl.agents.ppo.PPO`.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from drl.agents.ppo import PPO, PPOConfig
from drl.config import MAX_STEPS, PATH, ConfigError, TrainConfig, check, check_range, merge, to_dict
from drl.nn import RewardScaler
from drl.nn.mlp import flat_dim
from drl.optim import TrainStep

__all__ = ["AACDConfig", "AACD", "load_teacher", "locate_chained_teacher", "prepare_teacher", "teacher_config"]


@dataclass
class AACDConfig(PPOConfig):
    """AACD hyperparameters: PPO's (the stage-2 learner) plus the teacher and the critic's treatment."""

    actor_obs: str = "policy"  # the new actor reads the partial observation
    critic_obs: str = "critic"  # the critic keeps the privileged inputs (the teacher's)
    critic_mode: Literal["frozen", "finetune", "scratch"] = "frozen"
    # a drl run folder of a PPO-family run (ppo/aac) whose critic reads critic_obs; null: `drl train aacd`
    # trains one first in <run>/teacher (stage 1, teacher_steps env steps); `--teacher RUN_DIR` sets it
    teacher: str | None = field(default=None, metadata=PATH)
    teacher_checkpoint: Literal["best", "latest"] = "best"
    critic_learning_rate: float | None = None  # finetune only; null: learning_rate
    teacher_steps: int = 100_000  # stage 1's env steps when no teacher is given
    teacher_algo: dict[str, Any] = field(default_factory=dict)  # stage 1 only: overrides of these PPO fields

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check(self.actor_obs != self.critic_obs, f"{prefix}.actor_obs",
              f"the stage-2 actor reads the partial observation and the critic the privileged one; both read "
              f"'{self.critic_obs}' (use aac with actor_obs: {self.critic_obs} to train a privileged teacher)")
        check(self.critic_learning_rate is None or self.critic_learning_rate > 0, f"{prefix}.critic_learning_rate",
              f"must be > 0 or null, got {self.critic_learning_rate}")
        check(self.critic_learning_rate is None or self.critic_mode == "finetune", f"{prefix}.critic_learning_rate",
              f"only a fine-tuned critic has a learning rate of its own (critic_mode is '{self.critic_mode}')")
        check(not self.critic_recurrent or self.critic_mode == "scratch", f"{prefix}.rnn_critic",
              f"AACD transfers a feed-forward privileged critic; with critic_mode '{self.critic_mode}' set "
              f"rnn_critic: false (or auto, with the critic on another obs group than the actor)")
        check_range(self.teacher_steps, f"{prefix}.teacher_steps", 1, MAX_STEPS)
        ppo_fields = {f.name for f in dataclasses.fields(PPOConfig)}
        unknown = sorted(set(self.teacher_algo) - ppo_fields)
        check(not unknown, f"{prefix}.teacher_algo", f"{unknown} are not PPO fields; valid: {sorted(ppo_fields)}")
        # stage 1's actor and critic read the same group, so a teacher with memory gets a recurrent critic
        # (rnn_critic auto) that stage 2 could not load: refuse it before training it
        teacher_rnn = self.teacher_algo.get("rnn_type", "none")
        check(teacher_rnn == "none" or self.teacher_algo.get("rnn_critic", "auto") is False
              or self.critic_mode == "scratch", f"{prefix}.teacher_algo",
              f"rnn_type {teacher_rnn!r} gives the teacher a recurrent critic, which AACD cannot transfer; add "
              "rnn_critic: false to teacher_algo (or drop its rnn_type: the teacher sees the full state)")
        if self.teacher is None and self.critic_mode != "scratch" and train.algo is self:  # stage 1 will run
            try:  # its config now, before a run folder is claimed, naming the key the values came through
                teacher_config(train)
            except ConfigError as err:
                raise ConfigError(f"config key '{prefix}.teacher_algo': stage 1 (the teacher: these PPO fields "
                                  f"with teacher_algo over them) is invalid: {err}") from err


def load_teacher(run_dir: str, checkpoint: str, device: torch.device, key: str = "algo.teacher") -> tuple[Any, Any]:
    """``(agent, its TrainConfig)`` of the trained run in ``run_dir`` (:func:`drl.api.load_agent`),
    on ``device``, without touching the global RNG streams (loading builds networks).

    Raises:
        ConfigError: ``run_dir`` is not a drl run folder or its checkpoint does not load (names ``key``).
    """
    from drl.api import load_agent  # drl.api imports the registry, which imports this module
    from drl.checkpoint import CheckpointError

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            return load_agent(run_dir, checkpoint, device=str(device))
        except (FileNotFoundError, CheckpointError) as err:
            raise ConfigError(f"config key '{key}': cannot load the teacher run '{run_dir}': {err}") from err


class AACD(PPO):
    """Stage 2 of AACD: PPO with a new actor on ``actor_obs`` and the teacher's critic on ``critic_obs``.

    Same constructor and interface as :class:`PPO`. The critic (and the critic group's observation
    normaliser) is copied from ``cfg.teacher`` unless ``critic_mode`` is ``scratch``; the actor is
    PPO's fresh random initialisation. With ``normalize_reward`` the reward scaler starts from the
    teacher's return statistics (frozen: keeps them). The teacher is read once, at construction (a
    resumed run then loads its own checkpoint over it), so rebuilding the agent needs the teacher's
    run folder.

    Raises:
        ConfigError: no teacher for ``frozen``/``finetune``; the teacher cannot be loaded, is not a
            PPO-family agent, or its critic differs from this config's (one message listing every
            difference: obs group, input shape, hidden widths, activation, normalize_obs, gamma,
            normalize_reward).
    """

    config_class = AACDConfig
    run_subfolders = ("teacher",)  # prepare_teacher trains stage 1 in <run>/teacher

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: AACDConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        super().__init__(observation_space, action_space, cfg, num_envs, device, generator, total_steps)
        critic = self.model.critic
        if cfg.critic_mode != "scratch":
            self._load_teacher_critic()
        # the obs groups whose normaliser stays as loaded (the frozen critic's inputs)
        self.frozen_groups = {cfg.critic_obs} if cfg.critic_mode == "frozen" else set()
        if cfg.critic_mode == "frozen":
            # only the actor (its recurrent core, if any, its body and head) is optimised: the critic's
            # parameters are not in the flat vector at all (rnn_critic is refused with a loaded critic)
            critic.requires_grad_(False)
            for p in critic.parameters():
                p.grad = None  # PPO's TrainStep had pointed them at its flat gradient
            trainable = nn.ModuleDict({name: module for name, module in self.model.named_children()
                                       if name != "critic"})
            self.train_step = TrainStep(trainable, self._minibatch_loss, cfg.learning_rate, cfg.max_grad_norm,
                                        eps=cfg.adam_eps, compile=self.train_step.compiled,
                                        clip_groups=self._clip_groups(), row_chunk=self._row_chunk())
        elif cfg.critic_mode == "finetune" and cfg.critic_learning_rate is not None:
            self.train_step = _CriticLRStep(self.model, self._minibatch_loss, cfg.learning_rate, cfg.max_grad_norm,
                                            cfg.critic_learning_rate / cfg.learning_rate,
                                            compile=self.train_step.compiled, eps=cfg.adam_eps,
                                            clip_groups=self._clip_groups(), row_chunk=self._row_chunk())
        self.numba_actor = self._make_numba_actor()  # its views must point at the final parameter storage

    def _load_teacher_critic(self) -> None:
        cfg = self.cfg
        if cfg.teacher is None:
            raise ConfigError(f"config key 'algo.teacher': critic_mode '{cfg.critic_mode}' loads the critic of a "
                              "trained teacher run; give --teacher RUN_DIR (a ppo/aac run whose critic reads "
                              f"'{cfg.critic_obs}'), train through `drl train aacd` (it trains one first), or "
                              "use critic_mode: scratch")
        teacher, teacher_cfg = load_teacher(cfg.teacher, cfg.teacher_checkpoint, self.device)
        if not isinstance(teacher, PPO):
            raise ConfigError(f"config key 'algo.teacher': '{cfg.teacher}' is a '{teacher_cfg.agent}' run; AACD "
                              "loads the critic of a PPO-family run (ppo, aac)")
        mine, theirs = cfg, teacher.cfg
        differences = []
        if theirs.critic_obs != mine.critic_obs:
            differences.append(f"its critic reads obs group '{theirs.critic_obs}', this one '{mine.critic_obs}'")
        else:
            shape, own = teacher.group_shapes[theirs.critic_obs], self.group_shapes[mine.critic_obs]
            if tuple(shape) != tuple(own):
                differences.append(f"its critic input '{mine.critic_obs}' has shape {tuple(shape)}, this env's "
                                   f"{tuple(own)}")
        # V's inputs and its units: the same architecture, input normalisation, discount and reward scaling
        if theirs.critic_recurrent:
            differences.append(f"its critic is recurrent ({theirs.rnn_type}), AACD transfers a feed-forward one")
        for name in ("critic_hidden", "activation", "normalize_obs", "gamma", "normalize_reward"):
            if getattr(theirs, name) != getattr(mine, name):
                differences.append(f"{name} {getattr(theirs, name)!r} vs {getattr(mine, name)!r} here")
        if differences:
            raise ConfigError(f"config key 'algo.teacher': the critic of teacher run '{cfg.teacher}' does not fit "
                              f"this config: {'; '.join(differences)}")
        with torch.no_grad():  # copies into the flat parameter vector's views
            self.model.critic.load_state_dict(teacher.model.critic.state_dict())
            self.obs_normalizers[mine.critic_obs].load_state_dict(
                teacher.obs_normalizers[theirs.critic_obs].state_dict())
            # the teacher's values are in units of its scaled rewards: start from (frozen: keep) its scale
            self.reward_scaler.return_stats.load_state_dict(teacher.reward_scaler.return_stats.state_dict())
        if cfg.critic_mode == "frozen":
            self.reward_scaler = _FixedRewardScaler(self.num_envs, cfg.gamma).to(self.device).load_from(
                self.reward_scaler)

    def _normalize(self, groups: dict[str, torch.Tensor], update: bool) -> dict[str, torch.Tensor]:
        """PPO's, except that a frozen critic's input normaliser keeps the teacher's statistics."""
        if not self.cfg.normalize_obs:
            return groups
        return {g: self.obs_normalizers[g].update_normalize(x, update and g not in self.frozen_groups)
                for g, x in groups.items()}


class _FixedRewardScaler(RewardScaler):
    """A frozen critic's reward scale: rewards / std(return) with the teacher's statistics, never updated
    (the running returns ``[N]`` are kept, unused, so the state dict is the same as PPO's)."""

    def load_from(self, scaler: RewardScaler) -> _FixedRewardScaler:
        self.load_state_dict(scaler.state_dict())
        return self

    def scale_rollout(self, rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
        return (rewards / self.return_stats.std_as(rewards.dtype)).clamp(-self.clip, self.clip)


class _CriticLRStep(TrainStep):
    """PPO's training step with the critic's coordinates at ``critic_lr_ratio`` x the learning rate
    (Adam is per coordinate, so a per-coordinate learning rate ``[P]`` is the same as two optimisers)."""

    def __init__(self, model: nn.Module, loss_fn: Any, learning_rate: float, max_grad_norm: float,
                 critic_lr_ratio: float, compile: bool, eps: float,
                 clip_groups: tuple[tuple[str, ...], ...] | None, row_chunk: int | None):
        super().__init__(model, loss_fn, learning_rate, max_grad_norm, eps=eps, compile=compile,
                         clip_groups=clip_groups, row_chunk=row_chunk)
        is_critic = torch.cat([torch.full((size,), name.startswith("critic."), dtype=torch.bool)
                               for name, size in zip(self.params.names, self.params.sizes, strict=True)])
        self.lr_scale = torch.where(is_critic, critic_lr_ratio, 1.0).to(self.params.data)
        self.lr = self.lr_scale * learning_rate

    def set_learning_rate(self, learning_rate: float) -> None:
        torch.mul(self.lr_scale, learning_rate, out=self.lr)


# --- stage 1 through `drl train aacd` -----------------------------------------------------------
def teacher_config(cfg: TrainConfig) -> TrainConfig:
    """Stage 1's run config: an ``aac`` run of ``algo.teacher_steps`` env steps on the same env, seed and
    schedule, whose actor and critic both read ``algo.critic_obs``, with this config's PPO fields
    (``algo.teacher_algo`` overrides them)."""
    from drl.registry import resolve_config

    algo: AACDConfig = cfg.algo
    ppo_fields = {f.name for f in dataclasses.fields(PPOConfig)}
    teacher_algo = {k: v for k, v in to_dict(algo).items() if k in ppo_fields}
    # the teacher sees the full state: no memory (a student's rnn_type is its own; teacher_algo may set one)
    teacher_algo |= {"actor_obs": algo.critic_obs, "critic_obs": algo.critic_obs, "rnn_type": "none"}
    raw = {k: v for k, v in to_dict(cfg).items() if k != "algo"}
    raw |= {"agent": "aac", "total_steps": algo.teacher_steps, "algo": merge(teacher_algo, algo.teacher_algo)}
    teacher = resolve_config(raw)
    teacher.source = f"AACD stage 1 (teacher) of {getattr(cfg, 'source', 'the run config')}"
    return teacher


def prepare_teacher(cfg: TrainConfig, run_dir: Path | None, overwrite: bool) -> Path | None:
    """The registry's ``prepare`` step of ``aacd`` (called by :func:`drl.api.train`): without a teacher,
    train one (stage 1) in ``<run_dir>/teacher`` and point ``cfg.algo.teacher`` at it.

    A teacher folder already there is resumed (a finished one is not touched), so re-running the same
    ``drl train aacd --run-dir RUN_DIR`` after an interruption in stage 1 continues it; ``overwrite``
    trains it again. Returns the run folder (created, with a unique default name, when None).

    Raises:
        TrainingInterrupted: a stop signal ended stage 1 (stage 2 does not start).
    """
    algo: AACDConfig = cfg.algo
    if algo.critic_mode == "scratch" or algo.teacher is not None:
        return run_dir
    from drl import api
    from drl.runners.common import TrainingInterrupted, claim_unique_dir, default_run_dir

    if run_dir is None:
        run_dir = claim_unique_dir(default_run_dir(cfg.agent, cfg.env.id, cfg.seed))
    teacher_dir = run_dir / "teacher"
    if (teacher_dir / "config.yaml").is_file() and not overwrite:
        print(f"AACD stage 1: continuing the teacher run in '{teacher_dir}'", file=sys.stderr, flush=True)
        summary = api.resume(teacher_dir)
    else:
        print(f"AACD stage 1: training the teacher in '{teacher_dir}' ({algo.teacher_steps:,} env steps)",
              file=sys.stderr, flush=True)
        summary = api.train(teacher_config(cfg), teacher_dir, overwrite=overwrite)[1]
    if summary.get("interrupted"):
        err = TrainingInterrupted(signal.Signals[summary.get("interrupted_by") or "SIGINT"].value)
        err.run_dir = teacher_dir
        err.rerun_dir = run_dir  # the CLI names this train command with --run-dir: it continues both stages
        raise err
    algo.teacher = str(teacher_dir.resolve())  # as --teacher: the run does not depend on the working folder
    print(f"AACD stage 2: critic from '{teacher_dir}' ({algo.critic_mode})", file=sys.stderr, flush=True)
    return run_dir


def locate_chained_teacher(cfg: TrainConfig, run_dir: Path) -> None:
    """A chained run (trained by :func:`prepare_teacher`) holds its teacher in ``<run_dir>/teacher``: when the
    recorded ``algo.teacher`` holds no run any more (the run folder was moved or copied), read that one."""
    teacher, own = getattr(cfg.algo, "teacher", None), run_dir / "teacher"
    if teacher is not None and not (Path(teacher) / "config.yaml").is_file() and (own / "config.yaml").is_file():
        cfg.algo.teacher = str(own.resolve())


def teacher_input_dims(teacher: Any) -> dict[str, int]:
    """``{obs group: flat width}`` of what a loaded agent reads (PPO family, off-policy or a DAgger student)."""
    if hasattr(teacher, "group_shapes"):
        return {g: flat_dim(s) for g, s in teacher.group_shapes.items()}
    if hasattr(teacher, "obs_dims"):
        return dict(teacher.obs_dims)
    return {teacher.cfg.actor_obs: teacher.obs_dim}
