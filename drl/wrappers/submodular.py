"""Submodular rewards (Prajapat et al. 2024, "Submodular Reinforcement Learning", ICLR 2024).

The objective of an episode is ``F(A)``, a monotone submodular function of the set ``A`` of states it
visited (coverage, information gathered), not a sum of per-state rewards. It telescopes into marginal
gains, ``F(A_T) = sum_t F(s_t | A_{t-1})`` with ``F(s | A) = F(A + {s}) - F(A)`` (paper, Eq. 2), so an
agent maximising the return of the step reward ``r_t = F(s_{t+1} | A_t)`` maximises ``E[F(A_T)]``; SubPO
(:mod:`drl.agents.subpo`) is a policy gradient on exactly these rewards.

:class:`SubmodularReward` (wrapper ``submodular``) keeps ``A`` per env on the env's device, as the state of
an objective (a covered-cell bitmap ``[N, cells]``, a Cholesky factor ``[N, H, H]``), empties it by mask
where an episode starts, and returns the marginal gain as the reward. The start state belongs to ``A``:
its value ``F({s_0})`` is added to the episode's first reward, so the rewards of an episode sum to
``F(A_T)`` exactly (with ``scale = 1``). With ``modular: true`` the same F is made additive, each step
earning ``F({s_{t+1}})`` with repeats counted: the paper's "modular RL" baseline.

Objectives (``objective:``):

* ``coverage``: weighted coverage ``F(A) = sum_c w_c [c is within radius of a state in A]`` over the cells
  of a grid laid over the state (weights ``constant``, ``bimodal`` or ``gp``: a Gaussian-process sample
  from a fixed seed, ``map_seed``);
* ``logdet``: Gaussian-process entropy (experiment design), ``F(A) = 1/2 logdet(I + K_A / noise)`` with an
  RBF kernel over the states; the gain ``1/2 log(1 + var_A(s) / noise)`` comes from an incremental
  Cholesky factor of ``K_A + noise I`` (one triangular solve per step);
* ``"module:Class"``: a user's :class:`SubmodularObjective` subclass (its keyword arguments in ``options``).

Where the state is: ``state_dims`` of the observation (group ``obs_group``), in the box ``[low, high]``
divided into ``grid`` cells; an env may give all four as ``env.coverage_layout`` (the coverage tasks of
:mod:`envs.tasks.coverage` do), so a config needs none of them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import torch
from gymnasium.vector import VectorEnv

from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group

__all__ = ["CellGrid", "SubmodularObjective", "WeightedCoverage", "LogDet", "OBJECTIVES", "weight_map",
           "make_objective", "SubmodularReward", "layout_of", "greedy_rollout"]


class CellGrid:
    """A regular grid over the box ``[low, high]`` of ``D``-dimensional states, cells numbered row-major
    (the first state dimension varies slowest).

    Args:
        low, high: the box's corners, ``D`` floats each (``high > low``).
        shape: cells per dimension, ``D`` positive ints.
        device: where the index tables live.
    """

    def __init__(self, low: Sequence[float], high: Sequence[float], shape: Sequence[int],
                 device: torch.device | str = "cpu"):
        if not (len(low) == len(high) == len(shape) >= 1):
            raise ValueError(f"low, high and grid must have one entry per state dimension; got {len(low)}, "
                             f"{len(high)} and {len(shape)} entries")
        if any(h <= lo for lo, h in zip(low, high, strict=True)) or any(int(s) < 1 for s in shape):
            raise ValueError(f"the grid needs high > low and at least 1 cell per dimension; got low {list(low)}, "
                             f"high {list(high)}, grid {list(shape)}")
        self.device = torch.device(device)
        self.low = torch.tensor([float(v) for v in low], device=self.device)
        self.high = torch.tensor([float(v) for v in high], device=self.device)
        self.shape = tuple(int(s) for s in shape)
        self.num_cells = math.prod(self.shape)
        strides = [math.prod(self.shape[i + 1:]) for i in range(len(self.shape))]
        self.strides = torch.tensor(strides, device=self.device)
        self.sizes = torch.tensor(self.shape, device=self.device)
        self.last = self.sizes - 1

    def coords(self, x: torch.Tensor) -> torch.Tensor:
        """States ``[..., D]`` -> integer cell coordinates ``[..., D]`` (clamped into the grid)."""
        unit = (x.to(self.low.dtype) - self.low) / (self.high - self.low)
        return torch.minimum((unit * self.sizes).floor().long().clamp_(min=0), self.last)

    def cell_of(self, x: torch.Tensor) -> torch.Tensor:
        """States ``[..., D]`` -> cell index ``[...]`` in ``[0, num_cells)``."""
        return (self.coords(x) * self.strides).sum(-1)

    def centers(self) -> torch.Tensor:
        """The cells' centres ``[num_cells, D]`` in state units."""
        axes = [(torch.arange(s, device=self.device) + 0.5) / s for s in self.shape]
        unit = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(self.shape))
        return self.low + unit * (self.high - self.low)


