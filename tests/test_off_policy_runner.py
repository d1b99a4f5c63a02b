"""The off-policy runner with a test-double agent: schedule, rounding, replay contents, metrics,
stop and resume (bitwise on drl/Pendulum-v0), replay persistence, the NaN guard.

The agent here implements the off-policy contract and nothing more: a linear deterministic actor
``a = clamp(W obs)`` fitted to the stored actions by plain gradient descent on batches drawn from
the replay with its generator, so its parameters change deterministically with the data.
"""

from __future__ import annotations

import csv
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import torch
from agent_checks import interrupt_at_step

from drl import api, registry
from drl.checkpoint import load_checkpoint
from drl.guards import NonFiniteError
from drl.logging import CSV_COLUMNS, TIMING_COLUMNS
from drl.runners.off_policy import REPLAY_FILE, OffPolicyRunner
from drl.storage import Field, ReplayBuffer


@dataclass
class LinearConfig:
    """The fields the off-policy runner reads, and the test agent's own."""

    buffer_size: int = 1_000
    learning_starts: int = 16
    updates_per_step: float = 1.0
    num_steps: int = 8
    save_replay: bool = True
    batch_size: int = 8
    learning_rate: float = 0.05
    nan_at_update: int = 0  # the n-th gradient step (1-based) sets the weights to NaN; 0: never

    def validate(self, prefix: str, train: Any) -> None:
        pass


class LinearAgent:
    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: LinearConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator, total_steps: int):
        self.cfg, self.generator, self.num_envs = cfg, generator, num_envs
        self.obs_dim, self.act_dim = observation_space.shape[0], action_space.shape[0]
        self.low = torch.as_tensor(action_space.low, dtype=torch.float32)
        self.high = torch.as_tensor(action_space.high, dtype=torch.float32)
        self.weight = torch.randn(self.act_dim, self.obs_dim, generator=generator) * 0.1
        self.gradient_steps = 0
        self.calls: list[tuple[int, float]] = []  # (num_updates, progress) of each update call
        self.random_acts = self.acts = 0

    def storage_fields(self) -> dict[str, Field]:
        obs, act = Field((self.obs_dim,)), Field((self.act_dim,))
        return {"obs": obs, "next_obs": obs, "actions": act, "rewards": Field(()),
                "terminated": Field((), torch.bool), "truncated": Field((), torch.bool)}

    def act(self, obs: torch.Tensor, deterministic: bool = False, update_stats: bool = True):
        action = obs @ self.weight.T
        if not deterministic:
            self.acts += 1
            action = action + 0.3 * torch.randn(action.shape, generator=self.generator)
        action = torch.maximum(torch.minimum(action, self.high), self.low)
        return action, {"obs": obs, "actions": action}

    def random_act(self, obs: torch.Tensor):
        self.random_acts += 1
        action = self.low + (self.high - self.low) * torch.rand(obs.shape[0], self.act_dim, generator=self.generator)
        return action, {"obs": obs, "actions": action}

    def record_outcome(self, record, reward, terminated, truncated, final_obs):
        return {**record, "next_obs": final_obs, "rewards": reward, "terminated": terminated, "truncated": truncated}

    def update(self, replay: ReplayBuffer, num_updates: int, progress: float) -> dict[str, torch.Tensor]:
        self.calls.append((num_updates, progress))
        losses = []
        for _ in range(num_updates):
            batch = replay.sample(self.cfg.batch_size, self.generator)
            error = batch["obs"] @ self.weight.T - batch["actions"]  # [B, A]
            losses.append((error**2).mean())
            grad = 2.0 / error.numel() * error.T @ batch["obs"]  # d mean(error^2) / dW
            self.weight = self.weight - self.cfg.learning_rate * grad
            self.gradient_steps += 1
            if self.gradient_steps == self.cfg.nan_at_update:
                self.weight = torch.full_like(self.weight, math.nan)
                losses[-1] = torch.tensor(math.nan)
        return {"loss": torch.stack(losses).mean(), "weight_norm": self.weight.norm()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.weight = state["weight"].clone()

    def on_env_reset(self) -> None:
        pass

    @property
    def policy(self) -> LinearAgent:
        return self


@pytest.fixture(autouse=True)
def _linear_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry.AGENTS, "linear",
                        registry.AgentSpec(LinearAgent, LinearConfig, OffPolicyRunner, "test double"))

    import drl.plotting

    def no_plot(*_args: Any, **_kwargs: Any) -> None:
        raise ValueError("plotting skipped in this test")  # the runner skips a plot that raises ValueError

    monkeypatch.setattr(drl.plotting, "plot_runs", no_plot)


