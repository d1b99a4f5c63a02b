"""Demonstrations: roll out a scripted expert, save the transitions, load them back safely.

A demo file is a ``.pt`` file readable with ``torch.load(path, weights_only=True)``: one flat dict of per-step
tensors over all ``M`` recorded steps, grouped episode by episode (in time order within an episode)::

    obs/<group>        [M, ...]   observation group (a plain tensor observation is stored as "policy")
    next_obs/<group>   [M, ...]   the true next observation (``info["final_obs"]``, so at an episode's end it
                                  is the last obs of that episode, not the first obs of the next)
    actions            [M, A]
    rewards            [M]        float32
    terminated         [M]        bool
    truncated          [M]        bool
    episode_index      [M]        int64, 0 .. episodes - 1
    success            [M]        bool, ``info["success"]`` (or ``terminated`` where the env reports none)
    meta               dict: format_version, env_id, episodes, num_steps, success_rate, seed, num_envs, obs_groups

``drl demos <env> --episodes N --out FILE`` is :func:`collect_demos` followed by :func:`save_demos`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from envs.core import Obs

__all__ = [
    "FORMAT_VERSION",
    "Policy",
    "collect_demos",
    "save_demos",
    "load_demos",
    "validate_demos",
    "expert_success_rate",
    "scripted_expert",
    "noisy",
    "recorded_env_kwargs",
]

FORMAT_VERSION = 1
Policy = Callable[[gym.vector.VectorEnv, Obs], torch.Tensor]  # (env, obs [N, ...]) -> actions [N, A]

_STEP_KEYS = ("actions", "rewards", "terminated", "truncated", "episode_index")
_META_KEYS = ("format_version", "env_id", "episodes", "success_rate", "seed")


def scripted_expert(env: gym.vector.VectorEnv, env_id: str | None = None) -> Policy:
    """The env's scripted expert as a :data:`Policy`; ValueError (naming ``env_id``) when the env has none."""
    task = env.unwrapped
    if not callable(getattr(task, "expert_action", None)):
        raise ValueError(
            f"{env_id or type(task).__name__} has no scripted expert (no expert_action method): `drl demos` records "
            "the envs that have one (drl/ActiveSearch-v0, the drl/Panda... tasks); from Python, "
            "collect_demos(..., policy=...) records any policy"
        )
    return lambda _env, _obs: task.expert_action()


