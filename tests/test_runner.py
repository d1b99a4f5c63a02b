"""Run folder, checkpoints, save/load, resume after an interrupt, determinism."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drl import api
from drl.checkpoint import load_checkpoint
from drl.logging import CSV_COLUMNS, TIMING_COLUMNS

TINY = {"total_steps": 2048, "progress": False, "device": "cpu", "eval_interval": 1024, "eval_episodes": 2,
        "env": {"num_envs": 4, "num_eval_envs": 2}, "algo": {"num_steps": 64, "minibatch_size": 64, "num_epochs": 2}}


def _tiny_cfg(env_id: str = "CartPole-v1", **extra):
    from drl.config import merge

    return api.load_config("ppo", env_id, overrides=merge(TINY, extra))


def _learning_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_run_folder_contents(tmp_path):
    run_dir, summary = api.train(_tiny_cfg(), tmp_path / "run")
    for name in ("config.yaml", "metrics.csv", "summary.json", "curve.png", "checkpoints/latest.pt",
                 "checkpoints/best.pt"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert set(summary) >= {"agent", "env", "steps", "wall_s", "sps", "final_eval_return", "best_eval_return"}
    assert summary["steps"] == 2048 and summary["agent"] == "ppo" and summary["env"] == "CartPole-v1"
    assert summary["best_eval_return"] >= summary["final_eval_return"]
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == CSV_COLUMNS
    assert [int(r["global_step"]) for r in rows] == [256 * i for i in range(1, 9)]
    evaluated = [int(r["global_step"]) for r in rows if r["eval_return"]]
    assert evaluated == [1024, 2048]


def test_same_seed_same_metrics(tmp_path):
    """Same seed, same device, CPU -> identical learning columns of metrics.csv."""
    api.train(_tiny_cfg(), tmp_path / "a")
    api.train(_tiny_cfg(), tmp_path / "b")
    api.train(_tiny_cfg(seed=1), tmp_path / "c")
    assert _learning_rows(tmp_path / "a") == _learning_rows(tmp_path / "b")
    assert _learning_rows(tmp_path / "a") != _learning_rows(tmp_path / "c")


def test_save_load_gives_identical_actions(tmp_path):
    cfg = _tiny_cfg("Pendulum-v1", algo={"normalize_obs": True, "normalize_reward": True})
    run_dir, _ = api.train(cfg, tmp_path / "run")
    from drl.runners.on_policy import OnPolicyRunner

    # the in-memory agent at the end of training vs the agent rebuilt from its checkpoint
    runner = OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, run_dir, resume=True)
    restored, _ = api.load_agent(run_dir, checkpoint="latest")
    obs = torch.randn(32, 3) * 3
    a1, _ = runner.agent.act(obs, deterministic=True, update_stats=False)
    a2, _ = restored.act(obs, deterministic=True, update_stats=False)
    assert torch.equal(a1, a2)
    # the normaliser statistics travelled with the checkpoint (they are not at their init values)
    stats = restored.obs_normalizers["policy"]
    assert stats.count > 1000 and not torch.allclose(stats.mean, torch.zeros(3, dtype=torch.float64))
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert {"agent_state", "runner", "rng", "config", "generator"} <= set(ckpt)
    assert set(ckpt["agent_state"]) == {"model", "optimizer", "obs_normalizers", "reward_scaler"}


def test_resume_continues_to_total_steps(tmp_path):
    """A run stopped part-way (a shorter first leg) resumes to the total steps it was started with."""
    from drl.runners.on_policy import OnPolicyRunner

    cfg = _tiny_cfg()
    run_dir = tmp_path / "run"
    runner = OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, run_dir)
    runner._stop_signal = None
    runner.num_iterations = 3  # stop early, as an interrupt after iteration 3 would
    runner.train()
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["runner"]["global_step"] == 768
    summary = api.resume(run_dir)
    assert summary["steps"] == 2048
    rows = _learning_rows(run_dir)
    assert [int(r["global_step"]) for r in rows] == [256 * i for i in range(1, 9)]


def test_existing_run_folder_is_not_overwritten(tmp_path):
    run_dir, _ = api.train(_tiny_cfg(), tmp_path / "run")
    before = (run_dir / "metrics.csv").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        api.train(_tiny_cfg(), run_dir)
    assert (run_dir / "metrics.csv").read_bytes() == before


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_checkpoint_and_resume_finishes(tmp_path, sig):
    """SIGINT/SIGTERM mid-run: exit 130/143 with a checkpoint and the resume command; --resume then finishes."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "drl.cli", "train", "ppo", "--env", "CartPole-v1", "--steps", "12000",
           "--run-dir", str(run_dir), "--no-progress", "--device", "cpu", "--set", "eval_interval=0",
           "--set", "algo.num_steps=32", "--set", "env.num_envs=4", "--set", "algo.minibatch_size=128",
           "--set", "algo.num_epochs=1", "--set", "checkpoint_interval=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    metrics = run_dir / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or metrics.read_text().count("\n") < 4):
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err.decode()  # 130 SIGINT, 143 SIGTERM: the shell convention
    assert f"with: drl train --resume {run_dir}\n" in err.decode()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["interrupted_by"] == signal.Signals(sig).name
    stopped_at = summary["steps"]
    assert 0 < stopped_at < 12_000 and stopped_at % 128 == 0
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["runner"]["global_step"] == stopped_at
    resumed = subprocess.run([sys.executable, "-m", "drl.cli", "train", "--resume", str(run_dir)],
                             capture_output=True, env=env, timeout=300, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 12_032 and summary["interrupted"] is False  # ceil(12000 / 128) * 128
    steps = [int(r["global_step"]) for r in _learning_rows(run_dir)]
    assert steps == list(range(128, 12_033, 128))  # no iteration lost or repeated across the interrupt


def test_episode_tracker_matches_step_by_step_bookkeeping():
    """The once-per-rollout episode statistics equal a plain per-step loop, across rollouts."""
    from drl.runners.on_policy import EpisodeTracker

    gen = torch.Generator().manual_seed(0)
    num_envs, num_steps = 5, 17
    tracker = EpisodeTracker(num_envs, torch.device("cpu"))
    running_return = [0.0] * num_envs
    running_length = [0] * num_envs
    for _ in range(4):
        rewards = torch.randn(num_steps, num_envs, generator=gen)
        done = torch.rand(num_steps, num_envs, generator=gen) < 0.15
        finished_returns, finished_lengths = [], []
        for t in range(num_steps):
            for n in range(num_envs):
                running_return[n] += float(rewards[t, n])
                running_length[n] += 1
                if done[t, n]:
                    finished_returns.append(running_return[n])
                    finished_lengths.append(running_length[n])
                    running_return[n], running_length[n] = 0.0, 0
        mean_return, mean_length, count = tracker.update(rewards, done)
        assert count == len(finished_returns)
        if count:
            assert mean_return == pytest.approx(sum(finished_returns) / count, rel=1e-9, abs=1e-9)
            assert mean_length == pytest.approx(sum(finished_lengths) / count)
        else:
            assert math.isnan(mean_return) and math.isnan(mean_length)


def test_episode_tracker_long_episode_spanning_rollouts():
    from drl.runners.on_policy import EpisodeTracker

    tracker = EpisodeTracker(1, torch.device("cpu"))
    assert tracker.update(torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.bool))[2] == 0
    done = torch.tensor([[False], [True], [False]])
    assert tracker.update(torch.full((3, 1), 2.0), done) == (8.0, 6.0, 1)  # 4 * 1 + 2 * 2 over 6 steps


@pytest.mark.parametrize(
    "env_id, module, algo",
    [
        ("drl/HalfCheetah-v0", "mujoco_warp", {}),
        ("drl/PandaReach-v0", "pybullet", {"critic_obs": "critic"}),  # privileged critic on the real groups
        ("drl/Acrobot-v0", "torch", {}),
    ],
)
def test_ppo_trains_on_every_backend(tmp_path, env_id, module, algo):
    pytest.importorskip(module)
    cfg = api.load_config("ppo", env_id, overrides={
        "total_steps": 256, "progress": False, "device": "cpu", "eval_episodes": 2,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 32, "minibatch_size": 64, "num_epochs": 1, **algo}})
    cfg.env.kwargs = {"max_episode_steps": 20}  # keep evaluation episodes short
    run_dir, summary = api.train(cfg, tmp_path / "run")
    assert summary["steps"] == 256 and summary["final_eval_return"] is not None
    restored, _ = api.load_agent(run_dir)
    assert restored.cfg.critic_obs == algo.get("critic_obs", "policy")
