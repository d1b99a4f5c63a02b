"""Adapter: N copies of a PettingZoo parallel env -> the multi-agent torch contract (:mod:`envs.multi_agent`).

Every PettingZoo ``ParallelEnv`` whose agents all stay for the whole episode works, which covers
gymnasium-robotics' MaMuJoCo (``mamujoco:HalfCheetah-2x3``, ``mamujoco:Ant-4x2``, ...) and the
cooperative PettingZoo suites (``pettingzoo:pettingzoo.sisl.pursuit_v5``, ...)::

    env = make_pettingzoo_vec_env("mamujoco:HalfCheetah-2x3", num_envs=8, env_kwargs={"agent_obsk": 1})
    obs, info = env.reset(seed=0)           # {"agent_0": [8, 13], "agent_1": [8, 13], "state": [8, 17]}
    obs, reward, terminated, truncated, info = env.step({"agent_0": a0, "agent_1": a1})  # reward [8, 2]

The adapter is not a :class:`~envs.multi_agent.MultiAgentTorchVecEnv` (the copies are Python objects,
stepped one after another in this process, as :class:`envs.core.GymnasiumVecEnv` ``"sync"`` does) but
exposes the same attributes, so :func:`envs.multi_agent.is_multi_agent` accepts it.

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

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import EnvStepError, MissingDependencyError, resolve_device
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


class PettingZooVecEnv(VectorEnv):
    """N copies of a PettingZoo ``ParallelEnv`` behind the multi-agent contract (see the module doc).

    Args:
        env_fn: builds one copy (called ``num_envs`` times; the first copy fixes the spaces).
        num_envs: N, the number of copies.
        device: where returned tensors live.
        env_id: the id named in error messages.
        max_episode_steps: the episode horizon (informational; the env truncates itself); default: the
            env's ``max_cycles`` or its single-agent env's registered ``max_episode_steps``, else None.

    Attributes (the contract of :class:`envs.multi_agent.MultiAgentTorchVecEnv`): ``agents`` (the env's
    ``possible_agents``, the reward column order), ``single_observation_spaces``,
    ``single_action_spaces``, ``single_state_space``, ``teams`` (one team ``"team"`` of every agent),
    ``single_observation_space`` / ``single_action_space`` (the ``Dict`` of the above).

    Observations are float32 tensors ``[N, *obs_i]`` (non-Box spaces flattened); actions
    ``{agent: [N, *act_i]}`` (``Discrete``: ``[N]`` or ``[N, 1]`` integers); reward ``[N, A]`` float32.

    Raises:
        ValueError: no agents, or an agent called ``"state"``.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        env_fn: Callable[[], Any],
        num_envs: int,
        device: str | torch.device = "cpu",
        env_id: str = "pettingzoo env",
        max_episode_steps: int | None = None,
    ):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.env_id = env_id
        self.num_envs = num_envs
        self.device = resolve_device(device)
        self.envs: list[Any] = []
        try:
            for _ in range(num_envs):
                self.envs.append(env_fn())
        except Exception:
            self.close_extras()
            raise
        probe = self.envs[0]
        agents = tuple(probe.possible_agents)
        if not agents:
            raise ValueError(f"{env_id}: the env has no agents (possible_agents is empty)")
        if STATE_KEY in agents:
            raise ValueError(f"{env_id}: no agent may be called {STATE_KEY!r} (the key of the global state)")
        self.agents: tuple[str, ...] = agents
        self.teams: dict[str, tuple[str, ...]] = {"team": agents}
        self.single_observation_spaces: dict[str, gym.Space] = {}
        self._flatten: dict[str, gym.Space | None] = {}
        for agent in agents:
            raw = probe.observation_space(agent)
            box, flat = _as_box(raw)
            self.single_observation_spaces[agent] = box
            self._flatten[agent] = raw if flat else None
        self.single_action_spaces: dict[str, gym.Space] = {a: probe.action_space(a) for a in agents}
        self._discrete = {a: isinstance(s, gym.spaces.Discrete) for a, s in self.single_action_spaces.items()}
        self._state_from_env = True
        try:
            probe.reset(seed=None)
            state = np.asarray(probe.state())
        except NotImplementedError:
            self._state_from_env = False
            size = sum(int(np.prod(s.shape)) for s in self.single_observation_spaces.values())
            state = np.zeros(size, np.float32)
        except Exception as err:
            raise EnvStepError(env_id, 0, err, call="reset") from err
        space = getattr(probe, "state_space", None) if self._state_from_env else None
        if not isinstance(space, gym.spaces.Box):
            space = gym.spaces.Box(-np.inf, np.inf, state.shape, np.float32)
        self.single_state_space: gym.spaces.Box = space
        self.single_observation_space = gym.spaces.Dict({**self.single_observation_spaces, STATE_KEY: space})
        self.single_action_space = gym.spaces.Dict(self.single_action_spaces)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.max_episode_steps = max_episode_steps if max_episode_steps is not None else _horizon(probe)

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
        obs = {a: np.empty((self.num_envs, *s.shape), np.float32) for a, s in self.single_observation_spaces.items()}
        obs[STATE_KEY] = np.empty((self.num_envs, *self.single_state_space.shape), np.float32)
        return obs

    def _write_obs(self, batch: dict[str, np.ndarray], i: int, env: Any, obs: Mapping[str, Any]) -> None:
        for agent in self.agents:
            space = self._flatten[agent]
            batch[agent][i] = obs[agent] if space is None else gym.spaces.flatten(space, obs[agent])
        if self._state_from_env:
            batch[STATE_KEY][i] = env.state()
        else:
            batch[STATE_KEY][i] = np.concatenate([batch[a][i].reshape(-1) for a in self.agents])

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(array)
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)

    def _to_torch(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        return {k: self._tensor(v) for k, v in obs.items()}

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
        obs = self._empty_obs()
        infos: dict[str, Any] = {}
        i = 0
        try:
            for i, env in enumerate(self.envs):
                env_obs, env_info = env.reset(seed=None if seed is None else seed + i, options=options)
                self._check_agents(env, env_obs, i)
                self._write_obs(obs, i, env, env_obs)
                infos = self._add_agent_infos(infos, env_info, i)
        except AgentsLeftError:
            raise
        except Exception as err:
            raise EnvStepError(self.env_id, i, err, call="reset") from err
        return self._to_torch(obs), infos

    def step(self, actions: Mapping[str, torch.Tensor]) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step every copy with ``{agent: [N, *act_i]}``; reward ``[N, A]``, shared flags ``[N]`` (module doc)."""
        acts = self._actions_np(actions)
        obs = self._empty_obs()
        reward = np.empty((self.num_envs, self.num_agents), np.float32)
        terminated = np.empty(self.num_envs, np.bool_)
        truncated = np.empty(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        finished: list[int] = []
        final: dict[str, np.ndarray] | None = None
        i = 0
        try:
            for i, env in enumerate(self.envs):
                env_obs, env_rew, env_term, env_trunc, env_info = env.step({a: acts[a][i] for a in self.agents})
                terminated[i], truncated[i] = self._flags(env_term, env_trunc, i)
                for j, agent in enumerate(self.agents):
                    reward[i, j] = env_rew[agent]
                if terminated[i] or truncated[i]:
                    if final is None:
                        final = self._empty_obs()
                    self._write_obs(final, i, env, env_obs)
                    finished.append(i)
                    last = {a: v for a, v in env_info.items() if a in self.agents}
                    infos = self._add_info(infos, {"final_info": {"agents": last}}, i)
                    env_obs, env_info = env.reset()
                    self._check_agents(env, env_obs, i)
                else:
                    self._check_agents(env, env_obs, i)
                    infos = self._add_agent_infos(infos, env_info, i)
                self._write_obs(obs, i, env, env_obs)
        except AgentsLeftError:
            raise
        except Exception as err:
            raise EnvStepError(self.env_id, i, err) from err
        done = terminated | truncated
        if final is not None:
            rows = ~done
            for key in final:
                final[key][rows] = obs[key][rows]
        obs_t = self._to_torch(obs)
        infos["final_obs"] = obs_t if final is None else self._to_torch(final)
        infos["_final_obs"] = self._tensor(done)
        return obs_t, self._tensor(reward), self._tensor(terminated), self._tensor(truncated), infos

    def _add_agent_infos(self, infos: dict, env_info: Mapping[str, Any], i: int) -> dict:
        """Merge copy ``i``'s per-agent infos as ``info["agents"][agent][key]`` (gymnasium's ``_add_info`` arrays)."""
        agent_infos = {a: v for a, v in env_info.items() if a in self.agents and v}
        return self._add_info(infos, {"agents": agent_infos}, i) if agent_infos else infos

    def _flags(self, terminated: Mapping[str, Any], truncated: Mapping[str, Any], i: int) -> tuple[bool, bool]:
        """The shared ``(terminated, truncated)`` of copy ``i``; :class:`AgentsLeftError` when agents finish apart."""
        try:
            term = [bool(terminated[a]) for a in self.agents]
            trunc = [bool(truncated[a]) for a in self.agents]
        except KeyError as err:
            raise AgentsLeftError(f"{self.env_id}: copy {i} returned no termination/truncation flag for agent "
                                  f"{err.args[0]!r}; every agent of {list(self.agents)} must stay until the "
                                  "episode ends") from None
        done = [t or u for t, u in zip(term, trunc, strict=True)]
        if any(done) and not all(done):
            left = [a for a, d in zip(self.agents, done, strict=True) if d]
            raise AgentsLeftError(
                f"{self.env_id}: in copy {i} agents {left} finished while the others go on; the adapter batches a "
                "fixed set of agents, so every agent must finish at the same step (envs whose agents leave "
                "mid-episode are not supported)")
        return all(term), any(trunc)

    def _check_agents(self, env: Any, obs: Mapping[str, Any], i: int) -> None:
        """Every agent is live and observed (between episode ends)."""
        live = getattr(env, "agents", self.agents)
        if len(live) != self.num_agents or set(live) != set(self.agents) or len(obs) != self.num_agents:
            raise AgentsLeftError(
                f"{self.env_id}: copy {i} has live agents {sorted(live)} and observations for {sorted(obs)}, "
                f"expected all of {list(self.agents)}; the adapter batches a fixed set of agents (envs whose "
                "agents leave or join mid-episode are not supported)")

    def render(self) -> Any:
        return tuple(env.render() for env in self.envs)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


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
    return PettingZooVecEnv(factory, num_envs, device, env_id=env_id)
