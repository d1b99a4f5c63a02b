"""PyBullet Franka Panda tasks: spaces, the SAME_STEP autoreset contract, seeding, rewards, the scripted
experts, and the demonstration file format."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("pybullet")

import envs  # noqa: E402, F401  (registers the drl/ ids)
from envs.core import MissingDependencyError  # noqa: E402
from envs.tasks.demos import (  # noqa: E402
    FORMAT_VERSION,
    collect_demos,
    expert_success_rate,
    load_demos,
    save_demos,
)
from envs.tasks.panda import (  # noqa: E402
    EE_HOME,
    SUCCESS_DISTANCE,
    PandaPickOccluded,
    PandaPickPlace,
    PandaPush,
    PandaReach,
    PandaTaskEnv,
    expert_action,
)

# (class, env id, policy dim, critic dim, action dim)
TASKS = [
    (PandaReach, "drl/PandaReach-v0", 24, 31, 3),
    (PandaPush, "drl/PandaPush-v0", 27, 49, 3),
    (PandaPickPlace, "drl/PandaPickPlace-v0", 27, 49, 4),
]
TASK_IDS = [cls.__name__ for cls, *_ in TASKS]


def random_actions(num_envs: int, action_dim: int, seed: int, steps: int) -> torch.Tensor:
    """Reproducible uniform actions ``[steps, N, A]`` in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(steps, num_envs, action_dim, generator=gen) * 2 - 1


# --- spaces, shapes, registration ---------------------------------------------------------------
@pytest.mark.parametrize(("cls", "env_id", "policy_dim", "critic_dim", "action_dim"), TASKS, ids=TASK_IDS)
def test_spaces_shapes_and_dtypes(cls, env_id, policy_dim, critic_dim, action_dim):
    env = cls(num_envs=3)
    assert set(env.single_observation_space.spaces) == {"policy", "critic"}
    assert env.single_observation_space["policy"].shape == (policy_dim,)
    assert env.single_observation_space["critic"].shape == (critic_dim,)
    assert env.single_action_space.shape == (action_dim,)
    assert np.all(env.single_action_space.low == -1) and np.all(env.single_action_space.high == 1)

    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    for group, dim in (("policy", policy_dim), ("critic", critic_dim)):
        assert obs[group].shape == (3, dim) and obs[group].dtype == torch.float32
        layout = env.observation_layout(group)
        assert max(s.stop for s in layout.values()) == dim

    obs, reward, terminated, truncated, info = env.step(random_actions(3, action_dim, 0, 1)[0])
    assert env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    assert reward.shape == (3,) and reward.dtype == torch.float32
    assert terminated.shape == truncated.shape == info["success"].shape == info["_final_obs"].shape == (3,)
    assert terminated.dtype == truncated.dtype == info["success"].dtype == torch.bool
    assert {k: v.shape for k, v in info["final_obs"].items()} == {k: v.shape for k, v in obs.items()}
    env.close()


def test_registered_ids_build_the_classes():
    vec = gym.make_vec("drl/PandaPush-v0", num_envs=2, reward_type="sparse", max_episode_steps=7)
    assert isinstance(vec, PandaPush) and vec.reward_type == "sparse" and vec.max_episode_steps == 7
    vec.close()
    single = gym.make("drl/PandaReach-v0")
    obs, _ = single.reset(seed=0)
    assert obs["policy"].shape == (24,) and isinstance(obs["policy"], np.ndarray)
    single.step(single.action_space.sample())
    single.close()


def test_image_group_is_optional():
    env = PandaPickPlace(num_envs=2, image=True, image_size=32)
    assert env.single_observation_space["image"].shape == (3, 32, 32)
    obs, _ = env.reset(seed=0)
    image = obs["image"]
    assert image.shape == (2, 3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.std()) > 0.01
    obs, *_, info = env.step(torch.zeros(2, 4))
    assert info["final_obs"]["image"].shape == (2, 3, 32, 32)
    assert "image" not in PandaReach(num_envs=1).reset(seed=0)[0]


def test_missing_pybullet_names_the_env_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet", None)  # makes `import pybullet` raise ImportError
    with pytest.raises(MissingDependencyError, match=r"drl/PandaReach-v0 needs .*pybullet.*pip install"):
        PandaReach(num_envs=1)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="reward_type"):
        PandaReach(num_envs=1, reward_type="shaped")
    env = PandaReach(num_envs=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="actions must have shape"):
        env.step(torch.zeros(2, 4))


