"""History in the observation for submodular (history-dependent) rewards: the wrapper ``coverage_obs``.

A marginal-gain reward depends on where the episode has been, so the policy needs a summary of its history
(Prajapat et al. 2024 condition the policy on the history, or on time). :class:`CoverageObs` appends to the
observation the episode's time step ``t / horizon`` and a downsampled map of the cells visited so far
(per block of cells, the fraction visited), both configurable; it is applied to evaluation envs too.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv

from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group
from drl.wrappers.submodular import layout_of

__all__ = ["CoverageObs"]


@register_wrapper("coverage_obs")
class CoverageObs(TorchVectorWrapper):
    """The observation (or its group obs_group) with the time t / horizon and a map of the visited cells.

    The map: the grid of ``grid`` cells over ``[low, high]`` (of ``state_dims``; default from
    ``env.coverage_layout``, as for the ``submodular`` wrapper) cut into ``map_shape`` blocks (cell ``i`` of
    a dimension of ``G`` cells lies in block ``floor(i * M / G)``); entry ``b`` is the fraction of block
    ``b``'s cells visited this episode (the start state counts), kept per env and updated in O(N) a step.

    Args:
        time: append ``t / horizon`` (1 value).
        map_shape: blocks per state dimension (``[]``: no map); each at most the grid's cells there.
        horizon: the episode length that scales t (default: the env's ``horizon`` or ``max_episode_steps``).
        obs_group, state_dims, low, high, grid: as in :class:`drl.wrappers.submodular.SubmodularReward`.
    """

    applies_to_eval = True

    def __init__(self, env: VectorEnv, time: bool = True, map_shape: list[int] | None = None,
                 horizon: int | None = None, obs_group: str | None = None, state_dims: list[int] | None = None,
                 low: list[float] | None = None, high: list[float] | None = None, grid: list[int] | None = None):
        super().__init__(env)
        self.state_dims, self.grid = layout_of(env, state_dims, low, high, grid)
        self.time = bool(time)
        map_shape = [6] * len(self.grid.shape) if map_shape is None else [int(m) for m in map_shape]
        if map_shape and (len(map_shape) != len(self.grid.shape)
                          or any(not 1 <= m <= g for m, g in zip(map_shape, self.grid.shape, strict=True))):
            raise ValueError(f"map_shape must have one entry per grid dimension, each in [1, cells]; got {map_shape}"
                             f" for grid {list(self.grid.shape)}")
        self.map_shape = map_shape
        horizon = horizon or getattr(env, "horizon", None) or getattr(env, "max_episode_steps", None)
        if self.time and not horizon:
            raise ValueError("set horizon (the env has no horizon or max_episode_steps) or time: false")
        self.horizon = float(horizon or 1)
        self.obs_group = obs_group
        dev = self.device
        if map_shape:
            coords = (torch.arange(self.grid.num_cells, device=dev)[:, None] // self.grid.strides) % self.grid.sizes
            blocks = coords * torch.tensor(map_shape, device=dev) // self.grid.sizes  # [C, D]
            block_strides = torch.tensor([int(np.prod(map_shape[i + 1:])) for i in range(len(map_shape))], device=dev)
            self.block_of = (blocks * block_strides).sum(-1)  # [C]
            num_blocks = int(np.prod(map_shape))
            self.block_share = 1.0 / torch.bincount(self.block_of, minlength=num_blocks).float()  # [B]
        else:
            num_blocks = 0
        n = env.num_envs
        self.steps = torch.zeros(n, device=dev)
        self.visited = torch.zeros(n, self.grid.num_cells, dtype=torch.bool, device=dev)
        self.map = torch.zeros(n, num_blocks, device=dev)
        extra = int(self.time) + num_blocks
        self.single_observation_space = self._space(env.single_observation_space, extra)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, n)

    def _space(self, space: gym.Space, extra: int) -> gym.Space:
        if isinstance(space, gym.spaces.Dict):
            key = self.obs_group or "policy"
            if key not in space.spaces:
                raise ValueError(f"obs group '{key}' not in the observation; its groups: {sorted(space.spaces)}")
            return gym.spaces.Dict({**space.spaces, key: self._space(space.spaces[key], extra)})
        if self.obs_group not in (None, "policy"):
            raise ValueError(f"obs_group '{self.obs_group}' asked of an observation without groups")
        low = np.append(np.asarray(space.low, np.float32).reshape(-1), np.zeros(extra, np.float32))
        high = np.append(np.asarray(space.high, np.float32).reshape(-1), np.ones(extra, np.float32))
        return gym.spaces.Box(low, high, dtype=np.float32)

    def _visit(self, obs: Obs, mask: torch.Tensor | None = None) -> None:
        """Mark the cells of the states in ``obs`` visited (where ``mask [N]``) and update the map."""
        cell = self.grid.cell_of(select_group(obs, self.obs_group)[:, self.state_dims])[:, None]  # [N, 1]
        new = ~self.visited.gather(1, cell)
        if mask is not None:
            new &= mask[:, None]
        self.visited.scatter_(1, cell, self.visited.gather(1, cell) | new)
        if self.map_shape:
            block = self.block_of[cell]
            self.map.scatter_add_(1, block, new.float() * self.block_share[block])

    def _summary(self, obs: Obs, steps: torch.Tensor, visited_map: torch.Tensor) -> Obs:
        parts = [(steps / self.horizon)[:, None]] if self.time else []
        parts.append(visited_map)

        def extend(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.reshape(x.shape[0], -1).float(), *parts], dim=1)

        if isinstance(obs, dict):
            key = self.obs_group or "policy"
            return {**obs, key: extend(obs[key])}
        return extend(obs)

    def _clear(self, mask: torch.Tensor) -> None:
        self.steps = torch.where(mask, 0.0, self.steps)
        self.visited &= ~mask[:, None]
        self.map = torch.where(mask[:, None], 0.0, self.map)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        obs, info = super().reset(seed=seed, options=options)
        self._clear(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        self._visit(obs)
        return self._out(self._summary(obs, self.steps, self.map)), info

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        final = info.get("final_obs", obs)
        self._visit(final)
        self.steps = self.steps + 1
        info = dict(info, final_obs=self._summary(final, self.steps, self.map))
        done = terminated | truncated
        if bool(done.any()):  # one host sync: clearing touches every cell of every env
            self._clear(done)
            self._visit(obs, done)
        return self._out(self._summary(obs, self.steps, self.map)), reward, terminated, truncated, info

    def _episode_state(self) -> dict[str, Any]:
        return {"steps": self.steps.clone(), "visited": self.visited.clone(), "map": self.map.clone()}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        for key in ("steps", "visited", "map"):
            setattr(self, key, state[key].to(self.device).clone())