class SubmodularObjective:
    """``F`` over the set ``A`` of states of each of ``N`` envs: the interface of a user's objective.

    A subclass keeps ``A`` as tensors on ``device`` and implements :meth:`gain`, :meth:`_insert`,
    :meth:`singleton`, :meth:`reset`, :meth:`state_dict` and :meth:`load_state_dict`; the base class keeps
    ``value [N] = F(A)`` and :meth:`add`. F must be monotone (gains >= 0) and submodular (a state's gain
    never grows as ``A`` grows), with ``F(empty) = 0``. Select it with ``objective: "module:Class"``;
    the wrapper calls ``Class(num_envs, grid, device, capacity, **options)``.

    Args:
        num_envs: ``N``.
        grid: the :class:`CellGrid` over the state box (for objectives defined on cells).
        device: where the state lives.
        capacity: the most states one env adds per episode (the horizon plus the start state).
    """

    def __init__(self, num_envs: int, grid: CellGrid, device: torch.device, capacity: int):
        self.num_envs = num_envs
        self.grid = grid
        self.device = torch.device(device)
        self.capacity = capacity
        self.value = torch.zeros(num_envs, device=self.device)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x_n | A_n)`` ``[N]`` of states ``x [N, D]``; ``A`` is unchanged."""
        raise NotImplementedError

    def _insert(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        """``A_n <- A_n + {x_n}`` where ``mask [N]`` is true."""
        raise NotImplementedError

    def singleton(self, x: torch.Tensor) -> torch.Tensor:
        """``F({x_n})`` ``[N]``: the additive ("modular") reward of a state."""
        raise NotImplementedError

    def reset(self, mask: torch.Tensor) -> None:
        """``A_n <- empty`` where ``mask [N]`` is true (subclasses call this to zero :attr:`value`)."""
        self.value = torch.where(mask, 0.0, self.value)

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Add ``x [N, D]`` to ``A`` where ``mask [N]`` (default: every env); returns the gains ``[N]`` (0
        where masked out)."""
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else mask
        gain = torch.where(mask, self.gain(x), 0.0)
        self._insert(x, mask)
        self.value = self.value + gain
        return gain

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"value": self.value.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.value = state["value"].to(self.device).clone()


def weight_map(kind: str, grid: CellGrid, map_seed: int = 0, lengthscale: float = 0.15,
               features: int = 512) -> torch.Tensor:
    """Cell weights ``[num_cells]`` in ``[0, 1]`` of a weighted-coverage objective.

    * ``constant``: 1 everywhere;
    * ``bimodal``: two Gaussian bumps (std 0.1 of the box's side) centred at 0.25 and 0.75 of the box's
      diagonal, the second at 0.6 the height of the first, scaled to max 1;
    * ``gp``: a sample of a zero-mean GP with an RBF kernel of ``lengthscale`` (in units of the box's
      side), by ``features`` random Fourier features drawn from ``map_seed``, min-max scaled to [0, 1].
    """
    unit = (grid.centers() - grid.low) / (grid.high - grid.low)  # [C, D] in [0, 1]
    if kind == "constant":
        return torch.ones(grid.num_cells, device=grid.device)
    if kind == "bimodal":
        bump = [(0.25, 1.0), (0.75, 0.6)]
        w = sum(h * torch.exp(-((unit - c) ** 2).sum(-1) / (2 * 0.1**2)) for c, h in bump)
        return w / w.max()
    if kind == "gp":
        gen = torch.Generator().manual_seed(int(map_seed))
        d = unit.shape[1]
        omega = torch.randn(d, features, generator=gen) / lengthscale
        phase = torch.rand(features, generator=gen) * 2 * math.pi
        amp = torch.randn(features, generator=gen)
        f = (math.sqrt(2.0 / features) * torch.cos(unit.cpu() @ omega + phase)) @ amp
        return ((f - f.min()) / (f.max() - f.min())).to(grid.device)
    raise ValueError(f"weights must be one of constant, bimodal, gp; got {kind!r}")


