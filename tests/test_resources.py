"""Memory checks before allocating: the bytes needed and available, named keys, nothing built on refusal."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from drl import api, resources
from drl.config import ConfigError, merge
from drl.resources import (
    MAX_ASYNC_ADAPTER_ENVS,
    MAX_SYNC_ADAPTER_ENVS,
    ResourceError,
    available_bytes,
    check_env_fits,
    check_fits,
    check_storage_fits,
    per_env_bytes,
    step_bytes,
    storage_bytes,
)
from drl.storage import Field

TINY = {"total_steps": 16, "device": "cpu", "progress": False, "eval_episodes": 1,
        "env": {"num_envs": 2, "num_eval_envs": 1},
        "algo": {"num_steps": 8, "minibatch_size": 16, "num_epochs": 1, "compile": False, "numba_actor": False}}


def test_step_and_storage_bytes_by_hand():
    fields = {"obs": Field((4,)), "actions": Field((), torch.int64), "done": Field((), torch.bool),
              "obs/critic": Field((2, 3), torch.float64)}
    assert step_bytes(fields) == 4 * 4 + 8 + 1 + 6 * 8
    assert storage_bytes(2048, 8, fields) == 2048 * 8 * 73


def test_available_bytes_reads_meminfo():
    text = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    match = re.search(r"^MemAvailable:\s+(\d+) kB", text, re.M)
    if match is None:
        assert available_bytes("cpu") is None
        return
    kb = int(match.group(1))
    assert abs(available_bytes("cpu") - kb * 1024) < 2**30  # read again a moment later: within 1 GiB
    assert available_bytes("meta") is None  # unknown device: no check


def test_check_fits_message(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 1000)
    check_fits(1000, "cpu", "x", "y")  # exactly fits
    with pytest.raises(ResourceError) as err:
        check_fits(1536, "cpu", "the thing", "lower config key 'a.b'")
    assert str(err.value) == ("the thing needs 1.5 KiB (1,536 bytes) on cpu, but only 1000 B (1,000 bytes) is "
                              "available; lower config key 'a.b'")
    assert isinstance(err.value, ConfigError)  # the CLI reports it like any bad config value
    monkeypatch.setattr(resources, "available_bytes", lambda device: None)
    check_fits(10**30, "cpu", "x", "y")  # unknown memory: nothing refused


def test_storage_check_names_both_keys(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 10**9)
    fields = {"obs": Field((4,)), "rewards": Field(())}
    assert check_storage_fits(16, 2, fields, "cpu", extra_bytes_per_step=5) == 16 * 2 * 25
    with pytest.raises(ResourceError) as err:
        check_storage_fits(10**9, 8, fields, "cpu", extra_bytes_per_step=5)
    assert str(err.value) == (
        "the rollout storage (algo.num_steps x env.num_envs = 1,000,000,000 x 8 steps of 25 bytes) needs 186 GiB "
        "(200,000,000,000 bytes) on cpu, but only 954 MiB (1,000,000,000 bytes) is available; lower config key "
        "'algo.num_steps' or 'env.num_envs'"
    )


class _FakeBatchedEnv:
    """Per-env tensors, a shared constant, a view sharing storage, and a nested holder of per-env arrays."""

    def __init__(self, num_envs: int):
        self.num_envs = num_envs
        self.state = torch.zeros(num_envs, 3)  # 12 bytes per env
        self.view = self.state[:, :2]  # same storage: not counted again
        self.steps = torch.zeros(num_envs, dtype=torch.int64)  # 8
        self.constant = torch.zeros(5, 7)  # shared by every env: not counted
        self.groups = {"mask": torch.zeros(num_envs, dtype=torch.bool)}  # 1
        self.data = type("Data", (), {})()
        self.data.qpos = torch.zeros(num_envs, 4, dtype=torch.float64)  # 32


def test_per_env_bytes_by_hand():
    assert per_env_bytes(_FakeBatchedEnv(2)) == 12 + 8 + 1 + 32
    assert per_env_bytes(_FakeBatchedEnv(3)) == 12 + 8 + 1 + 32


def test_torch_env_count_checked_on_a_probe(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 10**6)
    check_env_fits("drl/CartPole-v0", {"env.num_envs": 64, "env.num_eval_envs": 4}, "cpu")
    with pytest.raises(ResourceError) as err:
        check_env_fits("drl/CartPole-v0", {"env.num_envs": 10**9, "env.num_eval_envs": 4}, "cpu")
    msg = str(err.value)
    match = re.fullmatch(r"env\.num_envs \+ env\.num_eval_envs = 1,000,000,004 copies of 'drl/CartPole-v0' \(([\d,]+) "
                         rf"bytes of state each, x{resources.ENV_WORKING_FACTOR} while stepping\) needs .* \(([\d,]+) "
                         r"bytes\) on cpu, but only .* \(1,000,000 bytes\) is available; lower config key "
                         r"'env\.num_envs' or 'env\.num_eval_envs'", msg)
    assert match, msg
    per_copy, needed = (int(g.replace(",", "")) for g in match.groups())
    assert per_copy >= 16  # at least CartPole's float32 state of 4
    assert needed == per_copy * resources.ENV_WORKING_FACTOR * 1_000_000_004


@pytest.mark.parametrize(("vectorization", "limit"), [("sync", MAX_SYNC_ADAPTER_ENVS),
                                                      ("async", MAX_ASYNC_ADAPTER_ENVS)])
def test_gymnasium_copies_are_bounded_before_building(vectorization, limit):
    check_env_fits("CartPole-v1", {"env.num_envs": limit}, "cpu", vectorization)
    with pytest.raises(ResourceError) as err:
        check_env_fits("CartPole-v1", {"env.num_envs": 8, "env.num_eval_envs": limit + 1}, "cpu", vectorization)
    assert str(err.value).startswith(f"config key 'env.num_eval_envs': {limit + 1:,} copies of the gymnasium env "
                                     f"'CartPole-v1' ({vectorization}: ")


@pytest.mark.parametrize(("overrides", "keys"), [
    ({"env": {"id": "drl/CartPole-v0", "num_envs": 10**9}}, "env.num_envs"),
    ({"env": {"id": "drl/CartPole-v0"}, "algo": {"num_steps": 10**12, "minibatch_size": 8}}, "algo.num_steps"),
    ({"env": {"id": "CartPole-v1", "num_envs": 10**8}}, "env.num_envs"),
])
def test_training_refuses_before_allocating(tmp_path, monkeypatch, overrides, keys):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 10**8)
    cfg = api.load_config("ppo", overrides=merge(TINY, overrides))
    run_dir = tmp_path / "run"
    with pytest.raises(ResourceError, match=re.escape(keys)):
        api.train(cfg, run_dir)
    assert not run_dir.exists()  # refused before the folder was made


@pytest.mark.parametrize(("num", "text"), [(0, "0 B"), (1023, "1023 B"), (1024, "1 KiB"), (1536, "1.5 KiB"),
                                           (10**9, "954 MiB"), (2**60, "1 EiB"), (10**21, "~10**21 B"),
                                           (10**400, "~10**400 B")])
def test_format_bytes(num, text):
    assert resources.format_bytes(num) == text


def test_absurd_storage_is_refused_in_one_short_line(monkeypatch):
    monkeypatch.setattr(resources, "available_bytes", lambda device: 2**30)
    with pytest.raises(ResourceError) as err:
        check_storage_fits(10**400, 8, {"obs": Field((4,))}, "cpu")
    assert str(err.value) == ("the rollout storage (algo.num_steps x env.num_envs = ~10**400 x 8 steps of 16 bytes) "
                              "needs ~10**402 B (~10**402 bytes) on cpu, but only 1 GiB (1,073,741,824 bytes) is "
                              "available; lower config key 'algo.num_steps' or 'env.num_envs'")
