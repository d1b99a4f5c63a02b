"""Adapter: N copies of a PettingZoo parallel env -> the multi-agent torch contract (:mod:`envs.multi_agent`).

Every PettingZoo ``ParallelEnv`` whose agents all stay for the whole episode works, which covers
gymnasium-robotics' MaMuJoCo (``mamujoco:HalfCheetah-2x3``, ``mamujoco:Ant-4x2``, ...) and the
cooperative PettingZoo suites (``pettingzoo:pettingzoo.sisl.pursuit_v5``, ...)::

    env = make_pettingzoo_vec_env("mamujoco:HalfCheetah-2x3", num_envs=8, env_kwargs={"agent_obsk": 1})
    obs, info = env.reset(seed=0)           # {"agent_0": [8, 12], "agent_1": [8, 12], "state": [8, 17]}
    obs, reward, terminated, truncated, info = env.step({"agent_0": a0, "agent_1": a1})  # reward [8, 2]

The adapter is not a :class:`~envs.multi_agent.MultiAgentTorchVecEnv` (the copies are Python objects:
``"sync"`` steps them one after another in this process, ``"async"`` runs one subprocess per copy, as
:class:`envs.core.GymnasiumVecEnv` does) but exposes the same attributes, so
:func:`envs.multi_agent.is_multi_agent` accepts it.

Conventions (those of :class:`envs.core.GymnasiumVecEnv`):

* ``reset(seed=s)`` resets copy ``i`` with ``seed=s + i``; autoresets pass no seed (each copy's
  generator continues), so a run is reproducible from ``s``.
* SAME_STEP autoreset: a finished copy is reset inside ``step``; ``info["final_obs"]`` is the dict
  (every agent and ``"state"``) of the true last observations, ``info["_final_obs"]`` the ``[N]`` mask,
  ``info["final_info"]["agents"]`` the finished copies' last infos; the agents' own infos are
  ``info["agents"][agent][key]`` (arrays ``[N]`` with gymnasium's ``_key`` masks).
* An exception inside a copy's ``reset``/``step`` becomes :class:`envs.core.EnvStepError` naming the
  copy; a broken multi-agent contract (an agent leaving) is :class:`AgentsLeftError`.

Per-agent flags -> the shared ``terminated``/``truncated [N]``: PettingZoo gives each agent its own
flags. The contract has one pair per copy, so every agent must finish at the same step (MaMuJoCo
gives all agents the single-agent env's flags); then ``terminated`` is true when *every* agent
terminated (the state is terminal for the whole team) and ``truncated`` when *any* agent was
truncated (a time limit cut the episode: bootstrap from ``final_obs``). Envs whose agents leave
mid-episode (some agents done while others go on, or ``env.agents`` shrinking) cannot be batched
with a fixed agent axis and raise :class:`AgentsLeftError` at the first such step.

The global state: ``env.state()`` with ``env.state_space`` (MaMuJoCo: the single-agent observation;
its space is taken from the first ``state()`` when the env defines none). An env without ``state()``
gets the concatenation of every agent's flattened observation, in agent order.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import EnvStepError, MissingDependencyError, _IndexedAsyncVectorEnv, resolve_device
from envs.multi_agent import STATE_KEY

__all__ = ["PettingZooVecEnv", "AgentsLeftError", "make_pettingzoo_vec_env", "MAMUJOCO_PREFIX", "PETTINGZOO_PREFIX"]

MAMUJOCO_PREFIX = "mamujoco:"
PETTINGZOO_PREFIX = "pettingzoo:"


class AgentsLeftError(ValueError):
    """A PettingZoo env's agents did not all finish at the same step (or ``env.agents`` changed)."""


