"""Off-policy edge cases a new user hits: defaults per agent, silent no-ops said aloud, obs groups, amp + C51."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest
import torch

from drl import api
from drl.agents.sac import SAC, SACConfig
from drl.agents.td3 import TD3, TD3Config
from drl.config import ConfigError, TrainConfig, build
from drl.registry import AGENTS
from drl.runners.off_policy import OffPolicyRunner
from drl.storage import ReplayBuffer

OBS = gym.spaces.Box(-5.0, 5.0, (3,))
ACT = gym.spaces.Box(-2.0, 2.0, (1,))


def _fill(agent, rows: int = 64) -> ReplayBuffer:
    replay = ReplayBuffer(rows, 1, agent.storage_fields())
    g = torch.Generator().manual_seed(0)
    for _ in range(rows):
        obs = torch.rand(1, 3, generator=g)
        _, record = agent.random_act(obs)
        replay.add(agent.record_outcome(record, torch.rand(1, generator=g) - 1.0, torch.zeros(1, dtype=torch.bool),
                                        torch.zeros(1, dtype=torch.bool), obs + 0.1))
    return replay


@pytest.mark.parametrize(("agent_class", "config_class"), [(SAC, SACConfig), (TD3, TD3Config)])
def test_categorical_critic_trains_under_bfloat16_autocast(agent_class, config_class) -> None:
    """amp (bfloat16 matmuls) with the C51 critic: the projection runs in float32, the update is finite."""
    cfg = config_class(critic_type="categorical", amp=True, batch_size=16, actor_hidden=[32], critic_hidden=[32],
                       v_min=-50.0, v_max=0.0, compile=False)
    agent = agent_class(OBS, ACT, cfg, 1, torch.device("cpu"), torch.Generator().manual_seed(0))
    before = agent.step.params.data.clone()
    stats = agent.update(_fill(agent), 2)
    assert all(torch.isfinite(v) for v in stats.values())
    assert not torch.equal(before, agent.step.params.data)


@pytest.mark.parametrize("agent", ["sac", "td3"])
def test_off_policy_agents_default_to_one_env_and_a_continuous_env(agent: str) -> None:
    """SB3's setting (one env) where no tuned config says otherwise; `drl train sac` alone picks a Box env."""
    assert api.load_config(agent, "MountainCarContinuous-v0").env.num_envs == 1
    assert api.load_config("ppo", "MountainCarContinuous-v0").env.num_envs == 8  # PPO's own default unchanged
    assert isinstance(gym.make(AGENTS[agent].default_env).action_space, gym.spaces.Box)


@pytest.mark.parametrize(("agent_class", "config_class"), [(SAC, SACConfig), (TD3, TD3Config)])
def test_a_privileged_group_on_a_plain_observation_is_an_error(agent_class, config_class) -> None:
    """critic_obs: critic on an env without groups would silently give a non-privileged critic."""
    with pytest.raises(ValueError, match=r"critic reads obs group 'critic', but the env returns one plain "
                                         r"observation \(no groups\); set algo.critic_obs to policy"):
        agent_class(OBS, ACT, config_class(critic_obs="critic"), 1, torch.device("cpu"))


@pytest.mark.parametrize("group", ["training", "_modules", "forward"])
def test_module_attribute_names_are_refused_as_group_names(group: str) -> None:
    cfg = build(SACConfig, {"critic_obs": group}, prefix="algo")
    with pytest.raises(ConfigError, match=r"config key 'algo.critic_obs': must be an obs group name"):
        cfg.validate("algo", TrainConfig())


def _quiet_cfg(**algo: object):
    return api.load_config("sac", "drl/Pendulum-v0", overrides={
        "total_steps": 64, "progress": False, "device": "cpu", "eval_interval": 0, "eval_episodes": 1,
        "checkpoint_interval": 0, "log_interval": -1, "env": {"num_envs": 4, "num_eval_envs": 1},
        "algo": {"actor_hidden": [8], "critic_hidden": [8], "batch_size": 8, "num_steps": 4, "compile": False,
                 **algo}})


def test_no_gradient_step_and_buffer_rounding_are_said(tmp_path: Path, capsys) -> None:
    runner = OffPolicyRunner(_quiet_cfg(learning_starts=64, buffer_size=10), SAC, tmp_path / "run")
    runner.train()
    err = capsys.readouterr().err
    assert ("note: algo.buffer_size 10 rounded up to 12 transitions (3 whole vectorised steps of env.num_envs = 4)"
            in err)
    assert "note: algo.learning_starts 64 >= total_steps 64: every action is random (the warm-up lasts" in err
    assert runner.agent.num_updates == 1  # updates start once global_step reaches learning_starts: the last step
    runner = OffPolicyRunner(_quiet_cfg(learning_starts=16, buffer_size=64), SAC, tmp_path / "run2")
    runner.train()
    assert "note:" not in capsys.readouterr().err
    assert runner.agent.num_updates == (64 - 16) // 4 + 1  # after the vectorised steps ending at 16, 20, ..., 64
