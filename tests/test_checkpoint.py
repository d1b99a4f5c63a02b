"""Checkpoints: atomic save, safe (weights_only) load with clear errors, RNG state round trip."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from drl.checkpoint import FORMAT, CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def _touch(path: str) -> None:
    """Side effect a malicious pickle would run on load."""
    Path(path).write_text("pwned")


class Payload:
    """An arbitrary Python object whose unpickling would run code (creates a file)."""

    def __init__(self, sentinel: str):
        self.sentinel = sentinel

    def __reduce__(self):
        return (_touch, (self.sentinel,))


def _nested_payload() -> dict:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    # Adam's per-parameter state as after one step, filled by hand (a real opt.step() costs seconds of imports)
    for param in net.parameters():
        opt.state[param] = {"step": torch.tensor(1.0), "exp_avg": torch.randn_like(param),
                            "exp_avg_sq": torch.rand_like(param)}
    return {
        "agent": {"model": net.state_dict(), "optimizer": opt.state_dict(), "obs_rms": {"mean": torch.ones(3)}},
        "step": 1234,
        "config": {"agent": "ppo", "algo": {"gamma": 0.99, "actor_hidden": [64, 64], "target_kl": None}},
        "best_return": -12.5,
    }


def test_save_load_round_trip_nested(tmp_path):
    payload = _nested_payload()
    path = save_checkpoint(tmp_path / "ckpt.pt", payload)
    assert path == tmp_path / "ckpt.pt"
    data = load_checkpoint(path)
    assert data["format"] == FORMAT and data["version"] == 1
    assert data["step"] == 1234 and data["best_return"] == -12.5
    assert data["config"] == payload["config"]
    for key, value in payload["agent"]["model"].items():
        torch.testing.assert_close(data["agent"]["model"][key], value, rtol=0, atol=0)
    opt_state = data["agent"]["optimizer"]
    assert opt_state["param_groups"][0]["lr"] == 1e-3
    torch.testing.assert_close(opt_state["state"][0]["exp_avg"], payload["agent"]["optimizer"]["state"][0]["exp_avg"])
    # a loaded state dict can be put back into a module
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net.load_state_dict(data["agent"]["model"])
    torch.testing.assert_close(net[0].weight, payload["agent"]["model"]["0.weight"])


def test_save_creates_parent_dirs_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "run" / "checkpoints" / "latest.pt"
    save_checkpoint(path, {"step": 1})
    assert sorted(os.listdir(path.parent)) == ["latest.pt"]


def test_save_replaces_existing_file(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2, "extra": torch.arange(3)})
    assert sorted(os.listdir(tmp_path)) == ["latest.pt"]
    data = load_checkpoint(path)
    assert data["step"] == 2 and data["extra"].tolist() == [0, 1, 2]


def test_failed_save_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):  # noqa: B017 - torch.save raises pickling errors of varying type
        save_checkpoint(path, {"step": 2, "bad": lambda x: x})  # a lambda cannot be pickled
    assert sorted(os.listdir(tmp_path)) == ["latest.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"checkpoint '.*nope\.pt' does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match=r"noise\.pt' is not a loadable drl checkpoint \(corrupt, truncated"):
        load_checkpoint(path)


def test_truncated_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, _nested_payload())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="is not a loadable drl checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"a": 1}, path)
    expected = r"is a torch file but not a drl checkpoint \(no 'drl-checkpoint' marker\)"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(path)
    tensor_only = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_only)
    with pytest.raises(CheckpointError, match="not a drl checkpoint"):
        load_checkpoint(tensor_only)


def test_other_version(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": 99}, path)
    with pytest.raises(CheckpointError, match="has checkpoint version 99, this drl reads 1"):
        load_checkpoint(path)


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_arbitrary_pickled_object_is_refused(tmp_path, writer):
    sentinel = tmp_path / "sentinel.txt"
    path = tmp_path / "evil.pt"
    payload = {"format": FORMAT, "version": 1, "obj": Payload(str(sentinel))}
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    with pytest.raises(CheckpointError, match="is not a loadable drl checkpoint"):
        load_checkpoint(path)
    assert not sentinel.exists()  # weights_only loading never ran the object's code


def _draws() -> tuple:
    return (
        random.random(),
        random.gauss(0.0, 1.0),
        np.random.rand(4).tolist(),
        np.random.standard_normal(3).tolist(),
        torch.rand(4).tolist(),
        torch.randn(3).tolist(),
    )


def test_rng_state_round_trip_through_checkpoint(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    # leave a cached Gaussian in numpy's and python's state so the cache must be restored too
    np.random.standard_normal()
    random.gauss(0.0, 1.0)
    state = rng_state()
    first = _draws()
    save_checkpoint(tmp_path / "rng.pt", {"rng": state})
    # move every generator on
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draws() != first
    set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    assert _draws() == first
    # and straight from the in-memory state
    set_rng_state(state)
    assert _draws() == first
