"""MaMuJoCo partitions of the MuJoCo Warp tasks (envs/mjwarp/partitions.py) against gymnasium-robotics' MaMuJoCo.

For the same physical state every agent's observation must be MaMuJoCo's, the agents' actions must
map to the same single-agent action, and rewards/state must be the single-agent task's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("warp")
pytest.importorskip("mujoco_warp")
pytest.importorskip("pettingzoo")
mamujoco = pytest.importorskip("gymnasium_robotics.envs.multiagent_mujoco.mujoco_multi")

import envs  # noqa: E402  (registers drl/ ids)
from drl.resources import per_env_bytes  # noqa: E402
from envs.mjwarp.partitions import PARTITIONS, MaMuJoCoPartition  # noqa: E402
from envs.multi_agent import is_multi_agent  # noqa: E402

NUM_ENVS = 2
# every registered partition (and Ant's diagonal one) at MaMuJoCo's default depth k = 1; depths 0 and 2
# on the partitions with the most agents (deeper neighbourhoods, the Ant's hyperedge)
CASES = [(robot, partition, 1) for robot, partition in [*PARTITIONS, ("Ant", "2x4d")]]
CASES += [("HalfCheetah", "6x1", 0), ("HalfCheetah", "6x1", 2), ("Ant", "4x2", 0), ("Ant", "4x2", 2)]


@pytest.fixture(scope="module")
def built() -> dict[tuple[str, str, int], MaMuJoCoPartition]:
    return {}


def _env(built: dict, robot: str, partition: str, k: int = 1) -> MaMuJoCoPartition:
    key = (robot, partition, k)
    if key not in built:
        built[key] = MaMuJoCoPartition(robot, partition, NUM_ENVS, agent_obsk=k)
    return built[key]


class _Data:
    """The MuJoCo data fields MaMuJoCo's ``build_obs`` reads, from row ``i`` of a warp env (float64)."""

    def __init__(self, env: MaMuJoCoPartition, i: int):
        task = env.task
        self.qpos = task.qpos[i].double().numpy()
        self.qvel = task.qvel[i].double().numpy()
        self.cfrc_ext = task.cfrc_ext[i].double().numpy()


def _reference_obs(ref: object, data: _Data) -> dict[str, np.ndarray]:
    return {agent: mamujoco.build_obs(data, ref.k_dicts[j], ref.local_categories, ref.mujoco_globals,
                                      ref.global_categories)
            for j, agent in enumerate(ref.possible_agents)}


@pytest.mark.parametrize(("robot", "partition", "k"), CASES)
def test_observations_and_actions_match_mamujoco(built: dict, robot: str, partition: str, k: int) -> None:
    env = _env(built, robot, partition, k)
    ref = mamujoco.MultiAgentMujocoEnv(robot, partition, agent_obsk=k)
    assert is_multi_agent(env) and env.agents == tuple(ref.possible_agents)
    for agent in env.agents:
        assert env.single_observation_spaces[agent].shape == ref.observation_space(agent).shape
        assert env.single_action_spaces[agent].shape == ref.action_space(agent).shape
        assert np.array_equal(env.single_action_spaces[agent].low, ref.action_space(agent).low)
    assert env.single_state_space.shape == ref.single_agent_env.observation_space.shape

    # 1. the same state in both simulators (a v5 reset state of ours; cfrc_ext is zero after a reset in both)
    obs, _ = env.reset(seed=3)
    ref.reset(seed=0)
    for i in range(NUM_ENVS):
        ref.single_agent_env.unwrapped.set_state(env.task.qpos[i].double().numpy(), env.task.qvel[i].double().numpy())
        expected = ref._get_obs()
        for agent in env.agents:
            np.testing.assert_allclose(obs[agent][i].numpy(), expected[agent], rtol=0, atol=1e-6)
        np.testing.assert_allclose(obs["state"][i].numpy(), ref.state(), rtol=0, atol=1e-6)

    # 2. states reached by stepping (contact forces, clipped velocities): MaMuJoCo's build_obs on our data
    gen = torch.Generator().manual_seed(0)
    largest_force = 0.0
    for _ in range(25):  # the Ant lands on the floor (contact forces) after ~10 steps
        actions = {a: torch.rand(NUM_ENVS, *env.single_action_spaces[a].shape, generator=gen) * 2 - 1
                   for a in env.agents}
        obs, *_ = env.step(actions)
        largest_force = max(largest_force, env.task.cfrc_ext.abs().max().item())
        for i in range(NUM_ENVS):
            expected = _reference_obs(ref, _Data(env, i))
            for agent in env.agents:
                np.testing.assert_allclose(obs[agent][i].numpy(), expected[agent], rtol=0, atol=1e-6)
            # 3. the joint action is MaMuJoCo's global action
            joint = ref.map_local_actions_to_global_action({a: actions[a][i].numpy() for a in env.agents})
            np.testing.assert_array_equal(env.joint_action(actions)[i].numpy(), joint.astype(np.float32))
    if robot == "Ant":
        assert largest_force > 1  # contact forces, and their clipping to [-1, 1], were exercised
    back = env.agent_actions(env.joint_action(actions))
    assert all(torch.equal(back[a], actions[a]) for a in env.agents)
    ref.close()


