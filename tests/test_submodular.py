"""Submodular rewards (drl.wrappers.submodular) and the history observation (drl.wrappers.coverage_obs):
marginal gains against hand values, monotonicity and diminishing returns, per-env resets, episode sums
equal to F of the visited set, user objectives, episode state, greedy reference."""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from drl.config import ConfigError
from drl.wrappers import wrap_env
from drl.wrappers.coverage_obs import CoverageObs
from drl.wrappers.submodular import CellGrid, LogDet, SubmodularReward, WeightedCoverage, greedy_rollout, weight_map
from envs import make_vec_env

CPU = torch.device("cpu")


def _grid(size: int = 5) -> CellGrid:
    return CellGrid([0.0, 0.0], [float(size)] * 2, [size, size])


def _at(*cells: tuple[int, int]) -> torch.Tensor:
    """Cell centres ``[len(cells), 2]`` of a unit grid."""
    return torch.tensor(cells, dtype=torch.float32) + 0.5


# --- objectives against hand values --------------------------------------------------------------
def test_cell_grid_indexing():
    grid = CellGrid([-1.0, 0.0], [1.0, 3.0], [4, 3])
    x = torch.tensor([[-1.0, 0.0], [0.99, 2.99], [0.0, 1.5], [5.0, -2.0]])
    assert grid.cell_of(x).tolist() == [0, 11, 2 * 3 + 1, 3 * 3 + 0]  # row-major, clamped into the grid
    assert torch.equal(grid.cell_of(grid.centers()), torch.arange(12))


def test_coverage_gains_by_hand():
    grid = _grid(5)
    w = torch.arange(25, dtype=torch.float32)  # weight of cell (r, c) = 5 r + c
    cov = WeightedCoverage(1, grid, CPU, 10, weights=w, radius=1)  # plus-shaped footprint of 5 cells
    centre, right, corner = _at((2, 2)), _at((2, 3)), _at((0, 0))
    assert cov.gain(centre).item() == 12 + 7 + 17 + 11 + 13
    assert cov.singleton(corner).item() == 0 + 5 + 1  # the footprint is cut by the walls
    assert cov.add(centre).item() == 60 and cov.value.item() == 60
    # (2,3) covers (2,3) (1,3) (3,3) (2,2) (2,4); (2,2) and (2,3) are covered already
    assert cov.gain(right).item() == 8 + 18 + 14
    assert cov.singleton(right).item() == 13 + 8 + 18 + 12 + 14  # the modular reward counts repeats
    assert cov.add(centre).item() == 0  # a repeat adds nothing
    r0 = WeightedCoverage(1, grid, CPU, 10, weights=w, radius=0)
    assert r0.gain(right).item() == 13


def test_logdet_gains_by_hand():
    grid = _grid(10)
    ls, noise = 1.5, 0.1
    obj = LogDet(1, grid, CPU, 4, lengthscale=ls, noise=noise)
    x1, x2, x3 = torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 1.5]]), torch.tensor([[1.2, 3.0]])
    g1 = 0.5 * math.log(1 + 1 / noise)
    assert obj.add(x1).item() == pytest.approx(g1, rel=1e-5)
    k12 = math.exp(-(1.0**2 + 0.5**2) / (2 * ls**2))
    two = 0.5 * math.log((1 + 1 / noise) ** 2 - (k12 / noise) ** 2)  # 1/2 logdet(I + K / noise), 2x2 by hand
    assert obj.gain(x2).item() == pytest.approx(two - g1, rel=1e-5)
    assert obj.add(x2).item() == pytest.approx(two - g1, rel=1e-5)
    obj.add(x3)
    pts = torch.cat([x1, x2, x3]).double()
    kernel = torch.exp(-torch.cdist(pts, pts) ** 2 / (2 * ls**2))
    expected = 0.5 * torch.logdet(torch.eye(3, dtype=torch.float64) + kernel / noise)
    assert obj.value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert obj.singleton(x3).item() == pytest.approx(g1)


