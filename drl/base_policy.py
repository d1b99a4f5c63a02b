"""Frozen base policies: any trained policy as an ``obs -> action`` callable (the residual agents' base).

:func:`load_base_policy` reads either

* a drl run folder (any agent: BC, PPO, SAC, TD3, ...; its best checkpoint, else latest), rebuilt with
  :func:`drl.api.load_agent`; the action is the agent's deterministic one (``act(obs, deterministic=True,
  update_stats=False)``: its own obs normaliser, not updated), in env units; a BC agent with action chunks
  (:class:`drl.agents.bc.BC`) is executed as it executes itself, with per-env chunk state of the base's own
  (:meth:`BasePolicy.end_episodes` restarts it where an episode ended);
* a Stable-Baselines3 model file (``.zip``), loaded through SB3 itself (the algorithm read off the file's
  policy class, e.g. ``stable_baselines3.sac.policies`` -> ``SAC``), acting with
  ``model.predict(obs, deterministic=True)`` (SB3 maps the action into the env's bounds).

Torch in, torch out: ``obs`` ``[N, ...]`` (a tensor, or a dict of obs groups) on any device -> ``[N, A]``
float32 on the base's device. The base's parameters never require gradients and are never updated.

Errors are one :class:`BasePolicyError` line (a :class:`drl.config.ConfigError`, so the CLI prints it as
one line): a missing or unreadable file, a folder that is not a drl run, a run without a checkpoint, a
recurrent policy, or observation/action spaces that do not match the env's (naming both spaces).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from drl.config import ConfigError

__all__ = ["BasePolicy", "BasePolicyError", "load_base_policy", "describe_space", "spaces_match"]


class BasePolicyError(ConfigError):
    """A base policy cannot be used: the message names the file and what is wrong."""


def _values(array: np.ndarray) -> str:
    flat = np.asarray(array, dtype=np.float64).reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return f"{flat[0]:g}"
    return "[" + ", ".join(f"{x:g}" for x in flat) + "]"


def describe_space(space: gym.Space) -> str:
    """A one-line description of ``space`` (shape and bounds of a Box; the groups of a Dict)."""
    if isinstance(space, gym.spaces.Box):
        return f"Box(shape {tuple(space.shape)}, low {_values(space.low)}, high {_values(space.high)})"
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {describe_space(v)}" for k, v in space.spaces.items()) + ")"
    return str(space).replace("\n", " ")


def spaces_match(a: gym.Space, b: gym.Space) -> bool:
    """Same kind, shape and bounds (Box), groups (Dict) or size (Discrete)."""
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        return a.shape == b.shape and bool(np.allclose(a.low, b.low, rtol=1e-6, atol=1e-6)
                                           and np.allclose(a.high, b.high, rtol=1e-6, atol=1e-6))
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        return list(a.spaces) == list(b.spaces) and all(spaces_match(a[k], b[k]) for k in a.spaces)
    if isinstance(a, gym.spaces.Discrete) and isinstance(b, gym.spaces.Discrete):
        return a.n == b.n
    return False


def _check_spaces(source: str, observation: tuple[gym.Space, gym.Space], action: tuple[gym.Space, gym.Space]
                  ) -> None:
    """One error for the first mismatch: ``(base's, env's)`` observation then action space."""
    for what, (base, env) in (("observation", observation), ("action", action)):
        if not spaces_match(base, env):
            raise BasePolicyError(f"base policy '{source}': its {what} space {describe_space(base)} does not match "
                                  f"the env's {describe_space(env)}")


class BasePolicy:
    """A frozen policy: ``policy(obs) -> action [N, A]`` in env units (see the module docstring).

    Attributes:
        source: the file or folder it was loaded from.
        observation_space, action_space: the env's single spaces it was checked against.
    """

    def __init__(self, source: str, observation_space: gym.Space, action_space: gym.Space, device: torch.device):
        self.source = source
        self.observation_space = observation_space
        self.action_space = action_space
        self.device = torch.device(device)

    def __call__(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The action for ``obs`` ``[N, ...]``: ``[N, A]`` float32 (advances per-env chunk state, if any)."""
        raise NotImplementedError

    def stateless(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The action for ``obs`` as from a fresh episode, touching no state (a chunked base: the first action of
        a new chunk; otherwise :meth:`__call__`), for obs outside any running episode."""
        return self(obs)

    def peek(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The action :meth:`__call__` would return for ``obs`` ``[N, ...]`` now, with no state advanced: at a
        step's true next obs, the action the base executes there if the episode goes on (a chunked base's
        temporal ensemble or open-loop plan continues). A stateless base: its action."""
        return self.stateless(obs)

    def along_episodes(self, obs: torch.Tensor | dict[str, torch.Tensor],
                       next_obs: torch.Tensor | dict[str, torch.Tensor], episode_index: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(actions [M, A], next_actions [M, A])``: what the base would execute at each of ``M`` recorded
        steps had it driven their episodes from their first step, and at each step's ``next_obs`` (:meth:`peek`
        after that step). An episode is a run of neighbouring rows with the same ``episode_index [M]``, in time
        order (a demo file's layout; a file concatenated with itself repeats indices in new episodes). A
        stateless base: its actions at ``obs`` and ``next_obs``. The base's own state is untouched."""
        return self.stateless(obs), self.stateless(next_obs)

    def end_episodes(self, done: torch.Tensor) -> None:
        """Restart the per-env state where ``done [N]`` (bool); nothing for a stateless base."""

    def reset(self) -> None:
        """Restart every env's state."""

    def export_actor(self) -> torch.nn.Module:
        """The base as a traceable module (:class:`drl.nn.deploy.DeployedActor`): raw obs group -> env action.

        Raises:
            ExportError: this kind of base cannot be traced (here: any but a drl run's feed-forward policy).
        """
        from drl.nn.deploy import ExportError

        raise ExportError(f"base policy '{self.source}' is not a drl run (e.g. a Stable-Baselines3 .zip): a residual "
                          "is exported only on a drl run's feed-forward base, which is traced into the same graph")

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """Act on ``num_envs`` other envs (an evaluation) with state of their own; the old state is back on exit."""
        yield self.end_episodes


class _AgentBase(BasePolicy):
    """A drl agent's deterministic action."""

    def __init__(self, agent: Any, *args: Any):
        super().__init__(*args)
        self.agent = agent
        for module in _modules(agent):
            module.requires_grad_(False)

    def __call__(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            action = self.agent.act(obs, deterministic=True, update_stats=False)[0].float()
        return action.clone()  # outside inference mode: a normal tensor

    def export_actor(self) -> torch.nn.Module:
        """The base run's own :meth:`export_actor` (a BC base with action chunks refuses there)."""
        return self.agent.export_actor()


class _ChunkedBase(_AgentBase):
    """A BC agent with action chunks: each env's chunk state is the base's own."""

    def __init__(self, agent: Any, num_envs: int, *args: Any):
        super().__init__(agent, *args)
        self.executor = agent.new_executor(num_envs)

    def __call__(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            action = self.agent.env_action(self.executor.act(self.agent.chunks(obs)))
        return action.clone()

    def stateless(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            action = self.agent.env_action(self.agent.chunks(obs)[:, 0])
        return action.clone()

    def peek(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            action = self.agent.env_action(self.executor.peek(self.agent.chunks(obs)))
        return action.clone()

    def along_episodes(self, obs: torch.Tensor | dict[str, torch.Tensor],
                       next_obs: torch.Tensor | dict[str, torch.Tensor], episode_index: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode():
            index = episode_index.to(self.device)
            rows = torch.arange(index.shape[0], device=self.device)
            actions = torch.empty(index.shape[0], int(np.prod(self.action_space.shape)), device=self.device)
            next_actions = torch.empty_like(actions)
            starts = torch.ones_like(index, dtype=torch.bool)
            starts[1:] = index[1:] != index[:-1]  # an episode: a run of neighbouring rows with one index
            slot = starts.cumsum(0) - 1  # [M] each row's episode, 0 .. E - 1 (its executor slot)
            first = rows[starts]  # [E] each episode's first row
            position = rows - first[slot]  # [M] step within its episode
            executor = self.agent.new_executor(first.shape[0])
            for step in range(int(position.max()) + 1 if rows.numel() else 0):
                at = torch.nonzero(position == step).flatten()  # one row per episode still running
                for out, source, method in ((actions, obs, executor.act), (next_actions, next_obs, executor.peek)):
                    chunks = self.agent.chunks(_take(source, at))  # [R, k, A]: only the running episodes' rows
                    full = chunks.new_zeros((first.shape[0], *chunks.shape[1:]))  # an ended episode's slot: zeros,
                    full[slot[at]] = chunks  # acted on but never read
                    out[at] = method(full)[slot[at]]
            actions, next_actions = self.agent.env_action(actions), self.agent.env_action(next_actions)
        return actions.clone(), next_actions.clone()

    def end_episodes(self, done: torch.Tensor) -> None:
        self.executor.end_episodes(done)

    def reset(self) -> None:
        self.executor.reset()

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        saved, self.executor = self.executor, self.agent.new_executor(num_envs)
        try:
            yield self.executor.end_episodes
        finally:
            self.executor = saved


class _SB3Base(BasePolicy):
    """A Stable-Baselines3 model's ``predict(obs, deterministic=True)``."""

    def __init__(self, model: Any, obs_group: str | None, *args: Any):
        super().__init__(*args)
        self.model = model
        self.obs_group = obs_group  # the env's group the model reads (a Dict env and a Box model); None: all
        model.policy.requires_grad_(False)

    def __call__(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        x = obs[self.obs_group] if self.obs_group is not None else obs
        if isinstance(x, dict):
            x = {k: v.detach().cpu().numpy() for k, v in x.items()}
        else:
            x = x.detach().cpu().numpy()
        action, _ = self.model.predict(x, deterministic=True)
        action = torch.as_tensor(np.asarray(action), dtype=torch.float32, device=self.device)
        return action.reshape(action.shape[0], -1)


def _take(obs: torch.Tensor | dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor | dict:
    """The rows ``rows [R]`` of ``obs`` (a tensor or a dict of obs groups)."""
    return {k: v[rows] for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]


def _modules(agent: Any) -> list[torch.nn.Module]:
    return [value for value in vars(agent).values() if isinstance(value, torch.nn.Module)]


def load_base_policy(path: str | Path, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
                     device: torch.device | str = "cpu", obs_group: str = "policy") -> BasePolicy:
    """Load a frozen base policy and check it against the env's single spaces.

    Args:
        path: a drl run folder or a Stable-Baselines3 ``.zip``.
        observation_space, action_space: the env's single observation and action spaces.
        num_envs: envs the base acts on (sizes a chunked base's per-env state).
        device: where the base runs and its actions come back.
        obs_group: for an SB3 model with a Box observation on an env with obs groups: the group it reads.

    Raises:
        BasePolicyError: one line naming ``path``: missing, not a run folder nor an SB3 ``.zip``, unreadable,
            no checkpoint, a recurrent policy, or spaces that do not match (both spaces named).
    """
    source = str(path)
    path = Path(path)
    device = torch.device(device)
    if not path.exists():
        raise BasePolicyError(f"base policy '{source}' does not exist (give a drl run folder or a "
                              "Stable-Baselines3 .zip)")
    if path.is_dir():
        return _load_run(path, source, observation_space, action_space, num_envs, device)
    if path.suffix == ".zip":
        return _load_sb3(path, source, observation_space, action_space, device, obs_group)
    raise BasePolicyError(f"base policy '{source}' is neither a drl run folder nor a Stable-Baselines3 .zip file")


def _load_run(path: Path, source: str, observation_space: gym.Space, action_space: gym.Space, num_envs: int,
              device: torch.device) -> BasePolicy:
    from drl.api import load_agent
    from drl.checkpoint import CheckpointError
    from envs import make_vec_env

    if not (path / "config.yaml").is_file():
        raise BasePolicyError(f"base policy '{source}' is not a drl run folder (no config.yaml in it)")
    try:
        agent, cfg = load_agent(path, "best", str(device))
    except (CheckpointError, ConfigError, FileNotFoundError, ValueError, KeyError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BasePolicyError(f"base policy '{source}': the run does not load: {first}") from err
    if getattr(agent, "memory", None) is not None:
        raise BasePolicyError(f"base policy '{source}': a recurrent policy cannot be a base (its memory is not "
                              "carried); use a feed-forward one")
    from envs.multi_task_sources import min_copies

    probe = make_vec_env(cfg.env.id, min_copies(cfg.env.id, cfg.env.kwargs), device, "sync", cfg.env.kwargs)
    try:
        _check_spaces(source, (probe.single_observation_space, observation_space),
                      (probe.single_action_space, action_space))
    finally:
        probe.close()
    args = (source, observation_space, action_space, device)
    if callable(getattr(agent, "new_executor", None)) and callable(getattr(agent, "chunks", None)):
        return _ChunkedBase(agent, num_envs, *args)
    return _AgentBase(agent, *args)


def _load_sb3(path: Path, source: str, observation_space: gym.Space, action_space: gym.Space,
              device: torch.device, obs_group: str) -> BasePolicy:
    try:
        import stable_baselines3
        from stable_baselines3.common.save_util import load_from_zip_file
    except ImportError as err:
        raise BasePolicyError(f"base policy '{source}': loading a .zip needs stable-baselines3 (pip install "
                              "stable-baselines3)") from err
    try:
        data, _, _ = load_from_zip_file(path, device=device)
        module = getattr(data.get("policy_class"), "__module__", "") if data else ""
        parts = module.split(".")
        algo = getattr(stable_baselines3, parts[1].upper(), None) if len(parts) > 2 else None
        if algo is None:
            raise ValueError(f"no Stable-Baselines3 algorithm for its policy class (module {module!r})")
        model = algo.load(path, device=device)
    except Exception as err:  # noqa: BLE001 - zipfile, pickle, json, torch: every way a file can be bad
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BasePolicyError(f"base policy '{source}' is not a readable Stable-Baselines3 model: {first}") from err
    group = None
    env_obs = observation_space
    if isinstance(observation_space, gym.spaces.Dict) and not isinstance(model.observation_space, gym.spaces.Dict):
        if obs_group not in observation_space.spaces:
            raise BasePolicyError(f"base policy '{source}' reads one Box but the env's obs groups "
                                  f"{list(observation_space.spaces)} have no '{obs_group}'")
        group, env_obs = obs_group, observation_space[obs_group]
    _check_spaces(source, (model.observation_space, env_obs), (model.action_space, action_space))
    return _SB3Base(model, group, source, observation_space, action_space, device)
