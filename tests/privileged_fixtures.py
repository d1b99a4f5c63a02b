"""Test fixtures shared by the AACD and DAgger tests (tests/test_aacd.py, tests/test_dagger.py).

Most of those tests run on the real privileged tasks drl/CartPoleNoVel-v0 and drl/PendulumNoVel-v0
(:mod:`envs.tasks.partial`). The learning tests need a task that a small feed-forward student solves on a
seeded budget of tens of thousands of steps, which the positions-only ``"policy"`` group of
drl/CartPoleNoVel-v0 does not give (the velocities must be inferred). This module registers that task,
``drl/TestCartPoleGroups-v0``: CartPole whose ``"policy"`` and ``"critic"`` groups both hold the full 4-D
state; it tests the teacher-to-student transfer, not partial observability.
Observation: ``{"policy": [N, 4], "critic": [N, 4]}`` float32 with a ``gym.spaces.Dict`` space.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from envs import ENVS, register_env
from envs.torch_classic.cartpole import CartPole

FULL_CARTPOLE_ID = "drl/TestCartPoleGroups-v0"  # both groups the full state: a task a feed-forward actor solves


class CartPoleGroups(CartPole):
    """CartPole with both groups = the full 4-D state ``(x, x_dot, theta, theta_dot)``, ``[N, 4]`` each."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        full = self.single_observation_space
        self.single_observation_space = gym.spaces.Dict({"policy": full, "critic": full})
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)

    def _observe(self) -> dict[str, torch.Tensor]:
        obs = super()._observe()
        return {"policy": obs, "critic": obs.clone()}


def register() -> None:
    """Register ``drl/TestCartPoleGroups-v0`` (idempotent)."""
    if FULL_CARTPOLE_ID not in ENVS:
        register_env(FULL_CARTPOLE_ID, f"{__name__}:CartPoleGroups", "torch (batched)", "cpu, cuda",
                     "test task: CartPole with both obs groups the full state")


def solved_teacher_and_config(root: Path, agent: str, total_steps: int, **algo: Any) -> tuple[Path, Any]:
    """A privileged teacher trained on ``drl/TestCartPoleGroups-v0`` (tuned PPO CartPole config, 40k
    steps) in ``root / "teacher"``, and the ``agent`` config on that teacher with the same settings."""
    from drl import api
    from drl.config import load_yaml, merge
    from drl.registry import resolve_config

    register()
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
