"""Per-task statistics (drl/runners/tasks.py): finished episodes are routed to their task by task id.

The scripted multi-task env: task k pays reward k at every step of episodes k + 2 steps long, and
odd tasks report success at their episodes' last step. So every logged ``ep_return/task<k>`` is
exactly k (k + 2) and ``success/task<k>`` is k mod 2, whatever the agent does.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl import api
from drl.runners.base import EpisodeTracker, evaluate_policy
from drl.runners.off_policy import OffPolicyRunner
from drl.runners.on_policy import OnPolicyRunner
from drl.runners.tasks import TaskStatistics
from envs import ENVS, register_env
from envs.core import TorchVecEnv
from envs.multi_task import MultiTaskVecEnv
from envs.multi_task_sources import MT_CARTPOLE_TASKS

ENV_ID = "drl/TestScriptedTasks-v0"
NUM_TASKS = 3
REPO = Path(__file__).resolve().parents[1]


class _ConstantTask(TorchVecEnv):
    """Reward ``value`` every step; truncated after ``value + 2`` steps; success at the last one if odd."""

    def __init__(self, num_envs: int, value: int, device: str | torch.device = "cpu"):
        box = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        super().__init__(num_envs, box, box, max_episode_steps=value + 2, device=device)
        self.value = value

    def _reset_envs(self, mask: torch.Tensor) -> None:
        pass

    def _observe(self) -> torch.Tensor:
        return self.episode_steps.to(torch.float32).unsqueeze(-1) / 10

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last = self.episode_steps + 1 == self.max_episode_steps
        self._step_info = {"success": (last & (self.value % 2 == 1)).to(torch.float32)}
        reward = torch.full((self.num_envs,), float(self.value), device=self.device)
        return reward, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        pass


def make_scripted_tasks(num_envs: int, device: str | torch.device = "cpu") -> MultiTaskVecEnv:
    per_task = num_envs // NUM_TASKS
    return MultiTaskVecEnv([_ConstantTask(per_task, k, device) for k in range(NUM_TASKS)],
                           [f"task{k}" for k in range(NUM_TASKS)], env_id=ENV_ID, reports_success=True)


@pytest.fixture(autouse=True)
def _registered(monkeypatch: pytest.MonkeyPatch) -> None:
    if ENV_ID not in ENVS:
        register_env(ENV_ID, f"{__name__}:make_scripted_tasks", "torch (test)", "cpu", "scripted tasks",
                     num_tasks=NUM_TASKS)
    import drl.plotting  # curve.png plays no part here

    monkeypatch.setattr(drl.plotting, "plot_runs", lambda *a, **k: (_ for _ in ()).throw(ValueError("skipped")))


def _expected(k: int) -> tuple[float, float]:
    return float(k * (k + 2)), float(k % 2)


def _rollout(env: Any, stats: TaskStatistics, tracker: EpisodeTracker, steps: int) -> tuple[dict, torch.Tensor]:
    """``steps`` zero-action steps of ``env`` recorded by ``stats`` and ``tracker``: the row of
    ``stats.update`` and the done mask ``[steps, N]``."""
    rewards = torch.zeros(steps, env.num_envs)
    done = torch.zeros(steps, env.num_envs, dtype=torch.bool)
    for t in range(steps):
        _, reward, terminated, truncated, info = env.step(torch.zeros(env.num_envs, 1))
        rewards[t], done[t] = reward, terminated | truncated
        stats.record(t, info)
    tracker.update(rewards, done)
    return stats.update(tracker, done), done


def test_routing_by_task_id_from_a_rollout() -> None:
    env = make_scripted_tasks(6)
    stats = TaskStatistics(env, num_steps=11, device=torch.device("cpu"))
    assert stats.columns[:3] == ["ep_return/task0", "ep_return/task1", "ep_return/task2"]
    assert "success/task1" in stats.columns and "eval_success/task2" in stats.columns
    tracker = EpisodeTracker(6, torch.device("cpu"))
    env.reset(seed=0)
    row, done = _rollout(env, stats, tracker, 11)
    for k in range(NUM_TASKS):
        assert (row[f"ep_return/task{k}"], row[f"success/task{k}"]) == _expected(k)
    assert row["success"] == pytest.approx(1 / 3)
    # 11 steps: task 0 (2-step episodes) finished 5 per copy, task 2 (4 steps) 2 per copy
    assert [len(stats.returns[f"task{k}"]) for k in range(3)] == [10, 6, 4]
    frozen = stats.state_dict()
    stats.update(tracker, done, commit=False)  # a partial row changes nothing
    assert stats.state_dict()["returns"] == frozen["returns"]


def test_episodes_spanning_rollouts_keep_their_task_and_success() -> None:
    """Rollouts of 3 steps cut task 2's 4-step episodes: the carried part counts, success included."""
    env = make_scripted_tasks(3)
    stats = TaskStatistics(env, num_steps=3, device=torch.device("cpu"))
    tracker = EpisodeTracker(3, torch.device("cpu"))
    env.reset(seed=0)
    for _ in range(4):
        row, _ = _rollout(env, stats, tracker, 3)
    for k in range(NUM_TASKS):
        assert list(stats.returns[f"task{k}"]) == [_expected(k)[0]] * len(stats.returns[f"task{k}"])
        assert list(stats.successes[f"task{k}"]) == [_expected(k)[1]] * len(stats.successes[f"task{k}"])
    assert row["ep_return/task2"] == 8.0 and len(stats.returns["task2"]) == 3  # 12 steps, 3 episodes of 4