@pytest.mark.parametrize("make", [
    lambda n: WeightedCoverage(n, _grid(8), CPU, 40, weights="gp", radius=1.5),
    lambda n: WeightedCoverage(n, _grid(8), CPU, 40, weights="bimodal", radius=0),
    lambda n: LogDet(n, _grid(8), CPU, 40, lengthscale=1.0, noise=0.05),
], ids=["coverage-gp", "coverage-bimodal", "logdet"])
def test_monotone_and_diminishing_returns_on_random_sets(make):
    """gain(s | B) <= gain(s | A) for A a subset of B, and every gain >= 0 (64 random A, B, s)."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    small, large = make(n), make(n)
    seq = torch.rand(n, 20, 2, generator=gen) * 8
    cut = torch.randint(0, 10, (n,), generator=gen)  # A = the first cut states, B = all 20
    for t in range(20):
        small.add(seq[:, t], mask=t < cut)
        large.add(seq[:, t])
    s = torch.rand(n, 2, generator=gen) * 8
    g_small, g_large = small.gain(s), large.gain(s)
    assert bool((g_large >= -1e-5).all()) and bool((g_large <= g_small + 1e-5).all())
    assert bool((g_large < g_small - 1e-3).any())  # the test sees strict decreases, not only ties
    assert bool((large.value >= small.value - 1e-5).all())


def test_weight_maps_are_fixed_by_seed():
    grid = _grid(30)
    a, b, c = weight_map("gp", grid, 0), weight_map("gp", grid, 0), weight_map("gp", grid, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min().item() == 0.0 and a.max().item() == 1.0
    bimodal = weight_map("bimodal", grid)
    assert bimodal.argmax().item() == grid.cell_of(torch.tensor([7.5, 7.5])).item()  # the higher bump at 1/4
    with pytest.raises(ValueError, match="weights must be one of constant, bimodal, gp"):
        weight_map("uniform", grid)


@pytest.mark.parametrize("objective", ["coverage", "logdet"])
def test_reset_by_mask_is_per_env(objective):
    make = {"coverage": lambda: WeightedCoverage(3, _grid(), CPU, 5, radius=1),
            "logdet": lambda: LogDet(3, _grid(), CPU, 5, lengthscale=1.0)}[objective]
    obj, fresh = make(), make()
    x = _at((1, 1), (2, 2), (3, 3))
    obj.add(x)
    before = obj.gain(x)
    obj.reset(torch.tensor([True, False, True]))
    torch.testing.assert_close(obj.value, torch.tensor([0.0, fresh.gain(x)[1].item(), 0.0]))
    torch.testing.assert_close(obj.gain(x)[[0, 2]], fresh.gain(x)[[0, 2]])  # as if A were empty
    torch.testing.assert_close(obj.gain(x)[1], before[1])  # untouched


# --- the wrapper ------------------------------------------------------------------------------
def _wrapped(specs, num_envs=4, **env_kwargs):
    return wrap_env(make_vec_env("drl/CoverageGrid-v0", num_envs, CPU, env_kwargs=env_kwargs), specs)


def _episodes(env, steps, seed=0):
    """Random-action rollout: per env, the list of finished episodes as (rewards, states incl. s_0)."""
    gen = torch.Generator().manual_seed(seed)
    obs, _ = env.reset(seed=seed)
    inner = env if isinstance(env, SubmodularReward) else env.env
    n = env.num_envs
    rewards, states = [[] for _ in range(n)], [[inner.states(obs)[i]] for i in range(n)]
    done_eps = [[] for _ in range(n)]
    for _ in range(steps):
        obs, reward, term, trunc, info = env.step(torch.randint(0, 5, (n,), generator=gen))
        final = inner.states(info["final_obs"])
        for i in range(n):
            rewards[i].append(float(reward[i]))
            states[i].append(final[i])
            if term[i] or trunc[i]:
                done_eps[i].append((rewards[i], states[i], float(info["submodular_value"][i])))
                rewards[i], states[i] = [], [inner.states(obs)[i]]
    return done_eps


@pytest.mark.parametrize("spec", [
    {"name": "submodular", "objective": "coverage", "weights": "gp", "radius": 1},
    {"name": "submodular", "objective": "logdet", "lengthscale": 2.0},
], ids=["coverage", "logdet"])
def test_episode_rewards_sum_to_f_of_the_visited_set(spec):
    env = _wrapped([spec], num_envs=3, size=8, horizon=6, start="random")
    episodes = _episodes(env, 14)
    assert all(len(e) == 2 for e in episodes)  # two whole episodes each (the third is unfinished)
    for env_episodes in episodes:
        for rewards, states, value in env_episodes:
            assert len(rewards) == 6 and len(states) == 7
            scratch = type(env.objective)(1, env.grid, CPU, 8, **({"weights": "gp", "radius": 1}
                                                                   if spec["objective"] == "coverage" else
                                                                   {"lengthscale": 2.0}))
            for s in states:
                scratch.add(s[None])
            assert sum(rewards) == pytest.approx(scratch.value.item(), rel=1e-5)
            assert value == pytest.approx(scratch.value.item(), rel=1e-5)
    values = [v for env_episodes in episodes for *_, v in env_episodes]
    assert env.metrics()["submodular/episode_value"] == pytest.approx(sum(values) / len(values), rel=1e-5)
    assert "submodular/episode_value" not in env.metrics()  # cleared; no episode ended since


def test_modular_switch_counts_repeats_and_keeps_env_reward():
    sub = _wrapped([{"name": "submodular", "radius": 0}], num_envs=2, size=6, horizon=5)
    mod = _wrapped([{"name": "submodular", "radius": 0, "modular": True}], num_envs=2, size=6, horizon=5)
    for env in (sub, mod):
        env.reset(seed=0)
    stay = torch.zeros(2, dtype=torch.int64)  # staying put: the same cell 6 times
    sub_r, mod_r = [], []
    for _ in range(5):
        _, r1, *_, info = sub.step(stay)
        _, r2, *_, mod_info = mod.step(stay)
        sub_r.append(r1)
        mod_r.append(r2)
        # the score is F's true gain (the env's own reward is 0) whichever reward the agent learns from
        assert torch.equal(info["env_reward"], r1) and torch.equal(mod_info["env_reward"], r1)
    torch.testing.assert_close(torch.stack(sub_r), torch.tensor([[1.0, 1.0]] + [[0.0, 0.0]] * 4))
    torch.testing.assert_close(torch.stack(mod_r), torch.tensor([[2.0, 2.0]] + [[1.0, 1.0]] * 4))
    bonus = _wrapped([{"name": "submodular", "radius": 0, "score": "env"}], num_envs=2, size=6, horizon=5)
    bonus.reset(seed=0)
    _, r3, *_, info = bonus.step(stay)
    assert torch.equal(r3, torch.ones(2)) and torch.equal(info["env_reward"], torch.zeros(2))  # the env's own


def test_episode_state_round_trip_is_bitwise():
    env = _wrapped([{"name": "submodular", "objective": "logdet"}, {"name": "coverage_obs"}], num_envs=3,
                   horizon=7, start="random")
    env.reset(seed=3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        env.step(torch.randint(0, 5, (3,), generator=gen))
    state = env.state_dict()
    actions = torch.randint(0, 5, (6, 3), generator=gen)
    first = [env.step(a)[:2] for a in actions]
    env.load_state_dict(state)
    again = [env.step(a)[:2] for a in actions]
    for (o1, r1), (o2, r2) in zip(first, again, strict=True):
        assert torch.equal(o1, o2) and torch.equal(r1, r2)


def test_user_objective_by_module_path(tmp_path, monkeypatch):
    (tmp_path / "my_objective.py").write_text(textwrap.dedent("""
        import torch
        from drl.wrappers.submodular import SubmodularObjective

        class Distinct(SubmodularObjective):
            '''Number of distinct cells visited (times `unit`).'''
            def __init__(self, num_envs, grid, device, capacity, unit=1.0):
                super().__init__(num_envs, grid, device, capacity)
                self.unit = unit
                self.seen = torch.zeros(num_envs, grid.num_cells, dtype=torch.bool)
            def gain(self, x):
                return self.unit * (~self.seen.gather(1, self.grid.cell_of(x)[:, None])[:, 0]).float()
            def singleton(self, x):
                return torch.full((x.shape[0],), self.unit)
            def _insert(self, x, mask):
                self.seen[mask, self.grid.cell_of(x)[mask]] = True
            def reset(self, mask):
                super().reset(mask)
                self.seen &= ~mask[:, None]
        class NotOne:
            pass
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    env = _wrapped([{"name": "submodular", "objective": "my_objective:Distinct", "options": {"unit": 2.0}}],
                   num_envs=1, horizon=3)
    env.reset(seed=0)
    rewards = [float(env.step(torch.tensor([a]))[1]) for a in (4, 3, 0)]  # right, back left, stay
    assert rewards == [4.0, 0.0, 0.0]
    for name, message in (("my_objective:NotOne", "is not a drl.wrappers.submodular.SubmodularObjective"),
                          ("my_objective:Missing", "cannot be imported"), ("entropy", "objective must be one of")):
        with pytest.raises(ConfigError, match=r"wrappers\[0\]' \(submodular\): .*" + message):
            _wrapped([{"name": "submodular", "objective": name}])


