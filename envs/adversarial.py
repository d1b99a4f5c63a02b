"""Two-player adversarial MuJoCo env (RARL, Pinto et al. 2017): an adversary pushes named bodies.

:class:`AdversarialEnv` wraps a torch-contract MuJoCo env (gymnasium's CPU MuJoCo v5 envs through
:class:`envs.core.GymnasiumVecEnv` with ``"sync"`` vectorization, or an MJWarp env of
:mod:`envs.mjwarp`) and adds a second player. Its action is the protagonist's action followed by
the adversary's (``single_action_space`` is ``Tuple((protagonist_action_space,
adversary_action_space))``; :meth:`AdversarialEnv.step` takes the two parts concatenated, or as a tuple)::

    action [N, P + A] = [protagonist (P = the env's action size) | adversary (A = B * len(axes))]
    adversary part [N, B * len(axes)]: body-major, e.g. HalfCheetah (axes xz):
        torso x, torso z, bfoot x, bfoot z, ffoot x, ffoot z

An adversary action ``a`` in ``[-1, 1]`` (clipped) becomes the force ``F = max_force * adv_fraction * a``
(newtons, world frame, at each body's centre of mass), written into MuJoCo's ``xfrc_applied`` before
the step, held through every frame-skip substep and zeroed after it: each force acts for exactly one
env step. The game is zero-sum: ``info["adversary_reward"] = -reward`` ``[N]``; ``info["adversary_force"]``
``[N, B, 6]`` is what was applied (force then torque; zero with the adversary switched off).

With ``active = False`` the adversary's part of the action is ignored (no force): the plain env
with the two-player action layout, which is how RARL is evaluated without its adversary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorEnv, VectorWrapper
from gymnasium.vector.utils import batch_space

from envs.core import GymnasiumVecEnv, Obs

__all__ = ["AdversarialEnv", "PAPER_ADVERSARY", "DEFAULT_MAX_FORCE", "task_name", "mujoco_body_names", "mujoco_backend"]

DEFAULT_MAX_FORCE = 5.0  # RARL's force bound before adv_fraction (PAPERS.md: bounded by 5.0 * adv_fraction)
# the paper's adversary per task: (bodies, force axes in the world frame)
PAPER_ADVERSARY: dict[str, tuple[tuple[str, ...], str]] = {
    "InvertedPendulum": (("pole",), "xz"),
    "HalfCheetah": (("torso", "bfoot", "ffoot"), "xz"),
    "Swimmer": (("torso",), "xyz"),
    "Hopper": (("foot",), "xz"),
    "Walker2d": (("foot", "foot_left"), "xz"),
}
_AXIS = {"x": 0, "y": 1, "z": 2}


def task_name(env: VectorEnv) -> str:
    """The MuJoCo task of a torch-contract env: ``"Hopper"`` for ``Hopper-v5`` and ``drl/Hopper-v0``."""
    base = env.unwrapped
    if isinstance(base, GymnasiumVecEnv):
        return base.env_id.split(":")[-1].split("/")[-1].split("-v")[0]
    return type(base).__name__


def mujoco_backend(env: VectorEnv) -> tuple[str, Any, list[Any]]:
    """``(kind, mujoco model, per-env gymnasium envs)``: kind ``"cpu"`` (gymnasium MuJoCo through the
    adapter; its ``unwrapped`` sub-envs, each with its own ``model``/``data``) or ``"warp"`` (MJWarp)."""
    from envs.mjwarp.core import MjWarpEnv

    base = env.unwrapped
    if isinstance(base, MjWarpEnv):
        return "warp", base.mj_model, []
    if isinstance(base, GymnasiumVecEnv):
        if base.env is not None:
            raise ValueError("reaching each MuJoCo env's model and data needs env.vectorization 'sync', not "
                             "'async'")
        subs = [e.unwrapped for e in base.envs]
        if not all(hasattr(e, "data") and hasattr(e, "model") for e in subs):
            raise ValueError(f"env '{base.env_id}' is not a gymnasium MuJoCo env (no model/data to push)")
        return "cpu", subs[0].model, subs
    raise ValueError(f"this needs a MuJoCo env (gymnasium's MuJoCo v5 or drl's MJWarp envs), "
                     f"got {type(base).__name__}")


def mujoco_body_names(model: Any) -> list[str]:
    """Every body name of a MuJoCo model, in index order (``world`` first)."""
    import mujoco

    return [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, i) or f"<body {i}>" for i in range(model.nbody)]


class AdversarialEnv(VectorWrapper):
    """A MuJoCo torch-contract env as a two-player zero-sum game (see the module docstring).

    Args:
        env: the env (``GymnasiumVecEnv`` "sync" over a gymnasium MuJoCo env, or an MJWarp env).
        bodies: the bodies the adversary pushes; None: the paper's for this task (:data:`PAPER_ADVERSARY`).
        axes: world axes of each body's force (``"xz"``: 2-D in the sagittal plane); None: the paper's.
        adv_fraction: the force bound as a fraction of ``max_force``: ``|F_i| <= max_force * adv_fraction``.
        max_force: newtons.
        active: the adversary's forces are applied (False: its action part is ignored).

    Raises:
        ValueError: not a MuJoCo env, async vectorization, a non-Box protagonist action space, a bad
            bound or axis, no paper default for this task and no ``bodies``, or a body the model
            lacks (the message lists the model's bodies).
    """

    def __init__(self, env: VectorEnv, bodies: Sequence[str] | None = None, axes: str | None = None,
                 adv_fraction: float = 1.0, max_force: float = DEFAULT_MAX_FORCE, active: bool = True):
        super().__init__(env)
        self.kind, model, self._subs = mujoco_backend(env)
        task = task_name(env)
        default = PAPER_ADVERSARY.get(task)
        if bodies is None:
            if default is None:
                raise ValueError(f"no paper default adversary bodies for task '{task}' (known: "
                                 f"{sorted(PAPER_ADVERSARY)}); name them (its bodies: {mujoco_body_names(model)})")
            bodies = default[0]
        if axes is None:
            axes = default[1] if default is not None else "xz"
        if isinstance(bodies, str):
            raise ValueError(f"bodies must be a list of body names, got the string {bodies!r}")
        self.bodies = tuple(bodies)
        names = mujoco_body_names(model)
        missing = [b for b in self.bodies if b not in names]
        if missing or not self.bodies:
            raise ValueError(f"adversary bodies {missing or '[]'} are not bodies of the {task} model; "
                             f"its bodies: {names}")
        if not axes or any(a not in _AXIS for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct letters of 'xyz', got {axes!r}")
        self.axes = axes
        if not (adv_fraction >= 0 and np.isfinite(adv_fraction)) or not (max_force > 0 and np.isfinite(max_force)):
            raise ValueError(f"need adv_fraction >= 0 and max_force > 0, got {adv_fraction} and {max_force}")
        self.bound = float(max_force * adv_fraction)  # newtons, per force component
        self.active = active
        self._body_ids = [names.index(b) for b in self.bodies]
        self._axis_ids = torch.as_tensor([_AXIS[a] for a in axes])
        protagonist = env.single_action_space
        if not isinstance(protagonist, gym.spaces.Box):
            raise ValueError(f"the protagonist's action space must be a Box, got {protagonist}")
        self.protagonist_action_space = protagonist
        size = len(self.bodies) * len(axes)
        self.adversary_action_space = gym.spaces.Box(-1.0, 1.0, (size,), np.float32)
        self.protagonist_size = int(np.prod(protagonist.shape))
        # a Tuple names the two players' parts; step takes them concatenated (or as a tuple)
        self.single_action_space = gym.spaces.Tuple((protagonist, self.adversary_action_space))
        self.action_space = batch_space(self.single_action_space, env.num_envs)
        self.device = env.device

    # --- env state capability: the wrapper holds none of its own ------------------------------
    @property
    def supports_state_dict(self) -> bool:
        return bool(getattr(self.env, "supports_state_dict", False))

    def state_dict(self) -> dict[str, Any]:
        return self.env.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.load_state_dict(state)

    # --- the step -------------------------------------------------------------------------------
    def forces(self, adversary_action: torch.Tensor) -> torch.Tensor:
        """``adversary_action [N, B * len(axes)] -> xfrc [N, B, 6]``: ``bound * clip(a, -1, 1)`` on the
        chosen force axes, zero elsewhere (no torque); all zero when not :attr:`active`."""
        n = adversary_action.shape[0]
        xfrc = torch.zeros(n, len(self.bodies), 6, dtype=torch.float32, device=adversary_action.device)
        if self.active:
            push = adversary_action.to(torch.float32).clamp(-1.0, 1.0).view(n, len(self.bodies), len(self.axes))
            xfrc[:, :, self._axis_ids.to(xfrc.device)] = self.bound * push
        return xfrc

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step with ``actions [N, P + A]`` (protagonist, then adversary); the force acts for this step only."""
        if isinstance(actions, (tuple, list)):
            actions = torch.cat([torch.as_tensor(a, device=self.device).reshape(self.num_envs, -1) for a in actions], 1)
        actions = torch.as_tensor(actions, device=self.device)
        protagonist = actions[:, : self.protagonist_size].reshape(self.num_envs, *self.protagonist_action_space.shape)
        xfrc = self.forces(actions[:, self.protagonist_size:])
        if self.kind == "warp":
            if self.active:  # MjWarpEnv.simulate zeroes xfrc_applied after the substeps
                self.env.unwrapped.set_external_force(self.bodies, xfrc)
            out = self.env.step(protagonist)
        else:
            out = self._step_cpu(protagonist, xfrc)
        obs, reward, terminated, truncated, info = out
        info["adversary_reward"] = -reward
        info["adversary_force"] = xfrc
        return obs, reward, terminated, truncated, info

    def _step_cpu(self, protagonist: torch.Tensor, xfrc: torch.Tensor) -> tuple:
        """Write each sub-env's ``data.xfrc_applied`` rows, step, zero them (also when the step raises)."""
        ids = self._body_ids
        if not self.active:
            return self.env.step(protagonist)
        forces = xfrc.detach().cpu().numpy().astype(np.float64)
        for i, sub in enumerate(self._subs):
            sub.data.xfrc_applied[ids] = forces[i]
        try:
            return self.env.step(protagonist)
        finally:
            for sub in self._subs:
                sub.data.xfrc_applied[ids] = 0.0
