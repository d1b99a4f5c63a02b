"""SubPO (drl.agents.subpo): the REINFORCE advantages against hand values, GAE = PPO's, config checks, and a
seeded run where SubPO covers more than the modular-RL baseline."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl import api
from drl.agents.ppo import PPO, PPOConfig
from drl.agents.subpo import SubPO, SubPOConfig
from drl.checkpoint import load_checkpoint
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.registry import resolve_config
from drl.storage import RolloutBuffer

CPU = torch.device("cpu")


def _agent(cls=SubPO, cfg=None, num_envs: int = 2, value: float = 0.0):
    cfg = cfg or SubPOConfig(num_steps=3, gamma=0.5, compile=False, numba_actor=False)
    space = gym.spaces.Box(-np.ones(3, np.float32), np.ones(3, np.float32))
    agent = cls(space, gym.spaces.Discrete(5), cfg, num_envs, CPU, torch.Generator().manual_seed(0))
    critic_out = agent.model.critic[-1]
    with torch.no_grad():  # V = value everywhere
        critic_out.weight.zero_()
        critic_out.bias.fill_(value)
    return agent


def _storage(agent, rewards, terminated, truncated) -> RolloutBuffer:
    steps, n = rewards.shape
    buf = RolloutBuffer(steps, n, agent.storage_fields(), CPU)
    gen = torch.Generator().manual_seed(1)
    for t in range(steps):
        obs = torch.rand(n, 3, generator=gen)
        _, record = agent.act(obs)
        buf.add(agent.record_outcome(record, rewards[t], terminated[t], truncated[t], obs))
    return buf


REWARDS = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])


def test_reinforce_returns_and_baselines_by_hand():
    c, g = 10.0, 0.5
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[True, False], [False, False], [False, False]])
    agent = _agent(value=c)
    values, advantages, returns = agent.compute_returns(_storage(agent, REWARDS, terminated, truncated))
    env1_2 = 6 + g * c  # still running at the rollout's end: bootstraps
    expected = torch.tensor([[1 + g * c, 2 + g * (4 + g * env1_2)],  # env 0 truncated at t=0: bootstraps
                             [3.0, 4 + g * env1_2],  # env 0 terminated at t=1
                             [5 + g * c, env1_2]])
    torch.testing.assert_close(returns, expected)
    torch.testing.assert_close(values, torch.full((3, 2), c))
    torch.testing.assert_close(advantages, expected - c)
    mean_agent = _agent(cfg=SubPOConfig(num_steps=3, gamma=0.5, baseline="batch_mean", compile=False,
                                        numba_actor=False), value=c)
    _, advantages, _ = mean_agent.compute_returns(_storage(mean_agent, REWARDS, terminated, truncated))
    torch.testing.assert_close(advantages, expected - expected.mean(1, keepdim=True))


def test_gae_estimator_is_ppos():
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.zeros(3, 2, dtype=torch.bool)
    kw = {"num_steps": 3, "gamma": 0.9, "gae_lambda": 0.8, "compile": False, "numba_actor": False}
    sub = _agent(cfg=SubPOConfig(estimator="gae", **kw))
    ppo = _agent(PPO, cfg=PPOConfig(minibatch_size=6, **kw))
    ppo.model.load_state_dict(sub.model.state_dict())
    storage = _storage(sub, REWARDS, terminated, truncated)
    for mine, theirs in zip(sub.compute_returns(storage), ppo.compute_returns(storage), strict=True):
        torch.testing.assert_close(mine, theirs)


def test_config_defaults_and_errors():
    cfg = api.load_config("subpo", "drl/CoverageGrid-v0", overrides={"env": {"num_envs": 8}})  # the tuned file
    assert cfg.env.id == "drl/CoverageGrid-v0" and [w["name"] for w in cfg.wrappers] == ["submodular", "coverage_obs"]
    assert cfg.algo.minibatch_size == 0 and cfg.algo.resolved(8).minibatch_size == 320 and cfg.algo.gamma == 1.0
    assert resolve_config({"agent": "subpo"}).wrappers == [{"name": "submodular"}, {"name": "coverage_obs"}]
    for algo, key in (({"estimator": "vtrace"}, "algo.estimator"), ({"baseline": "none"}, "algo.baseline"),
                      ({"minibatch_size": -1}, "algo.minibatch_size"), ({"rnn_type": "gru"}, "algo.rnn_type"),
                      ({"minibatch_size": 7}, "algo.minibatch_size")):
        with pytest.raises(ConfigError, match=f"config key '{key}'"):
            resolve_config({"agent": "subpo", "algo": algo})


def test_a_reward_free_env_without_a_reward_wrapper_is_refused(tmp_path):
    """The coverage tasks' own reward is 0: training on them without a wrapper that gives a reward (here only the
    observation wrapper) is one ConfigError, before any run folder is written; with the reward wrapper it trains."""
    for agent in ("subpo", "ppo"):
        cfg = resolve_config({"agent": agent, "env": {"id": "drl/CoverageGrid-v0", "num_envs": 2},
                              "wrappers": [{"name": "coverage_obs"}], "total_steps": 64, "progress": False})
        with pytest.raises(ConfigError, match=r"config key 'env.id': drl/CoverageGrid-v0 has no reward of its own"):
            api.train(cfg, tmp_path / agent)
        assert not (tmp_path / agent).exists()
    cfg = resolve_config({"agent": "subpo", "env": {"id": "drl/CoverageGrid-v0", "num_envs": 2}, "total_steps": 80,
                          "progress": False, "eval_interval": 0, "eval_episodes": 1,
                          "algo": {"num_steps": 40, "compile": False}})
    run_dir, _ = api.train(cfg, tmp_path / "rewarded")
    assert (run_dir / "metrics.csv").exists()


def _run(tmp_path, modular: bool, seed: int) -> list[dict[str, Any]]:
    cfg = api.load_config("subpo", "drl/CoverageGrid-v0", overrides={
        "total_steps": 64 * 15 * 60, "seed": seed, "device": "cpu", "progress": False, "eval_interval": 0,
        "eval_episodes": 2, "checkpoint_interval": 0,
        "env": {"num_envs": 64, "num_eval_envs": 2, "kwargs": {"size": 10, "horizon": 15}},
        "wrappers": [{"name": "submodular", "weights": "gp", "radius": 1, "map_seed": 0, "modular": modular},
                     {"name": "coverage_obs", "map_shape": [5, 5]}],
        "algo": {"num_steps": 15, "learning_rate": 0.01, "normalize_obs": True, "actor_hidden": [32],
                 "critic_hidden": [32], "compile": False}})
    run_dir, _ = api.train(cfg, tmp_path / ("modular" if modular else "subpo"))
    return read_metrics(run_dir / "metrics.csv")


def test_subpo_covers_more_than_modular_rl(tmp_path):
    """Same F (GP-weighted coverage, 10x10 grid, horizon 15), same budget and seed: SubPO's episodes are
    worth more than the modular baseline's over the last 10 iterations, and more than its own start (seeds
    0-2 measured: SubPO 27.5-29.3, modular 15.6-16.2, SubPO's first iteration 13.5-13.9)."""
    sub, mod = _run(tmp_path, False, 0), _run(tmp_path, True, 0)

    def tail(rows):
        return float(np.mean([float(r["submodular/episode_value"]) for r in rows[-10:]]))

    first = float(sub[0]["submodular/episode_value"])
    assert tail(sub) > tail(mod) + 5.0 and tail(sub) > first + 8.0, (first, tail(sub), tail(mod))


