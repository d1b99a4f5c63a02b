"""SAC and TD3 learn Pendulum-v1 through the whole stack: config file, off-policy runner, replay, evaluation.

The budgets are the smallest at which every one of seeds 0-5 reached the bar when they were set
(SAC, 6,000 steps: -221 to -133; TD3, 10,000 steps with 1,000 warm-up steps: -226 to -135; both with
[64, 64] networks to keep the test near 20 s on one core); the test runs seed 0. For comparison,
Stable-Baselines3's TD3 with the same settings at 6,000 steps gave -420, -427, -177 (seeds 0-2).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from drl import api

PENDULUM_BAR = -250.0  # issue 9: ">= -250 on Pendulum-v1 within a small seeded budget"


def _train(agent: str, total_steps: int, tmp_path: Path, **algo: object) -> dict:
    overrides = {"total_steps": total_steps, "seed": 0, "progress": False, "device": "cpu", "eval_interval": 0,
                 "eval_episodes": 10, "checkpoint_interval": 0, "log_interval": -1,
                 "algo": {"actor_hidden": [64, 64], "critic_hidden": [64, 64], "compile": False, **algo}}
    cfg = api.load_config(agent, "Pendulum-v1", overrides=overrides)  # configs/<agent>/Pendulum-v1.yaml + these
    _, summary = api.train(cfg, tmp_path / "run")
    return summary


@pytest.mark.parametrize(("agent", "total_steps", "algo"), [
    ("sac", 6_000, {}),
    ("td3", 10_000, {"learning_starts": 1_000}),  # the tuned file's 10,000 warm-up steps would be the whole budget
])
def test_agent_learns_pendulum(agent: str, total_steps: int, algo: dict, tmp_path: Path) -> None:
    summary = _train(agent, total_steps, tmp_path, **algo)
    assert summary["steps"] == total_steps
    assert summary["final_eval_return"] >= PENDULUM_BAR, summary
