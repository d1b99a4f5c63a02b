"""PPO learns the classic tasks within a fixed, seeded step budget (gymnasium's CPU envs)."""

from __future__ import annotations

import pytest

from drl import api


def _train(tmp_path, env_id: str, steps: int, **overrides):
    cfg = api.load_config("ppo", env_id, overrides={"total_steps": steps, "progress": False, "seed": 0,
                                                    "device": "cpu", **overrides})
    _, summary = api.train(cfg, tmp_path / "run")
    return summary


def test_ppo_solves_cartpole(tmp_path):
    summary = _train(tmp_path, "CartPole-v1", 40_000, eval_interval=10_000)
    assert summary["best_eval_return"] >= 475.0, summary


def test_ppo_solves_pendulum(tmp_path):
    summary = _train(tmp_path, "Pendulum-v1", 80_000, eval_interval=10_000)
    assert summary["best_eval_return"] >= -250.0, summary


@pytest.mark.parametrize("squash,state_dependent", [(True, False), (False, True)])
def test_ppo_continuous_variants_improve_on_pendulum(tmp_path, squash, state_dependent):
    """tanh-squashed and state-dependent-std policies learn too (a random policy scores about -1200)."""
    summary = _train(tmp_path, "Pendulum-v1", 40_000, eval_interval=20_000,
                     algo={"squash_actions": squash, "state_dependent_std": state_dependent})
    assert summary["best_eval_return"] >= -700.0, summary


def test_ppo_solves_torch_cartpole_with_256_envs(tmp_path):
    """The torch-batched CartPole (drl/CartPole-v0), its tuned config at 256 envs."""
    summary = _train(tmp_path, "drl/CartPole-v0", 150_000, eval_interval=16_384, env={"num_envs": 256})
    assert summary["best_eval_return"] >= 475.0, summary


def test_ppo_solves_torch_pendulum(tmp_path):
    summary = _train(tmp_path, "drl/Pendulum-v0", 120_000, eval_interval=20_000)
    assert summary["best_eval_return"] >= -250.0, summary