def test_resume_is_bitwise_with_the_wrappers_episode_state(tmp_path):
    """Interrupted mid-episode (horizon 6, rollouts of 4 steps) and resumed = the uninterrupted run."""
    def cfg(total):
        return api.load_config("subpo", "drl/CoverageGrid-v0", overrides={
            "total_steps": total, "seed": 3, "device": "cpu", "progress": False, "eval_interval": 0,
            "checkpoint_interval": 32, "env": {"num_envs": 8, "num_eval_envs": 1,
                                               "kwargs": {"size": 8, "horizon": 6, "start": "random"}},
            "wrappers": [{"name": "submodular", "objective": "logdet"}, {"name": "coverage_obs", "map_shape": [2, 2]}],
            "algo": {"num_steps": 4, "actor_hidden": [8], "critic_hidden": [8], "compile": False}})
    full_dir, _ = api.train(cfg(128), tmp_path / "full")
    half_dir, _ = api.train(cfg(64), tmp_path / "half")
    api.resume(half_dir, total_steps=128)
    full, half = (load_checkpoint(d / "checkpoints" / "latest.pt") for d in (full_dir, half_dir))
    for key, value in full["agent_state"]["model"].items():
        torch.testing.assert_close(value, half["agent_state"]["model"][key], rtol=0, atol=0)
    for key, value in full["env_state"]["wrapper/submodular"]["episode"]["objective"].items():
        torch.testing.assert_close(value, half["env_state"]["wrapper/submodular"]["episode"]["objective"][key],
                                   rtol=0, atol=0)
    assert [r["submodular/episode_value"] for r in read_metrics(full_dir / "metrics.csv")] == \
        [r["submodular/episode_value"] for r in read_metrics(half_dir / "metrics.csv")]