class WeightedCoverage(SubmodularObjective):
    """``F(A) = sum_c w_c [some s in A lies within radius cells of c]``: a covered-cell bitmap ``[N, C]``.

    A state covers the cells whose centre is within ``radius`` cells (Euclidean, in cell units) of its
    own cell's; ``radius = 0``: its own cell only. The gain of ``s`` is the weight of the cells it covers
    that are not covered yet.

    Args:
        weights: ``constant``, ``bimodal`` or ``gp`` (see :func:`weight_map`), or a tensor ``[C]`` >= 0.
        radius: the footprint's radius in cells (>= 0).
        map_seed: the GP sample's seed (``weights: gp``).
        lengthscale: the GP's lengthscale in units of the box's side (``weights: gp``).
    """

    def __init__(self, num_envs: int, grid: CellGrid, device: torch.device, capacity: int,
                 weights: str | torch.Tensor = "constant", radius: float = 0, map_seed: int = 0,
                 lengthscale: float = 0.15):
        super().__init__(num_envs, grid, device, capacity)
        if radius < 0:
            raise ValueError(f"radius must be >= 0 cells, got {radius}")
        w = weights if isinstance(weights, torch.Tensor) else weight_map(weights, grid, map_seed, lengthscale)
        if w.shape != (grid.num_cells,) or bool((w < 0).any()):
            raise ValueError(f"weights must be {grid.num_cells} values >= 0 (one per cell)")
        self.weights = torch.cat([w.float().to(self.device), torch.zeros(1, device=self.device)])  # [C + 1]
        # footprint[c] = the cells covered from cell c, padded with the zero-weight dummy cell C
        r = int(math.floor(radius))
        axes = [torch.arange(-r, r + 1, device=self.device)] * len(grid.shape)
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(grid.shape))
        offsets = offsets[(offsets.float() ** 2).sum(-1) <= radius**2 + 1e-9]  # [K, D]
        cells = torch.arange(grid.num_cells, device=self.device)
        coords = (cells[:, None] // grid.strides) % grid.sizes  # [C, D]
        neighbours = coords[:, None, :] + offsets[None]  # [C, K, D]
        inside = ((neighbours >= 0) & (neighbours < grid.sizes)).all(-1)
        self.footprint = torch.where(inside, (neighbours * grid.strides).sum(-1), grid.num_cells)  # [C, K]
        self.covered = torch.zeros(num_envs, grid.num_cells + 1, dtype=torch.bool, device=self.device)

    def _cells(self, x: torch.Tensor) -> torch.Tensor:
        return self.footprint[self.grid.cell_of(x)]  # [N, K]

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        cells = self._cells(x)
        return (self.weights[cells] * (~self.covered.gather(1, cells)).float()).sum(-1)

    def singleton(self, x: torch.Tensor) -> torch.Tensor:
        return self.weights[self._cells(x)].sum(-1)

    def _insert(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        cells = self._cells(x)
        self.covered.scatter_(1, cells, self.covered.gather(1, cells) | mask[:, None])

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`SubmodularObjective.add` with the footprint looked up once."""
        cells = self._cells(x)
        old = self.covered.gather(1, cells)
        adding = torch.ones_like(old) if mask is None else mask[:, None].expand_as(old)
        gain = (self.weights[cells] * (adding & ~old).float()).sum(-1)
        self.covered.scatter_(1, cells, old | adding)
        self.value = self.value + gain
        return gain

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.covered &= ~mask[:, None]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | {"covered": self.covered.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        self.covered = state["covered"].to(self.device).clone()


class LogDet(SubmodularObjective):
    """GP entropy of the measured states, ``F(A) = 1/2 logdet(I + K_A / noise)`` (experiment design).

    ``K`` is the RBF kernel ``variance * exp(-|x - x'|^2 / (2 lengthscale^2))``. Per env the wrapper
    keeps the states ``X [N, H, D]`` and the lower Cholesky factor ``L [N, H, H]`` of ``K_A + noise I``,
    padded with identity rows past the ``count [N]`` states held. Gain of ``x``: with ``k = K(X, x)`` and
    ``v = L^-1 k``, ``var_A(x) = variance - |v|^2`` and ``F(x | A) = 1/2 log(1 + var_A(x) / noise)``; adding
    ``x`` appends the row ``(v, sqrt(noise + var_A(x)))`` to ``L``. Adding past ``capacity`` states
    leaves ``A`` as it is (the gain is still returned).

    Args:
        lengthscale: kernel lengthscale in state units (None: 0.1 of the box's mean side).
        noise: measurement noise variance (> 0).
        variance: kernel signal variance (> 0).
    """

    def __init__(self, num_envs: int, grid: CellGrid, device: torch.device, capacity: int,
                 lengthscale: float | None = None, noise: float = 0.01, variance: float = 1.0):
        super().__init__(num_envs, grid, device, capacity)
        self.lengthscale = float((grid.high - grid.low).mean()) * 0.1 if lengthscale is None else float(lengthscale)
        if self.lengthscale <= 0 or noise <= 0 or variance <= 0:
            raise ValueError(f"lengthscale, noise and variance must be > 0; got {self.lengthscale}, {noise}, "
                             f"{variance}")
        self.noise, self.variance = float(noise), float(variance)
        d = len(grid.shape)
        self.eye = torch.eye(capacity, device=self.device)
        self.chol = self.eye.expand(num_envs, capacity, capacity).clone()
        self.points = torch.zeros(num_envs, capacity, d, device=self.device)
        self.count = torch.zeros(num_envs, dtype=torch.int64, device=self.device)
        self.slots = torch.arange(capacity, device=self.device)

    def _solve(self, x: torch.Tensor) -> torch.Tensor:
        """``v = L^-1 K(X, x)`` ``[N, H]`` (zero past ``count``)."""
        k = self.variance * torch.exp(-((self.points - x[:, None, :]) ** 2).sum(-1) / (2 * self.lengthscale**2))
        k = torch.where(self.slots < self.count[:, None], k, 0.0)
        return torch.linalg.solve_triangular(self.chol, k[..., None], upper=False)[..., 0]

    def _posterior_var(self, v: torch.Tensor) -> torch.Tensor:
        return (self.variance - (v * v).sum(-1)).clamp_min(0.0)

    def gain(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * torch.log1p(self._posterior_var(self._solve(x.float())) / self.noise)

    def singleton(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), 0.5 * math.log1p(self.variance / self.noise), device=self.device)

    def _insert(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        self._append(x.float(), self._solve(x.float()), mask)

    def add(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """:meth:`SubmodularObjective.add` with one triangular solve."""
        x = x.float()
        v = self._solve(x)
        gain = 0.5 * torch.log1p(self._posterior_var(v) / self.noise)
        mask = torch.ones(self.num_envs, dtype=torch.bool, device=self.device) if mask is None else mask
        gain = torch.where(mask, gain, 0.0)
        self._append(x, v, mask)
        self.value = self.value + gain
        return gain

    def _append(self, x: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> None:
        """Append ``x`` with ``v = L^-1 K(X, x)`` to the factor where ``mask``."""
        diag = torch.sqrt(self.noise + self._posterior_var(v))
        slot = (self.slots == self.count[:, None]) & mask[:, None]  # [N, H]; none once full
        row = v + diag[:, None] * slot
        self.chol = torch.where(slot[:, :, None], row[:, None, :], self.chol)
        self.points = torch.where(slot[:, :, None], x[:, None, :], self.points)
        self.count = self.count + slot.any(-1).long()

    def reset(self, mask: torch.Tensor) -> None:
        super().reset(mask)
        self.chol = torch.where(mask[:, None, None], self.eye, self.chol)
        self.points = torch.where(mask[:, None, None], 0.0, self.points)
        self.count = torch.where(mask, 0, self.count)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return super().state_dict() | {"chol": self.chol.clone(), "points": self.points.clone(),
                                       "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        for key in ("chol", "points", "count"):
            setattr(self, key, state[key].to(self.device).clone())


OBJECTIVES: dict[str, type[SubmodularObjective]] = {"coverage": WeightedCoverage, "logdet": LogDet}


def make_objective(name: str, num_envs: int, grid: CellGrid, device: torch.device, capacity: int,
                   **options: Any) -> SubmodularObjective:
    """The objective ``name`` (a key of :data:`OBJECTIVES` or ``"module:Class"``) built with ``options``.
    Raises ValueError naming what is wrong (unknown name, class not a :class:`SubmodularObjective`)."""
    if name in OBJECTIVES:
        cls = OBJECTIVES[name]
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"objective '{name}' cannot be imported: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, SubmodularObjective)):
            raise ValueError(f"objective '{name}' is not a drl.wrappers.submodular.SubmodularObjective subclass")
    else:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)} or 'module:Class'; got {name!r}")
    return cls(num_envs, grid, device, capacity, **options)


def layout_of(env: VectorEnv, state_dims: Sequence[int] | None, low: Sequence[float] | None,
              high: Sequence[float] | None, grid: Sequence[int] | None) -> tuple[list[int], CellGrid]:
    """``(state_dims, CellGrid)``: the given values, the missing ones from ``env.coverage_layout`` (a dict
    with those four keys). Raises ValueError when neither gives one."""
    given = {"state_dims": state_dims, "low": low, "high": high, "grid": grid}
    layout = dict(getattr(env, "coverage_layout", None) or {})
    merged = {k: v if v is not None else layout.get(k) for k, v in given.items()}
    missing = [k for k, v in merged.items() if v is None]
    if missing:
        raise ValueError(f"set {missing} (the env has no coverage_layout giving them)")
    dims = [int(d) for d in merged["state_dims"]]
    if len(dims) != len(merged["grid"]):
        raise ValueError(f"state_dims {dims} and grid {list(merged['grid'])} must have the same length")
    return dims, CellGrid(merged["low"], merged["high"], merged["grid"], getattr(env, "device", "cpu"))


@register_wrapper("submodular")
class SubmodularReward(TorchVectorWrapper):
    """Reward = the marginal gain F(s_t+1 | A_t) of a submodular objective of the visited states (paper Eq. 2).

    The objective is the task's score: with ``score: objective`` (the default) ``info["env_reward"]`` is the
    env's own reward plus the true marginal gain of F (unscaled, also in modular mode), so the logged
    ``episode_return`` and every evaluation (the wrapper applies to evaluation envs too) report F of the
    episodes, whichever reward the agent learns from; ``score: env`` leaves the env's own reward there
    (F as a bonus on a task with a reward of its own).

    Info: ``env_reward`` (see above), ``submodular_value [N]`` (``F(A)`` of the episode so far;
    at a done step the finished episode's). Logged: ``submodular/gain`` (mean step gain) and
    ``submodular/episode_value`` (mean F of the episodes finished in the iteration).

    Args:
        objective: ``coverage``, ``logdet`` or ``"module:Class"`` (a :class:`SubmodularObjective`).
        weights, radius, map_seed, lengthscale: of ``coverage`` (see :class:`WeightedCoverage`).
        noise, variance (and lengthscale, in state units): of ``logdet`` (see :class:`LogDet`). One
            ``lengthscale`` serves both: coverage's GP weight map (in units of the box's side, default 0.15)
            and logdet's kernel (in state units, default 0.1 of the box's mean side).
        options: keyword arguments of a user's objective (instead of the ones above).
        modular: reward ``F({s_{t+1}})`` (the same F made additive, repeats counted): the baseline.
        scale: reward multiplier (the paper's Ant divides newly covered cells by 10: 0.1).
        obs_group, state_dims, low, high, grid: where the state is (default: ``env.coverage_layout``).
        capacity: most states per episode (default: the env's horizon + 1).
        score: ``objective`` or ``env``: what ``info["env_reward"]`` (the logged and evaluated score) holds.
    """

    gives_reward = True

    applies_to_eval = True  # the score of an evaluation is F (see score)

    def __init__(self, env: VectorEnv, objective: str = "coverage", weights: str = "constant",
                 radius: float = 0.0, map_seed: int = 0, lengthscale: float | None = None, noise: float = 0.01,
                 variance: float = 1.0, options: dict[str, Any] | None = None, modular: bool = False,
                 scale: float = 1.0, obs_group: str | None = None, state_dims: list[int] | None = None,
                 low: list[float] | None = None, high: list[float] | None = None, grid: list[int] | None = None,
                 capacity: int | None = None, score: str = "objective"):
        super().__init__(env)
        if score not in ("objective", "env"):
            raise ValueError(f"score must be 'objective' or 'env', got {score!r}")
        self.score = score
        self.state_dims, self.grid = layout_of(env, state_dims, low, high, grid)
        self.obs_group, self.modular, self.scale = obs_group, bool(modular), float(scale)
        if capacity is None:
            horizon = getattr(env, "horizon", None) or getattr(env, "max_episode_steps", None)
            if horizon is None:
                raise ValueError("set capacity (the env has no horizon or max_episode_steps)")
            capacity = int(horizon) + 1
        if options is None:
            options = {"coverage": {"weights": weights, "radius": radius, "map_seed": map_seed,
                                    "lengthscale": 0.15 if lengthscale is None else lengthscale},
                       "logdet": {"lengthscale": lengthscale, "noise": noise, "variance": variance}}.get(objective, {})
        self.objective = make_objective(objective, env.num_envs, self.grid, self.device, int(capacity), **options)
        self.pending = torch.zeros(env.num_envs, device=self.device)  # the start state's reward, paid at step 1
        self.pending_score = torch.zeros(env.num_envs, device=self.device)  # F({s_0}), scored at step 1
        self._ended_value = torch.zeros((), device=self.device)  # F summed over the episodes ended since metrics()
        self._ended = torch.zeros((), dtype=torch.int64, device=self.device)

    def metrics(self) -> dict[str, float]:
        """The logged means, plus ``submodular/episode_value``: mean F of the episodes ended since the last
        call (absent when none ended)."""
        out = super().metrics()
        ended = int(self._ended)
        if ended:
            out[f"{self.name}/episode_value"] = float(self._ended_value) / ended
        self._ended_value, self._ended = torch.zeros_like(self._ended_value), torch.zeros_like(self._ended)
        return out

    def states(self, obs: Obs) -> torch.Tensor:
        """The states ``[N, D]`` the objective reads from an observation of the inner env."""
        return select_group(obs, self.obs_group)[:, self.state_dims]

    def _start(self, obs: Obs, mask: torch.Tensor) -> None:
        """Empty ``A`` and add the start state where ``mask [N]``; its reward waits for the first step. Skipped
        when no env starts (one host sync: emptying ``A`` touches every cell of every env)."""
        if not bool(mask.any()):
            return
        self.objective.reset(mask)
        x = self.states(obs)
        start_score = self.objective.gain(x)  # F({s_0}): A was just emptied
        start = self.objective.singleton(x) if self.modular else start_score
        self.objective.add(x, mask)
        self.pending = torch.where(mask, start, self.pending)
        self.pending_score = torch.where(mask, start_score, self.pending_score)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        obs, info = super().reset(seed=seed, options=options)
        self._start(obs, torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return obs, info

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        x = self.states(info.get("final_obs", obs))  # the true s_{t+1}, also at episode ends
        modular = self.objective.singleton(x) if self.modular else None
        gain = self.objective.add(x)
        new = self.pending + (modular if self.modular else gain)
        score = self.pending_score + gain
        self.pending = torch.zeros_like(self.pending)
        self.pending_score = torch.zeros_like(self.pending_score)
        done = terminated | truncated
        info = dict(info, submodular_value=self.objective.value.clone())
        if self.score == "objective":
            info["env_reward"] = info.get("env_reward", reward) + score
        self._log_mean("gain", gain)
        self._ended_value = self._ended_value + (self.objective.value * done).sum()
        self._ended = self._ended + done.sum()
        self._start(obs, done)
        return obs, self._replace_reward(info, reward, self.scale * new), terminated, truncated, info

    def _episode_state(self) -> dict[str, Any]:
        return {"objective": self.objective.state_dict(), "pending": self.pending.clone(),
                "pending_score": self.pending_score.clone()}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state["objective"])
        self.pending = state["pending"].to(self.device).clone()
        self.pending_score = state["pending_score"].to(self.device).clone()


@torch.no_grad()
def greedy_rollout(env: SubmodularReward, candidates: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The greedy reference with known dynamics: each step takes the candidate action whose next state has
    the largest marginal gain (ties broken at random, from ``seed``), for one episode of every env.

    ``env`` is a :class:`SubmodularReward` whose inner env has ``peek(actions) -> next obs`` (the
    observation ``actions`` would lead to, without stepping: the coverage tasks have it) and a fixed
    ``horizon``. ``candidates``: ``[K, ...]`` actions tried in every env. Returns ``F(A_T)`` ``[N]`` of
    the episode (the same number SubPO's episodes are scored by).
    """
    gen = torch.Generator(device=env.device).manual_seed(seed)
    env.reset(seed=seed)
    n = env.num_envs
    base = env.unwrapped
    value = torch.zeros(n, device=env.device)
    done_once = torch.zeros(n, dtype=torch.bool, device=env.device)
    for _ in range(int(base.horizon)):
        gains = torch.stack([env.objective.gain(env.states(base.peek(a.expand(n, *a.shape).to(env.device))))
                             for a in candidates])  # [K, N]
        noise = torch.rand(gains.shape, generator=gen, device=env.device) * 1e-6
        best = (gains + noise).argmax(0)
        _, _, terminated, truncated, info = env.step(candidates.to(env.device)[best])
        done = terminated | truncated
        value = torch.where(done & ~done_once, info["submodular_value"], value)
        done_once |= done
    return value