def recorded_env_kwargs(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``env_kwargs`` as a demo file's ``meta`` records them: plain values kept, anything else as its ``repr``."""
    return {k: v if isinstance(v, int | float | str | bool | None) else repr(v) for k, v in (env_kwargs or {}).items()}


def collect_demos(
    env_id: str,
    episodes: int,
    seed: int = 0,
    num_envs: int = 8,
    policy: Policy | None = None,
    env_kwargs: dict[str, Any] | None = None,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Record ``episodes`` complete episodes of ``policy`` (default: the env's scripted expert).

    ``action_noise`` > 0 injects Gaussian noise of that std, in units of the action Box's half-width, into every
    action (clipped into the bounds; drawn from a generator seeded with ``seed``); the noisy action is the one
    executed and recorded (a worse demonstrator, e.g. for a behaviour-cloning base that succeeds only part of
    the time). Episodes are numbered in the order they start; the run is reproducible for a given
    ``(seed, num_envs)``. Returns the demo dict described in the module docstring (tensors on the CPU).
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if action_noise < 0:
        raise ValueError(f"action_noise must be >= 0, got {action_noise}")
    from envs import make_vec_env

    env = make_vec_env(env_id, num_envs, device="cpu", env_kwargs=env_kwargs)
    try:
        actor = policy or scripted_expert(env, env_id)
        if action_noise > 0:
            actor = noisy(actor, env.single_action_space, action_noise, seed)
        chunks, successes = _rollout(env, episodes, seed, actor, record=True)
    finally:
        env.close()
    demos: dict[str, Any] = {key: torch.cat(parts) for key, parts in chunks.items()}
    order = torch.argsort(demos["episode_index"], stable=True)  # episode by episode, time order kept
    demos = {key: value[order] for key, value in demos.items()}
    demos["meta"] = {
        "format_version": FORMAT_VERSION,
        "env_id": env_id,
        "episodes": episodes,
        "num_steps": int(order.numel()),
        "success_rate": sum(successes) / episodes,
        "seed": seed,
        "num_envs": num_envs,
        "action_noise": float(action_noise),
        "obs_groups": sorted(key.split("/", 1)[1] for key in demos if key.startswith("obs/")),
        "env_kwargs": recorded_env_kwargs(env_kwargs),
    }
    return demos


def noisy(policy: Policy, action_space: gym.spaces.Box, std: float, seed: int) -> Policy:
    """``policy`` with Gaussian noise ``std * half-width`` added to its actions, clipped into ``action_space``."""
    low = torch.as_tensor(action_space.low, dtype=torch.float32)
    high = torch.as_tensor(action_space.high, dtype=torch.float32)
    generator = torch.Generator().manual_seed(int(seed) + 7919)

    def act(env: gym.vector.VectorEnv, obs: Obs) -> torch.Tensor:
        action = torch.as_tensor(policy(env, obs)).float().cpu()
        noise = torch.randn(action.shape, generator=generator) * std * (high - low) / 2
        return torch.minimum(torch.maximum(action + noise, low), high)

    return act


def expert_success_rate(env_id: str, episodes: int, seed: int = 0, num_envs: int = 8,
                        env_kwargs: dict[str, Any] | None = None) -> float:
    """Fraction of ``episodes`` seeded episodes that the env's scripted expert finishes successfully."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    from envs import make_vec_env

    env = make_vec_env(env_id, num_envs, device="cpu", env_kwargs=env_kwargs)
    try:
        _, successes = _rollout(env, episodes, seed, scripted_expert(env), record=False)
    finally:
        env.close()
    return sum(successes) / episodes


def _rollout(env: gym.vector.VectorEnv, episodes: int, seed: int, policy: Policy,
             record: bool) -> tuple[dict[str, list[torch.Tensor]], list[bool]]:
    """Run until ``episodes`` episodes have ended; per-step chunks (if ``record``) and per-episode success."""
    num_envs = env.num_envs
    obs, _ = env.reset(seed=seed)
    episode_of_env = torch.arange(num_envs)  # the episode each env is playing
    next_episode = num_envs
    successes: dict[int, bool] = {}
    chunks: dict[str, list[torch.Tensor]] = {}

    def add(key: str, value: torch.Tensor, keep: torch.Tensor) -> None:
        chunks.setdefault(key, []).append(value.detach().cpu()[keep])

    while len(successes) < episodes:
        actions = policy(env, obs)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        terminated, truncated = terminated.cpu().bool(), truncated.cpu().bool()
        success = info["success"].cpu().bool() if "success" in info else terminated
        keep = episode_of_env < episodes
        if record and bool(keep.any()):
            obs_groups = obs if isinstance(obs, dict) else {"policy": obs}
            final = info["final_obs"]
            final_groups = final if isinstance(final, dict) else {"policy": final}
            for group in obs_groups:
                add(f"obs/{group}", obs_groups[group].float(), keep)
                add(f"next_obs/{group}", final_groups[group].float(), keep)
            add("actions", torch.as_tensor(actions).float().reshape(num_envs, -1), keep)
            add("rewards", reward.float(), keep)
            add("terminated", terminated, keep)
            add("truncated", truncated, keep)
            add("success", success, keep)
            add("episode_index", episode_of_env.clone(), keep)
        for i in (terminated | truncated).nonzero().flatten().tolist():
            finished = int(episode_of_env[i])
            if finished < episodes:
                successes[finished] = bool(success[i])
            episode_of_env[i] = next_episode
            next_episode += 1
        obs = next_obs
    return chunks, [successes[e] for e in range(episodes)]


def save_demos(demos: dict[str, Any], path: str | os.PathLike) -> Path:
    """Validate ``demos`` and write them atomically to ``path`` (parents created). Returns the path."""
    path = Path(path)
    validate_demos(demos, source="demos to save")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(demos, tmp_name)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_demos(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate a demo file (``weights_only``: no code from the file runs).

    Raises FileNotFoundError for a missing file and ValueError, naming the problem, for a corrupt file, a file
    that is not a drl demo file, an unsupported format version, a missing key or a tensor of the wrong shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"demo file '{path}' does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception as err:  # torch raises RuntimeError, UnpicklingError, EOFError, ... on a damaged file
        raise ValueError(
            f"'{path}' is not a readable demo file (corrupt, truncated, or not written by torch.save): {err}"
        ) from err
    validate_demos(data, source=f"'{path}'")
    return data


def validate_demos(data: Any, source: str = "demos") -> None:
    """Check the demo layout (keys, tensor types, shapes, dtypes); ValueError naming the first problem."""
    if not isinstance(data, dict) or not isinstance(data.get("meta"), dict):
        raise ValueError(
            f"{source} is not a drl demo file: expected a dict of tensors with a 'meta' dict "
            f"(got {type(data).__name__}{' without meta' if isinstance(data, dict) else ''})"
        )
    meta = data["meta"]
    for key in _META_KEYS:
        if key not in meta:
            raise ValueError(f"{source}: meta is missing '{key}' (it has: {', '.join(sorted(meta))})")
    if meta["format_version"] != FORMAT_VERSION:
        raise ValueError(f"{source}: demo format version {meta['format_version']!r} is not supported "
                         f"(this drl reads version {FORMAT_VERSION})")
    for key in _STEP_KEYS:
        if key not in data:
            raise ValueError(f"{source}: missing key '{key}' (keys present: {', '.join(sorted(data))})")
    for key, value in data.items():
        if key != "meta" and not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: '{key}' must be a tensor, got {type(value).__name__}")
    obs_groups = {k.split("/", 1)[1] for k in data if k.startswith("obs/")}
    next_groups = {k.split("/", 1)[1] for k in data if k.startswith("next_obs/")}
    if not obs_groups:
        raise ValueError(f"{source}: missing observations: no 'obs/<group>' key")
    for group in sorted(obs_groups ^ next_groups):
        missing = f"next_obs/{group}" if group in obs_groups else f"obs/{group}"
        raise ValueError(f"{source}: missing key '{missing}' (every obs group needs obs/ and next_obs/)")

    num_steps = data["rewards"].shape[0] if data["rewards"].dim() == 1 else -1

    def expect(key: str, ok: bool, expected: str) -> None:
        if not ok:
            raise ValueError(f"{source}: '{key}' has shape {tuple(data[key].shape)} and dtype {data[key].dtype}, "
                             f"expected {expected}")

    expect("rewards", num_steps >= 0, "[M] (one reward per step)")
    expect("actions", data["actions"].dim() == 2 and data["actions"].shape[0] == num_steps, f"[M={num_steps}, A]")
    for key in ("terminated", "truncated", "success"):
        if key in data:
            expect(key, data[key].shape == (num_steps,) and data[key].dtype == torch.bool, f"[{num_steps}] bool")
    index = data["episode_index"]
    expect("episode_index", index.shape == (num_steps,) and not index.is_floating_point(), f"[{num_steps}] integer")
    for group in sorted(obs_groups):
        obs, nxt = data[f"obs/{group}"], data[f"next_obs/{group}"]
        expect(f"obs/{group}", obs.dim() >= 1 and obs.shape[0] == num_steps, f"[M={num_steps}, ...]")
        expect(f"next_obs/{group}", nxt.shape == obs.shape, f"{tuple(obs.shape)} like obs/{group}")
    episodes_found = int(index.unique().numel())
    if episodes_found != meta["episodes"]:
        raise ValueError(f"{source}: meta says {meta['episodes']} episodes but episode_index holds {episodes_found}")
