"""Guards: non-finite values, failing envs and unwritable run folders stop a run with one line.

A tiny gymnasium env misbehaves in one chosen copy at one chosen step; the error must name that
copy, the rollout step and the global step, the CLI must exit with the documented code, and no
non-finite or half-done state may be written over a good checkpoint.
"""

from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from drl import api
from drl.agents.ppo import PPO
from drl.checkpoint import load_checkpoint, save_checkpoint
from drl.cli import main
from drl.config import merge
from drl.guards import (
    EXIT_ENV_ERROR,
    EXIT_NON_FINITE,
    EXIT_WRITE_ERROR,
    EnvStepError,
    NonFiniteError,
    RunWriteError,
    atomic_write_text,
    check_update,
    first_non_finite,
)
from drl.nn.heads import GaussianHead
from drl.runners.on_policy import OnPolicyRunner

FAULTY_ID = "FaultyTest-v0"


class FaultyEnv(gym.Env):
    """3-d obs, one Box or Discrete(2) action, reward 1, truncated after ``episode_length`` steps.

    Its index among the vector env's copies is read from the reset seed (``seed_base + index``,
    as the adapter seeds copy i with ``seed + i``). Copy ``bad_index`` misbehaves on its
    ``at_step``-th step (1-based, counted over episodes): ``fault`` is ``"reward"`` (NaN reward),
    ``"obs"`` (NaN in the obs), ``"raise"`` (step raises ValueError) or ``"none"``.
    """

    def __init__(self, fault: str = "none", bad_index: int = 3, at_step: int = 13, discrete: bool = False,
                 seed_base: int = 0, episode_length: int = 20):
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Discrete(2) if discrete else gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.fault, self.bad_index, self.at_step = fault, bad_index, at_step
        self.seed_base, self.episode_length = seed_base, episode_length
        self.index = -1
        self.count = 0
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([math.sin(self.t), math.cos(self.t), 0.1], np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self.index = seed - self.seed_base
        self.t = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.count += 1
        self.t += 1
        obs, reward = self._obs(), 1.0
        if self.index == self.bad_index and self.count == self.at_step:
            if self.fault == "reward":
                reward = float("nan")
            elif self.fault == "obs":
                obs[1] = np.nan
            elif self.fault == "raise":
                raise ValueError("simulated solver failure\nsecond line of the message")
        return obs, reward, False, self.t >= self.episode_length, {}


if FAULTY_ID not in gym.registry:
    gym.register(FAULTY_ID, entry_point=FaultyEnv, disable_env_checker=True)

# 4 envs x 8 steps = 32 steps per iteration; copy 3's 13th step is iteration 2, rollout step t=4,
# and the global step counted like metrics.csv is 32 + (4 + 1) * 4 = 52
NUM_ENVS, NUM_STEPS = 4, 8
FAULT_T, FAULT_ITERATION, FAULT_GLOBAL_STEP = 4, 2, 52
BASE = {"total_steps": 4 * NUM_ENVS * NUM_STEPS, "progress": False, "device": "cpu", "eval_interval": 0,
        "eval_episodes": 2, "checkpoint_interval": 0,
        "env": {"id": FAULTY_ID, "num_envs": NUM_ENVS, "num_eval_envs": 2},
        "algo": {"num_steps": NUM_STEPS, "minibatch_size": 32, "num_epochs": 1, "compile": False,
                 "numba_actor": False}}


def _cfg(fault: str, **extra: Any):
    kwargs = {"fault": fault, "bad_index": 3, "at_step": 13, **extra.pop("env_kwargs", {})}
    return api.load_config(overrides=merge(BASE, merge({"env": {"kwargs": kwargs}}, extra)))


def _config_file(tmp_path: Path, fault: str, **extra: Any) -> Path:
    raw = merge(BASE, merge({"agent": "ppo", "env": {"kwargs": {"fault": fault, "bad_index": 3, "at_step": 13}}},
                            extra))
    path = tmp_path / "faulty.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


# --- item 6: non-finite rewards and observations ----------------------------------------------------
@pytest.mark.parametrize("normalize_reward", [False, True])
def test_nan_reward_names_reward_env_and_step_and_exits_3(tmp_path, capsys, normalize_reward):
    run_dir = tmp_path / "run"
    config = _config_file(tmp_path, "reward", algo={"normalize_reward": normalize_reward})
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == EXIT_NON_FINITE == 3
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("drl train: error: non-finite reward (nan) from env 3 at rollout step t=4, "
                           "iteration 2, global_step 52; stopped before the update; ")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["error_type"] == "NonFiniteError" and line.endswith(summary["error"])
    assert summary["steps"] == 32  # the last completed iteration
    assert not (run_dir / "checkpoints" / "latest.pt").exists()  # checkpoint_interval 0: none yet, none made
    # the emergency checkpoint is the state at the end of the last completed iteration: finite even
    # when the reward scaler's running return of env 3 has since become NaN
    emergency = run_dir / "checkpoints" / "emergency.pt"
    assert summary["emergency_checkpoint"] == str(emergency)
    ckpt = load_checkpoint(emergency)
    assert ckpt["runner"]["global_step"] == 32 and ckpt["runner"]["iteration"] == 1


@pytest.mark.parametrize(("discrete", "normalize_obs"), [(False, False), (True, False), (False, True)])
def test_nan_obs_names_obs_env_and_step(tmp_path, discrete, normalize_obs):
    """Box actions reach the end of the rollout; with Discrete(2) the NaN logits make the next
    act() raise inside torch.multinomial, and the guard still names the obs; obs normalisation
    would spread the NaN to every env one step later, so the earliest step is the one named."""
    cfg = _cfg("obs", env_kwargs={"discrete": discrete}, algo={"normalize_obs": normalize_obs})
    with pytest.raises(NonFiniteError) as info:
        api.train(cfg, tmp_path / "run")
    err = info.value
    assert (err.quantity, err.value, err.env_index, err.t, err.iteration, err.global_step) == (
        "final_obs/policy", "nan", 3, FAULT_T, FAULT_ITERATION, FAULT_GLOBAL_STEP)
    assert str(err).startswith("non-finite final_obs/policy (nan) from env 3 at rollout step t=4, iteration 2, "
                               "global_step 52; ")
    if discrete:
        assert "then RuntimeError: probability tensor contains" in str(err)


def test_first_non_finite_finds_earliest_step_then_lowest_env():
    x = torch.zeros(5, 4, 2)
    x[3, 1, 0] = float("inf")
    x[2, 3, 1] = float("nan")
    x[2, 2, 0] = -float("inf")
    assert first_non_finite(x) == ((2, 2, 0), -math.inf)
    assert first_non_finite(torch.zeros(3, 2)) is None


# --- item 6: divergence -----------------------------------------------------------------------------
def test_huge_learning_rate_stops_and_keeps_last_good_checkpoint(tmp_path):
    """lr 1e30 from iteration 3 on: the update diverges; latest.pt stays the one written after iteration 2."""
    cfg = api.load_config("ppo", "drl/Pendulum-v0", overrides={
        "total_steps": 6 * 64, "progress": False, "device": "cpu", "eval_interval": 0, "eval_episodes": 2,
        "checkpoint_interval": 64, "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 16, "num_epochs": 2, "compile": False, "numba_actor": False}})
    runner = OnPolicyRunner(cfg, PPO, tmp_path / "run")
    latest = tmp_path / "run" / "checkpoints" / "latest.pt"
    update, seen = runner.agent.update, {}

    def update_with_huge_lr_from_iteration_3(storage, progress=0.0):
        if runner.state["iteration"] == 2:
            seen["bytes"] = latest.read_bytes()  # the last good checkpoint (after iteration 2)
            seen["state"] = {k: v.clone() for k, v in runner.agent.model.state_dict().items()}
            runner.agent.cfg.learning_rate = 1e30
        return update(storage, progress)

    runner.agent.update = update_with_huge_lr_from_iteration_3
    with pytest.raises(NonFiniteError) as info:
        runner.train()
    err = info.value
    assert (err.iteration, err.global_step) == (3, 3 * 64)
    assert err.quantity.startswith("loss ") and "non-finite agent state tensors: model." in str(err)
    assert "\n" not in str(err)
    assert latest.read_bytes() == seen["bytes"]
    ckpt = load_checkpoint(latest)
    assert ckpt["runner"]["global_step"] == 128
    for name, value in ckpt["agent_state"]["model"].items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, seen["state"][name]), name
    assert not list(latest.parent.glob("*.tmp"))
    # the diverged agent is never written: the emergency checkpoint is the state after iteration 2
    emergency = load_checkpoint(latest.parent / "emergency.pt")
    assert emergency["runner"]["global_step"] == 128
    for name, value in emergency["agent_state"]["model"].items():
        assert torch.equal(value, seen["state"][name]), name
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["error_type"] == "NonFiniteError"
    assert summary["emergency_checkpoint"] == str(latest.parent / "emergency.pt")


def test_check_update_names_loss_then_grad_then_parameter():
    finite_state = {"model": {"w": torch.ones(2)}}
    check_update({"policy_loss": 0.5, "explained_variance": float("nan")}, finite_state, 64, 1)  # NaN allowed there
    with pytest.raises(NonFiniteError) as info:
        check_update({"policy_loss": 0.5, "value_loss": float("inf"), "grad_norm": float("nan")}, finite_state, 64, 1)
    assert (info.value.quantity, info.value.value) == ("loss value_loss", "inf")
    with pytest.raises(NonFiniteError) as info:
        check_update({"grad_norm": float("nan")}, finite_state, 64, 1)
    assert info.value.quantity == "grad_norm"
    with pytest.raises(NonFiniteError) as info:
        check_update({"policy_loss": 0.5}, {"model": {"w": torch.ones(2), "b": torch.tensor([0.0, -math.inf])}}, 64, 1)
    assert (info.value.quantity, info.value.value) == ("parameter model.b", "-inf")


def test_train_step_returns_grad_norm():
    """loss = (w x - y)^2 with w = 2, x = 1, y = 0: dloss/dw = 2 (w x - y) x = 4 (before clipping)."""
    from drl.optim import TrainStep

    net = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(2.0)
    step = TrainStep(net, lambda mb: {"loss": (net(mb) - 0.0).square().sum()}, learning_rate=1e-3, max_grad_norm=0.5)
    assert step(torch.ones(1, 1))["grad_norm"].item() == 4.0
    assert math.isnan(step(torch.full((1, 1), float("nan")))["grad_norm"].item())


def test_save_checkpoint_refuses_non_finite_state_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"agent_state": {"w": torch.ones(3)}, "runner": {"best": -math.inf}})  # floats: not checked
    before = path.read_bytes()
    with pytest.raises(NonFiniteError, match=r"checkpoint entry agent_state\.w \(nan\).*refusing to write"):
        save_checkpoint(path, {"agent_state": {"w": torch.tensor([1.0, float("nan"), 0.0])}})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