def test_policy_group_is_noisy_and_critic_group_exact():
    noisy, exact = PandaPush(num_envs=4, obs_noise=0.01), PandaPush(num_envs=4, obs_noise=0.0)
    for env in (noisy, exact):
        obs, _ = env.reset(seed=5)
        policy, critic = env.observation_layout("policy"), env.observation_layout("critic")
        error = obs["policy"][:, policy["obj_pos_noisy"]] - obs["critic"][:, critic["obj_pos"]]
        goal_error = obs["policy"][:, policy["goal_noisy"]] - obs["critic"][:, critic["goal"]]
        torch.testing.assert_close(obs["critic"][:, critic["obj_pos"]], env.obj_pos)
        if env is noisy:
            assert 0 < float(error.abs().max()) < 0.05 and float(goal_error.abs().max()) > 0
        else:
            assert float(error.abs().max()) == 0 and float(goal_error.abs().max()) == 0


# --- SAME_STEP autoreset ----------------------------------------------------------------------------
def test_truncation_autoresets_in_the_same_step():
    env = PandaReach(num_envs=3, max_episode_steps=3)
    obs, _ = env.reset(seed=1)
    critic = env.observation_layout("critic")
    actions = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]])
    for step in range(1, 4):
        previous_goal = obs["critic"][:, critic["goal"]].clone()
        obs, reward, terminated, truncated, info = env.step(actions)
        if step < 3:
            assert not truncated.any() and not info["_final_obs"].any()
            for group in obs:  # the noise is held between physics steps: final_obs == obs exactly
                assert torch.equal(info["final_obs"][group], obs[group])
            assert torch.equal(obs["critic"][:, critic["goal"]], previous_goal)
    assert truncated.all() and not terminated.any() and info["_final_obs"].all()
    final, first = info["final_obs"]["critic"], obs["critic"]
    # the last obs still holds the old goal and a moved EE; the returned obs starts the next episode at home
    torch.testing.assert_close(final[:, critic["goal"]], previous_goal)
    assert not torch.allclose(first[:, critic["goal"]], previous_goal)
    torch.testing.assert_close(first[:, critic["ee_pos"]], torch.tensor(EE_HOME).expand(3, 3), atol=2e-3, rtol=0)
    assert (final[:, critic["ee_pos"]] - torch.tensor(EE_HOME)).norm(dim=-1).min() > 0.03
    assert env.episode_steps.eq(0).all()


def test_success_terminates_and_resets_only_the_finished_envs():
    env = PandaReach(num_envs=6)
    obs, _ = env.reset(seed=2)
    critic = env.observation_layout("critic")
    seen_partial = False
    for _ in range(40):
        goals_before = obs["critic"][:, critic["goal"]].clone()
        steps_before = env.episode_steps.clone()
        obs, reward, terminated, truncated, info = env.step(expert_action(env))
        done = terminated | truncated
        assert torch.equal(terminated, info["success"]) and not truncated.any()
        assert torch.equal(info["_final_obs"], done)
        final = info["final_obs"]["critic"]
        # finished rows: the final obs is at the goal; unfinished rows: nothing was reset
        assert ((final[done, critic["ee_pos"]] - final[done, critic["goal"]]).norm(dim=-1) < SUCCESS_DISTANCE).all()
        assert torch.equal(obs["critic"][~done], final[~done])
        assert torch.equal(obs["critic"][~done][:, critic["goal"]], goals_before[~done])
        assert torch.equal(env.episode_steps[~done], steps_before[~done] + 1)
        assert env.episode_steps[done].eq(0).all()
        seen_partial |= bool(done.any() and not done.all())
    assert seen_partial


# --- seeding ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PandaPush, PandaPickPlace], ids=["PandaPush", "PandaPickPlace"])
def test_same_seed_same_episode(cls):
    first, second = cls(num_envs=2), cls(num_envs=2)
    actions = random_actions(2, first.action_dim, seed=3, steps=6)
    obs_a, _ = first.reset(seed=11)
    obs_b, _ = second.reset(seed=11)
    for step_actions in actions:
        for group in obs_a:
            assert torch.equal(obs_a[group], obs_b[group])
        obs_a, reward_a, *_ = first.step(step_actions)
        obs_b, reward_b, *_ = second.step(step_actions)
        assert torch.equal(reward_a, reward_b)
    again, _ = first.reset(seed=11)
    fresh, _ = cls(num_envs=2).reset(seed=11)
    assert torch.equal(again["policy"], fresh["policy"])
    other, _ = first.reset(seed=12)
    assert not torch.equal(other["critic"], fresh["critic"])


