"""Batched MuJoCo on MuJoCo Warp: one ``mujoco_warp`` Data with ``nworld = num_envs`` behind the torch contract.

Every state array of the warp ``Data`` (``qpos [N, nq]``, ``qvel [N, nv]``, ``ctrl [N, nu]``,
``xfrc_applied [N, nbody, 6]``, ...) is exposed as a zero-copy torch view (``wp.to_torch``), so
observations, rewards and resets are plain torch ops on the same memory the physics writes. Warp
runs in float32 on its ``cpu`` device or on ``cuda:k`` (chosen from the torch device).

The frame-skip loop (``frame_skip`` calls of ``mujoco_warp.step``, plus ``rne_postconstraint`` when
contact forces are wanted) is captured once into a warp graph and replayed every env step. Warp
captures graphs on CUDA (a CUDA graph) and, since warp 1.19, on the CPU too (a recorded launch
list replayed in C++); on CPU this removes the Python launch overhead, which dominates at small
``num_envs`` (about 10x faster for the locomotion models). If capture fails the env falls back to
eager launches with a warning.

Per-env model parameters (domain randomisation): mujoco_warp gives every ``Model`` array whose
spec has a leading ``*`` axis either one shared copy or one copy per world, and its kernels read
``field[worldid % len]``. Fields named in ``per_env_model_fields`` get one copy per env; write them
through :meth:`MjWarpEnv.model_view`. What is tested here: ``body_mass`` (with inertia scaled
along, :meth:`MjWarpEnv.set_body_mass`) and ``geom_friction`` (:meth:`MjWarpEnv.set_geom_friction`).
Other per-world fields (``dof_damping``, ``geom_solref``, ``actuator_gainprm``, ``body_ipos``, ...)
work the same way; those that feed derived constants (masses, inertias, armature, ``geom_size``,
``qpos0``) need :meth:`MjWarpEnv.recompute_model_constants` (``mujoco_warp.set_const``) after
writing. Action clipping always uses the model's nominal ``ctrlrange``. Sizes (``nbody``,
``ngeom``, ...) and anything not batched by mujoco_warp cannot differ between envs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import MissingDependencyError, Obs, TorchVecEnv
from envs.mjwarp.render import MjRenderMixin

try:  # optional backend: the module imports without it, constructing an env raises
    import mujoco
    import mujoco_warp as mjw
    import warp as wp
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    mujoco = mjw = wp = None

__all__ = ["MjWarpEnv", "load_mj_model", "warp_device_for", "MASS_DEPENDENT_FIELDS", "STATE_FIELDS"]

# The Data arrays an env's future depends on: MuJoCo's integration state (mjSTATE_INTEGRATION:
# time, qpos, qvel, act, actuator history, plastic state, the solver's warm start, ctrl, applied
# forces, equality activation, mocap poses, userdata) and the sleep state; then the derived arrays
# that observations read between steps (every other derived array is recomputed by the next step's
# forward pass). Fields this mujoco_warp version lacks are skipped.
STATE_FIELDS = (
    "time", "qpos", "qvel", "act", "history", "plastic", "qacc_warmstart", "ctrl", "qfrc_applied",
    "xfrc_applied", "eq_active", "mocap_pos", "mocap_quat", "userdata", "tree_asleep",
    "cfrc_ext", "xpos", "xquat", "sensordata",
)

# Model fields that set_const derives from body masses/inertias. When masses differ per env these
# must be per env too, or every env would use world 0's derived constants (subtree mass, the
# inverse weights that scale constraint impedance, actuator_acc0).
MASS_DEPENDENT_FIELDS = (
    "body_inertia",
    "body_subtreemass",
    "body_invweight0",
    "dof_invweight0",
    "tendon_invweight0",
    "actuator_acc0",
)


def _require_backend() -> None:
    if wp is None or mjw is None or mujoco is None:
        raise MissingDependencyError("MuJoCo Warp backend", "mjwarp", "mujoco-warp")


@contextlib.contextmanager
def _quiet_warp_loading() -> Iterator[None]:
    """Hide warp's per-module "load ... (compiled/cached)" INFO lines (hundreds per model) while
    this backend builds and warms up its kernels; warnings and errors still show."""
    previous = wp.config.log_level
    wp.config.log_level = max(previous, wp.LOG_WARNING)
    try:
        yield
    finally:
        wp.config.log_level = previous


def warp_device_for(device: torch.device) -> str:
    """The warp device name for a torch device: ``cpu`` -> ``"cpu"``, ``cuda[:k]`` -> ``"cuda:k"``."""
    if device.type == "cpu":
        return "cpu"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    raise ValueError(f"MuJoCo Warp runs on cpu or cuda devices, not '{device}'")


def load_mj_model(model: str | os.PathLike | Any) -> Any:
    """A compiled ``mujoco.MjModel`` from an MJCF path, an MJCF XML string, or an ``MjModel``."""
    _require_backend()
    if isinstance(model, mujoco.MjModel):
        return model
    text = os.fspath(model)
    if text.lstrip().startswith("<"):
        return mujoco.MjModel.from_xml_string(text)
    if not os.path.exists(text):
        raise FileNotFoundError(f"MJCF file '{text}' does not exist")
    return mujoco.MjModel.from_xml_path(text)


def _batchable_model_fields() -> set[str]:
    """Names of ``mujoco_warp.Model`` array fields with a leading per-world (``*``) axis."""
    names = set()
    for field in dataclasses.fields(mjw.Model):
        shape = getattr(field.type, "shape", ())
        if shape and shape[0] == "*":
            names.add(field.name)
    return names


class MjWarpEnv(MjRenderMixin, TorchVecEnv):
    """Any MJCF model as a batched env on MuJoCo Warp (``nworld = num_envs``).

    On its own it is a generic env: obs ``[N, nq + nv]`` = (qpos, qvel), reward 0, never terminated,
    reset to ``qpos0`` and zero velocity. Tasks subclass it and override ``_initial_state``,
    ``_observe`` and ``_physics_step`` (which calls :meth:`simulate`).

    Args:
        model: MJCF file path, MJCF XML string, or a compiled ``mujoco.MjModel``.
        num_envs: number of parallel worlds ``N``.
        device: torch device; warp uses the matching device (``cpu`` or ``cuda:k``).
        frame_skip: physics steps per env step.
        max_episode_steps: truncation horizon (``None``: never truncate).
        observation_space: single-env observation space; default ``Box(nq + nv)``.
        per_env_model_fields: ``mujoco_warp.Model`` fields to hold one copy per env (domain
            randomisation), e.g. ``("body_mass", "geom_friction")``. Any field with a leading
            per-world axis works; ``body_mass``/``body_inertia`` also make the fields derived from
            them per env (see :data:`MASS_DEPENDENT_FIELDS`).
        nconmax: contacts allocated per world (mujoco_warp's default is a small heuristic).
        njmax: constraint rows allocated per world.
        compute_contact_forces: run ``rne_postconstraint`` after the frame skip so ``cfrc_ext``
            (external/contact forces per body, ``[N, nbody, 6]``) is filled, as gymnasium does.
        full_forward_on_reset: after writing a reset state run a full ``forward`` (sensors,
            contacts, accelerations) instead of kinematics only. The default (kinematics) is enough
            for observations built from qpos/qvel/body poses and costs ~1/30 of a forward.
        use_graph: capture the frame-skip loop into a warp graph (CPU and CUDA).
    """

    def __init__(
        self,
        model: str | os.PathLike | Any,
        num_envs: int,
        device: str | torch.device = "cpu",
        frame_skip: int = 1,
        max_episode_steps: int | None = None,
        observation_space: gym.Space | None = None,
        per_env_model_fields: Sequence[str] = (),
        nconmax: int | None = None,
        njmax: int | None = None,
        compute_contact_forces: bool = False,
        full_forward_on_reset: bool = False,
        use_graph: bool = True,
    ):
        _require_backend()
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        self.mj_model = load_mj_model(model)
        mjm = self.mj_model
        low, high = self._control_limits(mjm)
        action_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        if observation_space is None:
            observation_space = gym.spaces.Box(-np.inf, np.inf, (mjm.nq + mjm.nv,), dtype=np.float32)
        super().__init__(num_envs, observation_space, action_space, max_episode_steps, device)

        self.frame_skip = frame_skip
        self.dt = float(mjm.opt.timestep) * frame_skip
        self.compute_contact_forces = compute_contact_forces
        self.full_forward_on_reset = full_forward_on_reset
        self.wp_device = warp_device_for(self.device)
        self.per_env_model_fields = self._expand_per_env_fields(per_env_model_fields)

        with self._warp_scope(), _quiet_warp_loading():
            self.model = mjw.put_model(mjm, batch_sizes={name: num_envs for name in self.per_env_model_fields})
            self.data = mjw.make_data(mjm, nworld=num_envs, nconmax=nconmax, njmax=njmax)

        # zero-copy torch views of the warp state; writes through them are seen by the physics
        self.qpos = self.data_view("qpos")  # [N, nq]
        self.qvel = self.data_view("qvel")  # [N, nv]
        self.ctrl = self.data_view("ctrl")  # [N, nu]
        self.xfrc_applied = self.data_view("xfrc_applied")  # [N, nbody, 6]: force then torque, world frame, at CoM
        self.xpos = self.data_view("xpos")  # [N, nbody, 3]
        self.cfrc_ext = self.data_view("cfrc_ext")  # [N, nbody, 6]: torque then force (com-based)

        # the state a reset writes besides qpos/qvel (MuJoCo's integration state, as mj_resetData)
        self._reset_values: list[tuple[torch.Tensor, torch.Tensor]] = []
        for name in ("act", "qacc_warmstart", "qfrc_applied", "xfrc_applied", "time", "userdata"):
            view = self.data_view(name)
            self._reset_values.append((view, torch.zeros_like(view[:1])))
        if mjm.nmocap:
            mocap_body = mjm.body_mocapid >= 0
            order = np.argsort(mjm.body_mocapid[mocap_body])
            for name, value in (("mocap_pos", mjm.body_pos), ("mocap_quat", mjm.body_quat)):
                initial = torch.as_tensor(value[mocap_body][order], dtype=torch.float32, device=self.device)
                self._reset_values.append((self.data_view(name), initial.unsqueeze(0)))
        if mjm.neq:
            initial = torch.as_tensor(mjm.eq_active0, dtype=torch.bool, device=self.device)
            self._reset_values.append((self.data_view("eq_active"), initial.unsqueeze(0)))

        self.init_qpos = torch.as_tensor(mjm.qpos0, dtype=torch.float32, device=self.device)  # [nq]
        self.init_qvel = torch.zeros(mjm.nv, dtype=torch.float32, device=self.device)  # [nv]
        self._ctrl_low = torch.as_tensor(low, dtype=torch.float32, device=self.device)
        self._ctrl_high = torch.as_tensor(high, dtype=torch.float32, device=self.device)
        self._nominal_body_mass = torch.as_tensor(mjm.body_mass, dtype=torch.float32, device=self.device)
        self._nominal_body_inertia = torch.as_tensor(mjm.body_inertia, dtype=torch.float32, device=self.device)
        self._id_cache: dict[tuple[int, tuple[str, ...]], torch.Tensor] = {}

        with _quiet_warp_loading():
            self._graph = self._capture_substeps() if use_graph else None
            self._reset_envs(self._all_envs)

    # --- warp plumbing ----------------------------------------------------------------------
    @contextlib.contextmanager
    def _warp_scope(self) -> Iterator[None]:
        """Run warp work on our device and, on CUDA, on torch's current stream (so the two are
        ordered without a host sync)."""
        with wp.ScopedDevice(self.wp_device):
            if self.device.type == "cuda":
                stream = wp.stream_from_torch(torch.cuda.current_stream(self.device))
                with wp.ScopedStream(stream, sync_enter=False, sync_exit=False):
                    yield
            else:
                yield

    def data_view(self, name: str) -> torch.Tensor:
        """Zero-copy torch view ``[N, ...]`` of the warp ``Data`` field ``name``."""
        return wp.to_torch(getattr(self.data, name))

    def model_view(self, name: str) -> torch.Tensor:
        """Zero-copy torch view of a warp ``Model`` field: ``[N, ...]`` if per env, else ``[1, ...]``."""
        return wp.to_torch(getattr(self.model, name))

    @staticmethod
    def _control_limits(mjm: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per-actuator ``(low, high)`` from ctrlrange; unlimited actuators get ``(-inf, inf)``."""
        limited = mjm.actuator_ctrllimited.astype(bool)
        low = np.where(limited, mjm.actuator_ctrlrange[:, 0], -np.inf)
        high = np.where(limited, mjm.actuator_ctrlrange[:, 1], np.inf)
        return low, high

    def _expand_per_env_fields(self, names: Sequence[str]) -> tuple[str, ...]:
        valid = _batchable_model_fields()
        unknown = [name for name in names if name not in valid]
        if unknown:
            raise ValueError(
                f"per_env_model_fields {unknown} are not per-world mujoco_warp Model fields; valid ones include "
                "body_mass, body_inertia, body_ipos, geom_friction, geom_solref, geom_solimp, dof_damping, "
                "dof_armature, dof_frictionloss, jnt_stiffness, actuator_gear, actuator_gainprm, actuator_biasprm"
            )
        fields = list(dict.fromkeys(names))
        if {"body_mass", "body_inertia"} & set(fields):
            skip = {"tendon_invweight0"} if self.mj_model.ntendon == 0 else set()
            fields += [name for name in MASS_DEPENDENT_FIELDS if name not in fields and name not in skip]
        return tuple(fields)

    def _substeps(self) -> None:
        """The physics of one env step: ``frame_skip`` MuJoCo steps (+ contact forces)."""
        for _ in range(self.frame_skip):
            mjw.step(self.model, self.data)
        if self.compute_contact_forces:
            # like gymnasium's mj_rnePostConstraint after mj_step: cacc, cfrc_int, cfrc_ext from
            # the last substep's forward pass
            mjw.rne_postconstraint(self.model, self.data)

    def _capture_substeps(self) -> Any:
        """Capture :meth:`_substeps` into a warp graph; ``None`` (eager) if capture is unsupported."""
        try:
            # the eager run compiles/loads every kernel the step uses: nothing may load while
            # capturing. It changes the state, which the reset after construction overwrites.
            with self._warp_scope():
                self._substeps()
            wp.synchronize_device(self.wp_device)  # all streams, torch's included
            with wp.ScopedDevice(self.wp_device):
                if self.device.type == "cuda":
                    # CUDA cannot capture on torch's legacy default stream: capture on a warp stream,
                    # made current, so every launch and allocation of the step goes to the capturing
                    # stream (capture_begin alone does not switch streams); the graph is then launched
                    # on torch's stream (see simulate)
                    stream = wp.Stream(self.wp_device)
                    with wp.ScopedStream(stream, sync_enter=False), \
                            wp.ScopedCapture(device=self.wp_device, stream=stream, force_module_load=False) as capture:
                        self._substeps()
                else:
                    with wp.ScopedCapture(device=self.wp_device, force_module_load=False) as capture:
                        self._substeps()
            return capture.graph
        except Exception as err:  # any capture failure falls back to eager launches
            warnings.warn(f"warp graph capture failed ({err!r}); stepping MuJoCo Warp eagerly", stacklevel=3)
            return None

    # --- physics ----------------------------------------------------------------------------
    def simulate(self, actions: torch.Tensor) -> None:
        """Write ``actions [N, nu]`` (clipped to ctrlrange) as ``ctrl`` and advance ``frame_skip`` steps.

        External forces set by :meth:`set_external_force` act during every substep and are
        cleared afterwards, so each call of ``set_external_force`` acts for exactly one env step.
        """
        ctrl = torch.clamp(actions.to(torch.float32), self._ctrl_low, self._ctrl_high)
        self.ctrl.copy_(ctrl)
        with self._warp_scope():
            if self._graph is None:
                self._substeps()
            elif self.device.type == "cuda":
                wp.capture_launch(self._graph, stream=wp.get_stream())
            else:
                wp.capture_launch(self._graph)
        self.xfrc_applied.zero_()

    def set_external_force(self, body_names: Sequence[str], forces: torch.Tensor) -> None:
        """Apply ``forces [N, B, 6]`` (force xyz, torque xyz; world frame; at each body's centre of
        mass) to the ``B`` named bodies during the next env step only."""
        body_ids = self.body_ids(body_names)
        forces = torch.as_tensor(forces, dtype=torch.float32, device=self.device)
        expected = (self.num_envs, len(body_ids), 6)
        if tuple(forces.shape) != expected:
            raise ValueError(f"forces must have shape {expected} (num_envs, bodies, 6), got {tuple(forces.shape)}")
        self.xfrc_applied[:, body_ids] = forces

    def body_ids(self, body_names: Sequence[str]) -> torch.Tensor:
        """Body indices ``[B]`` (long, on the env's device) of named bodies."""
        return self._ids(mujoco.mjtObj.mjOBJ_BODY, body_names)

    def geom_ids(self, geom_names: Sequence[str]) -> torch.Tensor:
        """Geom indices ``[G]`` (long, on the env's device) of named geoms."""
        return self._ids(mujoco.mjtObj.mjOBJ_GEOM, geom_names)

    def _ids(self, obj_type: Any, names: Sequence[str]) -> torch.Tensor:
        if isinstance(names, str):
            raise TypeError("pass a sequence of names, e.g. ['torso'], not a single string")
        # cached: adversarial RL sets forces on the same bodies every step
        key = (int(obj_type), tuple(names))
        if key not in self._id_cache:
            ids = [mujoco.mj_name2id(self.mj_model, obj_type, name) for name in names]
            missing = [name for name, i in zip(names, ids, strict=True) if i < 0]
            if missing:
                raise KeyError(f"no {obj_type.name[6:].lower()} named {missing} in the model")
            self._id_cache[key] = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return self._id_cache[key]

    # --- per-env model parameters -----------------------------------------------------------
    def set_body_mass(
        self,
        body_names: Sequence[str],
        mass: torch.Tensor,
        env_mask: torch.Tensor | None = None,
        scale_inertia: bool = True,
    ) -> None:
        """Set ``mass [N, B]`` of named bodies per env (where ``env_mask [N]`` is true, if given).

        ``scale_inertia`` scales each body's inertia by ``mass / nominal mass`` (a uniformly
        denser or lighter body). Derived constants are then recomputed (``mujoco_warp.set_const``).
        Needs ``per_env_model_fields`` to include ``"body_mass"``.
        """
        self._require_per_env("body_mass")
        body_ids = self.body_ids(body_names)
        mass = torch.as_tensor(mass, dtype=torch.float32, device=self.device)
        body_mass = self.model_view("body_mass")  # [N, nbody]
        new_mass = body_mass.clone()
        new_mass[:, body_ids] = mass
        if env_mask is not None:
            new_mass = torch.where(env_mask.view(-1, 1), new_mass, body_mass)
        body_mass.copy_(new_mass)
        if scale_inertia:
            ratio = new_mass / self._nominal_body_mass.clamp_min(1e-12)  # [N, nbody]
            self.model_view("body_inertia").copy_(self._nominal_body_inertia * ratio.unsqueeze(-1))
        self.recompute_model_constants()

    def recompute_model_constants(self) -> None:
        """Recompute the model constants derived from masses, inertias, armature, sizes, qpos0
        (``mujoco_warp.set_const``) after writing such per-env fields through :meth:`model_view`."""
        with self._warp_scope(), _quiet_warp_loading():  # its kernels load on the first call
            mjw.set_const(self.model, self.data)

    def set_geom_friction(
        self, geom_names: Sequence[str], friction: torch.Tensor, env_mask: torch.Tensor | None = None
    ) -> None:
        """Set ``friction [N, G, 3]`` (sliding, torsional, rolling) of named geoms per env.

        MuJoCo uses the larger friction of the two geoms in contact. Needs ``per_env_model_fields``
        to include ``"geom_friction"``.
        """
        self._require_per_env("geom_friction")
        geom_ids = self.geom_ids(geom_names)
        friction = torch.as_tensor(friction, dtype=torch.float32, device=self.device)
        geom_friction = self.model_view("geom_friction")  # [N, ngeom, 3]
        new_friction = geom_friction.clone()
        new_friction[:, geom_ids] = friction
        if env_mask is not None:
            new_friction = torch.where(env_mask.view(-1, 1, 1), new_friction, geom_friction)
        geom_friction.copy_(new_friction)

    def _require_per_env(self, field: str) -> None:
        if field not in self.per_env_model_fields:
            raise ValueError(f"construct the env with per_env_model_fields=('{field}', ...) to set {field} per env")

    # --- state ------------------------------------------------------------------------------
    def _initial_state(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial ``(qpos [N, nq], qvel [N, nv])``; only rows where ``mask [N]`` is true are used."""
        shape = (self.num_envs, -1)
        return self.init_qpos.expand(shape), self.init_qvel.expand(shape)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        qpos, qvel = self._initial_state(mask)
        self.write_state(mask, qpos, qvel)

    def _set_state(self, state: torch.Tensor) -> None:
        """Set ``state [N, nq + nv]`` (qpos then qvel) of every env."""
        nq, nv = self.mj_model.nq, self.mj_model.nv
        if state.shape != (self.num_envs, nq + nv):
            expected = (self.num_envs, nq + nv)
            raise ValueError(f"state must have shape {expected} = (N, nq + nv), got {tuple(state.shape)}")
        state = state.to(torch.float32)
        self.write_state(self._all_envs, state[:, :nq], state[:, nq:])

    def write_state(self, mask: torch.Tensor, qpos: torch.Tensor, qvel: torch.Tensor) -> None:
        """Reset the envs where ``mask [N]`` is true to ``qpos [N, nq]``, ``qvel [N, nv]``.

        Like ``mj_resetData`` + setting qpos/qvel + ``mj_forward``: activations, warm start, applied
        forces, time and contact forces of the masked envs are cleared; other envs are untouched
        (written back unchanged by ``torch.where``, so there is no host sync).
        """
        rows = mask.view(-1, 1)
        self.qpos.copy_(torch.where(rows, qpos, self.qpos))
        self.qvel.copy_(torch.where(rows, qvel, self.qvel))
        # mj_resetData clears ctrl too; it is rewritten by every step, so only the view is cleared
        self.ctrl.copy_(torch.where(rows, torch.zeros_like(self.ctrl), self.ctrl))
        for view, initial in self._reset_values:
            env_rows = mask.view(-1, *([1] * (view.dim() - 1)))
            view.copy_(torch.where(env_rows, initial, view))
        # gymnasium's reset obs sees cfrc_ext zeroed by mj_resetData (mj_forward does not fill it)
        self.cfrc_ext.copy_(torch.where(mask.view(-1, 1, 1), torch.zeros_like(self.cfrc_ext), self.cfrc_ext))
        # derived quantities for the new states. Runs on all envs (a per-env mask would need a
        # host sync); recomputing them for unmasked envs from their unchanged state is harmless
        # except that it refreshes their body poses (tasks that need the pose of the previous
        # substep cache it, see locomotion.Ant).
        with self._warp_scope():
            if self.full_forward_on_reset:
                mjw.forward(self.model, self.data)
            else:
                mjw.kinematics(self.model, self.data)
        self._after_state_write(mask)

    def _after_state_write(self, mask: torch.Tensor) -> None:
        """Hook for tasks: per-env caches to refresh where ``mask [N]`` was reset."""

    # --- env state capability ---------------------------------------------------------------
    def _state_field_names(self) -> list[str]:
        return [name for name in STATE_FIELDS if getattr(self.data, name, None) is not None]

    def _warp_state(self) -> dict[str, torch.Tensor]:
        """Views of the :data:`STATE_FIELDS` of the warp ``Data`` (``data/<name>``, ``[N, ...]``) and of
        every per-env model field (``model/<name>``, the domain-randomised parameters). Model fields
        shared by all envs are not included: they come from the constructor's arguments."""
        state = {f"data/{name}": self.data_view(name) for name in self._state_field_names()}
        state |= {f"model/{name}": self.model_view(name) for name in self.per_env_model_fields}
        return state

    def _get_state(self) -> dict[str, torch.Tensor]:
        """:meth:`_warp_state`; tasks with caches of their own add them."""
        return self._warp_state()

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        # checked first, then copied into the existing warp arrays (the captured graph points at them)
        views = self._warp_state()
        saved = {key: self._check_state_shape(key, state[key], view) for key, view in views.items()}
        for key, view in views.items():
            view.copy_(saved[key])

    # --- TorchVecEnv hooks ------------------------------------------------------------------
    def _observe(self) -> Obs:
        return torch.cat([self.qpos, self.qvel], dim=-1)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.simulate(actions)
        zeros = torch.zeros(self.num_envs, device=self.device)
        self._step_info = {}
        return zeros, zeros.bool()
