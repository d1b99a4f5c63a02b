"""Demonstration files (the format of :mod:`envs.tasks.demos`) checked against the env an agent trains on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from drl.config import ConfigError

__all__ = ["load_checked_demos", "check_demo_env"]


def load_checked_demos(path: str | Path, obs_dims: dict[str, int], action_dim: int, action_center: torch.Tensor,
                       action_scale: torch.Tensor, device: torch.device) -> tuple[dict[str, Any], torch.Tensor]:
    """``(data, actions)``: the demo file ``path`` (:func:`envs.tasks.demos.load_demos`, flat ``[M, ...]``) and its
    actions normalised to the agent's ``[-1, 1]`` (``(a - action_center) / action_scale``, clamped: what the env
    does to them) ``[M, A]`` on ``device``.

    Raises:
        ConfigError: naming ``algo.demos`` and the file: it is missing or not a demo file, an obs group of
            ``obs_dims`` (group -> values per step) is absent or of another size, or the action size differs.
    """
    from envs.tasks.demos import load_demos

    try:
        data = load_demos(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(f"config key 'algo.demos': {err}") from err
    where = f"config key 'algo.demos': demo file '{Path(path)}' does not match the env"
    held = sorted(key.split("/", 1)[1] for key in data if key.startswith("obs/"))
    for group, dim in obs_dims.items():
        if group not in held:
            raise ConfigError(f"config key 'algo.demos': demo file '{Path(path)}' has no obs group '{group}' (it "
                              f"holds {held}); record demos on the env this agent trains on")
        size = data[f"obs/{group}"][0].numel()
        if size != dim:
            raise ConfigError(f"{where}: 'obs/{group}' has {size} values per step, the env's '{group}' group has "
                              f"{dim}")
    if data["actions"].shape[1] != action_dim:
        raise ConfigError(f"{where}: 'actions' has {data['actions'].shape[1]} values per step, the env's action "
                          f"space has {action_dim}")
    actions = ((data["actions"].float().to(device) - action_center) / action_scale).clamp(-1.0, 1.0)
    return data, actions


def check_demo_env(meta: dict[str, Any], path: str | Path, env_id: str, env_kwargs: dict[str, Any]) -> None:
    """The demo file ``path`` was recorded on the run's env: its ``meta`` ``env_id`` and ``env_kwargs`` (as
    :func:`envs.tasks.demos.collect_demos` records them) equal ``env_id`` and ``env_kwargs``. Its rewards are used
    as stored, so demos recorded with another reward (e.g. ``reward_type``) would mix two reward scales.

    Raises:
        ConfigError: naming ``algo.demos``, the file, and both envs or both kwargs.
    """
    recorded_id, recorded_kwargs = meta.get("env_id"), meta.get("env_kwargs")
    if recorded_id is not None and recorded_id != env_id:
        raise ConfigError(f"config key 'algo.demos': demo file '{Path(path)}' was recorded on '{recorded_id}', this "
                          f"run's env is '{env_id}'; record demos on the env the agent trains on (drl demos {env_id})")
    from envs.tasks.demos import recorded_env_kwargs

    kwargs = recorded_env_kwargs(env_kwargs)
    if recorded_kwargs is not None and recorded_kwargs != kwargs:
        raise ConfigError(f"config key 'algo.demos': demo file '{Path(path)}' was recorded with env kwargs "
                          f"{recorded_kwargs}, this run's env.kwargs are {kwargs}; its rewards are used as stored, so "
                          "record the demos with the run's kwargs (drl demos ENV --env-kwarg KEY=VALUE)")