# --- item 6: the free log-std is clamped ------------------------------------------------------------
def _head_at_log_std(log_std: float) -> GaussianHead:
    head = GaussianHead(2, torch.tensor([-1.0]), torch.tensor([1.0]))
    with torch.no_grad():
        head.mean.weight.zero_()
        head.mean.bias.fill_(0.5)
        head.log_std.fill_(log_std)
    return head


def test_free_log_std_is_clamped_to_minus_20():
    """log_std -100 acts as -20: at the mean, log_prob = 20 - log(2 pi) / 2 = 19.0810614667...,
    entropy = -20 + 1/2 + log(2 pi) / 2 = -18.5810614667... (finite; unclamped it is NaN: 0 * e^100)."""
    head = _head_at_log_std(-100.0)
    features = torch.zeros(1, 2)
    log_prob, entropy = head.evaluate(features, torch.tensor([[0.5]]))
    assert log_prob.item() == pytest.approx(20.0 - 0.5 * math.log(2 * math.pi), abs=1e-5)
    assert entropy.item() == pytest.approx(-19.5 + 0.5 * math.log(2 * math.pi), abs=1e-5)
    (-log_prob.sum()).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    action, sample_log_prob = head.sample(features)
    assert torch.isfinite(action).all() and torch.isfinite(sample_log_prob).all()
    upper = _head_at_log_std(50.0)  # and +50 acts as +2: entropy = 2 + 1/2 + log(2 pi) / 2
    assert upper.evaluate(features, torch.tensor([[0.5]]))[1].item() == pytest.approx(
        2.5 + 0.5 * math.log(2 * math.pi), abs=1e-5)


