"""The CPU adapter: any gymnasium env id -> the torch vector-env contract."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from envs import make_vec_env
from envs.core import GymnasiumVecEnv, MissingDependencyError


class _GroupedEnv(gym.Env):
    """A tiny env with 'policy'/'critic' groups, and a variant with a non-group Dict obs."""

    def __init__(self, grouped: bool = True, horizon: int = 3):
        keys = ("policy", "critic") if grouped else ("position", "velocity")
        self.observation_space = gym.spaces.Dict(
            {keys[0]: gym.spaces.Box(-10, 10, (2,)), keys[1]: gym.spaces.Box(-10, 10, (3,))}
        )
        self.action_space = gym.spaces.Box(-1, 1, (1,))
        self.keys, self.horizon = keys, horizon

    def _obs(self):
        return {self.keys[0]: np.full(2, self.t, np.float32), self.keys[1]: np.full(3, -self.t, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(action[0]), self.t >= self.horizon, False, {}


gym.register("test/Grouped-v0", entry_point=_GroupedEnv, kwargs={"grouped": True})
gym.register("test/Ungrouped-v0", entry_point=_GroupedEnv, kwargs={"grouped": False})


def test_cartpole_dtypes_devices_shapes():
    env = make_vec_env("CartPole-v1", 3, "cpu")
    obs, _ = env.reset(seed=0)
    assert obs.dtype == torch.float32 and obs.shape == (3, 4) and obs.device.type == "cpu"
    obs, reward, terminated, truncated, info = env.step(torch.tensor([0, 1, 0]))
    assert reward.dtype == torch.float32 and reward.shape == (3,)
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info["_final_obs"].dtype == torch.bool and info["final_obs"].shape == (3, 4)
    assert torch.equal(info["final_obs"], obs)  # nobody finished: final_obs is the obs
    assert env.single_observation_space.shape == (4,) and isinstance(env.single_action_space, gym.spaces.Discrete)


def test_final_obs_on_truncation_matches_gymnasium():
    """Truncated envs report their true last obs; the returned obs is the next episode's first."""
    env = make_vec_env("Pendulum-v1", 2, "cpu", env_kwargs={"max_episode_steps": 5})
    reference = [gym.make("Pendulum-v1", max_episode_steps=5) for _ in range(2)]
    obs, _ = env.reset(seed=7)
    ref_obs = [r.reset(seed=7 + i)[0] for i, r in enumerate(reference)]
    np.testing.assert_allclose(obs.numpy(), np.stack(ref_obs), rtol=1e-6)
    actions = torch.tensor([[0.5], [-1.5]])
    for step in range(5):
        obs, reward, terminated, truncated, info = env.step(actions)
        ref = [r.step(actions[i].numpy()) for i, r in enumerate(reference)]
        np.testing.assert_allclose(info["final_obs"].numpy(), np.stack([x[0] for x in ref]), rtol=1e-5)
        np.testing.assert_allclose(reward.numpy(), [x[1] for x in ref], rtol=1e-5)
        assert truncated.tolist() == [step == 4] * 2 and not terminated.any()
    assert info["_final_obs"].tolist() == [True, True]
    assert not torch.equal(info["final_obs"], obs)  # obs already belongs to the new episode


def test_final_obs_on_termination_keeps_other_rows():
    env = make_vec_env("test/Grouped-v0", 2, "cpu")
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"policy", "critic"} and obs["critic"].shape == (2, 3)
    for _ in range(2):
        obs, *_ = env.step(torch.zeros(2, 1))
    obs, reward, terminated, truncated, info = env.step(torch.ones(2, 1))
    assert terminated.all() and torch.equal(info["_final_obs"], torch.tensor([True, True]))
    assert torch.equal(info["final_obs"]["policy"], torch.full((2, 2), 3.0))
    assert torch.equal(obs["policy"], torch.zeros(2, 2))  # SAME_STEP: already reset


def test_non_group_dict_is_flattened():
    env = make_vec_env("test/Ungrouped-v0", 2, "cpu")
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, torch.Tensor) and obs.shape == (2, 5)
    assert isinstance(env.single_observation_space, gym.spaces.Box)


def test_async_vectorization_matches_sync():
    sync = make_vec_env("CartPole-v1", 2, "cpu", vectorization="sync")
    asyn = make_vec_env("CartPole-v1", 2, "cpu", vectorization="async")
    o1, _ = sync.reset(seed=3)
    o2, _ = asyn.reset(seed=3)
    for _ in range(30):
        assert torch.equal(o1, o2)
        o1, r1, *_ = sync.step(torch.tensor([1, 0]))
        o2, r2, *_ = asyn.step(torch.tensor([1, 0]))
    asyn.close()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="vectorization must be 'sync' or 'async'"):
        GymnasiumVecEnv("CartPole-v1", 2, vectorization="threads")
    with pytest.raises(gym.error.NameNotFound, match="unknown env id 'Nope-v0'"):
        make_vec_env("Nope-v0", 2)
    with pytest.raises(gym.error.NameNotFound, match="unknown drl env 'drl/Nope-v0'"):
        make_vec_env("drl/Nope-v0", 2)
    with pytest.raises(ValueError, match="CUDA is not available") if not torch.cuda.is_available() else _nothing():
        make_vec_env("CartPole-v1", 2, "cuda")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_missing_dependency_message_names_pip_command():
    err = MissingDependencyError("drl/PandaReach-v0", "pybullet")
    assert "pip install 'drl[pybullet]'" in str(err) and "drl/PandaReach-v0" in str(err)