# --- rewards ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [PandaReach, PandaPickPlace], ids=["PandaReach", "PandaPickPlace"])
def test_dense_and_sparse_rewards(cls):
    dense, sparse = cls(num_envs=4, reward_type="dense"), cls(num_envs=4, reward_type="sparse")
    dense.reset(seed=4)
    sparse.reset(seed=4)
    critic = dense.observation_layout("critic")
    successes = 0
    for _ in range(40):
        actions = expert_action(dense)
        _, r_dense, term_dense, _, info = dense.step(actions)
        _, r_sparse, term_sparse, _, info_sparse = sparse.step(actions)
        assert torch.equal(term_dense, term_sparse) and torch.equal(info["success"], info_sparse["success"])
        final = info["final_obs"]["critic"]
        ee, goal = final[:, critic["ee_pos"]], final[:, critic["goal"]]
        if cls is PandaReach:
            expected = -(ee - goal).norm(dim=-1)
            distance = -expected
        else:
            cube = final[:, critic["obj_pos"]]
            distance = (cube - goal).norm(dim=-1)
            expected = -distance - 0.5 * (ee - cube).norm(dim=-1)
        torch.testing.assert_close(r_dense, expected, atol=1e-5, rtol=0)
        assert torch.equal(info["success"], distance < SUCCESS_DISTANCE)
        assert torch.equal(r_sparse, info["success"].float())
        assert (r_dense <= 0).all()
        successes += int(info["success"].sum())
    assert successes >= 4


# --- scripted experts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", [env_id for _, env_id, *_ in TASKS], ids=TASK_IDS)
def test_expert_succeeds_on_50_seeded_episodes(env_id):
    rate = expert_success_rate(env_id, episodes=50, seed=0)
    assert rate >= 0.8, f"{env_id}: scripted expert succeeded in {rate:.0%} of 50 episodes"


@pytest.mark.slow
@pytest.mark.parametrize("env_id", [env_id for _, env_id, *_ in TASKS], ids=TASK_IDS)
def test_expert_succeeds_on_200_more_episodes(env_id):
    rate = expert_success_rate(env_id, episodes=200, seed=1234, num_envs=16)
    assert rate >= 0.9, f"{env_id}: scripted expert succeeded in {rate:.0%} of 200 episodes"


