"""Batched torch classic-control envs against gymnasium's own implementations, plus the env contract.

Tolerances. In the gymnasium comparisons our physics runs in float64, as gymnasium's does, so the two
differ only by the order of floating-point operations and by libm's last bit in sin/cos (~1e-16).
Observations are then rounded to float32 on both sides, which can turn a 1e-16 difference into one
float32 ulp when the value sits on a rounding boundary: ``rtol=2e-6, atol=1e-6`` is about two float32
ulps (ulp(1) = 1.2e-7, ulp(28) = 1.9e-6 for Acrobot's fastest joint). The exception is
MountainCarContinuous, whose gymnasium version stores its state as float32 after every step while ours
keeps float64: that rounding (<= 6e-8 per step) accumulates over an episode, so it gets ``atol=1e-5``
(measured: 4.8e-7 in this test, 1.7e-6 at most in longer trials). Rewards are float32 too (|r| <= 100),
so the same relative tolerance applies. Terminated / truncated flags must agree exactly. (On the CPU
this was written on, CartPole, Pendulum and Acrobot came out bit-identical: the tolerances are margin
for other libm / BLAS builds, not slack for a known difference.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs  # noqa: F401  (registers the drl/ ids)
from envs.torch_classic import Acrobot, CartPole, ClassicControlEnv, MountainCarContinuous, Pendulum

TIGHT = {"rtol": 2e-6, "atol": 1e-6}
MOUNTAIN_CAR = {"rtol": 2e-6, "atol": 1e-5}

ALL_ENVS = [CartPole, Pendulum, MountainCarContinuous, Acrobot]
GYM_IDS = {CartPole: "CartPole-v1", Pendulum: "Pendulum-v1", MountainCarContinuous: "MountainCarContinuous-v0",
           Acrobot: "Acrobot-v1"}
DRL_IDS = {CartPole: "drl/CartPole-v0", Pendulum: "drl/Pendulum-v0",
           MountainCarContinuous: "drl/MountainCarContinuous-v0", Acrobot: "drl/Acrobot-v0"}
OBS_DIM = {CartPole: 4, Pendulum: 3, MountainCarContinuous: 2, Acrobot: 6}
STATE_DIM = {CartPole: 4, Pendulum: 2, MountainCarContinuous: 2, Acrobot: 4}
# gymnasium's observation of its current state (only Pendulum and Acrobot observe more than the state)
GYM_OBS: dict[type, Callable[[gym.Env], np.ndarray]] = {
    CartPole: lambda env: env.state.astype(np.float32),
    Pendulum: lambda env: env._get_obs(),
    MountainCarContinuous: lambda env: env.state.astype(np.float32),
    Acrobot: lambda env: env._get_ob(),
}


def random_actions(env: ClassicControlEnv, rng: np.random.Generator) -> np.ndarray:
    """Actions ``[N]`` (discrete) or ``[N, 1]`` float64 (continuous), from ``rng``.

    Continuous actions go out of the action bounds on purpose (to exercise clipping) and are float64 so
    that gymnasium's arithmetic stays in float64 (a float32 torque would make it round to float32).
    """
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(0, space.n, size=env.num_envs)
    return rng.uniform(1.5 * space.low[0], 1.5 * space.high[0], size=(env.num_envs, 1))


def compare_with_gymnasium(
    cls: type[ClassicControlEnv],
    start: np.ndarray,
    steps: int,
    tol: dict[str, float],
    max_episode_steps: int | None = None,
    resync_every_step: bool = False,
    seed: int = 0,
) -> tuple[int, int]:
    """Step ``N = len(start)`` of our envs and ``N`` gymnasium envs in lockstep from ``start[N, state_dim]``.

    Whenever an episode ends, gymnasium's copy is reset and given our env's post-reset state. With
    ``resync_every_step`` our state is copied into gymnasium before every step: each step is then a
    one-step check of the dynamics along our trajectory (used for the chaotic Acrobot, where a 1-ulp
    difference in libm's sin/cos could otherwise grow until the trajectories part). Returns the numbers
    of terminations and truncations seen, so callers can check that both were covered.
    """
    kwargs = {} if max_episode_steps is None else {"max_episode_steps": max_episode_steps}
    num_envs = len(start)
    ours = cls(num_envs, dtype=torch.float64, **kwargs)
    obs, _ = ours.reset(seed=seed, options={"state": torch.as_tensor(start)})
    refs = [gym.make(GYM_IDS[cls], **kwargs) for _ in range(num_envs)]
    for i, ref in enumerate(refs):
        ref.reset(seed=seed + i)
        ref.unwrapped.state = start[i].copy()
        torch.testing.assert_close(obs[i], torch.as_tensor(GYM_OBS[cls](ref.unwrapped)), **tol)

    rng = np.random.default_rng(seed)
    n_terminated = n_truncated = 0
    for t in range(steps):
        actions = random_actions(ours, rng)
        if resync_every_step:
            for i, ref in enumerate(refs):
                ref.unwrapped.state = ours.state[i].numpy().copy()
        obs, reward, terminated, truncated, info = ours.step(torch.as_tensor(actions))
        for i, ref in enumerate(refs):
            ref_obs, ref_reward, ref_terminated, ref_truncated, _ = ref.step(actions[i])
            where = f"{cls.__name__} step {t} env {i}"
            assert bool(terminated[i]) == ref_terminated, f"terminated differs at {where}"
            assert bool(truncated[i]) == ref_truncated, f"truncated differs at {where}"
            torch.testing.assert_close(info["final_obs"][i], torch.as_tensor(ref_obs, dtype=torch.float32),
                                       **tol, msg=lambda m, w=where: f"obs differs at {w}: {m}")
            torch.testing.assert_close(reward[i], torch.tensor(ref_reward, dtype=torch.float32), **tol,
                                       msg=lambda m, w=where: f"reward differs at {w}: {m}")
            if ref_terminated or ref_truncated:
                ref.reset()
                ref.unwrapped.state = ours.state[i].numpy().copy()
        n_terminated += int(terminated.sum())
        n_truncated += int(truncated.sum())
    return n_terminated, n_truncated


# --- agreement with gymnasium ---------------------------------------------------------------------


def test_cartpole_matches_gymnasium() -> None:
    rng = np.random.default_rng(1)
    start = rng.uniform(-0.05, 0.05, size=(8, 4))
    start[0] = [2.3, 1.0, 0.0, 0.0]  # leaves the track in a few steps
    start[1] = [0.0, 0.0, 0.2, 0.5]  # falls past 12 degrees at once
    # A short time limit so that both ends of an episode occur many times within 400 steps.
    n_terminated, n_truncated = compare_with_gymnasium(CartPole, start, 400, TIGHT, max_episode_steps=40)
    assert n_terminated > 20 and n_truncated > 0


def test_pendulum_matches_gymnasium() -> None:
    rng = np.random.default_rng(2)
    start = np.stack([rng.uniform(-math.pi, math.pi, 8), rng.uniform(-1, 1, 8)], axis=-1)
    start[0] = [5.0, -7.9]  # un-normalised angle, near the speed limit
    # Pendulum never terminates: 450 steps cover two truncations at gymnasium's 200.
    n_terminated, n_truncated = compare_with_gymnasium(Pendulum, start, 450, TIGHT)
    assert n_terminated == 0 and n_truncated == 2 * 8


def test_mountain_car_matches_gymnasium() -> None:
    start = np.stack([np.linspace(-1.19, 0.449, 8), np.linspace(-0.07, 0.07, 8)], axis=-1)
    start[0] = [-1.2, -0.05]  # against the left wall: the velocity must be zeroed
    start[1] = [0.44, 0.03]  # reaches the goal next step
    n_terminated, n_truncated = compare_with_gymnasium(
        MountainCarContinuous, start, 400, MOUNTAIN_CAR, max_episode_steps=150
    )
    assert n_terminated >= 2 and n_truncated > 0


def test_acrobot_matches_gymnasium() -> None:
    rng = np.random.default_rng(3)
    start = rng.uniform(-0.1, 0.1, size=(8, 4))
    start[:4, 2] = [4.0, 6.0, 9.0, 12.0]  # swinging hard: wraps angles, hits the velocity limits, terminates
    start[4] = [3.0, -3.0, 0.0, 27.0]
    n_terminated, n_truncated = compare_with_gymnasium(
        Acrobot, start, 500, TIGHT, max_episode_steps=200, resync_every_step=True
    )
    assert n_terminated > 0 and n_truncated > 0


def test_acrobot_free_running_first_steps_match() -> None:
    """Without re-syncing, the trajectories agree for a while (far longer than the chaos needs to show a bug)."""
    rng = np.random.default_rng(4)
    start = rng.uniform(-0.1, 0.1, size=(4, 4))
    start[:, 2] = [3.0, 5.0, 7.0, 9.0]
    compare_with_gymnasium(Acrobot, start, 60, TIGHT)


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_spaces_match_gymnasium(cls: type[ClassicControlEnv]) -> None:
    env = cls(3)
    ref = gym.make(GYM_IDS[cls])
    assert env.single_observation_space == ref.observation_space
    assert env.single_action_space == ref.action_space
    assert env.max_episode_steps == ref.spec.max_episode_steps


# --- the vector-env contract ----------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_shapes_dtypes_devices(cls: type[ClassicControlEnv]) -> None:
    num_envs = 5
    env = cls(num_envs)
    obs, info = env.reset(seed=0)
    assert obs.shape == (num_envs, OBS_DIM[cls]) and obs.dtype == torch.float32 and obs.device.type == "cpu"
    assert info == {}
    assert env.observation_space.contains(obs.numpy())
    actions = torch.as_tensor(env.action_space.sample())
    obs, reward, terminated, truncated, info = env.step(actions)
    assert obs.shape == (num_envs, OBS_DIM[cls]) and obs.dtype == torch.float32
    assert reward.shape == (num_envs,) and reward.dtype == torch.float32
    assert terminated.shape == truncated.shape == (num_envs,)
    assert terminated.dtype == truncated.dtype == torch.bool
    assert info["final_obs"].shape == obs.shape and info["final_obs"].dtype == torch.float32
    assert info["_final_obs"].shape == (num_envs,) and info["_final_obs"].dtype == torch.bool
    assert env.state.dtype == torch.float32
    # The returned obs is not a view of the env's state: stepping again must not change it.
    before = obs.clone()
    env.step(actions)
    assert torch.equal(obs, before)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cls", ALL_ENVS)
def test_runs_on_cuda(cls: type[ClassicControlEnv]) -> None:
    env = cls(64, device="cuda", randomize={next(iter(cls(1).params)): (0.5, 1.0)})
    obs, _ = env.reset(seed=0)
    for _ in range(600):  # past every time limit, so autoreset runs on the device too
        obs, reward, terminated, truncated, info = env.step(torch.as_tensor(env.action_space.sample()).cuda())
    for tensor in (obs, reward, terminated, truncated, info["final_obs"], info["_final_obs"]):
        assert tensor.device.type == "cuda"


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_float64_physics_float32_obs(cls: type[ClassicControlEnv]) -> None:
    env = cls(2, dtype="float64")
    obs, _ = env.reset(seed=0)
    assert env.state.dtype == torch.float64 and obs.dtype == torch.float32
    obs, reward, *_ = env.step(torch.as_tensor(env.action_space.sample()))
    assert obs.dtype == reward.dtype == torch.float32


def test_bad_dtype_and_state_shape() -> None:
    with pytest.raises(ValueError, match="dtype"):
        CartPole(2, dtype=torch.int32)
    env = CartPole(2)
    with pytest.raises(ValueError, match=r"\(2, 4\)"):
        env.reset(options={"state": torch.zeros(3, 4)})


def test_same_step_autoreset_on_termination() -> None:
    """A terminated env returns its next episode's first obs; its last obs is in info['final_obs']."""
    env = CartPole(3, dtype=torch.float64)
    start = np.array([[0.0, 0.0, 0.19, 0.5],  # the pole passes 12 degrees in the second step
                      [0.0, 0.0, 0.0, 0.0],
                      [2.37, 1.0, 0.0, 0.0]])  # the cart leaves the track in the second step
    env.reset(seed=0, options={"state": torch.as_tensor(start)})
    _, _, terminated, _, _ = env.step(torch.tensor([0, 0, 0]))
    assert not terminated.any()
    expected = []  # gymnasium gives the expected last obs of each env
    for row in env.state.numpy().copy():
        ref = gym.make("CartPole-v1")
        ref.reset(seed=0)
        ref.unwrapped.state = row.copy()
        expected.append(ref.step(1)[0])

    obs, reward, terminated, truncated, info = env.step(torch.tensor([1, 1, 1]))
    assert terminated.tolist() == [True, False, True] and not truncated.any()
    assert torch.equal(info["_final_obs"], terminated | truncated)
    torch.testing.assert_close(info["final_obs"], torch.as_tensor(np.stack(expected)), **TIGHT)
    assert torch.equal(obs[1], info["final_obs"][1])  # unfinished rows: final_obs is just the obs
    assert (obs[[0, 2]].abs() <= 0.05).all()  # finished rows: a fresh draw from the reset range
    assert not torch.equal(obs[0], info["final_obs"][0])
    assert env.episode_steps.tolist() == [0, 2, 0]
    assert torch.equal(reward, torch.ones(3))  # the terminating step is rewarded too, as in gymnasium


def test_same_step_autoreset_on_truncation() -> None:
    env = Pendulum(4, max_episode_steps=7)
    env.reset(seed=0)
    actions = torch.zeros(4, 1)
    for step in range(1, 7):
        obs, _, terminated, truncated, info = env.step(actions)
        assert not truncated.any() and not terminated.any() and not info["_final_obs"].any()
        assert torch.equal(info["final_obs"], obs)
        assert env.episode_steps.tolist() == [step] * 4
    state_before = env.state.clone()
    obs, _, terminated, truncated, info = env.step(actions)
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    assert env.episode_steps.tolist() == [0] * 4
    # final_obs is the 7th step's result from the old state; obs is a new episode's first obs.
    twin = Pendulum(4)
    twin.reset(options={"state": state_before})
    twin_obs, *_ = twin.step(actions)
    torch.testing.assert_close(info["final_obs"], twin_obs, rtol=0, atol=0)
    assert not torch.allclose(obs, info["final_obs"])
    # and the next episode is truncated again after 7 steps
    for _ in range(6):
        _, _, _, truncated, _ = env.step(actions)
        assert not truncated.any()
    assert env.step(actions)[3].all()


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_reset_distribution(cls: type[ClassicControlEnv]) -> None:
    """Initial states fill gymnasium's ranges: (-0.05, 0.05), (+-pi, +-1), (-0.6..-0.4, 0), (-0.1, 0.1)."""
    low, high = {
        CartPole: ([-0.05] * 4, [0.05] * 4),
        Pendulum: ([-math.pi, -1.0], [math.pi, 1.0]),
        MountainCarContinuous: ([-0.6, 0.0], [-0.4, 0.0]),
        Acrobot: ([-0.1] * 4, [0.1] * 4),
    }[cls]
    env = cls(4000)
    env.reset(seed=0)
    low, high = torch.tensor(low), torch.tensor(high)
    assert (env.state >= low).all() and (env.state <= high).all()
    span = env.state.amax(0) - env.state.amin(0)
    assert torch.allclose(span, high - low, atol=0.01 * (high - low).max())  # the whole range is used


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_seeding_is_deterministic(cls: type[ClassicControlEnv]) -> None:
    def rollout(seed: int) -> torch.Tensor:
        env = cls(16, max_episode_steps=20)  # short episodes, so the autoreset draws are compared too
        rng = np.random.default_rng(0)
        obs, _ = env.reset(seed=seed)
        trajectory = [obs]
        for _ in range(60):
            obs, *_ = env.step(torch.as_tensor(random_actions(env, rng), dtype=torch.float32))
            trajectory.append(obs)
        return torch.stack(trajectory)

    assert torch.equal(rollout(7), rollout(7))
    assert not torch.allclose(rollout(7), rollout(8))


# --- domain randomisation -------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_randomized_parameters_per_env(cls: type[ClassicControlEnv]) -> None:
    names = list(cls(1).params)
    ranges = {name: (0.8 * cls(1).params[name], 1.3 * cls(1).params[name]) for name in names}
    env = cls(256, randomize=ranges, max_episode_steps=5)
    env.reset(seed=0)
    for name, (lo, hi) in ranges.items():
        value = getattr(env, name)
        assert value.shape == (256,) and value.dtype == env.dtype
        assert (value >= lo).all() and (value <= hi).all() and value.std() > 0.05 * (hi - lo)
    before = {name: getattr(env, name).clone() for name in names}
    # Mid-episode nothing is redrawn; at the time limit every env redraws.
    actions = torch.as_tensor(env.action_space.sample())
    for _ in range(4):
        env.step(actions)
    assert all(torch.equal(getattr(env, name), before[name]) for name in names)
    env.step(actions)
    assert all(not torch.equal(getattr(env, name), before[name]) for name in names)


def test_randomization_redraws_only_finished_envs() -> None:
    env = CartPole(2, randomize={"length": (0.3, 1.0)})
    env.reset(seed=0, options={"state": torch.tensor([[0.0, 0.0, 0.2, 1.0], [0.0, 0.0, 0.0, 0.0]])})
    before = env.length.clone()
    _, _, terminated, _, _ = env.step(torch.tensor([1, 1]))
    assert terminated.tolist() == [True, False]
    assert env.length[0] != before[0] and env.length[1] == before[1]


def test_randomized_parameters_change_the_physics() -> None:
    """A degenerate range at the default value reproduces the plain env; per-env values act per env."""
    start = torch.tensor([[0.0, 0.0, 0.1, 0.0]] * 3, dtype=torch.float64)
    plain = CartPole(3, dtype=torch.float64)
    degenerate = CartPole(3, dtype=torch.float64, randomize={"gravity": (9.8, 9.8), "length": (0.5, 0.5)})
    light = CartPole(3, dtype=torch.float64, randomize={"gravity": (1.0, 2.0)})
    observations = []
    for env in (plain, degenerate, light):
        env.reset(seed=0, options={"state": start})
        observations.append(env.step(torch.tensor([1, 1, 1]))[0])
    torch.testing.assert_close(observations[0], observations[1], rtol=0, atol=0)
    # Weaker gravity: the pole falls more slowly than under 9.8, and differently in each env.
    assert (observations[2][:, 3] < observations[0][:, 3]).all()
    assert len(set(observations[2][:, 3].tolist())) == 3


def test_fixed_task_parameters_match_gymnasium_kwargs() -> None:
    """Pendulum's ``g`` keyword means what gymnasium's does."""
    ours = Pendulum(1, dtype=torch.float64, g=9.81)
    ours.reset(options={"state": torch.tensor([[1.0, 0.0]])})
    ref = gym.make("Pendulum-v1", g=9.81)
    ref.reset(seed=0)
    ref.unwrapped.state = np.array([1.0, 0.0])
    ref_obs, *_ = ref.step(np.array([0.5]))
    obs, *_ = ours.step(torch.tensor([[0.5]], dtype=torch.float64))
    torch.testing.assert_close(obs[0], torch.as_tensor(ref_obs), **TIGHT)


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_randomize_unknown_name_raises(cls: type[ClassicControlEnv]) -> None:
    valid = list(cls(1).params)
    with pytest.raises(ValueError, match="valid names") as err:
        cls(2, randomize={"not_a_parameter": (0.0, 1.0)})
    assert all(name in str(err.value) for name in valid)
    with pytest.raises(ValueError, match="lo <= hi"):
        cls(2, randomize={valid[0]: (1.0, 0.5)})
    with pytest.raises(ValueError, match="pair"):
        cls(2, randomize={valid[0]: 1.0})


# --- gymnasium registration -----------------------------------------------------------------------


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_gymnasium_make_vec(cls: type[ClassicControlEnv]) -> None:
    env = gym.make_vec(DRL_IDS[cls], num_envs=6, device="cpu", dtype=torch.float64)
    assert isinstance(env, cls) and env.num_envs == 6 and env.dtype == torch.float64
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, OBS_DIM[cls])
    obs, reward, terminated, truncated, info = env.step(torch.as_tensor(env.action_space.sample()))
    assert reward.shape == (6,)


@pytest.mark.parametrize("cls", ALL_ENVS)
def test_gymnasium_make_single(cls: type[ClassicControlEnv]) -> None:
    env = gym.make(DRL_IDS[cls])
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, np.ndarray) and obs.shape == (OBS_DIM[cls],) and obs.dtype == np.float32
    assert env.observation_space == gym.make(GYM_IDS[cls]).observation_space
    obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert obs.shape == (OBS_DIM[cls],) and isinstance(reward, float)
    assert isinstance(terminated, bool) and isinstance(truncated, bool)


def test_state_option_sets_every_env() -> None:
    for cls in ALL_ENVS:
        env = cls(3, dtype=torch.float64)
        state = torch.rand(3, STATE_DIM[cls], dtype=torch.float64)
        env.reset(options={"state": state})
        assert torch.equal(env.state, state)
        state.zero_()  # the env took a copy
        assert not torch.equal(env.state, state)
