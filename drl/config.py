"""Typed configuration: dataclasses are the schema, YAML is their serialisation.

A config is built from defaults, then a YAML file, then ``--set a.b=value`` overrides. Every
value is checked against its field's type, and each dataclass's ``validate()`` checks what types
cannot (ranges, divisibility), all before anything runs. A bad key, type or value raises one
:class:`ConfigError` naming the key and what is valid.

Numbers: a float field takes only finite values within float32's range (every value meets float32
tensors); an int field takes exact integers, also spelled ``1e6`` or ``1_000_000`` (``1.5`` is
refused). Fields with a natural bound are checked against it (:func:`check_range`, the ``MAX_*``
constants); what depends on the machine (memory for envs and storage) is checked when the run is
built, by :mod:`drl.resources`.
"""

from __future__ import annotations

import dataclasses
import math
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
    "check_range",
    "parse_int",
    "PATH",
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


# Natural bounds shared by every agent's config (a value past them is a typo or a unit mix-up).
MAX_STEPS = 10**15  # env steps: ~30 years at a million steps per second
MAX_SEED = 2**63 - 1  # torch's generators take [0, 2**64); numpy's legacy seed gets seed % 2**32
MAX_EVAL_EPISODES = 10**6
MAX_TORCH_THREADS = 1024
FLOAT32_MAX = 3.4028234663852886e38
MAX_NUM_ENVS = 2**31 - 1  # env counts index int32 tensors and warp worlds; memory is checked at build time


def check_range(value: float, key: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, what: str = "") -> None:
    """Raise :class:`ConfigError` for ``key`` unless ``low <= value <= high``; the message names the bound crossed.

    ``low_open`` makes the lower end exclusive (``> low``); ``None`` leaves that end unbounded.
    ``what`` is added to the message (e.g. what the value means or what 0 does).
    """
    if low is not None and not (value > low if low_open else value >= low):
        bound = f"> {_fmt(low)}" if low_open else f">= {_fmt(low)}"
    elif high is not None and not value <= high:
        bound = f"<= {_fmt(high)}"
    else:
        return
    raise ConfigError(f"config key '{key}': must be {bound}{f' ({what})' if what else ''}, got {_fmt(value)}")


def _fmt(value: float | None) -> str:
    """Short form of a bound or value: 1e+15 rather than 1000000000000000, 2**63 - 1 spelled out."""
    names = {MAX_SEED: "2**63 - 1", MAX_NUM_ENVS: "2**31 - 1"}
    if isinstance(value, int) and not isinstance(value, bool):
        if value in names:
            return names[value]
        if abs(value) < 10**15:
            return str(value)
        text = str(abs(value))  # short: parse_int caps spelled-out integers at _MAX_INT_DIGITS digits
        mantissa = f"{text[0]}.{text[1:3]}".rstrip("0").rstrip(".")  # like format(x, ".3g") without the float
        return f"{'-' if value < 0 else ''}{mantissa}e+{len(text) - 1:02d}"
    return str(value)


