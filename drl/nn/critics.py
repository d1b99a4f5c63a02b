"""Batched MLPs for off-policy agents: K networks as one, a Q ensemble and a categorical (C51) critic.

K Q-heads are not K modules here: every layer keeps its weights as one ``[K, in, out]`` tensor and
runs as one ``torch.baddbmm``, so a twin critic costs one matmul per layer instead of two, and a
REDQ ensemble of 10 costs the same number of ops as one network. An actor is the same network with
K = 1.

Every network is a pure function of its parameters (:meth:`EnsembleMLP.apply_params`): an agent's update
evaluates it on views of one flat parameter vector (:class:`drl.optim.FlatParameters`), detached
or not, eagerly or inside one compiled graph; ``forward`` applies the module's own parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from drl.nn import onednn

__all__ = [
    "ACTIVATION_FNS",
    "EnsembleMLP",
    "batched_linear",
    "QEnsemble",
    "categorical_projection",
    "min_over_heads",
    "q_values",
    "td_critic_loss",
]

ACTIVATION_FNS = {"relu": F.relu, "tanh": torch.tanh, "elu": F.elu, "silu": F.silu}


def _onednn_applies(x: torch.Tensor) -> bool:
    """Training in float32 on the CPU, eagerly (not compiling or tracing), outside autocast (see
    :func:`batched_linear`): inside a compiled :func:`torch.func.grad` the oneDNN op would not be differentiated
    through its own backward, so compiled steps keep ATen's ops."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu") and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


def batched_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """K linear maps at once: ``x[K, B, in]`` (or ``[B, in]``, shared) ``@ weight[K, in, out] + bias[K, 1, out]``.

    Returns ``[K, B, out]``. The op is chosen by shape, because a batched matmul (``baddbmm``) is
    only efficient for wide matrices on the CPU: measured on one core at B = 256, K = 2, a
    ``[256, 256] x [256, 1]`` head costs ~140 us as a ``bmm`` and ~5 us per head as an ``addmm`` (and
    its backward ~120 us vs ~10 us). So: one head -> ``addmm``; an input shared by all heads -> one
    ``addmm`` against the heads' weights side by side (``[in, K * out]``); a thin layer (<= 32 in or
    out) -> one ``addmm`` per head; otherwise ``baddbmm``. All give the same values.

    When training eagerly in float32 on a CPU where :data:`drl.nn.onednn.ENABLED` (gradient mode on, no
    autocast, not compiling or tracing), a layer wider than 32 both in and out runs through oneDNN's kernel
    instead (:func:`drl.nn.onednn.linear`, one product per head for per-head inputs; thin layers stay
    ``addmm``, which oneDNN is slower at): the same values up to float32 summation order.
    """
    heads, fan_in, fan_out = weight.shape
    if fan_in > 32 and fan_out > 32 and onednn.ENABLED and _onednn_applies(x):
        if x.dim() == 3:
            return torch.stack([onednn.linear(x[k], weight[k], bias[k, 0]) for k in range(heads)])
        if heads == 1:
            return onednn.linear(x, weight[0], bias[0, 0]).unsqueeze(0)
        wide = onednn.linear(x, weight.transpose(0, 1).reshape(fan_in, heads * fan_out),
                             bias.transpose(0, 1).reshape(heads * fan_out))
        return wide.view(x.shape[0], heads, fan_out).transpose(0, 1)
    if heads == 1:
        return torch.addmm(bias[0], x if x.dim() == 2 else x[0], weight[0]).unsqueeze(0)
    if x.dim() == 2:
        wide = torch.addmm(bias.transpose(0, 1).reshape(1, heads * fan_out), x,
                           weight.transpose(0, 1).reshape(fan_in, heads * fan_out))
        return wide.view(x.shape[0], heads, fan_out).transpose(0, 1)
    if fan_out <= 32 or fan_in <= 32:  # thin: one small matmul per head
        return torch.stack([torch.addmm(bias[k], x if x.dim() == 2 else x[k], weight[k]) for k in range(heads)])
    return torch.baddbmm(bias, x, weight)


