"""Coverage tasks for submodular RL (Prajapat et al. 2024): a gridworld and a continuous point mass.

Neither has a reward of its own (it is 0): the objective is a submodular function of the states an
episode visits, given by the ``submodular`` wrapper (:mod:`drl.wrappers.submodular`), which finds the
state through :attr:`coverage_layout`. The horizon is part of the task (a finite-horizon objective): the
step that reaches it *terminates* the episode, and the time ``t / horizon`` is in the observation.
``peek(actions)`` gives the observation an action would lead to without stepping (known dynamics), for
the greedy reference :func:`drl.wrappers.submodular.greedy_rollout`.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs.core import TorchVecEnv

__all__ = ["CoverageGrid", "CoveragePointMass", "GRID_MOVES"]

# action -> (d_row, d_col): stay, up, down, left, right
GRID_MOVES = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


class _CoverageTask(TorchVecEnv):
    """Shared parts: position ``pos [N, 2]`` in state units, the time, the observation, the env state."""

    reward_free = True  # the objective is given by the submodular wrapper

    def __init__(self, num_envs: int, device: str | torch.device, horizon: int, low: float, high: float,
                 grid: tuple[int, int], action_space: gym.Space, start: str):
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1 step, got {horizon}")
        if start not in ("center", "random"):
            raise ValueError(f"start must be 'center' or 'random', got {start!r}")
        obs_space = gym.spaces.Box(np.array([low, low, 0.0], np.float32), np.array([high, high, 1.0], np.float32))
        super().__init__(num_envs, obs_space, action_space, None, device)
        self.horizon, self.low, self.high, self.start = int(horizon), float(low), float(high), start
        self.coverage_layout = {"state_dims": [0, 1], "low": [low, low], "high": [high, high], "grid": list(grid)}
        self.pos = torch.zeros(num_envs, 2, device=self.device)

    def _start_positions(self) -> torch.Tensor:
        raise NotImplementedError

    def _move(self, actions: torch.Tensor) -> torch.Tensor:
        """The positions ``[N, 2]`` the actions lead to (no state change)."""
        raise NotImplementedError

    def _reset_envs(self, mask: torch.Tensor) -> None:
        self.pos = torch.where(mask[:, None], self._start_positions(), self.pos)

    def _obs_at(self, pos: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        return torch.cat([pos, (steps.float() / self.horizon)[:, None]], dim=1)

    def _observe(self) -> torch.Tensor:
        """``[N, 3]``: ``(x, y, t / horizon)``."""
        return self._obs_at(self.pos, self.episode_steps)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.pos = self._move(actions)
        terminated = self.episode_steps + 1 >= self.horizon
        return torch.zeros(self.num_envs, device=self.device), terminated

    def peek(self, actions: torch.Tensor) -> torch.Tensor:
        """The observation ``[N, 3]`` that ``actions`` would lead to (before any autoreset); no state change."""
        return self._obs_at(self._move(torch.as_tensor(actions, device=self.device)), self.episode_steps + 1)

    def _set_state(self, state: torch.Tensor) -> None:
        """``state [N, 2]``: the positions (clamped into the box)."""
        if tuple(state.shape) != (self.num_envs, 2):
            raise ValueError(f"{type(self).__name__}: options['state'] must have shape {(self.num_envs, 2)}")
        self.pos = state.float().clamp(self.low, self.high).to(self.device).clone()

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"pos": self.pos}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.pos = self._check_state_shape("pos", state["pos"], self.pos).clone()


class CoverageGrid(_CoverageTask):
    """A ``size x size`` gridworld (the paper's tabular setting: 30x30, horizon 40-80).

    State: the agent's cell ``(row, col)``; observed as the cell centre ``(row + 0.5, col + 0.5)`` in
    ``[0, size]^2`` plus ``t / horizon``. Actions ``Discrete(5)``: stay, up, down, left, right
    (:data:`GRID_MOVES`); a move into the wall stays. Start: the centre cell ``(size // 2, size // 2)``, or
    uniform (``start: random``). ``coverage_layout``: a ``size x size`` grid over ``[0, size]^2``, one cell
    per grid cell.

    Args:
        num_envs, device: the batch.
        size: cells per side (>= 2).
        horizon: steps per episode (>= 1).
        start: ``center`` or ``random``.
    """

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", size: int = 30, horizon: int = 40,
                 start: str = "center"):
        if size < 2:
            raise ValueError(f"size must be >= 2 cells, got {size}")
        super().__init__(num_envs, device, horizon, 0.0, float(size), (size, size), gym.spaces.Discrete(5), start)
        self.size = int(size)
        self.moves = torch.tensor(GRID_MOVES, dtype=torch.float32, device=self.device)

    def _start_positions(self) -> torch.Tensor:
        if self.start == "center":
            return torch.full((self.num_envs, 2), self.size // 2 + 0.5, device=self.device)
        cells = torch.randint(0, self.size, (self.num_envs, 2), generator=self.generator, device=self.device)
        return cells.float() + 0.5

    def _move(self, actions: torch.Tensor) -> torch.Tensor:
        a = actions.to(self.device).long().reshape(self.num_envs).clamp(0, len(GRID_MOVES) - 1)
        return (self.pos + self.moves[a]).clamp(0.5, self.size - 0.5)

    def greedy_candidates(self) -> torch.Tensor:
        """``[5]``: every action (for the greedy reference)."""
        return torch.arange(len(GRID_MOVES), device=self.device)


class CoveragePointMass(_CoverageTask):
    """A point mass with velocity control in the square ``[-half, half]^2`` (the paper's Ant covers a
    100x100 grid over ``[-20, 20]^2``; this is its cheap stand-in).

    Action ``Box(-1, 1, (2,))`` (clipped; NaN reads as 0): the velocity, ``max_speed`` units per step at 1;
    the position is clamped to the square. Start: the centre, or uniform (``start: random``). Observation
    ``(x, y, t / horizon)``. ``coverage_layout``: a ``cells x cells`` grid over the square.

    Args:
        num_envs, device: the batch.
        half: half the square's side (> 0).
        max_speed: distance per step at full action (> 0).
        horizon: steps per episode (>= 1).
        cells: grid cells per side of ``coverage_layout``.
        start: ``center`` or ``random``.
    """

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", half: float = 20.0,
                 max_speed: float = 1.0, horizon: int = 100, cells: int = 100, start: str = "center"):
        if half <= 0 or max_speed <= 0 or cells < 1:
            raise ValueError(f"half and max_speed must be > 0 and cells >= 1; got {half}, {max_speed}, {cells}")
        super().__init__(num_envs, device, horizon, -float(half), float(half), (cells, cells),
                         gym.spaces.Box(-1.0, 1.0, (2,), np.float32), start)
        self.max_speed = float(max_speed)

    def _start_positions(self) -> torch.Tensor:
        if self.start == "center":
            return torch.zeros(self.num_envs, 2, device=self.device)
        return self._uniform(self.low, self.high, (self.num_envs, 2))

    def _move(self, actions: torch.Tensor) -> torch.Tensor:
        a = torch.nan_to_num(actions.to(device=self.device, dtype=torch.float32)).reshape(self.num_envs, 2)
        return (self.pos + self.max_speed * a.clamp(-1.0, 1.0)).clamp(self.low, self.high)

    def greedy_candidates(self, headings: int = 16) -> torch.Tensor:
        """``[headings, 2]`` full-speed actions at evenly spaced headings (for the greedy reference)."""
        angle = torch.arange(headings, device=self.device) * (2 * torch.pi / headings)
        direction = torch.stack([torch.cos(angle), torch.sin(angle)], -1)
        return direction / direction.abs().amax(-1, keepdim=True)  # on the box's edge: full speed per axis
