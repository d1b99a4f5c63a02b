"""rsl_rl as a benchmark peer (benchmarks/harness/rslrl_side.py): the VecEnv adapter's step semantics against
the drl env step for step, the hyperparameter mapping, and a tiny end-to-end run of the drl vs rsl_rl suite."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import pytest
import torch

pytest.importorskip("rsl_rl.runners", reason="rsl-rl-lib is not installed (pip install 'drl[bench]')")

from benchmarks.harness.rslrl_side import RslRlVecEnv, rslrl_train_cfg  # noqa: E402
from envs import make_vec_env  # noqa: E402


def test_adapter_matches_the_drl_env_step_for_step():
    """Same seed, same actions: obs, reward, dones and time_outs are the drl env's, through truncations."""
    kwargs = {"max_episode_steps": 7}
    plain = make_vec_env("drl/Pendulum-v0", 5, env_kwargs=kwargs)
    adapter = RslRlVecEnv(make_vec_env("drl/Pendulum-v0", 5, env_kwargs=kwargs), seed=3)
    from rsl_rl.env import VecEnv

    assert isinstance(adapter, VecEnv)
    assert (adapter.num_envs, adapter.num_actions, adapter.max_episode_length) == (5, 1, 7)
    obs, _ = plain.reset(seed=3)
    first = adapter.get_observations()
    assert list(first.keys()) == ["policy"] and first.batch_size == torch.Size([5])
    torch.testing.assert_close(first["policy"], obs, rtol=0, atol=0)
    assert adapter.get_observations() is first  # no second reset
    generator = torch.Generator().manual_seed(0)
    truncations = 0
    for _ in range(16):
        actions = torch.rand(5, 1, generator=generator) * 4 - 2
        obs, reward, terminated, truncated, _ = plain.step(actions)
        a_obs, a_reward, dones, extras = adapter.step(actions)
        torch.testing.assert_close(a_obs["policy"], obs, rtol=0, atol=0)
        torch.testing.assert_close(a_reward, reward, rtol=0, atol=0)
        assert dones.dtype == torch.long and torch.equal(dones, (terminated | truncated).long())
        assert torch.equal(extras["time_outs"], truncated & ~terminated)
        truncations += int(truncated.sum())
    assert truncations == 10  # every env truncated at steps 7 and 14


class _Scripted(gym.vector.VectorEnv):
    """3 envs, reward = env index + 1 each step; env 0 terminates at step 2, env 1 truncates at step 3,
    env 2 terminates and truncates together at step 3 (then every episode restarts)."""

    def __init__(self) -> None:
        self.num_envs = 3
        self.device = torch.device("cpu")
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (2,))
        self.max_episode_steps = 3
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        return torch.zeros(3, 4), {}

    def step(self, actions: torch.Tensor) -> tuple:
        self.t += 1
        terminated = torch.tensor([self.t == 2, False, self.t == 3])
        truncated = torch.tensor([False, self.t == 3, self.t == 3])
        return torch.full((3, 4), float(self.t)), torch.tensor([1.0, 2.0, 3.0]), terminated, truncated, {}


