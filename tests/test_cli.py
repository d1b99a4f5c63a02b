"""The `drl` command: every subcommand runs, and bad input gets one clear error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drl.cli import main

TINY = ["--steps", "512", "--num-envs", "2", "--no-progress", "--device", "cpu", "--set", "algo.num_steps=64",
        "--set", "algo.minibatch_size=64", "--set", "algo.num_epochs=1", "--set", "eval_episodes=2",
        "--set", "env.num_eval_envs=2"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "ppo", "--env", "CartPole-v1", "--run-dir", str(run_dir), *TINY]) == 0
    return run_dir


def test_train_prints_summary_and_run_folder(trained_run, capsys):
    assert (trained_run / "summary.json").is_file()
    run_dir = trained_run.parent / "again"
    assert main(["train", "ppo", "--env", "CartPole-v1", "--seed", "3", "--run-dir", str(run_dir), *TINY]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {run_dir}" in out
    assert json.loads((run_dir / "summary.json").read_text())["seed"] == 3


def test_config_file_and_set_overrides(tmp_path):
    config = tmp_path / "my.yaml"
    config.write_text("agent: ppo\nenv:\n  id: CartPole-v1\n  num_envs: 2\nalgo:\n  learning_rate: 0.0005\n")
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config), "--run-dir", str(run_dir), *TINY,
                 "--set", "algo.actor_hidden=[32]"]) == 0
    saved = (run_dir / "config.yaml").read_text()
    assert "learning_rate: 0.0005" in saved and "- 32" in saved and "total_steps: 512" in saved


def test_eval_and_video(trained_run, tmp_path, capsys):
    assert main(["eval", str(trained_run), "--episodes", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["episodes"] == 2 and result["mean_return"] > 0
    assert main(["eval", str(trained_run), "--episodes", "1", "--video", "--video-dir", str(tmp_path)]) == 0
    video = Path(json.loads(capsys.readouterr().out)["video"])
    assert video.suffix == ".mp4" and video.stat().st_size > 1000


def test_list_shows_agents_envs_configs(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for text in ("ppo", "drl/CartPole-v0", "drl/HalfCheetah-v0", "drl/PandaPickPlace-v0", "mujoco-warp",
                 "CartPole-v1", "happo", "mappo", "drl/Rendezvous-v0",
                 "camrl", "mt-ppo", "happo-competitive", "drl/PursuitEvasion-v0"):
        assert text in out


def test_plot(trained_run, tmp_path):
    out = tmp_path / "curves.png"
    assert main(["plot", str(trained_run), str(trained_run), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "algo.lr=0.1"], "unknown config key 'algo.lr'; valid keys of algo: ['num_steps'"),
        (["--set", "algo.learning_rate=-1"], "config key 'algo.learning_rate': must be > 0, got -1.0"),
        (["--set", "algo.learning_rate=fast"], "config key 'algo.learning_rate': must be a number, got 'fast'"),
        (["--set", "algo.minibatch_size=100"], "config key 'algo.minibatch_size': must divide the rollout batch"),
        (["--set", "algo.activation=sigmoid"], "config key 'algo.activation': must be one of ['tanh', 'relu'"),
        (["--set", "env.num_envs=0"], "config key 'env.num_envs': must be >= 1, got 0"),
        (["--set", "bogus=1"], "unknown config key 'bogus'; valid keys: ['agent', 'env'"),
        (["--set", "noequals"], "override 'noequals' must look like key.subkey=value"),
        (["--device", "tpu"], "config key 'device': must be 'auto', 'cpu', 'cuda' or 'cuda:<index>'"),
        (["--config", "/nonexistent/x.yaml"], "config file '/nonexistent/x.yaml' does not exist"),
    ],
)
def test_bad_config_gives_one_clear_error(tmp_path, capsys, args, message):
    run_dir = tmp_path / "run"
    code = main(["train", "ppo", "--env", "CartPole-v1", "--run-dir", str(run_dir), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert err.count("\n") == 1  # one line, no traceback
    assert not run_dir.exists()  # stopped before anything ran


def test_unknown_agent_and_env(tmp_path, capsys):
    assert main(["train", "sarsa", "--env", "CartPole-v1", "--run-dir", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown agent 'sarsa'; valid agents: [" in err and "'ppo'" in err
    assert main(["train", "ppo", "--env", "NoSuchEnv-v9", "--run-dir", str(tmp_path / "b"), "--no-progress"]) == 2
    assert "unknown env id 'NoSuchEnv-v9'" in capsys.readouterr().err


def test_corrupt_and_foreign_checkpoints(trained_run, tmp_path, capsys):
    import shutil

    import torch

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    (broken / "checkpoints" / "best.pt").write_bytes(b"not a checkpoint at all")
    assert main(["eval", str(broken)]) == 2
    assert "is not a loadable drl checkpoint" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(3)}, broken / "checkpoints" / "best.pt")
    assert main(["eval", str(broken)]) == 2
    assert "not a drl checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "is not a drl run folder" in capsys.readouterr().err


def test_resume_refuses_extra_flags(trained_run, capsys):
    assert main(["train", "--resume", str(trained_run), "--seed", "10"]) == 2
    assert "--resume continues a run with its saved config (only --steps and --device may change); drop ['--seed']" in \
        capsys.readouterr().err
    assert main(["train", "--resume", str(trained_run), "--overwrite"]) == 2
    assert "drop ['--overwrite']" in capsys.readouterr().err


def test_console_script_entry_point():
    out = subprocess.run([sys.executable, "-m", "drl.cli", "--help"], capture_output=True, text=True, check=True)
    for command in ("train", "eval", "list", "plot", "demos"):
        assert command in out.stdout


def test_demos_command_writes_a_loadable_file(tmp_path, capsys):
    pytest.importorskip("pybullet")
    from envs.tasks.demos import load_demos

    out = tmp_path / "reach.pt"
    assert main(["demos", "drl/PandaReach-v0", "--episodes", "4", "--num-envs", "2", "--out", str(out)]) == 0
    assert "success rate" in capsys.readouterr().out
    demos = load_demos(out)
    assert demos["meta"]["episodes"] == 4 and demos["actions"].shape[1] == 3


def test_missing_backend_names_the_pip_command(tmp_path):
    """In a fresh interpreter where warp cannot be imported, the error names the pip command."""
    run_dir = tmp_path / "run"
    code = (
        "import sys; sys.modules['warp'] = None; sys.modules['mujoco_warp'] = None\n"
        "from drl.cli import main\n"
        f"sys.exit(main(['train', 'ppo', '--env', 'drl/HalfCheetah-v0', '--steps', '64', '--no-progress',"
        f" '--run-dir', {str(run_dir)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "pip install 'drl[mjwarp]'" in result.stderr
    assert not run_dir.exists()
