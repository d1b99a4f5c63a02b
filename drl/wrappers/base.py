"""The wrapper contract: gymnasium vector wrappers on drl's torch env contract, chosen by name from config.

A wrapper sits between the env and the runner (``wrappers: [{name: NAME, <kwargs>}]`` in a config, or
``drl train --wrapper NAME:k=v,...``), in list order: the first entry wraps the env, the last is outermost.
It works on any backend and device (tensors ``[N, ...]`` on ``env.device``) and keeps ``terminated`` and
``truncated`` apart. What a wrapper may hold, and where it is saved:

* per-episode state (a potential's last value, episodic counts, an observation history): part of the env
  state (:meth:`TorchVectorWrapper.state_dict` extends the inner env's), so a run resumes bitwise where the
  env supports it; otherwise the envs, and this state, are reset on resume;
* learned state (a predictor network, an embedding, blend weights): :meth:`learner_state_dict`, saved in
  every checkpoint under ``"wrappers"`` whatever the env.

A wrapper that changes the reward leaves the env's own reward in ``info["env_reward"]`` (the runners log
episode returns, and evaluations sum, from it, so the logged score is always the env's); one that changes
observations sets ``applies_to_eval = True`` and is also applied to the evaluation env (and to ``drl eval``
/ ``drl video``). A wrapper that defines the task's score itself (e.g. ``submodular``: the objective of a
coverage task is F of the visited set) also applies to evaluation and adds that score to ``env_reward``.
Learned parts are trained by :meth:`update`, which the runner calls once per iteration with no argument:
the wrapper then trains on the transitions it saw since the last call (``records_transitions = True``).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from gymnasium.vector import VectorEnv, VectorWrapper

from drl.config import ConfigError

Obs = torch.Tensor | dict[str, torch.Tensor]

__all__ = ["TorchVectorWrapper", "WRAPPERS", "register_wrapper", "validate_wrappers", "wrap_env", "WrapperStack",
           "parse_wrapper_flag", "select_group", "select_group_space", "TRANSITION_KEYS"]

TRANSITION_KEYS = ("obs", "actions", "next_obs", "terminated", "truncated")
WRAPPERS: dict[str, type[TorchVectorWrapper]] = {}


def register_wrapper(name: str) -> Callable[[type], type]:
    """Class decorator: make a :class:`TorchVectorWrapper` selectable as ``{name: NAME}`` in configs."""

    def add(cls: type) -> type:
        if name in WRAPPERS and WRAPPERS[name] is not cls:
            raise ValueError(f"wrapper name '{name}' is already taken by {WRAPPERS[name].__name__}")
        cls.name = name
        WRAPPERS[name] = cls
        return cls

    return add


def select_group(obs: Obs, group: str | None) -> torch.Tensor:
    """The tensor of obs group ``group`` (``None``: the obs itself, or ``"policy"`` of a dict obs), flattened
    to ``[N, D]``. Raises KeyError naming the groups when ``group`` is not one of them."""
    if isinstance(obs, dict):
        key = group if group is not None else "policy"
        if key not in obs:
            raise KeyError(f"obs group '{key}' not in the observation; its groups: {sorted(obs)}")
        obs = obs[key]
    elif group not in (None, "policy"):
        raise KeyError(f"obs group '{group}' asked of an observation without groups (use null or 'policy')")
    return obs if obs.dim() == 2 else obs.reshape(obs.shape[0], -1)  # [N, D] already: no view op per step


def select_group_space(space: Any, group: str | None) -> Any:
    """The single observation space of obs group ``group`` (``None``: the space itself, or ``"policy"`` of a
    dict space), as a wrapper's ``obs_group`` argument names it. Raises ValueError (a config error) naming the
    groups when ``group`` is not one of them, or when a space without groups is asked for another group."""
    if hasattr(space, "spaces"):
        key = group if group is not None else "policy"
        if key not in space.spaces:
            raise ValueError(f"obs_group '{key}' is not one of the observation's groups {sorted(space.spaces)}")
        return space.spaces[key]
    if group not in (None, "policy"):
        raise ValueError(f"obs_group '{group}' asked of an observation without groups (use null or 'policy')")
    return space


class TorchVectorWrapper(VectorWrapper):
    """Base class of drl's wrappers: attribute forwarding, the env-state and learner-state protocol, the
    env-reward bookkeeping, logged means, and the transition record that :meth:`update` trains on.

    Subclasses override ``step`` / ``reset`` (calling :meth:`_inner_step` / ``self.env.reset``) and, when they
    hold such things, :meth:`_episode_state` / :meth:`_load_episode_state` (per-episode state) and
    :meth:`learner_state_dict` / :meth:`load_learner_state_dict` / :meth:`update` (learned state).
    """

    name: ClassVar[str] = ""
    applies_to_eval: ClassVar[bool] = False  # True when observations change: eval must see the same
    gives_reward: ClassVar[bool] = False  # True when the agent's reward comes (partly) from this wrapper
    records_transitions: ClassVar[bool] = False  # True when update() trains on the transitions seen
    max_record_steps: ClassVar[int] = 4096  # vectorised steps kept for update(); older ones are dropped
    path_args: ClassVar[tuple[str, ...]] = ()  # keyword arguments naming files: made absolute by validation

    def __init__(self, env: VectorEnv):
        super().__init__(env)
        self.device = torch.device(getattr(env, "device", "cpu"))
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._columns: dict[tuple[str, ...], tuple[torch.Tensor, list[torch.Tensor]]] = {}  # _log_mean_columns
        self._record: list[tuple[torch.Tensor, ...]] = []
        self._inner_obs: Obs | None = None  # the inner env's last obs (the `obs` of the next transition)
        self._last_out: Obs | None = None  # what an obs-changing wrapper returned last (see _out)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.env, name)  # device, max_episode_steps, expert_action, render, ...

    # --- stepping ---------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._inner_obs = obs
        return obs, info

    def _inner_step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """The inner env's step, recorded as a transition ``(obs, actions, info["final_obs"], terminated,
        truncated)`` when the class records transitions."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if self.records_transitions and self._inner_obs is not None:
            self._record.append((self._inner_obs, actions, info.get("final_obs", obs), terminated, truncated))
            if len(self._record) > self.max_record_steps:
                del self._record[0]
        self._inner_obs = obs
        return obs, reward, terminated, truncated, info

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        return self._inner_step(actions)

    @staticmethod
    def _replace_reward(info: dict[str, Any], reward: torch.Tensor, new_reward: torch.Tensor) -> torch.Tensor:
        """``new_reward``, with the env's own reward kept in ``info["env_reward"]`` (set by the innermost
        reward wrapper only, so it stays the env's)."""
        info.setdefault("env_reward", reward)
        return new_reward

    # --- logged means -----------------------------------------------------------------------
    def _log_mean(self, key: str, values: torch.Tensor) -> None:
        """Accumulate ``values`` (any shape) for the logged mean ``<name>/<key>`` (no device sync here)."""
        if values.dtype is not torch.float32:
            values = values.float()
        if values.requires_grad:
            values = values.detach()
        held = self._sums.get(key)
        if values.dim() == 1 and values.shape[0] == 1 and (held is None or held.dim() == 1):
            # one value (one env): the sum of [v] is 0 + v, so one in-place add per step gives the same bits
            if held is None:
                self._sums[key] = torch.zeros_like(values).add_(values)
            else:
                held.add_(values)
        else:
            total = values.sum()  # a new tensor, owned here
            if held is None:
                self._sums[key] = total
            else:  # the same float32 sum as ``held + total``, without a new tensor each step
                held.add_(total)
        self._counts[key] = self._counts.get(key, 0) + values.numel()

    def _log_mean_columns(self, keys: tuple[str, ...], values: torch.Tensor) -> None:
        """:meth:`_log_mean` of each column ``values[:, i]`` under ``keys[i]``, ``values [N, K]``; with one env
        (``N = 1``, float32) all K in one in-place add per step into a ``[1, K]`` total the keys view."""
        if values.shape[0] != 1 or values.dtype is not torch.float32 or values.dim() != 2:
            for i, key in enumerate(keys):
                self._log_mean(key, values[:, i])
            return
        if values.requires_grad:
            values = values.detach()
        columns = self._columns.get(keys)
        if columns is None or self._sums.get(keys[0]) is not columns[1][0]:  # new, or the means were read
            if any(key in self._sums for key in keys):  # logged some other way since: keep to that
                for i, key in enumerate(keys):
                    self._log_mean(key, values[:, i])
                return
            total = torch.zeros_like(values)  # 0 + v, as the sum of [v]
            columns = self._columns[keys] = (total, [total[:, i] for i in range(len(keys))])
            for key, view in zip(keys, columns[1], strict=True):
                self._sums[key] = view
        columns[0].add_(values)
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + 1

    def metrics(self) -> dict[str, float]:
        """The means logged since the last call (then cleared), keyed ``<name>/<key>``."""
        out = {f"{self.name}/{key}": float(total) / max(self._counts[key], 1) for key, total in self._sums.items()}
        self._sums, self._counts = {}, {}
        return out

    # --- learning ---------------------------------------------------------------------------
    def recorded_batch(self) -> dict[str, Any] | None:
        """The transitions seen since the last call, ``[T, N, ...]`` per key of :data:`TRANSITION_KEYS`
        (dict obs stay dicts of ``[T, N, ...]``), then cleared; None if none were seen."""
        if not self._record:
            return None
        columns = list(zip(*self._record, strict=True))
        self._record = []

        def stack(items: Sequence[Obs]) -> Any:
            if isinstance(items[0], dict):
                return {k: torch.stack([x[k] for x in items]) for k in items[0]}
            return torch.stack(list(items))

        return {key: stack(col) for key, col in zip(TRANSITION_KEYS, columns, strict=True)}

    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """Train the learned parts on ``batch`` (``[T, N, ...]`` tensors keyed by :data:`TRANSITION_KEYS`;
        None: the recorded transitions); returns metrics. The base class has nothing to learn."""
        return {}

    def learner_state_dict(self) -> dict[str, Any]:
        """Learned state (networks, optimisers, running statistics): saved in every checkpoint."""
        return {}

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`learner_state_dict`."""

    # --- env state (bitwise resume) ---------------------------------------------------------
    def _episode_state(self) -> dict[str, Any]:
        """Per-episode state (tensors ``[N, ...]``) for the env state; empty when there is none."""
        return {}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_episode_state`."""

    def state_dict(self) -> dict[str, Any]:
        """The inner env's state (see envs.core) plus this wrapper's per-episode state and last inner obs;
        ``obs`` is replaced by what this wrapper returned last when it changes observations (see :meth:`_out`)."""
        state = dict(self.env.state_dict())
        changes_obs = self._last_out is not None
        state[f"wrapper/{self.name}"] = {"episode": self._episode_state(), "inner_obs": state.get("obs"),
                                         "changes_obs": changes_obs}
        if changes_obs:
            state["obs"] = self._last_out
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        key = f"wrapper/{self.name}"
        if key not in state:
            raise ValueError(f"the env state has no '{key}' entry (saved without this wrapper)")
        own = state[key]
        inner = {k: v for k, v in state.items() if k != key}
        if own["changes_obs"]:
            inner["obs"] = own["inner_obs"]
            self._last_out = state["obs"]
        self.env.load_state_dict(inner)
        self._inner_obs = own["inner_obs"]
        self._load_episode_state(own["episode"])

    def _out(self, obs: Obs) -> Obs:
        """``obs``, remembered as what this wrapper returned last: an obs-changing wrapper returns every obs
        (reset and step) through it, so the env state can hold the obs the agent acts on next."""
        self._last_out = obs
        return obs


