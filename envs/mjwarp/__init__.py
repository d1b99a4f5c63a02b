"""MuJoCo Warp backend: batched MuJoCo on warp (CUDA, or warp's ``cpu`` device).

:class:`MjWarpEnv` runs any MJCF model; :mod:`envs.mjwarp.locomotion` holds gymnasium's v5
locomotion tasks (registered as ``drl/HalfCheetah-v0``, ``drl/Hopper-v0``, ``drl/Walker2d-v0``,
``drl/Ant-v0``); :mod:`envs.mjwarp.partitions` splits them into MaMuJoCo's agents (``drl/HalfCheetah-2x3-v0``,
...). Importing works without the optional dependencies; constructing an env without
``warp-lang``/``mujoco-warp`` raises :class:`envs.core.MissingDependencyError` (``pip install 'drl[mjwarp]'``).
"""

from envs.mjwarp.core import MjWarpEnv, load_mj_model, warp_device_for
from envs.mjwarp.locomotion import Ant, HalfCheetah, Hopper, Walker2d

__all__ = ["MjWarpEnv", "load_mj_model", "warp_device_for", "HalfCheetah", "Hopper", "Walker2d", "Ant"]
