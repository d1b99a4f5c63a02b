"""Gymnasium's MuJoCo v5 tasks (HalfCheetah, Hopper, Walker2d, Ant, Swimmer, InvertedPendulum) on MuJoCo Warp.

The MJCF files are read at runtime from gymnasium's installed assets (no copy in this repo), and
no change to them was needed for mujoco_warp (4.0.0). Observation, reward terms, termination, frame skip
and reset noise follow the v5 definitions and keyword arguments; ``info`` carries the reward
terms and positions/velocities of v5 as tensors ``[N]``. Differences from gymnasium:

* physics runs in float32 (MuJoCo C: float64), so trajectories agree with gymnasium only over
  short horizons before chaotic contact dynamics separate them (tests/envs/test_mjwarp.py);
* Ant: its default pyramidal friction cone depends on the contact frame. For a capsule touching
  the floor MuJoCo C aligns the frame with the capsule's axis projected on the floor; mujoco_warp
  uses a fixed axis when that projection is short (a steep leg), which rotates the friction
  pyramid and changes the friction force of such contacts. With ``cone="elliptic"`` in the MJCF
  (``xml_file=...``) both agree closely; the planar tasks are not affected;
* observations are float32 tensors; actions are clipped to ctrlrange before they reach the
  physics (MuJoCo clamps ctrl to the same range), while the control cost, as in v5, uses the
  action as given.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import Obs
from envs.mjwarp.core import MjWarpEnv, load_mj_model

__all__ = ["HalfCheetah", "Hopper", "Walker2d", "Ant", "Swimmer", "InvertedPendulum", "gymnasium_asset"]


def gymnasium_asset(xml_file: str) -> str:
    """Path of an MJCF file: ``xml_file`` itself if it exists, else gymnasium's MuJoCo asset of that name."""
    if os.path.exists(xml_file):
        return xml_file
    spec = importlib.util.find_spec("gymnasium.envs.mujoco")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("gymnasium's MuJoCo assets were not found (is gymnasium installed?)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "assets", xml_file)
    if not os.path.exists(path):
        raise FileNotFoundError(f"'{xml_file}' is neither a file nor one of gymnasium's MuJoCo assets")
    return path


def _body_id(mj_model: Any, body: int | str) -> int:
    """Index of a body given by index or name."""
    if isinstance(body, str):
        import mujoco

        index = mujoco.mj_name2id(mj_model, mujoco.mjtObj.mjOBJ_BODY, body)
        if index < 0:
            raise KeyError(f"no body named '{body}' in the model")
        return index
    if not 0 <= int(body) < mj_model.nbody:
        raise ValueError(f"body index {body} out of range [0, {mj_model.nbody})")
    return int(body)


class _Locomotion(MjWarpEnv):
    """Shared v5 machinery: observation (qpos without the root's x[, y], qvel), reset noise, ctrl cost.

    Args:
        mj_model: the compiled MJCF (``load_mj_model(gymnasium_asset(xml_file))``).
        qpos_skipped: how many leading qpos entries ``exclude_current_positions_from_observation`` drops.
        qvel_clip: observations clip qvel to ``[-qvel_clip, qvel_clip]`` (Hopper, Walker2d) or not (None).
        qvel_noise: ``"uniform"`` (U(-s, s)) or ``"normal"`` (s * N(0, 1)) reset noise on qvel.
        extra_obs_size: size of task-specific observation parts appended after (qpos, qvel).
    """

    def __init__(
        self,
        mj_model: Any,
        num_envs: int,
        device: str | torch.device,
        max_episode_steps: int | None,
        frame_skip: int,
        ctrl_cost_weight: float,
        reset_noise_scale: float,
        exclude_current_positions_from_observation: bool,
        qpos_skipped: int,
        qvel_clip: float | None,
        qvel_noise: str,
        extra_obs_size: int = 0,
        **backend_kwargs: Any,
    ):
        self._qpos_skipped = qpos_skipped if exclude_current_positions_from_observation else 0
        obs_size = mj_model.nq + mj_model.nv - self._qpos_skipped + extra_obs_size
        observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_size,), dtype=np.float32)
        self._ctrl_cost_weight = ctrl_cost_weight
        self._reset_noise_scale = reset_noise_scale
        self._qvel_clip = qvel_clip
        self._qvel_noise = qvel_noise
        super().__init__(
            mj_model,
            num_envs,
            device=device,
            frame_skip=frame_skip,
            max_episode_steps=max_episode_steps,
            observation_space=observation_space,
            **backend_kwargs,
        )

    def _initial_state(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """v5 ``reset_model``: init + U(-s, s) on qpos; init + U(-s, s) or s * N(0, 1) on qvel."""
        scale = self._reset_noise_scale
        n, nq, nv = self.num_envs, self.mj_model.nq, self.mj_model.nv
        qpos = self.init_qpos + self._uniform(-scale, scale, (n, nq))
        if self._qvel_noise == "uniform":
            qvel = self.init_qvel + self._uniform(-scale, scale, (n, nv))
        else:
            noise = torch.randn((n, nv), generator=self.generator, device=self.device)
            qvel = self.init_qvel + scale * noise
        return qpos, qvel

    def _observe(self) -> Obs:
        velocity = self.qvel
        if self._qvel_clip is not None:
            velocity = velocity.clamp(-self._qvel_clip, self._qvel_clip)
        return torch.cat([self.qpos[:, self._qpos_skipped :], velocity], dim=-1)

    def _control_cost(self, actions: torch.Tensor) -> torch.Tensor:
        """``ctrl_cost_weight * |a|^2`` per env ``[N]`` of the action as given (v5)."""
        return self._ctrl_cost_weight * actions.to(torch.float32).square().sum(dim=-1)


class HalfCheetah(_Locomotion):
    """HalfCheetah-v5: run forward; reward = forward velocity - ctrl cost; never terminates.

    Observation ``[N, 17]``: qpos[1:] (8), qvel (9) (``[N, 18]`` with the x position).
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "half_cheetah.xml",
        frame_skip: int = 5,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 0.1,
        reset_noise_scale: float = 0.1,
        exclude_current_positions_from_observation: bool = True,
        **backend_kwargs: Any,
    ):
        self._forward_reward_weight = forward_reward_weight
        super().__init__(
            load_mj_model(gymnasium_asset(xml_file)), num_envs, device, max_episode_steps, frame_skip,
            ctrl_cost_weight, reset_noise_scale,
            exclude_current_positions_from_observation, qpos_skipped=1, qvel_clip=None, qvel_noise="normal",
            **backend_kwargs,
        )

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_before = self.qpos[:, 0].clone()
        self.simulate(actions)
        x_after = self.qpos[:, 0].clone()
        x_velocity = (x_after - x_before) / self.dt
        forward_reward = self._forward_reward_weight * x_velocity
        ctrl_cost = self._control_cost(actions)
        self._step_info = {
            "x_position": x_after,
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return forward_reward - ctrl_cost, torch.zeros_like(forward_reward, dtype=torch.bool)


class _PlanarWalker(_Locomotion):
    """Hopper and Walker2d: forward velocity + healthy reward - ctrl cost; terminate when unhealthy."""

    def __init__(
        self,
        xml_file: str,
        num_envs: int,
        device: str | torch.device,
        max_episode_steps: int | None,
        frame_skip: int,
        forward_reward_weight: float,
        ctrl_cost_weight: float,
        healthy_reward: float,
        terminate_when_unhealthy: bool,
        healthy_z_range: tuple[float, float],
        healthy_angle_range: tuple[float, float],
        reset_noise_scale: float,
        exclude_current_positions_from_observation: bool,
        **backend_kwargs: Any,
    ):
        self._forward_reward_weight = forward_reward_weight
        self._healthy_reward = healthy_reward
        self._terminate_when_unhealthy = terminate_when_unhealthy
        self._healthy_z_range = healthy_z_range
        self._healthy_angle_range = healthy_angle_range
        super().__init__(
            load_mj_model(gymnasium_asset(xml_file)), num_envs, device, max_episode_steps, frame_skip,
            ctrl_cost_weight, reset_noise_scale,
            exclude_current_positions_from_observation, qpos_skipped=1, qvel_clip=10.0, qvel_noise="uniform",
            **backend_kwargs,
        )
        self._init_z = float(self.mj_model.qpos0[1])

    def _is_healthy(self) -> torch.Tensor:
        """``[N]`` bool: torso height and angle strictly inside their ranges."""
        z, angle = self.qpos[:, 1], self.qpos[:, 2]
        min_z, max_z = self._healthy_z_range
        min_angle, max_angle = self._healthy_angle_range
        return (min_z < z) & (z < max_z) & (min_angle < angle) & (angle < max_angle)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x_before = self.qpos[:, 0].clone()
        self.simulate(actions)
        x_after = self.qpos[:, 0].clone()
        x_velocity = (x_after - x_before) / self.dt
        healthy = self._is_healthy()
        forward_reward = self._forward_reward_weight * x_velocity
        healthy_reward = healthy.to(torch.float32) * self._healthy_reward
        ctrl_cost = self._control_cost(actions)
        terminated = ~healthy & self._terminate_when_unhealthy
        self._step_info = {
            "x_position": x_after,
            "z_distance_from_origin": self.qpos[:, 1] - self._init_z,
            "x_velocity": x_velocity,
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_survive": healthy_reward,
        }
        return forward_reward + healthy_reward - ctrl_cost, terminated


class Hopper(_PlanarWalker):
    """Hopper-v5: hop forward. Observation ``[N, 11]``: qpos[1:] (5), clip(qvel, -10, 10) (6).

    Healthy (else terminated): z > 0.7, |angle| < 0.2 and every entry of (qpos[2:], qvel) in
    (-100, 100).
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "hopper.xml",
        frame_skip: int = 4,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_state_range: tuple[float, float] = (-100.0, 100.0),
        healthy_z_range: tuple[float, float] = (0.7, float("inf")),
        healthy_angle_range: tuple[float, float] = (-0.2, 0.2),
        reset_noise_scale: float = 5e-3,
        exclude_current_positions_from_observation: bool = True,
        **backend_kwargs: Any,
    ):
        self._healthy_state_range = healthy_state_range
        super().__init__(
            xml_file, num_envs, device, max_episode_steps, frame_skip, forward_reward_weight, ctrl_cost_weight,
            healthy_reward, terminate_when_unhealthy, healthy_z_range, healthy_angle_range, reset_noise_scale,
            exclude_current_positions_from_observation, **backend_kwargs,
        )

    def _is_healthy(self) -> torch.Tensor:
        state = torch.cat([self.qpos[:, 2:], self.qvel], dim=-1)
        min_state, max_state = self._healthy_state_range
        healthy_state = ((min_state < state) & (state < max_state)).all(dim=-1)
        return healthy_state & super()._is_healthy()