def test_numba_actor_clamps_the_log_std_like_the_head():
    from drl.nn.mlp import make_mlp
    from drl.nn.numba_actor import NumbaGaussianActor, numba_available

    if not numba_available():
        pytest.skip("numba not installed")
    torch.manual_seed(0)
    body = make_mlp(3, [8], None, "tanh")
    head = GaussianHead(8, torch.full((2,), -1.0), torch.full((2,), 1.0))
    with torch.no_grad():
        head.log_std.copy_(torch.tensor([-100.0, 40.0]))
    obs = torch.randn(4, 3)
    _, log_prob, _ = NumbaGaussianActor(body, head).sample(obs, deterministic=True)
    expected = -(-20.0 + 2.0) - 2 * 0.5 * math.log(2 * math.pi)  # the clamped log-stds -20 and 2
    torch.testing.assert_close(log_prob, torch.full((4,), expected), rtol=0, atol=1e-4)


def test_log_std_init_outside_the_clamp_is_refused():
    with pytest.raises(ValueError, match=r"log_std_init must be in \[-20, 2\].*got 3.0"):
        GaussianHead(2, torch.tensor([-1.0]), torch.tensor([1.0]), log_std_init=3.0)


# --- item 7: an env that raises ---------------------------------------------------------------------
@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_env_step_error_names_index_step_seed_and_saves_emergency_checkpoint(tmp_path, vectorization):
    cfg = _cfg("raise", env={"vectorization": vectorization})
    runner = OnPolicyRunner(cfg, PPO, tmp_path / "run")
    with pytest.raises(EnvStepError) as info:
        runner.train()
    err = info.value
    assert (err.env_index, err.t, err.global_step, err.seed, err.call) == (3, FAULT_T, FAULT_GLOBAL_STEP, 0, "step")
    emergency = tmp_path / "run" / "checkpoints" / "emergency.pt"
    assert str(err) == (f"env 3 of '{FAULTY_ID}' raised in step() at rollout step t=4, global_step 52, seed 0: "
                        f"ValueError: simulated solver failure; emergency checkpoint {emergency} (the agent after "
                        "the update of iteration 1, global_step 32)")
    assert isinstance(err.__cause__, ValueError)
    ckpt = load_checkpoint(emergency)
    assert (ckpt["runner"]["iteration"], ckpt["runner"]["global_step"]) == (1, 32)  # not the half-done rollout
    assert ckpt["emergency"]["error_type"] == "EnvStepError"
    for name, value in runner.agent.model.state_dict().items():  # the agent as of the last update
        assert torch.equal(ckpt["agent_state"]["model"][name], value), name
    fresh = PPO(runner.env.single_observation_space, runner.env.single_action_space, cfg.algo, NUM_ENVS,
                torch.device("cpu"))
    fresh.load_state_dict(ckpt["agent_state"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["error"], summary["error_type"], summary["emergency_checkpoint"], summary["steps"]) == (
        str(err), "EnvStepError", str(emergency), 32)


def test_env_step_error_cli_one_line_exit_4(tmp_path, capsys):
    run_dir = tmp_path / "run"
    config = _config_file(tmp_path, "raise")
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir)]) == EXIT_ENV_ERROR == 4
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"drl train: error: env 3 of '{FAULTY_ID}' raised in step() at rollout step t=4, "
                           "global_step 52, seed 0: ValueError: simulated solver failure; emergency checkpoint ")
    assert (run_dir / "checkpoints" / "emergency.pt").is_file()