def _cfg(num_envs: int = 2, total_steps: int = 64, max_episode_steps: int = 5, **algo: Any):
    return api.load_config("linear", "drl/Pendulum-v0", overrides={
        "total_steps": total_steps, "progress": False, "device": "cpu", "seed": 5, "eval_interval": 32,
        "eval_episodes": 2, "checkpoint_interval": 0,
        "env": {"num_envs": num_envs, "num_eval_envs": 2, "kwargs": {"max_episode_steps": max_episode_steps}},
        "algo": algo})


def _rows(run_dir: Path, learning_only: bool = True) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if not (learning_only and k in TIMING_COLUMNS)}
                for row in csv.DictReader(f)]


# --- schedule ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("updates_per_step", "expected"), [
    # 2 envs, learning_starts 6: vectorised steps 1..10 end at global_step 2..20; credit from step 3 (6) on
    (1.0, [(1, 2 * v / 20) for v in range(3, 11)]),
    (0.25, [(1, 12 / 20), (1, 20 / 20)]),  # credit 0.25, 0.5, 0.75, 1 at steps 3..6, then again at 10
    (4.0, [(4, 2 * v / 20) for v in range(3, 11)]),
])
def test_update_schedule(tmp_path: Path, updates_per_step: float, expected: list[tuple[int, float]]) -> None:
    cfg = _cfg(total_steps=20, learning_starts=6, updates_per_step=updates_per_step, num_steps=4)
    runner = OffPolicyRunner(cfg, LinearAgent, tmp_path / "run")
    runner.train()
    assert runner.agent.calls == expected
    assert runner.agent.random_acts == 3  # global_step 0, 2, 4 < learning_starts
    assert runner.agent.acts == 7
    assert runner.state["update_credit"] == 0.0  # 8 steps of credit: whole updates only, all taken
    assert len(runner.replay) == 10


def test_fractional_credit_is_carried(tmp_path: Path) -> None:
    cfg = _cfg(total_steps=18, learning_starts=2, updates_per_step=0.75, num_steps=4)
    runner = OffPolicyRunner(cfg, LinearAgent, tmp_path / "run")
    runner.train()
    # 9 steps with credit (global_step 2 .. 18): 0.75, 1.5 (update), 1.25 (update), 1.0 (update), 0.75,
    # 1.5 (update), 1.25 (update), 1.0 (update), 0.75
    assert [k for k, _ in runner.agent.calls] == [1] * 6
    assert [p for _, p in runner.agent.calls] == [s / 18 for s in (4, 6, 8, 12, 14, 16)]
    assert runner.state["update_credit"] == 0.75


def test_total_steps_round_up_to_whole_vectorised_steps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(num_envs=4, total_steps=21, learning_starts=4, num_steps=4)
    run_dir, summary = api.train(cfg, tmp_path / "run")
    assert ("note: total_steps 21 rounded up to 24 (whole vectorised steps of env.num_envs = 4); "
            "config.yaml records 24") in capsys.readouterr().err
    assert summary["steps"] == 24 and summary["total_steps"] == 24
    rows = _rows(run_dir)
    assert [(int(r["global_step"]), int(r["iteration"])) for r in rows] == [(16, 1), (24, 2)]  # the last is shorter
    assert "total_steps: 24" in (run_dir / "config.yaml").read_text()


