"""A stand-in for an Isaac Lab ``DirectRLEnv`` (the interface envs/isaaclab.py relies on, nothing more), so the
adapter is tested without Isaac Lab: torch tensors on ``device``, ``single_observation_space`` a Dict of obs
groups ``"policy"`` / ``"critic"``, an unbounded Box action space, ``step -> (obs, reward, terminated,
time_outs, extras)`` with finished envs reset inside ``step`` (the returned obs is the next episode's first),
``reset(seed=, options=) -> (obs, extras)``, and, like Isaac Lab, one simulation per process.

The task: a point on a line, pushed by ``clamp(action, -1, 1)``, rewarded ``-|x - target|``; terminated when
``|x| > 3``, timed out after ``episode_length`` steps. ``"policy"`` = ``[x - target, v]``, ``"critic"`` adds
``[x, target, t / episode_length]``. With ``final_obs=True`` it also reports ``extras["final_obs"]``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch


class FakeDirectRLEnv:
    """See the module docstring. ``last_actions`` is the action the last ``step`` received."""

    alive = 0  # instances not closed: Isaac Lab holds one simulation per process

    def __init__(self, num_envs: int, device: str = "cpu", episode_length: int = 40, final_obs: bool = False,
                 grouped: bool = True):
        if FakeDirectRLEnv.alive:
            raise RuntimeError("simulation context already exists: cannot create a second one in this process")
        FakeDirectRLEnv.alive += 1
        self.num_envs = num_envs
        self.device = device
        self.episode_length = episode_length
        self.final_obs = final_obs
        policy = gym.spaces.Box(-np.inf, np.inf, (2,))
        critic = gym.spaces.Box(-np.inf, np.inf, (5,))
        self.single_observation_space = gym.spaces.Dict({"policy": policy, "critic": critic} if grouped else
                                                        {"policy": gym.spaces.Dict({"x": policy})})
        self.single_action_space = gym.spaces.Box(-np.inf, np.inf, (1,))
        self.generator = torch.Generator(device=device).manual_seed(0)
        self.x = torch.zeros(num_envs, device=device)
        self.v = torch.zeros(num_envs, device=device)
        self.target = torch.zeros(num_envs, device=device)
        self.t = torch.zeros(num_envs, dtype=torch.int64, device=device)
        self.last_actions: torch.Tensor | None = None
        self.pre_reset_obs: dict[str, torch.Tensor] | None = None  # the true last obs of the last step
        self.closed = False

    @property
    def unwrapped(self) -> FakeDirectRLEnv:
        return self

    def _reset_idx(self, mask: torch.Tensor) -> None:
        n = self.num_envs
        draw = torch.rand((3, n), generator=self.generator, device=self.device)
        self.x = torch.where(mask, draw[0] * 2 - 1, self.x)
        self.v = torch.where(mask, torch.zeros_like(self.v), self.v)
        self.target = torch.where(mask, draw[1] * 2 - 1, self.target)
        self.t = torch.where(mask, torch.zeros_like(self.t), self.t)

    def _observations(self) -> dict[str, torch.Tensor]:
        policy = torch.stack([self.x - self.target, self.v], dim=-1)
        extra = torch.stack([self.x, self.target, self.t.float() / self.episode_length], dim=-1)
        return {"policy": policy, "critic": torch.cat([policy, extra], dim=-1)}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.generator.manual_seed(seed)
        self._reset_idx(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._observations(), {}

    def step(self, actions: torch.Tensor) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        self.last_actions = actions.clone()
        force = actions.reshape(self.num_envs, -1)[:, 0].clamp(-1.0, 1.0)
        self.v = 0.9 * self.v + 0.1 * force
        self.x = self.x + 0.1 * self.v
        self.t = self.t + 1
        reward = -(self.x - self.target).abs()
        terminated = self.x.abs() > 3.0
        time_outs = (self.t >= self.episode_length) & ~terminated
        self.pre_reset_obs = self._observations()
        extras: dict[str, Any] = {"log": {"mean_distance": float((self.x - self.target).abs().mean())}}
        if self.final_obs:
            extras["final_obs"] = {g: x.clone() for g, x in self.pre_reset_obs.items()}
        self._reset_idx(terminated | time_outs)
        return self._observations(), reward, terminated, time_outs, extras

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            FakeDirectRLEnv.alive -= 1


def make(task: str, num_envs: int, device: str, **kwargs: Any) -> FakeDirectRLEnv:
    """The adapter's ``env.kwargs.factory`` (``tests.isaaclab_fake:make``); ``task`` is not used."""
    return FakeDirectRLEnv(num_envs, device, **kwargs)
