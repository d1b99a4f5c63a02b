"""The per-step actor of an MLP Gaussian policy as one numba kernel, for CPU rollouts.

With a CPU-simulated env (MuJoCo, PyBullet) and one or a few envs, every env step waits for one
policy forward on a handful of observations. In torch that is ~15 small ops at a microsecond or
two of dispatch each, which is as long as the physics step. The same math as one compiled loop
takes a few microseconds.

The kernel reads the torch parameters in place (numpy views of the same CPU memory), so it always
sees the current weights, and it takes its noise from torch's global generator, so a seeded run
draws the same numbers as the torch path. It computes exactly what :meth:`GaussianHead.sample`
and :meth:`GaussianHead.env_action` compute, up to float rounding (tested).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from drl.nn.heads import LOG_STD_MAX, LOG_STD_MIN, GaussianHead

__all__ = ["NumbaGaussianActor", "numba_available"]

_ACTIVATION_CODES = {nn.Tanh: 0, nn.ReLU: 1, nn.ELU: 2, nn.SiLU: 3}
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)
_LOG_2 = math.log(2.0)

try:
    import numba
except ImportError:  # optional: the torch path is used instead
    numba = None


def numba_available() -> bool:
    return numba is not None


def _kernel(obs, weights, biases, activation, mean_w, mean_b, log_std, noise, squash, low, high,
            action, log_prob, env_action):  # pragma: no cover - compiled by numba
    """``obs[N, D] -> action[N, A]`` (the stored sample), ``log_prob[N]``, ``env_action[N, A]``."""
    num_envs = obs.shape[0]
    num_actions = mean_w.shape[0]
    for i in range(num_envs):
        x = obs[i]
        for k in range(len(weights)):
            w = weights[k]
            b = biases[k]
            y = np.empty(w.shape[0], np.float32)
            for j in range(w.shape[0]):
                dot = np.float32(0.0)  # a float32 accumulator of its own, so the loop vectorises
                for m in range(w.shape[1]):
                    dot += w[j, m] * x[m]
                h = dot + b[j]
                if activation == 0:
                    h = math.tanh(h)
                elif activation == 1:
                    h = max(h, 0.0)
                elif activation == 2:
                    h = h if h > 0.0 else math.expm1(h)
                else:
                    h = h / (1.0 + math.exp(-h))
                y[j] = h
            x = y
        total = 0.0
        for a in range(num_actions):
            dot = np.float32(0.0)
            for m in range(mean_w.shape[1]):
                dot += mean_w[a, m] * x[m]
            mean = dot + mean_b[a]
            ls = min(max(log_std[a], LOG_STD_MIN), LOG_STD_MAX)  # the head's clamp
            u = mean + math.exp(ls) * noise[i, a]
            action[i, a] = u
            total += -0.5 * noise[i, a] * noise[i, a] - ls - 0.9189385332046727  # log sqrt(2 pi)
            if squash:
                # log |d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the stable form
                z = -2.0 * u
                softplus = max(z, 0.0) + math.log1p(math.exp(-abs(z)))
                total -= 2.0 * (0.6931471805599453 - u - softplus)
                env_action[i, a] = low[a] + 0.5 * (math.tanh(u) + 1.0) * (high[a] - low[a])
            else:
                env_action[i, a] = min(max(u, low[a]), high[a])
        log_prob[i] = total


_compiled_kernel = None


def _get_kernel():
    global _compiled_kernel
    if _compiled_kernel is None:
        # reassoc/contract let the dot products vectorise; NaN/inf semantics are kept
        _compiled_kernel = numba.njit(cache=True, fastmath={"reassoc", "contract"})(_kernel)
    return _compiled_kernel


class NumbaGaussianActor:
    """Samples ``head(body(obs))`` for an MLP body and a state-independent-std :class:`GaussianHead`.

    Args:
        body: ``Linear, activation, Linear, activation, ...`` (what :func:`make_mlp` builds with
            ``out_dim=None``), on the CPU, float32.
        head: the Gaussian head on top of it.

    Build it once the parameters are in their final storage (after :class:`drl.optim.TrainStep`):
    the kernel keeps views of that memory.
    """

    # Rows per call up to which the kernel beats torch. It evaluates activations one at a time, torch
    # in SIMD batches: measured per call (64x64 tanh MLP, 6 actions) 10 vs 32 us at 1 row, 22 vs 32
    # at 8, 145 vs 65 at 64.
    max_batch = 16

    def __init__(self, body: nn.Sequential, head: GaussianHead):
        if not self.supports(body, head):
            raise ValueError("NumbaGaussianActor needs a CPU float32 MLP body (Linear + one activation) "
                             "and a GaussianHead with a state-independent std")
        if numba is None:
            raise ImportError("the numba actor needs numba: pip install 'drl[numba]'  (or: pip install numba)")
        linears = [layer for layer in body if isinstance(layer, nn.Linear)]
        self.weights = tuple(layer.weight.detach().numpy() for layer in linears)
        self.biases = tuple(layer.bias.detach().numpy() for layer in linears)
        self.activation = _ACTIVATION_CODES[type(body[1])]
        self.mean_w = head.mean.weight.detach().numpy()
        self.mean_b = head.mean.bias.detach().numpy()
        self.log_std = head.log_std.detach().numpy()
        self.squash = head.squash
        self.low = head.low.numpy()
        self.high = head.high.numpy()
        self.num_actions = head.mean.out_features
        self._kernel = _get_kernel()

    @staticmethod
    def supports(body: nn.Sequential, head: nn.Module) -> bool:
        """Whether this body/head pair is one the kernel computes."""
        if not isinstance(head, GaussianHead) or head.state_dependent_std or len(body) < 2 or len(body) % 2:
            return False
        linears, activations = list(body)[0::2], list(body)[1::2]
        if not all(type(layer) is nn.Linear and layer.bias is not None for layer in linears):
            return False
        if len({type(a) for a in activations}) != 1 or type(activations[0]) not in _ACTIVATION_CODES:
            return False
        params = [p for layer in linears for p in layer.parameters()] + list(head.parameters())
        return all(p.device.type == "cpu" and p.dtype == torch.float32 for p in params)

    def sample(self, obs: torch.Tensor, deterministic: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs[N, D] -> (action[N, A], log_prob[N], env_action[N, A])``, as the torch head computes them."""
        num_envs = obs.shape[0]
        if deterministic:
            noise = torch.zeros(num_envs, self.num_actions)
        else:
            noise = torch.randn(num_envs, self.num_actions)
        action = torch.empty(num_envs, self.num_actions)
        env_action = torch.empty(num_envs, self.num_actions)
        log_prob = torch.empty(num_envs)
        self._kernel(obs.detach().contiguous().numpy(), self.weights, self.biases, self.activation, self.mean_w,
                     self.mean_b, self.log_std, noise.numpy(), self.squash, self.low, self.high, action.numpy(),
                     log_prob.numpy(), env_action.numpy())
        return action, log_prob, env_action
