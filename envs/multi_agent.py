"""The multi-agent environment contract: named agents with their own spaces, batched on torch.

A multi-agent env is a :class:`envs.core.TorchVecEnv` (same SAME_STEP autoreset, ``final_obs``,
step counting, truncation and env-state capability) whose observations, actions and rewards carry an
agent axis::

    obs, info = env.reset(seed=0)
    # obs = {"agent_0": [N, *obs_0], "agent_1": [N, *obs_1], ..., "state": [N, *state]}
    obs, reward, terminated, truncated, info = env.step({"agent_0": a0, "agent_1": a1, ...})
    # reward [N, A] (column i is env.agents[i]); terminated, truncated [N], shared by all agents

* ``env.agents``: the agent names, in the order of the reward columns.
* ``env.single_observation_spaces[name]`` / ``env.single_action_spaces[name]``: each agent's own
  (heterogeneous) spaces for one env copy; ``env.single_state_space``: the global state a
  centralised critic reads (``obs["state"]``). Actors must only read their own entry.
* ``env.single_observation_space`` is the ``Dict`` of every agent's space plus ``"state"``;
  ``env.single_action_space`` the ``Dict`` of the agents' action spaces (so generic code that batches,
  stores or samples spaces keeps working).
* ``env.teams``: ``{team name: agent names}``; cooperative envs have one team holding every agent.
  Competitive envs (two teams) give each team its own reward columns.
* Competitive envs report who won: ``info["<team>_win"]`` (bool ``[N]``, meaningful where the episode
  ended), which :mod:`drl.league` counts into win rates.
* ``info["final_obs"]`` has the same dict structure as ``obs``; ``info["env_reward"]``, when a wrapper
  changed the reward, is the env's own ``[N, A]`` reward.

Subclasses implement the :class:`~envs.core.TorchVecEnv` hooks with dicts: ``_observe()`` returns the
dict above, ``_physics_step(actions)`` receives the dict of ``[N, *act_i]`` tensors on ``env.device``
and returns ``(reward [N, A], terminated [N])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import torch

from envs.core import TorchVecEnv

__all__ = ["MultiAgentTorchVecEnv", "is_multi_agent", "STATE_KEY"]

STATE_KEY = "state"


def is_multi_agent(env: Any) -> bool:
    """True when ``env`` (or the env a wrapper stack ends in) follows the multi-agent contract."""
    return isinstance(getattr(env, "agents", None), tuple) and hasattr(env, "single_observation_spaces")


class MultiAgentTorchVecEnv(TorchVecEnv):
    """Base class of batched multi-agent torch envs (see the module doc for the contract).

    Args:
        num_envs: N, the number of env copies.
        observation_spaces: ``{agent: space}`` of one copy, in agent order (the reward columns).
        action_spaces: ``{agent: space}`` with the same keys, in the same order.
        state_space: the global state space of one copy (``obs["state"]``).
        max_episode_steps: truncation horizon (None: never truncated).
        device: the torch device every tensor lives on.
        teams: ``{team: [agents]}``, a partition of the agents; default one team ``"team"`` of all.

    Raises:
        ValueError: no agents, the two space dicts disagree on names or order, an agent is called
            ``"state"``, or ``teams`` is not a partition of the agents.
    """

    def __init__(
        self,
        num_envs: int,
        observation_spaces: Mapping[str, gym.Space],
        action_spaces: Mapping[str, gym.Space],
        state_space: gym.Space,
        max_episode_steps: int | None,
        device: str | torch.device = "cpu",
        teams: Mapping[str, Sequence[str]] | None = None,
    ):
        agents = tuple(observation_spaces)
        name = type(self).__name__
        if not agents:
            raise ValueError(f"{name}: a multi-agent env needs at least one agent")
        if tuple(action_spaces) != agents:
            raise ValueError(f"{name}: action_spaces name the agents {tuple(action_spaces)}, observation_spaces "
                             f"{agents}; give both in the same order")
        if STATE_KEY in agents:
            raise ValueError(f"{name}: no agent may be called {STATE_KEY!r} (the key of the global state)")
        teams = {"team": agents} if teams is None else {t: tuple(m) for t, m in teams.items()}
        members = [a for m in teams.values() for a in m]
        if sorted(members) != sorted(agents):
            raise ValueError(f"{name}: teams {teams} must hold every agent of {agents} exactly once")
        self.agents: tuple[str, ...] = agents
        self.teams: dict[str, tuple[str, ...]] = teams
        self.single_observation_spaces: dict[str, gym.Space] = dict(observation_spaces)
        self.single_action_spaces: dict[str, gym.Space] = dict(action_spaces)
        self.single_state_space = state_space
        joint_obs = gym.spaces.Dict({**self.single_observation_spaces, STATE_KEY: state_space})
        joint_act = gym.spaces.Dict(self.single_action_spaces)
        super().__init__(num_envs, joint_obs, joint_act, max_episode_steps, device)

    @property
    def num_agents(self) -> int:
        """A, the number of agents (reward columns)."""
        return len(self.agents)

    def team_columns(self, team: str) -> list[int]:
        """The reward columns of ``team``'s agents."""
        return [self.agents.index(a) for a in self.teams[team]]

    def _as_actions(self, actions: Any) -> dict[str, torch.Tensor]:
        if not isinstance(actions, Mapping) or set(actions) != set(self.agents):
            got = sorted(actions) if isinstance(actions, Mapping) else type(actions).__name__
            raise ValueError(f"{type(self).__name__}.step takes a dict with one action tensor per agent "
                             f"{list(self.agents)}, got {got}")
        return {a: torch.as_tensor(actions[a], device=self.device) for a in self.agents}