def _as_box(space: gym.Space) -> tuple[gym.spaces.Box, bool]:
    """``(exposed Box, needs flattening)``: a Box passes through, other spaces are flattened."""
    if isinstance(space, gym.spaces.Box):  # exposed as float32, the dtype of the returned tensors
        low, high = space.low.astype(np.float32), space.high.astype(np.float32)
        return gym.spaces.Box(low, high, space.shape, np.float32), False
    try:
        return gym.spaces.flatten_space(space), True
    except NotImplementedError as err:
        raise TypeError(f"observation space {space} cannot be flattened into a tensor") from err


class _ParallelCopy(gym.Env):
    """One copy of a PettingZoo parallel env as one gymnasium env: obs ``{agent: obs_i, "state": state}``
    (numpy float32), action ``{agent: act_i}``, reward ``[A]`` float32, the shared flags (module doc).

    The sync adapter steps a list of them; the async one runs each in gymnasium's ``AsyncVectorEnv`` worker.
    ``index`` (the copy's place in the batch) goes into :class:`AgentsLeftError` messages.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, env_fn: Callable[[], Any], env_id: str, index: int):
        self.env = env_fn()
        self.env_id, self.index = env_id, index
        agents = tuple(self.env.possible_agents)
        if not agents:
            raise ValueError(f"{env_id}: the env has no agents (possible_agents is empty)")
        if STATE_KEY in agents:
            raise ValueError(f"{env_id}: no agent may be called {STATE_KEY!r} (the key of the global state)")
        self.agents = agents
        self.observation_spaces: dict[str, gym.spaces.Box] = {}
        self._flatten: dict[str, gym.Space | None] = {}
        for agent in agents:
            raw = self.env.observation_space(agent)
            self.observation_spaces[agent], flat = _as_box(raw)
            self._flatten[agent] = raw if flat else None
        self.action_spaces: dict[str, gym.Space] = {a: self.env.action_space(a) for a in agents}
        self.state_from_env = True
        self.env.reset(seed=None)
        try:
            state = np.asarray(self.env.state(), np.float32)
        except NotImplementedError:  # the concatenation of the agents' observations
            self.state_from_env = False
            state = np.zeros(sum(int(np.prod(s.shape)) for s in self.observation_spaces.values()), np.float32)
        space = getattr(self.env, "state_space", None) if self.state_from_env else None
        if not isinstance(space, gym.spaces.Box):
            space = gym.spaces.Box(-np.inf, np.inf, state.shape, np.float32)
        self.state_space, _ = _as_box(space)
        self.observation_space = gym.spaces.Dict({**self.observation_spaces, STATE_KEY: self.state_space})
        self.action_space = gym.spaces.Dict(self.action_spaces)
        self.horizon = _horizon(self.env)

    def _obs(self, obs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for agent in self.agents:
            space = self._flatten[agent]
            out[agent] = np.asarray(obs[agent] if space is None else gym.spaces.flatten(space, obs[agent]), np.float32)
        if self.state_from_env:
            out[STATE_KEY] = np.asarray(self.env.state(), np.float32)
        else:
            out[STATE_KEY] = np.concatenate([out[a].reshape(-1) for a in self.agents])
        return out

    def _infos(self, infos: Mapping[str, Any]) -> dict[str, Any]:
        agent_infos = {a: v for a, v in infos.items() if a in self.agents and v}
        return {"agents": agent_infos} if agent_infos else {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        obs, infos = self.env.reset(seed=seed, options=options)
        self._check_agents(obs)
        return self._obs(obs), self._infos(infos)

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, np.ndarray, bool, bool, dict]:
        obs, rewards, terminations, truncations, infos = self.env.step({a: actions[a] for a in self.agents})
        terminated, truncated = self._flags(terminations, truncations)
        if not (terminated or truncated):
            self._check_agents(obs)
        reward = np.array([rewards[a] for a in self.agents], np.float32)
        return self._obs(obs), reward, terminated, truncated, self._infos(infos)

    def _flags(self, terminated: Mapping[str, Any], truncated: Mapping[str, Any]) -> tuple[bool, bool]:
        """The shared ``(terminated, truncated)``; :class:`AgentsLeftError` when the agents finish apart."""
        try:
            term = [bool(terminated[a]) for a in self.agents]
            trunc = [bool(truncated[a]) for a in self.agents]
        except KeyError as err:
            raise AgentsLeftError(f"{self.env_id}: copy {self.index} returned no termination/truncation flag for "
                                  f"agent {err.args[0]!r}; every agent of {list(self.agents)} must stay until the "
                                  "episode ends") from None
        done = [t or u for t, u in zip(term, trunc, strict=True)]
        if any(done) and not all(done):
            left = [a for a, d in zip(self.agents, done, strict=True) if d]
            raise AgentsLeftError(
                f"{self.env_id}: in copy {self.index} agents {left} finished while the others go on; the adapter "
                "batches a fixed set of agents, so every agent must finish at the same step (envs whose agents "
                "leave mid-episode are not supported)")
        return all(term), any(trunc)

    def _check_agents(self, obs: Mapping[str, Any]) -> None:
        """Every agent is live and observed (between episode ends)."""
        live = getattr(self.env, "agents", self.agents)
        if len(live) != len(self.agents) or set(live) != set(self.agents) or len(obs) != len(self.agents):
            raise AgentsLeftError(
                f"{self.env_id}: copy {self.index} has live agents {sorted(live)} and observations for "
                f"{sorted(obs)}, expected all of {list(self.agents)}; the adapter batches a fixed set of agents "
                "(envs whose agents leave or join mid-episode are not supported)")

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


class PettingZooVecEnv(VectorEnv):
    """N copies of a PettingZoo ``ParallelEnv`` behind the multi-agent contract (see the module doc).

    Args:
        env_fn: builds one copy (called once per copy, in the worker for ``"async"``; cloudpickled there).
        num_envs: N, the number of copies.
        device: where returned tensors live.
        env_id: the id named in error messages.
        vectorization: ``"sync"`` (the copies stepped one after another in this process) or ``"async"``
            (one subprocess per copy, gymnasium's ``AsyncVectorEnv`` with shared memory: worth it when a
            copy's step costs much more than the pipe round trip, e.g. MaMuJoCo on a many-core machine).
        max_episode_steps: the episode horizon (informational; the env truncates itself); default: the
            env's ``max_cycles`` or its single-agent env's registered ``max_episode_steps``, else None.

    Attributes (the contract of :class:`envs.multi_agent.MultiAgentTorchVecEnv`): ``agents`` (the env's
    ``possible_agents``, the reward column order), ``single_observation_spaces``,
    ``single_action_spaces``, ``single_state_space``, ``teams`` (one team ``"team"`` of every agent),
    ``single_observation_space`` / ``single_action_space`` (the ``Dict`` of the above).

    Observations are float32 tensors ``[N, *obs_i]`` (non-Box spaces flattened); actions
    ``{agent: [N, *act_i]}`` (``Discrete``: ``[N]`` or ``[N, 1]`` integers); reward ``[N, A]`` float32.

    Raises:
        ValueError: no agents, an agent called ``"state"``, or an unknown ``vectorization``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_fn: Callable[[], Any],
        num_envs: int,
        device: str | torch.device = "cpu",
        env_id: str = "pettingzoo env",
        vectorization: str = "sync",
        max_episode_steps: int | None = None,
    ):
        if vectorization not in ("sync", "async"):
            raise ValueError(f"vectorization must be 'sync' or 'async', got '{vectorization}'")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_id = env_id
        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.copies: list[_ParallelCopy] = []
        self._async: VectorEnv | None = None
        probe = _ParallelCopy(env_fn, env_id, 0)  # fixes the spaces; the first sync copy
        self.agents: tuple[str, ...] = probe.agents
        self.teams: dict[str, tuple[str, ...]] = {"team": probe.agents}
        self.single_observation_spaces: dict[str, gym.Space] = dict(probe.observation_spaces)
        self.single_action_spaces: dict[str, gym.Space] = dict(probe.action_spaces)
        self.single_state_space: gym.spaces.Box = probe.state_space
        self.single_observation_space = probe.observation_space
        self.single_action_space = probe.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.max_episode_steps = max_episode_steps if max_episode_steps is not None else probe.horizon
        self._discrete = {a: isinstance(s, gym.spaces.Discrete) for a, s in self.single_action_spaces.items()}
        if vectorization == "sync":
            self.copies.append(probe)
            try:
                for i in range(1, num_envs):
                    self.copies.append(_ParallelCopy(env_fn, env_id, i))
            except Exception:
                self.close_extras()
                raise
        else:
            probe.close()
            self._async = _IndexedAsyncVectorEnv(
                [functools.partial(_ParallelCopy, env_fn, env_id, i) for i in range(num_envs)],
                autoreset_mode=AutoresetMode.SAME_STEP)
            self._async.env_id = env_id

    # --- the contract's helpers -----------------------------------------------------------------
    @property
    def num_agents(self) -> int:
        """A, the number of agents (reward columns)."""
        return len(self.agents)

    def team_columns(self, team: str) -> list[int]:
        """The reward columns of ``team``'s agents."""
        return [self.agents.index(a) for a in self.teams[team]]

    # --- numpy <-> torch ------------------------------------------------------------------------
    def _empty_obs(self) -> dict[str, np.ndarray]:
        return {k: np.empty((self.num_envs, *s.shape), np.float32) for k, s in self.single_observation_space.items()}

    def _tensor(self, array: np.ndarray, dtype: np.dtype = np.float32) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=dtype))
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def _to_torch(self, obs: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: self._tensor(obs[k]) for k in self.single_observation_space}

    def _actions_np(self, actions: Any) -> dict[str, np.ndarray]:
        """The action dict as numpy arrays ``[N, *act_i]`` in each space's dtype; one-line ValueError otherwise."""
        if not isinstance(actions, Mapping) or set(actions) != set(self.agents):
            got = sorted(actions) if isinstance(actions, Mapping) else type(actions).__name__
            raise ValueError(f"{self.env_id}: step takes a dict with one action tensor per agent "
                             f"{list(self.agents)}, got {got}")
        out = {}
        for agent in self.agents:
            value = actions[agent]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
            space = self.single_action_spaces[agent]
            if self._discrete[agent]:
                if array.size != self.num_envs:
                    raise ValueError(f"{self.env_id}: the action of agent '{agent}' must have shape "
                                     f"({self.num_envs},) (Discrete), got {array.shape}")
                out[agent] = array.astype(np.int64).reshape(self.num_envs)
                continue
            expected = (self.num_envs, *space.shape)
            if array.shape != expected:
                raise ValueError(f"{self.env_id}: the action of agent '{agent}' must have shape {expected} "
                                 f"(num_envs, *action shape), got {array.shape}")
            out[agent] = array.astype(space.dtype, copy=False)
        return out

    # --- gymnasium API --------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        """Reset every copy (copy ``i`` with ``seed + i``); obs ``{agent: [N, *obs_i], "state": [N, *state]}``."""
        if self._async is not None:
            with _agents_left_raised():
                obs, infos = self._async.reset(seed=seed, options=options)
            return self._to_torch(obs), infos
        obs = self._empty_obs()
        infos: dict[str, Any] = {}
        i = 0
        try:
            for i, copy in enumerate(self.copies):
                copy_obs, copy_info = copy.reset(seed=None if seed is None else seed + i, options=options)
                for key, value in copy_obs.items():
                    obs[key][i] = value
                infos = self._add_info(infos, copy_info, i)
        except AgentsLeftError:
            raise
        except Exception as err:
            raise EnvStepError(self.env_id, i, err, call="reset") from err
        return self._to_torch(obs), infos

    def step(self, actions: Mapping[str, torch.Tensor]) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step every copy with ``{agent: [N, *act_i]}``; reward ``[N, A]``, shared flags ``[N]`` (module doc)."""
        acts = self._actions_np(actions)
        if self._async is not None:
            with _agents_left_raised():
                obs, reward, terminated, truncated, infos = self._async.step(acts)
            done = terminated | truncated
            final = None
            if done.any():
                final = {k: np.array(v, copy=True) for k, v in obs.items()}
                for i in np.flatnonzero(done):
                    for key in final:
                        final[key][i] = infos["final_obs"][i][key]
        else:
            obs, reward, terminated, truncated, infos, final = self._step_sync(acts)
            done = terminated | truncated
        obs_t = self._to_torch(obs)
        infos["final_obs"] = obs_t if final is None else self._to_torch(final)
        infos["_final_obs"] = self._tensor(done, np.bool_)
        return (obs_t, self._tensor(reward), self._tensor(terminated, np.bool_), self._tensor(truncated, np.bool_),
                infos)

    def _step_sync(self, acts: dict[str, np.ndarray]) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, dict, Any]:
        """Step every copy in turn; a finished copy is reset at once (SAME_STEP), as gymnasium's workers do."""
        obs = self._empty_obs()
        reward = np.empty((self.num_envs, self.num_agents), np.float32)
        terminated = np.empty(self.num_envs, np.bool_)
        truncated = np.empty(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        final: dict[str, np.ndarray] | None = None
        i = 0
        try:
            for i, copy in enumerate(self.copies):
                copy_obs, reward[i], terminated[i], truncated[i], copy_info = copy.step(
                    {a: acts[a][i] for a in self.agents})
                if terminated[i] or truncated[i]:
                    if final is None:
                        final = self._empty_obs()
                    for key, value in copy_obs.items():
                        final[key][i] = value
                    copy_obs, reset_info = copy.reset()
                    copy_info = {"final_info": copy_info, **reset_info}
                for key, value in copy_obs.items():
                    obs[key][i] = value
                if copy_info:
                    infos = self._add_info(infos, copy_info, i)
        except AgentsLeftError:
            raise
        except Exception as err:
            raise EnvStepError(self.env_id, i, err) from err
        if final is not None:
            rows = ~(terminated | truncated)
            for key in final:
                final[key][rows] = obs[key][rows]
        return obs, reward, terminated, truncated, infos, final

    def render(self) -> Any:
        if self._async is not None:
            return self._async.render()
        return tuple(copy.render() for copy in self.copies)

    def close_extras(self, **kwargs: Any) -> None:
        if self._async is not None:
            self._async.close()
        for copy in self.copies:
            copy.close()


@contextlib.contextmanager
def _agents_left_raised() -> Iterator[None]:
    """An :class:`AgentsLeftError` raised in an async worker comes out as itself, not as a failed step."""
    try:
        yield
    except EnvStepError as err:
        if isinstance(err.__cause__, AgentsLeftError):
            raise AgentsLeftError(str(err.__cause__)) from None
        raise


def _horizon(env: Any) -> int | None:
    """The episode horizon an env declares: ``max_cycles`` (PettingZoo) or its single-agent env's TimeLimit."""
    unwrapped = getattr(env, "unwrapped", None)
    for owner in (env, unwrapped, getattr(unwrapped, "env", None)):  # the last: SISL's simulator object
        cycles = getattr(owner, "max_cycles", None)
        if isinstance(cycles, int):
            return cycles
    single = getattr(env, "single_agent_env", None)  # MaMuJoCo
    spec = getattr(single, "spec", None)
    steps = getattr(spec, "max_episode_steps", None)
    return steps if isinstance(steps, int) else None


def _mamujoco_factory(env_id: str, env_kwargs: dict[str, Any]) -> Callable[[], Any]:
    """``mamujoco:<Robot>-<partition>`` -> a factory of gymnasium-robotics' ``mamujoco_v1.parallel_env``."""
    robot, sep, conf = env_id[len(MAMUJOCO_PREFIX):].partition("-")
    if not robot or not sep or not conf:
        raise gym.error.NameNotFound(f"env id '{env_id}' must be mamujoco:<Robot>-<partition>, e.g. "
                                     "mamujoco:HalfCheetah-2x3 or mamujoco:Ant-4x2")
    try:
        from gymnasium_robotics import mamujoco_v1
    except ImportError as err:
        raise MissingDependencyError(f"env '{env_id}'", "multiagent", "gymnasium-robotics") from err
    for key in ("scenario", "agent_conf"):
        if key in env_kwargs:
            raise ValueError(f"env '{env_id}': env_kwargs may not set '{key}' (the id sets it)")
    try:  # fail here, once, with the library's message, rather than in every copy
        from gymnasium_robotics.envs.multiagent_mujoco.obsk import get_parts_and_edges

        get_parts_and_edges(robot, conf)
    except Exception as err:
        raise gym.error.NameNotFound(f"env id '{env_id}': gymnasium-robotics' MaMuJoCo has no robot '{robot}' "
                                     f"with partition '{conf}' ({err})") from err

    def make() -> Any:
        return mamujoco_v1.parallel_env(robot, conf, **env_kwargs)

    return make


def _pettingzoo_factory(env_id: str, env_kwargs: dict[str, Any]) -> Callable[[], Any]:
    """``pettingzoo:<module path>`` -> a factory of that module's ``parallel_env(**env_kwargs)``."""
    path = env_id[len(PETTINGZOO_PREFIX):]
    try:
        module = importlib.import_module(path)
    except ModuleNotFoundError as err:
        if err.name is not None and path.startswith(err.name):
            raise gym.error.NameNotFound(f"env id '{env_id}': module '{path}' cannot be imported ({err})") from err
        raise MissingDependencyError(f"env '{env_id}'", None, hint=str(err)) from err
    except ImportError as err:  # e.g. a moved suite (pettingzoo.mpe -> mpe2) or a missing simulator
        raise MissingDependencyError(f"env '{env_id}'", None, hint=str(err)) from err
    factory = getattr(module, "parallel_env", None)
    if not callable(factory):
        raise gym.error.NameNotFound(f"env id '{env_id}': module '{path}' has no parallel_env() (the PettingZoo "
                                     "parallel API)")
    return lambda: factory(**env_kwargs)


def make_pettingzoo_vec_env(
    env_id: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    env_kwargs: dict[str, Any] | None = None,
    vectorization: str = "sync",
) -> PettingZooVecEnv:
    """Build :class:`PettingZooVecEnv` from a ``mamujoco:<Robot>-<partition>`` or ``pettingzoo:<module>`` id.

    ``env_kwargs`` go to ``mamujoco_v1.parallel_env`` (e.g. ``agent_obsk``, and the single-agent env's
    keyword arguments) or to the module's ``parallel_env``. Raises ``gymnasium.error.NameNotFound``
    for an id that names nothing, :class:`envs.core.MissingDependencyError` when the library is missing.
    """
    kwargs = dict(env_kwargs or {})
    if env_id.startswith(MAMUJOCO_PREFIX):
        from envs.mujoco_log import route_mujoco_warnings

        route_mujoco_warnings()
        factory = _mamujoco_factory(env_id, kwargs)
    elif env_id.startswith(PETTINGZOO_PREFIX):
        factory = _pettingzoo_factory(env_id, kwargs)
    else:
        raise ValueError(f"env id '{env_id}' starts with neither '{MAMUJOCO_PREFIX}' nor '{PETTINGZOO_PREFIX}'")
    return PettingZooVecEnv(factory, num_envs, device, env_id=env_id, vectorization=vectorization)
