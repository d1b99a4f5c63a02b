"""Checkpoints: atomic save, safe (weights_only) load with clear errors, RNG state round trip."""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from drl.checkpoint import (
    FORMAT,
    CheckpointError,
    check_state_matches,
    load_checkpoint,
    load_run_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


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
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert not sentinel.exists()  # weights_only loading never ran the object's code
    msg = str(err.value)
    # what was refused is named (the global the pickle would import), and the unsafe option is never suggested
    assert msg == (f"checkpoint '{path}' was refused: loading it would import '{__name__}._touch', and a drl "
                   "checkpoint holds only tensors and plain Python data (a file from other code, or tampered with)")
    assert "weights_only" not in msg and "\n" not in msg


def test_numpy_array_in_a_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "np.pt"
    torch.save({"format": FORMAT, "version": 1, "obs_mean": np.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=r"was refused: loading it would import 'numpy\.[\w.]+'") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value)


def test_corrupt_files_never_relay_the_unsafe_advice(tmp_path):
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = str(err.value)
    assert "is not a loadable drl checkpoint (corrupt, truncated, or not a torch file)" in msg
    assert "weights_only" not in msg and "Weights only" not in msg and "\n" not in msg


def _run_payload() -> dict:
    return {"agent": "ppo", "env": "drl/CartPole-v0", "config": {"agent": "ppo"}, "agent_state": {},
            "runner": {"global_step": 0}, "rng": rng_state(), "generator": torch.Generator().get_state()}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"agent_state": None}, "has no 'agent_state' entry"),
        ({"agent_state": [1, 2]}, "'agent_state' is a list, expected mapping"),
        ({"rng": "seed"}, "'rng' is a str, expected mapping"),
        ({"generator": 3}, "'generator' is a int, expected tensor"),
        ({"rng": {"python": 1}}, "'rng' lacks ['numpy', 'torch']"),
    ],
)
def test_run_checkpoint_structure_is_checked(tmp_path, change, expected):
    payload = _run_payload()
    for key, value in change.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    path = save_checkpoint(tmp_path / "latest.pt", payload)
    with pytest.raises(CheckpointError) as err:
        load_run_checkpoint(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_run_checkpoint_complete_loads(tmp_path):
    path = save_checkpoint(tmp_path / "latest.pt", _run_payload())
    assert load_run_checkpoint(path)["runner"] == {"global_step": 0}


def test_state_shape_mismatch_names_the_tensor_and_both_shapes():
    expected = {"model": {"actor.0.weight": torch.zeros(32, 4), "actor.0.bias": torch.zeros(32)}, "step": 1}
    found = {"model": {"actor.0.weight": torch.zeros(64, 4), "actor.0.bias": torch.zeros(64)}, "step": 7}
    with pytest.raises(CheckpointError) as err:
        check_state_matches(expected, found, "ckpt.pt")
    assert str(err.value) == ("checkpoint 'ckpt.pt': agent_state.model.actor.0.weight has shape [64, 4], this "
                              "config builds [32, 4]; was it trained with another config?")


@pytest.mark.parametrize(
    ("found", "expected"),
    [
        ({"model": {"w": torch.zeros(2)}}, "agent_state lacks ['step']"),
        ({"model": {"w": torch.zeros(2), "v": torch.zeros(1)}, "step": 1}, "agent_state.model has unexpected ['v']"),
        ({"model": [1], "step": 1}, "agent_state.model is a list, this agent keeps a mapping there"),
        ({"model": {"w": 3.0}, "step": 1}, "agent_state.model.w is a float, this agent keeps a tensor of shape [2]"),
        ({"model": {"w": torch.zeros(2)}, "step": 1, "betas": (0.9,)}, "agent_state has unexpected ['betas']"),
    ],
)
def test_state_structure_mismatch(found, expected):
    with pytest.raises(CheckpointError, match="was it trained with another config") as err:
        check_state_matches({"model": {"w": torch.zeros(2)}, "step": 1}, found, "c.pt")
    assert expected in str(err.value)
    check_state_matches({"model": {"w": torch.zeros(2)}, "step": 1}, {"model": {"w": torch.ones(2)}, "step": 5},
                        "c.pt")  # same structure: no error


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
