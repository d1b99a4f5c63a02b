"""Crash consistency: resume after kill -9, exclusive run folders, stop signals, extending runs."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from drl import api
from drl.checkpoint import load_checkpoint
from drl.cli import main
from drl.logging import read_metrics, truncate_metrics
from drl.runners.common import StopSignals, TrainingInterrupted, create_run_dir

# 64 env steps per iteration, 8 iterations; evaluation and a checkpoint every 2 iterations
TINY = {"total_steps": 512, "progress": False, "device": "cpu", "eval_interval": 128, "eval_episodes": 2,
        "checkpoint_interval": 128, "torch_threads": 1, "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1}}
ALL_STEPS = [64 * i for i in range(1, 9)]
CLI_TINY = ["ppo", "--env", "drl/CartPole-v0", "--no-progress", "--device", "cpu", "--steps", "512",
            "--num-envs", "4", "--set", "eval_interval=128", "--set", "eval_episodes=2", "--set",
            "checkpoint_interval=128", "--set", "env.num_eval_envs=2", "--set", "algo.num_steps=16",
            "--set", "algo.minibatch_size=32", "--set", "algo.num_epochs=1", "--set", "torch_threads=1"]


def _cfg(**extra):
    from drl.config import merge

    return api.load_config("ppo", "drl/CartPole-v0", overrides=merge(TINY, extra))


def _partial_run(run_dir: Path, iterations: int, **extra) -> None:
    """A run stopped after ``iterations`` iterations with latest.pt there (as a stop signal leaves it)."""
    from drl.runners.on_policy import OnPolicyRunner

    runner = OnPolicyRunner(_cfg(**extra), api.AGENTS["ppo"].agent_class, run_dir)
    runner.num_iterations = iterations
    runner.train()


def _steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["global_step"]) for r in csv.DictReader(f)]


def _eval_steps(run_dir: Path) -> list[int]:
    with (run_dir / "metrics.csv").open() as f:
        return [int(r["global_step"]) for r in csv.DictReader(f) if r["eval_return"]]


def _tb_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


# --- item 1: kill -9 between checkpoints ----------------------------------------------------------
def test_resume_after_kill_continues_logs_from_the_checkpoint(tmp_path):
    """Rows and TensorBoard events written after the checkpoint (then kill -9) are redone once, not duplicated."""
    run_dir = tmp_path / "run"
    _partial_run(run_dir, 4)  # latest.pt at step 256
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["runner"]["global_step"] == 256
    # what a kill -9 at step ~420 leaves: two rows past the checkpoint, a torn third, TB events, a temp checkpoint
    with (run_dir / "metrics.csv").open("a") as f:
        f.write("320,5,999.0" + "," * 16 + "\n" + "384,6,999.0" + "," * 16 + "\n" + "448,7,99")
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    for step in (320, 384, 448):
        writer.add_scalar("policy_loss", 999.0, step)
    writer.close()
    (run_dir / "checkpoints" / "latest.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    (run_dir / "metrics.csv.tmp").write_text("global_step\n")  # killed while cutting the log back

    summary = api.resume(run_dir)
    assert summary["steps"] == 512 and summary["interrupted"] is False
    assert _steps(run_dir) == ALL_STEPS  # strictly increasing, each step once
    assert "999.0" not in (run_dir / "metrics.csv").read_text()
    assert list(run_dir.rglob("*.tmp")) == []
    tb = _tb_scalars(run_dir, "policy_loss")
    assert [step for step, _ in tb] == ALL_STEPS  # the checkpoint's own row (256) kept, the killed ones purged
    assert all(value != 999.0 for _, value in tb)


def test_truncate_metrics_keeps_rows_up_to_the_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("global_step,iteration,x\n64,1,a\n128,2,b\n192,3,c\n256,4,d\n320,5")  # last row torn
    assert truncate_metrics(path, 192, ["global_step", "iteration", "x", "y"]) == 3
    assert path.read_text().splitlines() == ["global_step,iteration,x,y", "64,1,a,", "128,2,b,", "192,3,c,"]
    path.write_text("global_step,iteration,x\n64,1,a\n128,2\n")  # a row with a missing cell is torn too
    assert [r["global_step"] for r in read_metrics(path)] == ["64"]
    assert not path.with_name("metrics.csv.tmp").exists()


# --- item 2: kill -9 before the first checkpoint; exclusive run folders -------------------------------
def test_resume_from_best_when_latest_is_missing(tmp_path):
    """Killed before the first periodic checkpoint: best.pt (from an evaluation) is resumed from."""
    run_dir = tmp_path / "run"
    _partial_run(run_dir, 4, checkpoint_interval=0)
    (run_dir / "checkpoints" / "latest.pt").unlink()  # as if killed before the final save
    best_step = load_checkpoint(run_dir / "checkpoints" / "best.pt")["runner"]["global_step"]
    assert best_step in (128, 256)
    summary = api.resume(run_dir)
    assert summary["steps"] == 512
    assert _steps(run_dir) == ALL_STEPS
    assert _eval_steps(run_dir) == [128, 256, 384, 512]  # the evaluation at best.pt's step is not repeated


def test_resume_without_any_checkpoint_starts_again(tmp_path, capsys):
    run_dir = tmp_path / "run"
    _partial_run(run_dir, 3, checkpoint_interval=0, eval_interval=0)  # latest.pt and best.pt at 192
    (run_dir / "checkpoints" / "latest.pt").unlink()
    (run_dir / "checkpoints" / "best.pt").unlink()
    (run_dir / "checkpoints" / "latest.pt.x1.tmp").write_bytes(b"")
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert "no checkpoint in" in capsys.readouterr().err
    assert _steps(run_dir) == ALL_STEPS
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "latest.pt"]


def test_default_run_folders_are_unique_within_one_second(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *_: "20260101-000000")
    dirs = [api.train(_cfg(total_steps=64))[0] for _ in range(2)]
    assert [str(d) for d in dirs] == ["runs/ppo-drl-CartPole-v0-s0-20260101-000000",
                                      "runs/ppo-drl-CartPole-v0-s0-20260101-000000-2"]
    for run_dir in dirs:
        assert _steps(run_dir) == [64]


def test_concurrent_claims_get_distinct_folders(tmp_path, monkeypatch):
    claimed: list[Path] = []
    threads = [threading.Thread(target=lambda: claimed.append(create_run_dir(tmp_path / "r", {"seed": 0},
                                                                               unique=True))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in claimed) == sorted(["r"] + [f"r-{k}" for k in range(2, 9)])
    import drl.runners.common as common

    # another process claims an explicit folder between the early check and config.yaml's creation
    monkeypatch.setattr(common, "check_run_dir_free", lambda *args: None)
    with pytest.raises(FileExistsError, match="claimed by another run meanwhile"):
        create_run_dir(tmp_path / "r-3", {"seed": 1})  # config.yaml is created exclusively
    assert (tmp_path / "r-3" / "config.yaml").read_text() == "seed: 0\n"


def test_existing_folder_is_refused_unless_overwrite(tmp_path, capsys):
    """A folder holding a killed run (no latest.pt) is not appended to; --overwrite replaces it."""
    run_dir = tmp_path / "run"
    _partial_run(run_dir, 2, checkpoint_interval=0, eval_interval=0)
    (run_dir / "checkpoints" / "latest.pt").unlink()
    before = {p: p.read_bytes() for p in (run_dir / "metrics.csv", run_dir / "config.yaml")}
    assert main(["train", *CLI_TINY, "--seed", "7", "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (f"drl train: error: run folder '{run_dir}' already holds files; continue that run with "
                   f"--resume {run_dir}, replace it with --overwrite, or choose another --run-dir\n")
    assert {p: p.read_bytes() for p in before} == before
    assert main(["train", *CLI_TINY, "--seed", "7", "--steps", "128", "--run-dir", str(run_dir), "--overwrite"]) == 0
    assert _steps(run_dir) == [64, 128]
    assert "seed: 7" in (run_dir / "config.yaml").read_text()
    # a folder that is not a drl run is never deleted by --overwrite; an empty one is fine
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    assert main(["train", *CLI_TINY, "--run-dir", str(other), "--overwrite"]) == 2
    assert "not a drl run folder" in capsys.readouterr().err
    assert (other / "todo.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    (empty / "checkpoints").mkdir(parents=True)  # only empty subfolders: an interrupted start-up
    assert main(["train", *CLI_TINY, "--steps", "64", "--run-dir", str(empty)]) == 0


# --- item 3: signals inside update and evaluation; start-up --------------------------------------
def _stall(sig: int, seconds: float = 5.0) -> None:
    """Deliver ``sig`` to this process, then keep working (a long update/evaluation)."""
    os.kill(os.getpid(), sig)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_inside_update_stops_it_and_saves_the_last_completed_iteration(tmp_path, monkeypatch, capsys, sig):
    """The half-updated agent is never saved: latest.pt is the state after iteration 3 (step 192),
    as it was when iteration 4's update began."""
    from drl.agents.ppo import PPO

    original = PPO.update
    calls = []

    def update(self, storage, progress=0.0):
        calls.append(progress)
        if len(calls) == 4:  # iteration 4: three iterations (192 steps) are complete
            calls.append({k: v.clone() for k, v in self.model.state_dict().items()})
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(1.0)  # half an update
            _stall(sig)
        return original(self, storage, progress)

    monkeypatch.setattr(PPO, "update", update)
    run_dir = tmp_path / "run"
    start = time.monotonic()
    assert main(["train", *CLI_TINY, "--run-dir", str(run_dir)]) == 128 + sig
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert f"drl train: interrupted by {signal.Signals(sig).name} at step 192; continue from step 192 with: " \
           f"drl train --resume {run_dir}\n" == err
    latest = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert latest["runner"]["global_step"] == 192
    before = calls[4]
    assert all(torch.equal(latest["agent_state"]["model"][k], v) for k, v in before.items())
    assert _steps(run_dir) == [64, 128, 192]
    monkeypatch.setattr(PPO, "update", original)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert _steps(run_dir) == ALL_STEPS


