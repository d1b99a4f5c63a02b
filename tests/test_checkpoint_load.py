"""Loading a run's checkpoint or config that does not match: one CheckpointError/ConfigError line, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from drl import api
from drl.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from drl.cli import main
from drl.config import ConfigError

TINY = {"total_steps": 16, "device": "cpu", "progress": False, "eval_episodes": 1, "checkpoint_interval": 0,
        "env": {"num_envs": 2, "num_eval_envs": 1},
        "algo": {"num_steps": 8, "minibatch_size": 16, "num_epochs": 1, "actor_hidden": [16], "critic_hidden": [16],
                 "compile": False, "numba_actor": False}}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("ckload") / "run"
    api.train(api.load_config("ppo", "drl/CartPole-v0", overrides=TINY), run_dir)
    return run_dir


def _copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    (target / "checkpoints").mkdir(parents=True)
    for rel in ("config.yaml", "checkpoints/latest.pt", "checkpoints/best.pt"):
        if (run / rel).exists():
            (target / rel).write_bytes((run / rel).read_bytes())
    return target


def test_other_config_shape_mismatch_names_tensor_and_shapes(run, tmp_path):
    copy = _copy_run(run, tmp_path)
    cfg = yaml.safe_load((copy / "config.yaml").read_text())
    cfg["algo"]["actor_hidden"] = [32]
    (copy / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(CheckpointError) as err:
        api.load_agent(copy, "latest")
    assert str(err.value) == (f"checkpoint '{copy / 'checkpoints' / 'latest.pt'}': agent_state.model.actor_body.0."
                              "weight has shape [16, 4], this config builds [32, 4]; was it trained with another "
                              "config?")


def test_marker_but_wrong_contents(run, tmp_path):
    copy = _copy_run(run, tmp_path)
    path = copy / "checkpoints" / "latest.pt"
    data = load_checkpoint(path)
    del data["agent_state"]["optimizer"]
    save_checkpoint(path, {k: v for k, v in data.items() if k not in ("format", "version")})
    with pytest.raises(CheckpointError, match=r"agent_state lacks \['optimizer'\]; was it trained with another"):
        api.load_agent(copy, "latest")
    save_checkpoint(path, {"agent": "ppo"})  # the marker, nothing else
    with pytest.raises(CheckpointError, match="has no 'agent_state' entry"):
        api.load_agent(copy, "latest")


def test_resume_with_mismatching_checkpoint_is_one_line(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    path = copy / "checkpoints" / "latest.pt"
    data = load_checkpoint(path)
    data["agent_state"]["model"]["critic.0.weight"] = torch.zeros(3, 3)
    save_checkpoint(path, {k: v for k, v in data.items() if k not in ("format", "version")})
    # resuming a finished run may be refused for another reason first; any refusal is one line, exit 2
    assert main(["train", "--resume", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("drl train: error: ") and "\n" not in err


@pytest.mark.parametrize("content", ["", "# nothing\n", "{}\n", "env:\n  id: CartPole-v1\n"])
def test_resume_with_empty_or_partial_config_is_refused(run, tmp_path, content):
    copy = _copy_run(run, tmp_path)
    (copy / "config.yaml").write_text(content)
    with pytest.raises(ConfigError, match=r"config\.yaml' is (empty|missing \[).*a run writes its whole config"):
        api.resume(copy)
    with pytest.raises(ConfigError, match="a run writes its whole config"):
        api.load_agent(copy)


def test_resume_with_non_mapping_config_is_refused(run, tmp_path, capsys):
    copy = _copy_run(run, tmp_path)
    (copy / "config.yaml").write_text("- 1\n- 2\n")
    assert main(["train", "--resume", str(copy)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"drl train: error: config file '{copy / 'config.yaml'}' must hold a mapping at the top level, "
                   "got list")
