"""The PettingZoo parallel-API adapter (envs/pettingzoo.py) on toy parallel envs, MaMuJoCo and a bundled suite."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("pettingzoo")
from pettingzoo.utils.env import ParallelEnv  # noqa: E402

import envs  # noqa: E402
from envs.core import EnvStepError, MissingDependencyError  # noqa: E402
from envs.multi_agent import is_multi_agent  # noqa: E402
from envs.pettingzoo import AgentsLeftError, PettingZooVecEnv  # noqa: E402


class _Toy(ParallelEnv):
    """Two heterogeneous agents push a counter: "walker" (obs 2, Box(3) action), "scout" (obs (2, 2), Discrete(3)).

    The counter starts at a random integer in [0, 2) drawn from the env's rng (seeded by reset) and
    grows by the scout's action; the episode terminates for both agents at 3 or more, and is
    truncated after ``horizon`` steps. ``leave_at``: step at which only the scout terminates (an
    agent leaving). ``fail_at``: the scout action at which step() raises. ``with_state``: whether state() exists.
    """

    metadata = {"name": "toy_v0"}

    def __init__(self, horizon: int = 5, leave_at: int | None = None, fail_at: int | None = None,
                 with_state: bool = True, mixed_flags: bool = False):
        self.possible_agents = ["walker", "scout"]
        self.agents = list(self.possible_agents)
        self.horizon, self.leave_at, self.fail_at = horizon, leave_at, fail_at
        self.with_state, self.mixed_flags = with_state, mixed_flags
        self.rng = np.random.default_rng()
        self.count = self.start = self.t = 0

    def observation_space(self, agent: str) -> gym.Space:
        return gym.spaces.Box(-np.inf, np.inf, (2,) if agent == "walker" else (2, 2), np.float32)

    def action_space(self, agent: str) -> gym.Space:
        return gym.spaces.Box(-1, 1, (3,), np.float32) if agent == "walker" else gym.spaces.Discrete(3)

    def state(self) -> np.ndarray:
        if not self.with_state:
            raise NotImplementedError
        return np.array([self.count, self.start, 10.0 * self.count], np.float32)

    def _obs(self) -> dict[str, np.ndarray]:
        return {"walker": np.array([self.count, self.start], np.float32),
                "scout": np.full((2, 2), self.count, np.float32)}

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self.start = self.count = int(self.rng.integers(0, 2))
        self.t = 0
        return self._obs(), {a: {} for a in self.agents}

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        self.t += 1
        if self.fail_at == int(actions["scout"]):
            raise RuntimeError("the simulator exploded")
        assert actions["walker"].shape == (3,) and actions["walker"].dtype == np.float32
        self.count += int(actions["scout"])
        term = self.count >= 3
        trunc = self.t >= self.horizon
        terms = dict.fromkeys(self.agents, term)
        truncs = dict.fromkeys(self.agents, trunc)
        if self.leave_at == self.t:
            terms["scout"] = True
        if self.mixed_flags and self.t == self.horizon:  # the walker terminates while the scout's time runs out
            terms, truncs = {"walker": True, "scout": False}, {"walker": False, "scout": True}
        rewards = {"walker": float(self.count), "scout": -float(self.count)}
        infos = {a: {"count": self.count} for a in self.agents}
        obs = self._obs()
        self.agents = [a for a in self.agents if not (terms[a] or truncs[a])]
        return obs, rewards, terms, truncs, infos


def _acts(scout: list[int], n: int | None = None) -> dict[str, torch.Tensor]:
    n = len(scout) if n is None else n
    return {"walker": torch.zeros(n, 3), "scout": torch.tensor(scout)}


def test_shapes_and_heterogeneous_spaces() -> None:
    env = PettingZooVecEnv(_Toy, 3)
    assert is_multi_agent(env) and env.agents == ("walker", "scout") and env.num_agents == 2
    assert env.teams == {"team": ("walker", "scout")} and env.team_columns("team") == [0, 1]
    assert env.single_observation_spaces["scout"].shape == (2, 2) and env.single_state_space.shape == (3,)
    assert isinstance(env.single_action_spaces["scout"], gym.spaces.Discrete)
    assert set(env.single_observation_space.spaces) == {"walker", "scout", "state"}
    obs, _ = env.reset(seed=0)
    assert {k: tuple(v.shape) for k, v in obs.items()} == {"walker": (3, 2), "scout": (3, 2, 2), "state": (3, 3)}
    assert all(v.dtype == torch.float32 for v in obs.values())
    obs, reward, terminated, truncated, info = env.step(_acts([0, 1, 0]))
    assert reward.shape == (3, 2) and reward.dtype == torch.float32 and terminated.shape == truncated.shape == (3,)
    assert torch.equal(reward[:, 1], -reward[:, 0]) and torch.equal(obs["state"][:, 0], obs["walker"][:, 0])
    assert info["agents"]["scout"]["count"].tolist() == obs["walker"][:, 0].int().tolist()
    env.step({"walker": torch.zeros(3, 3), "scout": torch.ones(3, 1, dtype=torch.long)})  # [N, 1] Discrete too


VECTORIZATION = ["sync", pytest.param("async", id="async (one subprocess per copy)")]


@pytest.mark.parametrize("vectorization", VECTORIZATION)
def test_same_step_autoreset_and_final_obs(vectorization: str) -> None:
    env = PettingZooVecEnv(_Toy, 2, vectorization=vectorization)
    obs, _ = env.reset(seed=0)
    count = obs["walker"][:, 0].clone()  # starts in {0, 1}
    push = [int(3 - count[0]), 0]  # copy 0 reaches 3 now; copy 1 stays
    obs, reward, terminated, truncated, info = env.step(_acts(push))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert info["_final_obs"].tolist() == [True, False]
    final = info["final_obs"]
    assert set(final) == {"walker", "scout", "state"}
    assert final["walker"][0, 0] == 3 and final["state"][0].tolist() == [3.0, count[0].item(), 30.0]
    assert obs["walker"][0, 0] < 2 and obs["walker"][0, 0] == obs["walker"][0, 1]  # already the next episode
    assert all(torch.equal(final[k][1], obs[k][1]) for k in final)  # unfinished rows: the obs itself
    assert reward[0].tolist() == [3.0, -3.0] and info["final_info"]["agents"]["walker"]["count"][0] == 3
    for _ in range(4):  # copy 1 reaches the horizon (5 steps): truncated, not terminated
        obs, reward, terminated, truncated, info = env.step(_acts([0, 0]))
    assert truncated.tolist() == [False, True] and not terminated.any()
    assert info["final_obs"]["walker"][1, 0] == count[1]
    env.close()


def test_per_agent_flags_combine_terminated_all_truncated_any() -> None:
    env = PettingZooVecEnv(lambda: _Toy(horizon=2, mixed_flags=True), 1)
    env.reset(seed=0)
    env.step(_acts([0]))
    _, _, terminated, truncated, _ = env.step(_acts([0]))
    assert terminated.tolist() == [False] and truncated.tolist() == [True]


@pytest.mark.parametrize("vectorization", VECTORIZATION)
def test_seeding_is_deterministic_per_copy_and_across_autoresets(vectorization: str) -> None:
    def run(seed: int) -> list[torch.Tensor]:
        env = PettingZooVecEnv(_Toy, 4, vectorization=vectorization)
        obs, _ = env.reset(seed=seed)
        out = [obs["walker"].clone()]
        for t in range(12):
            obs, *_ = env.step(_acts([t % 3, 1, 2, 0]))
            out.append(obs["walker"].clone())
        env.close()
        return out

    first, again, other = run(5), run(5), run(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))
    starts = [int(np.random.default_rng(5 + i).integers(0, 2)) for i in range(4)]  # copy i gets seed + i
    assert first[0][:, 1].tolist() == starts


def test_bad_actions_are_one_line_value_errors() -> None:
    env = PettingZooVecEnv(_Toy, 2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"one action tensor per agent \['walker', 'scout'\], got \['walker'\]"):
        env.step({"walker": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"agent 'walker' must have shape \(2, 3\)"):
        env.step({"walker": torch.zeros(2, 4), "scout": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"agent 'scout' must have shape \(2,\)"):
        env.step({"walker": torch.zeros(2, 3), "scout": torch.zeros(3)})


@pytest.mark.parametrize("vectorization", VECTORIZATION)
def test_agents_leaving_mid_episode_are_refused(vectorization: str) -> None:
    env = PettingZooVecEnv(lambda: _Toy(leave_at=2), 2, vectorization=vectorization)
    env.reset(seed=0)
    env.step(_acts([0, 0]))
    with pytest.raises(AgentsLeftError, match=r"copy \d agents \['scout'\] finished while the others go on"):
        env.step(_acts([0, 0]))
    env.close()


@pytest.mark.parametrize("vectorization", VECTORIZATION)
def test_env_errors_name_the_copy(vectorization: str) -> None:
    env = PettingZooVecEnv(lambda: _Toy(fail_at=2), 3, env_id="toy", vectorization=vectorization)
    env.reset(seed=0)
    with pytest.raises(EnvStepError, match=r"env 1 of 'toy' raised in step\(\): RuntimeError: the simulator exploded"):
        env.step(_acts([0, 2, 1]))
    env.close()


def test_state_falls_back_to_the_observations() -> None:
    env = PettingZooVecEnv(lambda: _Toy(with_state=False), 2)
    assert env.single_state_space.shape == (6,)
    obs, _ = env.reset(seed=0)
    assert torch.equal(obs["state"], torch.cat([obs["walker"], obs["scout"].flatten(1)], dim=1))


def test_mamujoco_and_pettingzoo_ids() -> None:
    pytest.importorskip("gymnasium_robotics")
    env = envs.make_vec_env("mamujoco:HalfCheetah-2x3", 2, env_kwargs={"agent_obsk": 0})
    assert env.agents == ("agent_0", "agent_1") and env.max_episode_steps == 1000
    assert env.single_observation_spaces["agent_0"].shape == (6 + 5,)  # own qpos, qvel + the root's (2 + 3)
    assert env.single_state_space.shape == (17,)
    obs, _ = env.reset(seed=0)
    _, reward, *_ = env.step({a: torch.zeros(2, 3) for a in env.agents})
    assert torch.equal(reward[:, 0], reward[:, 1])  # MaMuJoCo: every agent gets the single-agent reward
    assert obs["state"].shape == (2, 17)
    env.close()
    with pytest.raises(gym.error.NameNotFound, match="no robot 'Cheetah'"):
        envs.make_vec_env("mamujoco:Cheetah-2x3", 1)
    with pytest.raises(gym.error.NameNotFound, match=r"mamujoco:<Robot>-<partition>"):
        envs.make_vec_env("mamujoco:HalfCheetah", 1)
    with pytest.raises(gym.error.NameNotFound, match="cannot be imported"):
        envs.make_vec_env("pettingzoo:pettingzoo.nothing_v0", 1)
    with pytest.raises(ValueError, match="vectorization must be 'sync' or 'async'"):
        envs.make_vec_env("pettingzoo:pettingzoo.sisl.pursuit_v5", 1, vectorization="threads")
    try:
        import pettingzoo.mpe  # noqa: F401
    except ImportError:  # pettingzoo >= 1.25 moved MPE into its own package: said as a missing dependency
        with pytest.raises(MissingDependencyError, match="mpe2"):
            envs.make_vec_env("pettingzoo:pettingzoo.mpe.simple_spread_v3", 1)


def test_a_bundled_pettingzoo_suite_runs() -> None:
    pytest.importorskip("pettingzoo.sisl.pursuit_v5")
    env = envs.make_vec_env("pettingzoo:pettingzoo.sisl.pursuit_v5", 2, env_kwargs={"max_cycles": 3})
    assert env.num_agents == 8 and env.single_observation_spaces["pursuer_0"].shape == (7, 7, 3)
    assert env.max_episode_steps == 3
    env.reset(seed=0)
    for _ in range(3):
        _, reward, terminated, truncated, info = env.step({a: torch.zeros(2, dtype=torch.long) for a in env.agents})
    assert reward.shape == (2, 8) and truncated.all() and info["_final_obs"].all()