def _kwargs_of(cls: type) -> dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    for skip in ("self", "env"):
        params.pop(skip, None)
    return {k: p for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _coerced(cls: type, spec: dict[str, Any], key: str) -> dict[str, Any]:
    """The keyword arguments of ``spec`` checked (and converted where exact: "0.1" -> 0.1) against the type
    hints of ``cls.__init__`` like any config key; one ConfigError naming ``<key>.<arg>`` otherwise."""
    from drl.config import _coerce

    try:
        hints = typing.get_type_hints(cls.__init__)
    except (NameError, TypeError):  # hints that do not resolve here: left to the wrapper's own checks
        hints = {}
    return {arg: _coerce(value, hints[arg], f"{key}.{arg}") if arg in hints else value
            for arg, value in spec.items() if arg != "name"}


def validate_wrappers(specs: Any, prefix: str = "wrappers") -> None:
    """Each entry a mapping with a known ``name`` and only that wrapper's keyword arguments; one
    ConfigError naming the entry and the valid names/keys otherwise. A relative path given for one of the
    wrapper's ``path_args`` is made absolute in the entry (as a PATH config key is: the run's saved config
    then names the same file from any working folder)."""
    if not isinstance(specs, list):
        raise ConfigError(f"config key '{prefix}': must be a list of {{name: ..., <kwargs>}} mappings, got {specs!r}")
    for i, spec in enumerate(specs):
        key = f"{prefix}[{i}]"
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"config key '{key}': must be a mapping with a 'name' (one of {sorted(WRAPPERS)}), "
                              f"got {spec!r}")
        name = spec["name"]
        if name not in WRAPPERS:
            raise ConfigError(f"config key '{key}.name': unknown wrapper '{name}'; valid wrappers: {sorted(WRAPPERS)}")
        valid = _kwargs_of(WRAPPERS[name])
        for arg in spec:
            if arg != "name" and arg not in valid:
                raise ConfigError(f"config key '{key}.{arg}': wrapper '{name}' has no such option; "
                                  f"valid: {sorted(valid)}")
        _coerced(WRAPPERS[name], spec, key)  # each value against the wrapper's type hints
        for arg in WRAPPERS[name].path_args:  # like a PATH config key: the saved config names the same file
            if isinstance(spec.get(arg), str):
                from drl.config import _absolute

                spec[arg] = _absolute(spec[arg], f"{key}.{arg}")
        missing = [k for k, p in valid.items() if p.default is inspect.Parameter.empty and k not in spec
                   and k not in ("gamma", "seed")]
        if missing:
            raise ConfigError(f"config key '{key}': wrapper '{name}' needs {missing}")


