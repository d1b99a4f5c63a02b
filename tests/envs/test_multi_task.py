"""The multi-task env contract (envs/multi_task.py) and its sources (envs/multi_task_sources.py)."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.core import GymnasiumVecEnv, MissingDependencyError, obs_equal
from envs.multi_task import MultiTaskVecEnv, is_multi_task, task_seed
from envs.multi_task_sources import MT_CARTPOLE_TASKS, MiniGridSuccess
from envs.torch_classic import CartPole, Pendulum

SCRIPTED_ID = "drl_test/ScriptedSuccess-v0"


class _Scripted(gym.Env):
    """Obs = the step count; ends (terminated, reward 1, success 1 in info) at step 3."""

    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t == 3
        return np.full(1, self.t, np.float32), float(done), done, False, {"success": float(done)}


def _cartpoles(horizons=(3, 5), per_task: int = 2, **kwargs) -> MultiTaskVecEnv:
    return MultiTaskVecEnv([CartPole(per_task, max_episode_steps=h, **kwargs) for h in horizons],
                           [f"t{k}_h{h}" for k, h in enumerate(horizons)], env_id="test")


def test_contract_shapes_task_ids_and_one_hot() -> None:
    env = envs.make_vec_env("drl/MT-CartPole-v0", 8)
    assert is_multi_task(env) and env.num_tasks == 4 and env.envs_per_task == 2
    assert env.task_names == tuple(MT_CARTPOLE_TASKS)
    assert env.task_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] and env.task_ids.dtype == torch.int64
    assert [e.length for e in env.task_envs] == [0.5, 0.25, 1.0, 0.5]  # each task its own dynamics
    assert [e.force_mag for e in env.task_envs] == [10.0, 10.0, 10.0, 5.0]
    obs, info = env.reset(seed=0)
    assert set(obs) == {"policy", "task"} and obs["policy"].shape == (8, 4) and obs["task"].dtype == torch.float32
    expected = torch.zeros(8, 4)
    expected[torch.arange(8), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])] = 1.0
    assert torch.equal(obs["task"], expected) and torch.equal(info["task_id"], env.task_ids)
    assert env.single_observation_space["task"].shape == (4,) and env.single_action_space == gym.spaces.Discrete(2)
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    obs, reward, terminated, truncated, info = env.step(torch.ones(8, dtype=torch.int64))
    assert reward.shape == terminated.shape == truncated.shape == (8,)
    assert torch.equal(info["task_id"], env.task_ids) and "success" not in info and not env.reports_success
    assert torch.equal(info["final_obs"]["task"], expected)


def test_each_task_steps_like_its_own_env_autoreset_included() -> None:
    """Block k of the multi-task env is, bitwise, task k's env alone reset with task_seed(seed, k)."""
    env = _cartpoles(horizons=(3, 5))
    alone = [CartPole(2, max_episode_steps=3), CartPole(2, max_episode_steps=5)]
    obs, _ = env.reset(seed=7)
    parts = [a.reset(seed=task_seed(7, k))[0] for k, a in enumerate(alone)]
    assert torch.equal(obs["policy"], torch.cat(parts))
    gen = torch.Generator().manual_seed(0)
    for step in range(1, 8):
        actions = torch.randint(0, 2, (4,), generator=gen)
        obs, reward, terminated, truncated, info = env.step(actions)
        outs = [a.step(actions[2 * k:2 * k + 2]) for k, a in enumerate(alone)]
        assert torch.equal(obs["policy"], torch.cat([o[0] for o in outs]))
        assert torch.equal(reward, torch.cat([o[1] for o in outs]))
        assert torch.equal(terminated, torch.cat([o[2] for o in outs]))
        assert torch.equal(truncated, torch.cat([o[3] for o in outs]))
        assert torch.equal(info["final_obs"]["policy"], torch.cat([o[4]["final_obs"] for o in outs]))
        assert torch.equal(info["_final_obs"], terminated | truncated)
        # the horizons are per task: block 0 truncates at step 3 and 6, block 1 at step 5 (unless terminated)
        assert bool(truncated[:2].all()) == (step % 3 == 0 and not bool(terminated[:2].any()))
        if bool(truncated[2:].any()):
            assert step == 5