# --- what is stored and logged ------------------------------------------------------------------
def test_replay_holds_the_env_transitions_with_the_true_final_obs(tmp_path: Path) -> None:
    cfg = _cfg(total_steps=24, learning_starts=8, num_steps=4, max_episode_steps=5)
    runner = OffPolicyRunner(cfg, LinearAgent, tmp_path / "run")
    env_step, seen = runner.env.step, []

    def recording_step(actions: torch.Tensor):
        out = env_step(actions)
        seen.append((actions.clone(), *(x.clone() for x in out[:4]), out[4]["final_obs"].clone()))
        return out

    runner.env.step = recording_step
    runner.train()
    replay = runner.replay
    assert len(replay) == len(seen) == 12
    for v, (action, obs, reward, terminated, truncated, final_obs) in enumerate(seen):
        assert torch.equal(replay["actions"][v], action)
        assert torch.equal(replay["rewards"][v], reward)
        assert torch.equal(replay["terminated"][v], terminated)
        assert torch.equal(replay["truncated"][v], truncated)
        assert torch.equal(replay["next_obs"][v], final_obs)
        if v + 1 < len(seen):
            assert torch.equal(replay["obs"][v + 1], obs)  # the obs returned is the next one acted on
    # the time limit (5 steps) ends every episode at steps 5 and 10: next_obs is the episode's last obs,
    # not the reset obs the next transition starts from
    assert replay["truncated"][4].all() and replay["truncated"][9].all()
    assert not replay["truncated"][:4].any() and not replay["terminated"].any()
    assert not torch.equal(replay["next_obs"][4], replay["obs"][5])
    assert torch.equal(replay["next_obs"][3], replay["obs"][4])


def test_metrics_rows(tmp_path: Path) -> None:
    cfg = _cfg(total_steps=40, learning_starts=10, updates_per_step=0.5, num_steps=4, max_episode_steps=5)
    runner = OffPolicyRunner(cfg, LinearAgent, tmp_path / "run")
    update, per_call = runner.agent.update, []

    def recording_update(replay, num_updates, progress):
        metrics = update(replay, num_updates, progress)
        per_call.append((2 * round(progress * 20), num_updates, float(metrics["loss"])))
        return metrics

    runner.agent.update = recording_update
    runner.train()
    rows = _rows(tmp_path / "run", learning_only=False)
    assert list(rows[0]) == CSV_COLUMNS + ["loss", "weight_norm"]  # the agent's metrics join the columns
    assert [int(r["global_step"]) for r in rows] == [8, 16, 24, 32, 40]
    assert rows[0]["loss"] == "" and rows[1]["loss"] != ""  # no update before learning_starts = 10
    for row, start in zip(rows, [0, 8, 16, 24, 32], strict=True):
        calls = [(k, loss) for step, k, loss in per_call if start < step <= start + 8]
        if calls:  # the mean over the iteration's gradient steps
            expected = sum(k * loss for k, loss in calls) / sum(k for k, _ in calls)
            assert float(row["loss"]) == pytest.approx(expected, rel=1e-6)
    # episodes of 5 steps x 2 envs: 8 episodes end in 40 env steps (at vectorised steps 5, 10, 15, 20)
    assert [int(r["episodes"]) for r in rows] == [0, 2, 2, 2, 2]
    assert [bool(r["eval_return"]) for r in rows] == [False, False, False, True, True]  # eval every 32 and at the end


# --- stop and resume ----------------------------------------------------------------------------
NUM_ENVS, TOTAL, STOP_AT = 4, 4 * 60, 27  # 60 vectorised steps, 8 per iteration; SIGINT after step 27


def _resume_cfg(**algo: Any):
    return _cfg(num_envs=NUM_ENVS, total_steps=TOTAL, max_episode_steps=7,
                **{"learning_starts": 40, "updates_per_step": 0.75, "num_steps": 8, **algo})


def _train_interrupted(cfg, run_dir: Path, stop_at: int = STOP_AT) -> dict[str, Any]:
    runner = OffPolicyRunner(cfg, LinearAgent, run_dir)
    interrupt_at_step(runner, stop_at)
    summary = runner.train()
    assert summary["interrupted"] and summary["interrupted_by"] == "SIGINT"
    return summary


def _assert_trees_equal(a: Any, b: Any, path: str = "") -> None:
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


