"""Resume: a run interrupted mid-rollout and resumed ends bitwise identical to the uninterrupted run.

For envs with the state capability (torch-batched classic control, MuJoCo Warp) the checkpoint holds
the env state, so the resumed run continues the same episodes with the same random numbers: the final
weights, optimiser moments, normaliser statistics, env state and every learning column of
``metrics.csv`` must be equal, not close. For gymnasium envs through the adapter (no env state) the
resumed run restarts its episodes: the reward scaler's running returns and the episode tracker restart
at zero, and the statistics of the dropped partial rollout are not in the checkpoint.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from agent_checks import interrupt_at_step

from drl import api
from drl.checkpoint import load_checkpoint
from drl.logging import TIMING_COLUMNS
from drl.runners.on_policy import OnPolicyRunner

NUM_ENVS, NUM_STEPS, ITERATIONS, STOP_AFTER = 4, 16, 6, 3  # interrupted inside iteration STOP_AFTER + 1
TIMING_STATE = {"wall_s", "eval_s"}


@pytest.fixture(autouse=True)
def _no_curve_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """curve.png (matplotlib, about a second per run) plays no part in what is tested here."""
    import drl.plotting

    def no_plot(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError("plotting skipped in this test")  # the runner skips a plot that raises ValueError

    monkeypatch.setattr(drl.plotting, "plot_runs", no_plot)


def _cfg(env_id: str, env_kwargs: dict[str, Any] | None = None, device: str = "cpu", checkpoint_interval: int = 0,
         num_eval_envs: int = 2, **algo: Any):
    return api.load_config("ppo", env_id, overrides={
        "total_steps": ITERATIONS * NUM_STEPS * NUM_ENVS, "progress": False, "device": device, "seed": 3,
        "eval_interval": 2 * NUM_STEPS * NUM_ENVS, "eval_episodes": 2, "checkpoint_interval": checkpoint_interval,
        "env": {"num_envs": NUM_ENVS, "num_eval_envs": num_eval_envs, "kwargs": env_kwargs or {}},
        "algo": {"num_steps": NUM_STEPS, "minibatch_size": 32, "num_epochs": 2, "normalize_obs": True,
                 "normalize_reward": True, "compile": False, **algo},
    })


def _train_interrupted(cfg, run_dir: Path) -> None:
    """Train until a SIGINT arrives 5 steps into the rollout of iteration STOP_AFTER + 1."""
    runner = OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, run_dir)
    interrupt_at_step(runner, STOP_AFTER * NUM_STEPS + 5)
    try:
        summary = runner.train()
    except KeyboardInterrupt:  # an interrupt may also surface as an exception
        summary = None
    assert summary is None or summary["interrupted"] is True


def _learning_rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def _assert_trees_equal(a: Any, b: Any, path: str = "") -> None:
    """Nested dicts/lists of tensors and numbers are exactly equal (tensors: same dtype, shape, bits)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a, b) or bool(((a == b) | (a.isnan() & b.isnan())).all()), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _assert_trees_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_trees_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{path}: {a!r} != {b!r}"


def _final_state(run_dir: Path) -> dict[str, Any]:
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    ckpt["runner"] = {k: v for k, v in ckpt["runner"].items() if k not in TIMING_STATE}
    return ckpt


def _check_bitwise_resume(cfg, tmp_path: Path) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, whole).train()
    _train_interrupted(cfg, parts)
    stopped = load_checkpoint(parts / "checkpoints" / "latest.pt")
    assert stopped["runner"]["iteration"] == STOP_AFTER  # the partial rollout is not in the checkpoint
    assert stopped["runner"]["global_step"] == STOP_AFTER * NUM_STEPS * NUM_ENVS
    assert len(_learning_rows(parts)) == STOP_AFTER
    OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, parts, resume=True).train()

    rows = _learning_rows(whole)
    assert len(rows) == ITERATIONS and any(r["eval_return"] for r in rows[STOP_AFTER:])
    assert _learning_rows(parts) == rows
    final_whole, final_parts = _final_state(whole), _final_state(parts)
    assert final_whole["runner"]["global_step"] == ITERATIONS * NUM_STEPS * NUM_ENVS
    for key in ("agent_state", "tracker", "generator", "rng", "runner", "env_state"):
        _assert_trees_equal(final_whole[key], final_parts[key], key)


def test_resume_is_bitwise_identical_cartpole(tmp_path: Path) -> None:
    _check_bitwise_resume(_cfg("drl/CartPole-v0", {"max_episode_steps": 20}), tmp_path)


def test_resume_is_bitwise_identical_pendulum(tmp_path: Path) -> None:
    _check_bitwise_resume(_cfg("drl/Pendulum-v0", {"max_episode_steps": 20}), tmp_path)


def test_resume_is_bitwise_identical_multi_task(tmp_path: Path) -> None:
    """drl/MT-CartPole-v0, one copy per task: every task env's state and the per-task columns resume exactly."""
    cfg = _cfg("drl/MT-CartPole-v0", {"max_episode_steps": 20}, num_eval_envs=4)  # copies: a multiple of 4 tasks
    _check_bitwise_resume(cfg, tmp_path)
    assert "ep_return/short_pole" in _learning_rows(tmp_path / "whole")[-1]
    _assert_trees_equal(_final_state(tmp_path / "whole")["task_stats"], _final_state(tmp_path / "parts")["task_stats"])


class _Killed(BaseException):
    """Stands for a SIGKILL: nothing after it runs, no checkpoint is written."""


