"""CartPole-v1, batched in torch: a pole hinged on a cart that is pushed left or right."""

from __future__ import annotations

import math

import numpy as np
import torch
from gymnasium import spaces

from envs.torch_classic import ClassicControlEnv


class CartPole(ClassicControlEnv):
    """Batched CartPole with gymnasium ``CartPole-v1`` dynamics, reward and termination.

    State ``[N, 4]``: cart position ``x``, cart velocity, pole angle ``theta`` (0 = upright), pole
    angular velocity; the observation is the state as float32. Action ``[N]`` in ``{0, 1}``: push the
    cart left / right with ``force_mag``. Reward +1 every step (the terminating one included), or with
    ``sutton_barto_reward`` 0 per step and -1 on termination. Terminates when ``|x| > 2.4`` or
    ``|theta| > 12 deg``; truncates after ``max_episode_steps``.

    Randomisable parameters: ``gravity``, ``masscart``, ``masspole``, ``length`` (half the pole's
    length) and ``force_mag``.
    """

    x_threshold = 2.4
    theta_threshold = 12 * 2 * math.pi / 360  # radians

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int = 500,
        dtype: torch.dtype | str = torch.float32,
        randomize: dict[str, tuple[float, float]] | None = None,
        *,
        gravity: float = 9.8,
        masscart: float = 1.0,
        masspole: float = 0.1,
        length: float = 0.5,
        force_mag: float = 10.0,
        tau: float = 0.02,
        kinematics_integrator: str = "euler",
        sutton_barto_reward: bool = False,
    ):
        if kinematics_integrator not in ("euler", "semi-implicit"):
            raise ValueError(f"kinematics_integrator must be 'euler' or 'semi-implicit', got '{kinematics_integrator}'")
        # The observation bounds are twice the termination bounds, as in gymnasium.
        high = np.array([self.x_threshold * 2, np.inf, self.theta_threshold * 2, np.inf], dtype=np.float32)
        super().__init__(
            num_envs,
            spaces.Box(-high, high, dtype=np.float32),
            spaces.Discrete(2),
            max_episode_steps,
            device,
            dtype,
            params={"gravity": gravity, "masscart": masscart, "masspole": masspole, "length": length,
                    "force_mag": force_mag},
            randomize=randomize,
        )
        self.tau = tau
        self.semi_implicit = kinematics_integrator == "semi-implicit"
        self.sutton_barto_reward = sutton_barto_reward
        self.state = torch.zeros(num_envs, 4, dtype=self.dtype, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Every state variable of a reset env is drawn from U(-0.05, 0.05)."""
        self._reset_state_where(mask, self._uniform(-0.05, 0.05, (self.num_envs, 4)))

    def _observe(self) -> torch.Tensor:
        """``[N, 4]`` float32 (a copy, so the caller may modify it)."""
        return self.state.to(torch.float32, copy=True)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One Euler step of ``tau`` seconds. ``actions[N]`` -> ``(reward[N], terminated[N])``."""
        x, x_vel, theta, theta_vel = self.state.unbind(-1)
        # Action 1 pushes right, anything else left (gymnasium's rule).
        direction = (actions.reshape(self.num_envs) == 1).to(self.dtype) * 2.0 - 1.0
        force = direction * self.force_mag

        cos, sin = torch.cos(theta), torch.sin(theta)
        total_mass = self.masscart + self.masspole
        pole_moment = self.masspole * self.length  # pole mass times half-length
        # Equations of motion of the cart-pole (Barto, Sutton & Anderson 1983), without friction:
        # `push` is the cart's acceleration before the pole's reaction is accounted for.
        push = (force + pole_moment * theta_vel.square() * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * push) / (
            self.length * (4.0 / 3.0 - self.masspole * cos.square() / total_mass)
        )
        x_acc = push - pole_moment * theta_acc * cos / total_mass

        if self.semi_implicit:  # velocities first, positions from the new velocities
            x_vel = x_vel + self.tau * x_acc
            x = x + self.tau * x_vel
            theta_vel = theta_vel + self.tau * theta_acc
            theta = theta + self.tau * theta_vel
        else:  # explicit Euler: positions from the old velocities (gymnasium's default)
            x = x + self.tau * x_vel
            x_vel = x_vel + self.tau * x_acc
            theta = theta + self.tau * theta_vel
            theta_vel = theta_vel + self.tau * theta_acc
        self.state = torch.stack((x, x_vel, theta, theta_vel), dim=-1)

        terminated = (x.abs() > self.x_threshold) | (theta.abs() > self.theta_threshold)
        if self.sutton_barto_reward:
            reward = -terminated.to(torch.float32)
        else:
            reward = torch.ones(self.num_envs, dtype=torch.float32, device=self.device)
        return reward, terminated
