"""Masked-velocity CartPole and Pendulum: the critic group is the parent env's observation bit for bit, the
policy group its position columns; spaces, registration, the env-state round trip, rendering, CUDA."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the drl/ ids)
from envs.core import obs_equal
from envs.tasks.partial import CartPoleNoVel, PendulumNoVel
from envs.torch_classic import CartPole, Pendulum

# (masked class, parent class, id, policy columns, critic dim)
TASKS = [
    (CartPoleNoVel, CartPole, "drl/CartPoleNoVel-v0", [0, 2], 4),
    (PendulumNoVel, Pendulum, "drl/PendulumNoVel-v0", [0, 1], 3),
]
IDS = ["CartPoleNoVel", "PendulumNoVel"]


def actions_for(env: gym.vector.VectorEnv, generator: torch.Generator) -> torch.Tensor:
    if isinstance(env.single_action_space, gym.spaces.Discrete):
        return torch.randint(0, 2, (env.num_envs,), generator=generator)
    return (torch.rand(env.num_envs, 1, generator=generator) * 2 - 1) * 3.0  # out of bounds on purpose: clipping


@pytest.mark.parametrize(("cls", "parent", "env_id", "columns", "critic_dim"), TASKS, ids=IDS)
def test_critic_is_the_parent_obs_and_policy_its_positions(cls, parent, env_id, columns, critic_dim):
    """Same seed, same actions, 300 steps with autoresets (short time limit): exact equality every step."""
    kwargs = {"max_episode_steps": 40, "randomize": {"g" if parent is Pendulum else "length": (0.5, 1.5)}}
    masked, plain = cls(5, **kwargs), parent(5, **kwargs)
    obs, _ = masked.reset(seed=3)
    ref, _ = plain.reset(seed=3)
    gen, ends = torch.Generator().manual_seed(0), 0
    for _ in range(300):
        assert torch.equal(obs["critic"], ref) and obs["critic"].shape == (5, critic_dim)
        assert torch.equal(obs["policy"], ref[:, columns]) and obs["policy"].dtype == torch.float32
        actions = actions_for(masked, gen)
        obs, reward, terminated, truncated, info = masked.step(actions)
        ref, ref_reward, ref_terminated, ref_truncated, ref_info = plain.step(actions)
        assert torch.equal(reward, ref_reward) and torch.equal(terminated, ref_terminated)
        assert torch.equal(truncated, ref_truncated) and torch.equal(info["_final_obs"], ref_info["_final_obs"])
        assert torch.equal(info["final_obs"]["critic"], ref_info["final_obs"])
        assert torch.equal(info["final_obs"]["policy"], ref_info["final_obs"][:, columns])
        ends += int((terminated | truncated).sum())
    assert ends > 0


def test_spaces_are_dicts_with_the_parents_bounds():
    cart = CartPoleNoVel(2).single_observation_space
    assert isinstance(cart, gym.spaces.Dict) and set(cart.spaces) == {"policy", "critic"}
    theta = 12 * 2 * np.pi / 360 * 2
    np.testing.assert_array_equal(cart["policy"].high, np.array([4.8, theta], np.float32))
    np.testing.assert_array_equal(cart["policy"].low, -np.array([4.8, theta], np.float32))
    np.testing.assert_array_equal(cart["critic"].high, np.array([4.8, np.inf, theta, np.inf], np.float32))
    assert cart["policy"].dtype == cart["critic"].dtype == np.float32
    assert CartPoleNoVel(2).single_action_space == gym.spaces.Discrete(2)

    pend = PendulumNoVel(2)
    space = pend.single_observation_space
    np.testing.assert_array_equal(space["policy"].high, np.ones(2, np.float32))
    np.testing.assert_array_equal(space["policy"].low, -np.ones(2, np.float32))
    np.testing.assert_array_equal(space["critic"].high, np.array([1.0, 1.0, 8.0], np.float32))
    assert pend.single_action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    obs, _ = pend.reset(seed=0)
    assert pend.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    assert pend.observation_space["policy"].shape == (2, 2)


@pytest.mark.parametrize(("cls", "parent", "env_id", "columns", "critic_dim"), TASKS, ids=IDS)
def test_registered_ids(cls, parent, env_id, columns, critic_dim):
    vec = gym.make_vec(env_id, num_envs=3, max_episode_steps=9)
    assert isinstance(vec, cls) and vec.max_episode_steps == 9 and vec.num_envs == 3
    obs, _ = vec.reset(seed=1)
    assert obs["policy"].shape == (3, len(columns)) and obs["critic"].shape == (3, critic_dim)
    single = gym.make(env_id)
    obs, _ = single.reset(seed=1)
    assert isinstance(obs["policy"], np.ndarray) and obs["policy"].shape == (len(columns),)
    np.testing.assert_array_equal(obs["policy"], obs["critic"][columns])
    obs, reward, *_ = single.step(single.action_space.sample())
    assert obs["critic"].shape == (critic_dim,) and isinstance(reward, float)
    assert env_id in envs.ENVS and "'critic'" in envs.ENVS[env_id].description


@pytest.mark.parametrize(("cls", "parent", "env_id", "columns", "critic_dim"), TASKS, ids=IDS)
def test_state_dict_round_trip(cls, parent, env_id, columns, critic_dim):
    first, second = cls(3, max_episode_steps=7), cls(3, max_episode_steps=7)
    first.reset(seed=11)
    second.reset(seed=12)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        first.step(actions_for(first, gen))
    assert first.supports_state_dict
    state = first.state_dict()
    assert set(state["obs"]) == {"policy", "critic"}
    second.load_state_dict(state)
    saved_gen = gen.get_state()
    expected = [first.step(actions_for(first, gen)) for _ in range(5)]
    gen.set_state(saved_gen)
    for want in expected:
        have = second.step(actions_for(second, gen))
        assert obs_equal(want[0], have[0]) and obs_equal(want[4]["final_obs"], have[4]["final_obs"])
        for i in (1, 2, 3):
            assert torch.equal(want[i], have[i])
    assert any(bool(step[4]["_final_obs"].any()) for step in expected)  # an autoreset after the load


@pytest.mark.parametrize("cls", [CartPoleNoVel, PendulumNoVel], ids=IDS)
def test_render_draws_the_parent_picture(cls):
    env = cls(2)
    env.reset(seed=0)
    frame = env.render(1)
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    env.close()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("cls", "parent", "env_id", "columns", "critic_dim"), TASKS, ids=IDS)
def test_cuda_matches_the_parent_on_cuda(cls, parent, env_id, columns, critic_dim):
    masked, plain = cls(64, device="cuda"), parent(64, device="cuda")
    obs, _ = masked.reset(seed=0)
    ref, _ = plain.reset(seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        assert obs["policy"].device.type == obs["critic"].device.type == "cuda"
        assert torch.equal(obs["critic"], ref) and torch.equal(obs["policy"], ref[:, columns])
        actions = actions_for(masked, gen).cuda()
        obs, *_ = masked.step(actions)
        ref, *_ = plain.step(actions)
