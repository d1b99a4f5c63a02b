"""Per-task episode statistics of multi-task envs, routed by task id (generic: keyed on the env).

An env that follows the multi-task contract (:func:`envs.multi_task.is_multi_task`: ``task_names``
and ``task_ids`` ``[N]``) gets these metrics.csv columns from every runner:

* ``ep_return/<task>``: mean return of the task's last ``window`` finished training episodes (the env's
  own reward, as ``episode_return``); empty before the task's first finished episode;
* ``success/<task>`` and ``success`` (their mean over the tasks with episodes), when the env reports
  success (``env.reports_success``): the fraction of those episodes in which ``info["success"]`` was
  positive at some step (Meta-World's success rate);
* ``eval_return/<task>``, ``eval_success/<task>``, ``eval_success``: the same over the evaluation's
  episodes (each copy of the evaluation env keeps its task; ``eval_episodes`` is spread over the copies,
  so a multiple of ``env.num_eval_envs`` evaluates every task equally often).

A finished episode is routed to ``task_ids[env]`` of the copy it ran in. The per-step cost is one
device copy of ``info["success"]`` (when reported); the rest is done once per iteration.
"""

from __future__ import annotations

import collections
import copy
import math
from typing import Any

import torch

__all__ = ["TaskStatistics"]


class TaskStatistics:
    """The per-task windows, the success rows of the current iteration and the success carry.

    Args:
        env: a multi-task env (``task_names``, ``task_ids`` ``[N]``, optionally ``reports_success``).
        num_steps: rows of one iteration (the runner's ``num_steps``).
        device: where the rows live (the run's device).
        window: finished episodes per task the logged means cover.
    """

    def __init__(self, env: Any, num_steps: int, device: torch.device, window: int = 100):
        from drl.runners.base import EpisodeTracker

        self.task_names: tuple[str, ...] = tuple(env.task_names)
        self.task_ids = env.task_ids.to(device)
        self.reports_success = bool(getattr(env, "reports_success", False))
        num_envs = int(self.task_ids.shape[0])
        self.success_rows = torch.zeros(num_steps, num_envs, device=device) if self.reports_success else None
        self.success_tracker = EpisodeTracker(num_envs, device)  # per-episode sums of info["success"]
        self.returns = {name: collections.deque(maxlen=window) for name in self.task_names}
        self.successes = {name: collections.deque(maxlen=window) for name in self.task_names}

    @classmethod
    def for_env(cls, env: Any, num_steps: int, device: torch.device) -> TaskStatistics | None:
        """Statistics for ``env`` when it is a multi-task env, else None."""
        from envs.multi_task import is_multi_task

        return cls(env, num_steps, device) if is_multi_task(env) else None

    @property
    def columns(self) -> list[str]:
        """The metrics.csv columns (fixed for the run, so rows line up across a resume)."""
        cols = [f"ep_return/{name}" for name in self.task_names]
        evals = [f"eval_return/{name}" for name in self.task_names]
        if self.reports_success:
            cols += ["success"] + [f"success/{name}" for name in self.task_names]
            evals += ["eval_success"] + [f"eval_success/{name}" for name in self.task_names]
        return cols + evals

    def record(self, t: int, info: dict[str, Any]) -> None:
        """Keep row ``t`` of ``info["success"]`` ``[N]`` (the env reports success); no host sync."""
        if self.success_rows is not None:
            self.success_rows[t].copy_(info["success"])

    def reset(self) -> None:
        """Every env was reset: the running episodes' success restarts."""
        self.success_tracker.reset()

    def update(self, tracker: Any, done: torch.Tensor, rows: slice = slice(None),
               commit: bool = True) -> dict[str, float]:
        """Route the episodes that ended in ``done`` ``[t, N]`` to their tasks; the row entries.

        Call right after ``tracker.update(env_rewards[rows], done)`` (its ``finished_returns`` are the
        episodes ending in ``done`` in row-major order); ``rows`` selects the matching success rows.
        ``commit=False`` computes the entries without changing this object (a partial row).
        """
        stats = self if commit else self._copy()
        if done.shape[0]:
            env_index = done.nonzero()[:, 1]  # row-major, as boolean-mask indexing orders finished_returns
            tasks = self.task_ids[env_index].tolist()
            returns = tracker.finished_returns.tolist()
            for task, ret in zip(tasks, returns, strict=True):
                stats.returns[self.task_names[task]].append(float(ret))
            if self.success_rows is not None:
                stats.success_tracker.update(self.success_rows[rows], done)
                successes = (stats.success_tracker.finished_returns > 0).tolist()
                for task, ok in zip(tasks, successes, strict=True):
                    stats.successes[self.task_names[task]].append(float(ok))
        return stats.entries()

    def entries(self) -> dict[str, float]:
        """The training columns from the current windows (NaN: no finished episode yet)."""
        row = {f"ep_return/{name}": _mean(self.returns[name]) for name in self.task_names}
        if self.reports_success:
            per_task = {f"success/{name}": _mean(self.successes[name]) for name in self.task_names}
            row["success"] = _mean([v for v in per_task.values() if not math.isnan(v)])
            row.update(per_task)
        return row

    def evaluation(self, episodes: list[tuple[int, float, float]], eval_env: Any) -> dict[str, float]:
        """The evaluation columns from ``(env index, return, success)`` per episode of ``eval_env`` (a
        multi-task env with the same tasks, routed by its own ``task_ids``)."""
        if tuple(eval_env.task_names) != self.task_names:
            raise ValueError(f"the evaluation env's tasks {eval_env.task_names} are not the training env's "
                             f"{self.task_names}")
        task_ids = eval_env.task_ids.tolist()
        returns: dict[str, list[float]] = {name: [] for name in self.task_names}
        successes: dict[str, list[float]] = {name: [] for name in self.task_names}
        for index, ret, success in episodes:
            name = self.task_names[task_ids[index]]
            returns[name].append(ret)
            successes[name].append(float(success > 0))
        row = {f"eval_return/{name}": _mean(returns[name]) for name in self.task_names}
        if self.reports_success:
            rates = {f"eval_success/{name}": _mean(successes[name]) for name in self.task_names}
            row["eval_success"] = _mean([v for v in rates.values() if not math.isnan(v)])
            row.update(rates)
        return row

    def state_dict(self) -> dict[str, Any]:
        """The windows, the success carry and the success rows (a run stopped inside an iteration)."""
        state: dict[str, Any] = {"returns": {k: list(v) for k, v in self.returns.items()},
                                 "successes": {k: list(v) for k, v in self.successes.items()},
                                 "success_tracker": self.success_tracker.state_dict()}
        if self.success_rows is not None:
            state["success_rows"] = self.success_rows.clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (tasks missing from it start empty)."""
        for key in ("returns", "successes"):
            for name, window in getattr(self, key).items():
                window.clear()
                window.extend(state.get(key, {}).get(name, []))
        if "success_tracker" in state:
            self.success_tracker.load_state_dict(state["success_tracker"])
        if self.success_rows is not None and "success_rows" in state:
            self.success_rows.copy_(state["success_rows"])

    def _copy(self) -> TaskStatistics:
        clone = copy.copy(self)
        clone.returns = copy.deepcopy(self.returns)
        clone.successes = copy.deepcopy(self.successes)
        clone.success_tracker = copy.deepcopy(self.success_tracker)
        return clone


def _mean(values: Any) -> float:
    values = list(values)
    return math.fsum(values) / len(values) if values else math.nan
