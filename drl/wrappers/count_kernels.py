"""numba kernels of the episodic count (:class:`drl.wrappers.bonus_parts.EpisodicCount`) for CPU tensors.

The torch path of a count step is about twenty small ops (a gather, a scatter and the episode-stamp
arithmetic between them); on the CPU these kernels do the same integer arithmetic in one pass over the
envs, in place on numpy views of the count table and the episode counters, and the bonus in float32 with
IEEE operations (``1 / sqrt(float32(n))``, as ``torch.rsqrt`` computes it on the CPU), so counts and bonuses
are bitwise those of the torch path (tested). Without numba the functions are plain Python and unused
(callers check :data:`numba` first).
"""

from __future__ import annotations

import numpy as np

from drl.nn.kernels import jit, numba

__all__ = ["numba", "simhash_keys", "episodic_count"]



@jit(error_model="numpy")
def simhash_keys(projected, keys):  # pragma: no cover - compiled by numba
    """``keys[i] = sum_j 2^j * (projected[i, j] > 0)`` (int64) for ``projected[N, bits]``, ``bits <= 52``."""
    num, bits = projected.shape
    one = np.int64(1)
    for i in range(num):
        key = np.int64(0)
        for j in range(bits):
            if projected[i, j] > 0:
                key |= one << j
        keys[i] = key


@jit(error_model="numpy")
def episodic_count(keys, done, table, episode, count_bits, first_visit, out):  # pragma: no cover - compiled by numba
    """One count step of every env, in place: slot ``keys[i] mod buckets`` of ``table[N, buckets]`` (int64,
    ``(episode + 1) << count_bits | n``) counts one more visit in env ``i``'s current episode (a slot stamped
    with another episode reads as 0; ``n`` saturates at ``2^count_bits - 1``), ``episode[i]`` (int64) moves on
    where ``done[i]``, and ``out[i]`` (float32) is ``1{n = 1}`` (``first_visit``) or ``1 / sqrt(n)``."""
    num = keys.shape[0]
    buckets = table.shape[1]
    mask = (np.int64(1) << count_bits) - 1
    one = np.float32(1.0)
    slots = np.empty(num, np.int64)
    held = np.empty(num, np.int64)
    for i in range(num):  # the loads first, independent of each other: their cache misses overlap
        slot = keys[i] % buckets  # Python's sign rule, as torch.remainder: in [0, buckets)
        slots[i] = slot
        held[i] = table[i, slot]
    for i in range(num):
        this_episode = episode[i] + 1
        n = (held[i] & mask) if (held[i] >> count_bits) == this_episode else np.int64(0)
        n += 1
        if n > mask:
            n = mask
        table[i, slots[i]] = (this_episode << count_bits) | n
        if done[i]:
            episode[i] = this_episode
        if first_visit:
            out[i] = one if n == 1 else np.float32(0.0)
        else:
            out[i] = one / np.sqrt(np.float32(n))


@jit(error_model="numpy")
def episodic_count_reward(keys, terminated, truncated, reward, coef, table, episode, count_bits, first_visit,
                          bonus, intrinsic, new_reward):  # pragma: no cover - compiled by numba
    """:func:`episodic_count` with ``done = terminated | truncated``, then ``intrinsic = bonus * coef`` and
    ``new_reward = reward + intrinsic`` (float32, as the torch ops with a float32 ``coef``)."""
    num = keys.shape[0]
    done = np.empty(num, np.bool_)
    for i in range(num):
        done[i] = terminated[i] or truncated[i]
    episodic_count(keys, done, table, episode, count_bits, first_visit, bonus)
    c = np.float32(coef)
    for i in range(num):
        intrinsic[i] = bonus[i] * c
        new_reward[i] = reward[i] + intrinsic[i]
