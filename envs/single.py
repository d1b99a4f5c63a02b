"""``gymnasium.make("drl/...")``: one copy of a batched torch env behind the single-env numpy API."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import load_env_creator

from envs.core import TorchVecEnv


def _to_numpy(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: v[0].cpu().numpy() for k, v in obs.items()}
    return obs[0].cpu().numpy()


class TorchSingleEnv(gym.Env):
    """A batched :class:`TorchVecEnv` with ``num_envs=1``, unbatched and in numpy.

    Unlike the vector env it does not autoreset: a finished episode returns its true last obs and
    the caller resets, as with any gymnasium env.
    """

    def __init__(self, vector_entry_point: str, device: str = "cpu", **kwargs: Any):
        self.vec: TorchVecEnv = load_env_creator(vector_entry_point)(num_envs=1, device=device, **kwargs)
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space
        self.metadata = dict(self.vec.metadata)
        self.render_mode = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        obs, info = self.vec.reset(seed=seed, options=options)
        return _to_numpy(obs), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        action_t = torch.as_tensor(np.asarray(action), device=self.vec.device).unsqueeze(0)
        _, reward, terminated, truncated, info = self.vec.step(action_t)
        return _to_numpy(info["final_obs"]), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def close(self) -> None:
        self.vec.close()
