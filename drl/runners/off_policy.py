"""The off-policy loop: act -> store in the replay buffer -> update -> log -> checkpoint -> evaluate.

The runner knows nothing about the algorithm. It asks the agent (the contract of
``drl/agents/off_policy_base.py``) for

* ``storage_fields()``: the fields of one transition (``obs/<group>``, ``next_obs/<group>``,
  ``actions``, ``rewards``, ``terminated``, ``truncated``);
* ``random_act(obs)`` (warm-up) or ``act(obs)`` -> ``(env_action, record)``, then
  ``record_outcome(record, reward, terminated, truncated, final_obs) -> transition``;
* ``update(replay, num_updates, progress) -> {name: 0-d tensor}`` (means over the
  ``num_updates`` gradient steps, left on the device); ``state_dict()`` / ``load_state_dict()``;
* optionally ``sync_ranks()``: under torchrun, called on every rank at the end of each iteration
  (also one cut short by a stop signal), before its checkpoint: what the ranks accumulated on their
  own during it is merged (SAC/TD3: the obs statistics).

The schedule is step-driven. One vectorised step is one ``env.step`` of all N envs (N env steps).
The first ``algo.learning_starts`` env steps act with ``random_act``; from then on every
vectorised step adds ``algo.updates_per_step`` to a credit and runs its whole part as gradient
steps (0.25: one every 4 vectorised steps; 4: four per step). An iteration is ``algo.num_steps``
vectorised steps: one metrics row, with the update metrics averaged over its gradient steps
(read back once per iteration), and the points where evaluation and checkpoints are due.
``total_steps`` rounds up to whole vectorised steps; the last iteration may be shorter.

Stop signals. Updates are short, so a stop signal is honoured after the vectorised step (and its
updates) under way: the state then is a consistent step boundary and is what ``latest.pt``
holds, with the iteration's rows so far (``iteration_rows``). The partial row is logged; a
resumed run drops it and logs the whole iteration's row. A signal inside an evaluation aborts it
(the state is still the step boundary before it); a second signal elsewhere falls back to the
copy taken when the iteration began (:meth:`Runner.boundary_payload`).

Replay persistence. With ``algo.save_replay`` every write of ``latest.pt`` or ``best.pt`` also
writes ``checkpoints/replay.pt`` (atomically, never torn by a signal) with the global step it
matches. A resume loads it only when that step is the checkpoint's; otherwise the replay restarts
empty and the warm-up of ``learning_starts`` random steps is redone from the resume step (said in
one line). With env state (torch-batched and MuJoCo Warp envs) and the replay restored, a resumed
run is bitwise identical to the uninterrupted one: the RNGs, the agent's generator, the update
credit, the replay and the iteration's rows all come back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from drl import distributed
from drl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drl.guards import EnvStepError, NonFiniteError, check_update, writing
from drl.logging import EpisodeWindow, RunLogger, Stopwatch
from drl.resources import check_fits, step_bytes, storage_bytes
from drl.runners.base import EpisodeTracker, Runner
from drl.runners.common import note
from drl.storage import ReplayBuffer

__all__ = ["OffPolicyRunner", "REPLAY_FILE"]

REPLAY_FILE = "replay.pt"  # in the run's checkpoints/ folder
_ENV_FIELDS = ("reward", "rewards", "obs", "next_obs", "terminated", "truncated")  # what the env produced


def _from_env(quantity: str) -> bool:
    """Whether a rollout value of this name came from the env (not computed by the agent)."""
    return quantity.split("/")[0] in _ENV_FIELDS


class OffPolicyRunner(Runner):
    """Owns the envs, replay buffer, agent, logging and checkpoints of one off-policy run.

    See :class:`Runner` for the arguments and errors, the module docstring for the schedule,
    the stop rule and replay persistence.
    """

    def _reset_envs(self) -> Any:
        """Reset every env (see :meth:`Runner._reset_envs`). On a resume without env state the replay
        already holds transitions: the newest one of every env is marked ``truncated`` (its ``next_obs``
        is the true next obs), so no n-step window runs from the old episode into the new one."""
        if len(self.replay) > 0:
            self.replay.data["truncated"][(self.replay.step - 1) % self.replay.capacity] = True
        return super()._reset_envs()

    # --- storage and schedule ---------------------------------------------------------------
    def _build_storage(self) -> None:
        algo, num_envs = self.cfg.algo, self.cfg.env.num_envs
        self.num_steps = algo.num_steps
        self.steps_per_iteration = self.num_steps * num_envs * self.world  # all ranks' env steps (torchrun)
        what = f" x {self.world} ranks" if self.world > 1 else ""
        self._round_total_steps(num_envs * self.world, f"whole vectorised steps of env.num_envs = {num_envs}{what}")
        self.capacity = math.ceil(algo.buffer_size / num_envs)  # rounds of N transitions
        fields = self.agent.storage_fields()
        # the replay, plus the env reward (float32) and done flag (bool) of one iteration for episode statistics
        needed = storage_bytes(self.capacity, num_envs, fields) + self.num_steps * num_envs * 5
        check_fits(needed, self.device,
                   f"the replay buffer (algo.buffer_size = {algo.buffer_size:,} transitions of "
                   f"{step_bytes(fields):,} bytes, as {self.capacity:,} rounds of env.num_envs = {num_envs})",
                   "lower config key 'algo.buffer_size'")
        self.replay = ReplayBuffer(self.capacity, num_envs, fields, self.device)
        notes = [self._rounding_note] if self._rounding_note else []
        if self.capacity * num_envs != algo.buffer_size:
            notes.append(f"note: algo.buffer_size {algo.buffer_size:,} rounded up to {self.capacity * num_envs:,} "
                         f"transitions ({self.capacity:,} whole vectorised steps of env.num_envs = {num_envs})")
        if algo.learning_starts >= self.cfg.total_steps:
            notes.append(f"note: algo.learning_starts {algo.learning_starts:,} >= total_steps "
                         f"{self.cfg.total_steps:,}: every action is random (the warm-up lasts the whole run, so "
                         "the agent is trained on at most the last step); lower algo.learning_starts or raise "
                         "total_steps")
        self._rounding_note = "\n".join(notes) or None
        self._replay_step: int | None = 0  # the global_step the replay's contents match; None: mid-step
        self._replay_file_step: int | None = None  # the global_step of the replay.pt on disk, when known
        # the current iteration's rows so far: env rewards and done flags [num_steps, N], the replay row
        # each was stored at (-1: not in the replay), the update metrics' sums (weighted by the number of
        # gradient steps) and that number
        self._env_rewards = torch.zeros(self.num_steps, num_envs, device=self.device)
        self._episode_ends = torch.zeros(self.num_steps, num_envs, dtype=torch.bool, device=self.device)
        self._replay_rows: list[int] = []
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._updates = 0
        self._stats_from = 0  # rows before it belong to episodes dropped by an env reset (a resume without env state)
        self._at_step_boundary = True  # the state now is consistent (what a stop saves)

    @property
    def planned_steps(self) -> int:
        return self.cfg.total_steps

    @property
    def finished(self) -> bool:
        """All steps done and the last iteration's row logged."""
        state = self.state
        return state["global_step"] >= self.cfg.total_steps and state["row_start_step"] == state["global_step"]

    def _initial_state(self) -> dict[str, Any]:
        return {**super()._initial_state(),
                "row_start_step": 0,  # global_step when the current iteration began
                "update_credit": 0.0,  # gradient steps owed (fractional part of updates_per_step sums)
                "learning_starts_step": self.cfg.algo.learning_starts}  # first step with updates (a new replay)

    def _rows_done(self) -> int:
        """Vectorised steps done in the current iteration."""
        return (self.state["global_step"] - self.state["row_start_step"]) // (self.cfg.env.num_envs * self.world)

    def _rollout_start_step(self) -> int:
        return self.state["row_start_step"]

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        """:meth:`Runner.checkpoint_payload` plus ``iteration_rows``: the current iteration's rows so far
        (env rewards and done flags ``[t, N]``, replay rows, update-metric sums), so a run stopped
        inside an iteration logs the same row for it after a resume. The replay is in its own file."""
        payload = super().checkpoint_payload()
        t = self._rows_done()
        payload["iteration_rows"] = {
            "env_rewards": self._env_rewards[:t], "episode_ends": self._episode_ends[:t],
            "replay_rows": list(self._replay_rows), "stats_from": self._stats_from, "updates": self._updates,
            # floats, not tensors: a metric may be NaN by design, which a checkpoint refuses in a tensor
            "metric_sums": {name: [float(x), str(x.dtype).removeprefix("torch.")]
                            for name, x in self._metric_sums.items()},
        }
        return payload

    def boundary_payload(self) -> dict[str, Any]:
        """The state now when it is a step boundary (between vectorised steps, or in an evaluation);
        else (inside a step, or while the iteration's end is checked and logged) the copy taken when
        the iteration began."""
        if self._at_step_boundary:
            return self.checkpoint_payload()
        return super().boundary_payload()

    def save(self, name: str = "latest.pt", payload: dict[str, Any] | None = None, **extra: Any) -> Path:
        """:meth:`Runner.save`; with ``algo.save_replay``, writing ``latest.pt`` or ``best.pt`` also writes
        ``replay.pt`` when the replay matches the checkpoint's step (not yet written for it)."""
        payload = self.checkpoint_payload() if payload is None else payload
        path = super().save(name, payload, **extra)
        step = payload["runner"]["global_step"]
        if (name in ("latest.pt", "best.pt") and self.cfg.algo.save_replay and step == self._replay_step
                and step != self._replay_file_step and distributed.is_main()):  # torchrun: rank 0's replay
            with self.stop.shielded():
                save_checkpoint(self.run_dir / "checkpoints" / REPLAY_FILE,
                                {"replay": self.replay.state_dict(), "global_step": step})
            self._replay_file_step = step
        return path

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        super()._restore(ckpt, path)
        rows = ckpt.get("iteration_rows", {})
        t = len(rows.get("replay_rows", []))
        if t:
            self._env_rewards[:t].copy_(rows["env_rewards"])
            self._episode_ends[:t].copy_(rows["episode_ends"])
            self._replay_rows = list(rows["replay_rows"])
            self._stats_from = int(rows["stats_from"])
        self._updates = int(rows.get("updates", 0))
        self._metric_sums = {name: torch.tensor(value, dtype=getattr(torch, dtype), device=self.device)
                             for name, (value, dtype) in rows.get("metric_sums", {}).items()}
        if self.finished:
            return  # nothing left to train (api.resume leaves the run as it is): the replay is not needed
        step, reason = self.state["global_step"], self._load_replay(path.parent / REPLAY_FILE)
        if reason is None:
            self._replay_step = self._replay_file_step = step
            return
        self._replay_rows = [-1] * len(self._replay_rows)
        self.state["learning_starts_step"] = step + self.cfg.algo.learning_starts
        note(f"the replay buffer was not restored ({reason}): it restarts empty and the warm-up of "
             f"learning_starts = {self.cfg.algo.learning_starts:,} random steps is redone from step {step:,}")

    def _load_replay(self, path: Path) -> str | None:
        """Load ``replay.pt`` into the replay buffer; None, or why it was not loaded."""
        step = self.state["global_step"]
        if not self.cfg.algo.save_replay:
            return "algo.save_replay is false"
        if not path.is_file():
            return f"no {path.name}"
        try:
            saved = load_checkpoint(path, map_location=self.device)
            if saved.get("global_step") != step:
                return f"{path.name} is of step {saved.get('global_step')}, the checkpoint of step {step}"
            self.replay.load_state_dict(saved["replay"])
        except (CheckpointError, KeyError, ValueError) as err:
            self.replay.clear()
            return f"{path.name} does not load: {err}"
        return None

    # --- failures -------------------------------------------------------------------------
    def _rollout_tensors(self, env_rewards: torch.Tensor) -> dict[str, torch.Tensor]:
        """The current iteration's values ``[t, N, ...]`` in the order a tie at one step is blamed:
        the obs the agent read, what the agent computed (actions, ...), then what the env returned
        (reward, next obs, ...). Stored values are read back from the replay rows of the iteration
        (rows no longer held, or from before a replay restart, read as 0)."""
        rows = torch.tensor(self._replay_rows, dtype=torch.int64, device=self.device)
        missing = rows < 0
        stored = {}
        for name, x in self.replay.items():
            if x.is_floating_point():
                values = x[rows.clamp(min=0) % self.capacity]
                stored[name] = values.masked_fill(missing.view(-1, *[1] * (values.dim() - 1)), 0.0)
        inputs = {k: v for k, v in stored.items() if k.split("/")[0] == "obs"}
        outputs = {k: v for k, v in stored.items() if _from_env(k) and k not in inputs}
        agent = {k: v for k, v in stored.items() if k not in inputs and k not in outputs}
        return {**inputs, **agent, "reward": env_rewards, **outputs}

    def _check_iteration(self, obs: Any, metrics: dict[str, float], detail: str) -> None:
        """The finiteness checks of an iteration's end (or of a stop): the rows so far, the latest obs,
        the update metrics and the agent state. A non-finite value the agent computed is reported as
        the update's (loss, parameter) when the agent state is not finite: that is where it came from."""
        state, t = self.state, self._rows_done()
        try:
            self._check_rollout(self._env_rewards, rows=t, obs=obs, detail=detail)
        except NonFiniteError as err:
            if not _from_env(err.quantity):
                check_update(metrics, self.agent.state_dict(), state["global_step"], state["iteration"] + 1,
                             detail=detail)
            raise
        check_update(metrics, self.agent.state_dict(), state["global_step"], state["iteration"] + 1, detail=detail)

    # --- the loop -------------------------------------------------------------------------
    def _metric_means(self) -> dict[str, float]:
        """The iteration's update metrics, each the mean over its gradient steps (one device sync)."""
        if not self._updates:
            return {}
        sums = torch.stack([x.detach().to(torch.float64) for x in self._metric_sums.values()])
        return dict(zip(self._metric_sums, (sums / self._updates).tolist(), strict=True))

    def _row(self, tracker: EpisodeTracker, window: EpisodeWindow, metrics: dict[str, float],
             sps: float) -> dict[str, Any]:
        """The iteration's metrics row from its rows so far; updates ``tracker`` and ``window``."""
        state, t = self.state, self._rows_done()
        iter_return, episodes = math.nan, 0
        if t > self._stats_from:
            iter_return, _, episodes = tracker.update(self._env_rewards[self._stats_from:t],
                                                      self._episode_ends[self._stats_from:t])
            if episodes:
                window.extend(tracker.finished_returns.tolist(), tracker.finished_lengths.tolist())
        row = {"global_step": state["global_step"], "iteration": state["iteration"] + 1,
               "episode_return": window.mean_return, "episode_length": window.mean_length,
               "episodes": episodes, "iter_episode_return": iter_return,
               "eval_return": math.nan, "eval_return_std": math.nan, **metrics,
               "wall_s": state["wall_s"], "sps": sps}
        if self.task_stats is not None:  # ep_return/<task>, success/<task>; a partial row changes nothing
            rows = slice(self._stats_from, max(t, self._stats_from))
            row.update(self.task_stats.update(tracker, self._episode_ends[rows], rows, commit=tracker is self.tracker))
        return row

    def _open_logger(self, logged_step: int | None = None, grow_columns: bool = True) -> RunLogger:
        """The agent's metrics become columns of metrics.csv; a run stopped inside an iteration logged a
        partial row, which a resume drops (the whole row comes)."""
        return super()._open_logger(self.state["row_start_step"] if logged_step is None else logged_step,
                                    grow_columns)

    def _skip_past_evaluations(self) -> None:
        """Nothing to skip: a checkpoint inside an iteration may precede its due evaluation, which is done."""

    def _train_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        cfg, algo, state = self.cfg, self.cfg.algo, self.state
        num_envs, agent, replay = cfg.env.num_envs, self.agent, self.replay
        window = EpisodeWindow()
        window.load_state_dict(state.get("episode_window", {}))
        reward_rows, end_rows = self._env_rewards.unbind(0), self._episode_ends.unbind(0)  # per-step views
        # a restored env state continues where the checkpoint left it; otherwise the envs are reset
        if self._obs is None:
            try:
                self._obs = self._reset_envs()
            except Exception as err:
                self._raise_env_error(err, None)
            self._stats_from = self._rows_done()  # the episodes of earlier rows of this iteration were dropped
        obs = self._obs
        while not self.finished:
            self._begin_iteration()
            segment_start, segment_step = clock(), state["global_step"]
            end_step = min(state["row_start_step"] + self.steps_per_iteration, cfg.total_steps)
            t = self._rows_done()
            try:  # free unless something raises; then a non-finite input is looked for first
                while state["global_step"] < end_step and not self._stop_agreed():  # torchrun: any rank's
                    self._at_step_boundary = False
                    if state["global_step"] < state["learning_starts_step"]:
                        action, record = agent.random_act(obs)
                    else:
                        action, record = agent.act(obs)
                    try:
                        obs, reward, terminated, truncated, info = self.env.step(action)
                    except Exception as err:
                        self._raise_env_error(err, t, self._env_rewards, obs)
                    self._replay_step = None
                    self._replay_rows.append(replay.step)
                    replay.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
                    reward_rows[t].copy_(info.get("env_reward", reward))
                    torch.logical_or(terminated, truncated, out=end_rows[t])
                    if self.task_stats is not None:  # a multi-task env: its info["success"] row
                        self.task_stats.record(t, info)
                    self._obs = obs
                    state["global_step"] += num_envs * self.world  # every rank stepped its envs
                    t += 1
                    if state["global_step"] >= state["learning_starts_step"]:
                        state["update_credit"] += algo.updates_per_step
                        num_updates = int(state["update_credit"])
                        if num_updates:
                            state["update_credit"] -= num_updates
                            metrics = agent.update(replay, num_updates, state["global_step"] / cfg.total_steps)
                            for name, value in metrics.items():  # no op per metric for the usual one update
                                weighted = value.detach() if num_updates == 1 else value.detach() * num_updates
                                self._metric_sums[name] = (weighted if name not in self._metric_sums
                                                           else self._metric_sums[name] + weighted)
                            self._updates += num_updates
                    self._replay_step = state["global_step"]
                    self._at_step_boundary = True
            except (EnvStepError, NonFiniteError):
                raise
            except Exception as err:
                cause = f"then {type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
                self._check_rollout(self._env_rewards, rows=t, obs=obs, detail=cause)
                raise
            self._sync_ranks()  # under torchrun (every rank at the same step): the obs statistics merged
            sps = (state["global_step"] - segment_step) / max(clock() - segment_start, 1e-9)
            state["wall_s"] = clock()
            self._at_step_boundary = False  # until the iteration is checked
            metrics = self._metric_means()
            if self._stop_agreed():  # the state is a step boundary: log the rows so far, save it as it is
                self._check_iteration(obs, metrics, "stopped by a signal; no checkpoint written from this state")
                self._at_step_boundary = True
                if t:
                    tracker, partial_window = EpisodeTracker(num_envs, self.device), EpisodeWindow()
                    tracker.load_state_dict(self.tracker.state_dict())  # the rows stay pending in the checkpoint
                    partial_window.load_state_dict(window.state_dict())
                    row = self._row(tracker, partial_window, metrics, sps)
                    row["eval_s"] = state["eval_s"]
                    with writing(self.run_dir / "metrics.csv"):
                        logger.log(row)
                return True
            self._check_iteration(obs, metrics, "no checkpoint written from this state")
            if self.wrappers:  # learned wrapper parts train on the transitions they saw in this iteration
                metrics |= self.wrappers.update()
            self._at_step_boundary = True
            last = state["global_step"] >= cfg.total_steps
            eval_return, eval_return_std = self._evaluate_if_due(clock, last)  # interruptible: nothing changed yet
            self._at_step_boundary = False  # the iteration is committed: a forced stop goes back to its start
            row = self._row(self.tracker, window, metrics, sps)
            row["eval_return"], row["eval_return_std"] = eval_return, eval_return_std
            row.update(self.extra_eval)  # the agent's other evaluations, when it has some (Runner._evaluate_variants)
            row["wall_s"] = state["wall_s"] = clock()
            state["episode_window"] = window.state_dict()
            state["iteration"] += 1
            state["row_start_step"] = state["global_step"]
            self._replay_rows, self._metric_sums, self._updates, self._stats_from = [], {}, 0, 0
            self._log_and_checkpoint(logger, row, last)
            self._end_iteration()
            self._at_step_boundary = True
        return False
