"""MountainCarContinuous-v0, batched in torch: an underpowered car must rock itself up a hill."""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces

from envs.torch_classic import ClassicControlEnv


class MountainCarContinuous(ClassicControlEnv):
    """Batched continuous mountain car with gymnasium ``MountainCarContinuous-v0`` dynamics and reward.

    State = observation ``[N, 2]``: position in ``[-1.2, 0.6]`` and velocity in ``[-0.07, 0.07]``.
    Action ``[N, 1]``: engine force, clipped to ``[-1, 1]`` for the dynamics. Reward
    ``100 * terminated - 0.1 * action^2``, where, as in gymnasium, the action in the penalty is the
    unclipped one. Terminates when ``position >= goal_position`` and ``velocity >= goal_velocity``;
    truncates after ``max_episode_steps``.

    Randomisable parameters: ``power`` (force scale) and ``gravity`` (the hill's pull,
    ``gravity * cos(3 * position)``).
    """

    min_position = -1.2
    max_position = 0.6
    max_speed = 0.07
    goal_position = 0.45

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int = 999,
        dtype: torch.dtype | str = torch.float32,
        randomize: dict[str, tuple[float, float]] | None = None,
        *,
        goal_velocity: float = 0.0,
        power: float = 0.0015,
        gravity: float = 0.0025,
    ):
        super().__init__(
            num_envs,
            spaces.Box(
                np.array([self.min_position, -self.max_speed], dtype=np.float32),
                np.array([self.max_position, self.max_speed], dtype=np.float32),
                dtype=np.float32,
            ),
            spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32),
            max_episode_steps,
            device,
            dtype,
            params={"power": power, "gravity": gravity},
            randomize=randomize,
        )
        self.goal_velocity = goal_velocity
        self.state = torch.zeros(num_envs, 2, dtype=self.dtype, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Position ~ U(-0.6, -0.4) (the valley), velocity 0."""
        position = self._uniform(-0.6, -0.4, (self.num_envs,))
        self._reset_state_where(mask, torch.stack((position, torch.zeros_like(position)), dim=-1))

    def _observe(self) -> torch.Tensor:
        """``[N, 2]`` float32 (a copy, so the caller may modify it)."""
        return self.state.to(torch.float32, copy=True)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``actions[N, 1]`` -> ``(reward[N], terminated[N])``."""
        position, velocity = self.state.unbind(-1)
        action = self._flat_actions(actions)
        force = action.clamp(-1.0, 1.0)

        velocity = velocity + force * self.power - self.gravity * torch.cos(3.0 * position)
        velocity = velocity.clamp(-self.max_speed, self.max_speed)
        position = (position + velocity).clamp(self.min_position, self.max_position)
        # The left wall is inelastic: a car driving into it stops.
        velocity = torch.where((position == self.min_position) & (velocity < 0), 0.0, velocity)
        self.state = torch.stack((position, velocity), dim=-1)

        terminated = (position >= self.goal_position) & (velocity >= self.goal_velocity)
        reward = 100.0 * terminated.to(self.dtype) - 0.1 * action.square()
        return reward.to(torch.float32), terminated
