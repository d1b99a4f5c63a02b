"""Rendezvous: a small cooperative task for two heterogeneous agents, batched on torch.

Two point masses must meet at a goal on the x axis. They differ in body, sensors and action:

* ``rover`` moves in the plane, at most ``0.05`` per step per axis; it observes its position and
  the goal relative to it: obs ``[4]``, action ``[2]`` in ``[-1, 1]`` (velocity command), or
  ``Discrete(5)`` (stay, +x, -x, +y, -y) with ``discrete=True``;
* ``rail`` slides along the x axis at most ``0.1`` per step; it observes its x, the goal's x relative to
  it, the rover relative to it and its distance: obs ``[5]``, action ``[1]``, or ``Discrete(3)`` (stay, +x, -x).

Both receive the shared team reward ``-(|rover - goal| + |rail - goal| + |rover - rail|) / 3`` per step
(``reward [N, 2]``, both columns equal), so each step costs the mean of the three distances.
The global state (the centralised critic's input) is ``[rover x, rover y, rail x, goal x]``. Episodes
last ``max_episode_steps`` (default 40) steps and are truncated then; there is no terminal state.
Positions start uniform in ``[-1, 1]`` (rover: both axes), the goal's x too.

The env has the state capability (``_get_state``/``_load_state``): a run on it resumes bitwise.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.multi_agent import STATE_KEY, MultiAgentTorchVecEnv

__all__ = ["Rendezvous", "RendezvousDiscrete"]

ROVER_SPEED = 0.05  # largest rover displacement per axis per step
RAIL_SPEED = 0.1  # largest rail displacement per step
ARENA = 1.5  # positions are clipped to [-ARENA, ARENA]
# discrete moves: rows are the displacement direction of each action index
_ROVER_MOVES = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
_RAIL_MOVES = torch.tensor([[0.0], [1.0], [-1.0]])


def _box(n: int, bound: float = np.inf) -> gym.spaces.Box:
    return gym.spaces.Box(-bound, bound, (n,), np.float32)


class Rendezvous(MultiAgentTorchVecEnv):
    """The two-agent rendezvous task (see the module doc).

    Args:
        num_envs: N, env copies.
        device: torch device.
        max_episode_steps: episode length (truncation).
        discrete: per-agent ``Discrete`` actions instead of boxes.
    """

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", max_episode_steps: int = 40,
                 discrete: bool = False):
        self.discrete = discrete
        if discrete:
            actions = {"rover": gym.spaces.Discrete(5), "rail": gym.spaces.Discrete(3)}
        else:
            actions = {"rover": _box(2, 1.0), "rail": _box(1, 1.0)}
        super().__init__(num_envs, {"rover": _box(4), "rail": _box(5)}, actions, _box(4),
                         max_episode_steps=max_episode_steps, device=device)
        self.rover = torch.zeros(num_envs, 2, device=self.device)
        self.rail = torch.zeros(num_envs, device=self.device)
        self.goal = torch.zeros(num_envs, device=self.device)
        self._rover_moves = _ROVER_MOVES.to(self.device)
        self._rail_moves = _RAIL_MOVES.to(self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        n = self.num_envs
        rover = self._uniform(-1.0, 1.0, (n, 2))
        rail = self._uniform(-1.0, 1.0, (n,))
        goal = self._uniform(-1.0, 1.0, (n,))
        self.rover = torch.where(mask[:, None], rover, self.rover)
        self.rail = torch.where(mask, rail, self.rail)
        self.goal = torch.where(mask, goal, self.goal)

    def _observe(self) -> dict[str, torch.Tensor]:
        goal_xy = torch.stack([self.goal, torch.zeros_like(self.goal)], 1)
        rail_xy = torch.stack([self.rail, torch.zeros_like(self.rail)], 1)
        to_rover = self.rover - rail_xy
        return {
            "rover": torch.cat([self.rover, goal_xy - self.rover], 1),
            "rail": torch.cat([self.rail[:, None], (self.goal - self.rail)[:, None], to_rover,
                               to_rover.norm(dim=1, keepdim=True)], 1),
            STATE_KEY: torch.cat([self.rover, self.rail[:, None], self.goal[:, None]], 1),
        }

    def _physics_step(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.discrete:
            rover_move = self._rover_moves[actions["rover"].long().reshape(-1)]
            rail_move = self._rail_moves[actions["rail"].long().reshape(-1), 0]
        else:
            rover_move = actions["rover"].reshape(-1, 2).clamp(-1.0, 1.0)
            rail_move = actions["rail"].reshape(-1).clamp(-1.0, 1.0)
        self.rover = (self.rover + ROVER_SPEED * rover_move).clamp(-ARENA, ARENA)
        self.rail = (self.rail + RAIL_SPEED * rail_move).clamp(-ARENA, ARENA)
        goal_xy = torch.stack([self.goal, torch.zeros_like(self.goal)], 1)
        rail_xy = torch.stack([self.rail, torch.zeros_like(self.rail)], 1)
        cost = ((self.rover - goal_xy).norm(dim=1) + (self.rail - self.goal).abs()
                + (self.rover - rail_xy).norm(dim=1)) / 3.0
        reward = (-cost)[:, None].expand(-1, 2).contiguous()
        return reward, torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"rover": self.rover, "rail": self.rail, "goal": self.goal}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key, value in state.items():
            setattr(self, key, self._check_state_shape(key, value, getattr(self, key)).clone())


class RendezvousDiscrete(Rendezvous):
    """:class:`Rendezvous` with per-agent ``Discrete`` actions (rover 5 moves, rail 3)."""

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", max_episode_steps: int = 40):
        super().__init__(num_envs, device, max_episode_steps, discrete=True)
