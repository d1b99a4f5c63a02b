"""drl/PursuitEvasion-v0: observations and sensor masking, motion, walls, obstacles, capture, rewards and episode
ends against hand-placed states; start placement, seeding, the env state, rendering; scripted team policies."""

from __future__ import annotations

import math

import pytest
import torch

import envs
from envs.core import obs_equal
from envs.multi_agent import is_multi_agent
from envs.tasks.pursuit_evasion import EVADERS, PURSUERS, FleeingEvaders, GreedyPursuers, PursuitEvasion, RandomTeam

FAR = (-0.9, 0.9)  # a corner to park agents that play no part in a check


def placed(rows: list[list[float]], **kwargs) -> tuple[PursuitEvasion, dict]:
    """An env with one row per hand state (agent positions, then obstacles) and its first observation."""
    env = PursuitEvasion(len(rows), **kwargs)
    obs, _ = env.reset(seed=0, options={"state": torch.tensor(rows)})
    return env, obs


def act(env: PursuitEvasion, **actions: list[list[float]]) -> dict[str, torch.Tensor]:
    """Actions per agent (rows per env); agents not named stand still."""
    out = {a: torch.zeros(env.num_envs, 2) for a in env.agents}
    out.update({a: torch.tensor(v, dtype=torch.float32) for a, v in actions.items()})
    return out


def test_registered_contract_and_layout() -> None:
    env = envs.make_vec_env("drl/PursuitEvasion-v0", 4)
    assert isinstance(env, PursuitEvasion) and is_multi_agent(env)
    assert env.agents == ("pursuer_0", "pursuer_1", "evader_0")
    assert env.teams == {PURSUERS: ("pursuer_0", "pursuer_1"), EVADERS: ("evader_0",)}
    assert env.team_columns(EVADERS) == [2]
    # own 7 + 3 obstacles x 3 + 2 others x 5; state: 3 agents x 5 + 3 obstacles x 3 + time
    assert all(env.single_observation_spaces[a].shape == (26,) for a in env.agents)
    assert env.single_state_space.shape == (25,)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {*env.agents, "state"} and obs["state"].shape == (4, 25)
    assert obs["evader_0"].dtype == torch.float32
    wide = PursuitEvasion(2, pursuer_speeds=(0.1, 0.1, 0.1), pursuer_ranges=(1, 1, 1), evader_speeds=(0.1, 0.1),
                          evader_ranges=(1, 1), num_obstacles=0)
    assert wide.agents[-1] == "evader_1" and wide.single_observation_spaces["evader_1"].shape == (7 + 5 * 4,)


def test_observation_and_sensor_masking_against_hand_values() -> None:
    # pursuer_0 (range 0.5) at the origin, pursuer_1 (range 1.5) at (0.6, 0), the evader (range 1.0) at (0, -0.9);
    # one obstacle of radius 0.2 at (0.5, 0.5)
    env, obs = placed([[0.0, 0.0, 0.6, 0.0, 0.0, -0.9, 0.5, 0.5, 0.2]], num_obstacles=1)
    hidden = [0.0] * 5
    want = {
        # 0.6 > 0.5 and 0.9 > 0.5: pursuer_0 sees nobody
        "pursuer_0": [0, 0, 0, 0, 0.06, 0.5, 1, 0.5, 0.5, 0.2, *hidden, *hidden],
        # sees pursuer_0 (0.6) and the evader (|(-0.6, -0.9)| = 1.08 <= 1.5)
        "pursuer_1": [0.6, 0, 0, 0, 0.03, 1.5, 1, -0.1, 0.5, 0.2, 1, -0.6, 0, 0, 0, 1, -0.6, -0.9, 0, 0],
        # sees pursuer_0 (0.9 <= 1.0), not pursuer_1 (1.08 > 1.0)
        "evader_0": [0, -0.9, 0, 0, 0.05, 1.0, 1, 0.5, 1.4, 0.2, 1, 0, 0.9, 0, 0, *hidden],
    }
    for agent, values in want.items():
        torch.testing.assert_close(obs[agent], torch.tensor([values]), atol=1e-6, rtol=0)
    state = [0, 0, 0, 0, 1, 0.6, 0, 0, 0, 1, 0, -0.9, 0, 0, 1, 0.5, 0.5, 0.2, 0.0]
    torch.testing.assert_close(obs["state"], torch.tensor([state]), atol=1e-6, rtol=0)
    # one step: the velocities are observed (the others' only while visible), the time enters the state
    obs, *_ = env.step(act(env, pursuer_0=[[1.0, 0.0]], pursuer_1=[[0.0, 1.0]], evader_0=[[-1.0, -1.0]]))
    d = 0.05 / math.sqrt(2)  # the evader's (-1, -1) is scaled to norm 1
    torch.testing.assert_close(obs["pursuer_1"][0, :4], torch.tensor([0.6, 0.03, 0.0, 0.03]), atol=1e-6, rtol=0)
    torch.testing.assert_close(obs["pursuer_1"][0, 15:], torch.tensor([1, -0.6 - d, -0.93 - d, -d, -d]), atol=1e-6,
                               rtol=0)
    torch.testing.assert_close(obs["evader_0"][0, 10:15], torch.tensor([1, 0.06 + d, 0.9 + d, 0.06, 0.0]), atol=1e-6,
                               rtol=0)
    assert obs["state"][0, -1] == pytest.approx(1 / 200)