def test_expert_action_rejects_other_envs():
    with pytest.raises(TypeError, match="Panda task env"):
        expert_action(gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")]))
    assert issubclass(PandaReach, PandaTaskEnv)


# --- demonstrations -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pick_demos() -> dict:
    return collect_demos("drl/PandaPickPlace-v0", episodes=3, seed=0, num_envs=2)


def test_demos_layout(pick_demos):
    demos = pick_demos
    num_steps = demos["rewards"].shape[0]
    assert demos["obs/policy"].shape == demos["next_obs/policy"].shape == (num_steps, 27)
    assert demos["obs/critic"].shape == demos["next_obs/critic"].shape == (num_steps, 49)
    assert demos["actions"].shape == (num_steps, 4)
    assert demos["terminated"].dtype == demos["truncated"].dtype == torch.bool
    meta = demos["meta"]
    assert meta["env_id"] == "drl/PandaPickPlace-v0" and meta["episodes"] == 3 and meta["seed"] == 0
    assert meta["format_version"] == FORMAT_VERSION and meta["num_steps"] == num_steps
    index = demos["episode_index"]
    assert torch.equal(index, index.sort().values) and index.unique().tolist() == [0, 1, 2]
    ends = torch.cat([index[1:] != index[:-1], torch.tensor([True])])
    assert torch.equal(ends, demos["terminated"] | demos["truncated"])  # exactly one end per episode, last
    # within an episode, next_obs is the following obs; success rate matches the episode ends
    assert torch.equal(demos["next_obs/critic"][~ends], demos["obs/critic"][1:][~ends[:-1]])
    assert meta["success_rate"] == float(demos["success"][ends].float().mean())


def test_demos_round_trip_exactly(pick_demos, tmp_path):
    path = save_demos(pick_demos, tmp_path / "sub" / "pick.pt")
    raw = torch.load(path, weights_only=True)
    loaded = load_demos(path)
    assert set(loaded) == set(pick_demos) == set(raw)
    for key, value in pick_demos.items():
        if key == "meta":
            assert loaded[key] == value
        else:
            assert torch.equal(loaded[key], value) and loaded[key].dtype == value.dtype


def test_collect_demos_is_reproducible():
    first = collect_demos("drl/PandaReach-v0", episodes=4, seed=7, num_envs=3)
    second = collect_demos("drl/PandaReach-v0", episodes=4, seed=7, num_envs=3)
    for key in first:
        if key != "meta":
            assert torch.equal(first[key], second[key])
    assert first["meta"]["success_rate"] == 1.0


def test_collect_demos_with_a_custom_policy_and_env_kwargs():
    idle = collect_demos("drl/PandaReach-v0", episodes=3, num_envs=2, env_kwargs={"max_episode_steps": 4},
                         policy=lambda env, obs: torch.zeros(env.num_envs, 3))
    assert idle["rewards"].shape == (12,) and idle["truncated"].sum() == 3 and not idle["terminated"].any()
    assert idle["meta"]["success_rate"] == 0.0 and idle["meta"]["env_kwargs"] == {"max_episode_steps": 4}


def fake_demos(num_steps: int = 5) -> dict:
    """A small valid demo dict (two episodes) built by hand."""
    return {
        "obs/policy": torch.zeros(num_steps, 4),
        "next_obs/policy": torch.ones(num_steps, 4),
        "actions": torch.zeros(num_steps, 2),
        "rewards": torch.zeros(num_steps),
        "terminated": torch.tensor([False, True] + [False] * (num_steps - 3) + [True]),
        "truncated": torch.zeros(num_steps, dtype=torch.bool),
        "episode_index": torch.tensor([0, 0] + [1] * (num_steps - 2)),
        "meta": {"format_version": FORMAT_VERSION, "env_id": "drl/PandaReach-v0", "episodes": 2,
                 "success_rate": 1.0, "seed": 0},
    }


class NotATensor:
    """Something ``weights_only`` loading must refuse to unpickle."""


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d.pop("actions"), r"missing key 'actions'"),
        (lambda d: d.pop("next_obs/policy"), r"missing key 'next_obs/policy'"),
        (lambda d: d.update(actions=torch.zeros(4, 2)), r"'actions' has shape \(4, 2\).*expected \[M=5, A\]"),
        (lambda d: d.update(rewards=torch.zeros(5, 1)), r"'rewards' has shape \(5, 1\)"),
        (lambda d: d.update(terminated=torch.zeros(5)), r"'terminated' has shape \(5,\) and dtype torch.float32"),
        (lambda d: d.update({"next_obs/policy": torch.zeros(5, 3)}), r"'next_obs/policy' has shape \(5, 3\)"),
        (lambda d: d.update(actions=[0.0] * 5), r"'actions' must be a tensor"),
        (lambda d: d["meta"].update(format_version=99), r"format version 99 is not supported"),
        (lambda d: d["meta"].pop("env_id"), r"meta is missing 'env_id'"),
        (lambda d: d["meta"].update(episodes=3), r"meta says 3 episodes"),
        (lambda d: d.pop("meta"), r"not a drl demo file"),
    ],
    ids=["no-actions", "no-next-obs", "short-actions", "2d-rewards", "float-terminated", "next-obs-shape",
         "list-actions", "version", "meta-key", "episode-count", "no-meta"],
)
def test_invalid_demo_files_are_named(tmp_path, corrupt, message):
    demos = fake_demos()
    save_demos(demos, tmp_path / "good.pt")  # the fake demos themselves are valid
    corrupt(demos)
    path = tmp_path / "bad.pt"
    torch.save(demos, path)
    with pytest.raises(ValueError, match=message):
        load_demos(path)
    with pytest.raises(ValueError, match=message):
        save_demos(demos, tmp_path / "refused.pt")
    assert not (tmp_path / "refused.pt").exists()


def test_unreadable_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_demos(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(ValueError, match="not a readable demo file"):
        load_demos(garbage)
    good = save_demos(fake_demos(), tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable demo file"):
        load_demos(truncated)
    weights = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, weights)
    with pytest.raises(ValueError, match="not a drl demo file"):
        load_demos(weights)
    torch.save(torch.zeros(3), weights)
    with pytest.raises(ValueError, match="not a drl demo file"):
        load_demos(weights)
    pickled = tmp_path / "pickled.pt"
    torch.save({**fake_demos(), "extra": NotATensor()}, pickled)
    with pytest.raises(ValueError, match="not a readable demo file"):
        load_demos(pickled)


# --- occluded pick-and-place ------------------------------------------------------------------------
def test_occluded_pick_spaces_layout_and_registration():
    env = gym.make_vec("drl/PandaPickOccluded-v0", num_envs=2, occlusion_prob=0.25, max_episode_steps=9)
    assert isinstance(env, PandaPickOccluded) and isinstance(env, PandaPickPlace)
    assert env.occlusion_prob == 0.25 and env.max_episode_steps == 9
    assert env.single_observation_space["policy"].shape == (28,)
    assert env.single_observation_space["critic"].shape == (49,) and env.single_action_space.shape == (4,)
    layout = env.observation_layout("policy")
    assert layout["obj_pos_seen"] == slice(21, 24) and layout["goal_noisy"] == slice(24, 27)
    assert layout["occluded"] == slice(27, 28)
    assert env.observation_layout("critic") == PandaPickPlace(num_envs=1).observation_layout("critic")
    obs, _ = env.reset(seed=0)
    assert obs["policy"].shape == (2, 28) and env.observation_space.contains({k: v.numpy() for k, v in obs.items()})
    env.close()
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="occlusion_prob"):
            PandaPickOccluded(num_envs=1, occlusion_prob=bad)


