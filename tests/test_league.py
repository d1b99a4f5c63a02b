"""drl.league: win rates of a team against a pool of frozen opponents (scripted and snapshots) on PursuitEvasion;
episode counting, determinism under a seed, snapshots frozen and taken every K iterations, pool save/load."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

from drl.league import League, play
from envs.multi_agent import MultiAgentTorchVecEnv
from envs.tasks.pursuit_evasion import EVADERS, PURSUERS, GreedyPursuers, PursuitEvasion, RandomTeam


class LinearTeam(nn.Module):
    """A team policy module: per agent ``tanh(W obs + b)``; randomly initialised it is a "random team"."""

    def __init__(self, env: PursuitEvasion, team: str, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.agents = env.teams[team]
        self.heads = nn.ModuleDict({a: nn.Linear(env.single_observation_spaces[a].shape[0], 2) for a in self.agents})

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {a: torch.tanh(self.heads[a](obs[a])) for a in self.agents}


def make_env(**kwargs) -> PursuitEvasion:
    return PursuitEvasion(32, max_episode_steps=100, **kwargs)


def test_play_counts_every_episode_once_and_checks_its_inputs() -> None:
    env = make_env()
    result = play(env, {PURSUERS: GreedyPursuers(env), EVADERS: RandomTeam(env, EVADERS)}, episodes=40, seed=0)
    # 40 episodes over 32 copies (8 copies play 2); a time-out is the evaders' win, so no draws here; measured 40 wins
    assert result["episodes"] == 40 and result[PURSUERS] + result[EVADERS] == 40 and result[PURSUERS] >= 36
    with pytest.raises(ValueError, match="one policy per team"):
        play(env, {PURSUERS: GreedyPursuers(env)}, episodes=4, seed=0)
    with pytest.raises(ValueError, match=r"must act for exactly \['evader_0'\]"):
        play(env, {PURSUERS: GreedyPursuers(env), EVADERS: RandomTeam(env, PURSUERS)}, episodes=4, seed=0)


class _NoWinner(MultiAgentTorchVecEnv):
    """Two one-agent teams and no win flags."""

    def __init__(self):
        box = gym.spaces.Box(-1, 1, (1,), np.float32)
        super().__init__(2, {"a": box, "b": box}, {"a": box, "b": box}, box, 3, teams={"x": ["a"], "y": ["b"]})

    def _reset_envs(self, mask: torch.Tensor) -> None:
        pass

    def _observe(self) -> dict[str, torch.Tensor]:
        return {"a": torch.zeros(2, 1), "b": torch.zeros(2, 1), "state": torch.zeros(2, 1)}

    def _physics_step(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(2, 2), torch.zeros(2, dtype=torch.bool)


def test_envs_without_two_teams_or_win_flags_are_refused() -> None:
    env = _NoWinner()
    still = {"x": lambda obs: {"a": torch.zeros(2, 1)}, "y": lambda obs: {"b": torch.zeros(2, 1)}}
    with pytest.raises(ValueError, match=r"does not report info\['x_win'\]"):
        play(env, still, episodes=2, seed=0)
    with pytest.raises(ValueError, match="team 'z' is not one of"):
        League(env, "z")
    box = gym.spaces.Box(-1, 1, (1,), np.float32)
    with pytest.raises(ValueError, match="exactly two teams"):
        League(MultiAgentTorchVecEnv(1, {"a": box}, {"a": box}, box, None), "team")


def test_greedy_pursuers_beat_the_random_team_and_its_snapshot(tmp_path) -> None:
    env = make_env()
    league = League(env, PURSUERS, policy_factory=lambda: LinearTeam(env, EVADERS), snapshot_interval=10,
                    episodes=64, seed=0)
    assert league.opponent_team == EVADERS
    league.add("random", RandomTeam(env, EVADERS, seed=1))
    evaders = LinearTeam(env, EVADERS, seed=3)
    assert league.maybe_snapshot(evaders, 5) is None and league.maybe_snapshot(evaders, 10) == "iter_10"
    assert list(league.opponents) == ["random", "iter_10"]
    greedy = league.evaluate(GreedyPursuers(env), iteration=1)
    random = league.evaluate(RandomTeam(env, PURSUERS, seed=2), iteration=2)
    assert all(0.0 <= r <= 1.0 for r in (*greedy.values(), *random.values()))
    # measured: greedy 0.984 (random) and 0.969 (the snapshot); random pursuers 0.031 and 0.156; 64 episodes each
    assert min(greedy.values()) >= 0.9 and max(random.values()) <= 0.3, (greedy, random)
    metrics = league.metrics()
    assert metrics["win_rate/pursuers/iter_10"] == random["iter_10"]
    assert metrics["win_rate/pursuers/mean"] == pytest.approx(sum(random.values()) / 2)
    assert metrics["win_rate/pursuers/min"] == min(random.values())
    league.write_csv(tmp_path / "league.csv")
    rows = [f"{it},{name},{rate:.6g},64" for it, rates in ((1, greedy), (2, random)) for name, rate in rates.items()]
    assert (tmp_path / "league.csv").read_text().splitlines() == ["iteration,opponent,win_rate,episodes", *rows]
    table = league.table().splitlines()
    assert table[1].split() == ["iteration", "random", "iter_10"]
    assert table[2].split() == ["1", f"{greedy['random']:.3f}", f"{greedy['iter_10']:.3f}"]


def test_snapshots_are_frozen_copies_and_the_pool_is_capped() -> None:
    env = make_env(num_obstacles=0)
    league = League(env, EVADERS, snapshot_interval=2, max_snapshots=2)  # no factory: deep copies
    pursuers = LinearTeam(env, PURSUERS)
    obs, _ = env.reset(seed=0)
    before = pursuers(obs)
    league.snapshot(pursuers, 0)
    with torch.no_grad():
        for p in pursuers.parameters():
            p.add_(1.0)
    frozen = league.opponents["iter_0"]
    assert all(torch.equal(before[a], frozen(obs)[a]) for a in before)
    assert not any(p.requires_grad for p in frozen.parameters()) and not frozen.training
    for it in (2, 4):
        league.maybe_snapshot(pursuers, it)
    assert league.snapshot_names == ["iter_2", "iter_4"] and list(league.opponents) == ["iter_2", "iter_4"]
    with pytest.raises(ValueError, match="already has an opponent named 'iter_4'"):
        league.snapshot(pursuers, 4)


def test_evaluation_is_deterministic_under_a_seed() -> None:
    # a large capture radius puts random-vs-random win rates mid-range, where a changed outcome shows
    env = make_env(capture_radius=0.55, min_start_distance=0.6)
    league = League(env, PURSUERS, episodes=48, seed=7)
    league.add("random", RandomTeam(env, EVADERS, seed=0))
    pursuers = RandomTeam(env, PURSUERS, seed=0)
    first = league.evaluate(pursuers)["random"]
    assert 0.2 < first < 0.8, first
    assert league.evaluate(pursuers)["random"] == first  # policies are reseeded by play
    with pytest.raises(ValueError, match=r"no opponents \['iter_3'\] in the pool \['random'\]"):
        league.evaluate(pursuers, opponents=["iter_3"])
    other = League(env, PURSUERS, episodes=48, seed=8)
    other.add("random", RandomTeam(env, EVADERS, seed=0))
    assert other.evaluate(pursuers)["random"] != first  # measured: 0.292 (seed 7) vs 0.417 (seed 8)


def test_pool_save_and_load(tmp_path) -> None:
    env = make_env()
    factory = lambda: LinearTeam(env, EVADERS)  # noqa: E731
    league = League(env, PURSUERS, policy_factory=factory, snapshot_interval=1, episodes=16)
    league.add("random", RandomTeam(env, EVADERS, seed=1))
    for it in (1, 2):
        league.snapshot(LinearTeam(env, EVADERS, seed=10 + it), it)
    rates = league.evaluate(GreedyPursuers(env), iteration=3)
    torch.save(league.state_dict(), tmp_path / "league.pt")
    saved = torch.load(tmp_path / "league.pt", weights_only=True)

    restored = League(env, PURSUERS, policy_factory=factory, snapshot_interval=1, episodes=16)
    with pytest.raises(ValueError, match=r"fixed opponents \['random'\]; add them"):
        restored.load_state_dict(saved)
    restored.add("random", RandomTeam(env, EVADERS, seed=1))
    restored.load_state_dict(saved)
    assert list(restored.opponents) == ["random", "iter_1", "iter_2"] and restored.history == league.history
    for name in ("iter_1", "iter_2"):
        want, got = league.opponents[name].state_dict(), restored.opponents[name].state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want)
        assert not restored.opponents[name].training
    assert restored.evaluate(GreedyPursuers(env), iteration=3) == rates
    assert restored.table().splitlines()[:3] == league.table().splitlines() and len(restored.history) == 2

    no_factory = League(env, PURSUERS)
    no_factory.add("random", RandomTeam(env, EVADERS))
    with pytest.raises(ValueError, match="needs a policy_factory"):
        no_factory.load_state_dict(saved)
    with pytest.raises(ValueError, match="of team 'pursuers' vs 'evaders', this one of 'evaders'"):
        League(env, EVADERS).load_state_dict(saved)
