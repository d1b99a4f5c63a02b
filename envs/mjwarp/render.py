"""``rgb_array`` frames of MuJoCo Warp envs: one env's state copied into a CPU ``mujoco.MjData``.

MuJoCo Warp has no renderer of its own. To draw env ``index``, its ``qpos``/``qvel`` (and mocap
poses when the model has mocap bodies) are copied into a CPU ``MjData`` of the same ``MjModel``,
``mj_forward`` computes the poses, and ``mujoco.Renderer`` rasterises the scene off-screen with a
camera tracking the first body (as gymnasium's locomotion envs do). Per-env model parameters
(randomised masses, frictions) do not change how a scene looks, so the nominal model is used.

Off-screen OpenGL: MuJoCo picks its GL backend from ``MUJOCO_GL`` when it is imported (default:
GLFW, which needs a display). :func:`prepare_offscreen_gl` chooses EGL (or OSMesa) before that
when there is no display, and :func:`make_renderer` retries with EGL then OSMesa if the backend
MuJoCo was imported with cannot make a context. Without any of them rendering raises one
:class:`RenderUnavailableError` line naming what to set.
"""

from __future__ import annotations

import ctypes.util
import importlib
import os
import sys
from typing import Any

import numpy as np
import torch

__all__ = ["MjRenderMixin", "RenderUnavailableError", "prepare_offscreen_gl", "make_renderer"]


class RenderUnavailableError(RuntimeError):
    """No OpenGL backend can make an off-screen context on this machine."""


def prepare_offscreen_gl() -> str | None:
    """Set ``MUJOCO_GL`` to ``egl`` (or ``osmesa``) on a Linux machine without a display, unless set.

    Call before MuJoCo is imported (it reads the variable once). Returns the value in effect.
    """
    if "MUJOCO_GL" not in os.environ and _headless():
        if ctypes.util.find_library("EGL"):
            os.environ["MUJOCO_GL"] = "egl"
        elif ctypes.util.find_library("OSMesa"):
            os.environ["MUJOCO_GL"] = "osmesa"
    return os.environ.get("MUJOCO_GL")


def _headless() -> bool:
    return sys.platform.startswith("linux") and not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY")


def make_renderer(model: Any, height: int, width: int) -> Any:
    """A ``mujoco.Renderer`` with an off-screen context.

    On a Linux machine without a display the GLFW backend (MuJoCo's default, chosen at import when
    ``MUJOCO_GL`` was unset) cannot work, and a failed GLFW attempt can abort the process, so it is
    not tried there: EGL, then OSMesa are.

    Raises:
        RenderUnavailableError: no backend could make an off-screen OpenGL context.
    """
    import mujoco
    from mujoco.rendering.classic import gl_context

    current = getattr(gl_context, "GLContext", None)
    candidates: list[tuple[str, Any]] = []
    current_module = getattr(current, "__module__", "") or ""
    if current is not None and not (_headless() and current_module.startswith("mujoco.glfw")):
        candidates.append((os.environ.get("MUJOCO_GL") or "default", current))
    for backend in ("egl", "osmesa"):
        if not current_module.startswith(f"mujoco.{backend}"):
            candidates.append((backend, None))
    errors = []
    for name, context_class in candidates:
        try:
            if context_class is None:
                context_class = importlib.import_module(f"mujoco.{name}").GLContext
            gl_context.GLContext = context_class
            return mujoco.Renderer(model, height, width)
        except Exception as err:  # noqa: BLE001 - each GL backend fails in its own way
            text = str(err).splitlines()[0] if str(err) else repr(err)
            errors.append(f"{name}: {text}")
    raise RenderUnavailableError(
        "MuJoCo off-screen rendering needs OpenGL: install EGL (a GPU driver or libegl-mesa) or OSMesa and set "
        "MUJOCO_GL=egl or MUJOCO_GL=osmesa before starting python (tried " + "; ".join(errors) + ")")


class MjRenderMixin:
    """Adds ``render(index=0) -> uint8 [H, W, 3]`` to :class:`~envs.mjwarp.core.MjWarpEnv`.

    ``render_width``/``render_height`` set the image size (480 x 480, gymnasium's default) and
    ``render_distance`` the tracking camera's distance.
    """

    render_mode = "rgb_array"
    render_width = 480
    render_height = 480
    render_distance = 4.0  # camera distance in metres (gymnasium's locomotion default)
    num_envs: int
    mj_model: Any
    qpos: torch.Tensor
    qvel: torch.Tensor
    dt: float

    @property
    def render_fps(self) -> int:
        """Frames per second of simulated time (one frame per env step)."""
        return max(1, round(1.0 / self.dt))

    def render(self, index: int = 0) -> np.ndarray:
        """Env ``index`` of the batch as an RGB image ``uint8 [H, W, 3]``.

        Raises:
            IndexError: ``index`` is not in ``[0, num_envs)``.
            RenderUnavailableError: no off-screen OpenGL backend works on this machine.
        """
        import mujoco

        if not 0 <= index < self.num_envs:
            raise IndexError(f"render index {index} is out of range for {self.num_envs} envs")
        state = self.__dict__.get("_render_state")
        if state is None:
            data = mujoco.MjData(self.mj_model)
            renderer = make_renderer(self.mj_model, self.render_height, self.render_width)
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = 1 if self.mj_model.nbody > 1 else 0
            camera.distance = self.render_distance
            camera.elevation = -20.0
            camera.azimuth = 90.0
            state = self.__dict__["_render_state"] = (data, renderer, camera)
        data, renderer, camera = state
        data.qpos[:] = self.qpos[index].detach().to("cpu", torch.float64).numpy()
        data.qvel[:] = self.qvel[index].detach().to("cpu", torch.float64).numpy()
        if self.mj_model.nmocap:
            data.mocap_pos[:] = self.data_view("mocap_pos")[index].detach().cpu().numpy()
            data.mocap_quat[:] = self.data_view("mocap_quat")[index].detach().cpu().numpy()
        mujoco.mj_forward(self.mj_model, data)
        renderer.update_scene(data, camera=camera)
        return np.ascontiguousarray(renderer.render(), dtype=np.uint8)

    def data_view(self, name: str) -> torch.Tensor:  # provided by MjWarpEnv
        raise NotImplementedError

    def close_extras(self, **kwargs: Any) -> None:
        state = self.__dict__.pop("_render_state", None)
        if state is not None:
            state[1].close()
        super().close_extras(**kwargs)  # type: ignore[misc]