def test_minigrid_through_the_adapter():
    """MiniGrid ids register on import; the text mission is dropped and the rest flattened."""
    pytest.importorskip("minigrid")
    with pytest.warns(UserWarning, match="dropping observation entries \\['mission'\\]"):
        env = make_vec_env("MiniGrid-Empty-5x5-v0", 2, "cpu")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4 + 7 * 7 * 3) and obs.dtype == torch.float32  # one-hot direction + image
    obs, reward, terminated, truncated, info = env.step(torch.tensor([2, 1]))
    assert reward.shape == (2,) and isinstance(env.single_action_space, gym.spaces.Discrete)


def test_sync_loop_matches_gymnasium_sync_vector_env():
    """The adapter's own sync loop returns what gymnasium's SyncVectorEnv returns, resets and infos included."""
    env = make_vec_env("Pendulum-v1", 3, "cpu", env_kwargs={"max_episode_steps": 7})
    reference = gym.make_vec("Pendulum-v1", num_envs=3, vectorization_mode="sync", max_episode_steps=7,
                             vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    obs, _ = env.reset(seed=11)
    ref_obs, _ = reference.reset(seed=11)
    np.testing.assert_array_equal(obs.numpy(), ref_obs.astype(np.float32))
    gen = np.random.default_rng(0)
    finished = 0
    for _ in range(20):
        actions = gen.uniform(-2, 2, (3, 1)).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(torch.from_numpy(actions))
        ref_obs, ref_reward, ref_terminated, ref_truncated, ref_info = reference.step(actions)
        np.testing.assert_array_equal(obs.numpy(), ref_obs.astype(np.float32))
        np.testing.assert_array_equal(reward.numpy(), ref_reward.astype(np.float32))
        assert terminated.tolist() == ref_terminated.tolist() and truncated.tolist() == ref_truncated.tolist()
        done = ref_terminated | ref_truncated
        assert info["_final_obs"].tolist() == done.tolist()
        if done.any():
            finished += 1
            for i in np.flatnonzero(done):
                np.testing.assert_array_equal(info["final_obs"][i].numpy(), ref_info["final_obs"][i])
            assert set(info["final_info"]) == set(ref_info["final_info"])
    assert finished == 2  # steps 7 and 14 end every episode


def test_sync_loop_returns_fresh_tensors_each_step():
    """A caller may keep last step's tensors: the next step must not overwrite them."""
    env = make_vec_env("CartPole-v1", 2, "cpu")
    obs, _ = env.reset(seed=0)
    kept = obs.clone()
    next_obs, reward, *_ = env.step(torch.tensor([0, 1]))
    assert torch.equal(obs, kept) and next_obs.data_ptr() != obs.data_ptr()


# ------------------------------------------------------------------------------------------------
# edge cases: integer spaces not starting at 0, reward shapes, time limits, Box2D, module:Env ids
# ------------------------------------------------------------------------------------------------


class _OffsetEnv(gym.Env):
    """Discrete(3, start=-1) (or a MultiDiscrete with starts); reward = the action it received."""

    def __init__(self, multi: bool = False):
        self.observation_space = gym.spaces.Box(-1, 1, (1,))
        if multi:
            self.action_space = gym.spaces.MultiDiscrete([2, 3], start=[5, -2])
        else:
            self.action_space = gym.spaces.Discrete(3, start=-1)
        self.received: list = []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=self.action_space.dtype)), action
        reward = float(np.sum(action))
        return np.zeros(1, np.float32), reward, False, False, {}


class _RewardShapeEnv(gym.Env):
    """Returns its reward as an array of shape ``shape`` holding ``value``."""

    def __init__(self, shape=(1,), value=2.5):
        self.observation_space = gym.spaces.Box(-1, 1, (1,))
        self.action_space = gym.spaces.Discrete(2)
        self.shape, self.value = shape, value

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), np.full(self.shape, self.value, np.float32), False, False, {}


gym.register("test/Offset-v0", entry_point=_OffsetEnv)
gym.register("test/MultiOffset-v0", entry_point=_OffsetEnv, kwargs={"multi": True})
gym.register("test/Reward1-v0", entry_point=_RewardShapeEnv)
gym.register("test/Reward2-v0", entry_point=_RewardShapeEnv, kwargs={"shape": (2,)})


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_discrete_start_is_mapped(vectorization):
    env = make_vec_env("test/Offset-v0", 3, "cpu", vectorization)
    assert env.single_action_space == gym.spaces.Discrete(3)  # the agent acts in 0..n-1
    env.reset(seed=0)
    _, reward, *_ = env.step(torch.tensor([0, 1, 2]))
    assert reward.tolist() == [-1.0, 0.0, 1.0]  # the env received start + action, inside its space
    env.close()


