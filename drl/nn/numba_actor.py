"""The per-step actor of an MLP Gaussian policy as one numba kernel, for CPU rollouts.

With a CPU-simulated env (MuJoCo, PyBullet) and one or a few envs, every env step waits for one
policy forward on a handful of observations. In torch that is ~15 small ops at a microsecond or
two of dispatch each, which is as long as the physics step. The same math as one compiled loop
takes a few microseconds.

The kernel reads the torch parameters in place (numpy views of the same CPU memory), so it always
sees the current weights, and it takes its noise from torch's global generator, so a seeded run
draws the same numbers as the torch path. It computes exactly what :meth:`GaussianHead.sample`
and :meth:`GaussianHead.env_action` compute, up to float rounding (tested).

:meth:`NumbaGaussianActor.sample_normalized` also updates the observation normaliser and normalises
the observations in the same call, with the arithmetic of :class:`RunningMeanStd`'s kernel path.
The kernel itself is :func:`drl.nn.kernels.gaussian_actor`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from drl.nn import kernels
from drl.nn.heads import GaussianHead
from drl.nn.normalization import RunningMeanStd

__all__ = ["NumbaGaussianActor", "numba_available"]

_ACTIVATION_CODES = {nn.Tanh: 0, nn.ReLU: 1, nn.ELU: 2, nn.SiLU: 3}
# stand-ins for the normaliser's arrays when the kernel does not normalise (one compiled signature)
_NO_STATS = np.zeros(1)
_NO_OBS = np.empty((0, 0), np.float32)


def numba_available() -> bool:
    return kernels.numba is not None


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
        if kernels.numba is None:
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
        self._kernel = kernels.gaussian_actor

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
        return self._sample(obs, deterministic)[1:]

    def sample_normalized(self, obs: torch.Tensor, normalizer: RunningMeanStd, update_stats: bool,
                          deterministic: bool = False
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``obs[N, D] -> (normalized_obs[N, D], action[N, A], log_prob[N], env_action[N, A])``.

        The same as ``normalizer.update_normalize(obs, update_stats)`` followed by :meth:`sample` on
        its result, in one kernel call where the normaliser's kernel path takes ``obs``.
        """
        views = normalizer.kernel_views(obs)
        if views is None:
            normalized = normalizer.update_normalize(obs, update_stats)
            return (normalized, *self.sample(normalized, deterministic))
        return self._sample(obs, deterministic, normalizer, views, update_stats)

    def _sample(self, obs: torch.Tensor, deterministic: bool, normalizer: RunningMeanStd | None = None,
                views: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None, update_stats: bool = False
                ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]:
        num_envs = obs.shape[0]
        if deterministic:
            noise = torch.zeros(num_envs, self.num_actions)
        else:
            noise = torch.randn(num_envs, self.num_actions)
        action = np.empty((num_envs, self.num_actions), np.float32)
        env_action = np.empty((num_envs, self.num_actions), np.float32)
        log_prob = np.empty(num_envs, np.float32)
        if normalizer is None:
            mean = var = count = _NO_STATS
            epsilon, clip, normalized = 0.0, 0.0, _NO_OBS
        else:
            mean, var, count = views
            epsilon, clip = float(normalizer.epsilon), float(normalizer.clip)
            normalized = np.empty(obs.shape, np.float32)
        if obs.dtype != torch.float32:
            obs = obs.to(torch.float32)
        if obs.requires_grad:
            obs = obs.detach()
        self._kernel(obs.contiguous().numpy(), self.weights, self.biases, self.activation, self.mean_w,
                     self.mean_b, self.log_std, noise.numpy(), self.squash, self.low, self.high, action, log_prob,
                     env_action, normalizer is not None, update_stats, mean, var, count, epsilon, clip, normalized)
        if normalizer is None:
            return None, torch.from_numpy(action), torch.from_numpy(log_prob), torch.from_numpy(env_action)
        if update_stats:
            normalizer.stats_changed()
        return (torch.from_numpy(normalized), torch.from_numpy(action), torch.from_numpy(log_prob),
                torch.from_numpy(env_action))
