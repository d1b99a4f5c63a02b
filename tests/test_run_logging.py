"""What a run prints and records: the stdout table, the rolling episode window, summary metadata,
TensorBoard hparams, step rounding, and MuJoCo's warnings."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import drl
from drl import api
from drl.logging import ConsoleTable, EpisodeWindow, RunLogger

ROOT = Path(__file__).resolve().parents[1]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _row(iteration: int, eval_return: float = math.nan) -> dict:
    return {"global_step": 100 * iteration, "iteration": iteration, "episode_return": 1.5, "episode_length": 10.0,
            "episodes": 1, "eval_return": eval_return, "policy_loss": -0.25, "value_loss": 2.0, "entropy": 0.5,
            "sps": 1000.0, "wall_s": 1.0}


def test_console_table_prints_by_time_evals_and_last_row():
    clock, out = FakeClock(), io.StringIO()
    table = ConsoleTable(out, log_interval=0, seconds=10.0, clock=clock)
    table.add(_row(1))          # first row: always
    clock.now = 5.0
    table.add(_row(2))          # 5 s after the last print: held back
    clock.now = 10.5
    table.add(_row(3))          # 10.5 s: printed
    clock.now = 11.0
    table.add(_row(4, 42.0))    # has an evaluation: printed
    clock.now = 12.0
    table.add(_row(5))          # held back ...
    table.finish()              # ... and printed at the end
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["global_step", "iter", "ep_return", "ep_length", "eval_return", "policy_loss",
                                "value_loss", "entropy", "sps", "time_s"]
    assert [line.split()[1] for line in lines[1:]] == ["1", "3", "4", "5"]
    assert lines[1].split() == ["100", "1", "1.5", "10", "-", "-0.25", "2", "0.5", "1000", "1"]
    assert lines[3].split()[4] == "42"


def test_console_table_gains_the_losses_that_start_after_a_warm_up():
    """Off-policy runs log no loss before learning_starts: the columns appear with the first row that has
    them (under a new header line), and rows without them show '-'."""
    out = io.StringIO()
    table = ConsoleTable(out, log_interval=1, clock=FakeClock())
    warm_up = {k: v for k, v in _row(1).items() if not k.endswith("_loss") and k != "entropy"}
    table.add(warm_up)
    table.add({**_row(2), "actor_loss": -3.0, "value_loss": 2.0})
    table.add(warm_up | {"iteration": 3})
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["global_step", "iter", "ep_return", "ep_length", "eval_return", "sps", "time_s"]
    assert lines[2].split() == ["global_step", "iter", "ep_return", "ep_length", "eval_return", "policy_loss",
                                "value_loss", "actor_loss", "entropy", "sps", "time_s"]
    assert lines[3].split() == ["200", "2", "1.5", "10", "-", "-0.25", "2", "-3", "0.5", "1000", "1"]
    assert lines[4].split()[5:9] == ["-", "-", "-", "-"] and len(lines) == 5


def test_console_table_shows_declared_losses_from_the_first_row():
    """An agent that declares its metric columns (RARL: each player's losses, logged on alternate iterations)
    gets their columns from the first row, '-' while empty, and one header line only."""
    out = io.StringIO()
    table = ConsoleTable(out, log_interval=1, clock=FakeClock(), declared=["a/policy_loss", "b/policy_loss", "beta"])
    base = {k: v for k, v in _row(1).items() if not k.endswith("_loss") and k != "entropy"}
    table.add(base | {"a/policy_loss": 0.5})
    table.add(base | {"iteration": 2, "b/policy_loss": -0.25})
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["global_step", "iter", "ep_return", "ep_length", "eval_return", "a/policy_loss",
                                "b/policy_loss", "sps", "time_s"]
    assert lines[1].split()[5:7] == ["0.5", "-"] and lines[2].split()[5:7] == ["-", "-0.25"] and len(lines) == 3


def test_console_table_every_k_iterations():
    out = io.StringIO()
    table = ConsoleTable(out, log_interval=3, clock=FakeClock())
    for i in range(1, 8):
        table.add(_row(i))
    table.finish()
    assert [line.split()[1] for line in out.getvalue().splitlines()[1:]] == ["1", "3", "6", "7"]


def test_run_logger_prints_header_and_table_on_a_non_terminal(tmp_path):
    out = io.StringIO()  # not a terminal: the progress bar is replaced by the table even with progress=True
    logger = RunLogger(tmp_path, 1000, progress=True, config={"agent": "ppo", "algo": {"learning_rate": 0.001}},
                       config_source="tuned config x.yaml", stream=out)
    header = out.getvalue().splitlines()
    assert header == [f"run folder: {tmp_path}", "config: tuned config x.yaml", "  agent=ppo algo.learning_rate=0.001"]
    logger.log(_row(1))
    logger.close()
    assert out.getvalue().splitlines()[-1].split()[:2] == ["100", "1"]


def test_cli_train_prints_header_and_rows_before_the_summary(tmp_path, capsys):
    from drl.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "ppo", "--env", "drl/CartPole-v0", "--run-dir", str(run_dir), "--steps", "256",
                 "--num-envs", "2", "--no-progress", "--set", "algo.num_steps=32", "--set", "eval_episodes=1",
                 "--set", "algo.minibatch_size=32", "--set", "algo.num_epochs=1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"run folder: {run_dir}"
    assert lines[1].startswith("config: tuned config ") and lines[1].endswith("drl-CartPole-v0.yaml + overrides")
    first_row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["global_step"])
    assert lines[first_row + 1].split()[:2] == ["64", "1"]
    assert lines.index("{") > first_row + 1  # the summary comes after the table


def test_episode_window_means_last_n():
    window = EpisodeWindow(size=3)
    assert math.isnan(window.mean_return) and math.isnan(window.mean_length)
    window.extend([1.0, 2.0], [10, 20])
    assert window.mean_return == 1.5 and window.mean_length == 15.0
    window.extend([3.0, 4.0], [30, 40])  # 1.0 falls out
    assert window.mean_return == 3.0 and window.mean_length == 30.0
    restored = EpisodeWindow(size=3)
    restored.load_state_dict(window.state_dict())
    assert restored.mean_return == 3.0


def test_episode_return_is_continuous_between_episode_ends(tmp_path):
    """Pendulum episodes last 200 steps: with 1 env and 64-step rollouts they end in iterations 4 and 7."""
    cfg = api.load_config("ppo", "drl/Pendulum-v0", overrides={
        "total_steps": 448, "progress": False, "device": "cpu", "eval_interval": 0, "eval_episodes": 1,
        "env": {"num_envs": 1, "num_eval_envs": 1}, "algo": {"num_steps": 64, "minibatch_size": 64, "num_epochs": 1}})
    run_dir, _ = api.train(cfg, tmp_path / "run")
    rows = _rows(run_dir)
    assert [r["episodes"] for r in rows] == ["0", "0", "0", "1", "0", "0", "1"]
    assert [r["episode_return"] for r in rows[:3]] == ["", "", ""]  # nothing finished yet
    first, second = float(rows[3]["iter_episode_return"]), float(rows[6]["iter_episode_return"])
    assert [float(r["episode_return"]) for r in rows[3:6]] == [first, first, first]  # carried, not empty
    assert rows[4]["iter_episode_return"] == ""
    assert float(rows[6]["episode_return"]) == pytest.approx((first + second) / 2, rel=1e-12)
    assert [float(r["episode_length"]) for r in rows[3:]] == [200.0, 200.0, 200.0, 200.0]


def test_steps_rounding_summary_metadata_and_hparams(tmp_path, capsys):
    cfg = api.load_config("ppo", "drl/CartPole-v0", overrides={
        "total_steps": 300, "progress": False, "device": "cpu", "eval_episodes": 1, "log_interval": -1,
        "env": {"num_envs": 2, "num_eval_envs": 1}, "algo": {"num_steps": 64, "minibatch_size": 64, "num_epochs": 1}})
    run_dir, summary = api.train(cfg, tmp_path / "run")
    assert ("note: total_steps 300 rounded up to 384 (3 whole iterations of num_steps x num_envs = 128); "
            "config.yaml records 384") in capsys.readouterr().err
    from drl.config import load_yaml

    assert load_yaml(run_dir / "config.yaml")["total_steps"] == 384
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved["steps"] == saved["total_steps"] == 384
    assert saved["drl_version"] == drl.__version__ and saved["torch_version"] == torch.__version__
    assert saved["command"] == sys.argv
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert saved["git_commit"] == head.stdout.strip() and isinstance(saved["git_dirty"], bool)
    else:
        assert saved["git_commit"] is None
    train_s = saved["wall_s"] - saved["eval_s"]
    assert saved["eval_s"] > 0 and saved["train_sps"] == pytest.approx(384 / train_s, rel=2e-2)
    assert saved["train_sps"] > saved["sps"]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["algo.num_steps"].number_value == 64 and hparams["env.id"].string_value == "drl/CartPole-v0"
    assert events.Scalars("hparam/final_eval_return")[0].value == pytest.approx(saved["final_eval_return"])


def test_git_commit_outside_a_checkout_is_none(tmp_path):
    from drl.logging import git_commit

    assert git_commit(tmp_path) == (None, None)


@pytest.mark.parametrize("env_id", ["HalfCheetah-v5", "drl/HalfCheetah-v0"])
def test_mujoco_warning_once_and_no_log_file_in_cwd(tmp_path, env_id):
    """gymnasium's MuJoCo ids and drl's MuJoCo Warp ids alike (their models load through MuJoCo's compiler)."""
    pytest.importorskip("mujoco")
    if env_id.startswith("drl/"):
        pytest.importorskip("mujoco_warp")
    code = (f"import envs\nfor _ in range(3):\n    envs.make_vec_env({env_id!r}, 2).close()\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    assert output.count("'settotalmass' is deprecated") == 1
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_redirected_stdout_shows_rows_while_training(tmp_path):
    """Piped stdout (not a terminal, progress bar on by default): header and rows arrive during the run."""
    import os

    proc = subprocess.Popen(
        [sys.executable, "-m", "drl.cli", "train", "ppo", "--env", "drl/CartPole-v0", "--steps", "10000000",
         "--num-envs", "4", "--run-dir", str(tmp_path / "run"), "--set", "algo.num_steps=16",
         "--set", "algo.minibatch_size=64", "--set", "algo.num_epochs=1", "--set", "log_interval=1",
         "--set", "eval_interval=0", "--set", "algo.compile=false"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        header = next(line for line in iter(proc.stdout.readline, "") if line.split()[:1] == ["global_step"])
        rows = [proc.stdout.readline().split() for _ in range(2)]
        assert proc.poll() is None  # still training: nothing waited for the end
    finally:
        proc.kill()
        proc.wait()
    assert lines[0] == f"run folder: {tmp_path / 'run'}\n"
    assert lines[1] == "config: tuned config " + str(Path("configs") / "ppo" / "drl-CartPole-v0.yaml") + \
        " + overrides\n"
    assert header.split()[1] == "iter" and [r[:2] for r in rows] == [["64", "1"], ["128", "2"]]


def test_hparams_take_an_int_too_large_for_a_double_as_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    from drl.logging import write_hparams

    huge = 10**400  # an unchecked int field (e.g. rnn_hidden_size of a feed-forward policy) can hold anything
    write_hparams(tmp_path, {"algo": {"rnn_hidden_size": huge, "num_steps": 2**53}}, {"final_eval_return": 1.0})
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["algo.rnn_hidden_size"].string_value == str(huge)
    assert hparams["algo.num_steps"].number_value == 2**53
