"""The numba actor computes what the torch actor computes."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.nn import RewardScaler, RunningMeanStd, make_action_head, make_mlp
from drl.nn.mlp import forward_layers
from drl.nn.numba_actor import NumbaGaussianActor, numba_available
from drl.storage import RolloutBuffer

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba is not installed")

BOX = gym.spaces.Box(-1.5, 2.0, (3,))


def _actor(activation: str, squash: bool, log_std_init: float = 0.3):
    torch.manual_seed(0)
    body = make_mlp(5, [16, 8], None, activation)
    head = make_action_head(BOX, 8, log_std_init, squash=squash)
    with torch.no_grad():  # a non-trivial mean, so clipping and squashing are exercised
        head.mean.weight.normal_(0.0, 1.0)
        head.log_std.copy_(torch.tensor([0.3, -0.5, 1.0]))
    return body, head


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu", "silu"])
@pytest.mark.parametrize("squash", [False, True])
@pytest.mark.parametrize("num_envs", [1, 8])
def test_matches_the_torch_head(activation, squash, num_envs):
    body, head = _actor(activation, squash)
    actor = NumbaGaussianActor(body, head)
    obs = torch.randn(num_envs, 5) * 3
    for deterministic in (False, True):
        torch.manual_seed(7)
        action, log_prob, env_action = actor.sample(obs, deterministic)
        torch.manual_seed(7)  # the same noise for the torch path
        with torch.no_grad():
            ref_action, ref_log_prob = head.sample(forward_layers(body, obs), deterministic)
            ref_env_action = head.env_action(ref_action)
        torch.testing.assert_close(action, ref_action, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(log_prob, ref_log_prob, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(env_action, ref_env_action, rtol=1e-5, atol=1e-5)
        assert ((env_action >= -1.5) & (env_action <= 2.0)).all()


def test_sees_parameter_updates_in_place():
    body, head = _actor("tanh", False)
    actor = NumbaGaussianActor(body, head)
    obs = torch.randn(4, 5)
    before = actor.sample(obs, deterministic=True)[0]
    with torch.no_grad():
        head.mean.bias.add_(0.25)
    after = actor.sample(obs, deterministic=True)[0]
    torch.testing.assert_close(after - before, torch.full_like(before, 0.25), rtol=0, atol=1e-6)


def test_unsupported_policies_are_refused():
    body = make_mlp(5, [8], None)
    head = make_action_head(BOX, 8, state_dependent_std=True)
    assert not NumbaGaussianActor.supports(body, head)
    assert not NumbaGaussianActor.supports(body, make_action_head(gym.spaces.Discrete(3), 8))
    assert not NumbaGaussianActor.supports(make_mlp(5, [8], None, layer_norm=True), make_action_head(BOX, 8))
    with pytest.raises(ValueError, match="state-independent std"):
        NumbaGaussianActor(body, head)


def test_ppo_actions_agree_with_and_without_the_kernel():
    obs_space = gym.spaces.Box(-1, 1, (5,))
    agents = []
    for numba_actor in (True, False):
        torch.manual_seed(0)
        agents.append(PPO(obs_space, BOX, PPOConfig(numba_actor=numba_actor), 2, torch.device("cpu")))
    assert agents[0].numba_actor is not None and agents[1].numba_actor is None
    obs = torch.randn(2, 5)
    outputs = []
    for agent in agents:
        torch.manual_seed(3)
        outputs.append(agent.act(obs))
    (env_a, rec_a), (env_b, rec_b) = outputs
    torch.testing.assert_close(env_a, env_b, rtol=1e-5, atol=1e-5)
    for key in rec_a:
        torch.testing.assert_close(rec_a[key], rec_b[key], rtol=1e-5, atol=1e-5)


def test_asking_for_the_kernel_where_it_cannot_run_is_a_clear_error(monkeypatch):
    obs_space = gym.spaces.Box(-1, 1, (5,))
    with pytest.raises(ValueError, match="algo.numba_actor: true needs .* state_dependent_std: false"):
        PPO(obs_space, BOX, PPOConfig(numba_actor=True, state_dependent_std=True), 2, torch.device("cpu"))
    monkeypatch.setattr("drl.agents.ppo.numba_available", lambda: False)
    with pytest.raises(ImportError, match=r"pip install 'drl\[numba\]'"):
        PPO(obs_space, BOX, PPOConfig(numba_actor=True), 2, torch.device("cpu"))
    assert PPO(obs_space, BOX, PPOConfig(), 2, torch.device("cpu")).numba_actor is None  # auto: falls back


@pytest.mark.parametrize("num_envs", [1, 8])
def test_fused_normalisation_is_the_normaliser_then_the_kernel(num_envs):
    body, head = _actor("tanh", False)
    actor = NumbaGaussianActor(body, head)
    fused, separate = RunningMeanStd((5,)), RunningMeanStd((5,))
    gen = torch.Generator().manual_seed(0)
    for step in range(40):
        obs = torch.randn(num_envs, 5, generator=gen) * 3 + 1
        update = step % 7 != 3  # evaluation-style steps in between: no update
        torch.manual_seed(step)
        normalized, *sampled = actor.sample_normalized(obs, fused, update)
        expected_obs = separate.update_normalize(obs, update)
        torch.manual_seed(step)
        expected = actor.sample(expected_obs)
        assert torch.equal(normalized, expected_obs)
        for got, want in zip(sampled, expected, strict=True):
            assert torch.equal(got, want)
    for name in ("mean", "var", "count"):
        assert torch.equal(getattr(fused, name), getattr(separate, name))


def test_ppo_step_records_hold_the_per_step_normalised_values():
    # PPO with one env: obs statistics fused into the actor kernel, the final obs normalised by its own
    # kernel call, the rewards scaled once per rollout in update(): all equal to the normalisers run per step
    obs_space = gym.spaces.Box(-np.inf, np.inf, (5,))
    cfg = PPOConfig(normalize_obs=True, normalize_reward=True, num_steps=32, minibatch_size=32, num_epochs=1)
    torch.manual_seed(0)
    agent = PPO(obs_space, BOX, cfg, 1, torch.device("cpu"))
    assert agent.numba_actor is not None
    obs_stats, scaler = RunningMeanStd((5,)), RewardScaler(1, cfg.gamma)
    storage = RolloutBuffer(32, 1, agent.storage_fields())
    gen = torch.Generator().manual_seed(1)
    expected_rewards = []
    for t in range(32):
        obs = torch.randn(1, 5, generator=gen) * 4 + 2
        _, record = agent.act(obs)
        assert torch.equal(record["obs/policy"], obs_stats.update_normalize(obs))
        reward = torch.randn(1, generator=gen) * 10
        terminated, truncated = torch.tensor([t % 11 == 10]), torch.tensor([t % 13 == 12])
        final_obs = torch.randn(1, 5, generator=gen)
        storage.add(agent.record_outcome(record, reward, terminated, truncated, final_obs))
        assert torch.equal(record["final_obs/policy"], obs_stats.normalize(final_obs))
        assert torch.equal(record["rewards"], reward)  # stored as the env gave it ...
        expected_rewards.append(scaler.scale(reward, terminated, truncated=truncated))
    assert torch.equal(agent.reward_scaler.returns, torch.zeros(1))  # ... so a dropped rollout leaves no trace
    seen = {}
    compute_returns = agent.compute_returns

    def spy(storage, rewards=None):
        seen["rewards"] = rewards
        return compute_returns(storage, rewards)

    agent.compute_returns = spy
    agent.update(storage)
    assert torch.equal(seen["rewards"], torch.stack(expected_rewards))  # ... and update() learns the scaled ones
    assert torch.equal(agent.reward_scaler.returns, scaler.returns)
    assert torch.equal(agent.reward_scaler.return_stats.var, scaler.return_stats.var)