def test_adapter_time_outs_and_episode_returns_by_hand():
    adapter = RslRlVecEnv(_Scripted(), seed=0)
    adapter.get_observations()
    done_rows, timeout_rows = [], []
    for _ in range(3):
        _, _, dones, extras = adapter.step(torch.zeros(3, 2))
        done_rows.append(dones.tolist())
        timeout_rows.append(extras["time_outs"].tolist())
    assert done_rows == [[0, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert timeout_rows == [[False, False, False], [False, False, False], [False, True, False]]
    # finished: env 0 after 2 steps (2.0), env 1 after 3 (6.0), env 2 after 3 (9.0); env 0's second episode runs on
    assert adapter.pop_episode_stats() == pytest.approx((17.0 / 3, 3))
    mean, count = adapter.pop_episode_stats()
    assert math.isnan(mean) and count == 0


def test_adapter_refuses_a_discrete_action_space():
    with pytest.raises(ValueError, match="no distribution for a Discrete action space"):
        RslRlVecEnv(make_vec_env("drl/CartPole-v0", 2), seed=0)


def test_train_cfg_carries_drls_values_under_rsl_rl_names():
    from benchmarks.harness.sides import drl_config
    from benchmarks.harness.suites import SUITES

    row = next(r for r in SUITES["rslrl"].rows if r.name == "pendulum-1024env-rslrl")
    cfg = drl_config(row, row.variants[0], 0)
    assert (cfg.env.num_envs, cfg.algo.num_steps, cfg.algo.minibatch_size) == (1024, 32, 8192)
    assert (cfg.algo.anneal_lr, cfg.algo.normalize_obs, cfg.algo.normalize_reward) == (False, False, False)
    train_cfg = rslrl_train_cfg(cfg)
    alg = train_cfg["algorithm"]
    assert train_cfg["num_steps_per_env"] == 32
    assert (alg["num_learning_epochs"], alg["num_mini_batches"]) == (5, 4)
    assert (alg["learning_rate"], alg["schedule"], alg["desired_kl"]) == (1e-3, "fixed", None)
    assert (alg["gamma"], alg["lam"], alg["clip_param"]) == (0.95, 0.9, 0.2)
    assert (alg["value_loss_coef"], alg["entropy_coef"], alg["max_grad_norm"]) == (0.5, 0.0, 0.5)
    assert alg["use_clipped_value_loss"] is False and alg["normalize_advantage_per_mini_batch"] is True
    for name in ("actor", "critic"):
        model = train_cfg[name]
        assert (model["hidden_dims"], model["activation"], model["obs_normalization"]) == ([64, 64], "tanh", False)
    assert train_cfg["actor"]["distribution_cfg"] == {"class_name": "GaussianDistribution", "init_std": 1.0,
                                                      "std_type": "log"}
    cfg.algo.anneal_lr = True
    cfg.algo.target_kl = 0.02
    with pytest.raises(ValueError, match=r"no rsl_rl PPO equivalent: \['anneal_lr', 'target_kl'\]"):
        rslrl_train_cfg(cfg)
    cfg.algo.anneal_lr, cfg.algo.target_kl = False, None
    cfg.algo.clip_grad_per_network, cfg.algo.adam_eps, cfg.algo.init = False, 1e-5, "orthogonal"  # drl's defaults
    with pytest.raises(ValueError, match=r"\['clip_grad_per_network', 'adam_eps', 'init'\]"):
        rslrl_train_cfg(cfg)


def test_tiny_suite_end_to_end_produces_a_row(tmp_path):
    from benchmarks.run import main

    assert main(["--suite", "rslrl-tiny", "--device", "cpu", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    runs = {r["lib"]: r for r in results["runs"]}
    assert set(runs) == {"drl", "rslrl"} and not any("error" in r for r in runs.values())
    assert runs["drl"]["steps"] == runs["rslrl"]["steps"] == 2 * 32 * 64  # equal env steps, 2 iterations
    assert runs["rslrl"]["curve"]["step"] == [2048, 4096]
    assert runs["rslrl"]["final_eval"]["episodes"] == runs["drl"]["final_eval"]["episodes"] == 2
    (comp,) = results["comparisons"]["batched"]
    assert comp["peer"] == "rslrl" and comp["per_seed"][0]["seed"] == 0
    ratio = comp["per_seed"][0]["ratio"]
    assert ratio == pytest.approx(runs["drl"]["sps"] / runs["rslrl"]["sps"])
    report = (tmp_path / "report.md").read_text()
    assert "## 5. Batched envs: drl vs rsl_rl" in report and "## 1. Training throughput" not in report
    assert f"{ratio:.2f}x" in report


def test_cuda_rows_without_cuda_say_why_they_were_skipped(monkeypatch):
    from benchmarks.harness.analysis import compare
    from benchmarks.harness.suites import BATCHED_CUDA_TARGET_RATIO, BATCHED_TARGET_RATIO, SUITES
    from benchmarks.run import parse_args, plan

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    suite = SUITES["rslrl"]
    targets = {r.name: r.target_ratio for r in suite.rows}
    assert targets == {"pendulum-1024env-rslrl": BATCHED_TARGET_RATIO, "pendulum-4096env-rslrl": BATCHED_TARGET_RATIO,
                       "halfcheetah-1024env-rslrl": BATCHED_TARGET_RATIO,
                       "halfcheetah-4096env-rslrl": BATCHED_TARGET_RATIO,
                       "pendulum-4096env-rslrl-cuda": BATCHED_CUDA_TARGET_RATIO,
                       "pendulum-65536env-rslrl-cuda": BATCHED_CUDA_TARGET_RATIO,
                       "halfcheetah-4096env-rslrl-cuda": BATCHED_CUDA_TARGET_RATIO}
    args = parse_args(["--suite", "rslrl"])  # the real CLI defaults, so a new flag cannot be missing here
    rows, runs, _ = plan(suite, args)
    assert {v.device for _, v, _ in runs} == {"cpu"} and len(runs) == 4 * 3 * 2
    status = {c["row"]: c["status"] for c in compare(rows, [])["batched"]}
    assert status["pendulum-65536env-rslrl-cuda"] == "skipped: no CUDA device on this machine"
    assert status["pendulum-1024env-rslrl"] == "ok"
