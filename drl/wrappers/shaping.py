"""Potential-based reward shaping (Ng, Harada, Russell 1999): ``r + gamma * Phi(s') - Phi(s)``.

Adding ``F(s, s') = gamma * Phi(s') - Phi(s)`` to every reward leaves the optimal policy of the MDP unchanged
for any potential ``Phi`` (Ng et al. 1999, Theorem 1): the shaped action values are ``Q(s, a) - Phi(s)``, so
their argmax over actions is the same. Along an episode ``s_0 .. s_T`` the shaping telescopes:
``sum_t gamma^t F_t = gamma^T Phi(s_T) - Phi(s_0)``. Two boundary rules keep the theorem true for drl's
SAME_STEP autoreset envs:

* terminated: the absorbing terminal state has ``Phi = 0`` (otherwise a constant potential would add a
  reward for ending, and the optimal policy could change);
* truncated: the episode was cut, not ended, so ``Phi(s')`` is taken at the true last obs
  ``info["final_obs"]`` (the agent bootstraps from the same state);
* no leakage across the reset: at a done step the returned ``obs`` is already the next episode's first obs,
  and the next transition's ``Phi(s)`` is taken there.

Potentials are chosen by name from :data:`POTENTIALS` or given as ``"module:function"``; each is a function
``(obs [N, D], **potential_kwargs) -> [N]``. Config::

    wrappers: [{name: potential_shaping, potential: mountaincar_energy, potential_kwargs: {scale: 10.0}}]
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from drl.wrappers import shaping_kernels
from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group

__all__ = ["POTENTIALS", "register_potential", "resolve_function", "PotentialShaping", "linear_potential",
           "distance_to_goal", "mountaincar_energy", "cartpole_upright", "zero_obs"]

Potential = Callable[..., torch.Tensor]
POTENTIALS: dict[str, Potential] = {}


def register_potential(name: str) -> Callable[[Potential], Potential]:
    """Decorator: make ``fn(obs [N, D], **kwargs) -> [N]`` selectable as ``potential: NAME``."""

    def add(fn: Potential) -> Potential:
        POTENTIALS[name] = fn
        return fn

    return add


def resolve_function(spec: str | Callable[..., Any], registry: dict[str, Callable[..., Any]], kind: str,
                     kwargs: dict[str, Any] | None = None) -> Callable[..., Any]:
    """``spec`` (a name in ``registry``, ``"module:function"``, or a callable) bound to ``kwargs``.

    Raises ValueError with one sentence naming the valid names when ``spec`` is neither.
    """
    if callable(spec):
        fn = spec
    elif isinstance(spec, str) and spec in registry:
        fn = registry[spec]
    elif isinstance(spec, str) and ":" in spec:
        module, _, attr = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"{kind} '{spec}' could not be imported ({err})") from None
        if not callable(fn):
            raise ValueError(f"{kind} '{spec}' is not callable")
    else:
        raise ValueError(f"unknown {kind} {spec!r}; valid: {sorted(registry)} or 'module:function'")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValueError(f"{kind} kwargs must be a mapping, got {kwargs!r}")
    return partial(fn, **kwargs) if kwargs else fn


# --- potentials ---------------------------------------------------------------------------------
@register_potential("linear")
def linear_potential(obs: torch.Tensor, weights: list[float], bias: float = 0.0) -> torch.Tensor:
    """``weights . obs + bias``: ``obs [N, D]``, ``weights`` D floats -> ``[N]``."""
    if obs.dtype is torch.float32 and isinstance(weights, (list, tuple)):  # the per-step case: made once
        w, b = _linear_constants(tuple(weights), float(bias), obs.device)
    else:
        w, b = torch.as_tensor(weights, dtype=obs.dtype, device=obs.device), bias
    if w.shape != obs.shape[1:]:
        raise ValueError(f"linear potential: weights has {w.numel()} entries, the observation {obs.shape[1]}")
    return obs @ w + b


_LINEAR: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}


def _linear_constants(weights: tuple[Any, ...], bias: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 ``weights [D]`` and ``bias []`` of :func:`linear_potential` on ``device``, made once: a 0-dim
    float32 tensor adds what the Python float adds (``float32(bias)``), without wrapping it at every step."""
    key = (weights, bias, device)
    found = _LINEAR.get(key)
    if found is None:
        if len(_LINEAR) >= 64:
            _LINEAR.clear()
        found = _LINEAR[key] = (torch.as_tensor(weights, dtype=torch.float32, device=device),
                                torch.tensor(bias, dtype=torch.float32, device=device))
    return found


