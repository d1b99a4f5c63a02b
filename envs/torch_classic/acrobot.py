"""Acrobot-v1, batched in torch: a two-link pendulum actuated at the elbow must swing its tip up."""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from envs.torch_classic import ClassicControlEnv


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Shift angles outside ``[-pi, pi]`` by whole turns into it.

    Written as "subtract as many 2 pi as needed" rather than a modulo so that the usual case (one
    turn) rounds exactly like gymnasium's ``wrap``.
    """
    turn = 2 * math.pi
    theta = torch.where(theta > math.pi, theta - turn * torch.ceil((theta - math.pi) / turn), theta)
    return torch.where(theta < -math.pi, theta + turn * torch.ceil((-math.pi - theta) / turn), theta)


class Acrobot(ClassicControlEnv):
    """Batched Acrobot with gymnasium ``Acrobot-v1`` dynamics ("book" equations, RK4), reward, termination.

    State ``[N, 4]``: ``theta1`` (shoulder, 0 = hanging down), ``theta2`` (elbow, relative to link 1),
    and their angular velocities. Observation ``[N, 6]``: ``(cos theta1, sin theta1, cos theta2,
    sin theta2, theta1_dot, theta2_dot)``. Action ``[N]`` in ``{0, 1, 2}``: elbow torque -1, 0, +1.
    Each step integrates ``dt = 0.2`` s with one classic Runge-Kutta 4 step, then wraps the angles to
    ``[-pi, pi]`` and clips the velocities to ``4 pi`` and ``9 pi``. Reward -1 per step, 0 on the
    step that terminates; terminates when the tip is more than one link length above the shoulder,
    ``-cos(theta1) - cos(theta1 + theta2) > 1``; truncates after ``max_episode_steps``.

    Randomisable parameters: ``link_length_1``, ``link_mass_1``, ``link_mass_2``, ``link_com_pos_1``,
    ``link_com_pos_2``, ``link_moi`` (both links' moment of inertia) and ``gravity``.
    """

    max_vel_1 = 4 * math.pi
    max_vel_2 = 9 * math.pi

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int = 500,
        dtype: torch.dtype | str = torch.float32,
        randomize: dict[str, tuple[float, float]] | None = None,
        *,
        link_length_1: float = 1.0,
        link_mass_1: float = 1.0,
        link_mass_2: float = 1.0,
        link_com_pos_1: float = 0.5,
        link_com_pos_2: float = 0.5,
        link_moi: float = 1.0,
        gravity: float = 9.8,
        dt: float = 0.2,
    ):
        high = np.array([1.0, 1.0, 1.0, 1.0, self.max_vel_1, self.max_vel_2], dtype=np.float32)
        super().__init__(
            num_envs,
            spaces.Box(-high, high, dtype=np.float32),
            spaces.Discrete(3),
            max_episode_steps,
            device,
            dtype,
            params={"link_length_1": link_length_1, "link_mass_1": link_mass_1, "link_mass_2": link_mass_2,
                    "link_com_pos_1": link_com_pos_1, "link_com_pos_2": link_com_pos_2, "link_moi": link_moi,
                    "gravity": gravity},
            randomize=randomize,
        )
        self.dt = dt
        self.state = torch.zeros(num_envs, 4, dtype=self.dtype, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Every state variable of a reset env is drawn from U(-0.1, 0.1): hanging, nearly at rest."""
        self._reset_state_where(mask, self._uniform(-0.1, 0.1, (self.num_envs, 4)))

    def _observe(self) -> torch.Tensor:
        """``[N, 6]`` float32."""
        theta1, theta2, vel1, vel2 = self.state.unbind(-1)
        obs = (torch.cos(theta1), torch.sin(theta1), torch.cos(theta2), torch.sin(theta2), vel1, vel2)
        return torch.stack(obs, dim=-1).to(torch.float32)

    def _derivatives(self, s: torch.Tensor, torque: torch.Tensor) -> torch.Tensor:
        """Time derivative of the state ``s[N, 4]`` under elbow ``torque[N]`` (Sutton & Barto's equations)."""
        theta1, theta2, vel1, vel2 = s.unbind(-1)
        m1, m2, l1 = self.link_mass_1, self.link_mass_2, self.link_length_1
        lc1, lc2, inertia, g = self.link_com_pos_1, self.link_com_pos_2, self.link_moi, self.gravity
        cos2, sin2 = torch.cos(theta2), torch.sin(theta2)

        # Inertia terms of the manipulator equation (both links share the moment of inertia `inertia`).
        d1 = m1 * lc1**2 + m2 * (l1**2 + lc2**2 + 2 * l1 * lc2 * cos2) + 2 * inertia
        d2 = m2 * (lc2**2 + l1 * lc2 * cos2) + inertia
        # Gravity and Coriolis/centrifugal terms; angles are measured from hanging straight down.
        phi2 = m2 * lc2 * g * torch.sin(theta1 + theta2)
        phi1 = (
            -m2 * l1 * lc2 * sin2 * (vel2.square() + 2 * vel2 * vel1)
            + (m1 * lc1 + m2 * l1) * g * torch.sin(theta1)
            + phi2
        )
        acc2 = (torque + d2 / d1 * phi1 - m2 * l1 * lc2 * vel1.square() * sin2 - phi2) / (
            m2 * lc2**2 + inertia - d2.square() / d1
        )
        acc1 = -(d2 * acc2 + phi1) / d1
        return torch.stack((vel1, vel2, acc1, acc2), dim=-1)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``actions[N]`` -> ``(reward[N], terminated[N])``."""
        torque = self._flat_actions(actions) - 1.0  # {0, 1, 2} -> {-1, 0, +1}
        s, h = self.state, self.dt
        # One classic RK4 step; the torque is held constant over it.
        k1 = self._derivatives(s, torque)
        k2 = self._derivatives(s + 0.5 * h * k1, torque)
        k3 = self._derivatives(s + 0.5 * h * k2, torque)
        k4 = self._derivatives(s + h * k3, torque)
        theta1, theta2, vel1, vel2 = (s + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)).unbind(-1)

        theta1, theta2 = wrap_angle(theta1), wrap_angle(theta2)
        vel1 = vel1.clamp(-self.max_vel_1, self.max_vel_1)
        vel2 = vel2.clamp(-self.max_vel_2, self.max_vel_2)
        self.state = torch.stack((theta1, theta2, vel1, vel2), dim=-1)

        terminated = -torch.cos(theta1) - torch.cos(theta1 + theta2) > 1.0
        reward = terminated.to(torch.float32) - 1.0
        return reward, terminated
