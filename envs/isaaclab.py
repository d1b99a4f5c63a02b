"""Isaac Lab adapter (optional extra): env ids ``isaaclab:<task>`` (``drl train ppo --env isaaclab:Isaac-...``).

Wraps an Isaac Lab ``DirectRLEnv`` or ``ManagerBasedRLEnv`` (made as Isaac Lab's own scripts make it:
``isaaclab_tasks.utils.parse_env_cfg(task, device=..., num_envs=...)``, then ``gymnasium.make(task, cfg=cfg)``
inside ``isaaclab.app.launch_simulation(cfg)``, which starts Isaac Sim only when the config needs it and
nothing in kit-less mode) into drl's env contract (:mod:`envs.core`):

* Isaac Lab is already torch-batched on its device and resets finished envs inside ``step`` (SAME_STEP): its
  ``step`` returns ``(obs, reward, terminated, time_outs, extras)``; ``time_outs`` is drl's ``truncated``.
* Observations stay a dict of groups (``"policy"``; ``"critic"`` when the task has privileged state), each
  ``[N, D]``: the names drl's agents read (``algo.critic_obs: critic`` for an asymmetric critic). A group
  whose terms are not concatenated (a dict of terms) is refused: set ``concatenate_terms = True`` in the
  task's observation config.
* ``info["final_obs"]``: Isaac Lab returns the next episode's first observation for an env that finished
  and, in its stock envs, does not keep the last one. When the env puts a full ``[N, ...]`` observation in
  ``extras["final_obs"]`` (same groups), it is used as is. Otherwise the adapter reports the observation the
  last action was taken on (``s_{T-1}``) as the final one, so a truncated episode is bootstrapped with
  ``V(s_{T-1})`` in place of ``V(s_T)`` (the approximation rsl_rl makes for time-outs; terminated
  episodes are not bootstrapped, so they are exact). A warning says so once per process.
* Actions: drl's agents need a bounded action space (PPO clips into it, SAC/TD3 squash into it), and Isaac
  Lab's is unbounded; env kwarg ``clip_actions: c`` (default 1.0 for an unbounded Box) makes it ``Box(-c, c)``
  and clamps every action (as rsl_rl's wrapper option of that name does). Isaac Lab tasks scale their
  actions themselves (``action_scale``), so unit actions are their usual range; raise ``c`` if a task needs
  more. A bounded Box is kept as the task gives it.

One simulation per process: Isaac Lab cannot hold two. The first ``make`` in a process builds it (its
``num_envs`` fixed from then on) and every later one for the same task (the runner's evaluation env, a
probe) is a view on it with its ``num_envs``. When a view steps after another one used the simulation
(training after an evaluation), the simulation is reset, the action is not applied, and the step reports
every env ``truncated`` with reward 0 and ``final_obs`` the view's last observation: each env's interrupted
episode ends there (one transition per env per evaluation; ``drl eval`` of a finished run is unaffected).

Env kwargs (``env.kwargs``): ``clip_actions``; ``factory`` (``"module:function"``, called as
``function(task, num_envs=..., device=...)`` -> an Isaac-Lab-like env: the tests' fake env, or a custom
builder); any other key is set on the parsed env config (``cfg.<key> = value``, e.g. ``episode_length_s``).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import warnings
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv

from envs.core import MissingDependencyError, Obs, resolve_device

__all__ = ["ISAACLAB_PREFIX", "IsaacLabVecEnv", "make_isaaclab_env", "close_all", "build_isaaclab_task"]

ISAACLAB_PREFIX = "isaaclab:"
DEFAULT_CLIP_ACTIONS = 1.0  # the bound of an unbounded Isaac Lab action space (env.kwargs.clip_actions)
_INSTALL_HINT = ("Isaac Lab is not installed in this Python (it needs Python 3.12): install it from its repository "
                 "(git clone https://github.com/isaac-sim/IsaacLab; cd IsaacLab; ./isaaclab.sh --install) into the "
                 "environment drl runs in; see the README's 'Isaac Lab' section")


def build_isaaclab_task(task: str, num_envs: int, device: str, **cfg_overrides: Any) -> tuple[Any, Any]:
    """Isaac Lab's own way to make ``task``: ``(env, launcher context or None)``.

    Raises:
        MissingDependencyError: ``isaaclab`` / ``isaaclab_tasks`` cannot be imported.
    """
    try:
        import isaaclab_tasks  # noqa: F401  (registers the Isaac-* task ids with gymnasium)
        from isaaclab_tasks.utils import parse_env_cfg
    except ImportError as err:
        raise MissingDependencyError(f"env '{ISAACLAB_PREFIX}{task}'", None, "isaaclab", hint=_INSTALL_HINT) from err
    cfg = parse_env_cfg(task, device=device, num_envs=num_envs)
    for key, value in cfg_overrides.items():
        if not hasattr(cfg, key):
            raise ValueError(f"env.kwargs.{key}: the Isaac Lab config of '{task}' has no field '{key}'")
        setattr(cfg, key, value)
    launcher = None
    try:
        from isaaclab.app import launch_simulation  # Isaac Lab 3: starts Kit only if the config needs it
    except ImportError:  # older Isaac Lab: the caller started the app (AppLauncher) before importing drl's envs
        launch_simulation = None
    if launch_simulation is not None:
        launcher = launch_simulation(cfg)
        launcher.__enter__()
    return gym.make(task, cfg=cfg), launcher


class _Simulation:
    """The one Isaac Lab env of a task in this process, shared by every :class:`IsaacLabVecEnv` view."""

    def __init__(self, env: Any, launcher: Any, task: str):
        self.env = env
        self.launcher = launcher
        self.task = task
        self.owner: IsaacLabVecEnv | None = None  # the view that reset or stepped it last
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self.env.close()
        if self.launcher is not None:
            with contextlib.suppress(Exception):
                self.launcher.__exit__(None, None, None)


_SIMULATIONS: dict[tuple[str, str], _Simulation] = {}
_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=3)


def close_all() -> None:
    """Close every simulation this process built (at exit; tests between cases)."""
    for sim in _SIMULATIONS.values():
        sim.close()
    _SIMULATIONS.clear()
    _WARNED.clear()


atexit.register(close_all)


def _resolve_factory(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"env.kwargs.factory: cannot import '{spec}' (give 'module:function'): {err}") from err


def _device_string(device: torch.device) -> str:
    """Isaac Lab names CUDA devices with their index (``cuda:0``)."""
    return f"cuda:{device.index or 0}" if device.type == "cuda" else str(device)


def make_isaaclab_env(env_id: str, num_envs: int, device: str | torch.device = "cpu",
                      env_kwargs: dict[str, Any] | None = None) -> IsaacLabVecEnv:
    """The drl env of ``isaaclab:<task>`` (see the module docstring for the shared simulation)."""
    task = env_id[len(ISAACLAB_PREFIX):]
    if not task:
        raise ValueError(f"env id '{env_id}': give the Isaac Lab task after '{ISAACLAB_PREFIX}', e.g. "
                         f"{ISAACLAB_PREFIX}Isaac-Cartpole-Direct")
    kwargs = dict(env_kwargs or {})
    clip = kwargs.pop("clip_actions", None)
    factory_spec = kwargs.pop("factory", None)
    if clip is not None and not (isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip > 0):
        raise ValueError(f"env.kwargs.clip_actions must be a number > 0 (the action bound), got {clip!r}")
    device = resolve_device(device)
    key = (task, str(factory_spec))
    sim = _SIMULATIONS.get(key)
    if sim is None or sim.closed:
        if factory_spec is not None:
            env, launcher = _resolve_factory(factory_spec)(task, num_envs=num_envs, device=_device_string(device),
                                                           **kwargs), None
        else:
            env, launcher = build_isaaclab_task(task, num_envs, _device_string(device), **kwargs)
        sim = _SIMULATIONS[key] = _Simulation(env, launcher, task)
    view = IsaacLabVecEnv(sim, clip_actions=clip)
    if view.num_envs != num_envs:
        _warn_once(f"num_envs:{task}", f"Isaac Lab runs one simulation per process: '{env_id}' was built with "
                   f"{view.num_envs} envs, and this env (asked for {num_envs}) shares them")
    return view


def _group_space(name: str, space: gym.Space) -> gym.spaces.Box:
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"Isaac Lab obs group '{name}' is {type(space).__name__}, not one tensor: drl reads "
                         "concatenated groups (set concatenate_terms = True in the task's observation group config)")
    return gym.spaces.Box(-np.inf, np.inf, (int(np.prod(space.shape)),), np.float32)


class IsaacLabVecEnv(VectorEnv):
    """One view of a shared Isaac Lab simulation, speaking drl's env contract (module docstring).

    Attributes:
        num_envs, device, single_observation_space (Dict of flat float32 groups), single_action_space.
        final_obs_source: ``"env"`` (``extras["final_obs"]``) or ``"previous"`` (``s_{T-1}``), once known.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(self, sim: _Simulation, clip_actions: float | None = None):
        self.sim = sim
        env = getattr(sim.env, "unwrapped", sim.env)
        self.num_envs = int(env.num_envs)
        self.device = torch.device(env.device)
        space = env.single_observation_space
        groups = space.spaces if isinstance(space, gym.spaces.Dict) else {"policy": space}
        self.groups = list(groups)
        self.single_observation_space = gym.spaces.Dict({g: _group_space(g, s) for g, s in groups.items()})
        action_space = env.single_action_space
        box = isinstance(action_space, gym.spaces.Box)
        if clip_actions is None and box and not (np.isfinite(action_space.low).all()
                                                 and np.isfinite(action_space.high).all()):
            clip_actions = DEFAULT_CLIP_ACTIONS  # an unbounded Box; a bounded one stays as the task gives it
        self.clip_actions = None if clip_actions is None else float(clip_actions)
        if self.clip_actions is not None and box:
            action_space = gym.spaces.Box(-self.clip_actions, self.clip_actions, action_space.shape, np.float32)
        self.single_action_space = action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.final_obs_source: str | None = None
        self._last_obs: dict[str, torch.Tensor] | None = None
        self.closed = False

    def _obs(self, raw: Any) -> dict[str, torch.Tensor]:
        """Isaac Lab's obs (a dict of groups, or one tensor) -> drl's: ``{group: [N, D] float32}``, copied
        (the next step must not change what was returned)."""
        if not isinstance(raw, dict):
            raw = {"policy": raw}
        return {g: raw[g].reshape(self.num_envs, -1).to(self.device, torch.float32).clone() for g in self.groups}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        """Reset every env of the simulation (``seed`` reseeds Isaac Lab's generators)."""
        obs, _ = self.sim.env.reset(seed=seed, options=options)
        self.sim.owner = self
        self._last_obs = self._obs(obs)
        return {g: x.clone() for g, x in self._last_obs.items()}, {}

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """One Isaac Lab step (finished envs already reset by it); see the module docstring for ``final_obs``."""
        if self._last_obs is None:
            raise RuntimeError("IsaacLabVecEnv.step before reset")
        n, device = self.num_envs, self.device
        if self.sim.owner is not self:  # another view used the simulation: this view's episodes are cut here
            previous = self._last_obs
            obs, _ = self.reset()
            everyone = torch.ones(n, dtype=torch.bool, device=device)
            return obs, torch.zeros(n, device=device), torch.zeros_like(everyone), everyone, {
                "final_obs": previous, "_final_obs": everyone}
        actions = torch.as_tensor(actions, device=device)
        if self.clip_actions is not None:
            actions = actions.clamp(-self.clip_actions, self.clip_actions)
        raw, reward, terminated, truncated, extras = self.sim.env.step(actions)
        obs = self._obs(raw)
        terminated = terminated.reshape(n).to(device, torch.bool)
        truncated = truncated.reshape(n).to(device, torch.bool)
        done = terminated | truncated
        final = extras.get("final_obs") if isinstance(extras, dict) else None
        if final is not None:
            self.final_obs_source = "env"
            final_obs = self._obs(final)
        else:
            self.final_obs_source = "previous"
            if bool(done.any()):
                _warn_once(f"final_obs:{self.sim.task}", f"Isaac Lab task '{self.sim.task}' does not put the last "
                           "observation of an episode in extras['final_obs']: drl bootstraps truncated episodes "
                           "from the observation before it (V(s_T-1) for V(s_T))")
            mask = done.unsqueeze(-1)
            final_obs = {g: torch.where(mask, self._last_obs[g], obs[g]) for g in self.groups}
        self._last_obs = obs
        info = {"final_obs": final_obs, "_final_obs": done}
        return {g: x.clone() for g, x in obs.items()}, reward.reshape(n).to(device, torch.float32), terminated, \
            truncated, info

    def close(self, **kwargs: Any) -> None:
        """Close this view; the simulation itself stays up for the process (Isaac Lab cannot build another)."""
        self.closed = True
        if self.sim.owner is self:
            self.sim.owner = None
