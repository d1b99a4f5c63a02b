"""Multilayer perceptrons with orthogonal initialisation."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

__all__ = ["ACTIVATIONS", "make_mlp", "orthogonal_init", "forward_layers", "flat_dim", "group_space"]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}


def orthogonal_init(layer: nn.Linear, gain: float) -> nn.Linear:
    """Orthogonal weights with ``gain``, zero bias (the PPO implementation detail)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def make_mlp(
    in_dim: int,
    hidden: list[int] | tuple[int, ...],
    out_dim: int | None,
    activation: str = "tanh",
    output_gain: float = 1.0,
    layer_norm: bool = False,
) -> nn.Sequential:
    """``in_dim -> hidden... -> out_dim`` (no output layer when ``out_dim`` is None).

    Hidden layers get gain sqrt(2); the output layer ``output_gain`` (0.01 for a policy mean,
    1.0 for a value), so a fresh policy starts near-uniform.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{activation}'; valid: {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers.append(orthogonal_init(nn.Linear(last, width), math.sqrt(2)))
        if layer_norm:
            layers.append(nn.LayerNorm(width))
        layers.append(ACTIVATIONS[activation]())
        last = width
    if out_dim is not None:
        layers.append(orthogonal_init(nn.Linear(last, out_dim), output_gain))
    return nn.Sequential(*layers)


def mlp_output_dim(mlp: nn.Sequential, in_dim: int) -> int:
    """Width of the last Linear of ``mlp`` (``in_dim`` if it has none)."""
    widths = [m.out_features for m in mlp if isinstance(m, nn.Linear)]
    return widths[-1] if widths else in_dim


def flat_dim(shape: tuple[int, ...] | torch.Size) -> int:
    return int(math.prod(shape))


def forward_layers(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """``layers(x)``, calling each layer's ``forward`` directly.

    For the per-step forward of a small network on one or a few observations, ``nn.Module``'s
    call machinery (hook lookups, once per layer) costs as much as the math. drl registers no
    hooks on these layers, so the result is the same.
    """
    for layer in layers:
        x = layer.forward(x)
    return x


def group_space(space: gym.Space, group: str, role: str, agent: str) -> gym.spaces.Box:
    """The Box that obs group ``group`` names in the env's observation ``space`` (what the agent's
    ``role`` network, "actor" or "critic", is sized from); a plain Box env is the "policy" group.

    Raises:
        ValueError: the group is not in a Dict space, or is not "policy" for a plain Box (one line
            naming ``algo.<role>_obs``).
        TypeError: the group is not a Box (``agent`` names who needs one).
    """
    if isinstance(space, gym.spaces.Dict):
        if group not in space.spaces:
            raise ValueError(f"{role} reads obs group '{group}', but the env's groups are {list(space.spaces)}; "
                             f"set algo.{role}_obs to one of them")
        space = space.spaces[group]
    elif group != "policy":  # a plain observation is the "policy" group; it holds no privileged state
        raise ValueError(f"{role} reads obs group '{group}', but the env returns one plain observation (no "
                         f"groups); set algo.{role}_obs to policy, or use an env with obs groups")
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"{agent} needs Box observations (or a Dict of Box groups), got {space}")
    return space