def test_occluded_pick_critic_is_pick_and_place_critic():
    """Occlusions come from the noise generator: same seed, same actions -> the same critic group and rewards."""
    occluded, plain = PandaPickOccluded(num_envs=2, occlusion_prob=0.5), PandaPickPlace(num_envs=2)
    obs_o, _ = occluded.reset(seed=4)
    obs_p, _ = plain.reset(seed=4)
    for actions in random_actions(2, 4, seed=1, steps=6):
        assert torch.equal(obs_o["critic"], obs_p["critic"])
        obs_o, reward_o, term_o, trunc_o, _ = occluded.step(actions)
        obs_p, reward_p, term_p, trunc_p, _ = plain.step(actions)
        assert torch.equal(reward_o, reward_p) and torch.equal(term_o, term_p) and torch.equal(trunc_o, trunc_p)
    policy = occluded.observation_layout("policy")
    same = [name for name in policy if name not in ("obj_pos_seen", "occluded", "goal_noisy")]
    for name in same:  # the robot's own measurements are PandaPickPlace's
        assert torch.equal(obs_o["policy"][:, policy[name]], obs_p["policy"][:, policy[name]])


def test_occlusion_holds_the_last_seen_cube_position():
    """p = 0.5, zero actions (nothing moves, no episode ends): an occluded step repeats the previous reading
    exactly and raises the flag; a seen step gives a fresh noisy reading of the true position."""
    env = PandaPickOccluded(num_envs=4, occlusion_prob=0.5, obs_noise=0.005)
    obs, _ = env.reset(seed=3)
    policy, critic = env.observation_layout("policy"), env.observation_layout("critic")
    assert not obs["policy"][:, policy["occluded"]].any()  # an episode starts with the cube in sight
    flags = []
    for _ in range(30):
        previous = obs["policy"][:, policy["obj_pos_seen"]]
        obs, _, terminated, truncated, info = env.step(torch.zeros(4, 4))
        assert not (terminated | truncated).any()
        occluded = obs["policy"][:, policy["occluded"]].squeeze(-1).bool()
        assert torch.equal(occluded, env.occluded)
        seen = obs["policy"][:, policy["obj_pos_seen"]]
        assert torch.equal(seen[occluded], previous[occluded])
        error = seen[~occluded] - obs["critic"][~occluded][:, critic["obj_pos"]]
        assert (error.abs() < 5 * 0.005).all()
        assert not (seen[~occluded] == previous[~occluded]).all(-1).any()  # fresh noise at every seen step
        assert torch.equal(info["final_obs"]["policy"], obs["policy"])
        flags.append(occluded)
    rate = float(torch.stack(flags).float().mean())  # 120 draws: binomial std 0.046
    assert 0.3 <= rate <= 0.7, rate


def test_always_occluded_keeps_the_first_sighting_and_never_is_zero_when_seen():
    hidden, open_view = PandaPickOccluded(num_envs=2, occlusion_prob=1.0), PandaPickOccluded(num_envs=2,
                                                                                             occlusion_prob=0.0)
    for env in (hidden, open_view):
        obs, _ = env.reset(seed=6)
        policy, critic = env.observation_layout("policy"), env.observation_layout("critic")
        first = obs["policy"][:, policy["obj_pos_seen"]].clone()
        for _ in range(12):  # the expert lifts the cube from where it was first seen (both succeed at step 14)
            obs, _, terminated, truncated, _ = env.step(env.expert_action())
            assert not (terminated | truncated).any()
            seen = obs["policy"][:, policy["obj_pos_seen"]]
            flag = obs["policy"][:, policy["occluded"]]
            if env is hidden:
                assert torch.equal(seen, first) and flag.eq(1.0).all()
            else:
                assert flag.eq(0.0).all()
                assert float((seen - obs["critic"][:, critic["obj_pos"]]).abs().max()) < 5 * env.obs_noise
        moved = (obs["critic"][:, critic["obj_pos"]] - first).norm(dim=-1)
        assert (moved > 0.03).all()  # the held reading really is stale for the hidden env