def test_batched_env_error_has_no_index_but_step_and_seed(tmp_path, monkeypatch):
    from envs.torch_classic.pendulum import Pendulum

    physics_step, calls = Pendulum._physics_step, []

    def failing_physics_step(self, actions):
        calls.append(1)
        if len(calls) == 11:  # the train env's 11th vector step: iteration 2 (8 steps each), t = 2
            raise RuntimeError("solver diverged")
        return physics_step(self, actions)

    monkeypatch.setattr(Pendulum, "_physics_step", failing_physics_step)
    cfg = api.load_config("ppo", "drl/Pendulum-v0", overrides=merge(BASE, {"env": {"id": "drl/Pendulum-v0"},
                                                                          "seed": 7}))
    with pytest.raises(EnvStepError) as info:
        api.train(cfg, tmp_path / "run")
    assert str(info.value).startswith("env 'drl/Pendulum-v0' raised in step() at rollout step t=2, global_step 44, "
                                      "seed 7: RuntimeError: solver diverged; emergency checkpoint ")


# --- item 8: the run folder cannot be written -------------------------------------------------------
TINY_CLI = ["--steps", "128", "--num-envs", "2", "--no-progress", "--device", "cpu", "--set", "algo.num_steps=16",
            "--set", "algo.minibatch_size=32", "--set", "algo.num_epochs=1", "--set", "eval_episodes=1",
            "--set", "env.num_eval_envs=1", "--set", "eval_interval=0", "--set", "algo.compile=false"]