@dataclass
class EnvConfig:
    """Which environment, and how many copies."""

    id: str = "CartPole-v1"
    num_envs: int = 8
    vectorization: Literal["sync", "async"] = "sync"
    num_eval_envs: int = 4
    kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self, prefix: str) -> None:
        """Ranges, finite kwargs, and for a multi-task env id (:func:`envs.multi_task_sources.min_copies`: its
        number of tasks T) copy counts that are multiples of T (each task gets ``num_envs / T`` copies). Runs
        before the agent's config is validated, so a wrong count is reported as such first (not as an agent
        key that depends on it, e.g. a minibatch that must divide ``num_steps x num_envs``)."""
        check_range(self.num_envs, f"{prefix}.num_envs", 1, MAX_NUM_ENVS)
        check_range(self.num_eval_envs, f"{prefix}.num_eval_envs", 1, MAX_NUM_ENVS)
        _check_finite_tree(self.kwargs, f"{prefix}.kwargs")
        from envs.multi_task_sources import min_copies  # the env registry (it imports torch)

        tasks = min_copies(self.id, self.kwargs)
        for name in ("num_envs", "num_eval_envs"):
            value = getattr(self, name)
            if tasks > 1 and value % tasks:
                nearest = sorted({tasks * max(1, value // tasks), tasks * (value // tasks + 1)})
                raise ConfigError(f"config key '{prefix}.{name}': '{self.id}' has {tasks} tasks, so {prefix}.{name} "
                                  f"must be a multiple of {tasks} (nearest valid: {' or '.join(map(str, nearest))}), "
                                  f"got {value}")


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
    wrappers: list[dict[str, Any]] = field(default_factory=list)  # [{name: ..., <kwargs>}], innermost first

    def validate(self, prefix: str = "") -> None:
        def key(name: str) -> str:
            return f"{prefix}{name}"

        check_range(self.total_steps, key("total_steps"), 1, MAX_STEPS)
        check_range(self.seed, key("seed"), 0, MAX_SEED)
        check_range(self.eval_interval, key("eval_interval"), 0, MAX_STEPS, what="0 evaluates only at the end")
        check_range(self.eval_episodes, key("eval_episodes"), 1, MAX_EVAL_EPISODES)
        check_range(self.checkpoint_interval, key("checkpoint_interval"), 0, MAX_STEPS,
                    what="0 saves only at the end")
        check_range(self.torch_threads, key("torch_threads"), 0, MAX_TORCH_THREADS, what="0 keeps torch's default")
        check_range(self.log_interval, key("log_interval"), -1, MAX_STEPS, what="0: every ~10 s, -1: no table")
        check(
            re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None,
            key("device"),
            f"must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got '{self.device}'",
        )
        from drl.wrappers import validate_wrappers  # the wrappers' registry (they import this module)

        validate_wrappers(self.wrappers, key("wrappers"))


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
        members = [arg for arg in args if arg is not type(None)]
        if len(members) == 1 and type(None) in args:  # ``X | None``: X's own message, plus "or null"
            try:
                return _coerce(value, members[0], key)
            except ConfigError as err:
                if "finite" in str(err):
                    raise ConfigError(f"{err} (or null)") from None
        for arg in members:
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
        parsed = parse_int(value)
        check(parsed is not None, key, f"must be an integer, got {value!r}")
        return parsed
    if tp is float:
        if isinstance(value, str):
            try:
                value = float(value.replace("_", ""))
            except ValueError:
                pass
        check(isinstance(value, (int, float)) and not isinstance(value, bool), key, f"must be a number, got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            number = math.inf
        check(math.isfinite(number), key, f"must be a finite number, got {_fmt(value)}")
        # values meet float32 tensors (losses, clamps, optimiser steps): they must be representable there
        check(abs(number) <= FLOAT32_MAX, key, f"must be a finite number within float32's range (|x| <= "
              f"{FLOAT32_MAX:.4g}), got {_fmt(number)}")
        return number
    if tp is str:
        check(isinstance(value, str), key, f"must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}': unsupported field type {tp}")


_MAX_INT_DIGITS = 400  # past every bound (and past float range): larger spellings are refused, not expanded


def parse_int(value: Any) -> int | None:
    """``value`` as an exact integer, or ``None``: ints, integral floats (``1e6``) and strings
    (``"1_000_000"``, ``"1e6"``); not bools, ``1.5``, ``inf``, ``nan`` or other text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            pass
        if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text):
            return None
        try:  # exact decimal arithmetic: "1e6" is 10**6, "1.5e0" is not an integer
            from decimal import Decimal

            number = Decimal(text)
        except ArithmeticError:
            return None
        if number.adjusted() >= _MAX_INT_DIGITS:  # "1e999999999" would build a billion-digit integer
            return None
        return int(number) if number == number.to_integral_value() else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _check_finite_tree(value: Any, key: str) -> None:
    """Raise :class:`ConfigError` for a NaN anywhere in a free-form value (env kwargs).

    Infinities pass: an env argument may legitimately mean "no limit" by ``inf``.
    """
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(f"config key '{key}': must be a number, got nan")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_tree(v, f"{key}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite_tree(v, f"{key}[{i}]")


# field metadata of a config key holding a file or folder path (``field(default=None, metadata=PATH)``):
# :func:`build` makes a relative path absolute (against the working folder), so the run's config.yaml
# names the same file from wherever the run is later resumed or evaluated
PATH = {"path": True}


def _absolute(value: Any, key: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return str(Path(value).expanduser().resolve())
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(f"config key '{key}': not a usable path ({err}), got {value!r}") from None


def build(cls: type, values: dict[str, Any] | None, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a (partial) mapping; missing keys keep their defaults.

    A key whose field carries :data:`PATH` metadata is made absolute (see :data:`PATH`)."""
    values = values or {}
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key '{full}'; valid keys{' of ' + prefix if prefix else ''}: {names}")
    kwargs = {}
    paths = {f.name for f in dataclasses.fields(cls) if f.metadata.get("path")}
    for name in names:
        if name in values:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(values[name], hints[name], full)
            if name in paths:
                kwargs[name] = _absolute(kwargs[name], full)
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


def merge(base: dict[str, Any], update: dict[str, Any], replace: tuple[str, ...] = ("kwargs",)) -> dict[str, Any]:
    """Recursive dict merge: ``update`` wins; nested mappings merge key by key, except those named in ``replace``,
    which ``update`` replaces whole (by default ``kwargs``: a config layer's env kwargs are for its own env, not
    added to another layer's). Overrides of single keys (``--set env.kwargs.x=1``) pass ``replace=()``."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key not in replace:
            out[key] = merge(out[key], value, replace)
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
