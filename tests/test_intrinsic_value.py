"""PPO's separate intrinsic value head (algo.intrinsic_value, drl/agents/ppo_intrinsic.py): the two GAE
streams against hand values, the stored intrinsic reward taken from the env's info by the runner, the
default PPO untouched, and one-line config errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl import api
from drl.agents import ppo_intrinsic
from drl.agents.ppo import PPO, PPOConfig
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.returns import gae
from drl.storage import RolloutBuffer

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Discrete(2)

# one env, three steps; the episode ends at step 1 (its final obs has V_I = 0.3, the next obs V_I = 0.1)
R_I = torch.tensor([[1.0], [0.0], [2.0]])
V_I = torch.tensor([[0.5], [0.2], [0.1]])
NEXT_V_I = torch.tensor([[0.2], [0.3], [0.4]])
TERMINATED = torch.tensor([[False], [True], [False]])
TRUNCATED = torch.zeros(3, 1, dtype=torch.bool)
A_E = torch.tensor([[1.0], [-1.0], [0.5]])


def _cfg(**kw) -> PPOConfig:
    return PPOConfig(intrinsic_value=True, intrinsic_gamma=0.9, gae_lambda=0.8, extrinsic_coef=2.0,
                     intrinsic_coef=1.0, **kw)


def test_non_episodic_intrinsic_stream_hand_values():
    """delta_t = r_t + 0.9 V_I(final_t) - V_I(s_t): 0.68, 0.07, 2.26; no episode end cuts the trace
    (0.9 * 0.8 = 0.72): A_2 = 2.26, A_1 = 0.07 + 0.72 * 2.26, A_0 = 0.68 + 0.72 * A_1."""
    advantages, returns = ppo_intrinsic.combined_advantages(_cfg(), A_E, R_I, V_I, NEXT_V_I, TERMINATED, TRUNCATED)
    a_i = torch.tensor([[0.68 + 0.72 * (0.07 + 0.72 * 2.26)], [0.07 + 0.72 * 2.26], [2.26]])
    torch.testing.assert_close(returns, a_i + V_I)
    torch.testing.assert_close(advantages, 2.0 * A_E + a_i)


def test_episodic_intrinsic_stream_hand_values():
    """intrinsic_episodic: the terminated step does not bootstrap (delta_1 = 0 - 0.2) and cuts the trace."""
    cfg = _cfg(intrinsic_episodic=True)
    advantages, returns = ppo_intrinsic.combined_advantages(cfg, A_E, R_I, V_I, NEXT_V_I, TERMINATED, TRUNCATED)
    a_i = torch.tensor([[0.68 + 0.72 * -0.2], [-0.2], [2.26]])
    torch.testing.assert_close(returns, a_i + V_I)
    torch.testing.assert_close(advantages, 2.0 * A_E + a_i)


def _filled(agent: PPO, steps: int = 6, n: int = 2) -> RolloutBuffer:
    storage = RolloutBuffer(steps, n, agent.storage_fields(), torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    for t in range(steps):
        _, record = agent.act(torch.randn(n, 3, generator=gen))
        done = torch.tensor([t == 2, False])
        record = agent.record_outcome(record, torch.randn(n, generator=gen), done, torch.tensor([False, t == 4]),
                                      torch.randn(n, 3, generator=gen))
        record["intrinsic_rewards"] = torch.rand(n, generator=gen)
        storage.add(record)
    return storage


def test_compute_returns_splits_the_reward_between_the_two_heads():
    cfg = _cfg(compile=False, minibatch_size=4)
    agent = PPO(OBS, ACT, cfg, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert agent.info_fields == {"intrinsic_reward": "intrinsic_rewards"}
    assert agent.storage_fields()["intrinsic_rewards"].shape == ()
    storage = _filled(agent)
    extrinsic = storage["rewards"] - storage["intrinsic_rewards"]
    extra = {}
    values, advantages, returns = agent.compute_returns(storage, extrinsic, intrinsic_out=extra)
    with torch.no_grad():
        obs, final = storage["obs/policy"].reshape(12, 3), storage["final_obs/policy"].reshape(12, 3)
        v_e, nv_e = agent.model.value(obs).view(6, 2), agent.model.value(final).view(6, 2)
        v_i = agent.model.intrinsic_critic(obs).view(6, 2)
        nv_i = agent.model.intrinsic_critic(final).view(6, 2)
    a_e, r_e = gae(extrinsic, v_e, nv_e, storage["terminated"], storage["truncated"], cfg.gamma, cfg.gae_lambda)
    no = torch.zeros_like(storage["terminated"])
    a_i, r_i = gae(storage["intrinsic_rewards"], v_i, nv_i, no, no, cfg.intrinsic_gamma, cfg.gae_lambda)
    torch.testing.assert_close(values, v_e)
    torch.testing.assert_close(returns, r_e)
    torch.testing.assert_close(advantages, 2.0 * a_e + a_i)
    torch.testing.assert_close(extra["intrinsic_values"], v_i)
    torch.testing.assert_close(extra["intrinsic_returns"], r_i)
    metrics = agent.update(storage)
    assert np.isfinite(metrics["intrinsic_value_loss"]) and metrics["intrinsic_value_loss"] > 0


def test_recurrent_policy_trains_both_heads():
    cfg = _cfg(compile=False, minibatch_size=4, num_steps=6, rnn_type="gru", seq_len=2, rnn_hidden_size=8)
    agent = PPO(OBS, ACT, cfg, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    metrics = agent.update(_filled(agent))
    assert np.isfinite(metrics["intrinsic_value_loss"]) and metrics["intrinsic_value_loss"] > 0


def test_default_ppo_has_no_intrinsic_head_field_or_info():
    agent = PPO(OBS, ACT, PPOConfig(compile=False, minibatch_size=4), 2, torch.device("cpu"),
                torch.Generator().manual_seed(0))
    assert agent.model.intrinsic_critic is None and agent.info_fields == {}
    assert "intrinsic_rewards" not in agent.storage_fields()
    metrics = agent.update(_filled_default(agent))
    assert "intrinsic_value_loss" not in metrics


def _filled_default(agent: PPO) -> RolloutBuffer:
    storage = RolloutBuffer(4, 2, agent.storage_fields(), torch.device("cpu"))
    for _ in range(4):
        _, record = agent.act(torch.randn(2, 3))
        no = torch.zeros(2, dtype=torch.bool)
        storage.add(agent.record_outcome(record, torch.randn(2), no, no, torch.randn(2, 3)))
    return storage


def _run_cfg(algo: dict | None = None, **extra):
    return api.load_config("ppo", "drl/CartPole-v0", overrides={
        "total_steps": 128, "progress": False, "device": "cpu", "seed": 1, "eval_interval": 128,
        "eval_episodes": 1, "checkpoint_interval": 0, "env": {"num_envs": 4, "num_eval_envs": 1},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1, "compile": False, "anneal_lr": False,
                 "intrinsic_value": True,
                 **(algo or {})},
        **extra})


def test_run_with_a_bonus_trains_both_heads_and_logs_the_env_return(tmp_path):
    cfg = _run_cfg(wrappers=[{"name": "bonus", "global_bonus": "rnd", "coef": 100.0, "hidden": [16]}])
    run_dir, _ = api.train(cfg, tmp_path / "run")
    rows = read_metrics(run_dir / "metrics.csv")
    assert all(float(r["intrinsic_value_loss"]) > 0 for r in rows)
    assert float(rows[-1]["bonus/coef"]) == 100.0 and float(rows[-1]["bonus/bonus"]) > 0.0
    returns = [float(r["episode_return"]) for r in rows if r["episode_return"] not in ("", "nan")]
    assert returns and max(returns) <= 500  # CartPole's own return, not the bonus


BONUS = [{"name": "bonus"}]


def test_run_without_a_bonus_wrapper_stops_at_its_first_step_naming_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        api.train(_run_cfg(), tmp_path / "run")
    assert "info['intrinsic_reward']" in str(err.value) and "wrappers: [{name: bonus}]" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("algo, wrappers, message", [
    ({"intrinsic_gamma": 1.5}, BONUS, "algo.intrinsic_gamma': must be in [0, 1], got 1.5"),
    ({"intrinsic_coef": -1.0}, BONUS, "algo.intrinsic_coef'"),
])
def test_bad_intrinsic_config_is_one_line(algo, wrappers, message):
    with pytest.raises(ConfigError) as err:
        _run_cfg(algo, wrappers=wrappers)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_resume_with_bonus_and_intrinsic_head_is_bitwise(tmp_path):
    """Interrupted after 2 of 4 iterations and resumed = the uninterrupted run: PPO's two heads, the bonus
    wrapper's networks and statistics (learner state) and its E3B matrices (episode state)."""
    from drl.checkpoint import load_checkpoint

    wrappers = [{"name": "bonus", "global_bonus": "rnd", "episodic_bonus": "e3b", "hidden": [16]}]
    full_dir, _ = api.train(_run_cfg(wrappers=wrappers, total_steps=256, checkpoint_interval=64), tmp_path / "full")
    half_dir, _ = api.train(_run_cfg(wrappers=wrappers, total_steps=128, checkpoint_interval=64), tmp_path / "half")
    api.resume(half_dir, total_steps=256)
    full = load_checkpoint(full_dir / "checkpoints" / "latest.pt")
    half = load_checkpoint(half_dir / "checkpoints" / "latest.pt")
    for key, value in full["agent_state"]["model"].items():
        torch.testing.assert_close(value, half["agent_state"]["model"][key], rtol=0, atol=0)
    assert any(k.startswith("intrinsic_critic") for k in full["agent_state"]["model"])
    for a, b in zip(full["wrappers"][0]["state"]["parts"], half["wrappers"][0]["state"]["parts"], strict=True):
        for key, value in a.items():
            torch.testing.assert_close(value, b[key], rtol=0, atol=0)
    torch.testing.assert_close(full["env_state"]["wrapper/bonus"]["episode"]["c_inv"],
                               half["env_state"]["wrapper/bonus"]["episode"]["c_inv"], rtol=0, atol=0)
    full_rows, half_rows = read_metrics(full_dir / "metrics.csv"), read_metrics(half_dir / "metrics.csv")
    for key in ("episode_return", "bonus/bonus", "intrinsic_value_loss"):
        assert [r[key] for r in full_rows] == [r[key] for r in half_rows]