class Walker2d(_PlanarWalker):
    """Walker2d-v5 (``walker2d_v5.xml``: both feet with friction 0.9). Observation ``[N, 17]``:
    qpos[1:] (8), clip(qvel, -10, 10) (9). Healthy (else terminated): 0.8 < z < 2, |angle| < 1.
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "walker2d_v5.xml",
        frame_skip: int = 4,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.8, 2.0),
        healthy_angle_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 5e-3,
        exclude_current_positions_from_observation: bool = True,
        **backend_kwargs: Any,
    ):
        super().__init__(
            xml_file, num_envs, device, max_episode_steps, frame_skip, forward_reward_weight, ctrl_cost_weight,
            healthy_reward, terminate_when_unhealthy, healthy_z_range, healthy_angle_range, reset_noise_scale,
            exclude_current_positions_from_observation, **backend_kwargs,
        )


class Ant(_Locomotion):
    """Ant-v5: walk forward (+x) on four legs.

    Observation ``[N, 105]``: qpos[2:] (13), qvel (14) and, with ``include_cfrc_ext_in_observation``
    (v5 default: on), the clipped external contact forces ``cfrc_ext`` of bodies 1..13 (78).
    Reward = x velocity of ``main_body`` + healthy reward - ctrl cost - contact cost, where contact
    cost = ``contact_cost_weight * |clip(cfrc_ext, contact_force_range)|^2``. Healthy (else
    terminated): state finite and 0.2 <= z <= 1.
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "ant.xml",
        frame_skip: int = 5,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 0.5,
        contact_cost_weight: float = 5e-4,
        healthy_reward: float = 1.0,
        main_body: int | str = 1,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.2, 1.0),
        contact_force_range: tuple[float, float] = (-1.0, 1.0),
        reset_noise_scale: float = 0.1,
        exclude_current_positions_from_observation: bool = True,
        include_cfrc_ext_in_observation: bool = True,
        **backend_kwargs: Any,
    ):
        self._forward_reward_weight = forward_reward_weight
        self._contact_cost_weight = contact_cost_weight
        self._healthy_reward = healthy_reward
        self._terminate_when_unhealthy = terminate_when_unhealthy
        self._healthy_z_range = healthy_z_range
        self._contact_force_range = contact_force_range
        self._include_cfrc_ext = include_cfrc_ext_in_observation
        mj_model = load_mj_model(gymnasium_asset(xml_file))
        self._main_body = _body_id(mj_model, main_body)
        # x, y of the main body as MuJoCo left it after each env's previous step [N, 2] (see
        # _after_state_write); filled by the first reset inside the constructor
        self._main_body_xy: torch.Tensor | None = None
        # contact forces come from rne_postconstraint, which costs a pass per env step: skip it
        # when neither the observation nor the reward reads them
        backend_kwargs.setdefault("compute_contact_forces", include_cfrc_ext_in_observation or contact_cost_weight != 0)
        # the Ant lying on its back touches the floor with many capsules; mujoco_warp's default
        # per-world capacity (48 contacts, 64 constraint rows) is too small for that
        backend_kwargs.setdefault("nconmax", 64)
        backend_kwargs.setdefault("njmax", 256)
        super().__init__(
            mj_model, num_envs, device, max_episode_steps, frame_skip, ctrl_cost_weight, reset_noise_scale,
            exclude_current_positions_from_observation, qpos_skipped=2, qvel_clip=None, qvel_noise="normal",
            extra_obs_size=(mj_model.nbody - 1) * 6 if include_cfrc_ext_in_observation else 0,
            **backend_kwargs,
        )

    def _after_state_write(self, mask: torch.Tensor) -> None:
        # gymnasium reads data.xpos before and after mj_step. After a step, xpos is the pose MuJoCo
        # computed inside the last substep (for RK4: at its last stage), not the final qpos. The
        # reset's kinematics pass refreshes xpos of every env, so the pose each env had after its
        # last step is cached and replaced only for the envs that were reset.
        fresh = self.xpos[:, self._main_body, :2]
        if self._main_body_xy is None:
            self._main_body_xy = fresh.clone()
        else:
            self._main_body_xy = torch.where(mask.view(-1, 1), fresh, self._main_body_xy)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {**super()._get_state(), "task/main_body_xy": self._main_body_xy}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        saved_xy = self._check_state_shape("task/main_body_xy", state["task/main_body_xy"], self._main_body_xy)
        super()._load_state({k: v for k, v in state.items() if k != "task/main_body_xy"})
        self._main_body_xy = saved_xy.clone()

    def _contact_forces(self) -> torch.Tensor:
        """``cfrc_ext`` clipped to ``contact_force_range``: ``[N, nbody, 6]``."""
        low, high = self._contact_force_range
        return self.cfrc_ext.clamp(low, high)

    def _observe(self) -> Obs:
        obs = super()._observe()
        if not self._include_cfrc_ext:
            return obs
        return torch.cat([obs, self._contact_forces()[:, 1:].flatten(1)], dim=-1)

    def _is_healthy(self) -> torch.Tensor:
        finite = torch.isfinite(self.qpos).all(dim=-1) & torch.isfinite(self.qvel).all(dim=-1)
        min_z, max_z = self._healthy_z_range
        z = self.qpos[:, 2]
        return finite & (min_z <= z) & (z <= max_z)

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xy_before = self._main_body_xy
        self.simulate(actions)
        xy_after = self.xpos[:, self._main_body, :2].clone()
        self._main_body_xy = xy_after
        xy_velocity = (xy_after - xy_before) / self.dt
        healthy = self._is_healthy()
        forward_reward = self._forward_reward_weight * xy_velocity[:, 0]
        healthy_reward = healthy.to(torch.float32) * self._healthy_reward
        ctrl_cost = self._control_cost(actions)
        contact_cost = self._contact_cost_weight * self._contact_forces().square().sum(dim=(1, 2))
        terminated = ~healthy & self._terminate_when_unhealthy
        self._step_info = {
            "x_position": self.qpos[:, 0].clone(),
            "y_position": self.qpos[:, 1].clone(),
            "distance_from_origin": self.qpos[:, :2].norm(dim=-1),
            "x_velocity": xy_velocity[:, 0],
            "y_velocity": xy_velocity[:, 1],
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
            "reward_contact": -contact_cost,
            "reward_survive": healthy_reward,
        }
        return forward_reward + healthy_reward - ctrl_cost - contact_cost, terminated


