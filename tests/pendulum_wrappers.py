"""Shared pieces of the reward-wrapper tests on drl/Pendulum-v0 (tests/test_embedding_reward.py,
tests/test_learned_reward.py): the scripted demonstrator, its demo file, and a small PPO config with
``wrappers:``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drl import api
from envs.tasks.demos import collect_demos, save_demos

PENDULUM = "drl/Pendulum-v0"


def pendulum_expert(env: Any, obs: torch.Tensor) -> torch.Tensor:
    """A fixed demonstrator for Pendulum: torque -2 * angular velocity, clipped into [-2, 2]."""
    return torch.clamp(-2.0 * obs[:, 2:3], -2.0, 2.0)


def save_pendulum_demos(path: Path, episodes: int) -> Path:
    """``episodes`` demonstrator episodes (as many envs) saved at ``path``; the path."""
    save_demos(collect_demos(PENDULUM, episodes, policy=pendulum_expert, num_envs=episodes), path)
    return path


def ppo_config(wrappers: list[dict[str, Any]], total_steps: int = 256):
    """PPO on Pendulum through ``wrappers``: 4 envs, 64-step rollouts, one epoch, no evaluation or plots."""
    return api.load_config("ppo", PENDULUM, overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 1, "eval_interval": 0,
        "eval_episodes": 2, "checkpoint_interval": 0, "log_interval": -1, "wrappers": wrappers,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 64, "minibatch_size": 64, "num_epochs": 1, "compile": False, "anneal_lr": False}})
