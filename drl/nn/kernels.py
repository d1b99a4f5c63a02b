"""numba kernels for the CPU per-step path: the running normalisers and the MLP Gaussian actor.

With a CPU-simulated env and one or a few envs, each env step waits for the per-step torch work,
and for tensors of a few dozen numbers that work is all dispatch: a microsecond or two per op. The
kernels here do the same arithmetic in one compiled call each.

They live in one file on purpose: numba's on-disk cache is invalidated by edits to the file that
holds a cached function, not by edits to the functions it calls, and the actor kernel calls the
normaliser kernels.

The normaliser kernels do their float64 statistics without fast-math flags (and with IEEE division,
``error_model="numpy"``, as torch divides) and in the order the
torch path of :mod:`drl.nn.normalization` defines them (Chan et al.'s parallel update), so with one
env per step their results are bitwise those of that definition (tested); the batch mean and
variance of several envs are sequential sums, equal to float64 rounding.

Without numba the functions below are plain Python (callers check :data:`numba` first).
"""

from __future__ import annotations

import math

import numpy as np

from drl.nn.heads import LOG_STD_MAX, LOG_STD_MIN  # the actor kernel clamps the free log-std like the head

try:
    import numba
except ImportError:  # optional: the torch paths are used instead
    numba = None

__all__ = ["numba", "jit", "rms_update", "normalize_into", "rms_update_normalize", "scale_rewards",
           "scale_reward_rollout", "gaussian_actor"]


def jit(**options):
    """``numba.njit(cache=True)``, compiled at the first call; the plain function without numba."""
    def wrap(fn):
        return numba.njit(cache=True, **options)(fn) if numba is not None else fn
    return wrap


@jit(error_model="numpy")
def rms_update(x, mean, var, count):  # pragma: no cover - compiled by numba
    """Fold ``x[B, D]`` into ``mean[D]``, ``var[D]`` (float64) and ``count[1]``, in place.

    Per feature, the batch sums run over the rows in order (row-major loops, so a large batch is
    read contiguously); the variance is two-pass (the batch mean first).
    """
    num, dim = x.shape
    n = float(num)
    old_count = count[0]
    total = old_count + n
    batch_mean = np.zeros(dim)
    for b in range(num):
        for d in range(dim):
            batch_mean[d] += x[b, d]
    for d in range(dim):
        batch_mean[d] /= n
    batch_var = np.zeros(dim)
    for b in range(num):
        for d in range(dim):
            e = x[b, d] - batch_mean[d]
            batch_var[d] += e * e
    for d in range(dim):
        delta = batch_mean[d] - mean[d]
        mean[d] = mean[d] + delta * n / total
        m2 = var[d] * old_count + batch_var[d] / n * n + delta * delta * old_count * n / total
        var[d] = m2 / total
    count[0] = total


@jit(error_model="numpy")
def normalize_into(x, mean, var, epsilon, clip, out):  # pragma: no cover - compiled by numba
    """``out[B, D] = clamp((x - float32(mean)) / float32(sqrt(var + eps)), -clip, clip)`` in float32."""
    low = np.float32(-clip)
    high = np.float32(clip)
    dim = x.shape[1]
    m = np.empty(dim, np.float32)
    s = np.empty(dim, np.float32)
    for d in range(dim):
        m[d] = np.float32(mean[d])
        s[d] = np.float32(math.sqrt(var[d] + epsilon))
    for b in range(x.shape[0]):
        for d in range(dim):
            v = (x[b, d] - m[d]) / s[d]
            if v < low:
                v = low
            elif v > high:
                v = high
            out[b, d] = v  # NaN passes through, as torch.clamp lets it


@jit(error_model="numpy")
def rms_update_normalize(x, mean, var, count, update, epsilon, clip, out):  # pragma: no cover
    """:func:`rms_update` (if ``update``) then :func:`normalize_into`, in one call."""
    if update:
        rms_update(x, mean, var, count)
    normalize_into(x, mean, var, epsilon, clip, out)


@jit(error_model="numpy")
def scale_rewards(reward, terminated, truncated, returns, mean, var, count, gamma, update, epsilon, clip,
                  out):  # pragma: no cover - compiled by numba
    """SB3-style reward scaling for one step, in place.

    ``returns[N] = returns * gamma + reward``; the return statistics (shape ``()``: ``mean[1]``,
    ``var[1]``, ``count[1]``) take ``returns`` as a batch of N; returns of finished episodes are
    zeroed; ``out[N] = clamp(reward / float32(sqrt(var + eps)), -clip, clip)`` in float32.
    """
    num = reward.shape[0]
    if update:
        for i in range(num):
            returns[i] = returns[i] * gamma + reward[i]
        rms_update(returns.reshape((num, 1)), mean, var, count)
        for i in range(num):
            if terminated[i] or truncated[i]:
                returns[i] = 0.0
    low = np.float32(-clip)
    high = np.float32(clip)
    s = np.float32(math.sqrt(var[0] + epsilon))
    for i in range(num):
        v = reward[i] / s
        if v < low:
            v = low
        elif v > high:
            v = high
        out[i] = v


@jit(error_model="numpy")
def scale_reward_rollout(rewards, terminated, truncated, returns, mean, var, count, gamma, epsilon, clip,
                         out):  # pragma: no cover - compiled by numba
    """:func:`scale_rewards` with ``update`` for each step of ``rewards[T, N]`` in turn, into ``out[T, N]``."""
    for t in range(rewards.shape[0]):
        scale_rewards(rewards[t], terminated[t], truncated[t], returns, mean, var, count, gamma, True, epsilon, clip,
                      out[t])


@jit(fastmath={"reassoc", "contract"})  # the dot products vectorise; NaN/inf semantics are kept
def gaussian_actor(obs, weights, biases, activation, mean_w, mean_b, log_std, noise, squash, low, high,
                   action, log_prob, env_action, normalize, update, obs_mean, obs_var, obs_count, epsilon, clip,
                   normalized):  # pragma: no cover - compiled by numba
    """``obs[N, D] -> action[N, A]`` (the stored sample), ``log_prob[N]``, ``env_action[N, A]``.

    With ``normalize``, the policy reads ``normalized[N, D]``, which :func:`rms_update_normalize`
    fills from ``obs`` first (``obs_mean``, ``obs_var``, ``obs_count`` updated if ``update``).
    """
    if normalize:
        rms_update_normalize(obs, obs_mean, obs_var, obs_count, update, epsilon, clip, normalized)
        source = normalized
    else:
        source = obs
    num_envs = obs.shape[0]
    num_actions = mean_w.shape[0]
    for i in range(num_envs):
        x = source[i]
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
