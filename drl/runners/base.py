"""What every runner shares around its loop: envs, agent, run folder, checkpoints, failures, evaluation.

A runner is :class:`Runner` plus the two things that differ between training loops: its storage
(:meth:`Runner._build_storage`: a rollout buffer, a replay buffer) and its loop
(:meth:`Runner._train_loop`). Everything else is here, once:

* construction: seeding, the envs (training and evaluation), the agent, the run folder (claimed
  exclusively, or locked and resumed from its newest checkpoint);
* the run state ``state`` (counters, schedules, best evaluation, the episode window) and the
  checkpoints built from it: :meth:`Runner.checkpoint_payload` (now) and
  :meth:`Runner.boundary_payload` (the last consistent point, what an interruption or an error
  leaves), written atomically by :meth:`Runner.save`, restored by :meth:`Runner._restore`;
* the end of an iteration: evaluation when due, the metrics row, the periodic and best
  checkpoints;
* failures: a non-finite value or an env error leaves ``emergency.pt`` and ``summary.json``;
* stop signals: :meth:`Runner.train` installs the handlers (see :mod:`drl.runners.common`).

The helpers :class:`EpisodeTracker`, :func:`evaluate_policy` and :func:`seed_everything` are
shared by every runner too (and still importable from :mod:`drl.runners.on_policy`).
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import numpy as np
import torch

from drl import distributed
from drl.checkpoint import load_agent_state, rng_state, save_checkpoint, set_rng_state
from drl.config import ConfigError, TrainConfig, to_dict
from drl.guards import (
    EnvStepError,
    NonFiniteError,
    RunWriteError,
    atomic_write_text,
    check_rollout,
    first_non_finite,
    value_name,
    writing,
)
from drl.logging import EpisodeWindow, RunLogger, Stopwatch, run_metadata, write_hparams
from drl.resources import check_env_fits
from drl.runners.common import (
    RunLock,
    StopSignals,
    TrainingInterrupted,
    children_ignore_sigint,
    create_run_dir,
    default_run_dir,
    find_resume_checkpoint,
    note,
    signal_name,
)
from drl.runners.tasks import TaskStatistics
from drl.wrappers import WrapperStack, make_run_env
from envs.core import Obs, obs_to, resolve_device, supports_env_state
from envs.multi_agent import is_multi_agent

__all__ = ["Runner", "EpisodeTracker", "evaluate_policy", "episode_memory", "seed_everything", "EVAL_SEED_OFFSET"]


EVAL_SEED_OFFSET = 1_000_003  # eval envs get their own seed stream, fixed per run


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpisodeTracker:
    """Episode returns/lengths from a whole rollout at once, carried across rollouts.

    The runner writes each step's env reward and done flag into ``[T, N]`` tensors (two copies per
    step) and calls :meth:`update` once per rollout: the per-step path stays free of bookkeeping.
    """

    def __init__(self, num_envs: int, device: torch.device, reward_shape: tuple[int, ...] = ()):
        # reward_shape: trailing reward axes, e.g. (A,) for a multi-agent env's per-agent rewards
        self.carry_return = torch.zeros(num_envs, *reward_shape, dtype=torch.float64, device=device)
        self.carry_length = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The unfinished episodes' return ``[N]`` float64 and length ``[N]`` int64 (copies)."""
        return {"carry_return": self.carry_return.clone(), "carry_length": self.carry_length.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`; raises ``ValueError`` if its shapes do not match ``num_envs``."""
        for key in ("carry_return", "carry_length"):
            mine, saved = getattr(self, key), torch.as_tensor(state[key])
            if saved.shape != mine.shape:
                raise ValueError(f"episode tracker: saved {key} has shape {tuple(saved.shape)}, "
                                 f"this run has {tuple(mine.shape)}")
            mine.copy_(saved)

    def reset(self) -> None:
        """Every env starts a new episode (the envs were reset)."""
        self.carry_return.zero_()
        self.carry_length.zero_()

    def update(self, rewards: torch.Tensor, done: torch.Tensor) -> tuple[float, float, int]:
        """Mean return, mean length and number of the episodes that ended in this rollout.

        Args:
            rewards: ``[T, N]`` env rewards (``[T, N, *reward_shape]``: each column tracked; the
                returns reported are their mean, ``finished_columns`` ``[count, *reward_shape]`` each).
            done: ``[T, N]`` bool, the episode ended at step t (terminated or truncated).
        """
        num_steps = rewards.shape[0]
        cumulative = rewards.to(torch.float64).cumsum(0)  # C[t] = r_0 + ... + r_t
        step = torch.arange(num_steps, device=rewards.device).unsqueeze(1).expand_as(done)
        last_end = torch.where(done, step, -1).cummax(0).values  # last episode end at or before t
        prev_end = torch.cat([torch.full_like(last_end[:1], -1), last_end[:-1]])  # strictly before t
        started_here = prev_end >= 0  # the episode ending at t began inside this rollout
        columns = rewards.shape[2:]
        def wide(index: torch.Tensor) -> torch.Tensor:  # [T, N] -> [T, N, *columns]
            return index.view(*index.shape, *(1,) * len(columns)).expand(*index.shape, *columns)
        before = torch.gather(cumulative, 0, wide(prev_end.clamp(min=0)))
        returns = torch.where(wide(started_here), cumulative - before, cumulative + self.carry_return)
        if columns:
            self.finished_columns = returns[done]  # [count, *columns]
            returns = returns.flatten(2).mean(2)
        lengths = torch.where(started_here, step - prev_end, step + 1 + self.carry_length)
        count = int(done.sum().item())
        self.finished_returns, self.finished_lengths = returns[done], lengths[done]  # [count], in env order per t
        # carry the unfinished episodes into the next rollout
        final_end = last_end[-1]
        tail = cumulative[-1] - torch.gather(cumulative, 0, wide(final_end.clamp(min=0).unsqueeze(0))).squeeze(0)
        self.carry_return = torch.where(wide(final_end >= 0), tail, self.carry_return + cumulative[-1])
        self.carry_length = torch.where(final_end >= 0, num_steps - 1 - final_end, self.carry_length + num_steps)
        if count == 0:
            return float("nan"), float("nan"), 0
        return returns[done].mean().item(), lengths[done].double().mean().item(), count


def _copy_tensors(tree: Any) -> Any:
    """A copy of a nested dict/list/tuple in which every tensor is cloned (other leaves are shared)."""
    if isinstance(tree, torch.Tensor):
        return tree.clone()
    if isinstance(tree, dict):
        return {k: _copy_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        if all(isinstance(v, _SCALARS) for v in tree):  # e.g. python's RNG state: 625 ints
            return tree if isinstance(tree, tuple) else list(tree)
        return type(tree)(_copy_tensors(v) for v in tree)
    return tree


_SCALARS = (int, float, str, bool, type(None))


@contextlib.contextmanager
def episode_memory(agent: Any, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
    """Step ``agent`` on ``num_envs`` envs of its own (an evaluation, a video) without touching its
    training memory; yields ``end_episodes(done [num_envs] bool)``, to call after every env step.

    An agent with memory (a recurrent policy's hidden state) has the optional method
    ``fresh_memory(num_envs)``, a context manager: inside, ``act`` starts from a fresh memory for
    ``num_envs`` envs, the function it yields clears that memory where an episode ended, and on exit
    the training memory is back. For any other agent ``end_episodes`` does nothing.
    """
    fresh_memory = getattr(agent, "fresh_memory", None)
    if fresh_memory is None:
        yield lambda done: None
        return
    with fresh_memory(num_envs) as end_episodes:
        yield end_episodes


def evaluate_policy(agent: Any, env: Any, episodes: int, seed: int, max_steps: int = 1_000_000,
                    episodes_out: list[tuple[int, float, float]] | None = None) -> list[Any]:
    """Deterministic-action returns of ``episodes`` episodes, spread evenly over the env copies (a
    multi-agent env's ``[N, A]`` rewards give one list of A per-agent returns per episode).

    Each copy runs a fixed quota of episodes, so short episodes are not over-represented.
    Observation statistics are used but not updated. ``env_reward`` in info (the env's own
    reward, kept by reward wrappers) is what is summed when present. An agent with memory starts
    from a fresh one and forgets each episode at its end (:func:`episode_memory`). ``episodes_out``, when
    given, gets ``(env index, return, success)`` per episode (success: the largest ``info["success"]``
    of the episode, 0 when the env reports none): per-task statistics route them (:mod:`drl.runners.tasks`).
    """
    num_envs = env.num_envs
    success = torch.zeros(num_envs, dtype=torch.float64)
    quota = torch.full((num_envs,), episodes // num_envs, dtype=torch.int64)
    extra = episodes % num_envs  # spread evenly over the copies (a multi-task env's tasks are contiguous blocks)
    quota[[(i * num_envs) // extra for i in range(extra)]] += 1
    done_counts = torch.zeros(num_envs, dtype=torch.int64)
    running: torch.Tensor | None = None  # [N] (or [N, A]: a multi-agent env's per-agent rewards)
    returns: list[Any] = []
    obs, _ = env.reset(seed=seed)
    with episode_memory(agent, num_envs) as end_episodes:
        for _ in range(max_steps):
            if bool((done_counts >= quota).all()):
                break
            action, _ = agent.act(obs, deterministic=True, update_stats=False)
            obs, reward, terminated, truncated, info = env.step(action)
            ended = terminated | truncated
            end_episodes(ended)
            step_reward = info.get("env_reward", reward).detach().to("cpu", torch.float64)
            running = step_reward.clone() if running is None else running + step_reward
            if episodes_out is not None and isinstance(info.get("success"), torch.Tensor):
                torch.maximum(success, info["success"].detach().to("cpu", torch.float64), out=success)
            done = ended.cpu()
            for i in torch.nonzero(done).flatten().tolist():
                if done_counts[i] < quota[i]:
                    returns.append(float(running[i]) if running.dim() == 1 else running[i].tolist())
                    if episodes_out is not None:  # the team return (the mean over agents) of a multi-agent env
                        episodes_out.append((i, float(running[i].mean()), float(success[i])))
                    done_counts[i] += 1
            running[done] = 0.0
            success[done] = 0.0
        else:
            raise RuntimeError(f"evaluation did not finish {episodes} episodes within {max_steps} steps")
    return returns


class Runner:
    """Owns the envs, agent, run folder, logging and checkpoints of one run; a subclass adds the loop.

    Args:
        cfg: the resolved training config.
        agent_class: the agent to build (e.g. :class:`drl.agents.ppo.PPO`).
        run_dir: the run folder; None: a new unique ``runs/<agent>-<env>-s<seed>-<time>[-k]``.
        resume: continue the run in ``run_dir`` from its newest checkpoint (``latest.pt`` or a newer
            ``best.pt``); with none there, start again from step 0 in the same folder.
        overwrite: a fresh run may replace the drl run already in ``run_dir``.

    A subclass implements :meth:`_build_storage` (its storage, its iteration size, the rounding of
    ``total_steps``), :attr:`planned_steps`, :attr:`finished`, :meth:`_rollout_tensors` and
    :meth:`_train_loop`; it may extend :meth:`_initial_state`, :meth:`checkpoint_payload`,
    :meth:`_restore` and :meth:`save`.

    Raises:
        FileExistsError: a fresh run's ``run_dir`` already holds files (and not ``overwrite``).
        CheckpointError: resume found a checkpoint it cannot load.
    """

    def __init__(self, cfg: TrainConfig, agent_class: type, run_dir: Path | None, resume: bool = False,
                 overwrite: bool = False):
        self.cfg = cfg
        self.run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg.agent, cfg.env.id, cfg.seed)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.device = distributed.rank_device(resolve_device(cfg.device))  # torchrun on GPUs: this rank's GPU
        self.world = distributed.world_size()  # ranks training together under torchrun (drl.distributed); else 1
        seed_everything(cfg.seed)
        check_env_fits(cfg.env.id, {"env.num_envs": cfg.env.num_envs, "env.num_eval_envs": cfg.env.num_eval_envs},
                       self.device, cfg.env.vectorization, cfg.env.kwargs)
        with children_ignore_sigint() if cfg.env.vectorization == "async" else contextlib.nullcontext():
            self.env = make_run_env(cfg, cfg.env.num_envs, self.device, cfg.env.vectorization)
            self.eval_env = make_run_env(cfg, cfg.env.num_eval_envs, self.device, cfg.env.vectorization, for_eval=True)
        wrap_env = getattr(agent_class, "wrap_env", None)
        if wrap_env is not None:  # an agent's own game on the env (RARL: a second player), outermost
            try:
                self.env = wrap_env(self.env, cfg.algo, training=True)
                self.eval_env = wrap_env(self.eval_env, cfg.algo, training=False)
            except BaseException:
                self.env.close()
                self.eval_env.close()
                raise
        if is_multi_agent(self.env) and not self.multi_agent:
            self.env.close()
            self.eval_env.close()
            from drl.registry import AGENTS

            fitting = [name for name, spec in AGENTS.items() if getattr(spec.runner_class, "multi_agent", False)]
            raise ConfigError(f"config key 'env.id': {cfg.env.id} is a multi-agent env (agents "
                              f"{list(self.env.agents)}), but {cfg.agent} trains single-agent envs; use a multi-agent "
                              f"agent ({', '.join(fitting)}) or a single-agent env")
        self.wrappers = WrapperStack(self.env)  # learned wrapper parts: trained per iteration, checkpointed
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.agent = agent_class(self.env.single_observation_space, self.env.single_action_space, cfg.algo,
                                 cfg.env.num_envs, self.device, self.generator, total_steps=cfg.total_steps)
        self._env_seed = distributed.rank_seed(cfg.seed, cfg.env.num_envs)  # this rank's seed stream (rank 0: seed)
        if self._env_seed != cfg.seed:  # after the agent, which every rank builds alike from cfg.seed
            seed_everything(self._env_seed)
            self.generator.manual_seed(self._env_seed)
        self._rounding_note: str | None = None  # said when training starts
        self._build_storage()
        self.tracker = EpisodeTracker(cfg.env.num_envs, self.device, self.reward_shape)
        # a multi-task env: per-task columns ep_return/<task>, success/<task>, eval_... (drl.runners.tasks)
        self.task_stats = TaskStatistics.for_env(self.env, getattr(self, "num_steps", 1), self.device)
        self._obs: Obs | None = None  # the obs the agent acts on next; None: the envs need a reset
        self._boundary: dict[str, Any] | None = None  # payload copy taken when the current iteration began
        self._in_iteration = False
        self._best_pending = False  # an evaluation of this iteration beat best_eval_return
        self.extra_eval: dict[str, float] = {}  # the agent's other evaluations (see _evaluate_variants)
        # called as callback(global_step, mean eval return) after each evaluation (e.g. `drl tune` reports it to its
        # trial, which may raise to prune the run)
        self.eval_callbacks: list[Callable[[int, float], None]] = []
        self.state = self._initial_state()
        self.stop = StopSignals(collective=self.world > 1)  # torchrun: the ranks stop together
        self.resumed_from: Path | None = None  # the checkpoint a resumed run continues from
        self.checkpoint_step: int | None = None  # global_step of the newest checkpoint on disk
        if resume:
            # before anything in the folder is touched; under torchrun rank 0 holds it for the job
            self._lock = RunLock(self.run_dir).acquire() if distributed.is_main() else RunLock(self.run_dir)
            found = find_resume_checkpoint(self.run_dir, map_location=self.device)
            if found is None:
                note(f"no checkpoint in '{self.run_dir}' (stopped before the first one was written): "
                     "starting again from step 0 with its saved config")
            else:
                self.resumed_from = found[0]
                self._restore(found[1], found[0])
                if not distributed.is_main():
                    self._restore_rank()
                self.checkpoint_step = self.state["global_step"]
                self._skip_past_evaluations()
        elif not distributed.is_main():
            self._lock = RunLock(self.run_dir)  # under torchrun rank 0 alone claims and writes the run folder
        else:
            # claimed only once everything above was built: a bad env or config leaves nothing behind
            with writing(self.run_dir):
                self.run_dir = create_run_dir(self.run_dir, to_dict(cfg), unique=run_dir is None,
                                              overwrite=overwrite, keep=getattr(agent_class, "run_subfolders", ()))
            self._lock = RunLock(self.run_dir).acquire()
        attach_run_dir = getattr(self.agent, "attach_run_dir", None)
        if attach_run_dir is not None:  # an agent that writes files of its own into the run folder (CAMRL's B)
            attach_run_dir(self.run_dir)
        distributed.check_agree(self.state["global_step"], "the step the run starts from (a resume needs every "
                                "rank to read the run folder's checkpoints: a shared file system across machines)")

    multi_agent: ClassVar[bool] = False  # a runner for multi-agent envs (envs/multi_agent.py)
    reward_shape: tuple[int, ...] = ()  # trailing axes of the env's reward (a multi-agent runner: (A,))

    # --- what a subclass defines --------------------------------------------------------------
    def _build_storage(self) -> None:
        """Size the loop (its iteration, the rounding of ``cfg.total_steps`` via :meth:`_round_total_steps`),
        check that its storage fits (:mod:`drl.resources`) and allocate it. Called once the agent is built."""
        raise NotImplementedError

    @property
    def planned_steps(self) -> int:
        """The env steps (all envs together) the run trains for in all."""
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        """The run has done all its steps (resuming it has nothing to do)."""
        raise NotImplementedError

    def _rollout_tensors(self, env_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the finiteness check of the current iteration reads: name -> ``[T, N, ...]``, the env's
        rewards first (so a NaN reward is named at its source, before values derived from it)."""
        raise NotImplementedError

    def _train_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        """Train until ``total_steps`` or a stop signal; True when a stop signal ended it.

        Runs inside :meth:`_train`, which handles failures, :class:`TrainingInterrupted`, the final
        checkpoint and the summary.
        """
        raise NotImplementedError

    def _rollout_start_step(self) -> int:
        """``global_step`` before the first env step of the current iteration."""
        return self.state["global_step"]

    # --- hooks with a default -----------------------------------------------------------------
    def _initial_state(self) -> dict[str, Any]:
        """The run state of a fresh run (counters, schedules, best evaluation, the episode window)."""
        cfg = self.cfg
        return {"global_step": 0, "iteration": 0, "wall_s": 0.0, "eval_s": 0.0, "best_eval_return": -math.inf,
                "last_eval_return": math.nan, "next_eval_step": self._first(cfg.eval_interval),
                "next_checkpoint_step": self._first(cfg.checkpoint_interval),
                "episode_window": EpisodeWindow().state_dict(),
                "nproc": self.world}  # a resume must use as many processes (drl.api.check_resume)

    def _skip_past_evaluations(self) -> None:
        """After a restore: move ``next_eval_step`` past the checkpoint's step (best.pt is saved
        mid-evaluation)."""
        while self.state["next_eval_step"] <= self.state["global_step"]:
            self.state["next_eval_step"] += self.cfg.eval_interval or 2**62

    def _round_total_steps(self, multiple: int, what: str) -> None:
        """Round ``cfg.total_steps`` up to a multiple of ``multiple``; the note (said when training
        starts) explains it with ``what`` (e.g. ``"whole iterations of num_steps x num_envs = 512"``)."""
        cfg = self.cfg
        effective = math.ceil(cfg.total_steps / multiple) * multiple
        if effective != cfg.total_steps:  # a new total, also on resume
            self._rounding_note = (f"note: total_steps {cfg.total_steps:,} rounded up to {effective:,} "
                                   f"({what}); config.yaml records {effective:,}")
            cfg.total_steps = effective

    @staticmethod
    def _first(interval: int) -> int:
        return interval if interval > 0 else 2**62

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        """The run's state now (tensors may be live references: save or copy it before training on).

        Besides the agent, RNGs and counters it holds the episode tracker's unfinished episodes
        (``tracker``) and, once the envs were reset and when the env has the state capability,
        ``env_state`` (``env.state_dict()``, whose ``obs`` is the obs the agent acts on next).
        """
        payload = {
            "agent": self.cfg.agent,
            "env": self.cfg.env.id,
            "config": to_dict(self.cfg),
            "agent_state": self.agent.state_dict(),
            "runner": dict(self.state),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
            "tracker": self.tracker.state_dict(),
        }
        if self.wrappers:
            payload["wrappers"] = self.wrappers.state_dict()
        if self.task_stats is not None:
            payload["task_stats"] = self.task_stats.state_dict()
        if self._obs is not None and supports_env_state(self.env):
            payload["env_state"] = self.env.state_dict()
        return payload

    def boundary_payload(self) -> dict[str, Any]:
        """The payload as of the last iteration boundary: what a checkpoint written on an
        interruption (or an error) must hold. Inside an iteration (a partial rollout, an update or
        an evaluation under way) it is the copy taken when the iteration began, so nothing of the
        unfinished iteration (env steps, normaliser statistics, RNG draws, weights) is in it."""
        if self._in_iteration and self._boundary is not None:
            return self._boundary
        return self.checkpoint_payload()

    def _begin_iteration(self) -> None:
        self._boundary = _copy_tensors(self.checkpoint_payload())
        self._in_iteration = True

    def _end_iteration(self) -> None:
        self._in_iteration = False
        self._boundary = None

    def save(self, name: str = "latest.pt", payload: dict[str, Any] | None = None, **extra: Any) -> Path:
        """Write ``payload`` (default: :meth:`checkpoint_payload`) and ``extra`` keys to ``checkpoints/<name>``
        atomically, never torn by a stop signal; refused (NonFiniteError) if the agent state is not finite."""
        payload = self.checkpoint_payload() if payload is None else payload
        if not distributed.is_main():  # under torchrun rank 0 writes the checkpoints (the ranks' agents are equal)
            return self.run_dir / "checkpoints" / name
        with self.stop.shielded():  # a stop signal never tears a checkpoint write
            path = save_checkpoint(self.run_dir / "checkpoints" / name, {**payload, **extra})
        if name in ("latest.pt", "best.pt"):  # what --resume may continue from
            self.checkpoint_step = max(self.checkpoint_step or 0, payload["runner"]["global_step"])
        return path

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt.get("agent") != self.cfg.agent:
            raise ValueError(f"checkpoint is for agent '{ckpt.get('agent')}', this run is '{self.cfg.agent}'")
        load_agent_state(self.agent, ckpt["agent_state"], path)
        self.state.update(ckpt["runner"])
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"].cpu())
        if "tracker" in ckpt:
            self.tracker.load_state_dict(ckpt["tracker"])
        if self.task_stats is not None and "task_stats" in ckpt:
            self.task_stats.load_state_dict(ckpt["task_stats"])
        if self.wrappers or ckpt.get("wrappers"):
            self.wrappers.load_state_dict(ckpt.get("wrappers", []))
        env_state = ckpt.get("env_state")
        if env_state is not None and supports_env_state(self.env):
            try:
                self.env.load_state_dict(env_state)
            except (ValueError, RuntimeError) as err:
                warnings.warn(f"the checkpoint's env state was not restored ({err}); the envs are reset, so "
                              "this resume is not identical to an uninterrupted run", stacklevel=2)
            else:
                self._obs = obs_to(env_state["obs"], self.device)

    def _restore_rank(self) -> None:
        """A rank other than 0 after :meth:`_restore` (which loaded rank 0's checkpoint): the agent, the
        counters and the replay are the job's, but the RNGs and envs must be this rank's own. Checkpoints
        hold rank 0's env state only, so this rank's envs are reset (their episodes in progress restart)
        and its RNGs reseeded from its seed stream and the iteration: such a resume is not bitwise
        identical to the uninterrupted run (rank 0's part is)."""
        seed = self._env_seed + 7919 * (self.state["iteration"] + 1)
        seed_everything(seed)
        self.generator.manual_seed(seed)
        self._obs = None

    def _sync_ranks(self) -> None:
        """Under torchrun, at an iteration boundary that every rank reaches at the same point: the agent's
        optional ``sync_ranks()`` (what each rank accumulated on its own during the iteration, e.g. PPO's and
        SAC's observation statistics, merged across the ranks; see :func:`drl.nn.normalization.merge_ranks`).
        Nothing in one process."""
        sync = getattr(self.agent, "sync_ranks", None)
        if sync is not None and self.world > 1:
            sync()

    def _stop_agreed(self) -> bool:
        """A stop signal reached this process or, under torchrun, any rank (so all stop at the same step)."""
        return distributed.any_rank(self.stop.requested)

    def _reset_envs(self) -> Obs:
        """Reset every env (a new run, or a resume without env state): the episodes in progress
        are dropped, so the tracker's carries and the agent's per-env running quantities restart."""
        obs, _ = self.env.reset(seed=self._env_seed + self.state["iteration"])
        self.tracker.reset()
        if self.task_stats is not None:
            self.task_stats.reset()
        on_env_reset = getattr(self.agent, "on_env_reset", None)
        if on_env_reset is not None:
            on_env_reset()
        return obs

    # --- failures (see drl.guards) ---------------------------------------------------------
    def _check_rollout(self, env_rewards: torch.Tensor, rows: int | None = None, obs: Any = None,
                       detail: str = "") -> None:
        """Raise :class:`NonFiniteError` naming the first non-finite value of the current iteration
        (its first ``rows`` steps), or of ``obs`` (the latest obs from the env, ``[N, ...]``)."""
        state, num_envs = self.state, self.cfg.env.num_envs
        detail = detail or "stopped before the update"
        check_rollout(self._rollout_tensors(env_rewards), self._rollout_start_step(), num_envs,
                      state["iteration"] + 1, rows=rows, detail=detail)
        groups = obs.items() if isinstance(obs, dict) else [("", obs)] if obs is not None else []
        for group, x in groups:
            hit = first_non_finite(x) if isinstance(x, torch.Tensor) else None
            if hit is not None:
                raise NonFiniteError(f"obs/{group}" if group else "obs", value_name(hit[1]), env_index=hit[0][0],
                                     iteration=state["iteration"] + 1, detail=f"in the latest obs; {detail}")

    def _raise_env_error(self, err: Exception, t: int | None, env_rewards: torch.Tensor | None = None,
                         obs: Any = None) -> NoReturn:
        """Raise :class:`EnvStepError` for an exception out of ``env.step`` at rollout step ``t`` (None: reset).

        A non-finite value already in the rollout is reported instead (NaN actions computed from a
        NaN obs make many envs raise): that is the cause to fix.
        """
        error = err if isinstance(err, EnvStepError) else EnvStepError(self.cfg.env.id, None, err,
                                                                       call="reset" if t is None else "step")
        if t is not None and env_rewards is not None:
            self._check_rollout(env_rewards, rows=t, obs=obs, detail=f"then the env raised: {error}")
        step = self._rollout_start_step() + (0 if t is None else (t + 1) * self.cfg.env.num_envs)
        error.add_context(global_step=step, t=t, seed=self.cfg.seed)
        if error is err:
            raise err  # the adapter's error: its cause is the env's own exception
        raise error from err

    def _record_failure(self, err: EnvStepError | NonFiniteError) -> None:
        """Leave what can be saved: ``checkpoints/emergency.pt`` and ``summary.json`` with the error.

        The emergency checkpoint is :meth:`boundary_payload`: the whole run (agent, normaliser and
        reward-scaler statistics, RNGs, env state where the env has one) as of the end of the last
        completed iteration, nothing of the failed one. It is written only if every tensor in it is
        finite; ``latest.pt`` and ``best.pt`` are never touched here.
        """
        emergency: Path | None = None
        try:
            payload = self.boundary_payload()
            emergency = self.save("emergency.pt", payload=payload,
                                  emergency={"error": str(err), "error_type": type(err).__name__})
            note = (f"emergency checkpoint {emergency} (the agent after the update of iteration "
                    f"{payload['runner']['iteration']}, global_step {payload['runner']['global_step']})")
        except NonFiniteError:
            note = "no emergency checkpoint (the agent state is not finite); earlier checkpoints are kept"
        except OSError:
            note = "no emergency checkpoint (cannot write the run folder); earlier checkpoints are kept"
        if isinstance(err, EnvStepError):
            err.add_context(note=note)
        else:
            err.detail = f"{err.detail}; {note}" if err.detail else note
        try:
            self._write_summary(False, error=err, emergency=emergency)
        except OSError:
            pass  # the failure being reported matters more than its summary
        for env in (self.env, self.eval_env):
            try:
                env.close()
            except Exception:  # noqa: BLE001 - a broken env may fail to close; the run is over anyway
                pass

    # --- the run ----------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``total_steps`` (or until SIGINT/SIGTERM); returns the summary written to disk.

        Where a stop signal stops the run and what is saved then is the subclass's rule (see its
        :meth:`_train_loop`); ``summary["interrupted_by"]`` names the signal. ``best.pt`` is
        written at the end of the iteration whose evaluation set a new best.
        """
        try:
            with self.stop.installed():
                return self._train()
        except TrainingInterrupted as err:  # a second signal cut the stop short: the CLI names the resume command
            err.run_dir = self.run_dir
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Release the run folder (its lock); the envs are closed by :meth:`train` or here."""
        self._lock.release()

    def _train(self) -> dict[str, Any]:
        """:meth:`_train_loop` inside what every run does around it: the logger, failures (emergency
        checkpoint), interruptions, the final checkpoint (:meth:`boundary_payload`) and the summary."""
        state = self.state
        if self._rounding_note and distributed.is_main():  # under torchrun: once, not once per rank
            print(self._rounding_note, file=sys.stderr, flush=True)
        with writing(self.run_dir):
            logger = self._open_logger()
        clock = Stopwatch(offset=state["wall_s"])
        interrupted = False
        try:
            interrupted = self._train_loop(logger, clock)
        except (EnvStepError, NonFiniteError) as err:
            self._record_failure(err)
            raise
        except TrainingInterrupted:
            interrupted = True  # stopped where the state is not consistent: back to the last boundary
            self._best_pending = False
            boundary = self.boundary_payload()["runner"]
            state["iteration"], state["global_step"] = boundary["iteration"], boundary["global_step"]
        finally:
            failing = sys.exc_info()[0] is not None  # a failure on its way out is the one to report
            state["wall_s"] = clock()
            try:
                logger.close()
            except OSError as err:
                if not failing:
                    raise RunWriteError(self.run_dir / "metrics.csv", err) from err
        # the state at the last consistent point: what an interruption did not finish is redone on resume
        self.save(payload=self.boundary_payload())
        summary = self._write_summary(interrupted)  # a signal after the last iteration leaves a complete run
        self.env.close()
        self.eval_env.close()
        return summary

    def _open_logger(self, logged_step: int | None = None, grow_columns: bool = False) -> RunLogger:
        """The run's logger, continuing from ``global_step``; rows past ``logged_step`` (default:
        ``global_step``) that an earlier process logged are dropped; ``grow_columns``: see :class:`RunLogger`."""
        cfg = self.cfg
        if not distributed.is_main():
            return distributed.NullLogger()  # under torchrun rank 0 logs
        return RunLogger(self.run_dir, self.planned_steps, self.state["global_step"], progress=cfg.progress,
                         extra_columns=[*(getattr(self.agent, "metric_columns", None) or []),  # an agent's own
                                        *(self.task_stats.columns if self.task_stats is not None else [])],
                         config=to_dict(cfg), config_source=getattr(cfg, "source", None),
                         log_interval=cfg.log_interval, logged_step=logged_step,
                         grow_columns=grow_columns or bool(self.wrappers))  # wrappers' metrics

    def _evaluate_if_due(self, clock: Stopwatch, last: bool) -> tuple[float, float]:
        """Evaluate when due (``global_step`` reached ``next_eval_step``, or ``last``): ``(mean, std)``
        of the returns, else ``(nan, nan)``. The time goes into ``state["eval_s"]``."""
        state = self.state
        self.extra_eval = {}  # this call's other evaluations only (a row never repeats an older one)
        if not (state["global_step"] >= state["next_eval_step"] or last):
            return math.nan, math.nan
        eval_start = clock()
        result = self._evaluate()
        state["eval_s"] += clock() - eval_start
        while state["next_eval_step"] <= state["global_step"]:
            state["next_eval_step"] += self.cfg.eval_interval or 2**62
        for callback in self.eval_callbacks:
            callback(state["global_step"], result[0])
        return result

    def _log_and_checkpoint(self, logger: RunLogger, row: dict[str, Any], last: bool) -> None:
        """Log an iteration's ``row``, then write ``latest.pt`` when due (the last one is written by
        :meth:`_train`) and ``best.pt`` when this iteration's evaluation set a new best."""
        state = self.state
        distributed.check_in_sync(getattr(self.agent, "policy", None), f"iteration {state['iteration']}")
        row["eval_s"] = state["eval_s"]  # wall_s - eval_s is the time spent training
        with writing(self.run_dir / "metrics.csv"):
            logger.log(row)
        if state["global_step"] >= state["next_checkpoint_step"] and not last:  # the last one is saved by _train
            self.save()
            while state["next_checkpoint_step"] <= state["global_step"]:
                state["next_checkpoint_step"] += self.cfg.checkpoint_interval or 2**62
        if self._best_pending:  # after the row is logged: best.pt resumes like latest.pt
            self.save("best.pt")
            self._best_pending = False


    def _evaluate(self) -> tuple[float, float]:
        if not distributed.is_main():
            return math.nan, math.nan  # under torchrun rank 0 evaluates (the ranks' agents are equal)
        episodes: list[tuple[int, float, float]] | None = [] if self.task_stats is not None else None
        try:
            with self.stop.interruptible():
                returns = evaluate_policy(self.agent, self.eval_env, self.cfg.eval_episodes,
                                          seed=self.cfg.seed + EVAL_SEED_OFFSET, episodes_out=episodes)
        except EnvStepError as err:
            err.add_context(seed=self.cfg.seed, note=f"in the evaluation at global_step {self.state['global_step']} "
                                                     f"(eval env seed {self.cfg.seed + EVAL_SEED_OFFSET})")
            raise
        mean, std = self._summarize_returns(returns)
        self._evaluate_variants()
        if self.task_stats is not None:  # eval_return/<task>, eval_success/<task>
            self.extra_eval.update(self.task_stats.evaluation(episodes or [], self.eval_env))
        self.state["last_eval_return"] = mean
        if mean > self.state["best_eval_return"]:
            self.state["best_eval_return"] = mean
            self._best_pending = True  # saved at the end of the iteration, a boundary like latest.pt
        return mean, std

    def _summarize_returns(self, returns: list[Any]) -> tuple[float, float]:
        """``(mean, std)`` of an evaluation's episode returns (a subclass may log more, e.g. per agent)."""
        return float(np.mean(returns)), float(np.std(returns))

    def _evaluate_variants(self) -> None:
        """The agent's other evaluations into :attr:`extra_eval` (``eval_return_<name>``, ``..._std``).

        An agent may define ``evaluation_variants(eval_env) -> {name: context manager}``: each is entered
        around one more evaluation on the same env and seed (RARL: with its adversary on). ``eval_return``
        (best checkpoint, summary) stays the plain evaluation; list the columns in ``metric_columns``.
        """
        variants = getattr(self.agent, "evaluation_variants", None)
        if variants is None:
            return
        for name, variant in variants(self.eval_env).items():
            with self.stop.interruptible(), variant:
                returns = evaluate_policy(self.agent, self.eval_env, self.cfg.eval_episodes,
                                          seed=self.cfg.seed + EVAL_SEED_OFFSET)
            self.extra_eval[f"eval_return_{name}"] = float(np.mean(returns))
            self.extra_eval[f"eval_return_{name}_std"] = float(np.std(returns))

    def _write_summary(self, interrupted: bool, error: BaseException | None = None,
                       emergency: Path | None = None) -> dict[str, Any]:
        """Write ``summary.json`` (atomically) and ``curve.png``; ``error``: the failure that ended the run."""
        from drl.plotting import plot_runs

        state = self.state
        summary = {
            "agent": self.cfg.agent,
            "env": self.cfg.env.id,
            "steps": state["global_step"],
            "total_steps": self.planned_steps,
            "wall_s": round(state["wall_s"], 3),
            "eval_s": round(state["eval_s"], 3),
            "sps": round(state["global_step"] / max(state["wall_s"], 1e-9), 1),
            # training throughput: evaluation time excluded
            "train_sps": round(state["global_step"] / max(state["wall_s"] - state["eval_s"], 1e-9), 1),
            "final_eval_return": None if math.isnan(state["last_eval_return"]) else state["last_eval_return"],
            "best_eval_return": None if math.isinf(state["best_eval_return"]) else state["best_eval_return"],
            "seed": self.cfg.seed,
            "device": str(self.device),
            "interrupted": interrupted,
            "interrupted_by": signal_name(self.stop.signum) if interrupted and self.stop.signum is not None else None,
            "checkpoint_step": self.checkpoint_step,  # where --resume continues from
            **run_metadata(),
        }
        if error is not None:
            summary["error"] = str(error)
            summary["error_type"] = type(error).__name__
            summary["emergency_checkpoint"] = None if emergency is None else str(emergency)
        if not distributed.is_main():
            return summary  # under torchrun rank 0 writes it
        if self.world > 1:
            summary["ranks"] = self.world  # processes that trained together (torchrun), each with env.num_envs envs
        atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
        if error is None:
            write_hparams(self.run_dir, to_dict(self.cfg), summary)
        try:
            with writing(self.run_dir / "curve.png"):
                plot_runs([self.run_dir], self.run_dir / "curve.png")
        except ValueError:
            pass  # no finished iteration yet: nothing to plot
        return summary
