"""Masked-velocity classic control: the policy sees positions only, the critic the full state.

Partial observability by removing velocities (the "no velocity" variants used to test memory-based and
asymmetric actor-critic methods, e.g. Pinto et al. 2017; Ni et al. 2022). Each env is its batched
:mod:`envs.torch_classic` parent with the same dynamics, reward, termination, time limit, domain
randomisation, seeding, env-state capability and rendering; only the observation changes, to a dict:

* ``"policy"`` ``[N, P]`` float32: the parent's observation without its velocity entries;
* ``"critic"`` ``[N, C]`` float32: the parent's full observation, bit for bit.

=========================== ==================================== ===============================================
id                          ``"policy"``                         ``"critic"``
=========================== ==================================== ===============================================
``drl/CartPoleNoVel-v0``    ``(x, theta)`` ``[N, 2]``            ``(x, x_dot, theta, theta_dot)`` ``[N, 4]``
``drl/PendulumNoVel-v0``    ``(cos theta, sin theta)`` ``[N, 2]`` ``(cos theta, sin theta, theta_dot)`` ``[N, 3]``
=========================== ==================================== ===============================================
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector.utils import batch_space

from envs.torch_classic import CartPole, Pendulum

__all__ = ["CartPoleNoVel", "PendulumNoVel", "privileged_space"]


def privileged_space(full: gym.spaces.Box, policy_columns: tuple[int, ...]) -> gym.spaces.Dict:
    """``Dict(policy=full[policy_columns], critic=full)``: the policy group keeps the columns' own bounds."""
    columns = list(policy_columns)
    policy = gym.spaces.Box(full.low[columns], full.high[columns], dtype=np.float32)
    return gym.spaces.Dict({"policy": policy, "critic": full})


class _MaskedVelocity:
    """Mixin for a classic-control env: observation ``{"policy": obs[:, policy_columns], "critic": obs}``."""

    policy_columns: tuple[int, ...]
    num_envs: int
    device: torch.device
    single_observation_space: gym.Space

    def _mask_observation(self) -> None:
        """Swap the parent's Box observation space for the two-group Dict (call after the parent's __init__)."""
        self.single_observation_space = privileged_space(self.single_observation_space, self.policy_columns)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._policy_index = torch.tensor(self.policy_columns, dtype=torch.long, device=self.device)

    def _observe(self) -> dict[str, torch.Tensor]:
        """``{"policy": [N, P], "critic": [N, C]}`` float32 (fresh tensors)."""
        full = super()._observe()  # type: ignore[misc]
        return {"policy": full.index_select(-1, self._policy_index), "critic": full}


class CartPoleNoVel(_MaskedVelocity, CartPole):
    """:class:`~envs.torch_classic.CartPole` whose policy sees the cart position and pole angle only.

    ``"policy"`` ``[N, 2]``: ``(x, theta)`` in metres and radians, bounds ``+-4.8`` and ``+-0.419`` (the
    parent's, twice the termination bounds). ``"critic"`` ``[N, 4]``: ``(x, x_dot, theta, theta_dot)``.
    Action ``Discrete(2)``; every constructor argument is the parent's.
    """

    policy_columns = (0, 2)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._mask_observation()


class PendulumNoVel(_MaskedVelocity, Pendulum):
    """:class:`~envs.torch_classic.Pendulum` whose policy sees the angle only, as ``(cos theta, sin theta)``.

    ``"policy"`` ``[N, 2]`` in ``[-1, 1]``. ``"critic"`` ``[N, 3]``: ``(cos theta, sin theta, theta_dot)``,
    ``theta_dot`` in rad/s within ``+-8``. Action ``Box(-2, 2, (1,))`` (torque, N m); every constructor
    argument is the parent's.
    """

    policy_columns = (0, 1)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._mask_observation()
