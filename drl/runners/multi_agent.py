"""The on-policy loop for multi-agent envs (:mod:`envs.multi_agent`): per-agent returns beside the team's.

:class:`MultiAgentOnPolicyRunner` is :class:`OnPolicyRunner` with the env reward ``[N, A]`` (one column per
agent, in ``env.agents`` order) kept per step and tracked per column. It logs

* ``episode_return`` (and ``eval_return``): the team return, the mean of the agents' returns (a
  cooperative env gives every agent the shared reward, so this is that reward's return);
* ``ep_return/<agent>`` and ``eval_return/<agent>``: each agent's own return.

The agent (e.g. :class:`drl.agents.happo.HAPPO`) decides what it learns from the columns; the runner only
stores and reports them. Everything else (checkpoints, bitwise resume on envs with state, failures)
is the on-policy runner's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from drl.config import ConfigError
from drl.logging import EpisodeWindow, RunLogger
from drl.runners.on_policy import OnPolicyRunner
from envs.multi_agent import is_multi_agent

__all__ = ["MultiAgentOnPolicyRunner", "agent_names"]


def agent_names(env: Any) -> tuple[str, ...]:
    """``env.agents`` of a multi-agent env (or of the env a wrapper stack ends in); ConfigError otherwise."""
    for candidate in (env, getattr(env, "unwrapped", None)):
        if candidate is not None and is_multi_agent(candidate):
            return tuple(candidate.agents)
    raise ConfigError(f"config key 'env.id': {type(env).__name__} is not a multi-agent env (no `agents`); "
                      "use one of the multi-agent ids `drl list` shows (e.g. drl/Rendezvous-v0)")


class MultiAgentOnPolicyRunner(OnPolicyRunner):
    """:class:`OnPolicyRunner` on a multi-agent env (see the module doc); same arguments and errors, plus a
    ConfigError when the env is not multi-agent."""

    multi_agent = True
    _agent_windows: dict[str, EpisodeWindow] | None = None

    @property
    def agents(self) -> tuple[str, ...]:
        """The env's agent names, in reward-column order."""
        return agent_names(self.env)

    @property
    def reward_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        return (len(self.agents),)

    def _open_logger(self, logged_step: int | None = None, grow_columns: bool = False) -> RunLogger:
        return super()._open_logger(logged_step, grow_columns=True)  # per-agent columns join as they come

    def _episode_columns(self, row: dict[str, Any], episodes: int) -> None:
        """``ep_return/<agent>``: each agent's mean return over its last 100 episodes (a window per agent,
        saved in the run state like the team's)."""
        if self._agent_windows is None:
            saved = self.state.get("agent_windows", {})
            self._agent_windows = {a: EpisodeWindow() for a in self.agents}
            for agent, window in self._agent_windows.items():
                window.load_state_dict(saved.get(agent, {}))
        if episodes:
            lengths = self.tracker.finished_lengths.tolist()
            for i, window in enumerate(self._agent_windows.values()):
                window.extend(self.tracker.finished_columns[:, i].tolist(), lengths)
            self.state["agent_windows"] = {a: w.state_dict() for a, w in self._agent_windows.items()}
        for agent, window in self._agent_windows.items():
            row[f"ep_return/{agent}"] = window.mean_return

    def _summarize_returns(self, returns: list[Any]) -> tuple[float, float]:
        """The team's mean and std over episodes (an episode's team return: the mean over agents); each
        agent's mean into ``eval_return/<agent>``."""
        table = np.asarray(returns, dtype=np.float64).reshape(len(returns), -1)  # [episodes, A]
        for i, agent in enumerate(self.agents):
            self.extra_eval[f"eval_return/{agent}"] = float(table[:, i].mean())
        team = table.mean(1)
        return float(team.mean()), float(team.std())
