"""Multilayer perceptrons with orthogonal initialisation."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

__all__ = ["ACTIVATIONS", "make_mlp", "orthogonal_init", "forward_layers", "mlp_forward", "fused_available", "flat_dim",
           "group_space"]

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


def reset_linear_layers(module: nn.Module) -> None:
    """Re-draw every ``nn.Linear`` in ``module`` with PyTorch's own init (``Linear.reset_parameters``: weights and
    biases uniform in +-1/sqrt(fan_in); rsl_rl's choice) in place of :func:`make_mlp`'s orthogonal one."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()


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


# Hidden layers whose activation oneDNN applies inside the matmul (``torch.ops.mkldnn._linear_pointwise``):
# torch's name of the activation module -> oneDNN's post-op name.
_FUSED_ACTIVATIONS: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu"}
# Rows from which the fused layer pays on the CPU (below, the per-call overhead of oneDNN exceeds the saving).
FUSED_MIN_ROWS = 256


def fused_available() -> bool:
    """Whether :func:`mlp_forward` can fuse layers here (torch built with oneDNN's fused linear)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


_FUSED = fused_available()


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (``x [B, I]``, ``weight [O, I]``) in oneDNN."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")


class _LinearActivation(torch.autograd.Function):
    """``act(x @ w.T + b)`` in one oneDNN call; the backward is autograd's for ``addmm`` then ``act``.

    The pre-activation is bitwise the one of ``torch.addmm``; oneDNN's tanh differs from ``torch.tanh`` by at
    most one unit in the last place (ReLU: exactly equal).
    """

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, act: str) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, act, [], "")

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, _, ctx.act = inputs
        ctx.save_for_backward(x, weight, output)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
        x, weight, y = ctx.saved_tensors
        if ctx.act == "tanh":
            grad = torch.ops.aten.tanh_backward(grad, y)
        else:  # relu
            grad = torch.ops.aten.threshold_backward(grad, y, 0.0)
        # grad @ W through oneDNN, and the weight gradient as (x^T grad)^T when the input is narrower than the
        # output: the same products, several times faster for a first layer on a few observations
        grad_x = _linear(grad, weight.t().contiguous()) if ctx.needs_input_grad[0] else None
        if not ctx.needs_input_grad[1]:
            grad_w = None
        elif x.shape[1] < grad.shape[1]:
            grad_w = x.t().mm(grad).t()
        else:
            grad_w = grad.t().mm(x)
        grad_b = grad.sum(0) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def _fusable(x: torch.Tensor) -> bool:
    return (not torch.jit.is_tracing() and x.dim() == 2 and x.shape[0] >= FUSED_MIN_ROWS and _FUSED
            and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.compiler.is_compiling()
            and not torch.is_autocast_enabled("cpu"))


def mlp_forward(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """:func:`forward_layers` (``layers(x)``, ``x [B, D]``), with each ``Linear`` + ``Tanh``/``ReLU`` pair of a CPU
    float32 batch of at least :data:`FUSED_MIN_ROWS` rows computed in one oneDNN call (matmul, bias and
    activation in one pass over the output; about half the time of ``addmm`` then ``tanh`` on a 64-wide layer).

    Same values as ``layers(x)`` up to oneDNN's tanh (within one unit in the last place of ``torch.tanh``; ReLU
    exactly), same gradients given those values. Eager only: under ``torch.compile``/``torch.export``, a jit
    trace (an ONNX export), autocast, on other devices, other dtypes or small batches it is :func:`forward_layers`.
    """
    if not _fusable(x):
        return forward_layers(layers, x)
    modules = list(layers)
    i = 0
    while i < len(modules):
        layer = modules[i]
        act = _FUSED_ACTIVATIONS.get(type(modules[i + 1])) if i + 1 < len(modules) else None
        if act is not None and type(layer) is nn.Linear and layer.bias is not None:
            x = _LinearActivation.apply(x.contiguous(), layer.weight, layer.bias, act)
            i += 2
        else:
            x = layer.forward(x)
            i += 1
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