def test_reset_seed_is_deterministic_and_each_task_has_its_own_stream() -> None:
    a, b = _cartpoles((500, 500)), _cartpoles((500, 500))
    obs_a, _ = a.reset(seed=3)
    obs_b, _ = b.reset(seed=3)
    assert obs_equal(obs_a, obs_b)
    assert not torch.equal(obs_a["policy"][:2], obs_a["policy"][2:])  # task 1 does not repeat task 0's draws
    assert not torch.equal(b.reset(seed=4)[0]["policy"], obs_a["policy"])
    assert obs_equal(b.reset(seed=3)[0], obs_a)
    actions = torch.tensor([0, 1, 1, 0])
    for _ in range(30):
        out_a, out_b = a.step(actions), b.step(actions)
        assert obs_equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])
    assert task_seed(3, 0) != task_seed(3, 1) != task_seed(4, 0)


def test_state_round_trip_continues_bitwise() -> None:
    env, copy = _cartpoles((4, 6)), _cartpoles((4, 6))
    assert env.supports_state_dict
    env.reset(seed=1)
    copy.reset(seed=99)
    actions = torch.tensor([1, 0, 1, 1])
    for _ in range(5):
        env.step(actions)
    state = env.state_dict()
    copy.load_state_dict(state)
    assert obs_equal(state["obs"], env.state_dict()["obs"])
    for _ in range(9):  # through autoresets of both tasks
        out, out_copy = env.step(actions), copy.step(actions)
        assert obs_equal(out[0], out_copy[0]) and torch.equal(out[1], out_copy[1])
        assert torch.equal(out[3], out_copy[3]) and obs_equal(out[4]["final_obs"], out_copy[4]["final_obs"])
    with pytest.raises(ValueError, match="task_names"):
        _cartpoles((4, 7)).load_state_dict(state)
    with pytest.raises(ValueError, match="num_envs"):
        _cartpoles((4, 6), per_task=3).load_state_dict(state)


def test_tasks_with_different_spaces_or_sizes_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="task 'pendulum' has action space"):
        MultiTaskVecEnv([CartPole(2), Pendulum(2)], ["cartpole", "pendulum"])
    with pytest.raises(ValueError, match="task 'b' has 3 copies"):
        MultiTaskVecEnv([CartPole(2), CartPole(3)], ["a", "b"])
    with pytest.raises(ValueError, match="each once"):
        MultiTaskVecEnv([CartPole(2), CartPole(2)], ["a", "a"])
    scripted = GymnasiumVecEnv(SCRIPTED_ID, 2)
    with pytest.raises(ValueError, match="task 'scripted' has observation space"):
        MultiTaskVecEnv([CartPole(2), scripted], ["cartpole", "scripted"])
    with pytest.raises(ValueError, match=r"multiple of 4 \(set env.num_envs and env.num_eval_envs to e.g. 4 or 8\)"):
        envs.make_vec_env("drl/MT-CartPole-v0", 6)


def test_observation_bounds_may_differ_and_are_joined() -> None:
    env = MultiTaskVecEnv([CartPole(1), CartPole(1)], ["a", "b"])
    assert env.single_observation_space["policy"] == CartPole(1).single_observation_space
    wide = gym.spaces.Box(-np.ones(4, np.float32) * 9, np.ones(4, np.float32) * 9, dtype=np.float32)
    other = CartPole(1)
    other.single_observation_space = wide
    joined = MultiTaskVecEnv([CartPole(1), other], ["a", "b"]).single_observation_space["policy"]
    assert joined.low[1] == -np.inf and joined.low[0] == -9 and joined.high[2] == 9


def test_task_subset_and_custom_family() -> None:
    env = envs.make_vec_env("drl/MT-Pendulum-v0", 4, env_kwargs={"tasks": ["nominal", "heavy"], "max_episode_steps": 7})
    assert env.task_names == ("nominal", "heavy") and env.max_episode_steps == 7
    assert [e.mass for e in env.task_envs] == [1.0, 1.5]
    env = envs.make_vec_env("drl/MT-CartPole-v0", 3, env_kwargs={"tasks": {"x": {"length": 0.3}, "y": {},
                                                                           "z": {"gravity": 3.0}}})
    assert env.task_names == ("x", "y", "z") and env.task_envs[2].gravity == 3.0
    with pytest.raises(ValueError, match="unknown task"):
        envs.make_vec_env("drl/MT-CartPole-v0", 4, env_kwargs={"tasks": ["nominal", "upside_down"]})


@pytest.fixture(scope="module", autouse=True)
def _scripted_env() -> None:
    if SCRIPTED_ID not in gym.registry:
        gym.register(SCRIPTED_ID, entry_point=_Scripted, disable_env_checker=True)