def test_benchmark_summary_report_and_plot(tmp_path):
    """benchmarks/subpo.py on made-up runs: the verdict against seed noise, SubPO / greedy, the tables."""
    from benchmarks import subpo as bench

    config = {"file": "configs/subpo/drl-CoverageGrid-v0.yaml", "total_steps": 20, "num_envs": 2, "wrappers": []}
    runs = []
    for seed in range(3):
        for method, base in (("subpo", 29.0), ("modular", 20.0)):
            runs.append({"task": "grid-coverage", "method": method, "seed": seed, "final": base + seed,
                         "final_det": base, "train_s": 1.0, "config": config,
                         "curve": [{"step": 10, "value": base}, {"step": 20, "value": base + 1}]})
        runs.append({"task": "grid-coverage", "method": "greedy", "seed": seed, "final": 40.0})
    runs.append({"task": "grid-coverage", "method": "modular", "seed": 3, "error": "RuntimeError: boom"})
    meta = {"date": "2026-12-01", "command": "python -m benchmarks.subpo", "seeds": 3, "device": "cpu",
            "episodes": 8, "throughput_envs": 16, "load_start": 0.0, "load_end": 0.0, "elapsed_s": 1.0,
            "machine": {"cpu": "cpu", "usable_cores": 1, "gpu": []}, "versions": {"torch": torch.__version__}}
    results = {"meta": meta, "runs": runs, "summary": bench.summarise(runs, bench.TASKS[:1]),
               "throughput": {"grid-coverage": {"env": 1e6, "submodular": 2e5, "submodular+coverage_obs": 1e5}}}
    by = {s["variant"]: s for s in results["summary"]}
    assert by["subpo"]["final_mean"] == 30.0 and by["modular"]["seeds"] == 3 and by["modular"]["errors"] == 1
    report = bench.write_report(results, tmp_path).read_text()
    assert "- grid-coverage: SubPO beats modular RL: 30.0 vs 21.0: yes; SubPO / greedy = 0.75" in report
    assert "| grid-coverage | greedy | 40.0 +- 0.0 | - | - |" in report
    assert "| grid-coverage | 1,000,000 | 200,000 | 100,000 |" in report
    assert "grid-coverage modular seed 3 failed: `RuntimeError: boom`" in report
    assert bench.write_plot(results, tmp_path).read_bytes()[:4] == b"\x89PNG"
    assert bench.main(["--dry-run", "--only", "pointmass"]) == 0