def test_bad_layout_and_options_are_one_config_error():
    with pytest.raises(ConfigError, match="radius must be >= 0"):
        _wrapped([{"name": "submodular", "radius": -1}])
    env = make_vec_env("drl/CartPole-v0", 2, CPU)
    with pytest.raises(ConfigError, match=r"set \['state_dims', 'low', 'high', 'grid'\]"):
        wrap_env(env, [{"name": "submodular"}])


# --- the history observation ------------------------------------------------------------------
def test_coverage_obs_appends_time_and_visited_map():
    env = _wrapped([{"name": "coverage_obs", "map_shape": [3, 3]}], num_envs=2, size=6, horizon=4)
    assert isinstance(env, CoverageObs) and env.single_observation_space.shape == (3 + 1 + 9,)
    obs, _ = env.reset(seed=0)  # start (3, 3): block (1, 1) of 2x2 cells
    expected = torch.zeros(9)
    expected[4] = 0.25
    torch.testing.assert_close(obs[0, 3:], torch.cat([torch.zeros(1), expected]))
    down = torch.full((2,), 2)
    obs, *_ = env.step(torch.tensor([4, 0]))  # env 0 right to (3, 4): block (1, 2); env 1 stays
    expected0 = expected.clone()
    expected0[5] = 0.25
    torch.testing.assert_close(obs[0, 3:], torch.cat([torch.tensor([0.25]), expected0]))
    torch.testing.assert_close(obs[1, 3:], torch.cat([torch.tensor([0.25]), expected]))
    for _ in range(2):
        obs, *_ = env.step(down)
    obs, _, term, _, info = env.step(down)  # the 4th step ends the episode: final obs keeps the map
    assert term.all() and info["final_obs"][0, 3].item() == 1.0 and info["final_obs"][0, 4:].sum() > 0.5
    torch.testing.assert_close(obs[:, 3:], torch.cat([torch.zeros(1), expected])[None].expand(2, -1))
    eval_env = wrap_env(make_vec_env("drl/CoverageGrid-v0", 1, CPU),
                        [{"name": "submodular"}, {"name": "coverage_obs"}], for_eval=True)
    assert isinstance(eval_env, CoverageObs) and isinstance(eval_env.env, SubmodularReward)  # F is the score


def test_coverage_obs_bad_map_shape():
    with pytest.raises(ConfigError, match="map_shape must have one entry per grid dimension"):
        _wrapped([{"name": "coverage_obs", "map_shape": [40, 3]}])


# --- the greedy reference ---------------------------------------------------------------------
def test_greedy_beats_random_and_respects_the_bound():
    spec = [{"name": "submodular", "radius": 0}]
    env = _wrapped(spec, num_envs=16, size=10, horizon=12)
    greedy = greedy_rollout(env, env.unwrapped.greedy_candidates(), seed=0)
    random_values = torch.tensor([e[0][2] for e in _episodes(_wrapped(spec, num_envs=16, size=10, horizon=12), 12)])
    assert bool((greedy <= 13).all())  # at most one new cell per step, plus the start
    assert greedy.mean() > random_values.mean() + 3
    assert greedy.mean() >= 12  # one-step greedy on an open grid walks on fresh cells (rare traps aside)