def test_signal_inside_evaluation_stops_it(tmp_path, monkeypatch, capsys):
    import drl.runners.base as on_policy  # where the runners call them

    original = on_policy.evaluate_policy
    calls = []

    def evaluate(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the evaluation at step 256
            _stall(signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(on_policy, "evaluate_policy", evaluate)
    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--run-dir", str(run_dir)]) == 130
    # the evaluation of iteration 4 was stopped: the run is saved as of iteration 3 and redoes iteration 4
    assert "at step 192; continue from step 192 with: drl train --resume" in capsys.readouterr().err
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["runner"]["global_step"] == 192
    assert json.loads((run_dir / "summary.json").read_text())["checkpoint_step"] == 192
    assert _steps(run_dir) == [64, 128, 192]
    monkeypatch.setattr(on_policy, "evaluate_policy", original)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert _steps(run_dir) == ALL_STEPS


def test_stop_signals_rule():
    stop = StopSignals()
    stop.request(signal.SIGTERM)  # outside a section: only the flag
    assert stop.requested and stop.signum == signal.SIGTERM
    with pytest.raises(TrainingInterrupted) as info, stop.interruptible():  # already requested: at once
        pass
    assert info.value.exit_code == 143
    stop = StopSignals()
    with stop.shielded():
        stop.request(signal.SIGINT)
        stop.request(signal.SIGINT)  # even a second one waits for the checkpoint write
    with pytest.raises(TrainingInterrupted):
        stop.request(signal.SIGINT)  # a third, outside: forced
    assert not issubclass(TrainingInterrupted, Exception)  # `except Exception` in agent code cannot swallow it


def test_ctrl_c_during_start_up_is_one_line(tmp_path, monkeypatch, capsys):
    import drl.runners.base as on_policy  # where the runners call them

    def make_run_env(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("not reached")

    monkeypatch.setattr(on_policy, "make_run_env", make_run_env)
    assert main(["train", *CLI_TINY, "--run-dir", str(tmp_path / "run")]) == 130
    assert capsys.readouterr().err == "drl train: interrupted by SIGINT\n"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_start_up_imports_is_one_line(tmp_path, sig):
    """The signal arrives while the CLI imports drl's modules (torch and all): one line, 130/143."""
    code = ("import os, signal, sys\n"
            "class Finder:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name == 'drl.checkpoint':\n            os.kill(os.getpid(), {int(sig)})\n"
            "        return None\n"
            "sys.meta_path.insert(0, Finder())\n"
            "from drl.cli import main\n"
            f"sys.exit(main(['train', '--no-progress', '--run-dir', {str(tmp_path / 'run')!r}]))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 128 + sig
    assert result.stderr == f"drl train: interrupted by {signal.Signals(sig).name}\n"
    assert not (tmp_path / "run").exists()


def test_ctrl_c_to_the_process_group_with_async_envs(tmp_path):
    """A terminal's Ctrl-C reaches the env workers too: they leave it to the runner (no worker traceback)."""
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "drl.cli", "train", "ppo", "--env", "CartPole-v1", "--steps", "100000",
           "--num-envs", "2", "--no-progress", "--device", "cpu", "--run-dir", str(run_dir), "--set",
           "env.vectorization=async", "--set", "algo.num_steps=32", "--set", "algo.minibatch_size=32",
           "--set", "algo.num_epochs=1", "--set", "torch_threads=1", "--set", "eval_interval=0",
           "--set", "checkpoint_interval=64"]  # a checkpoint every iteration
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(read_metrics(run_dir / "metrics.csv") if (run_dir / "metrics.csv").exists()
                                         else []) < 2:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert err.endswith(f"with: drl train --resume {run_dir}\n")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted_by"] == "SIGINT"
    saved = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["runner"]["global_step"]
    # stopped in a rollout: saved at the last iteration; inside an update: that iteration discarded and the
    # checkpoint of the one before (written every iteration here) kept: either way at the last logged step
    assert saved == summary["checkpoint_step"] == summary["steps"] > 0


# --- item 5: extending a run; a finished run is left alone -------------------------------------
def test_resume_with_steps_extends_a_finished_run(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--steps", "256", "--run-dir", str(run_dir)]) == 0
    latest = run_dir / "checkpoints" / "latest.pt"
    files = [latest, run_dir / "metrics.csv", run_dir / "summary.json", run_dir / "config.yaml"]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert capsys.readouterr().out == (f"run '{run_dir}' is already finished (256 steps): nothing to do; extend "
                                       f"it with: drl train --resume {run_dir} --steps N\n")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert main(["train", "--resume", str(run_dir), "--steps", "200"]) == 2
    assert capsys.readouterr().err == (f"drl train: error: --steps 200 is below the 256 steps '{run_dir}' has "
                                       "already done; give --steps >= 256 to extend it\n")
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    assert main(["train", "--resume", str(run_dir), "--steps", "512"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 512
    assert _steps(run_dir) == ALL_STEPS
    assert "total_steps: 512" in (run_dir / "config.yaml").read_text()
    assert load_checkpoint(latest)["runner"]["global_step"] == 512


def test_resume_with_steps_rounds_up_like_a_fresh_run_and_config_agrees(tmp_path, capsys):
    """--steps 300 with 64 steps per iteration: 5 whole iterations (320), said once, recorded in config.yaml."""
    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--steps", "128", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--steps", "300"]) == 0
    assert "note: total_steps 300 rounded up to 320" in capsys.readouterr().err
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 320
    assert "total_steps: 320" in (run_dir / "config.yaml").read_text()
    assert _steps(run_dir) == [64, 128, 192, 256, 320]


def test_resume_on_another_device(tmp_path, capsys, monkeypatch):
    """A run whose config names a device this machine lacks continues with --resume RUN --device cpu;
    the config follows the device it continues on."""
    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--steps", "128", "--run-dir", str(run_dir)]) == 0
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("device: cpu", "device: cuda:0"))
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["train", "--resume", str(run_dir), "--steps", "256"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert main(["train", "--resume", str(run_dir), "--steps", "256", "--device", "cpu"]) == 0
    assert "device: cpu" in config.read_text()
    assert _steps(run_dir) == [64, 128, 192, 256]


def test_a_run_in_progress_is_neither_resumed_nor_overwritten_meanwhile(tmp_path, capsys):
    """While a process trains in a folder (it holds the folder's lock), --resume and --overwrite are
    refused in one line and touch nothing; the lock goes with the process, so a later resume works."""
    from drl.runners.common import RunLock

    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--steps", "128", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    lock = RunLock(run_dir).acquire()  # stands in for a process still training there
    try:
        assert main(["train", "--resume", str(run_dir), "--steps", "256"]) == 2
        assert capsys.readouterr().err == (f"drl train: error: run folder '{run_dir}' is in use by another drl "
                                           f"process (pid {os.getpid()}); wait for it to finish or stop it first\n")
        assert main(["train", *CLI_TINY, "--run-dir", str(run_dir), "--overwrite"]) == 2
        assert "is in use by another drl process" in capsys.readouterr().err
        assert _steps(run_dir) == [64, 128]
    finally:
        lock.release()
    assert main(["train", "--resume", str(run_dir), "--steps", "256"]) == 0
    assert _steps(run_dir) == [64, 128, 192, 256]


def test_a_second_ctrl_c_while_finishing_still_names_the_resume_command(tmp_path, monkeypatch, capsys):
    """Two signals while the run writes its summary (after latest.pt): the second one ends the process
    at once, and the one line it prints still says how to continue."""
    import drl.plotting

    def plot_runs(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the first only sets the flag
        os.kill(os.getpid(), signal.SIGINT)  # the second raises here
        raise AssertionError("not reached")

    monkeypatch.setattr(drl.plotting, "plot_runs", plot_runs)
    run_dir = tmp_path / "run"
    assert main(["train", *CLI_TINY, "--run-dir", str(run_dir)]) == 130
    assert capsys.readouterr().err == (f"drl train: interrupted by SIGINT; continue from its newest checkpoint with: "
                                       f"drl train --resume {run_dir}\n")
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
