"""A hand-driven vector env for wrapper tests (tests/test_shaping.py, tests/test_barfi.py)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


class ScriptedEnv(gym.vector.VectorEnv):
    """A hand-driven vector env: ``reset`` returns ``obs0``; step k returns ``script[k]`` =
    ``(obs, reward, terminated, truncated, final_obs)`` (tensors ``[N, ...]``), whatever the actions."""

    def __init__(self, obs0: torch.Tensor, script: list[tuple[torch.Tensor, ...]]):
        self.num_envs = obs0.shape[0]
        self.single_observation_space = gym.spaces.Box(-np.inf, np.inf, obs0.shape[1:], np.float32)
        self.single_action_space = gym.spaces.Discrete(2)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.obs0, self.script, self.k = obs0, script, 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.k = 0
        return self.obs0.clone(), {}

    def step(self, actions: torch.Tensor):
        obs, reward, terminated, truncated, final = self.script[self.k]
        self.k += 1
        info = {"final_obs": final, "_final_obs": terminated | truncated}
        return obs.clone(), reward.clone(), terminated, truncated, info
