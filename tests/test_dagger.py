"""DAgger student distillation: the beta schedule, expert labels on every step, the executed mixture,
and a student that learns to imitate (Discrete: cross-entropy; Box: MSE on the mean).

Envs: drl/CartPoleNoVel-v0 and drl/PendulumNoVel-v0; the learning test uses drl/TestCartPoleGroups-v0
(tests/privileged_fixtures.py).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from privileged_fixtures import solved_teacher_and_config

from drl import api
from drl.agents.dagger import DAgger
from drl.config import ConfigError, merge
from drl.registry import resolve_config
from drl.storage import RolloutBuffer
from envs import make_vec_env

CARTPOLE_ID, PENDULUM_ID = "drl/CartPoleNoVel-v0", "drl/PendulumNoVel-v0"


def run_config(agent: str, env_id: str = CARTPOLE_ID, total_steps: int = 512, **algo: Any) -> Any:
    base = {"num_steps": 16}
    if agent == "aac":
        base |= {"minibatch_size": 64, "num_epochs": 2, "actor_hidden": [16], "critic_hidden": [16],
                 "compile": False, "numba_actor": False, "actor_obs": "critic"}
    raw = {"agent": agent, "total_steps": total_steps, "device": "cpu", "progress": False, "log_interval": -1,
           "eval_episodes": 2, "eval_interval": 0, "checkpoint_interval": 0,
           "env": {"id": env_id, "num_envs": 4, "num_eval_envs": 2}, "algo": merge(base, algo)}
    return resolve_config(raw)


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny privileged teacher runs (aac with actor and critic on "critic") on both tasks."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for env_id in (CARTPOLE_ID, PENDULUM_ID):
        out[env_id] = root / env_id.replace("/", "-")
        api.train(run_config("aac", env_id, total_steps=256), out[env_id])
    return out


def make_dagger(teacher: Path, env_id: str = CARTPOLE_ID, seed: int = 0, **algo: Any) -> DAgger:
    cfg = run_config("dagger", env_id, teacher=str(teacher), **algo)
    env = make_vec_env(env_id, 1)
    agent = DAgger(env.single_observation_space, env.single_action_space, cfg.algo, 4, torch.device("cpu"),
                   torch.Generator().manual_seed(seed))
    env.close()
    return agent


def test_beta_schedule_hand_values(teachers: dict[str, Path]) -> None:
    agent = make_dagger(teachers[CARTPOLE_ID], beta_init=0.8, beta_decay=0.5, beta_min=0.15)
    assert [agent.beta_at(i) for i in range(5)] == [0.8, 0.4, 0.2, 0.15, 0.15]
    assert agent.beta == 0.8
    default = make_dagger(teachers[CARTPOLE_ID])
    assert [default.beta_at(i) for i in range(4)] == [1.0, 0.5, 0.25, 0.125]  # beta_1 = 1: pure expert first


@pytest.mark.parametrize("env_id", [CARTPOLE_ID, PENDULUM_ID], ids=["discrete", "box"])
def test_labels_are_always_the_experts_and_the_mixture_follows_beta(teachers: dict[str, Path], env_id: str) -> None:
    beta = 0.3
    agent = make_dagger(teachers[env_id], env_id, beta_init=beta, beta_decay=1.0)
    env = make_vec_env(env_id, 500)
    obs, _ = env.reset(seed=0)
    executed_expert = []
    for _ in range(40):  # 20,000 draws
        action, record = agent.act(obs)
        expert, _ = agent.teacher.act(obs, deterministic=True, update_stats=False)
        student, _ = agent.act(obs, deterministic=True)
        mask = record["expert_executed"]
        if agent.discrete:
            assert torch.equal(record["expert_actions"], expert)  # the label is the expert's, executed or not
            assert torch.equal(action, torch.where(mask, expert, student))
        else:  # labels in units normalised by the bounds [-2, 2]
            assert torch.allclose(record["expert_actions"], expert / 2.0)
            assert torch.equal(action, torch.where(mask.unsqueeze(-1), expert, student))
        assert bool((student != expert).any())  # the two policies differ: the mixture is visible
        executed_expert.append(mask)
        obs, *_ = env.step(action)
    env.close()
    fraction = torch.cat(executed_expert).float().mean().item()
    assert abs(fraction - beta) < 4 * math.sqrt(beta * (1 - beta) / 20_000)  # 4 standard deviations


class ScriptedExpert:
    """An expert whose action is a function of what the student sees, so imitation can be exact:
    CartPole: push toward the side the pole leans to; Pendulum: torque -2 sin(theta)."""

    def __init__(self, discrete: bool):
        self.discrete = discrete

    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = True, update_stats: bool = False) -> tuple:
        policy = obs["policy"]
        if self.discrete:
            return (policy[:, 1] > 0).long(), {}
        return (-2.0 * policy[:, 1:2]).clamp(-2.0, 2.0), {}


@pytest.mark.parametrize("env_id", [CARTPOLE_ID, PENDULUM_ID], ids=["discrete", "box"])
def test_student_loss_falls_and_it_imitates_the_expert(teachers: dict[str, Path], env_id: str) -> None:
    torch.manual_seed(0)
    agent = make_dagger(teachers[env_id], env_id, num_updates=40, minibatch_size=128, learning_rate=3e-3,
                        beta_decay=0.7, normalize_obs=True)
    agent.teacher = ScriptedExpert(agent.discrete)
    env = make_vec_env(env_id, 16)
    storage = RolloutBuffer(16, 16, agent.storage_fields())
    obs, _ = env.reset(seed=0)
    rollout_losses = []
    for _ in range(12):
        storage.clear()
        for _ in range(16):
            action, record = agent.act(obs)
            obs, reward, terminated, truncated, info = env.step(action)
            storage.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
        rollout_losses.append(agent.update(storage)["rollout_loss"])
    # the loss on each new rollout (the student's own states, before fitting them) falls
    assert rollout_losses[-1] < 0.2 * rollout_losses[0]
    obs, _ = env.reset(seed=1)
    student, _ = agent.act(obs, deterministic=True)
    expert, _ = agent.teacher.act(obs)
    env.close()
    if agent.discrete:
        assert (student == expert).float().mean().item() >= 0.9
    else:
        assert (student - expert).abs().max().item() < 0.3  # torque units, range [-2, 2]


def test_runner_logs_the_schedule_and_resumes_it(tmp_path: Path, teachers: dict[str, Path]) -> None:
    run_dir = tmp_path / "dagger"
    cfg = run_config("dagger", total_steps=192, teacher=str(teachers[CARTPOLE_ID]), num_updates=5)
    api.train(cfg, run_dir)  # 3 iterations of 16 steps x 4 envs
    api.resume(run_dir, total_steps=320)
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [float(r["beta"]) for r in rows] == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert [float(r["dataset_size"]) for r in rows] == [64.0, 128.0, 192.0, 256.0, 320.0]
    assert float(rows[0]["expert_fraction"]) == 1.0 and rows[-1]["eval_return"] != ""


def test_dagger_student_learns_cartpole_from_a_teacher(tmp_path: Path) -> None:
    """On a task the student can see (both groups the full state) it reaches the teacher's level fast
    (seed 0; seeds 0-2 all passed while choosing the budget: best evaluations 500, 415, 500 in 16k steps)."""
    _, cfg = solved_teacher_and_config(tmp_path, "dagger", 16_384, num_steps=16)
    _, summary = api.train(cfg, tmp_path / "dagger")
    assert summary["best_eval_return"] >= 350


def test_teacher_errors(tmp_path: Path, teachers: dict[str, Path]) -> None:
    env = make_vec_env(CARTPOLE_ID, 1)
    spaces = env.single_observation_space, env.single_action_space
    env.close()
    with pytest.raises(ConfigError, match="'algo.teacher'.*--teacher RUN_DIR"):
        DAgger(*spaces, run_config("dagger").algo, 4, torch.device("cpu"))
    with pytest.raises(ConfigError) as err:
        make_dagger(teachers[PENDULUM_ID], CARTPOLE_ID)
    message = str(err.value)
    assert "its action space is Box" in message and "its obs group 'critic' has width 3, this env's 4" in message
    with pytest.raises(ConfigError, match="algo.buffer_size"):
        run_config("dagger", buffer_size=10)


def test_a_dagger_run_can_be_the_teacher(tmp_path: Path, teachers: dict[str, Path]) -> None:
    """A trained DAgger student is a policy too: a second student imitates it (its obs group and width are
    read like any teacher's), and one on another env is refused in one ConfigError."""
    first = tmp_path / "first"
    api.train(run_config("dagger", total_steps=64, teacher=str(teachers[CARTPOLE_ID]), num_updates=2), first)
    student = make_dagger(first)
    action, record = student.act(make_vec_env(CARTPOLE_ID, 4).reset(seed=0)[0])
    assert action.shape == (4,) and record["expert_actions"].shape == (4,)
    with pytest.raises(ConfigError, match="its action space is Discrete"):
        make_dagger(first, PENDULUM_ID)


def test_a_trained_student_evaluates_without_its_teachers_folder(tmp_path: Path, teachers: dict[str, Path]) -> None:
    """Evaluation runs the student alone, so `drl eval` of a DAgger run does not read (or need) its teacher."""
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(teachers[CARTPOLE_ID], teacher)
    run_dir = tmp_path / "dagger"
    api.train(run_config("dagger", total_steps=64, teacher=str(teacher), num_updates=2), run_dir)
    shutil.rmtree(teacher)
    assert api.evaluate(run_dir, episodes=1)["episodes"] == 1
    student, _ = api.load_agent(run_dir)
    with pytest.raises(RuntimeError, match="no teacher"):
        student.act(make_vec_env(CARTPOLE_ID, 4).reset(seed=0)[0])
    with pytest.raises(ConfigError, match="cannot load the teacher run"):  # training still needs it
        api.resume(run_dir, total_steps=128)
