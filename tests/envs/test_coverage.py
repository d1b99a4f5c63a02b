"""The coverage tasks (envs.tasks.coverage): dynamics, walls, the horizon, peek, the env state."""

from __future__ import annotations

import pytest
import torch

from envs import ENVS, make_vec_env
from envs.core import supports_env_state

CPU = torch.device("cpu")


def test_registered():
    assert {"drl/CoverageGrid-v0", "drl/CoveragePointMass-v0"} <= set(ENVS)


def test_grid_moves_walls_and_horizon():
    env = make_vec_env("drl/CoverageGrid-v0", 5, CPU, env_kwargs={"size": 4, "horizon": 3})
    obs, _ = env.reset(seed=0)
    torch.testing.assert_close(obs, torch.tensor([[2.5, 2.5, 0.0]]).expand(5, 3))  # start: cell (2, 2)
    assert env.coverage_layout == {"state_dims": [0, 1], "low": [0.0, 0.0], "high": [4.0, 4.0], "grid": [4, 4]}
    obs, reward, term, trunc, _ = env.step(torch.arange(5))  # stay, up, down, left, right
    torch.testing.assert_close(obs[:, :2], torch.tensor([[2.5, 2.5], [1.5, 2.5], [3.5, 2.5], [2.5, 1.5],
                                                         [2.5, 3.5]]))
    torch.testing.assert_close(obs[:, 2], torch.full((5,), 1 / 3))
    assert not reward.any() and not term.any() and not trunc.any()
    obs, *_ = env.step(torch.arange(5))
    torch.testing.assert_close(obs[:, :2], torch.tensor([[2.5, 2.5], [0.5, 2.5], [3.5, 2.5], [2.5, 0.5],
                                                         [2.5, 3.5]]))  # down and right hit the wall
    obs, _, term, trunc, info = env.step(torch.arange(5))
    assert term.all() and not trunc.any()  # the horizon ends the task: terminated
    torch.testing.assert_close(info["final_obs"][:, 2], torch.ones(5))
    torch.testing.assert_close(obs, torch.tensor([[2.5, 2.5, 0.0]]).expand(5, 3))  # autoreset


def test_peek_is_the_next_obs_without_stepping():
    for env_id, actions in (("drl/CoverageGrid-v0", torch.tensor([1, 4, 0])),
                            ("drl/CoveragePointMass-v0", torch.tensor([[1.0, 0.0], [-0.5, 2.0], [0.0, 0.0]]))):
        env = make_vec_env(env_id, 3, CPU, env_kwargs={"start": "random"})
        env.reset(seed=1)
        before = env.state_dict()
        peeked = env.peek(actions)
        assert torch.equal(env.state_dict()["physics"]["pos"], before["physics"]["pos"])
        obs, *_ = env.step(actions)
        torch.testing.assert_close(peeked, obs)


def test_point_mass_velocity_and_clamp():
    env = make_vec_env("drl/CoveragePointMass-v0", 2, CPU, env_kwargs={"half": 2.0, "max_speed": 1.5,
                                                                        "horizon": 5})
    env.reset(seed=0)
    obs, *_ = env.step(torch.tensor([[1.0, -0.5], [float("nan"), 3.0]]))
    torch.testing.assert_close(obs[:, :2], torch.tensor([[1.5, -0.75], [0.0, 1.5]]))  # NaN -> 0, action clipped
    obs, *_ = env.step(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    torch.testing.assert_close(obs[:, :2], torch.tensor([[2.0, -0.75], [0.0, 2.0]]))  # clamped to the square
    cand = env.greedy_candidates(8)
    assert cand.shape == (8, 2) and torch.allclose(cand.abs().amax(-1), torch.ones(8))


def test_env_state_and_random_starts_follow_the_seed():
    env = make_vec_env("drl/CoverageGrid-v0", 8, CPU, env_kwargs={"start": "random"})
    assert supports_env_state(env)
    a, _ = env.reset(seed=5)
    b, _ = env.reset(seed=5)
    assert torch.equal(a, b) and len({tuple(x) for x in a[:, :2].tolist()}) > 1


@pytest.mark.parametrize("kwargs, message", [({"size": 1}, "size must be >= 2"), ({"horizon": 0}, "horizon"),
                                             ({"start": "corner"}, "start must be")])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_vec_env("drl/CoverageGrid-v0", 1, CPU, env_kwargs=kwargs)