def test_stop_mid_iteration_then_resume_is_bitwise_identical(tmp_path: Path) -> None:
    cfg = _resume_cfg()
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    OffPolicyRunner(cfg, LinearAgent, whole).train()
    _train_interrupted(_resume_cfg(), parts)
    stopped = load_checkpoint(parts / "checkpoints" / "latest.pt")
    # stopped at the step boundary after vectorised step 27 (inside iteration 4), not at the iteration's start
    assert stopped["runner"]["global_step"] == STOP_AT * NUM_ENVS
    assert stopped["runner"]["iteration"] == 3 and len(stopped["iteration_rows"]["replay_rows"]) == 3
    assert stopped["runner"]["update_credit"] not in (0.0, 1.0)  # a fraction is owed
    assert load_checkpoint(parts / "checkpoints" / REPLAY_FILE)["global_step"] == STOP_AT * NUM_ENVS
    partial = _rows(parts)
    assert [int(r["global_step"]) for r in partial] == [32, 64, 96, STOP_AT * NUM_ENVS]  # the partial row too

    resumed = OffPolicyRunner(_resume_cfg(), LinearAgent, parts, resume=True)
    assert len(resumed.replay) == STOP_AT
    resumed.train()
    assert _rows(parts) == _rows(whole)  # the partial row was replaced by the whole iteration's
    assert len(_rows(whole)) == 8
    final_whole = load_checkpoint(whole / "checkpoints" / "latest.pt")
    final_parts = load_checkpoint(parts / "checkpoints" / "latest.pt")
    for ckpt in (final_whole, final_parts):
        ckpt["runner"] = {k: v for k, v in ckpt["runner"].items() if k not in ("wall_s", "eval_s")}
    for key in ("agent_state", "tracker", "generator", "rng", "runner", "env_state", "iteration_rows"):
        _assert_trees_equal(final_whole[key], final_parts[key], key)
    _assert_trees_equal(load_checkpoint(whole / "checkpoints" / REPLAY_FILE),
                        load_checkpoint(parts / "checkpoints" / REPLAY_FILE), "replay")


def test_missing_replay_file_restarts_the_replay_and_the_warm_up(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                  ) -> None:
    run_dir = tmp_path / "run"
    _train_interrupted(_resume_cfg(), run_dir)
    (run_dir / "checkpoints" / REPLAY_FILE).unlink()
    capsys.readouterr()
    resumed = OffPolicyRunner(_resume_cfg(), LinearAgent, run_dir, resume=True)
    step = STOP_AT * NUM_ENVS
    assert capsys.readouterr().err == (
        f"drl: the replay buffer was not restored (no {REPLAY_FILE}): it restarts empty and the warm-up of "
        f"learning_starts = 40 random steps is redone from step {step}\n")
    assert len(resumed.replay) == 0 and resumed.state["learning_starts_step"] == step + 40
    resumed.train()
    assert resumed.agent.random_acts == 10  # steps 108 .. 144 of 4 envs
    assert [int(r["global_step"]) for r in _rows(run_dir)] == [32 * i for i in range(1, 8)] + [240]


def test_save_replay_false_writes_no_replay_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    _train_interrupted(_resume_cfg(save_replay=False), run_dir)
    assert not (run_dir / "checkpoints" / REPLAY_FILE).exists()
    capsys.readouterr()
    OffPolicyRunner(_resume_cfg(save_replay=False), LinearAgent, run_dir, resume=True).train()
    assert "replay buffer was not restored (algo.save_replay is false)" in capsys.readouterr().err
    assert not (run_dir / "checkpoints" / REPLAY_FILE).exists()


def test_mismatched_replay_file_is_not_loaded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    _train_interrupted(_resume_cfg(), run_dir)
    replay_file = run_dir / "checkpoints" / REPLAY_FILE
    from drl.checkpoint import save_checkpoint

    save_checkpoint(replay_file, {**load_checkpoint(replay_file), "global_step": 4})
    capsys.readouterr()
    resumed = OffPolicyRunner(_resume_cfg(), LinearAgent, run_dir, resume=True)
    assert f"({REPLAY_FILE} is of step 4, the checkpoint of step {STOP_AT * NUM_ENVS})" in capsys.readouterr().err
    assert len(resumed.replay) == 0
    resumed.close()


