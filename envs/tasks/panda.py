"""Franka Panda manipulation on PyBullet: reach a point, push a cube, pick a cube and place it.

Each task is a batched :class:`envs.core.TorchVecEnv` over ``num_envs`` pybullet DIRECT clients (pybullet
runs on the CPU, so the batch is a Python loop; every returned tensor lives on ``device``).

Scene: the Panda's base at the origin of a table plane (``z = 0``); a 4 cm cube (push, pick-and-place); a
goal marker that only cameras see. Goals and cube positions are drawn uniformly in a workspace in front of
the robot from ``self.generator``, so ``reset(seed=...)`` makes episodes reproducible.

Action ``[N, A]`` in ``[-1, 1]``: ``(dx, dy, dz)`` moves the end effector (EE) by up to ``action_scale``
metres per step (inverse kinematics + joint position control, EE pointing down); for pick-and-place a 4th
entry sets the gripper opening (``-1`` closed ... ``+1`` fully open, 8 cm). Reach and push hold the gripper
closed and take 3-D actions.

Observation, a dict of float32 groups:

* ``"policy"`` ``[N, P]``: what a real robot measures: joint positions ``[7]`` and velocities ``[7]``, EE
  position ``[3]`` and velocity ``[3]``, gripper opening ``[1]``, then the cube position ``[3]`` (push,
  pick-and-place) and the goal ``[3]``, both with Gaussian noise of std ``obs_noise`` metres (held fixed
  between physics steps, so ``final_obs`` equals ``obs`` on envs that did not finish).
  :class:`PandaPickOccluded` (``drl/PandaPickOccluded-v0``) also hides the cube from the policy at random
  steps (probability ``occlusion_prob``): the policy then gets the last cube position it saw and a flag.
* ``"critic"`` ``[N, C]``: privileged and exact: joint positions and velocities, EE position, orientation
  (quaternion xyzw) and velocity, gripper opening, goal; then EE-to-goal ``[3]`` (reach) or the cube's
  position, orientation, linear and angular velocity, left/right finger-cube contact flags, cube-minus-EE
  and goal-minus-cube ``[3]`` each (push, pick-and-place).
* ``"image"`` ``[N, 3, H, W]`` in ``[0, 1]``, only with ``image=True``: a fixed camera facing the robot
  (pybullet's CPU renderer; the robot is drawn with its collision shapes, see ``panda_scene``).

Reward: ``"dense"`` is the negative distance EE-to-goal (reach), or cube-to-goal plus half the EE-to-cube
distance (push, pick-and-place); ``"sparse"`` is 1.0 on success, else 0.0. Success (the EE, resp. the cube,
within :data:`SUCCESS_DISTANCE` of the goal) terminates the episode and is reported as ``info["success"]``
``[N]``; ``max_episode_steps`` truncates it.

:func:`expert_action` is a scripted expert reading the privileged state (used for demonstrations).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import MissingDependencyError, Obs, TorchVecEnv
from envs.tasks.panda_render import PandaRenderMixin
from envs.tasks.panda_scene import (
    CUBE_HALF_SIZE,
    FINGER_MAX_OPENING,
    STATE,
    STATE_DIM,
    PandaScene,
    import_pybullet,
)

__all__ = ["PandaTaskEnv", "PandaReach", "PandaPush", "PandaPickPlace", "PandaPickOccluded", "expert_action",
           "SUCCESS_DISTANCE"]

SUCCESS_DISTANCE = 0.05  # m
EE_HOME = (0.4, 0.0, 0.2)  # where every episode starts the EE
EE_LOW = np.array([0.2, -0.4, 0.012])  # EE targets are clipped to this box (z: fingertips just above the table)
EE_HIGH = np.array([0.8, 0.4, 0.5])
GOAL_LOW_REACH, GOAL_HIGH_REACH = (0.3, -0.25, 0.05), (0.6, 0.25, 0.35)
CUBE_LOW, CUBE_HIGH = (0.35, -0.2, CUBE_HALF_SIZE), (0.6, 0.2, CUBE_HALF_SIZE)
GOAL_LOW_PICK, GOAL_HIGH_PICK = (0.35, -0.2, CUBE_HALF_SIZE), (0.6, 0.2, 0.2)
MIN_START_DISTANCE = 0.1  # m between the goal and the cube (or the EE, for reach) at the start
TRAVEL_HEIGHT = 0.1  # expert: height of the EE when moving over the cube

_REWARD_TYPES = ("dense", "sparse")


class PandaTaskEnv(PandaRenderMixin, TorchVecEnv):
    """Shared machinery of the Panda tasks; subclasses define sampling, success, dense reward and the expert.

    Args:
        num_envs: number of simulated scenes (one pybullet client each).
        device: where returned tensors live.
        max_episode_steps: time limit (truncation); ``None`` uses the task's default.
        reward_type: ``"dense"`` or ``"sparse"``.
        obs_noise: std (metres) of the Gaussian noise on the cube and goal positions of the ``"policy"`` group.
        image: add an ``"image"`` group ``[N, 3, image_size, image_size]`` (CPU rendering, ~2 ms per env-step).
        image_size: side of the camera image in pixels.
        frame_skip: physics steps per action; control runs at ``1 / (sim_dt * frame_skip)`` Hz (24 Hz default).
        sim_dt: physics time step in seconds.
        action_scale: EE displacement in metres of a full action (``|dx| = 1``).
    """

    env_id: str = "drl/Panda-v0"
    has_cube: bool = False
    gripper_action: bool = False  # does action[3] command the gripper?
    initial_finger_opening: float = 0.0  # per finger, metres
    default_max_episode_steps: int = 100
    policy_dim: int = 24
    critic_dim: int = 31

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = None,
        reward_type: str = "dense",
        obs_noise: float = 0.005,
        image: bool = False,
        image_size: int = 64,
        frame_skip: int = 10,
        sim_dt: float = 1.0 / 240.0,
        action_scale: float = 0.05,
    ):
        try:
            import_pybullet()
        except ImportError as err:
            raise MissingDependencyError(self.env_id, "pybullet") from err
        if reward_type not in _REWARD_TYPES:
            raise ValueError(f"reward_type must be one of {_REWARD_TYPES}, got '{reward_type}'")
        if obs_noise < 0:
            raise ValueError(f"obs_noise must be >= 0, got {obs_noise}")
        if frame_skip < 1:
            raise ValueError(f"frame_skip must be >= 1, got {frame_skip}")
        if image and image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
        self.reward_type = reward_type
        self.obs_noise = float(obs_noise)
        self.image = bool(image)
        self.image_size = int(image_size)
        self.frame_skip = int(frame_skip)
        self.sim_dt = float(sim_dt)
        self.action_scale = float(action_scale)

        groups: dict[str, gym.spaces.Box] = {
            "policy": gym.spaces.Box(-np.inf, np.inf, (self.policy_dim,), np.float32),
            "critic": gym.spaces.Box(-np.inf, np.inf, (self.critic_dim,), np.float32),
        }
        if self.image:
            groups["image"] = gym.spaces.Box(0.0, 1.0, (3, self.image_size, self.image_size), np.float32)
        action_dim = 4 if self.gripper_action else 3
        super().__init__(
            num_envs,
            gym.spaces.Dict(groups),
            gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32),
            self.default_max_episode_steps if max_episode_steps is None else max_episode_steps,
            device,
        )
        self.action_dim = action_dim
        self._scenes: list[PandaScene] = []
        for _ in range(num_envs):  # appended one by one so close() reaches every client if one fails
            self._scenes.append(PandaScene(self.has_cube, self.sim_dt, self.image_size))
        self._home_pose = self._scenes[0].settle_home_pose(np.asarray(EE_HOME))
        self._state_np = np.zeros((num_envs, STATE_DIM))  # exact state, float64, host
        self._state = torch.zeros(num_envs, STATE_DIM, device=self.device)  # the same, float32, on device
        self.goal = torch.zeros(num_envs, 3, device=self.device)
        self._noise = torch.zeros(num_envs, 6 if self.has_cube else 3, device=self.device)
        self._noise_generator = torch.Generator(device=self.device)
        self._noise_generator.manual_seed(int(np.random.SeedSequence().entropy % (2**63)))
        self._images = torch.zeros(num_envs, 3, self.image_size, self.image_size, dtype=torch.uint8) if image else None

    # --- exact state, [N, ...] float32 on device (read by rewards and the expert) ---------------
    @property
    def ee_pos(self) -> torch.Tensor:
        """EE position ``[N, 3]``."""
        return self._state[:, STATE["ee_pos"]]

    @property
    def obj_pos(self) -> torch.Tensor:
        """Cube position ``[N, 3]`` (zeros in reach)."""
        return self._state[:, STATE["obj_pos"]]

    @property
    def gripper_opening(self) -> torch.Tensor:
        """Distance between the fingers ``[N]`` (0 closed ... 0.08 m open)."""
        return self._state[:, STATE["finger_pos"]].sum(-1)

    @property
    def finger_contacts(self) -> torch.Tensor:
        """``[N, 2]`` 1.0 where the left / right finger touches the cube."""
        return self._state[:, STATE["finger_contacts"]]

    def state(self, name: str) -> torch.Tensor:
        """One field of the exact state ``[N, size]`` (names: :data:`envs.tasks.panda_scene.STATE`)."""
        return self._state[:, STATE[name]]

    # --- task definition (subclasses) --------------------------------------------------------
    def _sample_episode(self, count: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Goals ``[count, 3]`` and cube positions ``[count, 3]`` (or None) for ``count`` new episodes."""
        raise NotImplementedError

    def _success_distance(self) -> torch.Tensor:
        """The distance ``[N]`` that must fall below :data:`SUCCESS_DISTANCE`."""
        raise NotImplementedError

    def _dense_reward(self) -> torch.Tensor:
        """Shaped reward ``[N]``."""
        raise NotImplementedError

    def _task_obs(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
        """Task-specific named tails ``[N, k]`` of the ``"policy"`` and ``"critic"`` groups."""
        raise NotImplementedError

    def expert_action(self) -> torch.Tensor:
        """Scripted expert action ``[N, A]`` from the exact state."""
        raise NotImplementedError

    # --- TorchVecEnv hooks -------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        if seed is not None:
            # The noise has its own stream, derived from the seed, so it never shifts goal sampling.
            noise_seed = np.random.SeedSequence([int(seed), 1]).generate_state(1, dtype=np.uint64)[0]
            self._noise_generator.manual_seed(int(noise_seed) >> 1)
        obs, info = super().reset(seed=seed, options=options)
        return obs, info

    def _reset_envs(self, mask: torch.Tensor) -> None:
        rows = mask.nonzero().flatten()
        if rows.numel() == 0:
            return
        goal, obj = self._sample_episode(rows.numel())
        self.goal[rows] = goal
        goal_np = goal.double().cpu().numpy()
        obj_np = obj.double().cpu().numpy() if obj is not None else None
        for j, i in enumerate(rows.tolist()):
            scene = self._scenes[i]
            scene.reset(self._home_pose, self.initial_finger_opening, None if obj_np is None else obj_np[j], goal_np[j])
            scene.read_state(self._state_np[i])
            if self._images is not None:
                self._images[i] = torch.from_numpy(scene.render())
        self._state = torch.as_tensor(self._state_np, dtype=torch.float32).to(self.device)
        self._noise[rows] = self._draw_noise(rows.numel())

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if actions.shape != (self.num_envs, self.action_dim):
            raise ValueError(f"actions must have shape {(self.num_envs, self.action_dim)}, got {tuple(actions.shape)}")
        act = np.nan_to_num(actions.detach().to(torch.float64).cpu().numpy()).clip(-1.0, 1.0)
        ee_targets = np.clip(self._state_np[:, STATE["ee_pos"]] + act[:, :3] * self.action_scale, EE_LOW, EE_HIGH)
        if self.gripper_action:
            finger_openings = (act[:, 3] + 1.0) / 2.0 * FINGER_MAX_OPENING
        else:
            finger_openings = np.full(self.num_envs, self.initial_finger_opening)
        for i, scene in enumerate(self._scenes):
            scene.act(ee_targets[i], float(finger_openings[i]), self._home_pose, self.frame_skip)
            scene.read_state(self._state_np[i])
            if self._images is not None:
                self._images[i] = torch.from_numpy(scene.render())
        self._state = torch.as_tensor(self._state_np, dtype=torch.float32).to(self.device)
        self._noise = self._draw_noise(self.num_envs)
        success = self._success_distance() < SUCCESS_DISTANCE
        reward = self._dense_reward() if self.reward_type == "dense" else success.float()
        self._step_info = {"success": success}  # which episodes just succeeded, in info["success"]
        return reward, success

    def _observe(self) -> Obs:
        obs = {group: torch.cat([value for _, value in parts], dim=-1) for group, parts in self._obs_parts().items()}
        if self._images is not None:
            obs["image"] = self._images.to(self.device, torch.float32) / 255.0
        return obs

    def _obs_parts(self) -> dict[str, list[tuple[str, torch.Tensor]]]:
        """The named pieces ``[N, k]`` of the ``"policy"`` and ``"critic"`` groups, in order."""
        s = self._state
        opening = self.gripper_opening[:, None]
        policy = [("joint_pos", s[:, STATE["joint_pos"]]), ("joint_vel", s[:, STATE["joint_vel"]]),
                  ("ee_pos", self.ee_pos), ("ee_vel", s[:, STATE["ee_vel"]]), ("gripper_opening", opening)]
        critic = [("joint_pos", s[:, STATE["joint_pos"]]), ("joint_vel", s[:, STATE["joint_vel"]]),
                  ("ee_pos", self.ee_pos), ("ee_quat", s[:, STATE["ee_quat"]]), ("ee_vel", s[:, STATE["ee_vel"]]),
                  ("gripper_opening", opening), ("goal", self.goal)]
        policy_tail, critic_tail = self._task_obs()
        return {"policy": policy + policy_tail, "critic": critic + critic_tail}

    def observation_layout(self, group: str) -> dict[str, slice]:
        """Where each named quantity sits in the ``"policy"`` or ``"critic"`` vector (``{"goal": slice(25, 28)}``)."""
        parts = self._obs_parts()
        if group not in parts:
            raise KeyError(f"observation group '{group}' has no layout; vector groups: {', '.join(parts)}")
        layout, start = {}, 0
        for name, value in parts[group]:
            layout[name] = slice(start, start + value.shape[-1])
            start += value.shape[-1]
        return layout

    def _draw_noise(self, count: int) -> torch.Tensor:
        """Observation noise ``[count, 3 or 6]`` for the cube and goal positions of the policy group."""
        shape = (count, self._noise.shape[1])
        return self.obs_noise * torch.randn(shape, generator=self._noise_generator, device=self.device)

    def _sample_apart(self, count: int, low_a: tuple, high_a: tuple, low_b: tuple, high_b: tuple | None,
                      min_distance: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Uniform points ``a [count, 3]`` and ``b [count, 3]`` at least ``min_distance`` apart (``a`` redrawn).

        ``b`` is drawn in ``[low_b, high_b)``, or is the fixed point ``low_b`` when ``high_b`` is None.
        """
        box_a = (self._vector(low_a), self._vector(high_a))
        a = self._uniform(*box_a, (count, 3))
        if high_b is None:
            b = self._vector(low_b).expand(count, 3)
        else:
            b = self._uniform(self._vector(low_b), self._vector(high_b), (count, 3))
        for _ in range(100):
            too_close = (a - b).norm(dim=-1) < min_distance
            if not bool(too_close.any()):
                break
            a = torch.where(too_close[:, None], self._uniform(*box_a, (count, 3)), a)
        return a, b

    def _vector(self, values: tuple) -> torch.Tensor:
        return torch.as_tensor(values, dtype=torch.float32, device=self.device)

    def close_extras(self, **kwargs: Any) -> None:
        for scene in self._scenes:
            scene.close()

    def __del__(self) -> None:
        for scene in getattr(self, "_scenes", []):
            try:
                scene.close()
            except Exception:  # interpreter shutdown: pybullet may already be gone
                pass


def _toward(target: torch.Tensor, ee_pos: torch.Tensor, action_scale: float, max_action: float = 1.0) -> torch.Tensor:
    """Action ``[N, 3]`` moving the EE from ``ee_pos [N, 3]`` toward ``target [N, 3]``, capped at ``max_action``."""
    return ((target - ee_pos) / action_scale).clamp(-max_action, max_action)


def _with_z(xy: torch.Tensor, z: float | torch.Tensor) -> torch.Tensor:
    """Points ``[N, 3]`` from ``xy [N, 2]`` and a height (scalar or ``[N]``)."""
    z = torch.as_tensor(z, dtype=xy.dtype, device=xy.device).expand(xy.shape[0])
    return torch.cat([xy, z[:, None]], dim=-1)


class PandaReach(PandaTaskEnv):
    """Move the EE to a goal point in the air (3-D action, gripper closed, 50 steps)."""

    env_id = "drl/PandaReach-v0"
    default_max_episode_steps = 50
    policy_dim = 24  # 7 + 7 + 3 + 3 + 1 + goal 3
    critic_dim = 31  # 7 + 7 + 3 + 4 + 3 + 1 + goal 3 + (goal - ee) 3

    def _sample_episode(self, count: int) -> tuple[torch.Tensor, None]:
        goal, _ = self._sample_apart(count, GOAL_LOW_REACH, GOAL_HIGH_REACH, EE_HOME, None, MIN_START_DISTANCE)
        return goal, None

    def _success_distance(self) -> torch.Tensor:
        return (self.ee_pos - self.goal).norm(dim=-1)

    def _dense_reward(self) -> torch.Tensor:
        return -self._success_distance()

    def _task_obs(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
        return [("goal_noisy", self.goal + self._noise)], [("goal_minus_ee", self.goal - self.ee_pos)]

    def expert_action(self) -> torch.Tensor:
        """Straight at the goal."""
        return _toward(self.goal, self.ee_pos, self.action_scale)


class _CubeTask(PandaTaskEnv):
    """Shared observation and reward of the cube tasks."""

    has_cube = True
    policy_dim = 27  # 7 + 7 + 3 + 3 + 1 + cube 3 + goal 3
    critic_dim = 49  # 7 + 7 + 3 + 4 + 3 + 1 + goal 3 + cube 3 + 4 + 3 + 3 + contacts 2 + 3 + 3

    def _success_distance(self) -> torch.Tensor:
        return (self.obj_pos - self.goal).norm(dim=-1)

    def _dense_reward(self) -> torch.Tensor:
        return -self._success_distance() - 0.5 * (self.ee_pos - self.obj_pos).norm(dim=-1)

    def _task_obs(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
        s = self._state
        policy = [("obj_pos_noisy", self.obj_pos + self._noise[:, :3]), ("goal_noisy", self.goal + self._noise[:, 3:])]
        critic = [
            ("obj_pos", self.obj_pos), ("obj_quat", s[:, STATE["obj_quat"]]),
            ("obj_lin_vel", s[:, STATE["obj_lin_vel"]]), ("obj_ang_vel", s[:, STATE["obj_ang_vel"]]),
            ("finger_contacts", self.finger_contacts),
            ("obj_minus_ee", self.obj_pos - self.ee_pos), ("goal_minus_obj", self.goal - self.obj_pos),
        ]
        return policy, critic


_PUSH_STANDOFF = 0.055  # m from the cube centre to the EE before a push
_PUSH_CLEARANCE = 0.045  # m: further behind the cube centre than this, the fingers cannot touch it
_PUSH_HEIGHT = 0.015  # m: EE height while pushing (fingertips just above the table)
_PUSH_STEP = 0.02  # m per step while pushing


class PandaPush(_CubeTask):
    """Push the cube across the table to a goal on the table (3-D action, gripper closed, 100 steps)."""

    env_id = "drl/PandaPush-v0"

    def _sample_episode(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._sample_apart(count, CUBE_LOW, CUBE_HIGH, CUBE_LOW, CUBE_HIGH, MIN_START_DISTANCE)

    def expert_action(self) -> torch.Tensor:
        """Get behind the cube (over it, then down), then push it along the cube-to-goal line.

        Stateless: the phase is read off the geometry every step, so a cube that slips sideways is simply
        approached again.
        """
        ee, obj, goal = self.ee_pos, self.obj_pos, self.goal
        to_goal = goal[:, :2] - obj[:, :2]
        remaining = to_goal.norm(dim=-1)
        direction = to_goal / remaining.clamp_min(1e-6)[:, None]  # [N, 2]
        behind_xy = obj[:, :2] - _PUSH_STANDOFF * direction  # where the fingers wait before pushing
        rel = ee[:, :2] - obj[:, :2]
        along = (rel * direction).sum(-1)  # < 0: the EE is on the far side of the cube from the goal
        off_line = rel - along[:, None] * direction  # [N, 2] sideways offset from the push line
        low = ee[:, 2] < 0.045
        clear_behind = along < -_PUSH_CLEARANCE  # low and here, the EE can slide sideways without touching
        at_behind = (ee[:, :2] - behind_xy).norm(dim=-1) < 0.015
        aligned = low & (along < -0.02) & (along > -0.09) & (off_line.norm(dim=-1) < 0.012)

        target = _with_z(behind_xy, TRAVEL_HEIGHT)  # default: fly over to the spot behind the cube
        target = torch.where((low & ~clear_behind)[:, None], _with_z(ee[:, :2], TRAVEL_HEIGHT), target)  # rise
        target = torch.where((at_behind | (low & clear_behind))[:, None], _with_z(behind_xy, _PUSH_HEIGHT), target)
        push_step = remaining.clamp(max=_PUSH_STEP)[:, None] * direction - off_line
        target = torch.where(aligned[:, None], _with_z(ee[:, :2] + push_step, _PUSH_HEIGHT), target)
        return _toward(target, ee, self.action_scale)


class PandaPickPlace(_CubeTask):
    """Pick the cube up and place it at a goal on or above the table (4-D action with gripper, 100 steps)."""

    env_id = "drl/PandaPickPlace-v0"
    gripper_action = True
    initial_finger_opening = FINGER_MAX_OPENING

    def _sample_episode(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        cube, goal = self._sample_apart(count, CUBE_LOW, CUBE_HIGH, GOAL_LOW_PICK, GOAL_HIGH_PICK, MIN_START_DISTANCE)
        return goal, cube

    def expert_action(self) -> torch.Tensor:
        """Open over the cube, descend, close, lift, carry to the goal (phase read off the geometry)."""
        ee, obj, goal = self.ee_pos, self.obj_pos, self.goal
        opening = self.gripper_opening
        xy_error = (ee[:, :2] - obj[:, :2]).norm(dim=-1)
        holding = (
            (self.finger_contacts.sum(-1) == 2)
            & (opening > 0.03)
            & (opening < 0.06)
            & ((ee - obj).norm(dim=-1) < 0.03)
        )
        at_grasp = (xy_error < 0.012) & ((ee[:, 2] - obj[:, 2]).abs() < 0.01) & (opening > 0.03)
        descend = (xy_error < 0.012) & (opening > 0.07)

        target = _with_z(obj[:, :2], obj[:, 2] + TRAVEL_HEIGHT)  # default: over the cube, gripper open
        target = torch.where((descend | at_grasp)[:, None], obj, target)
        # Carrying: move the EE so that the cube (wherever it sits in the hand) lands on the goal.
        place = goal - (obj - ee)
        far = (obj[:, :2] - goal[:, :2]).norm(dim=-1) > 0.03
        carry = torch.where(far[:, None], _with_z(place[:, :2], place[:, 2].clamp(min=TRAVEL_HEIGHT)), place)
        lift_first = far & (ee[:, 2] < TRAVEL_HEIGHT - 0.02)
        carry = torch.where(lift_first[:, None], _with_z(ee[:, :2], TRAVEL_HEIGHT), carry)
        target = torch.where(holding[:, None], carry, target)
        gripper = torch.where(at_grasp | holding, -1.0, 1.0)[:, None]
        return torch.cat([_toward(target, ee, self.action_scale), gripper], dim=-1)


class PandaPickOccluded(PandaPickPlace):
    """Pick-and-place whose policy loses sight of the cube now and then (4-D action, 100 steps).

    Every step after a reset, independently with probability ``occlusion_prob`` (default 0.3), the cube is
    occluded: the policy group's cube position is then the last one it saw (its noisy reading of the last
    unoccluded step, held) and a flag says so. The first observation of an episode always sees the cube.
    The policy group is PandaPickPlace's with the flag appended, ``[N, 28]``: ..., ``obj_pos_seen [3]``,
    ``goal_noisy [3]``, ``occluded [1]`` (1.0 occluded, 0.0 seen). The critic group, dynamics, reward,
    success and expert are PandaPickPlace's: for the same seed and actions the critic group is identical
    (occlusions are drawn from the observation-noise generator, not from the episode generator).

    Its own id rather than a keyword of ``drl/PandaPickPlace-v0`` because the policy group has one more
    entry (the flag): one id, one observation space, and configs and benchmarks name the task by its id.

    Args:
        occlusion_prob: probability in ``[0, 1]`` that the cube is hidden from the policy at a step.
        **kwargs: :class:`PandaTaskEnv`'s arguments.
    """

    env_id = "drl/PandaPickOccluded-v0"
    policy_dim = 28  # PandaPickPlace's 27 + the occluded flag

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", occlusion_prob: float = 0.3,
                 **kwargs: Any):
        if not 0.0 <= occlusion_prob <= 1.0:
            raise ValueError(f"occlusion_prob must be in [0, 1], got {occlusion_prob}")
        self.occlusion_prob = float(occlusion_prob)
        super().__init__(num_envs, device, **kwargs)
        self.occluded = torch.zeros(num_envs, dtype=torch.bool, device=self.device)  # [N]
        self.obj_pos_seen = torch.zeros(num_envs, 3, device=self.device)  # [N, 3] what the policy last saw

    def _reset_envs(self, mask: torch.Tensor) -> None:
        super()._reset_envs(mask)
        rows = mask.nonzero().flatten()
        self.occluded[rows] = False
        self.obj_pos_seen[rows] = self.obj_pos[rows] + self._noise[rows, :3]

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = super()._physics_step(actions)
        draw = torch.rand(self.num_envs, generator=self._noise_generator, device=self.device)
        self.occluded = draw < self.occlusion_prob
        reading = self.obj_pos + self._noise[:, :3]
        self.obj_pos_seen = torch.where(self.occluded[:, None], self.obj_pos_seen, reading)
        return result

    def _task_obs(self) -> tuple[list[tuple[str, torch.Tensor]], list[tuple[str, torch.Tensor]]]:
        _, critic = super()._task_obs()
        policy = [("obj_pos_seen", self.obj_pos_seen), ("goal_noisy", self.goal + self._noise[:, 3:]),
                  ("occluded", self.occluded.float()[:, None])]
        return policy, critic


def expert_action(env: gym.vector.VectorEnv) -> torch.Tensor:
    """Scripted expert action ``[N, A]`` for a Panda task env (reads its exact, privileged state)."""
    task = env.unwrapped
    if not isinstance(task, PandaTaskEnv):
        raise TypeError(f"expert_action needs a Panda task env, got {type(task).__name__}")
    return task.expert_action()
