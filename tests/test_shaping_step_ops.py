"""potential_shaping's per-step shortcuts against the expressions they replace, bitwise: the CartPole potential
in fewer ops, the linear potential's tensors made once, and the wrapper's shaping term and reward (the
potential evaluated once when the final obs is the obs itself), on random data with NaN, infinities and zeros."""

from __future__ import annotations

import math

import torch

from drl.wrappers import wrap_env
from drl.wrappers.shaping import cartpole_upright, linear_potential
from envs import make_vec_env


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.numpy().tobytes() == b.numpy().tobytes()


def _obs(gen: torch.Generator, n: int, d: int, special: bool) -> torch.Tensor:
    obs = torch.randn(n, d, generator=gen) * 10 ** torch.randint(-8, 8, (n, d), generator=gen)
    if special:
        for value, share in ((float("nan"), 0.05), (float("inf"), 0.05), (-0.0, 0.05), (0.0, 0.05)):
            obs[torch.rand(n, d, generator=gen) < share] = value
    return obs


def test_cartpole_potential_is_its_expression():
    gen = torch.Generator().manual_seed(0)
    for trial in range(30):
        obs = _obs(gen, 257, 4, trial % 2 == 1)
        for scale in (1.0, 0.25, -3.0, 0.0):
            expected = -scale * ((obs[:, 2] / (12 * math.pi / 180)).square() + (obs[:, 0] / 2.4).square())
            assert _same(cartpole_upright(obs, scale), expected)


def test_linear_potential_is_its_expression():
    gen = torch.Generator().manual_seed(1)
    for trial in range(20):
        obs = _obs(gen, 33, 5, trial % 2 == 1)
        weights = torch.randn(5, generator=gen).tolist()
        for bias in (0.0, -0.0, 0.7):
            expected = obs @ torch.as_tensor(weights, dtype=obs.dtype) + bias
            assert _same(linear_potential(obs, weights, bias), expected)


def _reference_rewards(case: str, num_envs: int, spec: dict, steps: int) -> list[tuple[torch.Tensor, ...]]:
    """The shaping term and reward by the definition (Ng et al.; the wrapper's original expressions)."""
    env = make_vec_env(case, num_envs, torch.device("cpu"), env_kwargs={"max_episode_steps": 20})
    wrapped = wrap_env(make_vec_env(case, num_envs, torch.device("cpu"), env_kwargs={"max_episode_steps": 20}),
                       [spec], defaults={"gamma": 0.97})
    potential = wrapped.potential
    obs, _ = env.reset(seed=0)
    wrapped.reset(seed=0)
    phi = potential(obs.float())
    gen = torch.Generator().manual_seed(2)
    out = []
    for _ in range(steps):
        space = env.single_action_space
        if hasattr(space, "n"):
            actions = torch.randint(0, int(space.n), (num_envs,), generator=gen)
        else:
            actions = torch.rand(num_envs, *space.shape, generator=gen) * 2 - 1
        obs, reward, terminated, truncated, info = env.step(actions)
        phi_obs = potential(obs.float())
        phi_next = torch.where(terminated, 0.0, potential(info["final_obs"].float()))
        shaping = 0.97 * phi_next - phi
        phi = phi_obs
        _, got_reward, _, _, got_info = wrapped.step(actions)
        out.append((got_info["shaping"], shaping, got_reward, reward + shaping.to(reward.dtype)))
    return out


def test_shaping_step_is_its_definition():
    for case, n, spec in (("drl/CartPole-v0", 16, {"name": "potential_shaping", "potential": "cartpole_upright"}),
                          ("drl/Pendulum-v0", 3, {"name": "potential_shaping", "potential": "linear",
                                                  "potential_kwargs": {"weights": [0.5, -1.0, 0.25], "bias": 0.1}}),
                          ("CartPole-v1", 2, {"name": "potential_shaping", "potential": "cartpole_upright"})):
        rows = _reference_rewards(case, n, spec, 60)
        for got_shaping, shaping, got_reward, reward in rows:
            assert _same(got_shaping, shaping) and _same(got_reward, reward)


def test_barfi_action_cost_is_its_expression():
    from drl.wrappers.barfi import action_cost

    gen = torch.Generator().manual_seed(3)
    for shape in ((1, 6), (9, 6), (4, 2, 3), (5,)):
        for dtype in (torch.float32, torch.float64):
            actions = _obs(gen, shape[0], int(torch.tensor(shape[1:]).prod()), True).reshape(shape).to(dtype)
            expected = -actions.reshape(actions.shape[0], -1).float().square().sum(-1)
            assert _same(action_cost(actions, actions, actions), expected)


def test_shaping_kernel_step_equals_the_torch_step():
    for num_envs in (1, 16):
        runs = []
        for kernel in (True, False):
            env = wrap_env(make_vec_env("drl/CartPole-v0", num_envs, torch.device("cpu"),
                                        env_kwargs={"max_episode_steps": 20}),
                           [{"name": "potential_shaping", "potential": "cartpole_upright"}], defaults={"gamma": 0.97})
            env._kernel = kernel
            env.reset(seed=0)
            gen = torch.Generator().manual_seed(5)
            rows = []
            for step in range(80):
                _, reward, _, _, info = env.step(torch.randint(0, 2, (num_envs,), generator=gen))
                rows.append((reward, info["shaping"], info["env_reward"]))
                if step % 30 == 29:
                    rows.append({k: repr(v) for k, v in env.metrics().items()})
            rows.append(env.state_dict()["wrapper/potential_shaping"]["episode"]["phi"])
            runs.append(rows)
        for a, b in zip(*runs, strict=True):
            if isinstance(a, dict):
                assert a == b
            elif isinstance(a, tuple):
                assert all(_same(x, y) for x, y in zip(a, b, strict=True))
            else:
                assert _same(a, b)
