"""Multilayer perceptrons with orthogonal initialisation."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "make_mlp", "orthogonal_init", "forward_layers"]

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