@pytest.mark.parametrize(("robot", "partition", "single"), [("HalfCheetah", "2x3", "drl/HalfCheetah-v0"),
                                                            ("Hopper", "3x1", "drl/Hopper-v0")])
def test_reward_state_and_flags_are_the_single_agent_tasks(built: dict, robot: str, partition: str,
                                                          single: str) -> None:
    env = _env(built, robot, partition)
    task = envs.make_vec_env(single, NUM_ENVS, env_kwargs={"max_episode_steps": 1000})
    obs, _ = env.reset(seed=7)
    task_obs, _ = task.reset(seed=7)
    assert torch.equal(obs["state"], task_obs)
    gen = torch.Generator().manual_seed(1)
    ended = False
    for _ in range(40):
        joint = torch.rand(NUM_ENVS, task.single_action_space.shape[0], generator=gen) * 2 - 1
        obs, reward, terminated, truncated, info = env.step(env.agent_actions(joint))
        task_obs, task_reward, task_terminated, task_truncated, task_info = task.step(joint)
        assert reward.shape == (NUM_ENVS, env.num_agents)
        assert torch.equal(reward, task_reward[:, None].expand_as(reward))
        assert torch.equal(terminated, task_terminated) and torch.equal(truncated, task_truncated)
        assert torch.equal(obs["state"], task_obs)
        assert torch.equal(info["final_obs"]["state"], task_info["final_obs"])
        ended |= bool(terminated.any())
    assert ended or robot == "HalfCheetah"  # the Hopper falls within 40 random steps: autoreset exercised
    assert per_env_bytes(env) >= per_env_bytes(task) > 0  # the warp state is counted (resource checks)
    task.close()


def test_env_state_round_trip_and_registered_ids(built: dict) -> None:
    env = _env(built, "Ant", "4x2")
    assert env.supports_state_dict
    env.reset(seed=0)
    env.step({a: torch.full((NUM_ENVS, 2), 0.3) for a in env.agents})
    saved = env.state_dict()
    actions = {a: torch.full((NUM_ENVS, 2), -0.5) for a in env.agents}
    first = env.step(actions)
    env.load_state_dict(saved)
    second = env.step(actions)
    assert all(torch.equal(first[0][k], second[0][k]) for k in first[0]) and torch.equal(first[1], second[1])
    for robot, partition in PARTITIONS:
        assert envs.ENVS[f"drl/{robot}-{partition}-v0"].backend == "mujoco-warp"
    made = envs.make_vec_env("drl/Walker2d-2x3-v0", 1, env_kwargs={"max_episode_steps": 5})
    assert isinstance(made, MaMuJoCoPartition) and made.max_episode_steps == 5 and made.num_agents == 2
    with pytest.raises(ValueError, match=r"one action tensor per agent"):
        env.step({"agent_0": torch.zeros(NUM_ENVS, 2)})
    with pytest.raises(ValueError, match=r"agent 'agent_1' must have shape \(2, 2\)"):
        env.step({**actions, "agent_1": torch.zeros(NUM_ENVS, 3)})
    with pytest.raises(ValueError, match="partitions"):
        MaMuJoCoPartition("Ant", "3x3", 1)
