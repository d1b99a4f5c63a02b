"""``rgb_array`` frames of the Panda tasks: one env's pybullet scene through its workspace camera."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PandaRenderMixin"]


class PandaRenderMixin:
    """Adds ``render(index=0) -> uint8 [H, W, 3]`` to :class:`~envs.tasks.panda.PandaTaskEnv`.

    The frame is the same fixed workspace camera as the ``"image"`` observation group, drawn at
    ``render_size`` x ``render_size`` pixels (pybullet's CPU renderer) whatever the obs image size.
    """

    render_mode = "rgb_array"
    render_size = 240
    num_envs: int
    sim_dt: float
    frame_skip: int
    _scenes: list[Any]

    @property
    def render_fps(self) -> int:
        """Frames per second of simulated time (one frame per env step)."""
        return max(1, round(1.0 / (self.sim_dt * self.frame_skip)))

    def render(self, index: int = 0) -> np.ndarray:
        """Env ``index`` as an RGB image ``uint8 [render_size, render_size, 3]``.

        Raises:
            IndexError: ``index`` is not in ``[0, num_envs)``.
        """
        if not 0 <= index < self.num_envs:
            raise IndexError(f"render index {index} is out of range for {self.num_envs} envs")
        scene = self._scenes[index]
        obs_size = scene.image_size
        scene.image_size = self.render_size  # the camera's projection does not depend on the image size
        try:
            image = scene.render()  # [3, H, W]
        finally:
            scene.image_size = obs_size
        return np.ascontiguousarray(image.transpose(1, 2, 0))
