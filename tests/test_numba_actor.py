"""The numba actor computes what the torch actor computes."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.nn import make_action_head, make_mlp
from drl.nn.mlp import forward_layers
from drl.nn.numba_actor import NumbaGaussianActor, numba_available

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
