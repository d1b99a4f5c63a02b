"""Stand-ins for the privileged tasks drl/CartPoleNoVel-v0 and drl/PendulumNoVel-v0 (issue 10).

The tasks helper builds the real ids; until they are merged the AAC/AACD/DAgger tests register these
two under test-only ids. The lead switches the tests to the real ids after the merge and drops this file.
Observation: ``{"policy": [N, P], "critic": [N, C]}`` float32 with a ``gym.spaces.Dict`` space.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import ENVS, register_env
from envs.torch_classic.cartpole import CartPole
from envs.torch_classic.pendulum import Pendulum

CARTPOLE_ID = "drl/TestCartPoleNoVel-v0"
PENDULUM_ID = "drl/TestPendulumNoVel-v0"


class CartPoleNoVel(CartPole):
    """CartPole; policy = (x, theta), critic = the full 4-D state."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        full = self.single_observation_space
        policy = gym.spaces.Box(full.low[[0, 2]], full.high[[0, 2]], dtype=np.float32)
        self.single_observation_space = gym.spaces.Dict({"policy": policy, "critic": full})
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _observe(self) -> dict[str, torch.Tensor]:
        obs = super()._observe()
        return {"policy": obs[:, [0, 2]], "critic": obs}


class PendulumNoVel(Pendulum):
    """Pendulum; policy = (cos theta, sin theta), critic = (cos theta, sin theta, theta_dot)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        full = self.single_observation_space
        policy = gym.spaces.Box(full.low[:2], full.high[:2], dtype=np.float32)
        self.single_observation_space = gym.spaces.Dict({"policy": policy, "critic": full})
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _observe(self) -> dict[str, torch.Tensor]:
        obs = super()._observe()
        return {"policy": obs[:, :2], "critic": obs}


def register() -> None:
    """Register both stand-ins (idempotent)."""
    if CARTPOLE_ID not in ENVS:
        register_env(CARTPOLE_ID, f"{__name__}:CartPoleNoVel", "torch (batched)", "cpu, cuda",
                     "test stand-in for drl/CartPoleNoVel-v0")
    if PENDULUM_ID not in ENVS:
        register_env(PENDULUM_ID, f"{__name__}:PendulumNoVel", "torch (batched)", "cpu, cuda",
                     "test stand-in for drl/PendulumNoVel-v0")