class EnsembleMLP(nn.Module):
    """K independent MLPs ``in_dim -> hidden... -> out_dim`` evaluated as one batched network.

    Parameters, per layer ``l`` (in this order, which :meth:`apply_params` relies on):
    ``weight{l} [K, in, out]``, ``bias{l} [K, 1, out]`` and, with ``layer_norm`` on a hidden layer,
    ``ln_weight{l} [K, 1, out]``, ``ln_bias{l} [K, 1, out]`` (LayerNorm after the linear map, before
    the activation, as in DroQ and FastTD3). Initialised like ``nn.Linear``'s default
    (``U(-1/sqrt(in), 1/sqrt(in))`` for weights and biases), which is what Stable-Baselines3's
    SAC/TD3 networks use; head k equals ``nn.Linear`` layers with ``weight = weight{l}[k].T``.

    Args:
        in_dim: input width.
        hidden: hidden widths.
        out_dim: output width.
        num_heads: K.
        activation: ``relu | tanh | elu | silu``.
        layer_norm: LayerNorm on every hidden layer.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, num_heads: int = 1,
                 activation: str = "relu", layer_norm: bool = False):
        super().__init__()
        if activation not in ACTIVATION_FNS:
            raise ValueError(f"unknown activation '{activation}'; valid: {sorted(ACTIVATION_FNS)}")
        self.num_heads = num_heads
        self.activation = ACTIVATION_FNS[activation]
        self.layer_norm = layer_norm
        self.widths = [in_dim, *hidden, out_dim]
        for index, (fan_in, fan_out) in enumerate(zip(self.widths, self.widths[1:], strict=False)):
            bound = 1.0 / math.sqrt(fan_in)
            weight = torch.empty(num_heads, fan_in, fan_out).uniform_(-bound, bound)
            bias = torch.empty(num_heads, 1, fan_out).uniform_(-bound, bound)
            self.register_parameter(f"weight{index}", nn.Parameter(weight))
            self.register_parameter(f"bias{index}", nn.Parameter(bias))
            if layer_norm and index < len(hidden):
                self.register_parameter(f"ln_weight{index}", nn.Parameter(torch.ones(num_heads, 1, fan_out)))
                self.register_parameter(f"ln_bias{index}", nn.Parameter(torch.zeros(num_heads, 1, fan_out)))
        self._own: list[torch.Tensor] | None = None

    @property
    def num_tensors(self) -> int:
        """How many parameter tensors :meth:`apply_params` takes."""
        return len(self._parameters)

    def apply_params(self, params: Sequence[torch.Tensor], x: torch.Tensor,
                     heads: torch.Tensor | None = None) -> torch.Tensor:
        """The network on parameters ``params`` (in registration order).

        Args:
            params: this module's parameter tensors, or tensors of the same shapes (views of a
                flat vector, detached copies, a target network's).
            x: ``[B, in]`` (shared by all heads) or ``[K', B, in]`` (one input per head).
            heads: int64 ``[M]``: evaluate only these heads (REDQ's target subset); None: all K.

        Returns:
            ``[K', B, out]`` with K' = M when ``heads`` is given, else K.
        """
        if heads is not None:
            params = [p.index_select(0, heads) for p in params]
        last = len(self.widths) - 2
        i = 0
        for layer in range(last + 1):
            x = batched_linear(x, params[i], params[i + 1])
            i += 2
            if layer < last:
                if self.layer_norm:
                    # the width as a Python int (not x.shape): a traced export keeps it static
                    x = F.layer_norm(x, (self.widths[layer + 1],)) * params[i] + params[i + 1]
                    i += 2
                x = self.activation(x)
        return x

    def own_params(self) -> list[torch.Tensor]:
        """The module's parameters as a list (cached; call :meth:`refresh` after replacing them)."""
        if self._own is None:
            self._own = list(self._parameters.values())
        return self._own

    def refresh(self) -> None:
        """Forget the cached parameter list (after :class:`drl.optim.FlatParameters` re-pointed them)."""
        self._own = None

    def forward(self, x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        return self.apply_params(self.own_params(), x, heads)


class QEnsemble(EnsembleMLP):
    """K Q-functions ``Q_k(s, a)`` as one batched MLP over ``[obs, action]``.

    ``out_dim`` = 1 for a scalar critic, ``num_atoms`` for a categorical one (logits).
    ``q(params, obs[B, O], action[B, A]) -> [K, B, out]``.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], num_q: int = 2, out_dim: int = 1,
                 activation: str = "relu", layer_norm: bool = False):
        super().__init__(obs_dim + action_dim, hidden, out_dim, num_q, activation, layer_norm)

    def q(self, params: Sequence[torch.Tensor], obs: torch.Tensor, action: torch.Tensor,
          heads: torch.Tensor | None = None) -> torch.Tensor:
        """``(obs[B, O], action[B, A]) -> [K or M, B, out]`` on ``params``."""
        return self.apply_params(params, torch.cat([obs, action], dim=-1), heads)


def min_over_heads(values: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
    """``min_k values[k]`` over the heads ``heads`` (all when None): ``[K, B] -> [B]``.

    REDQ (Chen et al. 2021, Alg. 1 line 7): the target is the min over a random subset of M of the K
    target heads, drawn anew each update; M = K = 2 is the clipped double-Q target of TD3/SAC.
    """
    if heads is not None:
        values = values.index_select(0, heads)
    return values.min(dim=0).values


def categorical_projection(probs: torch.Tensor, target_atoms: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Project a distribution on shifted atoms back onto the fixed support (C51, Bellemare et al. 2017, Alg. 1).

    The target of atom ``z_j`` of the next state is ``Tz_j = r + d z_j`` (SAC: ``r + d (z_j - alpha log pi)``);
    clamped into ``[v_min, v_max]`` it lies at fractional index ``b_j = (Tz_j - v_min) / dz``, and its
    mass ``p_j`` is split between atoms ``l = floor(b_j)`` and ``u = ceil(b_j)`` in proportion to
    closeness: ``(1 - (b_j - l))`` to ``l`` and ``(b_j - l)`` to ``u``. When ``b_j`` is an integer both
    are the same atom and it gets all the mass (no special case needed, unlike the ``u - b`` / ``b - l``
    form). A terminal transition has ``d = 0``: all mass goes to the atoms around ``clamp(r)``.

    Args:
        probs: ``[B, Z]`` next-state probabilities (rows sum to 1).
        target_atoms: ``[B, Z]`` the shifted atoms ``Tz``.
        support: ``[Z]`` evenly spaced atoms from ``v_min`` to ``v_max``.

    Returns:
        ``[B, Z]`` projected probabilities (rows sum to 1); O(B Z) memory, for batches of any size.
    """
    probs, target_atoms = probs.float(), target_atoms.float()  # under bfloat16 autocast: project in float32
    num_atoms = support.numel()
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (num_atoms - 1)
    position = ((target_atoms.clamp(v_min, v_max) - v_min) / delta).clamp(0, num_atoms - 1)
    lower = position.floor()
    upper_weight = position - lower
    lower_index = lower.long()
    upper_index = (lower_index + 1).clamp(max=num_atoms - 1)  # upper_weight is 0 where this clamp bites
    out = torch.zeros_like(probs)
    out.scatter_add_(1, lower_index, probs * (1.0 - upper_weight))
    out.scatter_add_(1, upper_index, probs * upper_weight)
    return out


def q_values(out: torch.Tensor, support: torch.Tensor | None = None) -> torch.Tensor:
    """Critic outputs -> Q values: ``[K, B, 1] -> [K, B]``, or with ``support`` ``[Z]`` the expectation
    of the categorical distribution ``sum_z softmax(logits)_z z``: ``[K, B, Z] -> [K, B]``."""
    if support is None:
        return out.squeeze(-1)
    return torch.softmax(out, dim=-1) @ support


def td_critic_loss(out: torch.Tensor, target_out: torch.Tensor, returns: torch.Tensor, discounts: torch.Tensor,
                   next_bonus: torch.Tensor | None = None, support: torch.Tensor | None = None) -> torch.Tensor:
    """Critic loss of all K heads against one clipped (min-over-heads) TD target.

    Scalar critic (``support`` None): ``y = returns + discounts * (min_m Q'_m(s', a') + next_bonus)`` and
    ``loss = 0.5 sum_k mean_b (Q_k(s, a) - y)^2`` (Fujimoto et al. 2018, Eq. 10; SB3's SAC loss; the
    0.5 is immaterial under Adam). Categorical critic (FastTD3, Seo et al. 2025): the target
    distribution is the projection (:func:`categorical_projection`) of the target head with the
    smallest expected value onto the support shifted as ``returns + discounts * (z + next_bonus)``,
    and ``loss = sum_k mean_b CE(target, softmax(logits_k))``.

    Args:
        out: ``[K, B, 1 or Z]`` online critic outputs at the stored ``(s, a)``.
        target_out: ``[M, B, 1 or Z]`` target critic outputs at ``(s', a')`` for the M heads of the min.
        returns: ``[B]`` (n-step) discounted rewards; ``discounts``: ``[B]`` ``gamma^m (1 - terminated)``
            (see ``OffPolicyAgent.td_rows``).
        next_bonus: ``[B]`` added to the next value (SAC: ``-alpha log pi(a'|s')``); None: 0.
        support: ``[Z]`` atoms for a categorical critic; None: scalar critic.
    """
    if support is None:
        next_value = target_out.squeeze(-1).min(dim=0).values
        if next_bonus is not None:
            next_value = next_value + next_bonus
        target = (returns + discounts * next_value).detach()
        return 0.5 * (out.squeeze(-1) - target).square().mean(dim=-1).sum()
    probs = torch.softmax(target_out, dim=-1)  # [M, B, Z]
    lowest = (probs @ support).argmin(dim=0)  # [B]: the head of smallest expected value
    next_probs = probs.gather(0, lowest.view(1, -1, 1).expand(1, *probs.shape[1:])).squeeze(0)
    atoms = support if next_bonus is None else support + next_bonus.unsqueeze(-1)
    target = categorical_projection(next_probs, returns.unsqueeze(-1) + discounts.unsqueeze(-1) * atoms, support)
    return -(target.detach() * torch.log_softmax(out, dim=-1)).sum(-1).mean(-1).sum()