def wrap_env(env: VectorEnv, specs: list[dict[str, Any]], for_eval: bool = False,
             defaults: dict[str, Any] | None = None) -> VectorEnv:
    """``env`` inside the wrappers of ``specs`` (first = innermost); for an evaluation env only those with
    ``applies_to_eval``. ``defaults`` (e.g. the agent's ``gamma``, the run's ``seed``) fill a wrapper's
    arguments of those names that the spec leaves out. A wrapper's own ValueError/TypeError becomes one
    ConfigError naming the entry."""
    validate_wrappers(specs)
    for i, spec in enumerate(specs):
        cls = WRAPPERS[spec["name"]]
        if for_eval and not cls.applies_to_eval:
            continue
        kwargs = _coerced(cls, spec, f"wrappers[{i}]")
        accepted = _kwargs_of(cls)
        kwargs |= {k: v for k, v in (defaults or {}).items() if k in accepted and k not in kwargs}
        try:
            env = cls(env, **kwargs)
        except (ValueError, TypeError, KeyError, IndexError) as err:
            message = err.args[0] if isinstance(err, KeyError) and err.args else err
            raise ConfigError(f"config key 'wrappers[{i}]' ({spec['name']}): {message}") from None
    return env


def _split_top_level(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and braces (``a=[1,2],b=3`` -> ``["a=[1,2]", "b=3"]``)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return parts + [text[start:]]


def parse_wrapper_flag(text: str) -> dict[str, Any]:
    """``"NAME:k=v,k2=[a,b]"`` (``drl train --wrapper``) -> ``{"name": NAME, k: v, ...}``, values parsed as YAML
    (a list or mapping value keeps its commas). A key given twice is an error."""
    from drl.config import parse_overrides

    name, _, rest = text.partition(":")
    if not name.strip():
        raise ConfigError(f"--wrapper '{text}' must look like NAME or NAME:key=value,key2=value2")
    pairs = [p for p in _split_top_level(rest) if p.strip()] if rest else []
    keys = [pair.split("=", 1)[0].strip() for pair in pairs]
    for pair, key in zip(pairs, keys, strict=True):
        if "=" not in pair or "." in key:
            raise ConfigError(f"--wrapper '{text}': '{pair}' must look like key=value")
        if keys.count(key) > 1:
            raise ConfigError(f"--wrapper '{text}': '{key}' is given more than once")
    return {"name": name.strip(), **parse_overrides(pairs)}


class WrapperStack:
    """The runner's view of the wrappers around its training env: update, metrics and learned state of all."""

    def __init__(self, env: VectorEnv):
        self.wrappers: list[TorchVectorWrapper] = []
        while isinstance(env, VectorWrapper):
            if isinstance(env, TorchVectorWrapper):
                self.wrappers.append(env)
            env = env.env
        self.wrappers.reverse()  # innermost first, as in the config

    def __bool__(self) -> bool:
        return bool(self.wrappers)

    def update(self) -> dict[str, float]:
        """Each wrapper's :meth:`~TorchVectorWrapper.update` on its recorded transitions, then its logged
        means; one dict of metrics ``<name>/<key>``."""
        out: dict[str, float] = {}
        for w in self.wrappers:
            out |= {f"{w.name}/{k}": v for k, v in w.update().items()}
            out |= w.metrics()
        return out

    def state_dict(self) -> list[dict[str, Any]]:
        return [{"name": w.name, "state": w.learner_state_dict()} for w in self.wrappers]

    def load_state_dict(self, states: list[dict[str, Any]]) -> None:
        names = [w.name for w in self.wrappers]
        if [s["name"] for s in states] != names:
            raise ValueError(f"the checkpoint's wrappers {[s['name'] for s in states]} differ from the run's {names}")
        for w, s in zip(self.wrappers, states, strict=True):
            try:
                w.load_learner_state_dict(s["state"])
            except (RuntimeError, KeyError, ValueError, IndexError) as err:
                first = (str(err).strip().splitlines() or [""])[0]
                raise ValueError(f"the checkpoint's state of wrapper '{w.name}' does not fit its options in the "
                                 f"run's config (were they edited?): {first}") from None
