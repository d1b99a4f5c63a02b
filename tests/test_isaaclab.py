"""The Isaac Lab adapter (envs/isaaclab.py) against an in-repo stand-in with Isaac Lab's interface
(tests/isaaclab_fake.py): drl's env contract (groups, flags, SAME_STEP final_obs from extras or s_{T-1}), one
shared simulation per process, action clipping, one-line errors, and `drl train` end to end. The real Isaac
Lab is exercised by an optional slow test, skipped where `isaaclab` cannot be imported."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from drl.cli import main
from envs import make_vec_env
from envs.core import MissingDependencyError
from envs.isaaclab import close_all
from tests.isaaclab_fake import FakeDirectRLEnv

FACTORY = "tests.isaaclab_fake:make"
ENV_ID = "isaaclab:Fake-Reach"


@pytest.fixture(autouse=True)
def fresh_process():
    """Each test starts as a new process would: no simulation built yet."""
    close_all()
    yield
    close_all()
    assert FakeDirectRLEnv.alive == 0


def _make(num_envs: int = 4, **kwargs):
    return make_vec_env(ENV_ID, num_envs, "cpu", env_kwargs={"factory": FACTORY, **kwargs})


def _run_until_done(env, steps: int = 200):
    """Step with a constant push until some env finishes; returns the step's outputs and the fake env."""
    fake = env.sim.env
    obs, _ = env.reset(seed=3)
    for _ in range(steps):
        before = obs
        obs, reward, terminated, truncated, info = env.step(torch.ones(env.num_envs, 1))
        if bool((terminated | truncated).any()):
            return before, obs, reward, terminated, truncated, info, fake
    raise AssertionError("no episode ended")


def test_contract_with_final_obs_from_extras() -> None:
    env = _make(final_obs=True, episode_length=30)
    assert set(env.single_observation_space.spaces) == {"policy", "critic"}
    assert env.single_observation_space["critic"].shape == (5,)
    # Isaac Lab's unbounded action space gets the default bound 1 (drl's agents need a bounded one)
    assert float(env.single_action_space.low[0]) == -1.0 and float(env.single_action_space.high[0]) == 1.0
    before, obs, reward, terminated, truncated, info, fake = _run_until_done(env)
    assert reward.shape == (4,) and reward.dtype == torch.float32
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    done = terminated | truncated
    assert torch.equal(info["_final_obs"], done)
    for group in ("policy", "critic"):  # the true last obs where done; obs (the next episode's start) is not it
        assert torch.equal(info["final_obs"][group], fake.pre_reset_obs[group])
        assert not torch.equal(obs[group][done], fake.pre_reset_obs[group][done])
    assert env.final_obs_source == "env"


def test_without_final_obs_the_previous_observation_is_bootstrapped() -> None:
    env = _make(episode_length=30)
    with pytest.warns(UserWarning, match="bootstraps truncated episodes from the observation before it"):
        before, obs, reward, terminated, truncated, info, _ = _run_until_done(env)
    done = terminated | truncated
    assert bool(truncated.any())  # the fixed push times out before it leaves [-3, 3]
    for group in ("policy", "critic"):
        assert torch.equal(info["final_obs"][group][done], before[group][done])  # s_{T-1}
        assert torch.equal(info["final_obs"][group][~done], obs[group][~done])  # the contract: obs elsewhere
    assert env.final_obs_source == "previous"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per process
        _run_until_done(env)