def test_multi_discrete_start_is_mapped():
    env = make_vec_env("test/MultiOffset-v0", 2, "cpu")
    assert env.single_action_space == gym.spaces.MultiDiscrete([2, 3])
    env.reset(seed=0)
    _, reward, *_ = env.step(torch.tensor([[0, 0], [1, 2]]))
    assert reward.tolist() == [5 - 2, 6 + 0]
    env.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_one_element_reward_is_squeezed(vectorization):
    env = make_vec_env("test/Reward1-v0", 3, "cpu", vectorization)
    env.reset(seed=0)
    _, reward, *_ = env.step(torch.tensor([0, 1, 0]))
    assert reward.shape == (3,) and reward.dtype == torch.float32 and reward.tolist() == [2.5, 2.5, 2.5]
    env.close()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_reward_of_other_shape_is_refused_naming_the_env(vectorization):
    env = make_vec_env("test/Reward2-v0", 2, "cpu", vectorization)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"env 'test/Reward2-v0'.*returned (a reward|rewards) of shape \((2,|2, 2)\)"
                                         r".*one number per env step"):
        env.step(torch.tensor([0, 1]))
    env.close()


@pytest.mark.parametrize("env_id", ["drl/CartPole-v0", "drl/Pendulum-v0", "drl/Acrobot-v0",
                                    "drl/MountainCarContinuous-v0"])
@pytest.mark.parametrize("steps", [0, -1, 2.5, True, 1_000_001, 2**64])
def test_torch_env_refuses_time_limits_out_of_range(env_id, steps):
    with pytest.raises(ValueError, match=r"max_episode_steps must be an integer in \[1, 1,000,000\] \(or None for no "
                                         r"time limit\)"):
        make_vec_env(env_id, 2, "cpu", env_kwargs={"max_episode_steps": steps})
    assert make_vec_env(env_id, 2, "cpu", env_kwargs={"max_episode_steps": 1}).max_episode_steps == 1


@pytest.mark.parametrize("steps", [0, -1, 2.5, 2**31])
def test_adapter_refuses_time_limits_out_of_range(steps):
    """Beyond 1,000,000 steps (the evaluator's cap) an episode of Pendulum (which never terminates)
    could never be evaluated."""
    with pytest.raises(ValueError, match=r"^env 'Pendulum-v1': max_episode_steps must be an integer in "
                                         r"\[1, 1,000,000\]"):
        make_vec_env("Pendulum-v1", 1, "cpu", env_kwargs={"max_episode_steps": steps})


def _box2d_installed() -> bool:
    try:
        import Box2D  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(_box2d_installed(), reason="Box2D is installed: nothing is missing")
@pytest.mark.parametrize("env_id", ["LunarLander-v3", "CarRacing-v3", "BipedalWalker-v3"])
def test_box2d_ids_name_the_box2d_extra_and_keep_gymnasiums_hint(env_id):
    with pytest.raises(MissingDependencyError) as err:
        make_vec_env(env_id, 1, "cpu")
    msg = str(err.value)
    assert "pip install 'drl[box2d]'" in msg and 'pip install "gymnasium[box2d]"' in msg
    assert "drl[dev]" not in msg
    assert "pip install swig" in msg  # gymnasium's own hint, kept
    assert "\n" not in msg


def test_module_colon_id_imports_the_module(tmp_path, monkeypatch):
    (tmp_path / "drl_test_custom_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('CustomCartPole-v0', entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv',\n"
        "             max_episode_steps=7)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    env = make_vec_env("drl_test_custom_envs:CustomCartPole-v0", 2, "cpu")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2, 4)
    assert env.spec.id == "CustomCartPole-v0" and env.spec.max_episode_steps == 7  # the module's registration
    env.close()
    with pytest.raises(gym.error.NameNotFound, match="module 'drl_test_no_such_module' .* cannot be imported"):
        make_vec_env("drl_test_no_such_module:X-v0", 1, "cpu")


def test_cli_trains_a_module_colon_id(tmp_path, monkeypatch):
    from drl.cli import main

    (tmp_path / "drl_test_cli_envs.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('CliCartPole-v0', entry_point='gymnasium.envs.classic_control.cartpole:CartPoleEnv',\n"
        "             max_episode_steps=20)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    assert main(["train", "ppo", "--env", "drl_test_cli_envs:CliCartPole-v0", "--steps", "32", "--num-envs", "2",
                 "--set", "algo.num_steps=16", "--set", "algo.minibatch_size=16", "--set", "algo.num_epochs=1",
                 "--set", "eval_episodes=1", "--set", "env.num_eval_envs=1", "--no-progress", "--device", "cpu",
                 "--run-dir", str(run_dir)]) == 0
    assert (run_dir / "summary.json").is_file()


def test_adapter_exposes_the_registered_time_limit():
    """Like the torch envs, the adapter has ``max_episode_steps`` (the gymnasium registration's TimeLimit;
    None without one), so wrappers that need the horizon (coverage_obs, submodular) work on gymnasium ids."""
    from envs import make_vec_env

    env = make_vec_env("Pendulum-v1", 2)
    assert env.max_episode_steps == 200
    env.close()
