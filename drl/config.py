"""Typed configuration: dataclasses are the schema, YAML is their serialisation.

A config is built from defaults, then a YAML file, then ``--set a.b=value`` overrides. Every
value is checked against its field's type, and each dataclass's ``validate()`` checks what types
cannot (ranges, divisibility), all before anything runs. A bad key, type or value raises one
:class:`ConfigError` naming the key and what is valid.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

__all__ = [
    "ConfigError",
    "EnvConfig",
    "TrainConfig",
    "build",
    "to_dict",
    "parse_overrides",
    "merge",
    "load_yaml",
    "dump_yaml",
    "check",
]


class ConfigError(ValueError):
    """A configuration key, type or value is invalid; the message says which and what is valid."""


class _FloatSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.2; PyYAML's 1.1 rules need a dot)."""


_FloatSafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def check(condition: bool, key: str, message: str) -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config key '{key}': {message}")


@dataclass
class EnvConfig:
    """Which environment, and how many copies."""

    id: str = "CartPole-v1"
    num_envs: int = 8
    vectorization: Literal["sync", "async"] = "sync"
    num_eval_envs: int = 4
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        check(self.num_envs >= 1, f"{prefix}.num_envs", f"must be >= 1, got {self.num_envs}")
        check(self.num_eval_envs >= 1, f"{prefix}.num_eval_envs", f"must be >= 1, got {self.num_eval_envs}")


@dataclass
class TrainConfig:
    """One training run: the env, the loop's schedule, and the agent's own config in ``algo``."""

    agent: str = "ppo"
    env: EnvConfig = field(default_factory=EnvConfig)
    total_steps: int = 100_000
    seed: int = 0
    device: str = "auto"
    eval_interval: int = 10_000  # env steps between evaluations; 0: only at the end
    eval_episodes: int = 10
    checkpoint_interval: int = 50_000  # env steps between checkpoints; 0: only at the end
    torch_threads: int = 1  # CPU threads for torch; 0: torch's default. Small RL nets run best on one
    progress: bool = True
    log_interval: int = 0  # iterations between stdout table rows (bar off / not a terminal); 0: ~10 s; -1: none
    algo: Any = None  # the agent's config dataclass (see drl.registry)

    def validate(self, prefix: str = "") -> None:
        def key(name: str) -> str:
            return f"{prefix}{name}"

        check(self.total_steps >= 1, key("total_steps"), f"must be >= 1, got {self.total_steps}")
        check(self.eval_interval >= 0, key("eval_interval"), f"must be >= 0, got {self.eval_interval}")
        check(self.eval_episodes >= 1, key("eval_episodes"), f"must be >= 1, got {self.eval_episodes}")
        check(self.checkpoint_interval >= 0, key("checkpoint_interval"), "must be >= 0")
        check(self.torch_threads >= 0, key("torch_threads"), "must be >= 0 (0 keeps torch's default)")
        check(self.log_interval >= -1, key("log_interval"), f"must be >= -1 (0: every ~10 s, -1: no table), "
              f"got {self.log_interval}")
        check(
            re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None,
            key("device"),
            f"must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got '{self.device}'",
        )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp`` (converting str -> number where exact) or raise."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        choices = typing.get_args(tp)
        check(value in choices, key, f"must be one of {list(choices)}, got {value!r}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            check(type(None) in args, key, f"must be {_type_name(tp)}, got null")
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass  # try the next member of the union
        raise ConfigError(f"config key '{key}': must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        check(isinstance(value, dict), key, f"must be a mapping of {tp.__name__} fields, got {value!r}")
        return build(tp, value, prefix=key)
    if origin in (list, tuple):
        check(isinstance(value, (list, tuple)), key, f"must be a list ({_type_name(tp)}), got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        check(isinstance(value, dict), key, f"must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        check(isinstance(value, bool), key, f"must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value.replace("_", ""))
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        check(isinstance(value, int) and not isinstance(value, bool), key, f"must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"must be a number, got {value!r}")
        return float(value)
    if tp is str:
        check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")


def build(cls: type, values: dict[str, Any] | None, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a (partial) mapping; missing keys keep their defaults."""
    values = values or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key '{full}'; valid keys{' of ' + prefix if prefix else ''}: {names}")
    kwargs = {}
    for name in names:
        if name in values:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(values[name], hints[name], full)
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain dict (for YAML and checkpoints)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: ``update`` wins; nested mappings merge key by key."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["algo.learning_rate=1e-3", "env.num_envs=16"]`` -> nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override '{pair}' must look like key.subkey=value")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override '{pair}' has an empty key")
        try:
            value = yaml.load(raw, Loader=_FloatSafeLoader) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{pair}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a config YAML file into a dict, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist")
    try:
        data = yaml.load(path.read_text(), Loader=_FloatSafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping at the top level, got {type(data).__name__}")
    return data


def dump_yaml(data: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))
