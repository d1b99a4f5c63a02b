"""One PyBullet scene of the Panda tasks: a Franka Panda on a table plane, an optional cube, a goal marker.

The batched envs in :mod:`envs.tasks.panda` hold one :class:`PandaScene` (one pybullet DIRECT client) per
env. This module knows pybullet; the envs only see flat numpy state vectors laid out by :data:`STATE`.

Frames: the robot base is at the world origin, the table top is the plane ``z = 0``, ``+x`` points away from
the robot. The end effector (EE) is the ``panda_grasptarget`` frame, between the fingertips, held pointing
straight down.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS = (9, 10)
EE_LINK = 11  # panda_grasptarget: the point between the fingertips
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)  # N m, the Panda's joint torque limits
FINGER_FORCE = 40.0  # N per finger
FINGER_MAX_OPENING = 0.04  # m per finger, so the gripper opens to 8 cm
# Joint limits of the pybullet_data URDF (7 arm joints, then the 2 fingers).
JOINT_LOWER = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671, 0.0, 0.0)
JOINT_UPPER = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671, 0.04, 0.04)
JOINT_RANGES = tuple(hi - lo for lo, hi in zip(JOINT_LOWER, JOINT_UPPER, strict=True))
READY_POSE = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)  # Franka's "ready" configuration
EE_DOWN = (1.0, 0.0, 0.0, 0.0)  # quaternion (x, y, z, w): gripper pointing at the table

CUBE_HALF_SIZE = 0.02  # m: a 4 cm cube
CUBE_MASS = 0.1  # kg
GOAL_MARKER_RADIUS = 0.02

# Flat state vector of one scene: name -> slice. Object fields stay zero in scenes without a cube.
_FIELDS = (
    ("joint_pos", 7),
    ("joint_vel", 7),
    ("finger_pos", 2),
    ("ee_pos", 3),
    ("ee_quat", 4),
    ("ee_vel", 3),
    ("obj_pos", 3),
    ("obj_quat", 4),
    ("obj_lin_vel", 3),
    ("obj_ang_vel", 3),
    ("finger_contacts", 2),  # 1.0 where the left / right finger touches the cube
)
STATE: dict[str, slice] = {}
_start = 0
for _name, _size in _FIELDS:
    STATE[_name] = slice(_start, _start + _size)
    _start += _size
STATE_DIM = _start


def import_pybullet() -> tuple[ModuleType, str]:
    """``(pybullet, pybullet_data path)``; raises ImportError when pybullet is not installed."""
    import pybullet
    import pybullet_data

    return pybullet, pybullet_data.getDataPath()


@functools.lru_cache(maxsize=4)
def collision_only_panda_urdf(data_path: str) -> str:
    """Path of a copy of pybullet_data's Panda URDF without visual meshes (written once to the temp dir).

    Parsing the detailed visual meshes is ~95% of the time to load the robot (~0.3 s per scene) and they make
    camera images ~14x slower to render; without them pybullet draws the (simpler) collision shapes, which at
    the small image sizes used for learning look the same.
    """
    robot_dir = Path(data_path, "franka_panda")
    text = re.sub(r"<visual>.*?</visual>", "", (robot_dir / "panda.urdf").read_text(), flags=re.S)
    text = re.sub(r'filename="(?:package://)?([^"]+)"', lambda m: f'filename="{robot_dir / m.group(1)}"', text)
    out = Path(tempfile.gettempdir(), f"drl_panda_collision_{hashlib.sha1(text.encode()).hexdigest()[:12]}.urdf")
    if not out.is_file():
        fd, tmp_name = tempfile.mkstemp(prefix=".drl_panda_", suffix=".urdf", dir=out.parent)
        with os.fdopen(fd, "w") as tmp:
            tmp.write(text)
        os.replace(tmp_name, out)  # atomic: concurrent processes never read a half-written file
    return str(out)


class PandaScene:
    """One pybullet DIRECT client holding the robot, the table plane, an optional cube and a goal marker.

    Args:
        with_cube: add the 4 cm cube (push, pick-and-place).
        sim_dt: physics time step in seconds.
        image_size: side of the square camera image, in pixels.
    """

    def __init__(self, with_cube: bool, sim_dt: float, image_size: int = 64):
        self.pb, data_path = import_pybullet()
        pb = self.pb
        self.client = pb.connect(pb.DIRECT)
        self._kw = {"physicsClientId": self.client}
        kw = self._kw
        pb.setAdditionalSearchPath(data_path, **kw)
        pb.setGravity(0.0, 0.0, -9.81, **kw)
        pb.setTimeStep(sim_dt, **kw)
        self.table = pb.loadURDF("plane.urdf", **kw)
        self.robot = pb.loadURDF(collision_only_panda_urdf(data_path), basePosition=(0, 0, 0), useFixedBase=True, **kw)
        for link in FINGER_JOINTS:
            pb.changeDynamics(self.robot, link, lateralFriction=1.5, spinningFriction=0.01, **kw)
        # Couple the fingers (as the real gripper's mechanism does) so a held cube cannot slide between them.
        coupling = pb.createConstraint(self.robot, FINGER_JOINTS[0], self.robot, FINGER_JOINTS[1], pb.JOINT_GEAR,
                                       (1, 0, 0), (0, 0, 0), (0, 0, 0), **kw)
        pb.changeConstraint(coupling, gearRatio=-1, erp=0.1, maxForce=50, **kw)
        self.cube: int | None = None
        if with_cube:
            half = [CUBE_HALF_SIZE] * 3
            red = (0.9, 0.2, 0.1, 1.0)
            self.cube = pb.createMultiBody(
                baseMass=CUBE_MASS,
                baseCollisionShapeIndex=pb.createCollisionShape(pb.GEOM_BOX, halfExtents=half, **kw),
                baseVisualShapeIndex=pb.createVisualShape(pb.GEOM_BOX, halfExtents=half, rgbaColor=red, **kw),
                basePosition=(0.5, 0.0, CUBE_HALF_SIZE),
                **kw,
            )
            pb.changeDynamics(self.cube, -1, lateralFriction=0.5, spinningFriction=0.001, **kw)
        green = (0.1, 0.8, 0.2, 0.6)
        goal_shape = pb.createVisualShape(pb.GEOM_SPHERE, radius=GOAL_MARKER_RADIUS, rgbaColor=green, **kw)
        # A visual-only body: it is drawn in camera images but never collides.
        self.goal_marker = pb.createMultiBody(baseMass=0.0, baseCollisionShapeIndex=-1,
                                              baseVisualShapeIndex=goal_shape, basePosition=(0.5, 0.0, 0.1), **kw)
        self.image_size = image_size
        # A fixed camera in front of the table, facing the robot, framing the workspace.
        self._view = pb.computeViewMatrix(cameraEyePosition=(1.0, 0.0, 0.55), cameraTargetPosition=(0.45, 0.0, 0.1),
                                          cameraUpVector=(0.0, 0.0, 1.0))
        self._projection = pb.computeProjectionMatrixFOV(fov=40.0, aspect=1.0, nearVal=0.05, farVal=3.0)

    # --- state ---------------------------------------------------------------------------
    def reset(self, arm_pose: np.ndarray, finger_opening: float, obj_pos: np.ndarray | None, goal: np.ndarray) -> None:
        """Arm at rest at ``arm_pose[7]``, fingers at ``finger_opening`` each, cube upright at ``obj_pos[3]``."""
        pb, kw = self.pb, self._kw
        for joint, angle in zip(ARM_JOINTS, arm_pose, strict=True):
            pb.resetJointState(self.robot, joint, float(angle), 0.0, **kw)
        for joint in FINGER_JOINTS:
            pb.resetJointState(self.robot, joint, finger_opening, 0.0, **kw)
        # Hold the new pose until the first action arrives.
        pb.setJointMotorControlArray(self.robot, ARM_JOINTS, pb.POSITION_CONTROL, targetPositions=list(arm_pose),
                                     forces=ARM_FORCES, **kw)
        pb.setJointMotorControlArray(self.robot, FINGER_JOINTS, pb.POSITION_CONTROL,
                                     targetPositions=[finger_opening] * 2, forces=[FINGER_FORCE] * 2, **kw)
        if self.cube is not None and obj_pos is not None:
            pb.resetBasePositionAndOrientation(self.cube, obj_pos.tolist(), (0.0, 0.0, 0.0, 1.0), **kw)
            pb.resetBaseVelocity(self.cube, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), **kw)
        pb.resetBasePositionAndOrientation(self.goal_marker, goal.tolist(), (0.0, 0.0, 0.0, 1.0), **kw)
        pb.performCollisionDetection(**kw)  # so contact flags describe the new state, not the old one

    def solve_ik(self, ee_target: np.ndarray, rest_pose: np.ndarray, iterations: int = 100) -> np.ndarray:
        """Joint angles ``[7]`` putting the EE at ``ee_target[3]``, pointing down (null space near ``rest_pose``)."""
        solution = self.pb.calculateInverseKinematics(
            self.robot, EE_LINK, ee_target.tolist(), EE_DOWN,
            lowerLimits=JOINT_LOWER, upperLimits=JOINT_UPPER, jointRanges=JOINT_RANGES,
            restPoses=list(rest_pose) + [0.0, 0.0], maxNumIterations=iterations, residualThreshold=1e-5, **self._kw,
        )
        return np.asarray(solution[:7])

    def settle_home_pose(self, ee_home: np.ndarray) -> np.ndarray:
        """Iterate IK from the ready pose to a joint pose ``[7]`` with the EE exactly at ``ee_home``."""
        pose = np.asarray(READY_POSE)
        for _ in range(20):
            for joint, angle in zip(ARM_JOINTS, pose, strict=True):
                self.pb.resetJointState(self.robot, joint, float(angle), 0.0, **self._kw)
            pose = self.solve_ik(ee_home, np.asarray(READY_POSE))
        return pose

    def act(self, ee_target: np.ndarray, finger_opening: float, rest_pose: np.ndarray, frame_skip: int) -> None:
        """Drive the EE toward ``ee_target[3]`` by IK + joint position control for ``frame_skip`` physics steps."""
        pb, kw = self.pb, self._kw
        arm_target = self.solve_ik(ee_target, rest_pose, iterations=20)
        pb.setJointMotorControlArray(self.robot, ARM_JOINTS, pb.POSITION_CONTROL, targetPositions=arm_target.tolist(),
                                     forces=ARM_FORCES, **kw)
        pb.setJointMotorControlArray(self.robot, FINGER_JOINTS, pb.POSITION_CONTROL,
                                     targetPositions=[finger_opening] * 2, forces=[FINGER_FORCE] * 2, **kw)
        for _ in range(frame_skip):
            pb.stepSimulation(**kw)

    def read_state(self, out: np.ndarray) -> None:
        """Write this scene's state into ``out[STATE_DIM]`` (layout: :data:`STATE`)."""
        pb, kw = self.pb, self._kw
        joints = pb.getJointStates(self.robot, ARM_JOINTS + FINGER_JOINTS, **kw)
        out[STATE["joint_pos"]] = [j[0] for j in joints[:7]]
        out[STATE["joint_vel"]] = [j[1] for j in joints[:7]]
        out[STATE["finger_pos"]] = [j[0] for j in joints[7:]]
        ee = pb.getLinkState(self.robot, EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1, **kw)
        out[STATE["ee_pos"]] = ee[4]
        out[STATE["ee_quat"]] = ee[5]
        out[STATE["ee_vel"]] = ee[6]
        if self.cube is not None:
            pos, quat = pb.getBasePositionAndOrientation(self.cube, **kw)
            lin_vel, ang_vel = pb.getBaseVelocity(self.cube, **kw)
            out[STATE["obj_pos"]] = pos
            out[STATE["obj_quat"]] = quat
            out[STATE["obj_lin_vel"]] = lin_vel
            out[STATE["obj_ang_vel"]] = ang_vel
            out[STATE["finger_contacts"]] = [
                float(len(pb.getContactPoints(self.robot, self.cube, linkIndexA=link, **kw)) > 0)
                for link in FINGER_JOINTS
            ]

    def render(self) -> np.ndarray:
        """RGB camera image ``[3, H, W]`` uint8 of the workspace (pybullet's CPU renderer)."""
        size = self.image_size
        _, _, rgba, _, _ = self.pb.getCameraImage(
            size, size, self._view, self._projection, renderer=self.pb.ER_TINY_RENDERER,
            flags=self.pb.ER_NO_SEGMENTATION_MASK, **self._kw,
        )
        rgba = np.asarray(rgba, dtype=np.uint8).reshape(size, size, 4)
        return np.ascontiguousarray(rgba[..., :3].transpose(2, 0, 1))

    def close(self) -> None:
        """Disconnect the client (safe to call twice)."""
        if self.client is not None and self.pb.isConnected(self.client):
            self.pb.disconnect(self.client)
        self.client = None
