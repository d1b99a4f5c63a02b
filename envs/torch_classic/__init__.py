"""Batched torch versions of gymnasium's classic-control tasks.

Each env steps ``num_envs`` copies with one set of tensor ops on one device and follows the dynamics,
rewards, termination and time limits of its gymnasium counterpart:

* ``drl/CartPole-v0``: ``CartPole-v1`` (500 steps)
* ``drl/Pendulum-v0``: ``Pendulum-v1`` (200 steps)
* ``drl/MountainCarContinuous-v0``: ``MountainCarContinuous-v0`` (999 steps)
* ``drl/Acrobot-v0``: ``Acrobot-v1`` (500 steps)

Physical parameters are scalars equal to gymnasium's, or per-env ``[N]`` tensors redrawn at each
env's reset when domain randomisation asks for it::

    CartPole(4096, device="cuda", randomize={"masspole": (0.05, 0.5), "length": (0.25, 1.0)})
"""

from __future__ import annotations

import gymnasium as gym
import torch

from envs.core import TorchVecEnv
from envs.torch_classic.render import ClassicRenderMixin

__all__ = ["ClassicControlEnv", "CartPole", "Pendulum", "MountainCarContinuous", "Acrobot"]


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float64`` or ``"float64"`` -> ``torch.float64`` (YAML configs carry strings)."""
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a torch floating-point dtype (e.g. torch.float32), got {dtype!r}")
    return dtype


class ClassicControlEnv(ClassicRenderMixin, TorchVecEnv):
    """A :class:`TorchVecEnv` with a physics ``dtype`` and (optionally randomised) physical parameters.

    ``params`` maps each parameter name to gymnasium's value; the subclass's physics reads them as
    attributes (``self.masspole``). A name in ``randomize`` becomes a per-env tensor ``[N]`` in
    ``dtype`` drawn uniformly from ``(lo, hi)`` whenever that env resets; every other parameter stays a
    Python float, so the default env costs no extra tensor ops.

    Subclasses keep their physical state in ``self.state`` ``[N, state_dim]`` (``dtype``) and never
    modify it in place (each step builds a new tensor), so observations handed out earlier never change.
    ``state_dict()`` holds ``self.state`` and the randomised parameters (the env state capability).

    ``render(index=0)`` draws one env of the batch as ``uint8 [H, W, 3]`` with gymnasium's renderer
    (:mod:`envs.torch_classic.render`).
    """

    state: torch.Tensor

    def __init__(
        self,
        num_envs: int,
        single_observation_space: gym.Space,
        single_action_space: gym.Space,
        max_episode_steps: int | None,
        device: str | torch.device,
        dtype: torch.dtype | str,
        params: dict[str, float],
        randomize: dict[str, tuple[float, float]] | None,
    ):
        super().__init__(num_envs, single_observation_space, single_action_space, max_episode_steps, device)
        self.dtype = resolve_dtype(dtype)
        self.params = dict(params)
        self.randomize = _check_randomize(randomize, self.params)
        for name, value in self.params.items():
            if name in self.randomize:
                value = torch.full((num_envs,), float(value), dtype=self.dtype, device=self.device)
            setattr(self, name, value)

    def _resample_params(self, mask: torch.Tensor) -> None:
        """Draw fresh randomised parameters for the envs where ``mask[N]`` is true (no host sync)."""
        for name, (low, high) in self.randomize.items():
            fresh = self._uniform(low, high, (self.num_envs,)).to(self.dtype)
            setattr(self, name, torch.where(mask, fresh, getattr(self, name)))

    def _reset_state_where(self, mask: torch.Tensor, fresh: torch.Tensor) -> None:
        """``self.state`` rows where ``mask[N]`` is true become ``fresh[N, state_dim]``."""
        self._resample_params(mask)
        self.state = torch.where(mask.unsqueeze(-1), fresh.to(self.dtype), self.state)

    def _set_state(self, state: torch.Tensor) -> None:
        expected = (self.num_envs, self.state.shape[-1])
        if tuple(state.shape) != expected:
            raise ValueError(f"{type(self).__name__}: options['state'] must have shape {expected}, got "
                             f"{tuple(state.shape)}")
        # A copy: the caller may keep modifying its tensor.
        self.state = state.to(device=self.device, dtype=self.dtype, copy=True)

    def _get_state(self) -> dict[str, torch.Tensor]:
        """The physical state ``[N, state_dim]`` and every randomised parameter ``[N]``."""
        return {"state": self.state, **{f"param/{name}": getattr(self, name) for name in self.randomize}}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        # copies: the caller keeps its tensors, and the env never shares memory with a checkpoint
        self.state = self._check_state_shape("state", state["state"], self.state).clone()
        for name in self.randomize:
            key = f"param/{name}"
            setattr(self, name, self._check_state_shape(key, state[key], getattr(self, name)).clone())

    def _flat_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Actions ``[N]`` or ``[N, 1]`` -> ``[N]`` in the physics dtype."""
        return actions.reshape(self.num_envs).to(self.dtype)


def _check_randomize(
    randomize: dict[str, tuple[float, float]] | None, params: dict[str, float]
) -> dict[str, tuple[float, float]]:
    """Validate ``{name: (lo, hi)}``: known names, two finite numbers, ``lo <= hi``."""
    checked: dict[str, tuple[float, float]] = {}
    for name, bounds in (randomize or {}).items():
        if name not in params:
            raise ValueError(f"cannot randomize unknown parameter '{name}'; valid names: {', '.join(params)}")
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError) as err:
            raise ValueError(f"randomize['{name}'] must be a pair (lo, hi) of numbers, got {bounds!r}") from err
        if not low <= high:
            raise ValueError(f"randomize['{name}'] needs lo <= hi, got ({low}, {high})")
        checked[name] = (low, high)
    return checked


# The env modules import ClassicControlEnv from this package, so they are imported after it exists.
from envs.torch_classic.acrobot import Acrobot  # noqa: E402
from envs.torch_classic.cartpole import CartPole  # noqa: E402
from envs.torch_classic.mountain_car import MountainCarContinuous  # noqa: E402
from envs.torch_classic.pendulum import Pendulum  # noqa: E402