def test_evaluation_routes_by_the_eval_envs_task_ids() -> None:
    class Zero:
        def act(self, obs: Any, deterministic: bool = False, update_stats: bool = True):
            return torch.zeros(obs["policy"].shape[0], 1), None

    env = make_scripted_tasks(3)
    episodes: list[tuple[int, float, float]] = []
    returns = evaluate_policy(Zero(), env, 6, seed=0, episodes_out=episodes)
    assert sorted(returns) == [0.0, 0.0, 3.0, 3.0, 8.0, 8.0]
    row = TaskStatistics(make_scripted_tasks(6), 1, torch.device("cpu")).evaluation(episodes, env)
    for k in range(NUM_TASKS):
        assert (row[f"eval_return/task{k}"], row[f"eval_success/task{k}"]) == _expected(k)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def _check_logged(rows: list[dict[str, str]]) -> None:
    assert rows
    for row in rows:
        for k in range(NUM_TASKS):
            ret, success = _expected(k)
            assert float(row[f"ep_return/task{k}"]) == ret and float(row[f"success/task{k}"]) == success
        assert float(row["success"]) == pytest.approx(1 / 3)
    last = rows[-1]
    for k in range(NUM_TASKS):
        assert (float(last[f"eval_return/task{k}"]), float(last[f"eval_success/task{k}"])) == _expected(k)
    assert math.isclose(float(last["eval_return"]), sum(_expected(k)[0] for k in range(NUM_TASKS)) / NUM_TASKS)


@pytest.mark.parametrize(("agent", "runner"), [("ppo", OnPolicyRunner), ("sac", OffPolicyRunner)])
def test_runners_log_per_task_columns(agent: str, runner: type, tmp_path: Path) -> None:
    algo = {"num_steps": 8, "minibatch_size": 24, "num_epochs": 1} if agent == "ppo" else {
        "learning_starts": 24, "batch_size": 16, "num_steps": 8}
    cfg = api.load_config(agent, ENV_ID, overrides={
        "total_steps": 96, "progress": False, "device": "cpu", "seed": 0, "eval_interval": 48, "eval_episodes": 6,
        "checkpoint_interval": 0, "env": {"num_envs": 3, "num_eval_envs": 3}, "algo": {**algo, "compile": False}})
    runner(cfg, api.AGENTS[agent].agent_class, tmp_path / agent).train()
    _check_logged(_rows(tmp_path / agent))


def test_ppo_trains_on_mt_cartpole_from_the_cli(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "drl", "train", "ppo", "--env", "drl/MT-CartPole-v0", "--steps", "512",
         "--num-envs", "16", "--seed", "0", "--device", "cpu", "--run-dir", str(run), "--no-progress",
         "--set", "algo.num_steps=16", "--set", "algo.minibatch_size=64", "--set", "env.num_eval_envs=4",
         "--set", "eval_interval=256", "--set", "eval_episodes=4"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(run)
    assert len(rows) == 2 and int(rows[-1]["global_step"]) == 512
    for name in ("nominal", "short_pole", "long_heavy_pole", "weak_push"):
        assert rows[-1][f"eval_return/{name}"] and float(rows[-1][f"ep_return/{name}"]) > 0
    assert "success" not in rows[0]  # CartPole reports no success
    result = api.evaluate(run, episodes=8)  # drl eval: 2 episodes per task on the 4 evaluation copies
    assert sorted(result["tasks"]) == [f"eval_return/{n}" for n in sorted(MT_CARTPOLE_TASKS)]
    expected = sum(result["tasks"].values()) / 4  # equal episodes per task: the mean of the task means
    assert result["mean_return"] == pytest.approx(expected)
    # fewer episodes than copies: spread over the copies (tasks 0 and 2 of 4), the others are JSON null, not NaN
    shown = subprocess.run([sys.executable, "-m", "drl", "eval", str(run), "--episodes", "2"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    tasks = json.loads(shown.stdout[shown.stdout.index("{"):])["tasks"]
    assert [tasks[f"eval_return/{n}"] is None for n in MT_CARTPOLE_TASKS] == [False, True, False, True]
