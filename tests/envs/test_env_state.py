"""The env state capability: ``state_dict()`` / ``load_state_dict()`` continue an env bitwise identically.

Env A steps 10 steps (with ``max_episode_steps=7``: the save falls 3 steps into the second episode),
its state is saved, and A steps 5 more (crossing an autoreset at its 14th step). A fresh env B, built
with another seed, loads the saved state and gets the same 5 actions: observations, rewards, flags and
final observations must be equal bit for bit, the autoreset's freshly drawn initial states included.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import pytest
import torch

import envs
from envs.core import GymnasiumVecEnv, TorchVecEnv, obs_equal, supports_env_state
from envs.torch_classic import Acrobot, CartPole, MountainCarContinuous, Pendulum

NUM_ENVS = 3
HORIZON = 7  # max_episode_steps: the 5 steps after the save cross an autoreset


def _actions(env: TorchVecEnv, generator: torch.Generator) -> torch.Tensor:
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (env.num_envs,), generator=generator)
    # out of the bounds on purpose: clipping is part of the dynamics
    return (torch.rand((env.num_envs, *space.shape), generator=generator) * 2 - 1) * 1.5


def _rollout(env: TorchVecEnv, generator: torch.Generator, steps: int) -> list[tuple[Any, ...]]:
    out = []
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(_actions(env, generator))
        out.append((obs, reward, terminated, truncated, info["final_obs"], info["_final_obs"]))
    return out


def _check_round_trip(make: Any) -> None:
    env_a, env_b = make(), make()
    env_a.reset(seed=11)
    env_b.reset(seed=12)  # another seed: B's own state must not leak into the continuation
    actions = torch.Generator().manual_seed(0)
    _rollout(env_a, actions, 10)
    assert bool((env_a.episode_steps == 3).all())  # saved mid-episode
    state = env_a.state_dict()
    actions_state = actions.get_state()
    expected = _rollout(env_a, actions, 5)
    assert bool(torch.stack([step[5] for step in expected]).any())  # an autoreset happened after the save

    env_b.load_state_dict(state)
    actions.set_state(actions_state)
    assert obs_equal(env_b._observe(), state["obs"])
    got = _rollout(env_b, actions, 5)
    for t, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert obs_equal(want[0], have[0]), f"obs differs at step {t}"
        assert obs_equal(want[4], have[4]), f"final_obs differs at step {t}"
        for i in (1, 2, 3, 5):
            assert torch.equal(want[i], have[i]), f"output {i} differs at step {t}"
    assert torch.equal(env_a.episode_steps, env_b.episode_steps)
    assert torch.equal(env_a.generator.get_state(), env_b.generator.get_state())


CLASSIC = [
    (CartPole, {"masspole": (0.05, 0.5)}),
    (Pendulum, {"mass": (0.5, 2.0)}),
    (MountainCarContinuous, {"power": (0.001, 0.002)}),
    (Acrobot, {"link_mass_2": (0.5, 1.5)}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("cls", "randomize"), CLASSIC, ids=[c.__name__ for c, _ in CLASSIC])
def test_classic_state_round_trip(cls: type, randomize: dict, dtype: torch.dtype) -> None:
    _check_round_trip(lambda: cls(NUM_ENVS, max_episode_steps=HORIZON, dtype=dtype, randomize=randomize))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("cls", "randomize"), CLASSIC, ids=[c.__name__ for c, _ in CLASSIC])
def test_classic_state_round_trip_cuda(cls: type, randomize: dict) -> None:
    _check_round_trip(lambda: cls(NUM_ENVS, device="cuda", max_episode_steps=HORIZON, randomize=randomize))


@pytest.mark.parametrize("env_id", ["drl/CartPole-v0", "drl/Pendulum-v0", "drl/CartPoleNoVel-v0",
                                    "drl/PendulumNoVel-v0", "drl/ActiveSearch-v0"])
def test_registered_ids_have_the_capability(env_id: str) -> None:
    env = envs.make_vec_env(env_id, 2)
    assert supports_env_state(env)
    _check_round_trip(lambda: envs.make_vec_env(env_id, NUM_ENVS, env_kwargs={"max_episode_steps": HORIZON}))


def test_state_is_a_copy() -> None:
    """Stepping on after state_dict() changes nothing in the saved state, nor loading it the caller's dict."""
    env = CartPole(NUM_ENVS, max_episode_steps=HORIZON)
    env.reset(seed=0)
    state = env.state_dict()
    physics = state["physics"]["state"].clone()
    _rollout(env, torch.Generator().manual_seed(0), 3)
    assert torch.equal(state["physics"]["state"], physics)
    env.load_state_dict(state)
    _rollout(env, torch.Generator().manual_seed(0), 3)
    assert torch.equal(state["physics"]["state"], physics)