class Swimmer(_Locomotion):
    """Swimmer-v5: swim forward (+x) in a viscous fluid; reward = x velocity - ctrl cost; never terminates.

    Observation ``[N, 8]``: qpos[2:] (3), qvel (5). Reset noise U(-s, s) on qpos and qvel.
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "swimmer.xml",
        frame_skip: int = 4,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-4,
        reset_noise_scale: float = 0.1,
        exclude_current_positions_from_observation: bool = True,
        **backend_kwargs: Any,
    ):
        self._forward_reward_weight = forward_reward_weight
        super().__init__(
            load_mj_model(gymnasium_asset(xml_file)), num_envs, device, max_episode_steps, frame_skip,
            ctrl_cost_weight, reset_noise_scale,
            exclude_current_positions_from_observation, qpos_skipped=2, qvel_clip=None, qvel_noise="uniform",
            **backend_kwargs,
        )

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xy_before = self.qpos[:, :2].clone()
        self.simulate(actions)
        xy_after = self.qpos[:, :2].clone()
        xy_velocity = (xy_after - xy_before) / self.dt
        forward_reward = self._forward_reward_weight * xy_velocity[:, 0]
        ctrl_cost = self._control_cost(actions)
        self._step_info = {
            "x_position": xy_after[:, 0],
            "y_position": xy_after[:, 1],
            "x_velocity": xy_velocity[:, 0],
            "y_velocity": xy_velocity[:, 1],
            "reward_forward": forward_reward,
            "reward_ctrl": -ctrl_cost,
        }
        return forward_reward - ctrl_cost, torch.zeros_like(forward_reward, dtype=torch.bool)


class InvertedPendulum(_Locomotion):
    """InvertedPendulum-v5: keep a pole upright on a cart; reward 1 per step while ``|pole angle| <= 0.2``.

    Observation ``[N, 4]``: qpos (cart x, pole angle), qvel. Terminated when the angle leaves
    [-0.2, 0.2] or the observation is not finite (the terminal step's reward is 0, as in v5).
    Reset noise U(-s, s) on qpos and qvel. No control cost.
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 1000,
        xml_file: str = "inverted_pendulum.xml",
        frame_skip: int = 2,
        reset_noise_scale: float = 0.01,
        **backend_kwargs: Any,
    ):
        super().__init__(
            load_mj_model(gymnasium_asset(xml_file)), num_envs, device, max_episode_steps, frame_skip,
            0.0, reset_noise_scale, False, qpos_skipped=0, qvel_clip=None, qvel_noise="uniform",
            **backend_kwargs,
        )

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.simulate(actions)
        obs = self._observe()
        terminated = ~torch.isfinite(obs).all(dim=-1) | (obs[:, 1].abs() > 0.2)
        reward = (~terminated).to(torch.float32)
        self._step_info = {"reward_survive": reward}
        return reward, terminated