def test_one_simulation_per_process_shared_by_views() -> None:
    train_env = _make(num_envs=4)
    with pytest.warns(UserWarning, match="built with 4 envs, and this env \\(asked for 2\\) shares them"):
        eval_env = _make(num_envs=2)  # the fake, like Isaac Lab, would raise if a second one were built
    assert eval_env.sim is train_env.sim and eval_env.num_envs == 4
    obs, _ = train_env.reset(seed=0)
    obs, *_ = train_env.step(torch.zeros(4, 1))
    eval_env.reset(seed=1)
    eval_env.step(torch.ones(4, 1))
    # training resumes: its episodes were cut by the evaluation, reported as truncated, action not applied
    fake = train_env.sim.env
    applied = fake.last_actions.clone()
    new_obs, reward, terminated, truncated, info = train_env.step(torch.full((4, 1), 0.5))
    assert torch.equal(fake.last_actions, applied)
    assert bool(truncated.all()) and not bool(terminated.any()) and bool((reward == 0).all())
    assert torch.equal(info["final_obs"]["policy"], obs["policy"])
    train_env.step(torch.full((4, 1), 0.5))
    assert torch.equal(fake.last_actions, torch.full((4, 1), 0.5))  # and then it steps normally


def test_clip_actions_bounds_the_space_and_the_actions() -> None:
    env = _make(clip_actions=0.5)
    assert float(env.single_action_space.low[0]) == -0.5 and float(env.single_action_space.high[0]) == 0.5
    env.reset(seed=0)
    env.step(torch.tensor([[2.0], [-2.0], [0.1], [0.4]]))
    assert torch.equal(env.sim.env.last_actions, torch.tensor([[0.5], [-0.5], [0.1], [0.4]]))


@pytest.mark.parametrize("kwargs,message", [
    ({"clip_actions": -1}, "clip_actions must be a number > 0"),
    ({"factory": "tests.isaaclab_fake:nothing"}, "env.kwargs.factory: cannot import"),
    ({"grouped": False}, "obs group 'policy' is Dict, not one tensor"),
])
def test_bad_settings_are_one_line(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        make_vec_env(ENV_ID, 2, "cpu", env_kwargs={"factory": FACTORY, **kwargs})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_without_isaaclab_the_error_says_how_to_install(capsys) -> None:
    try:
        import isaaclab_tasks  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("Isaac Lab is installed here")
    with pytest.raises(MissingDependencyError, match="Isaac Lab is not installed"):
        make_vec_env("isaaclab:Isaac-Cartpole-Direct", 2, "cpu")
    assert main(["train", "ppo", "--env", "isaaclab:Isaac-Cartpole-Direct", "--steps", "64",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "isaaclab.sh --install" in err


@pytest.mark.parametrize("agent,extra", [
    ("ppo", ["--set", "algo.critic_obs=critic", "--set", "algo.num_steps=32", "--set", "algo.minibatch_size=64"]),
    ("sac", ["--set", "env.kwargs.clip_actions=1.0", "--set", "algo.learning_starts=64", "--set",
             "algo.num_steps=64", "--set", "algo.batch_size=32"]),
])
def test_drl_train_end_to_end(agent: str, extra: list[str], tmp_path: Path) -> None:
    run_dir = tmp_path / agent
    code = main(["train", agent, "--env", ENV_ID, "--set", f"env.kwargs.factory={FACTORY}", "--num-envs", "4",
                 "--steps", "512", "--no-progress", "--device", "cpu", "--run-dir", str(run_dir),
                 "--set", "eval_episodes=4", "--set", "eval_interval=256", *extra])
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] >= 512 and summary["final_eval_return"] is not None
    assert main(["eval", str(run_dir), "--episodes", "4"]) == 0  # a new process would build its own simulation


@pytest.mark.slow
def test_real_isaaclab_task_trains_a_few_iterations(tmp_path: Path) -> None:
    pytest.importorskip("isaaclab_tasks", reason="Isaac Lab is not installed (it needs Python 3.12; see README)")
    task = os.environ.get("DRL_ISAACLAB_TASK", "Isaac-Cartpole-Direct")
    code = main(["train", "ppo", "--env", f"isaaclab:{task}", "--num-envs", "16", "--steps", "2048",
                 "--no-progress", "--device", "cpu", "--run-dir", str(tmp_path / "run"),
                 "--set", "algo.num_steps=32", "--set", "algo.minibatch_size=128", "--set", "eval_episodes=16"])
    assert code == 0