def test_mismatched_state_is_refused() -> None:
    cartpole = CartPole(NUM_ENVS)
    cartpole.reset(seed=0)
    state = cartpole.state_dict()
    with pytest.raises(ValueError, match="env='CartPole'"):
        Pendulum(NUM_ENVS).load_state_dict(state)
    with pytest.raises(ValueError, match="num_envs=3"):
        CartPole(NUM_ENVS + 1).load_state_dict(state)
    with pytest.raises(ValueError, match="saved state 'state' is torch.float32"):
        CartPole(NUM_ENVS, dtype=torch.float64).load_state_dict(state)
    with pytest.raises(ValueError, match="param/masspole"):
        CartPole(NUM_ENVS, randomize={"masspole": (0.05, 0.5)}).load_state_dict(state)


def test_incomplete_state_is_detected() -> None:
    """A subclass whose _get_state misses what its observation reads fails loudly, not silently."""

    class LeakyCartPole(CartPole):
        def _observe(self) -> torch.Tensor:
            return super()._observe() + self.offset

    env, fresh = LeakyCartPole(NUM_ENVS), LeakyCartPole(NUM_ENVS)
    env.offset, fresh.offset = 1.0, 2.0
    env.reset(seed=0)
    with pytest.raises(RuntimeError, match="misses part of the state"):
        fresh.load_state_dict(env.state_dict())


def test_adapter_has_no_env_state() -> None:
    env = GymnasiumVecEnv("CartPole-v1", 2)
    assert not supports_env_state(env)
    env.close()


MJWARP = ["HalfCheetah", "Hopper", "Walker2d", "Ant"]


@pytest.mark.parametrize("name", MJWARP)
def test_mjwarp_state_round_trip(name: str) -> None:
    pytest.importorskip("mujoco_warp")
    from envs import mjwarp

    cls = getattr(mjwarp, name)
    _check_round_trip(lambda: cls(NUM_ENVS, max_episode_steps=HORIZON))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["HalfCheetah", "Ant"])
def test_mjwarp_state_round_trip_cuda(name: str) -> None:
    pytest.importorskip("mujoco_warp")
    from envs import mjwarp

    cls = getattr(mjwarp, name)
    _check_round_trip(lambda: cls(NUM_ENVS, device="cuda", max_episode_steps=HORIZON))


def test_mjwarp_state_holds_per_env_model_fields() -> None:
    """Domain-randomised model parameters travel with the state."""
    pytest.importorskip("mujoco_warp")
    from envs.mjwarp import Hopper

    def make() -> Hopper:
        return Hopper(NUM_ENVS, max_episode_steps=HORIZON, per_env_model_fields=("body_mass",))

    env = make()
    env.set_body_mass(["torso"], torch.tensor([[2.0], [3.0], [4.0]]))
    state = env.state_dict()
    assert torch.equal(state["physics"]["model/body_mass"][:, env.body_ids(["torso"])],
                       torch.tensor([[2.0], [3.0], [4.0]]))
    fresh = make()
    fresh.load_state_dict(state)
    assert torch.equal(fresh.model_view("body_mass"), env.model_view("body_mass"))
    assert torch.equal(fresh.model_view("body_subtreemass"), env.model_view("body_subtreemass"))
    generator = torch.Generator().manual_seed(0)
    expected = _rollout(env, generator, 5)
    got = _rollout(fresh, generator.manual_seed(0), 5)
    assert all(obs_equal(want[0], have[0]) for want, have in zip(expected, got, strict=True))
