"""Config fuzzing: no mutated config ends in a traceback, a hang or an abort.

Valid tiny configs get one or two keys replaced by extreme or wrongly typed values (0, -1, 1e9,
1e30, inf, nan, strings, lists, nested mappings, unknown keys). Each goes through the real path:
``api.load_config`` (types and bounds), then building the runner (envs, agent, memory checks and
storage), then training when the config is still tiny (huge budgets are only built, never run).
Either it builds (and trains), or it stops with ONE
line: a :class:`ConfigError` that names a mutated key, or (for keys only the env or the machine can
judge: ``env.id``, ``env.kwargs``, ``device``) one of the errors the CLI reports as one line.
"""

from __future__ import annotations

import math
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from drl import api
from drl.cli import main
from drl.config import ConfigError, merge
from drl.registry import AGENTS, default_config_dict

BASES = {
    "torch": {"agent": "ppo", "total_steps": 32, "device": "cpu", "progress": False, "eval_episodes": 1,
              "torch_threads": 1, "env": {"id": "drl/CartPole-v0", "num_envs": 2, "num_eval_envs": 1},
              "algo": {"num_steps": 8, "minibatch_size": 8, "num_epochs": 1, "actor_hidden": [8],
                       "critic_hidden": [8], "compile": False, "numba_actor": False}},
    "gymnasium": {"agent": "ppo", "total_steps": 32, "device": "cpu", "progress": False, "eval_episodes": 1,
                  "torch_threads": 1, "env": {"id": "Pendulum-v1", "num_envs": 2, "num_eval_envs": 1},
                  "algo": {"num_steps": 8, "minibatch_size": 8, "num_epochs": 1, "actor_hidden": [8],
                           "critic_hidden": [8], "compile": False, "numba_actor": False}},
}


def _paths(data: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in data.items():
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, dict) and key != "kwargs":
            out.extend(_paths(value, path + "."))
    return out


KEYS = _paths(default_config_dict("ppo")) + ["env.kwargs.max_episode_steps", "bogus", "algo.bogus", "env.bogus"]
# keys whose bad values only the env or the machine can judge: they may fail with the env's own one-line error
# keys checked against the env when the run is built (obs groups: whether the env has that group)
RUNTIME_KEYS = ("env.id", "env.kwargs", "device", "algo.actor_obs", "algo.critic_obs")
RUNTIME_ERRORS = (ConfigError, gym.error.Error, ValueError, TypeError, ImportError)

EXTREMES = [0, -1, 1, 3, 2**31, 2**64, 10**9, 10**30, 1e9, 1e30, -1e30, 1.5, 0.5, -0.0, math.inf, -math.inf,
            math.nan, True, False, None, "", "abc", "1e6", "nan", [], [0], [10**9], [1, "x"], {}, {"a": 1},
            {"nested": {"x": math.nan}}, "drl/Nope-v0", "cuda:7", 10**400, "1e999999999", "9" * 5000]