def test_resume_from_a_periodic_checkpoint_is_bitwise_identical(tmp_path: Path) -> None:
    """A run killed between checkpoints resumes from the last periodic one (written at the end of
    iteration 2) and ends in the uninterrupted run's state."""
    cfg = _cfg("drl/Acrobot-v0", {"max_episode_steps": 20, "randomize": {"link_mass_2": (0.5, 1.5)}},
               checkpoint_interval=2 * NUM_STEPS * NUM_ENVS)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, whole).train()
    runner = OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, parts)
    env_step, calls = runner.env.step, [0]

    def step_then_die(actions: torch.Tensor):
        calls[0] += 1
        if calls[0] == 3 * NUM_STEPS + 7:  # inside iteration 4
            raise _Killed
        return env_step(actions)

    runner.env.step = step_then_die
    with pytest.raises(_Killed):
        runner.train()
    assert load_checkpoint(parts / "checkpoints" / "latest.pt")["runner"]["iteration"] == 2
    OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, parts, resume=True).train()
    final_whole, final_parts = _final_state(whole), _final_state(parts)
    for key in ("agent_state", "tracker", "generator", "rng", "runner", "env_state"):
        _assert_trees_equal(final_whole[key], final_parts[key], key)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("env_id", ["drl/CartPole-v0", "drl/Pendulum-v0"])
def test_resume_is_bitwise_identical_cuda(env_id: str, tmp_path: Path) -> None:
    _check_bitwise_resume(_cfg(env_id, {"max_episode_steps": 20}, device="cuda"), tmp_path)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_is_bitwise_identical_cuda_mjwarp(tmp_path: Path) -> None:
    pytest.importorskip("mujoco_warp")
    _check_bitwise_resume(_cfg("drl/HalfCheetah-v0", {"max_episode_steps": 20}, device="cuda"), tmp_path)


@pytest.mark.slow  # about 15 s: six MuJoCo Warp envs are built and graph-captured
def test_resume_is_bitwise_identical_mjwarp_halfcheetah(tmp_path: Path) -> None:
    pytest.importorskip("mujoco_warp")
    _check_bitwise_resume(_cfg("drl/HalfCheetah-v0", {"max_episode_steps": 20}), tmp_path)


def test_interrupted_checkpoint_is_the_last_iteration_boundary(tmp_path: Path) -> None:
    """An error inside update(): boundary_payload() is the state before that iteration's rollout."""
    runner = OnPolicyRunner(_cfg("drl/CartPole-v0"), api.AGENTS["ppo"].agent_class, tmp_path / "run")
    update, calls, before = runner.agent.update, [0], {}

    def update_then_fail(storage, progress=0.0):
        calls[0] += 1
        if calls[0] == STOP_AFTER + 1:
            update(storage, progress)  # half an iteration: weights changed, counters not yet
            raise KeyboardInterrupt
        metrics = update(storage, progress)
        if calls[0] == STOP_AFTER:
            before["agent"] = {k: v.clone() for k, v in runner.agent.model.state_dict().items()}
            before["stats"] = runner.agent.obs_normalizers["policy"].count.clone()
        return metrics

    runner.agent.update = update_then_fail
    with pytest.raises(KeyboardInterrupt):
        runner.train()
    payload = runner.boundary_payload()
    assert payload["runner"]["iteration"] == STOP_AFTER
    _assert_trees_equal(payload["agent_state"]["model"], before["agent"], "model")
    # the statistics hold STOP_AFTER rollouts, not the one whose update failed
    assert torch.equal(payload["agent_state"]["obs_normalizers"]["policy.count"], before["stats"])
    assert not torch.equal(runner.agent.obs_normalizers["policy"].count, before["stats"])


def test_resume_without_env_state_restarts_episodes_consistently(tmp_path: Path) -> None:
    """Gymnasium adapter (no env state): the envs are reset on resume, so the reward scaler's running
    returns and the unfinished-episode carries restart at 0; the checkpoint holds the statistics of
    exactly STOP_AFTER complete rollouts."""
    cfg = _cfg("CartPole-v1")
    run_dir = tmp_path / "run"
    _train_interrupted(cfg, run_dir)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert "env_state" not in ckpt
    expected_count = torch.tensor(1e-4, dtype=torch.float64)  # RunningMeanStd's initial count
    for _ in range(STOP_AFTER * NUM_STEPS):
        expected_count = expected_count + NUM_ENVS
    assert torch.equal(ckpt["agent_state"]["obs_normalizers"]["policy.count"], expected_count)
    assert torch.equal(ckpt["agent_state"]["reward_scaler"]["return_stats.count"], expected_count)
    assert ckpt["agent_state"]["reward_scaler"]["returns"].abs().sum() > 0  # episodes were in progress
    assert ckpt["tracker"]["carry_length"].sum() > 0

    resumed = OnPolicyRunner(cfg, api.AGENTS["ppo"].agent_class, run_dir, resume=True)
    seen: dict[str, torch.Tensor] = {}
    act = resumed.agent.act

    def act_and_record(obs, *args, **kwargs):
        if not seen:
            seen["returns"] = resumed.agent.reward_scaler.returns.clone()
            seen["carry_length"] = resumed.tracker.carry_length.clone()
            seen["carry_return"] = resumed.tracker.carry_return.clone()
        return act(obs, *args, **kwargs)

    resumed.agent.act = act_and_record
    resumed.train()
    assert torch.equal(seen["returns"], torch.zeros(NUM_ENVS, dtype=torch.float64))
    assert torch.equal(seen["carry_length"], torch.zeros(NUM_ENVS, dtype=torch.int64))
    assert torch.equal(seen["carry_return"], torch.zeros(NUM_ENVS, dtype=torch.float64))
    rows = _learning_rows(run_dir)
    assert [int(r["global_step"]) for r in rows] == [NUM_STEPS * NUM_ENVS * i for i in range(1, ITERATIONS + 1)]
