"""Per-env scaling of MuJoCo body masses and geom friction (model-error robustness tests, RARL Sec. 5).

:class:`ModelScaler` scales, per env of a torch-contract MuJoCo env, the masses of chosen bodies (their
inertia by the same factor: a uniformly denser or lighter body) and the friction of every geom (all
three coefficients: sliding, torsional, rolling), then :meth:`ModelScaler.restore` puts the nominal
values back. Backends:

* gymnasium's CPU MuJoCo through :class:`envs.core.GymnasiumVecEnv` (``"sync"``): each sub-env owns its
  ``MjModel``, so per-env values are written there (then ``mj_setConst`` for the derived constants);
* MJWarp: one batched model built with ``per_env_model_fields=("body_mass", "geom_friction")``
  (mujoco_warp keeps one copy of those per world), written through the env's views (then
  ``mujoco_warp.set_const``): a whole sweep is one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from envs.adversarial import mujoco_backend, mujoco_body_names

__all__ = ["ModelScaler", "PER_ENV_FIELDS"]

PER_ENV_FIELDS = ("body_mass", "geom_friction")  # what an MJWarp env needs per world for a sweep


class ModelScaler:
    """Scale masses of ``bodies`` (None: every body but the world) and all geom friction, per env.

    Raises:
        ValueError: not a MuJoCo env, async vectorization, an MJWarp env built without
            :data:`PER_ENV_FIELDS` per env, or a body name the model lacks (the message lists its bodies).
    """

    def __init__(self, env: VectorEnv, bodies: Sequence[str] | None = None):
        self.env = env
        self.kind, model, self._subs = mujoco_backend(env)
        names = mujoco_body_names(model)
        if bodies is None:
            self.bodies = tuple(names[1:])
        else:
            missing = [b for b in bodies if b not in names]
            if missing or not bodies:
                raise ValueError(f"bodies {missing or '[]'} are not bodies of the model; its bodies: {names}")
            self.bodies = tuple(bodies)
        self.body_ids = [names.index(b) for b in self.bodies]
        self.num_envs = env.num_envs
        if self.kind == "cpu":
            self._nominal = [{k: getattr(s.model, k).copy() for k in ("body_mass", "body_inertia", "geom_friction")}
                             for s in self._subs]
        else:
            base = env.unwrapped
            lacking = [f for f in PER_ENV_FIELDS if f not in base.per_env_model_fields]
            if lacking:
                raise ValueError(f"build the MJWarp env with per_env_model_fields={PER_ENV_FIELDS} "
                                 f"(it lacks {lacking})")
            self._nominal = {k: base.model_view(k).clone() for k in ("body_mass", "body_inertia", "geom_friction")}

    def apply(self, mass_scale: torch.Tensor | Sequence[float], friction_scale: torch.Tensor | Sequence[float]) -> None:
        """Env ``i`` gets ``mass_scale[i]`` x the nominal mass and inertia of the chosen bodies and
        ``friction_scale[i]`` x the nominal friction of every geom (``[N]`` each, from the nominal values:
        calls do not compound)."""
        mass = torch.as_tensor(mass_scale, dtype=torch.float64).reshape(-1)
        friction = torch.as_tensor(friction_scale, dtype=torch.float64).reshape(-1)
        if mass.numel() != self.num_envs or friction.numel() != self.num_envs:
            raise ValueError(f"need one mass and one friction scale per env ({self.num_envs}), got "
                             f"{mass.numel()} and {friction.numel()}")
        if self.kind == "cpu":
            self._apply_cpu(mass.numpy(), friction.numpy())
        else:
            self._apply_warp(mass, friction)

    def restore(self) -> None:
        """The nominal model in every env."""
        if self.kind == "cpu":
            for sub, nominal in zip(self._subs, self._nominal, strict=True):
                for key, value in nominal.items():
                    getattr(sub.model, key)[:] = value
                self._set_const(sub)
        else:
            base = self.env.unwrapped
            for key, value in self._nominal.items():
                base.model_view(key).copy_(value)
            base.recompute_model_constants()

    @staticmethod
    def _set_const(sub: Any) -> None:
        import mujoco

        mujoco.mj_setConst(sub.model, sub.data)

    def _apply_cpu(self, mass: np.ndarray, friction: np.ndarray) -> None:
        ids = self.body_ids
        for i, (sub, nominal) in enumerate(zip(self._subs, self._nominal, strict=True)):
            sub.model.body_mass[ids] = nominal["body_mass"][ids] * mass[i]
            sub.model.body_inertia[ids] = nominal["body_inertia"][ids] * mass[i]
            sub.model.geom_friction[:] = nominal["geom_friction"] * friction[i]
            self._set_const(sub)

    def _apply_warp(self, mass: torch.Tensor, friction: torch.Tensor) -> None:
        base = self.env.unwrapped
        nominal = self._nominal
        device = nominal["body_mass"].device
        scale = torch.ones_like(nominal["body_mass"][:1]).repeat(self.num_envs, 1)  # [N, nbody]
        scale[:, self.body_ids] = mass.to(device, torch.float32).view(-1, 1)
        base.model_view("body_mass").copy_(nominal["body_mass"] * scale)
        base.model_view("body_inertia").copy_(nominal["body_inertia"] * scale.unsqueeze(-1))
        friction = friction.to(device, torch.float32).view(-1, 1, 1)
        base.model_view("geom_friction").copy_(nominal["geom_friction"] * friction)
        base.recompute_model_constants()
