"""Helpers shared by the agent and runner tests (tests/test_happo.py, tests/test_happo_competitive.py,
tests/test_resume_bitwise.py, tests/test_off_policy_runner.py): a rollout into a RolloutBuffer, a run stopped
by SIGINT after a given env step, and an exact comparison of two checkpoints' trees."""

from __future__ import annotations

import os
import signal
from typing import Any

import torch

from drl.storage import RolloutBuffer


def rollout(agent: Any, env: Any, steps: int, seed: int = 0) -> RolloutBuffer:
    """``steps`` steps of ``agent.act`` in ``env`` (reset with ``seed``), recorded as the agent records them."""
    storage = RolloutBuffer(steps, env.num_envs, agent.storage_fields())
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action, record = agent.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        storage.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
    return storage


def interrupt_at_step(runner: Any, step: int) -> None:
    """Send SIGINT to this process right after the runner's env's ``step``-th ``step`` call (1-based)."""
    env_step, calls = runner.env.step, [0]

    def step_then_interrupt(actions: Any) -> Any:
        out = env_step(actions)
        calls[0] += 1
        if calls[0] == step:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    runner.env.step = step_then_interrupt


def train_interrupted_at_step(runner: Any, step: int) -> None:
    """Train ``runner`` until a SIGINT right after its env's ``step``-th ``step`` call stops it; the run must
    report itself interrupted (or the interrupt surfaces as KeyboardInterrupt)."""
    interrupt_at_step(runner, step)
    try:
        assert runner.train()["interrupted"]
    except KeyboardInterrupt:
        pass


def assert_equal(a: Any, b: Any, path: str) -> None:
    """Nested dicts/lists/tuples of tensors and plain values are exactly equal; ``path`` names the first
    difference."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, path