def test_success_of_adapter_tasks_is_read_at_the_finished_step() -> None:
    """The gymnasium adapter moves a finished copy's info to final_info: success is read from there."""
    env = MultiTaskVecEnv([GymnasiumVecEnv(SCRIPTED_ID, 2), GymnasiumVecEnv(SCRIPTED_ID, 2)], ["a", "b"],
                          reports_success=True)
    env.reset(seed=0)
    seen = []
    for _ in range(6):
        obs, reward, terminated, truncated, info = env.step(torch.zeros(4, dtype=torch.int64))
        seen.append(info["success"].tolist())
        assert torch.equal(info["success"], terminated.float())  # success exactly at the steps that end at the goal
    assert seen[2] == seen[5] == [1.0] * 4 and obs["policy"].shape == (4, 1)


def test_minigrid_task_set_shares_one_encoding() -> None:
    pytest.importorskip("minigrid")
    env = envs.make_vec_env("minigrid-mt:MiniGrid-Empty-5x5-v0,MiniGrid-DoorKey-5x5-v0", 4)
    assert env.task_names == ("Empty-5x5", "DoorKey-5x5") and env.reports_success
    obs, _ = env.reset(seed=0)
    assert obs["policy"].shape == (4, 151) and obs["task"].shape == (4, 2)
    _, _, _, _, info = env.step(torch.zeros(4, dtype=torch.int64))
    assert info["success"].shape == (4,)
    assert envs.make_vec_env("minigrid-mt:Basic", 4).num_tasks == 4
    with pytest.raises(gym.error.NameNotFound, match="unknown MiniGrid task set"):
        envs.make_vec_env("minigrid-mt:NoSuchSet", 4)


def test_minigrid_success_is_a_terminated_positive_reward() -> None:
    class Ends(gym.Env):
        observation_space, action_space = gym.spaces.Discrete(2), gym.spaces.Discrete(2)

        def step(self, action):  # action 1: reach the goal (reward 0.5); 0: fall into lava (reward 0)
            return 0, 0.5 * action, True, False, {}

    wrapped = MiniGridSuccess(Ends())
    assert wrapped.step(1)[4]["success"] == 1.0 and wrapped.step(0)[4]["success"] == 0.0


def test_metaworld_missing_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "metaworld", None)  # import metaworld now raises ImportError
    with pytest.raises(MissingDependencyError, match="metaworld"):
        envs.make_vec_env("metaworld:MT10", 10)


def test_metaworld_tasks_reset_step_and_report_success() -> None:
    pytest.importorskip("metaworld")
    env = envs.make_vec_env("metaworld:reach-v3,window-close-v3", 2)
    assert env.task_names == ("reach-v3", "window-close-v3") and env.max_episode_steps == 500
    obs, _ = env.reset(seed=0)
    assert obs["policy"].shape == (2, 39) and env.single_action_space.shape == (4,)
    _, reward, _, _, info = env.step(torch.zeros(2, 4))
    assert reward.dtype == torch.float32 and info["success"].shape == (2,)
    env.close()


def test_min_copies_is_the_task_count_of_multi_task_ids() -> None:
    from envs.multi_task_sources import is_multi_task_id, min_copies

    assert min_copies("drl/MT-CartPole-v0") == 4 and min_copies("drl/CartPole-v0") == 1
    assert min_copies("drl/MT-CartPole-v0", {"tasks": ["nominal", "weak_push"]}) == 2
    assert min_copies("minigrid-mt:KeyCorridor") == 6 and min_copies("metaworld:MT10") == 10
    assert min_copies("metaworld:reach-v3,push-v3") == 2 and min_copies("CartPole-v1") == 1
    assert is_multi_task_id("minigrid-mt:Basic") and not is_multi_task_id("MiniGrid-Empty-5x5-v0")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_tasks_step_on_the_gpu_without_a_host_sync() -> None:
    env = envs.make_vec_env("drl/MT-Pendulum-v0", 64, device="cuda")
    obs, _ = env.reset(seed=0)
    assert obs["policy"].device.type == obs["task"].device.type == env.task_ids.device.type == "cuda"
    actions = torch.zeros(64, 1, device="cuda")
    torch.cuda.set_sync_debug_mode("error")  # any device -> host copy in step() raises
    try:
        for _ in range(210):  # through the 200-step truncation and autoreset
            obs, reward, terminated, truncated, info = env.step(actions)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert bool(truncated.any()) is False and reward.device.type == "cuda"
    assert info["final_obs"]["task"].device.type == "cuda"
