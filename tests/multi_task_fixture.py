"""A small multi-task env on the multi-task contract (SPEC "Multi-task contract"), for the CAMRL tests.

``T`` CartPoles that differ only in the pole's half-length, concatenated on the env axis in contiguous
blocks of ``num_envs / T`` (as even as possible when T does not divide N): obs ``{"policy": [N, 4], "task":
one-hot [N, T]}``, ``env.num_tasks``,
``env.task_names``, ``env.task_ids [N]`` and ``info["task_id"] [N]`` every step.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from envs import ENVS, register_env
from envs.torch_classic.cartpole import CartPole

FIXTURE_ID = "drl/test-MT-CartPole-v0"


class MultiTaskCartPole(CartPole):
    """``len(lengths)`` CartPole tasks (pole half-lengths ``lengths``), about ``num_envs / T`` envs each."""

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", max_episode_steps: int = 200,
                 lengths: tuple[float, ...] = (0.25, 0.5, 1.0)):
        num_tasks = len(lengths)
        super().__init__(num_envs, device, max_episode_steps)
        self.num_tasks = num_tasks
        self.task_names = tuple(f"length-{length:g}" for length in lengths)
        self.task_ids = torch.arange(num_envs, device=self.device) * num_tasks // num_envs  # contiguous blocks
        self.length = torch.tensor(lengths, dtype=self.dtype, device=self.device)[self.task_ids]
        self._one_hot = torch.nn.functional.one_hot(self.task_ids, num_tasks).to(torch.float32)
        policy = self.single_observation_space
        self.single_observation_space = gym.spaces.Dict(
            {"policy": policy, "task": gym.spaces.Box(0.0, 1.0, (num_tasks,), np.float32)})
        self.observation_space = batch_space(self.single_observation_space, num_envs)

    def _observe(self) -> dict[str, torch.Tensor]:
        return {"policy": super()._observe(), "task": self._one_hot.clone()}

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        reward, terminated = super()._physics_step(actions)
        self._step_info["task_id"] = self.task_ids
        return reward, terminated


if FIXTURE_ID not in ENVS:
    register_env(FIXTURE_ID, "tests.multi_task_fixture:MultiTaskCartPole", "torch (batched)", "cpu, cuda",
                 "test fixture: CartPoles with 3 pole lengths on the multi-task contract")