@pytest.mark.parametrize("occlusion", [True, False])
def test_obstacles_block_the_line_of_sight(occlusion: bool) -> None:
    # pursuer_1 (range 1.5) at the origin; an obstacle of radius 0.2 at (0.5, 0); the evader at (1, y): the line
    # of sight passes |0.5 y| / |(1, y)| from the obstacle's centre: 0 (y = 0), 0.121 (y = 0.25), 0.257 (y = 0.6)
    rows = [[*FAR, 0.0, 0.0, 1.0, y, 0.5, 0.0, 0.2] for y in (0.0, 0.25, 0.6)]
    _, obs = placed(rows, num_obstacles=1, occlusion=occlusion, evader_ranges=(1.5,))
    want = [False, False, True] if occlusion else [True, True, True]
    assert obs["pursuer_1"][:, 15].tolist() == [float(w) for w in want]  # its view of the evader
    assert obs["evader_0"][:, 15].tolist() == [float(w) for w in want]  # and the evader's (range 1.5 too) of it


def test_velocity_commands_clipping_and_walls() -> None:
    # pursuer_0 (speed 0.06) moves; the others stand far apart in the corners
    others = [0.9, -0.9, -0.9, 0.9]
    starts = [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.97, 0.0], [-0.5, -0.97]]
    env, _ = placed([[*s, *others] for s in starts], num_obstacles=0)
    commands = [[3.0, 0.0], [0.6, 0.8], [1.0, 1.0], [math.nan, 1.0], [1.0, 0.0], [-0.5, -1.0]]
    obs, *_ = env.step(act(env, pursuer_0=commands))
    s = 0.06 / math.sqrt(2)
    want = torch.tensor([
        [0.06, 0.0],  # clipped to (1, 0)
        [0.036, 0.048],  # norm 1: as given
        [s, s],  # norm sqrt 2: scaled to 1
        [0.0, 0.06],  # NaN reads as 0
        [0.98, 0.0],  # the wall: |x| <= 1 - agent radius 0.02
        [-0.5 - 0.06 * 0.5 / math.sqrt(1.25), -0.98],  # slides along the bottom wall
    ])
    torch.testing.assert_close(env.pos[:, 0], want, atol=1e-6, rtol=0)
    torch.testing.assert_close(obs["pursuer_0"][:, 2:4], want - torch.tensor(starts), atol=1e-6,
                               rtol=0)