@contextmanager
def _time_limit(seconds: int):
    """Fail (rather than hang) when the body runs longer than ``seconds``."""

    def _raise(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _set(raw: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    parts = path.split(".")
    update: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        update = {part: update}
    out = merge(raw, update)
    if isinstance(value, dict) and parts[-1] != "kwargs":  # merge() would merge a mapping: replace it
        node = out
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return out


def _lookup(data: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _mentions(message: str, paths: list[str]) -> bool:
    for path in paths:
        parts = path.split(".")
        # the key itself, or its leaf (e.g. a divisibility message naming algo.num_steps x env.num_envs), or
        # the enclosing mapping (a mapping replaced by a scalar is reported at its own key)
        if path in message or f"'{parts[-1]}'" in message or f".{parts[-1]}" in message:
            return True
        if any(f"'{'.'.join(parts[:i])}'" in message for i in range(1, len(parts))):
            return True
    return False


def _build_runner(cfg, run_dir: Path) -> None:
    """Build the runner; train it too when the mutated config is still tiny (a real run, a second or less)."""
    spec = AGENTS[cfg.agent]
    runner = spec.runner_class(cfg, spec.agent_class, run_dir)
    if (cfg.total_steps <= 64 and cfg.eval_episodes <= 2 and cfg.algo.num_epochs <= 4
            and cfg.env.num_envs * cfg.algo.num_steps <= 64 and cfg.env.num_eval_envs <= 4):
        runner.train()
        event("trained")
        return
    runner.env.close()
    runner.eval_env.close()


# extremes of the right type, so that many mutated configs pass the type checks and reach the bounds,
# the memory checks and the runner
_DEFAULTS = {path: value for path, value in ((p, _lookup(default_config_dict("ppo"), p)) for p in KEYS)}
TYPED = {
    int: [0, 1, 2, 3, 16, 10**6, 10**9, 2**31 - 1, 2**63, 10**15, 10**16],
    float: [0.0, 1e-12, 1.0, 2.0, 1e9, 1e30, -1.0, 1e308],
    bool: [True, False],
    list: [[1], [8, 8], [4096], [65536, 2], [0, 8], [1] * 64],
    str: ["policy", "critic", "auto", "cpu", "CartPole-v1"],
}


def _value_for(path: str) -> st.SearchStrategy:
    default = _DEFAULTS.get(path)
    typed = TYPED.get(type(default)) if default is not None else TYPED[float]
    return st.one_of(st.sampled_from(EXTREMES), st.sampled_from(typed or EXTREMES))


mutations = st.lists(st.sampled_from(KEYS).flatmap(lambda path: st.tuples(st.just(path), _value_for(path))),
                     min_size=1, max_size=2, unique_by=lambda m: m[0])


@settings(max_examples=200, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(base=st.sampled_from(sorted(BASES)), changes=mutations)
def test_mutated_configs_build_or_fail_in_one_named_line(tmp_path_factory, base, changes):
    raw = BASES[base]
    for path, value in changes:
        raw = _set(raw, path, value)
    paths = [path for path, _ in changes]
    runtime = any(path.startswith(RUNTIME_KEYS) for path in paths)
    allowed = RUNTIME_ERRORS if runtime else (ConfigError,)
    run_dir = tmp_path_factory.mktemp("fuzz") / "run"
    with _time_limit(60):
        try:
            cfg = api.load_config(overrides=raw)
            _build_runner(cfg, run_dir)
            event("built")
        except allowed as err:
            event(f"refused: {type(err).__name__}")
            message = str(err)
            assert message and "\n" not in message, f"{changes}: not one line: {message!r}"
            if isinstance(err, ConfigError):
                assert _mentions(message, paths), f"{changes}: the message names no mutated key: {message}"


@pytest.mark.parametrize(("content", "expected"), [
    ("algo:\n  learning_rate: .nan\n", "config key 'algo.learning_rate': must be a finite number, got nan"),
    ("seed: -1\n", "config key 'seed': must be >= 0, got -1"),
    ("algo:\n  num_epochs: 1e30\n", "config key 'algo.num_epochs': must be <= 10000, got 1e+30"),
    ("env:\n  num_envs: 1e9\n", "config key 'env.num_envs': 1,000,000,000 copies of the gymnasium env"),
    ("algo:\n  num_steps: 1e12\n  minibatch_size: 8\n", "the rollout storage (algo.num_steps x env.num_envs"),
    ("total_steps: .inf\n", "config key 'total_steps': must be an integer, got inf"),
    ("torch_threads: 1e9\n", "config key 'torch_threads': must be <= 1024"),
])
def test_cli_reports_bad_config_files_in_one_line(tmp_path, capsys, content, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(merge(BASES["gymnasium"], {"env": {"id": "CartPole-v1"}}), sort_keys=False)
                      + content)
    run_dir = tmp_path / "run"
    with _time_limit(60):
        code = main(["train", "--config", str(config), "--run-dir", str(run_dir)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err and err.startswith(f"drl train: error: {expected}"), err
    assert not run_dir.exists()