@register_potential("distance_to_goal")
def distance_to_goal(obs: torch.Tensor, goal: list[float], dims: list[int] | None = None,
                     scale: float = 1.0) -> torch.Tensor:
    """``-scale * ||obs[:, dims] - goal||_2`` (``dims``: the obs entries that hold the position, default the
    first ``len(goal)``): higher nearer the goal. ``obs [N, D]`` -> ``[N]``."""
    g = torch.as_tensor(goal, dtype=obs.dtype, device=obs.device)
    idx = list(range(g.numel())) if dims is None else list(dims)
    if len(idx) != g.numel():
        raise ValueError(f"distance_to_goal: {len(idx)} dims for a goal of {g.numel()} entries")
    return -scale * (obs[:, idx] - g).norm(dim=-1)


@register_potential("mountaincar_energy")
def mountaincar_energy(obs: torch.Tensor, scale: float = 1.0, gravity: float = 0.0025) -> torch.Tensor:
    """Mechanical energy of (drl/)MountainCarContinuous, ``obs [N, 2]`` = (position x, velocity v) -> ``[N]``.

    The hill pulls with ``-gravity * cos(3x)`` per step, i.e. the potential energy ``gravity / 3 * sin(3x)``;
    with the kinetic ``v^2 / 2`` the energy is scaled so the valley at rest is 0 and the goal (x = 0.45) at
    rest is ``scale``. Rocking the car raises it, so shaping by it rewards building momentum.
    """
    x, v = obs[:, 0], obs[:, 1]
    energy = gravity / 3.0 * torch.sin(3.0 * x) + 0.5 * v.square()
    low, high = -gravity / 3.0, gravity / 3.0 * math.sin(3.0 * 0.45)
    return scale * (energy - low) / (high - low)


