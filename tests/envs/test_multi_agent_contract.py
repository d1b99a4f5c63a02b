"""The multi-agent env contract (envs/multi_agent.py) on a two-agent toy with heterogeneous spaces."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs.multi_agent import MultiAgentTorchVecEnv, is_multi_agent


class _TwoCounters(MultiAgentTorchVecEnv):
    """Agent "a" (obs 1, action 2) and "b" (obs 3, action 1) push a shared counter; terminates at 3."""

    def __init__(self, num_envs: int = 4):
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        super().__init__(num_envs, {"a": box(1), "b": box(3)}, {"a": box(2), "b": box(1)}, box(2),
                         max_episode_steps=5, teams={"left": ["a"], "right": ["b"]})
        self.count = torch.zeros(num_envs)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        self.count = torch.where(mask, torch.zeros_like(self.count), self.count)

    def _observe(self) -> dict[str, torch.Tensor]:
        c = self.count[:, None]
        return {"a": c, "b": c.repeat(1, 3), "state": torch.cat([c, 2 * c], 1)}

    def _physics_step(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        self.count = self.count + actions["a"].sum(1) + actions["b"][:, 0]
        return torch.stack([self.count, -self.count], 1), self.count >= 3


def test_contract_shapes_autoreset_and_teams() -> None:
    env = _TwoCounters()
    assert is_multi_agent(env) and env.agents == ("a", "b") and env.num_agents == 2
    assert env.team_columns("right") == [1]
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"a", "b", "state"} and obs["b"].shape == (4, 3) and obs["state"].shape == (4, 2)
    act = {"a": torch.tensor([[1.0, 1.0]] * 4), "b": torch.tensor([[1.0], [0.0], [0.0], [0.0]])}
    obs, reward, terminated, truncated, info = env.step(act)
    assert reward.shape == (4, 2) and torch.equal(reward[:, 0], torch.tensor([3.0, 2.0, 2.0, 2.0]))
    assert terminated.tolist() == [True, False, False, False] and not truncated.any()
    assert obs["a"][0, 0] == 0 and info["final_obs"]["a"][0, 0] == 3 and info["_final_obs"][0]
    assert env.single_observation_space["state"].shape == (2,)


def test_bad_actions_and_bad_teams_are_one_line_errors() -> None:
    env = _TwoCounters()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"one action tensor per agent \['a', 'b'\], got \['a'\]"):
        env.step({"a": torch.zeros(4, 2)})
    box = gym.spaces.Box(-1, 1, (1,))
    with pytest.raises(ValueError, match="exactly once"):
        MultiAgentTorchVecEnv(1, {"a": box, "b": box}, {"a": box, "b": box}, box, None, teams={"t": ["a"]})
    with pytest.raises(ValueError, match="same order"):
        MultiAgentTorchVecEnv(1, {"a": box, "b": box}, {"b": box, "a": box}, box, None)
