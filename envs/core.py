"""The environment contract shared by every drl backend.

Every backend is a :class:`gymnasium.vector.VectorEnv` whose ``reset``/``step`` take and return
torch tensors on ``env.device``::

    obs, info = env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(actions)   # reward etc. are [N]

Autoreset follows gymnasium's SAME_STEP mode: the obs returned for a finished env is already the
first obs of its next episode. The true last obs of every env is ``info["final_obs"]`` (a full
``[N, ...]`` tensor, equal to ``obs`` where the env did not finish) and ``info["_final_obs"]`` is
the bool mask ``[N]`` of finished envs. Bootstrapping a truncated episode therefore reads
``V(info["final_obs"])`` on the masked rows.

Observations are a tensor ``[N, *obs_shape]`` or a dict of groups (``"policy"`` for the actor,
``"critic"`` for privileged state), following Isaac Lab's naming.

Optional capability, env state: an env whose ``supports_state_dict`` is true has
``state_dict()`` / ``load_state_dict(state)``. The state holds everything the env needs to continue
bitwise identically (physical state, episode step counters, per-env randomised parameters, the env's
random generator, and ``state["obs"]``, the observation the last ``reset``/``step`` returned): a copy
of the env given ``load_state_dict(env.state_dict())`` returns exactly the same observations, rewards
and flags as the original for the same actions, autoresets included. The runner saves it in
checkpoints so a resumed run continues the uninterrupted one. Envs without it (the gymnasium adapter,
pybullet tasks) are reset on resume; :func:`supports_env_state` tells them apart.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

Obs = torch.Tensor | dict[str, torch.Tensor]

__all__ = [
    "Obs",
    "TorchVecEnv",
    "GymnasiumVecEnv",
    "MissingDependencyError",
    "EnvStepError",
    "obs_to",
    "obs_index",
    "obs_where",
    "resolve_device",
    "supports_env_state",
    "obs_equal",
    "check_max_episode_steps",
    "RewardContractError",
]


class MissingDependencyError(ImportError):
    """An optional backend is not installed; the message names the pip command that installs it.

    Args:
        what: what needs the dependency (e.g. ``"gymnasium env 'LunarLander-v3'"``).
        extra: the drl extra that installs it, or ``None`` when drl has none (then ``hint`` says how).
        package: the pip package, when it differs from ``extra``.
        hint: the upstream library's own instructions (e.g. gymnasium's), kept verbatim.
    """

    def __init__(self, what: str, extra: str | None, package: str | None = None, hint: str | None = None):
        hint = " ".join(hint.split()) if hint else None  # one line
        if extra is None:
            message = f"{what} needs a dependency that is not installed"
            message += f": {hint}" if hint else f"{f' ({package})' if package else ''}"
        else:
            pkg = package or extra
            quoted = f'"{pkg}"' if "[" in pkg else pkg  # brackets need quotes in a shell
            message = (f"{what} needs the optional dependency '{pkg}', which is not installed. "
                       f"Install it with: pip install 'drl[{extra}]'  (or: pip install {quoted})")
            if hint:
                message += f". The library says: {hint}"
        super().__init__(message)


class RewardContractError(ValueError):
    """An env returned a reward that is not one number per env step (the ``[N]`` reward contract)."""


class EnvStepError(RuntimeError):
    """An env's ``step()`` or ``reset()`` raised; the message is one line with where and why.

    The adapter that knows which copy failed raises it with ``env_index``; a runner adds the run's
    context with :meth:`add_context`. The original exception is ``__cause__``.

    Attributes:
        env_id: the env id.
        env_index: which env copy raised (None: a batched backend steps all copies at once).
        call: ``"step"`` or ``"reset"``.
        error: ``"<type>: <first line of its message>"`` of the original exception.
        global_step, t, seed: the run's global step and rollout step of the failed step, and the
            run's seed (None until a runner adds them).
        note: anything else the runner adds (e.g. where the emergency checkpoint went).
    """

    def __init__(self, env_id: str, env_index: int | None, cause: BaseException, call: str = "step"):
        self.env_id = env_id
        self.env_index = env_index
        self.call = call
        message = str(cause).strip().splitlines()
        self.error = type(cause).__name__ + (f": {message[0]}" if message else "")
        self.global_step: int | None = None
        self.t: int | None = None
        self.seed: int | None = None
        self.note = ""
        super().__init__(self.error)

    def add_context(self, global_step: int | None = None, t: int | None = None, seed: int | None = None,
                    note: str | None = None) -> EnvStepError:
        """Fill in what the caller knows (fields already set are kept); returns ``self``."""
        self.global_step = self.global_step if global_step is None else global_step
        self.t = self.t if t is None else t
        self.seed = self.seed if seed is None else seed
        if note:
            self.note = f"{self.note}; {note}" if self.note else note
        return self

    def __str__(self) -> str:
        who = f"env {self.env_index} of '{self.env_id}'" if self.env_index is not None else f"env '{self.env_id}'"
        where = [f"rollout step t={self.t}"] if self.t is not None else []
        if self.global_step is not None:
            where.append(f"global_step {self.global_step}")
        if self.seed is not None:
            where.append(f"seed {self.seed}")
        text = f"{who} raised in {self.call}()" + (f" at {', '.join(where)}" if where else "") + f": {self.error}"
        return text + (f"; {self.note}" if self.note else "")


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device '{device}' was requested but CUDA is not available on this machine; "
            "use --device cpu (or auto)"
        )
    return device


MAX_EPISODE_STEPS = 1_000_000  # the evaluator's per-copy step cap: a longer episode could never be evaluated


def check_max_episode_steps(value: Any, owner: str) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` (no time limit) or an integer in
    ``[1, MAX_EPISODE_STEPS]`` (1,000,000 steps, the step cap of :func:`drl.runners.on_policy.evaluate_policy`)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_EPISODE_STEPS:
        raise ValueError(f"{owner}: max_episode_steps must be an integer in [1, {MAX_EPISODE_STEPS:,}] "
                         f"(or None for no time limit), got {value!r}")


def obs_to(obs: Obs, device: torch.device) -> Obs:
    """Move an obs tensor or dict of groups to ``device``."""
    if isinstance(obs, dict):
        return {k: v.to(device) for k, v in obs.items()}
    return obs.to(device)


def obs_index(obs: Obs, index: Any) -> Obs:
    """Index the env axis of an obs tensor or of every group of a dict."""
    if isinstance(obs, dict):
        return {k: v[index] for k, v in obs.items()}
    return obs[index]


def obs_where(mask: torch.Tensor, a: Obs, b: Obs) -> Obs:
    """Row-wise select: ``a`` where ``mask[N]`` is true, else ``b`` (tensor or dict of groups)."""

    def _where(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), x, y)

    if isinstance(a, dict):
        return {k: _where(a[k], b[k]) for k in a}
    return _where(a, b)


def supports_env_state(env: Any) -> bool:
    """Whether ``env`` has the optional ``state_dict()`` / ``load_state_dict()`` capability."""
    return bool(getattr(env, "supports_state_dict", False))


def obs_equal(a: Obs, b: Obs) -> bool:
    """Bitwise equality of two obs tensors or dicts of groups (NaN equals NaN at the same place)."""

    def _equal(x: torch.Tensor, y: torch.Tensor) -> bool:
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if x.is_floating_point():
            return bool(((x == y) | (x.isnan() & y.isnan())).all())
        return torch.equal(x, y)

    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or set(a) != set(b):
            return False
        return all(_equal(a[k], b[k]) for k in a)
    return _equal(a, b)


def _clone_obs(obs: Obs) -> Obs:
    if isinstance(obs, dict):
        return {k: v.clone() for k, v in obs.items()}
    return obs.clone()


class TorchVecEnv(VectorEnv):
    """Base class of batched torch environments (all envs stepped by one set of tensor ops).

    A subclass describes one env's physics on a batch and implements four hooks:

    * ``_reset_envs(mask)``: draw fresh initial states for the envs where ``mask[N]`` is true
      (use ``self.generator``; write with ``torch.where`` so no host sync is needed);
    * ``_observe() -> Obs``: the observation of every env;
    * ``_physics_step(actions) -> (reward[N], terminated[N])``: advance every env one step (it may
      put per-env extras such as reward terms or success flags in ``self._step_info``, which
      ``step`` adds to ``info``);
    * ``_set_state(state)``: set the physical state of every env (``reset(options={"state": s})``).

    Two more hooks give the env the state capability (``supports_state_dict``, see the module doc):

    * ``_get_state() -> dict[str, Tensor]``: every tensor the future of the env depends on besides
      the step counters and generator the base class saves (physical state, randomised parameters,
      task caches);
    * ``_load_state(state)``: write back what ``_get_state`` returned (check shapes, copy in).

    The base class owns step counting, truncation at ``max_episode_steps``, SAME_STEP autoreset
    and ``info["final_obs"]``. It never synchronises with the device on the hot path.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        single_observation_space: gym.Space,
        single_action_space: gym.Space,
        max_episode_steps: int | None,
        device: str | torch.device = "cpu",
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        check_max_episode_steps(max_episode_steps, type(self).__name__)
        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.single_observation_space = single_observation_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(single_observation_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self.max_episode_steps = max_episode_steps
        self.episode_steps = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence().entropy % (2**63)))
        self._all_envs = torch.ones(num_envs, dtype=torch.bool, device=self.device)
        self._step_info: dict[str, torch.Tensor] = {}  # per-env extras ``[N]`` a subclass sets in _physics_step

    # --- hooks for subclasses -------------------------------------------------------------
    def _reset_envs(self, mask: torch.Tensor) -> None:
        raise NotImplementedError

    def _observe(self) -> Obs:
        raise NotImplementedError

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _set_state(self, state: torch.Tensor) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not support reset(options={{'state': ...}})")

    def _get_state(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not save its state")

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not load a saved state")

    # --- state (optional capability) -------------------------------------------------------
    @property
    def supports_state_dict(self) -> bool:
        """True when the subclass implements ``_get_state``/``_load_state``."""
        cls = type(self)
        return cls._get_state is not TorchVecEnv._get_state and cls._load_state is not TorchVecEnv._load_state

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this env bitwise identically (copies, on ``self.device``).

        Keys: ``env`` (class name), ``num_envs``, ``device_type``, ``episode_steps`` ``[N]`` int64,
        ``generator`` (the env generator's state, a CPU uint8 tensor), ``obs`` (the observation
        the last ``reset``/``step`` returned, ``[N, ...]`` or a dict of groups) and ``physics``
        (the subclass's ``_get_state()``). Raises ``NotImplementedError`` for an env without the
        capability (``supports_state_dict`` false).
        """
        physics = self._get_state()
        return {
            "env": type(self).__name__,
            "num_envs": self.num_envs,
            "device_type": self.device.type,
            "episode_steps": self.episode_steps.clone(),
            "generator": self.generator.get_state(),
            "obs": _clone_obs(self._observe()),
            "physics": {k: v.clone() for k, v in physics.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (by this env or by an identically built one).

        Raises ``ValueError`` naming the mismatch when ``state`` is for another env class, another
        ``num_envs`` or device type, or has tensors of the wrong shape; ``RuntimeError`` when the
        restored env does not observe ``state["obs"]`` (its ``_get_state`` misses something).
        """
        name = type(self).__name__
        for key, mine in (("env", name), ("num_envs", self.num_envs), ("device_type", self.device.type)):
            if state.get(key) != mine:
                raise ValueError(f"{name}: the saved env state has {key}={state.get(key)!r}, this env has {mine!r}")
        steps = torch.as_tensor(state["episode_steps"])
        if tuple(steps.shape) != (self.num_envs,):
            raise ValueError(f"{name}: saved episode_steps has shape {tuple(steps.shape)}, expected ({self.num_envs},)")
        physics = {k: torch.as_tensor(v) for k, v in state["physics"].items()}
        if set(physics) != set(self._get_state()):
            raise ValueError(f"{name}: the saved env state holds {sorted(physics)}, this env needs "
                             f"{sorted(self._get_state())}")
        self._load_state(physics)
        self.episode_steps.copy_(steps.to(self.device))
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())
        if not obs_equal(obs_to(self._observe(), self.device), obs_to(state["obs"], self.device)):
            raise RuntimeError(f"{name}: after load_state_dict the env does not observe the saved obs; "
                               "its _get_state misses part of the state")

    def _check_state_shape(self, key: str, saved: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """``saved`` on this env's device, after checking that its shape and dtype are ``current``'s."""
        if tuple(saved.shape) != tuple(current.shape) or saved.dtype != current.dtype:
            raise ValueError(f"{type(self).__name__}: saved state '{key}' is {saved.dtype} "
                             f"{tuple(saved.shape)}, this env has {current.dtype} {tuple(current.shape)}")
        return saved.to(self.device)

    # --- gymnasium API --------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        """Reset every env. ``seed`` reseeds the env's generator; ``options["state"]`` sets the state."""
        if seed is not None:
            self.generator.manual_seed(int(seed))
        self._reset_envs(self._all_envs)
        self.episode_steps.zero_()
        if options and "state" in options:
            self._set_state(torch.as_tensor(options["state"], device=self.device))
        return self._observe(), {}

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step every env; finished envs are reset in the same call (SAME_STEP autoreset)."""
        actions = self._as_actions(actions)
        reward, terminated = self._physics_step(actions)
        self.episode_steps += 1
        if self.max_episode_steps is not None:
            truncated = self.episode_steps >= self.max_episode_steps
        else:
            truncated = torch.zeros_like(terminated)
        done = terminated | truncated
        final_obs = self._observe()
        self._reset_envs(done)
        self.episode_steps.masked_fill_(done, 0)
        obs = self._observe()
        info = {**self._step_info, "final_obs": final_obs, "_final_obs": done}
        return obs, reward, terminated, truncated, info

    def _as_actions(self, actions: Any) -> Any:
        """The actions ``step`` was given, as what ``_physics_step`` takes (here: a tensor on ``self.device``)."""
        return torch.as_tensor(actions, device=self.device)

    def _uniform(self, low: float | torch.Tensor, high: float | torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """Uniform samples in ``[low, high)`` drawn from the env's generator."""
        u = torch.rand(shape, generator=self.generator, device=self.device)
        return low + (high - low) * u


def _make_env(env_id: str, env_kwargs: dict[str, Any], wrappers: list) -> gym.Env:
    """One wrapped env copy (module level, so async workers can unpickle the factory)."""
    env = gym.make(env_id, **env_kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return env


class _IndexedAsyncVectorEnv(gym.vector.AsyncVectorEnv):
    """gymnasium's ``AsyncVectorEnv`` whose worker errors come out as :class:`EnvStepError` with the index.

    gymnasium re-raises a worker's exception without saying which worker raised it (the index
    and traceback only go to a logged warning); here the failed worker's index is read from the
    per-worker success flags and the logged traceback is left out (it is the ``__cause__``).
    """

    env_id = ""

    def _raise_if_errors(self, successes: Any) -> None:
        successes = list(successes)
        if all(successes):
            return
        failed = [i for i, ok in enumerate(successes) if not ok]
        call = {"WAITING_RESET": "reset", "WAITING_STEP": "step"}.get(getattr(self._state, "name", ""), "call")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                super()._raise_if_errors(successes)
        except Exception as err:
            error = EnvStepError(self.env_id, failed[0] if len(failed) == 1 else None, err, call=call)
            if len(failed) > 1:
                error.add_context(note=f"workers {failed} all raised; this is the last error gymnasium reported")
            raise error from err


def _flatten_obs_space(space: gym.Space) -> tuple[gym.Space, bool, list[str] | None]:
    """What the adapter exposes for ``space``: ``(exposed space, needs flattening, Dict keys to keep)``.

    A Dict of ``policy``/``critic`` Box groups passes through. Any other space is flattened into
    one Box; Dict entries that cannot be flattened (MiniGrid's text ``mission``) are dropped.
    """
    if isinstance(space, gym.spaces.Box):
        return space, False, None
    if isinstance(space, gym.spaces.Dict) and set(space.spaces) <= {"policy", "critic"}:
        for name, sub in space.spaces.items():
            if not isinstance(sub, gym.spaces.Box):
                raise TypeError(f"observation group '{name}' must be a Box space, got {sub}")
        return space, False, None
    keep = None
    if isinstance(space, gym.spaces.Dict):
        keep = [k for k, sub in space.spaces.items() if _flattenable(sub)]
        if not keep:
            raise TypeError(f"no entry of observation space {space} can be flattened into a tensor")
        space = gym.spaces.Dict({k: space.spaces[k] for k in keep})
    try:
        return gym.spaces.flatten_space(space), True, keep
    except NotImplementedError as err:
        raise TypeError(
            f"observation space {space} cannot be flattened into a tensor; wrap the env so it "
            "returns a Box or a Dict of 'policy'/'critic' Box groups"
        ) from err


def _flattenable(space: gym.Space) -> bool:
    try:
        gym.spaces.flatten_space(space)
    except (NotImplementedError, TypeError, ValueError):
        return False
    return True


def _zero_based(space: gym.Space) -> tuple[gym.Space, np.ndarray | int | None]:
    """``Discrete(n, start=k)`` -> ``(Discrete(n), k)``; ``MultiDiscrete`` likewise; other spaces unchanged.

    The adapter exposes integer action spaces starting at 0 (what policy heads sample) and adds
    the start back before stepping the env; ``None`` means nothing to add.
    """
    if isinstance(space, gym.spaces.Discrete) and int(space.start) != 0:
        return gym.spaces.Discrete(int(space.n), seed=None), int(space.start)
    if isinstance(space, gym.spaces.MultiDiscrete) and np.any(space.start != 0):
        return gym.spaces.MultiDiscrete(space.nvec, dtype=space.dtype), np.asarray(space.start, dtype=np.int64)
    return space, None


def _describe(array: np.ndarray) -> str:
    return f"of shape {array.shape}" if np.issubdtype(array.dtype, np.number) else f"of type {array.dtype}"


class GymnasiumVecEnv(VectorEnv):
    """Adapter: any CPU gymnasium env id -> the torch contract.

    ``"sync"`` steps the envs one after another in this process, writing straight into the
    returned arrays (gymnasium's ``SyncVectorEnv`` semantics: SAME_STEP autoreset, ``seed + i``
    per env, infos merged with gymnasium's ``_add_info``, the last obs and info of a finished env
    in ``final_obs``/``final_info``, without its per-step generality: this loop is the per-step cost
    of every CPU-simulated run). ``"async"`` uses gymnasium's ``AsyncVectorEnv`` (one subprocess per env).

    Integer action spaces are exposed starting at 0: for ``Discrete(n, start=k)`` (and a
    ``MultiDiscrete`` with ``start``) the agent acts in ``0..n-1`` and the adapter adds ``k`` before
    stepping the env. Rewards are one number per env step: a one-element reward (shape ``(1,)``)
    is squeezed, any other shape raises ``ValueError`` naming the env id.

    Args:
        env_id: a gymnasium id (``"CartPole-v1"``, ``"HalfCheetah-v5"``, ...).
        num_envs: number of copies.
        device: where returned tensors live.
        vectorization: ``"sync"`` (one process) or ``"async"`` (one subprocess per env).
        wrappers: gymnasium wrappers applied to each single env (e.g. MiniGrid's ImgObsWrapper).
        env_kwargs: keyword arguments for ``gymnasium.make``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: str | torch.device = "cpu",
        vectorization: str = "sync",
        wrappers: list | None = None,
        env_kwargs: dict[str, Any] | None = None,
    ):
        if vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async', got '{vectorization}'")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.device = resolve_device(device)
        self.env_id = env_id
        env_kwargs = env_kwargs or {}
        check_max_episode_steps(env_kwargs.get("max_episode_steps"), f"env '{env_id}'")
        probe = gym.make(env_id, **env_kwargs)
        for wrapper in wrappers or []:
            probe = wrapper(probe)
        exposed_space, self._flatten, keep_keys = _flatten_obs_space(probe.observation_space)
        self._raw_obs_space = probe.observation_space
        self.spec = probe.spec
        # the TimeLimit of the gymnasium registration (None without one), as the torch envs expose it
        self.max_episode_steps: int | None = getattr(probe.spec, "max_episode_steps", None)
        self.render_mode = probe.render_mode
        single_action_space, self._action_start = _zero_based(probe.action_space)
        probe.close()
        all_wrappers = list(wrappers or [])
        if keep_keys is not None and set(keep_keys) != set(probe.observation_space.spaces):
            dropped = sorted(set(probe.observation_space.spaces) - set(keep_keys))
            warnings.warn(f"{env_id}: dropping observation entries {dropped} (not representable as a tensor)",
                          stacklevel=2)
            all_wrappers.append(functools.partial(gym.wrappers.FilterObservation, filter_keys=keep_keys))
        if self._flatten:
            all_wrappers.append(gym.wrappers.FlattenObservation)
        self.num_envs = num_envs
        self.single_observation_space = exposed_space
        self.single_action_space = single_action_space
        self.observation_space = batch_space(exposed_space, num_envs)
        self.action_space = batch_space(single_action_space, num_envs)
        self._discrete = isinstance(single_action_space, gym.spaces.Discrete)
        self._groups = list(exposed_space.spaces) if isinstance(exposed_space, gym.spaces.Dict) else None
        self.envs: list[gym.Env] = []
        self.env: VectorEnv | None = None  # the async backend
        if vectorization == "sync":
            for _ in range(num_envs):
                env = gym.make(env_id, **env_kwargs)
                for wrapper in all_wrappers:
                    env = wrapper(env)
                self.envs.append(env)
        else:
            # gymnasium's AsyncVectorEnv built as make_vec builds it, told to name a failing worker
            self.env = _IndexedAsyncVectorEnv(
                [functools.partial(_make_env, env_id, env_kwargs, all_wrappers)] * num_envs,
                autoreset_mode=AutoresetMode.SAME_STEP,
            )
            self.env.env_id = env_id

    def _tensor(self, array: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        """numpy -> torch without a copy where possible (the arrays are fresh each step)."""
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def _to_torch(self, obs: Any) -> Obs:
        if isinstance(obs, dict):
            return {k: self._tensor(v, np.float32) for k, v in obs.items()}
        return self._tensor(obs, np.float32)

    def _empty_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        if self._groups is not None:
            space = self.single_observation_space
            return {g: np.empty((self.num_envs, *space[g].shape), np.float32) for g in self._groups}
        return np.empty((self.num_envs, *self.single_observation_space.shape), np.float32)

    def _write_obs(self, batch: np.ndarray | dict[str, np.ndarray], i: int, obs: Any) -> None:
        if self._groups is None:
            batch[i] = obs
        else:
            for g in self._groups:
                batch[g][i] = obs[g]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        if self.env is not None:
            obs, info = self.env.reset(seed=seed, options=options)
            return self._to_torch(obs), info
        obs = self._empty_obs()
        infos: dict[str, Any] = {}
        i = 0
        try:
            for i, env in enumerate(self.envs):
                env_obs, env_info = env.reset(seed=None if seed is None else seed + i, options=options)
                self._write_obs(obs, i, env_obs)
                infos = self._add_info(infos, env_info, i)
        except Exception as err:
            raise EnvStepError(self.env_id, i, err, call="reset") from err
        return self._to_torch(obs), infos

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        actions_np = actions.detach().cpu().numpy() if isinstance(actions, torch.Tensor) else np.asarray(actions)
        if self._discrete:
            actions_np = actions_np.astype(np.int64).reshape(self.num_envs)
        if self._action_start is not None:  # the agent acts in 0..n-1; the env's space starts elsewhere
            actions_np = actions_np.astype(np.int64) + self._action_start
        if self.env is not None:
            obs_np, reward, terminated, truncated, info = self.env.step(actions_np)
            if reward.shape != (self.num_envs,):
                reward = self._reward_vector(reward)
            done = terminated | truncated
            final_np = self._merge_final_obs(obs_np, info["final_obs"], done) if done.any() else None
        else:
            obs_np, reward, terminated, truncated, info, final_np = self._step_sync(actions_np)
            done = terminated | truncated
        obs = self._to_torch(obs_np)
        info["final_obs"] = obs if final_np is None else self._to_torch(final_np)
        info["_final_obs"] = self._tensor(done, np.bool_)
        return (
            obs,
            self._tensor(reward, np.float32),
            self._tensor(terminated, np.bool_),
            self._tensor(truncated, np.bool_),
            info,
        )

    def _step_sync(self, actions: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict, Any]:
        """Step every env in turn; a finished env is reset at once (SAME_STEP)."""
        obs = self._empty_obs()
        reward = np.empty(self.num_envs, np.float32)
        terminated = np.empty(self.num_envs, np.bool_)
        truncated = np.empty(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        finished: list[tuple[int, Any]] = []
        i = 0
        try:  # one try around the loop: free when nothing raises, and ``i`` names the env that did
            for i, env in enumerate(self.envs):
                env_obs, env_reward, terminated[i], truncated[i], env_info = env.step(actions[i])
                try:
                    reward[i] = env_reward
                except (TypeError, ValueError):  # not a number: a one-element array is squeezed, anything else refused
                    reward[i] = self._reward_scalar(env_reward, i)
                if terminated[i] or truncated[i]:
                    finished.append((i, env_obs))  # becomes the full final-obs tensor in step()
                    infos = self._add_info(infos, {"final_info": env_info}, i)
                    env_obs, env_info = env.reset()
                self._write_obs(obs, i, env_obs)
                if env_info:
                    infos = self._add_info(infos, env_info, i)
        except RewardContractError:
            raise  # the env breaks the reward contract: said as it is, not as a failed step
        except Exception as err:
            raise EnvStepError(self.env_id, i, err) from err
        final = None
        if finished:
            final = {g: v.copy() for g, v in obs.items()} if self._groups is not None else obs.copy()
            for i, last in finished:
                self._write_obs(final, i, last)
        return obs, reward, terminated, truncated, infos, final

    def _reward_scalar(self, reward: Any, index: int) -> float:
        """A one-element reward (shape ``(1,)``, ``(1, 1)``) as a float; any other shape is refused."""
        array = np.asarray(reward)
        if array.size != 1 or not np.issubdtype(array.dtype, np.number):
            raise RewardContractError(
                f"env '{self.env_id}' (copy {index}) returned a reward {_describe(array)}; the contract is one "
                "number per env step (wrap the env to sum or select its reward terms)"
            )
        return float(array.reshape(()))

    def _reward_vector(self, reward: np.ndarray) -> np.ndarray:
        """The batched reward as ``[N]``: ``[N, 1]`` is squeezed, any other shape refused."""
        array = np.asarray(reward)
        if array.size != self.num_envs or not np.issubdtype(array.dtype, np.number):
            raise RewardContractError(
                f"env '{self.env_id}' returned rewards {_describe(array)} for {self.num_envs} copies; the contract "
                "is one number per env step, [num_envs] in all (wrap the env to sum or select its reward terms)"
            )
        return array.reshape(self.num_envs)

    def _merge_final_obs(self, obs_np: Any, raw: Any, done_np: np.ndarray) -> Any:
        """A full ``[N, ...]`` final-obs array: the episode's last obs on finished rows."""
        if isinstance(obs_np, dict):
            merged = {k: np.array(v, copy=True) for k, v in obs_np.items()}
            for i in np.flatnonzero(done_np):
                for k in merged:
                    merged[k][i] = raw[i][k]
            return merged
        merged = np.array(obs_np, copy=True)
        for i in np.flatnonzero(done_np):
            merged[i] = raw[i]
        return merged

    def render(self) -> Any:
        if self.env is not None:
            return self.env.render()
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        if self.env is not None:
            self.env.close()
        for env in self.envs:
            env.close()
