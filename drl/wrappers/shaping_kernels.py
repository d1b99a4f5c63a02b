"""numba kernel of potential_shaping's step after the potential (:class:`drl.wrappers.shaping.PotentialShaping`)
for CPU float32 tensors: the shaping term, the new reward and (one env) the logged sum in one call instead of
five small torch ops. The same float32 IEEE operations in the same order as the torch expressions, so the
results are bitwise theirs (tested). Without numba the function is plain Python and unused (callers check
:data:`numba` first).
"""

from __future__ import annotations

import numpy as np

from drl.nn.kernels import jit, numba

__all__ = ["numba", "shaping_step"]



@jit(error_model="numpy")
def shaping_step(phi_next, phi, terminated, reward, gamma, shaping, new_reward):  # pragma: no cover
    """``shaping = where(terminated, 0, phi_next) * float32(gamma) - phi`` and ``new_reward = reward + shaping``
    (float32 ``[N]``)."""
    g = np.float32(gamma)
    zero = np.float32(0.0)
    for i in range(phi_next.shape[0]):
        value = zero if terminated[i] else phi_next[i]
        shaping[i] = value * g - phi[i]
        new_reward[i] = reward[i] + shaping[i]