@register_potential("cartpole_upright")
def cartpole_upright(obs: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``-scale * ((theta / 12 deg)^2 + (x / 2.4)^2)`` of (drl/)CartPole ``obs [N, 4]`` -> ``[N]``: 0 with the
    pole upright over the centre, -2 * scale at both failure limits."""
    return -scale * ((obs[:, 2] / (12 * math.pi / 180)).square() + (obs[:, 0] / 2.4).square())


def zero_obs(env: VectorEnv, n: int, device: torch.device) -> Obs:
    """A zero obs ``[n, ...]`` of ``env``'s observation space (a dict of groups for a Dict space): to size
    networks and check user functions when a wrapper is built."""
    space = env.single_observation_space
    if hasattr(space, "spaces"):
        return {k: torch.zeros(n, *s.shape, device=device) for k, s in space.spaces.items()}
    return torch.zeros(n, *space.shape, device=device)


# --- the wrapper --------------------------------------------------------------------------------
@register_wrapper("potential_shaping")
class PotentialShaping(TorchVectorWrapper):
    """Reward ``r + gamma * Phi(s') - Phi(s)`` (Ng et al. 1999, eq. 2 with ``F = gamma Phi(s') - Phi(s)``).

    Args:
        env: the vector env (torch tensors ``[N, ...]`` on ``env.device``).
        potential: a name in :data:`POTENTIALS` or ``"module:function"``; called as
            ``fn(obs [N, D], **potential_kwargs) -> [N]`` on the obs group ``group`` flattened to ``[N, D]``.
        potential_kwargs: keyword arguments of the potential (e.g. ``{weights: [...]}`` for ``linear``).
        gamma: the discount of the shaping term; must equal the agent's for the invariance theorem (it is
            filled with the agent's ``gamma`` when the config entry leaves it out).
        group: obs group the potential reads (None: the obs, or its ``"policy"`` group).

    ``info["shaping"]`` holds the added term ``[N]``; its mean is logged as ``potential_shaping/shaping``.
    Per-episode state: ``Phi(s)`` of each env's current obs ``[N]``.
    Raises ValueError for an unknown potential or gamma outside [0, 1].
    """

    gives_reward = True

    def __init__(self, env: VectorEnv, potential: str, potential_kwargs: dict[str, Any] | None = None,
                 gamma: float = 0.99, group: str | None = None):
        super().__init__(env)
        if not 0.0 <= float(gamma) <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        self.potential = resolve_function(potential, POTENTIALS, "potential", potential_kwargs)
        self.gamma = float(gamma)
        self.group = group
        self._phi_shape = (self.num_envs,)
        # the step's constants as 0-dim float32 tensors: the same products as the Python floats, without
        # wrapping a scalar at every step
        self._zero = torch.zeros((), device=self.device)
        self._gamma = torch.tensor(self.gamma, dtype=torch.float32, device=self.device)
        self._kernel = shaping_kernels.numba is not None and self.device.type == "cpu"  # see _step_kernel
        sample = zero_obs(env, self.num_envs, self.device)
        try:
            self.phi = self._phi(sample)  # checks the potential now; [N]
        except (IndexError, RuntimeError) as err:
            size = select_group(sample, group).shape[1]
            raise ValueError(f"potential '{potential}' does not fit obs group '{group or 'policy'}' ({size} values "
                             f"per step): {err}; choose another potential or set group") from None

    def _phi(self, obs: Obs) -> torch.Tensor:
        x = select_group(obs, self.group)
        value = self.potential(x if x.dtype is torch.float32 else x.float())
        if not isinstance(value, torch.Tensor) or value.shape != self._phi_shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"the potential must return a tensor [{self.num_envs}], got {shape}")
        return value

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        obs, info = super().reset(seed=seed, options=options)
        self.phi = self._phi(obs)
        return obs, info

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs, reward, terminated, truncated, info = self._inner_step(actions)
        phi_obs = self._phi(obs)  # the next transition's Phi(s): at a done step, the new episode's first obs
        final = info.get("final_obs")
        # Phi of the true s' (the final obs when done; the same tensor as obs: the same Phi)
        phi_next = phi_obs if final is None or final is obs else self._phi(final)
        phi = self.phi
        if (self._kernel and phi_next.dtype is phi.dtype is reward.dtype is torch.float32 and phi_next.is_cpu
                and phi.is_cpu and reward.is_cpu and terminated.dtype is torch.bool and reward.dim() == 1
                and not (phi_next.requires_grad or phi.requires_grad or reward.requires_grad)):
            return self._step_kernel(obs, reward, terminated, truncated, info, phi_obs, phi_next)
        if phi_next.dtype is torch.float32 and phi.dtype is torch.float32:  # the ops below, fewer tensors
            shaping = torch.where(terminated, self._zero, phi_next).mul_(self._gamma).sub_(phi)
        else:
            phi_next = torch.where(terminated, 0.0, phi_next)  # absorbing terminal state: Phi = 0
            shaping = self.gamma * phi_next - self.phi
        self.phi = phi_obs
        info["shaping"] = shaping
        self._log_mean("shaping", shaping)
        new_reward = reward + (shaping if shaping.dtype is reward.dtype else shaping.to(reward.dtype))
        return obs, self._replace_reward(info, reward, new_reward), terminated, truncated, info

    def _step_kernel(self, obs: Obs, reward: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                     info: dict, phi_obs: torch.Tensor, phi_next: torch.Tensor) -> tuple:
        """The rest of :meth:`step` in one numba call (CPU float32): the same values, bitwise."""
        num = reward.shape[0]
        shaping, new_reward = np.empty(num, np.float32), np.empty(num, np.float32)
        shaping_kernels.shaping_step(phi_next.numpy(), self.phi.numpy(), terminated.numpy(), reward.numpy(),
                                     self.gamma, shaping, new_reward)
        self.phi = phi_obs
        shaping_t = torch.from_numpy(shaping)
        info["shaping"] = shaping_t
        self._log_mean("shaping", shaping_t)
        return obs, self._replace_reward(info, reward, torch.from_numpy(new_reward)), terminated, truncated, info

    def _episode_state(self) -> dict[str, Any]:
        return {"phi": self.phi.clone()}

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        self.phi = state["phi"].clone().to(self.device)