# --- failures -----------------------------------------------------------------------------------
def test_nan_in_the_update_stops_with_an_emergency_checkpoint(tmp_path: Path) -> None:
    # updates from global_step 40 (vectorised step 10) on, one per step: the 12th is at step 21, in iteration 3
    cfg = _resume_cfg(updates_per_step=1.0, nan_at_update=12)
    runner = OffPolicyRunner(cfg, LinearAgent, tmp_path / "run")
    with pytest.raises(NonFiniteError) as info:
        runner.train()
    assert info.value.quantity == "loss loss" and info.value.iteration == 3
    assert "emergency checkpoint" in str(info.value)
    emergency = load_checkpoint(tmp_path / "run" / "checkpoints" / "emergency.pt")
    assert emergency["runner"]["global_step"] == 64 and emergency["runner"]["iteration"] == 2  # iteration 3's start
    assert torch.isfinite(emergency["agent_state"]["weight"]).all()
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_signal_inside_evaluation_saves_the_step_boundary_before_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """SIGINT inside the evaluation at the end of iteration 3: the run is saved after its last step with
    the iteration's rows pending (nothing of the evaluation or the row); the resume evaluates, logs the
    row and ends like the uninterrupted run. Through the CLI: exit 130 and the resume line."""
    import drl.runners.base as off_policy  # where the runners call them
    from drl.cli import main

    whole, parts = tmp_path / "whole", tmp_path / "parts"
    OffPolicyRunner(_resume_cfg(), LinearAgent, whole).train()
    original, calls = off_policy.evaluate_policy, []

    def evaluate(*args: Any, **kwargs: Any) -> list[float]:
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(off_policy, "evaluate_policy", evaluate)
    args = ["train", "linear", "--env", "drl/Pendulum-v0", "--run-dir", str(parts), "--no-progress",
            "--device", "cpu", "--steps", str(TOTAL), "--seed", "5", "--num-envs", str(NUM_ENVS),
            "--set", "eval_interval=32", "--set", "eval_episodes=2", "--set", "checkpoint_interval=0",
            "--set", "env.num_eval_envs=2", "--set", "env.kwargs.max_episode_steps=7",
            "--set", "algo.learning_starts=40", "--set", "algo.updates_per_step=0.75", "--set", "algo.num_steps=8"]
    assert main(args) == 130
    assert "at step 96; continue from step 96 with: drl train --resume" in capsys.readouterr().err
    stopped = load_checkpoint(parts / "checkpoints" / "latest.pt")
    assert stopped["runner"]["global_step"] == 96 and stopped["runner"]["iteration"] == 2
    assert len(stopped["iteration_rows"]["replay_rows"]) == 8  # the whole iteration, not yet logged
    assert [int(r["global_step"]) for r in _rows(parts)] == [32, 64]
    monkeypatch.setattr(off_policy, "evaluate_policy", original)
    assert main(["train", "--resume", str(parts)]) == 0
    assert _rows(parts) == _rows(whole)
    final_whole = load_checkpoint(whole / "checkpoints" / "latest.pt")
    final_parts = load_checkpoint(parts / "checkpoints" / "latest.pt")
    _assert_trees_equal(final_whole["agent_state"], final_parts["agent_state"], "agent_state")


def test_second_signal_inside_a_step_goes_back_to_the_iteration_start(tmp_path: Path) -> None:
    """A second signal forces a stop inside an update: the step is half done, so latest.pt is the copy
    taken when the iteration began, and no replay.pt is written for it (the replay is ahead of it)."""
    runner = OffPolicyRunner(_resume_cfg(), LinearAgent, tmp_path / "run")
    update, calls = runner.agent.update, [0]

    def update_then_forced_stop(replay, num_updates, progress):
        calls[0] += 1
        metrics = update(replay, num_updates, progress)
        if calls[0] == 14:  # at global_step 112, in iteration 4 (96 .. 128)
            runner.stop.request(signal.SIGINT)
            runner.stop.request(signal.SIGINT)  # raises TrainingInterrupted here, inside the step
        return metrics

    runner.agent.update = update_then_forced_stop
    summary = runner.train()
    assert summary["interrupted"] and summary["steps"] == 96
    latest = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert latest["runner"]["global_step"] == 96 and latest["iteration_rows"]["replay_rows"] == []
    # replay.pt, if any, is from a best.pt at or before step 96 and holds what the replay held then
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / REPLAY_FILE)
    replay = ReplayBuffer(runner.capacity, NUM_ENVS, runner.agent.storage_fields())
    replay.load_state_dict(saved["replay"])
    assert saved["global_step"] <= 96 and len(replay) * NUM_ENVS == saved["global_step"]


