"""Stand-ins for the privileged tasks drl/CartPoleNoVel-v0 and drl/PendulumNoVel-v0 (issue 10).

The tasks helper builds the real ids; until they are merged the AAC/AACD/DAgger tests register these
two under test-only ids. The lead switches the tests to the real ids after the merge and drops this file.
Observation: ``{"policy": [N, P], "critic": [N, C]}`` float32 with a ``gym.spaces.Dict`` space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs import ENVS, register_env
from envs.torch_classic.cartpole import CartPole
from envs.torch_classic.pendulum import Pendulum

CARTPOLE_ID = "drl/TestCartPoleNoVel-v0"
PENDULUM_ID = "drl/TestPendulumNoVel-v0"
FULL_CARTPOLE_ID = "drl/TestCartPoleGroups-v0"  # both groups the full state: a task a feed-forward actor solves


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


class CartPoleGroups(CartPole):
    """CartPole with both groups = the full 4-D state (a learnable task for the learning tests)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        full = self.single_observation_space
        self.single_observation_space = gym.spaces.Dict({"policy": full, "critic": full})
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _observe(self) -> dict[str, torch.Tensor]:
        obs = super()._observe()
        return {"policy": obs, "critic": obs.clone()}


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
    """Register the stand-ins (idempotent)."""
    if CARTPOLE_ID not in ENVS:
        register_env(CARTPOLE_ID, f"{__name__}:CartPoleNoVel", "torch (batched)", "cpu, cuda",
                     "test stand-in for drl/CartPoleNoVel-v0")
    if PENDULUM_ID not in ENVS:
        register_env(PENDULUM_ID, f"{__name__}:PendulumNoVel", "torch (batched)", "cpu, cuda",
                     "test stand-in for drl/PendulumNoVel-v0")
    if FULL_CARTPOLE_ID not in ENVS:
        register_env(FULL_CARTPOLE_ID, f"{__name__}:CartPoleGroups", "torch (batched)", "cpu, cuda",
                     "test task: CartPole with both obs groups the full state")


def solved_teacher_and_config(root: Path, agent: str, total_steps: int, **algo: Any) -> tuple[Path, Any]:
    """A privileged teacher trained on the CartPole task whose groups both hold the full state (tuned
    PPO CartPole config, 40k steps), and the ``agent`` config on that teacher with the same settings."""
    from drl import api
    from drl.config import load_yaml, merge
    from drl.registry import resolve_config

    base = merge(load_yaml(api.CONFIG_DIR / "ppo" / "drl-CartPole-v0.yaml"),
                 {"env": {"id": FULL_CARTPOLE_ID}, "progress": False, "log_interval": -1, "device": "cpu",
                  "seed": 0, "eval_interval": 8192, "checkpoint_interval": 0, "algo": {"compile": False}})
    teacher = root / "teacher"
    api.train(resolve_config(merge(base, {"agent": "aac", "total_steps": 40_000, "algo": {"actor_obs": "critic"}})),
              teacher)
    if agent == "dagger":
        base = {key: value for key, value in base.items() if key != "algo"} | {"eval_interval": 4096}
    raw = merge(base, {"agent": agent, "total_steps": total_steps, "algo": {"teacher": str(teacher), **algo}})
    return teacher, resolve_config(raw)
