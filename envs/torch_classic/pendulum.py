"""Pendulum-v1, batched in torch: swing a torque-limited pendulum up and hold it upright."""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from envs.torch_classic import ClassicControlEnv


def angle_normalize(theta: torch.Tensor) -> torch.Tensor:
    """Map angles to ``[-pi, pi)``."""
    return torch.remainder(theta + math.pi, 2 * math.pi) - math.pi


class Pendulum(ClassicControlEnv):
    """Batched Pendulum with gymnasium ``Pendulum-v1`` dynamics and reward.

    State ``[N, 2]``: angle ``theta`` (0 = upright) and angular velocity. Observation ``[N, 3]``:
    ``(cos theta, sin theta, theta_dot)``. Action ``[N, 1]``: torque, clipped to ``[-2, 2]``.
    Reward ``-(theta^2 + 0.1 theta_dot^2 + 0.001 torque^2)`` with ``theta`` normalised to
    ``[-pi, pi)``, computed on the state before the step. Never terminates; truncates after
    ``max_episode_steps``.

    Randomisable parameters: ``g`` (gravity), ``mass`` and ``length`` of the rod.
    """

    max_speed = 8.0
    max_torque = 2.0

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int = 200,
        dtype: torch.dtype | str = torch.float32,
        randomize: dict[str, tuple[float, float]] | None = None,
        *,
        g: float = 10.0,
        mass: float = 1.0,
        length: float = 1.0,
        dt: float = 0.05,
    ):
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        super().__init__(
            num_envs,
            spaces.Box(-high, high, dtype=np.float32),
            spaces.Box(-self.max_torque, self.max_torque, shape=(1,), dtype=np.float32),
            max_episode_steps,
            device,
            dtype,
            params={"g": g, "mass": mass, "length": length},
            randomize=randomize,
        )
        self.dt = dt
        self.state = torch.zeros(num_envs, 2, dtype=self.dtype, device=self.device)
        # Reset ranges: theta ~ U(-pi, pi), theta_dot ~ U(-1, 1).
        self._reset_high = torch.tensor([math.pi, 1.0], device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        self._reset_state_where(mask, self._uniform(-self._reset_high, self._reset_high, (self.num_envs, 2)))

    def _observe(self) -> torch.Tensor:
        """``[N, 3]`` float32: ``(cos theta, sin theta, theta_dot)``."""
        theta, theta_vel = self.state.unbind(-1)
        return torch.stack((torch.cos(theta), torch.sin(theta), theta_vel), dim=-1).to(torch.float32)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One semi-implicit Euler step of ``dt``. ``actions[N, 1]`` -> ``(reward[N], terminated[N])``."""
        theta, theta_vel = self.state.unbind(-1)
        torque = self._flat_actions(actions).clamp(-self.max_torque, self.max_torque)
        # The cost is that of the state the action was taken in.
        cost = angle_normalize(theta).square() + 0.1 * theta_vel.square() + 0.001 * torque.square()

        # Rod pivoting at one end: inertia m l^2 / 3, gravity torque m g (l / 2) sin(theta).
        theta_acc = 3.0 * self.g / (2.0 * self.length) * torch.sin(theta) + 3.0 / (self.mass * self.length**2) * torque
        theta_vel = (theta_vel + theta_acc * self.dt).clamp(-self.max_speed, self.max_speed)
        theta = theta + theta_vel * self.dt
        self.state = torch.stack((theta, theta_vel), dim=-1)

        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return (-cost).to(torch.float32), terminated
