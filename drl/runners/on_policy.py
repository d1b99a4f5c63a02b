"""The on-policy loop: collect -> update -> log -> checkpoint -> evaluate.

The runner knows nothing about the algorithm. It asks the agent for

* ``storage_fields()``: the fields of one rollout step;
* ``act(obs) -> (env_action, record)`` and ``record_outcome(record, reward, terminated,
  truncated, final_obs) -> record``: one step's stored data;
* ``update(storage, progress) -> metrics``; ``state_dict()`` / ``load_state_dict()``;
* optionally ``on_env_reset()``: every env was reset outside the rollout (a resume without env
  state), so per-env running quantities (PPO: the reward scaler's discounted returns) restart.
* optionally ``sync_ranks()``: under torchrun, called on every rank after each complete rollout, before
  the update: what the ranks accumulated on their own during it is merged (PPO: the obs statistics).
* optionally, as class method, ``wrap_env(env, algo_cfg, training) -> env``: the env the agent plays
  (training and evaluation envs; RARL adds its adversary), and ``evaluation_variants(eval_env)``:
  more evaluations logged beside ``eval_return`` (see :meth:`Runner._evaluate_variants`).
* optionally ``info_fields``: ``{info key: storage field}``, env info entries ``[N]`` stored with each
  step's record (PPO with ``intrinsic_value``: the bonus wrappers' ``info["intrinsic_reward"]``).

What is not the rollout loop (envs, agent, run folder, checkpoints, failures, evaluation) is
:class:`drl.runners.base.Runner`, shared with the off-policy runner.

Resume. A checkpoint holds the state as of an iteration boundary: the agent, the RNGs, the runner
counters, the episode tracker's unfinished episodes, the current observation and, for envs with
the state capability (:func:`envs.core.supports_env_state`: the torch-batched and MuJoCo Warp
envs), the env state. Such a run resumes bitwise identically to the uninterrupted one. Other envs
(the gymnasium adapter) are reset with a new seed on resume; the episodes in progress are dropped
and restart, consistently (see :meth:`OnPolicyRunner.train`).

Everything on the per-step path stays on the env's device: episode statistics are accumulated
with masked tensor ops and read back once per iteration.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from drl.config import ConfigError
from drl.guards import EnvStepError, NonFiniteError, check_update
from drl.logging import EpisodeWindow, RunLogger, Stopwatch
from drl.resources import check_storage_fits
from drl.runners.base import (  # noqa: F401 - EVAL_SEED_OFFSET, seed_everything, _copy_tensors: imported from here too
    EVAL_SEED_OFFSET,
    EpisodeTracker,
    Runner,
    _copy_tensors,
    evaluate_policy,
    seed_everything,
)
from drl.storage import RolloutBuffer

__all__ = ["OnPolicyRunner", "EpisodeTracker", "evaluate_policy", "seed_everything", "EVAL_SEED_OFFSET"]


class OnPolicyRunner(Runner):
    """Owns the env, storage, agent, logging and checkpoints of one on-policy run.

    An iteration is one rollout of ``algo.num_steps`` steps of every env, then one
    ``agent.update``; ``total_steps`` rounds up to whole iterations. See :class:`Runner` for the
    arguments and errors.
    """

    def _build_storage(self) -> None:
        cfg = self.cfg
        self.num_steps = cfg.algo.num_steps
        self.steps_per_iteration = self.num_steps * cfg.env.num_envs * self.world  # all ranks' env steps
        self.num_iterations = math.ceil(cfg.total_steps / self.steps_per_iteration)
        # the storage, plus the env reward (float32) and done flag (bool) kept per step for episode statistics
        check_storage_fits(self.num_steps, cfg.env.num_envs, self.agent.storage_fields(), self.device,
                           extra_bytes_per_step=5)
        plural = "s" if self.num_iterations != 1 else ""
        self._round_total_steps(self.steps_per_iteration, f"{self.num_iterations} whole iteration{plural} of "
                                                          f"num_steps x num_envs = {self.steps_per_iteration:,}")
        self.storage = RolloutBuffer(self.num_steps, cfg.env.num_envs, self.agent.storage_fields(), self.device)

    @property
    def planned_steps(self) -> int:
        return self.num_iterations * self.steps_per_iteration

    def _episode_columns(self, row: dict[str, Any], episodes: int) -> None:
        """Add a subclass's episode statistics to an iteration's ``row`` (after the tracker's update)."""

    @property
    def finished(self) -> bool:
        """The run has done all its iterations (resuming it has nothing to do)."""
        return self.state["iteration"] >= self.num_iterations

    def _rollout_tensors(self, env_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """What a rollout's finiteness check reads: the env's rewards ``[T, N]`` first (so a NaN
        reward is named at its source, before values scaled from it), then every floating storage
        field ``[T, N, ...]`` (observations, final observations, actions, log-probs, ...)."""
        tensors = {"reward": env_rewards}
        tensors.update((name, x) for name, x in self.storage.items() if x.is_floating_point())
        return tensors

    # --- the loop -------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``total_steps`` (or until SIGINT/SIGTERM); returns the summary written to disk.

        A stop signal in the rollout or between iterations stops after the current env step; one
        inside ``agent.update()`` or an evaluation aborts it at once. Either way ``latest.pt`` is
        saved as of the last completed iteration (:meth:`boundary_payload`: the unfinished iteration
        is redone on resume) and ``summary["interrupted_by"]`` names the signal. ``best.pt`` is
        written at the end of the iteration whose evaluation set a new best, so both checkpoints are
        iteration boundaries.
        """
        return super().train()

    def _train_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        cfg, state, stop = self.cfg, self.state, self.stop
        tracker = self.tracker
        window = EpisodeWindow()
        window.load_state_dict(state.get("episode_window", {}))
        env_rewards = torch.zeros(self.num_steps, cfg.env.num_envs, *self.reward_shape, device=self.device)
        episode_ends = torch.zeros(self.num_steps, cfg.env.num_envs, dtype=torch.bool, device=self.device)
        reward_rows, end_rows = env_rewards.unbind(0), episode_ends.unbind(0)  # per-step views, made once
        info_fields = getattr(self.agent, "info_fields", {})  # {info key: storage field}; usually empty
        # a restored env state continues where the checkpoint left it; otherwise the envs are reset
        try:
            obs = self._obs = self._reset_envs() if self._obs is None else self._obs
        except Exception as err:
            self._raise_env_error(err, None)
        while state["iteration"] < self.num_iterations:
            self._begin_iteration()
            iteration_start = clock()
            self.storage.clear()
            t = 0
            try:  # free unless something raises; then a non-finite input is looked for first
                for t in range(self.num_steps):
                    action, record = self.agent.act(obs)
                    try:
                        obs, reward, terminated, truncated, info = self.env.step(action)
                    except Exception as err:
                        self._raise_env_error(err, t, env_rewards, obs)
                    record = self.agent.record_outcome(record, reward, terminated, truncated, info["final_obs"])
                    for key, name in info_fields.items():
                        record[name] = _info_entry(info, key, self.agent)
                    self.storage.add(record)
                    reward_rows[t].copy_(info.get("env_reward", reward))
                    torch.logical_or(terminated, truncated, out=end_rows[t])
                    if self.task_stats is not None:  # a multi-task env: its info["success"] row
                        self.task_stats.record(t, info)
                    if stop.requested and not stop.collective:  # ranks: each steps its rollout to the end
                        break
            except (EnvStepError, NonFiniteError):
                raise
            except Exception as err:
                cause = f"then {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
                self._check_rollout(env_rewards, rows=t, obs=obs, detail=cause)
                raise
            self._obs = obs
            if self._stop_agreed():  # under torchrun: any rank's signal stops every rank here
                return True  # the partial rollout is dropped: resume redoes it
            self._sync_ranks()  # under torchrun: the ranks' obs statistics of this rollout merged (agent.sync_ranks)
            self._check_rollout(env_rewards)  # one fused sync per rollout; the update never sees a NaN
            with stop.interruptible():
                metrics = self.agent.update(self.storage, progress=state["iteration"] / self.num_iterations)
                if self.wrappers:  # learned wrapper parts train on the transitions they saw in this rollout
                    metrics |= self.wrappers.update()
            check_update(metrics, self.agent.state_dict(), state["global_step"] + self.steps_per_iteration,
                         state["iteration"] + 1, detail="no checkpoint written from this state")
            state["iteration"] += 1
            state["global_step"] += self.steps_per_iteration
            state["wall_s"] = clock()
            iter_return, _, episodes = tracker.update(env_rewards, episode_ends)
            if episodes:
                window.extend(tracker.finished_returns.tolist(), tracker.finished_lengths.tolist())
                state["episode_window"] = window.state_dict()
            row = {"global_step": state["global_step"], "iteration": state["iteration"],
                   "episode_return": window.mean_return, "episode_length": window.mean_length,
                   "episodes": episodes, "iter_episode_return": iter_return,
                   "eval_return": math.nan, "eval_return_std": math.nan, **metrics,
                   "wall_s": state["wall_s"],
                   "sps": self.steps_per_iteration / max(state["wall_s"] - iteration_start, 1e-9)}
            self._episode_columns(row, episodes)
            if self.task_stats is not None:  # ep_return/<task>, success/<task> (drl.runners.tasks)
                row.update(self.task_stats.update(tracker, episode_ends))
            last = state["iteration"] == self.num_iterations
            if state["global_step"] >= state["next_eval_step"] or last:
                row["eval_return"], row["eval_return_std"] = self._evaluate_if_due(clock, last)
                row.update(self.extra_eval)
                row["wall_s"] = state["wall_s"] = clock()
            self._log_and_checkpoint(logger, row, last)
            self._end_iteration()
        return False


def _info_entry(info: dict[str, Any], key: str, agent: Any) -> torch.Tensor:
    """``info[key]``; otherwise a ConfigError naming the agent's option that asks for it
    (``agent.info_fields_source``), what is missing and what provides it."""
    if key not in info:
        source = getattr(agent, "info_fields_source", "algo")
        raise ConfigError(f"config key '{source}': the agent stores info['{key}'] each step, but the env's info "
                          f"has no such entry; add the wrapper that reports it (e.g. wrappers: [{{name: bonus}}]) "
                          f"or turn {source} off")
    return info[key]