def test_run_dir_under_a_file_one_line_exit_5(tmp_path, capsys):
    """A path under a file stands in for a read-only folder (tests run as root, where chmod does not stop writes)."""
    (tmp_path / "file").write_text("not a folder")
    run_dir = tmp_path / "file" / "run"
    assert main(["train", "ppo", "--env", "drl/CartPole-v0", "--run-dir", str(run_dir), *TINY_CLI]) == 5
    assert _one_line(capsys.readouterr().err) == (
        f"drl train: error: cannot write {run_dir}: Not a directory; choose a writable --run-dir "
        "(the files written before are kept)")


@pytest.mark.parametrize(("code", "where"), [(errno.ENOSPC, "os.replace"), (errno.EROFS, "tempfile.mkstemp")])
def test_full_or_read_only_disk_at_a_checkpoint_keeps_the_previous_one(tmp_path, capsys, monkeypatch, code, where):
    """The second checkpoint fails: the disk filled up (at the rename) or became read-only (at the
    temp file); the run stops with one line and the first checkpoint is intact."""
    import tempfile

    run_dir = tmp_path / "run"
    module = os if where == "os.replace" else tempfile
    name = where.split(".")[1]
    original, calls = getattr(module, name), []

    def fail_from_the_second_checkpoint(*args, **kwargs):
        target = str(args[1] if where == "os.replace" else kwargs.get("prefix", ""))
        if "latest.pt" in target:
            calls.append(1)
            if len(calls) == 2:
                raise OSError(code, os.strerror(code), target)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, fail_from_the_second_checkpoint)
    args = ["train", "ppo", "--env", "drl/CartPole-v0", "--run-dir", str(run_dir), *TINY_CLI,
            "--set", "checkpoint_interval=32"]
    assert main(args) == EXIT_WRITE_ERROR
    latest = run_dir / "checkpoints" / "latest.pt"
    advice = ("free space on that disk or choose another --run-dir" if code == errno.ENOSPC
              else "choose a writable --run-dir")
    assert _one_line(capsys.readouterr().err) == (
        f"drl train: error: cannot write {latest}: {os.strerror(code)}; {advice} (the files written before are kept)")
    assert load_checkpoint(latest)["runner"]["global_step"] == 32  # the first checkpoint, intact
    assert [p.name for p in latest.parent.iterdir()] == ["latest.pt"]  # no temp file left, no eval yet


def test_disk_full_while_torch_writes_a_checkpoint_is_one_line(tmp_path, monkeypatch):
    """torch.save turns a failed file write into a RuntimeError; the checkpoint writer must still
    report the disk-full OSError (exit 5 at the CLI) and leave the previous checkpoint and no temp file."""
    import drl.guards as guards

    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"x": torch.ones(3)})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(guards.os, "fdopen", FullDisk)
    with pytest.raises(RunWriteError) as info:
        save_checkpoint(path, {"x": torch.zeros(3)})
    assert str(info.value) == (f"cannot write {path}: {os.strerror(errno.ENOSPC)}; free space on that disk or "
                               "choose another --run-dir (the files written before are kept)")
    assert torch.equal(load_checkpoint(path)["x"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_run_write_error_names_a_bytes_path():
    """TensorBoard's writer names its file in bytes: the message still names it."""
    err = RunWriteError(b"/runs/a/tensorboard/events.out", OSError(errno.ENOENT, os.strerror(errno.ENOENT)))
    assert str(err).startswith("cannot write /runs/a/tensorboard/events.out: No such file or directory; ")


def test_full_disk_while_logging_metrics_one_line(tmp_path, capsys, monkeypatch):
    from drl.logging import RunLogger

    log, calls = RunLogger.log, []

    def log_until_disk_full(self, row):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return log(self, row)

    monkeypatch.setattr(RunLogger, "log", log_until_disk_full)
    run_dir = tmp_path / "run"
    assert main(["train", "ppo", "--env", "drl/CartPole-v0", "--run-dir", str(run_dir), *TINY_CLI]) == 5
    assert _one_line(capsys.readouterr().err).startswith(
        f"drl train: error: cannot write {run_dir / 'metrics.csv'}: No space left on device; ")


def test_atomic_write_text_keeps_the_old_file_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, '{"old": 1}')

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(RunWriteError) as info:
        atomic_write_text(path, '{"new": 2}')
    assert str(info.value).startswith(f"cannot write {path}: No space left on device; ")
    assert info.value.errno == errno.ENOSPC
    assert path.read_text() == '{"old": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
