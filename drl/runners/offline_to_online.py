"""Offline-then-online training: gradient steps on demonstrations first, then the off-policy loop.

A thin subclass of :class:`drl.runners.off_policy.OffPolicyRunner`. It still knows nothing about the
algorithm; besides the off-policy contract it calls two agent methods (AAWR and the residual agent inherit
them from :class:`drl.agents.off_policy_base.OffPolicyAgent`; BC has its own, :class:`drl.agents.bc.BC`):

* ``load_demos() -> int``: load the demonstrations the config names (0: none), before the run folder
  is claimed, so a missing or mismatched demo file fails without leaving a run behind;
* ``offline_update(num_updates) -> {name: 0-d tensor}``: gradient steps on demonstrations only.

and reads two config fields: ``algo.offline_updates`` (gradient steps of the offline phase) and
``algo.offline_log_interval`` (offline steps per metrics row). Then the online loop of
:class:`OffPolicyRunner` runs unchanged, for ``total_steps`` online env steps; the agent's ``update``
mixes demonstrations into its batches. Without demos the offline phase is skipped (said in one line)
and the run is purely online.

Offline rows. ``metrics.csv`` keeps one ``global_step`` axis, monotonic over the whole run: offline rows
are keyed ``global_step = u - U`` (``u`` offline updates done of ``U``), so they run from ``-U + interval``
up to 0 and precede every online row; the row at 0 closes the offline phase and carries its evaluation
(``eval_return``), and ``offline_updates`` holds ``u``. No env step is taken offline (the runner's
``global_step`` stays 0). After every offline row ``latest.pt`` is written (and ``best.pt`` after the
evaluation that closes the phase), so a run killed during the offline phase resumes from its last row:
the RNGs and the agent's generator come back, the rows after it are dropped from ``metrics.csv``, and the
resumed run redoes the same updates. A stop signal during the offline phase saves the state as of the
last logged row (the partial row is redone on resume).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from drl.guards import check_update, writing
from drl.logging import RunLogger, Stopwatch
from drl.runners.off_policy import OffPolicyRunner
from drl.storage.demos import check_demo_env

__all__ = ["OfflineToOnlineRunner"]


class OfflineToOnlineRunner(OffPolicyRunner):
    """:class:`OffPolicyRunner` preceded by ``algo.offline_updates`` gradient steps on demonstrations.

    See the module docstring for the offline rows, checkpoints and resume; :class:`Runner` for the
    arguments and errors (plus the agent's ``load_demos`` errors: a ConfigError naming ``algo.demos``).
    """

    def _build_storage(self) -> None:
        super()._build_storage()
        algo = self.cfg.algo
        self.num_demos = self.agent.load_demos()
        if self.num_demos:
            check_demo_env(getattr(self.agent, "demo_meta", {}), algo.demos, self.cfg.env.id, self.cfg.env.kwargs)
        self.offline_updates = algo.offline_updates if self.num_demos else 0
        if algo.offline_updates and not self.num_demos:
            skipped = (f"note: no demonstrations (algo.demos is not set): no offline phase (algo.offline_updates "
                       f"{algo.offline_updates:,} ignored); training is online from step 0")
            self._rounding_note = "\n".join(filter(None, [self._rounding_note, skipped]))

    def _initial_state(self) -> dict[str, Any]:
        return {**super()._initial_state(), "offline_done": 0}  # offline gradient steps done

    @property
    def offline_finished(self) -> bool:
        return self.state["offline_done"] >= self.offline_updates

    def _offline_key(self) -> int:
        """The ``global_step`` an offline row is logged at: ``offline_done - offline_updates`` (<= 0)."""
        return self.state["offline_done"] - self.offline_updates

    def _open_logger(self, logged_step: int | None = None, grow_columns: bool = True) -> RunLogger:
        """During the offline phase, rows after the last logged offline row (its key) are dropped on resume."""
        if logged_step is None and not self.offline_finished:
            logged_step = self._offline_key()
        return super()._open_logger(logged_step, grow_columns)

    def _train_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        if not self.offline_finished and self._offline_loop(logger, clock):
            return True
        return super()._train_loop(logger, clock)

    def _offline_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        """The offline phase: rows of ``offline_log_interval`` gradient steps on demos; True when stopped."""
        state, stop, agent = self.state, self.stop, self.agent
        while not self.offline_finished:
            if stop.requested:  # between rows: the state now is the last row's
                return True
            self._begin_iteration()
            self._at_step_boundary = False  # a stop inside a row goes back to the row's start
            row_start, sums, count = clock(), {}, 0
            end = min(state["offline_done"] + self.cfg.algo.offline_log_interval, self.offline_updates)
            while state["offline_done"] < end:
                if stop.requested:
                    return True
                with stop.interruptible():
                    stats = agent.offline_update(1)
                for name, value in stats.items():
                    sums[name] = value.detach() if name not in sums else sums[name] + value.detach()
                count += 1
                state["offline_done"] += 1
            metrics = {}
            if sums:
                means = torch.stack([x.to(torch.float64) for x in sums.values()]) / count
                metrics = dict(zip(sums, means.tolist(), strict=True))
            detail = "in the offline phase; no checkpoint written from this state"
            check_update(metrics, agent.state_dict(), state["global_step"], state["iteration"] + 1, detail=detail)
            ups = count / max(clock() - row_start, 1e-9)
            eval_return, eval_return_std = math.nan, math.nan
            if self.offline_finished:  # the offline phase ends: evaluate the pre-trained policy
                eval_start = clock()
                eval_return, eval_return_std = self._evaluate()
                state["eval_s"] += clock() - eval_start
            state["wall_s"] = clock()
            row = {"global_step": self._offline_key(), "iteration": state["iteration"] + 1,
                   "episode_return": math.nan, "episode_length": math.nan, "episodes": 0,
                   "iter_episode_return": math.nan, "eval_return": eval_return, "eval_return_std": eval_return_std,
                   **metrics, "offline_updates": state["offline_done"], "updates_per_s": ups,
                   "wall_s": state["wall_s"], "sps": 0.0, "eval_s": state["eval_s"]}
            state["iteration"] += 1
            with writing(self.run_dir / "metrics.csv"):
                logger.log(row)
            self.save()  # latest.pt after every offline row: a kill resumes from here
            if self._best_pending:
                self.save("best.pt")
                self._best_pending = False
            self._end_iteration()
            self._at_step_boundary = True
        return False
