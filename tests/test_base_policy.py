"""Frozen base policies (drl/base_policy.py): SB3 round trip, drl run folders (chunked BC state), clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drl import api
from drl.base_policy import BasePolicyError, load_base_policy
from envs import make_vec_env
from envs.tasks.demos import collect_demos, save_demos

SEARCH = "drl/ActiveSearch-v0"


@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny SB3 TD3 on gymnasium's Pendulum-v1, trained a few steps and saved."""
    stable_baselines3 = pytest.importorskip("stable_baselines3")
    model = stable_baselines3.TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, seed=0,
                                  policy_kwargs={"net_arch": [16, 16]})
    model.learn(30)
    path = tmp_path_factory.mktemp("sb3") / "td3.zip"
    model.save(path)
    return path, model


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BC run with action chunks (k = 3, temporal ensembling) on the search task, a few updates."""
    root = tmp_path_factory.mktemp("bc")
    demos = save_demos(collect_demos(SEARCH, episodes=4, seed=0, num_envs=2), root / "d.pt")
    cfg = api.load_config("bc", SEARCH, overrides={
        "total_steps": 10, "eval_episodes": 2, "progress": False, "log_interval": -1,
        "env": {"num_envs": 1, "num_eval_envs": 2},
        "algo": {"demos": str(demos), "offline_updates": 50, "offline_log_interval": 50, "num_steps": 10,
                 "chunk_size": 3, "ensemble_decay": 0.5}})
    run_dir, _ = api.train(cfg, root / "run")
    return run_dir


def test_sb3_round_trip(sb3_zip: tuple[Path, object]) -> None:
    """The base acts exactly as SB3's own predict(deterministic=True), batched over torch envs, torch out."""
    path, model = sb3_zip
    env = make_vec_env("drl/Pendulum-v0", 5, "cpu")
    obs, _ = env.reset(seed=3)
    base = load_base_policy(path, env.single_observation_space, env.single_action_space, 5)
    action = base(obs)
    expected, _ = model.predict(obs.numpy(), deterministic=True)
    assert isinstance(action, torch.Tensor) and action.shape == (5, 1) and action.dtype == torch.float32
    np.testing.assert_allclose(action.numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(base.stateless(obs), action)
    assert not any(p.requires_grad for p in base.model.policy.parameters())
    env.close()


def test_chunked_bc_base_keeps_its_own_per_env_state(bc_run: Path) -> None:
    env = make_vec_env(SEARCH, 2, "cpu")
    obs, _ = env.reset(seed=0)
    base = load_base_policy(bc_run, env.single_observation_space, env.single_action_space, 2)
    agent, _ = api.load_agent(bc_run)
    chunks = agent.chunks(obs)
    first = base(obs)
    assert torch.allclose(first, agent.env_action(chunks[:, 0]))  # a fresh episode: the new chunk's first action
    obs2, *_ = env.step(first)
    second = base(obs2)
    w0, w1 = 1.0, np.exp(0.5)  # the new chunk's first action and the old chunk's second, by age
    expected = (w0 * agent.chunks(obs2)[:, 0] + w1 * chunks[:, 1]) / (w0 + w1)
    assert torch.allclose(second, agent.env_action(expected), atol=1e-6)
    base.end_episodes(torch.tensor([True, False]))  # env 0 starts over, env 1 keeps its chunks
    third = base(obs2)
    assert torch.allclose(third[0], base.stateless(obs2)[0]) and not torch.allclose(third[1], base.stateless(obs2)[1])
    with base.fresh_memory(3) as end_episodes:  # an evaluation's envs: state of their own
        obs3 = {k: torch.cat([v, v[:1]]) for k, v in obs.items()}
        assert torch.allclose(base(obs3), base.stateless(obs3))
        end_episodes(torch.tensor([True, True, True]))
    assert base.executor.valid.shape == (2, 3) and bool(base.executor.valid[1, :3].all())  # training state back
    assert not any(p.requires_grad for p in base.agent.net.parameters())
    env.close()


def test_chunked_base_along_demo_episodes_is_the_base_driving_them(bc_run: Path) -> None:
    """along_episodes gives, at each demo step, the action the base executes when it is stepped through that
    episode from its start, and at each next obs the action it would execute there (peek). An episode is a run
    of neighbouring rows: a demo file concatenated with itself repeats its indices in new episodes. The base's
    own (training) state is left as it was."""
    env = make_vec_env(SEARCH, 2, "cpu")
    base = load_base_policy(bc_run, env.single_observation_space, env.single_action_space, 2)
    first_obs, _ = env.reset(seed=2)
    base(first_obs)
    base(first_obs)  # the base's own state: two chunks in, not a fresh one
    saved = [x.clone() for x in (base.executor.history, base.executor.valid)]
    demos = collect_demos(SEARCH, episodes=3, seed=1, num_envs=2)
    index = torch.cat([demos["episode_index"], demos["episode_index"]])  # 0, 0, .., 2, 0, 0, .., 2
    obs = {k.split("/", 1)[1]: torch.cat([v, v]) for k, v in demos.items() if k.startswith("obs/")}
    next_obs = {k.split("/", 1)[1]: torch.cat([v, v]) for k, v in demos.items() if k.startswith("next_obs/")}
    actions, next_actions = base.along_episodes(obs, next_obs, index)
    assert all(torch.equal(a, b) for a, b in zip(saved, (base.executor.history, base.executor.valid), strict=True))
    assert actions.shape == next_actions.shape == (index.shape[0], demos["actions"].shape[1])
    starts = [0] + [i for i in range(1, index.shape[0]) if index[i] != index[i - 1]] + [index.shape[0]]
    assert len(starts) - 1 == 6
    for begin, end in zip(starts, starts[1:], strict=False):
        with base.fresh_memory(1):
            for row in range(begin, end):
                one = {k: v[row:row + 1] for k, v in obs.items()}
                then = {k: v[row:row + 1] for k, v in next_obs.items()}
                assert torch.allclose(base(one)[0], actions[row], atol=1e-6)
                assert torch.allclose(base.peek(then)[0], next_actions[row], atol=1e-6)
    assert not torch.allclose(actions, base.stateless(obs), atol=1e-4)  # the ensemble is not the fresh chunk
    empty = {k: v[:0] for k, v in obs.items()}
    assert [a.shape for a in base.along_episodes(empty, empty, index[:0])] == [(0, actions.shape[1])] * 2
    env.close()


def test_bad_bases_give_one_clear_error(tmp_path: Path, sb3_zip: tuple[Path, object], bc_run: Path) -> None:
    pendulum = make_vec_env("drl/Pendulum-v0", 1, "cpu")
    search = make_vec_env(SEARCH, 1, "cpu")
    p_spaces = (pendulum.single_observation_space, pendulum.single_action_space)
    s_spaces = (search.single_observation_space, search.single_action_space)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    (tmp_path / "folder").mkdir()
    (tmp_path / "policy.pt").write_bytes(b"")
    cases = [
        (tmp_path / "missing", p_spaces, "does not exist"),
        (junk, p_spaces, "is not a readable Stable-Baselines3 model"),
        (tmp_path / "folder", p_spaces, "is not a drl run folder"),
        (tmp_path / "policy.pt", p_spaces, "neither a drl run folder nor a Stable-Baselines3 .zip"),
        (sb3_zip[0], (search.single_observation_space["policy"], s_spaces[1]),
         r"observation space Box\(shape \(3,\), low \[-1, -1, -8\], high \[1, 1, 8\]\) does not match the env's "
         r"Box\(shape \(7,\)"),
        (bc_run, p_spaces, r"observation space Dict\(critic: .*\) does not match the env's Box\(shape \(3,\)"),
    ]
    for path, (obs_space, action_space), message in cases:
        with pytest.raises(BasePolicyError, match=message) as caught:
            load_base_policy(path, obs_space, action_space, 1)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)
    # same observations, other action bounds: the action space is named
    import gymnasium as gym

    with pytest.raises(BasePolicyError, match=r"action space Box\(shape \(1,\), low -2, high 2\) does not match "
                                              r"the env's Box\(shape \(1,\), low -1, high 1\)"):
        load_base_policy(sb3_zip[0], p_spaces[0], gym.spaces.Box(-1.0, 1.0, (1,), np.float32), 1)
    pendulum.close()
    search.close()