def test_obstacles_push_agents_out_radially() -> None:
    others = [0.9, -0.9, -0.9, 0.9]
    obstacle = [0.5, 0.0, 0.2]  # grown by the agent radius: 0.22
    env, _ = placed([[0.25, 0.0, *others, *obstacle], [0.25, 0.1, *others, *obstacle], [0.2, 0.0, *others, *obstacle]],
                    num_obstacles=1)
    env.step(act(env, pursuer_0=[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))
    slide = torch.tensor([-0.19, 0.1])  # (0.31, 0.1) - centre, inside: pushed out along it
    want = torch.tensor([[0.28, 0.0], (torch.tensor([0.5, 0.0]) + slide / slide.norm() * 0.22).tolist(), [0.26, 0.0]])
    torch.testing.assert_close(env.pos[:, 0], want, atol=1e-6, rtol=0)


def test_capture_rewards_termination_and_final_obs() -> None:
    rows = [
        [0.0, 0.0, *FAR, 0.15, 0.0],  # 0.06 forward: 0.09 from the evader, captured
        [0.0, 0.0, *FAR, 0.2, 0.0],  # 0.14 away after the step: free
    ]
    env, _ = placed(rows, num_obstacles=0)
    obs, reward, terminated, truncated, info = env.step(act(env, pursuer_0=[[1.0, 0.0], [1.0, 0.0]]))
    assert torch.equal(reward, torch.tensor([[1.0, 1.0, -1.0], [0.0, 0.0, 0.0]]))
    assert terminated.tolist() == [True, False] and not truncated.any()
    assert info["pursuers_win"].tolist() == [True, False] and not info["evaders_win"].any()
    final = info["final_obs"]
    assert final["evader_0"][0, 6] == 0 and final["state"][0, 14] == 0  # captured in the last obs
    assert obs["evader_0"][0, 6] == 1 and info["_final_obs"].tolist() == [True, False]  # the next episode
    assert obs_equal({k: v[1] for k, v in final.items()}, {k: v[1] for k, v in obs.items()})


def test_capture_on_the_way_and_a_near_miss() -> None:
    # a fast pursuer (0.3 per step) passes the evader: both ends are 0.158 away, the closest approach is mid-step
    rows = [[-0.15, 0.0, *FAR, 0.0, 0.05], [-0.15, 0.0, *FAR, 0.0, 0.12]]
    env, _ = placed(rows, num_obstacles=0, pursuer_speeds=(0.3, 0.03))
    _, reward, terminated, *_ = env.step(act(env, pursuer_0=[[1.0, 0.0], [1.0, 0.0]]))
    assert terminated.tolist() == [True, False] and reward[:, 0].tolist() == [1.0, 0.0]


def test_two_evaders_captured_one_after_the_other() -> None:
    kwargs = {"num_obstacles": 0, "evader_speeds": (0.05, 0.05), "evader_ranges": (1.0, 1.0)}
    env, _ = placed([[0.0, 0.0, 0.5, 0.5, 0.15, 0.0, 0.5, 0.8]], **kwargs)
    obs, reward, terminated, _, info = env.step(act(env, pursuer_0=[[1.0, 0.0]]))
    assert reward.tolist() == [[1.0, 1.0, -1.0, -1.0]] and not terminated.any() and not info["pursuers_win"].any()
    assert obs["evader_0"][0, 6] == 0 and obs["evader_1"][0, 6] == 1
    # the captured evader is invisible to everyone (pursuer_1's view, evader_1's view) and no longer moves
    assert torch.equal(obs["pursuer_1"][0, 12:17], torch.zeros(5))
    assert torch.equal(obs["evader_1"][0, 17:], torch.zeros(5))
    caught_at = env.pos[0, 2].clone()
    obs, reward, terminated, _, info = env.step(act(env, evader_0=[[1.0, 1.0]], pursuer_1=[[0.0, 1.0]]))
    assert torch.equal(env.pos[0, 2], caught_at) and reward.tolist() == [[0.0] * 4]
    # pursuer_1 at (0.5, 0.53) closes on evader_1 at (0.5, 0.8): 0.27 -> 0.24 -> ... until captured
    for _ in range(20):
        obs, reward, terminated, _, info = env.step(act(env, pursuer_1=[[0.0, 1.0]]))
        if terminated.any():
            break
    assert terminated.tolist() == [True] and info["pursuers_win"].tolist() == [True]
    assert reward.tolist() == [[1.0, 1.0, -1.0, -1.0]]


def test_truncation_is_the_evaders_win() -> None:
    env, _ = placed([[0.0, 0.0, *FAR, 0.8, -0.8]], num_obstacles=0, max_episode_steps=3)
    flags = []
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(act(env))
        flags.append((bool(terminated), bool(truncated), bool(info["pursuers_win"]), bool(info["evaders_win"])))
    assert flags == [(False, False, False, False)] * 2 + [(False, True, False, True)]
    assert info["final_obs"]["state"][0, -1] == pytest.approx(1.0) and obs["state"][0, -1] == 0


def test_distance_shaping_is_potential_based() -> None:
    # phi = -(distance of the evader to the nearest pursuer): 0.5 -> 0.44 gives +0.06, times shaping 0.5
    rows = [[0.0, 0.0, -0.9, -0.9, 0.5, 0.0], [0.0, 0.0, -0.9, -0.9, 0.15, 0.0]]
    env, _ = placed(rows, num_obstacles=0, shaping=0.5)
    _, reward, *_ = env.step(act(env, pursuer_0=[[1.0, 0.0], [1.0, 0.0]]))
    # row 1: captured: 1 + 0.5 * (0 - (-0.15)), the captured evader's term leaves phi
    torch.testing.assert_close(reward, torch.tensor([[0.03, 0.03, -0.03], [1.075, 1.075, -1.075]]), atol=1e-6, rtol=0)


def test_start_placement_respects_obstacles_walls_and_distances() -> None:
    env = PursuitEvasion(512, num_obstacles=4, obstacle_radius=(0.15, 0.25))
    env.reset(seed=0)
    r, obstacles, pos = env.agent_radius, env.obstacles, env.pos
    centre, radius = obstacles[..., :2], obstacles[..., 2]
    assert bool(((radius >= 0.15) & (radius <= 0.25)).all())
    assert bool((centre.abs() + radius[..., None] + 2 * r <= env.arena_half + 1e-6).all())
    gap = (centre[:, :, None] - centre[:, None]).norm(dim=-1) - radius[:, :, None] - radius[:, None] - 2 * r
    off_diagonal = ~torch.eye(4, dtype=torch.bool)
    assert bool((gap[:, off_diagonal] >= 0).all())
    clearance = (pos[:, :, None] - centre[:, None]).norm(dim=-1) - radius[:, None] - r
    assert bool((clearance >= 0).all()) and bool((pos.abs() <= env.arena_half - r).all())
    assert bool(((pos[:, 2:3] - pos[:, :2]).norm(dim=-1) >= env.min_start_distance).all())
    assert obstacles[:, 0, 0].unique().numel() == 512  # drawn per env copy


def test_seeding_is_deterministic() -> None:
    def run(seed: int) -> list:
        env = PursuitEvasion(8, max_episode_steps=20)
        obs, _ = env.reset(seed=seed)
        out = [obs]
        pursuers, evaders = RandomTeam(env, PURSUERS, 1), RandomTeam(env, EVADERS, 2)
        for _ in range(30):
            policy = {**pursuers(obs), **evaders(obs)}
            obs, reward, terminated, truncated, info = env.step(policy)
            out.append((obs, reward, terminated, truncated))
        return out

    first, again, other = run(5), run(5), run(6)
    assert all(obs_equal(a[0], b[0]) and all(torch.equal(x, y) for x, y in zip(a[1:], b[1:], strict=True))
               for a, b in zip(first[1:], again[1:], strict=True))
    assert not obs_equal(first[0], other[0])


def test_state_round_trip_continues_bitwise() -> None:
    env_a, env_b = PursuitEvasion(6, max_episode_steps=9), PursuitEvasion(6, max_episode_steps=9)
    obs, _ = env_a.reset(seed=11)
    env_b.reset(seed=12)
    pursuers, evaders = GreedyPursuers(env_a), RandomTeam(env_a, EVADERS, 3)
    for _ in range(12):
        obs, *_ = env_a.step({**pursuers(obs), **evaders(obs)})
    state = env_a.state_dict()
    actions = [{**pursuers(obs), **evaders(obs)} for _ in range(10)]  # fixed actions for both copies
    expected = [env_a.step(a) for a in actions]
    env_b.load_state_dict(state)
    got = [env_b.step(a) for a in actions]
    assert any(bool(step[4]["_final_obs"].any()) for step in expected)  # an autoreset after the save
    for want, have in zip(expected, got, strict=True):
        assert obs_equal(want[0], have[0]) and obs_equal(want[4]["final_obs"], have[4]["final_obs"])
        for i in (1, 2, 3):
            assert torch.equal(want[i], have[i])
        assert torch.equal(want[4]["pursuers_win"], have[4]["pursuers_win"])


def _capture_rate(env: PursuitEvasion, pursuers, evaders, episodes_per_env: int) -> float:
    """The fraction of the first ``episodes_per_env`` episodes of every copy the pursuers won."""
    obs, _ = env.reset(seed=0)
    finished = torch.zeros(env.num_envs, dtype=torch.int64)
    wins = 0
    while bool((finished < episodes_per_env).any()):
        obs, _, terminated, truncated, info = env.step({**pursuers(obs), **evaders(obs)})
        counted = (terminated | truncated) & (finished < episodes_per_env)
        wins += int((info["pursuers_win"] & counted).sum())
        finished += counted
    return wins / (episodes_per_env * env.num_envs)


def test_greedy_pursuers_capture_far_more_often_than_random_ones() -> None:
    env = PursuitEvasion(64, max_episode_steps=100)
    greedy = _capture_rate(env, GreedyPursuers(env), RandomTeam(env, EVADERS, 1), 2)
    random = _capture_rate(env, RandomTeam(env, PURSUERS, 2), RandomTeam(env, EVADERS, 1), 2)
    # measured: greedy 0.945 (121/128), random 0.023 (3/128); a binomial std is at most 0.045 at 128 episodes
    assert greedy >= 0.9 and random <= 0.2, (greedy, random)


def test_fleeing_evaders_read_the_pursuers_they_see() -> None:
    # the evader at the origin sees pursuer_0 at (0.5, 0) (range 1.0), not pursuer_1 at (-0.9, 0.9) (1.27 away)
    env, obs = placed([[0.5, 0.0, -0.9, 0.9, 0.0, 0.0]], num_obstacles=0)
    torch.testing.assert_close(FleeingEvaders(env)(obs)["evader_0"], torch.tensor([[-1.0, 0.0]]))
    actions = GreedyPursuers(env)(obs)  # pursuer_0 (range 0.5) sees it; pursuer_1 (1.5) does too
    torch.testing.assert_close(actions["pursuer_0"], torch.tensor([[-1.0, 0.0]]))
    torch.testing.assert_close(actions["pursuer_1"], torch.tensor([[0.9, -0.9]]) / math.sqrt(1.62))


def test_render_and_bad_options() -> None:
    env, _ = placed([[0.0, 0.0, 0.5, 0.5, -0.5, -0.5, 0.5, -0.5, 0.2]], num_obstacles=1, render_size=64)
    image = env.render()
    assert image.shape == (64, 64, 3) and image.dtype.name == "uint8"
    assert (image == (120, 120, 120)).all(-1).any() and (image == (210, 40, 40)).all(-1).any()
    with pytest.raises(ValueError, match="same length"):
        PursuitEvasion(1, pursuer_speeds=(0.1,), pursuer_ranges=(1.0, 1.0))
    with pytest.raises(ValueError, match="options\\['state'\\] must have shape"):
        PursuitEvasion(2).reset(options={"state": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="actions\\['evader_0'\\] must have shape"):
        env.step({**act(env), "evader_0": torch.zeros(1, 3)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    rows = [[0.0, 0.0, 0.6, 0.0, 0.15, -0.05, 0.5, 0.5, 0.2]]
    cpu, obs_cpu = placed(rows, num_obstacles=1)
    gpu = PursuitEvasion(1, device="cuda", num_obstacles=1)
    obs_gpu, _ = gpu.reset(seed=0, options={"state": torch.tensor(rows)})
    for _ in range(3):
        a = GreedyPursuers(cpu)(obs_cpu) | FleeingEvaders(cpu)(obs_cpu)
        obs_cpu, r_cpu, *_ = cpu.step(a)
        obs_gpu, r_gpu, *_ = gpu.step({k: v.cuda() for k, v in a.items()})
        torch.testing.assert_close(r_gpu.cpu(), r_cpu)
        for k in obs_cpu:
            torch.testing.assert_close(obs_gpu[k].cpu(), obs_cpu[k], atol=1e-6, rtol=0)