def test_resume_without_env_state_drops_the_episodes_in_progress(tmp_path: Path) -> None:
    """Gymnasium adapter (no env state): the envs are reset on resume, inside iteration 4; its row counts
    only the episodes that began after the reset, the replay (restored) goes on from there."""
    cfg = api.load_config("linear", "Pendulum-v1", overrides={
        "total_steps": TOTAL, "progress": False, "device": "cpu", "seed": 5, "eval_interval": 32, "eval_episodes": 2,
        "checkpoint_interval": 0, "env": {"num_envs": NUM_ENVS, "num_eval_envs": 2,
                                          "kwargs": {"max_episode_steps": 7}},
        "algo": {"learning_starts": 40, "updates_per_step": 0.75, "num_steps": 8}})
    run_dir = tmp_path / "run"
    _train_interrupted(cfg, run_dir)
    assert "env_state" not in load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    resumed = OffPolicyRunner(cfg, LinearAgent, run_dir, resume=True)
    assert len(resumed.replay) == STOP_AT
    assert not resumed.replay.data["truncated"][STOP_AT - 1].all()  # time limit 7: not every env just ended
    resumed.train()
    # the envs were reset: the last transition of every env before it ends its episode (no n-step window
    # runs from the old episode into the new one); its next_obs is still the true next obs
    assert resumed.replay.data["truncated"][STOP_AT - 1].all()
    assert len(resumed.replay) == 60
    rows = _rows(run_dir)
    assert [int(r["global_step"]) for r in rows] == [32 * i for i in range(1, 8)] + [240]
    # 7-step episodes end at vectorised steps 7, 14, 21 (rows 1-3); the reset after step 27 restarts them:
    # none ends in row 4 (steps 25-32), the next at step 34 (row 5)
    assert [int(r["episodes"]) for r in rows[:5]] == [4, 4, 4, 0, 4]


def test_env_error_leaves_an_emergency_checkpoint_of_the_iteration_start(tmp_path: Path) -> None:
    from envs.core import EnvStepError

    runner = OffPolicyRunner(_resume_cfg(), LinearAgent, tmp_path / "run")
    env_step, calls = runner.env.step, [0]

    def failing_step(actions: torch.Tensor):
        calls[0] += 1
        if calls[0] == 20:  # vectorised step 20: row t=3 of iteration 3
            raise RuntimeError("simulator exploded")
        return env_step(actions)

    runner.env.step = failing_step
    with pytest.raises(EnvStepError, match="simulator exploded") as info:
        runner.train()
    assert "global_step 80" in str(info.value) and "t=3" in str(info.value)
    emergency = load_checkpoint(tmp_path / "run" / "checkpoints" / "emergency.pt")
    assert emergency["runner"]["global_step"] == 64 and emergency["emergency"]["error_type"] == "EnvStepError"


def test_a_replay_that_does_not_fit_is_refused_before_allocating(tmp_path: Path) -> None:
    from drl.resources import ResourceError

    with pytest.raises(ResourceError, match=r"the replay buffer \(algo.buffer_size = 10,000,000,000,000 transitions "
                                            r"of 34 bytes, as 5,000,000,000,000 rounds of env.num_envs = 2\).*"
                                            r"lower config key 'algo.buffer_size'"):
        OffPolicyRunner(_cfg(buffer_size=10**13), LinearAgent, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_with_more_steps_continues_after_the_short_last_iteration(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    run_dir = tmp_path / "run"
    OffPolicyRunner(_resume_cfg(), LinearAgent, run_dir).train()  # rows end ..., 224, 240 (a short last one)
    summary = api.resume(run_dir, total_steps=310)
    assert "note: total_steps 310 rounded up to 312" in capsys.readouterr().err
    assert summary["steps"] == 312 and not summary["interrupted"]
    assert [int(r["global_step"]) for r in _rows(run_dir)][-5:] == [224, 240, 272, 304, 312]  # 32 per iteration again
    assert "total_steps: 312" in (run_dir / "config.yaml").read_text()
    assert api.resume(run_dir)["already_finished"] is True
