"""Potential-based shaping (drl.wrappers.shaping): the shaped reward against hand values at every kind of
episode boundary, the telescoping sum over real episodes, policy invariance on a tabular MDP solved exactly
(and a non-potential bonus that breaks it), config errors, a PPO run through ``wrappers:``, and CUDA."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from scripted_env import ScriptedEnv

from drl import api
from drl.checkpoint import load_checkpoint
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.wrappers import make_run_env
from drl.wrappers.shaping import PotentialShaping, mountaincar_energy
from envs.torch_classic import CartPole, MountainCarContinuous


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _b(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


def test_boundaries_against_hand_values():
    """Phi(s) = s, gamma = 0.5. Env 0 runs on, env 1 terminates at step 1, env 2 is truncated at step 1.
    Step 1: env 0: 1 + 0.5*4 - 1 = 2; env 1: 1 + 0.5*0 - 2 = -1 (terminal Phi = 0, not Phi(5));
    env 2: 1 + 0.5*6 - 3 = 1 (Phi of the final obs 6, not of the reset obs 20).
    Step 2 (rewards 0): env 0: 0.5*7 - 4 = -0.5; env 1: 0.5*11 - 10 = -4.5; env 2: 0.5*21 - 20 = -9.5 (the new
    episodes' Phi(s) come from their reset obs 10 and 20)."""
    col = lambda *v: _t(*v)[:, None]  # noqa: E731
    script = [(col(4, 10, 20), _t(1, 1, 1), _b(0, 1, 0), _b(0, 0, 1), col(4, 5, 6)),
              (col(7, 11, 21), _t(0, 0, 0), _b(0, 0, 0), _b(0, 0, 0), col(7, 11, 21))]
    env = PotentialShaping(ScriptedEnv(col(1, 2, 3), script), "linear", {"weights": [1.0]}, gamma=0.5)
    env.reset()
    actions = torch.zeros(3, dtype=torch.int64)
    _, r1, term, trunc, info = env.step(actions)
    torch.testing.assert_close(r1, _t(2, -1, 1))
    torch.testing.assert_close(info["env_reward"], _t(1, 1, 1))
    assert term.tolist() == [False, True, False] and trunc.tolist() == [False, False, True]  # kept apart
    _, r2, *_ = env.step(actions)
    torch.testing.assert_close(r2, _t(-0.5, -4.5, -9.5))
    assert env.metrics() == {"potential_shaping/shaping": pytest.approx((1 - 2 + 0 - 0.5 - 4.5 - 9.5) / 6)}


@pytest.mark.parametrize("env_cls, potential, steps", [
    (CartPole, "cartpole_upright", 500),  # ends by termination: Phi(s_T) = 0
    (MountainCarContinuous, "mountaincar_energy", 30),  # ends by truncation (time limit 30): Phi(final obs)
])
def test_shaped_return_telescopes(env_cls, potential, steps):
    """Per episode sum_t gamma^t (r_t + F_t) = sum_t gamma^t r_t + gamma^T Phi(s_T) [not terminated] - Phi(s_0),
    with s_T the true last obs, on every env's first episode."""
    gamma, n = 0.9, 8
    inner = env_cls(n, max_episode_steps=steps) if env_cls is MountainCarContinuous else env_cls(n)
    env = PotentialShaping(inner, potential, gamma=gamma)
    phi = env.potential
    obs, _ = env.reset(seed=3)
    phi0, disc = phi(obs), torch.ones(n)
    shaped_sum, plain_sum, end_term = torch.zeros(n), torch.zeros(n), torch.full((n,), float("nan"))
    alive = torch.ones(n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        if env_cls is CartPole:
            actions = torch.randint(0, 2, (n,), generator=gen)
        else:
            actions = torch.rand(n, 1, generator=gen) * 2 - 1
        obs, reward, term, trunc, info = env.step(actions)
        shaped_sum += torch.where(alive, disc * reward, 0.0)
        plain_sum += torch.where(alive, disc * info["env_reward"], 0.0)
        disc = disc * gamma
        done = (term | trunc) & alive
        end_term[done] = torch.where(term, 0.0, disc * phi(info["final_obs"]))[done]
        alive &= ~(term | trunc)
    assert not alive.any()
    if env_cls is MountainCarContinuous:
        assert (end_term != 0).all()  # truncated: the final obs's potential counts
    torch.testing.assert_close(shaped_sum, plain_sum + end_term - phi0, rtol=1e-5, atol=1e-4)


# --- policy invariance on a tabular MDP ---------------------------------------------------------
S, A, TERMINAL, GAMMA = 6, 3, 5, 0.9


def _mdp() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random MDP: P [S, A, S] (state 5 terminal, reached with some probability), R [S, A, S], Phi [S]."""
    gen = torch.Generator().manual_seed(7)
    p = torch.rand(S, A, S, generator=gen) ** 3
    p[:, :, TERMINAL] += 0.05
    p /= p.sum(-1, keepdim=True)
    r = torch.randn(S, A, S, generator=gen)
    phi = 10 * torch.randn(S, generator=gen)
    return p, r, phi


def _shaped_table(r: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """R'[s, a, s'] as the wrapper computes it: one scripted env per (s, a, s') starting at one-hot(s) and
    moving to one-hot(s') (terminated when s' is terminal; then the obs is the reset state's one-hot(0)),
    with the ``linear`` potential phi . one_hot(s) = phi[s]."""
    triples = [(s, a, s2) for s in range(S) for a in range(A) for s2 in range(S)]
    eye = torch.eye(S)
    start = torch.stack([eye[s] for s, _, _ in triples])
    final = torch.stack([eye[s2] for *_, s2 in triples])
    term = torch.tensor([s2 == TERMINAL for *_, s2 in triples])
    obs = torch.where(term[:, None], eye[0], final)
    reward = torch.stack([r[t] for t in triples])
    env = PotentialShaping(ScriptedEnv(start, [(obs, reward, term, torch.zeros_like(term), final)]),
                           "linear", {"weights": phi.tolist()}, gamma=GAMMA)
    env.reset()
    _, shaped, *_ = env.step(torch.zeros(len(triples), dtype=torch.int64))
    return shaped.reshape(S, A, S)


def _q_values(p: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Exact Q [S, A] by value iteration (the terminal state has value 0), to float64 convergence."""
    p, r = p.double(), r.double()
    v = torch.zeros(S, dtype=torch.float64)
    for _ in range(2000):
        v = (p * (r + GAMMA * v)).sum(-1).max(-1).values
        v[TERMINAL] = 0.0
    return (p * (r + GAMMA * v)).sum(-1)


def test_policy_invariance_on_a_tabular_mdp():
    """Optimal policy unchanged; the shaped Q is Q - Phi(s) (Ng et al. 1999, Theorem 1); a bonus that is not
    potential-based (a reward for one suboptimal action) does change the optimal policy."""
    p, r, phi = _mdp()
    shaped = _shaped_table(r, phi)
    torch.testing.assert_close(shaped[1, 2, 4], r[1, 2, 4] + GAMMA * phi[4] - phi[1])
    torch.testing.assert_close(shaped[3, 0, TERMINAL], r[3, 0, TERMINAL] - phi[3])
    q, q_shaped = _q_values(p, r), _q_values(p, shaped)
    live = [s for s in range(S) if s != TERMINAL]
    torch.testing.assert_close(q_shaped[live], q[live] - phi[live, None].double(), rtol=0, atol=1e-4)
    assert torch.equal(q[live].argmax(-1), q_shaped[live].argmax(-1))
    assert (shaped - r).abs().max() > 5  # the shaping is large, not a no-op
    best = q[live].argmax(-1)
    worst = q[live].argmin(-1)
    bonus = torch.zeros(S, A, S)
    bonus[live, worst] = 5.0  # F(s, a): not of the form gamma Phi(s') - Phi(s)
    changed = _q_values(p, r + bonus)[live].argmax(-1)
    assert not torch.equal(changed, best)


# --- config, runs, state ------------------------------------------------------------------------
def _cfg(wrappers: list[dict[str, Any]], env_id: str = "drl/CartPole-v0", total_steps: int = 256, **extra: Any):
    return api.load_config("ppo", env_id, overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 1, "eval_interval": 128,
        "eval_episodes": 2, "checkpoint_interval": 0, "wrappers": wrappers,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1, "compile": False, "anneal_lr": False},
        **extra})


@pytest.mark.parametrize("entry, message", [
    ({"potential": "nope"}, "(potential_shaping): unknown potential 'nope'; valid: ['cartpole_upright'"),
    ({"potential": "drl.nowhere:phi"}, "potential 'drl.nowhere:phi' could not be imported"),
    ({"potential": "linear", "potential_kwargs": {"weights": [1.0]}}, "weights has 1 entries, the observation 4"),
    ({"potential": "linear", "potential_kwargs": {"weights": [0, 0, 0, 0]}, "gamma": 1.5}, "gamma must be in [0, 1]"),
    ({"potential": "drl.wrappers.shaping:zero_obs"}, "potential_shaping): "),
    ({}, "wrapper 'potential_shaping' needs ['potential']"),
])
def test_bad_config_is_one_error(entry, message):
    with pytest.raises(ConfigError) as err:
        make_run_env(_cfg([{"name": "potential_shaping", **entry}]), 2, torch.device("cpu"))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_ppo_run_through_config_and_module_function_potential(tmp_path):
    wrappers = [{"name": "potential_shaping", "potential": "drl.wrappers.shaping:cartpole_upright",
                 "potential_kwargs": {"scale": 2.0}}]
    cfg = _cfg(wrappers)
    env = make_run_env(cfg, 3, torch.device("cpu"))
    assert env.gamma == cfg.algo.gamma  # the agent's discount by default
    run_dir, _ = api.train(cfg, tmp_path / "run")
    rows = read_metrics(run_dir / "metrics.csv")
    assert all(np.isfinite(float(r["potential_shaping/shaping"])) for r in rows)
    ended = [r for r in rows if r["episode_return"] not in ("", "nan")]
    assert ended and all(r["episode_return"] == r["episode_length"] for r in ended)  # CartPole's own +1 a step
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert ckpt["env_state"]["wrapper/potential_shaping"]["episode"]["phi"].shape == (4,)


def test_episode_state_restores_the_potential():
    """Save the env state mid-episode, go on, restore: the same actions give the same shaped rewards."""
    env = PotentialShaping(MountainCarContinuous(4), "mountaincar_energy", gamma=0.99)
    env.reset(seed=0)
    actions = torch.linspace(-1, 1, 4)[:, None]
    for _ in range(5):
        env.step(actions)
    state = env.state_dict()
    first = [env.step(actions)[1] for _ in range(3)]
    env.step(-actions)
    env.load_state_dict(state)
    again = [env.step(actions)[1] for _ in range(3)]
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_named_potentials_hand_values():
    torch.testing.assert_close(mountaincar_energy(torch.tensor([[-np.pi / 6, 0.0], [0.45, 0.0]])), _t(0.0, 1.0))
    from drl.wrappers.shaping import cartpole_upright, distance_to_goal
    torch.testing.assert_close(cartpole_upright(torch.tensor([[2.4, 0.0, 12 * np.pi / 180, 0.0]])), _t(-2.0))
    torch.testing.assert_close(distance_to_goal(torch.tensor([[3.0, 9.0, 4.0]]), [0.0, 0.0], dims=[0, 2]), _t(-5.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_shaping_on_cuda_matches_cpu():
    """Same state, same actions: the shaped rewards on CUDA equal the CPU ones (float64 physics), on the GPU."""
    n = 64
    cpu = PotentialShaping(MountainCarContinuous(n, dtype="float64"), "mountaincar_energy", gamma=0.99)
    gpu = PotentialShaping(MountainCarContinuous(n, device="cuda", dtype="float64"), "mountaincar_energy",
                           gamma=0.99)
    cpu.reset(seed=0)
    state = cpu.unwrapped.state.clone()
    cpu.reset(options={"state": state})
    gpu.reset(options={"state": state.cuda()})
    actions = torch.linspace(-1, 1, n)[:, None]
    for _ in range(20):
        _, r_c, *_ = cpu.step(actions)
        _, r_g, *_ = gpu.step(actions.cuda())
        assert r_g.device.type == "cuda" and gpu.phi.device.type == "cuda"
        torch.testing.assert_close(r_g.cpu(), r_c, rtol=1e-5, atol=1e-5)


def test_potential_that_does_not_fit_the_obs_group_is_one_config_error():
    from drl.wrappers import wrap_env
    from envs import make_vec_env

    env = make_vec_env("drl/CartPoleNoVel-v0", 2)  # "policy" holds 2 values; cartpole_upright reads 4
    with pytest.raises(ConfigError, match=r"potential 'cartpole_upright' does not fit obs group 'policy' \(2 values"):
        wrap_env(env, [{"name": "potential_shaping", "potential": "cartpole_upright"}])
    wrapped = wrap_env(env, [{"name": "potential_shaping", "potential": "cartpole_upright", "group": "critic"}])
    assert wrapped.phi.shape == (2,)
