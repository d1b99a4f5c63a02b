"""``rgb_array`` frames of the batched classic-control envs, drawn by gymnasium's own renderers.

Each batched env follows a gymnasium task exactly (same state layout and parameters), so one env
of the batch is drawn by copying its state (and any parameter the drawing reads, e.g. a randomised
pole length) into a gymnasium env of that id and calling its ``render()``: the frames are
pixel-identical to gymnasium's, and drawing costs one copy of a few floats plus gymnasium's
pygame rasterisation on an off-screen surface (no display or window is needed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["ClassicRenderMixin", "GYM_COUNTERPARTS"]

# batched env class -> (gymnasium id, {our parameter name: the gymnasium attribute its renderer reads})
GYM_COUNTERPARTS: dict[str, tuple[str, dict[str, str]]] = {
    "CartPole": ("CartPole-v1", {"length": "length"}),
    "Pendulum": ("Pendulum-v1", {}),
    "MountainCarContinuous": ("MountainCarContinuous-v0", {}),
    "Acrobot": ("Acrobot-v1", {"link_length_1": "LINK_LENGTH_1"}),
}


class ClassicRenderMixin:
    """Adds ``render(index=0) -> uint8 [H, W, 3]`` to a batched classic-control env.

    The env must keep its physical state in ``self.state`` ``[N, state_dim]`` in gymnasium's layout
    and its (possibly per-env ``[N]``) parameters as attributes named in ``self.params``.
    """

    render_mode = "rgb_array"
    num_envs: int
    state: torch.Tensor
    params: dict[str, float]

    def _gym_renderer(self) -> Any:
        renderer = self.__dict__.get("_renderer")
        if renderer is None:
            import gymnasium as gym

            name = type(self).__name__
            counterpart = next((GYM_COUNTERPARTS[c.__name__] for c in type(self).__mro__
                                if c.__name__ in GYM_COUNTERPARTS), None)
            if counterpart is None:
                raise NotImplementedError(f"{name} has no gymnasium counterpart to render with")
            renderer = gym.make(counterpart[0], render_mode="rgb_array").unwrapped
            renderer.reset(seed=0)  # builds what render() expects; the state is overwritten below
            self.__dict__["_renderer"] = renderer
        return renderer

    @property
    def render_fps(self) -> int:
        """Frames per second of real time (gymnasium's value for this task)."""
        return int(self._gym_renderer().metadata.get("render_fps", 30))

    def render(self, index: int = 0) -> np.ndarray:
        """Env ``index`` of the batch as an RGB image ``uint8 [H, W, 3]`` (gymnasium's drawing).

        Raises:
            IndexError: ``index`` is not in ``[0, num_envs)``.
        """
        if not 0 <= index < self.num_envs:
            raise IndexError(f"render index {index} is out of range for {self.num_envs} envs")
        renderer = self._gym_renderer()
        counterpart = next(GYM_COUNTERPARTS[c.__name__] for c in type(self).__mro__ if c.__name__ in GYM_COUNTERPARTS)
        renderer.state = self.state[index].detach().to("cpu", torch.float64).numpy().copy()
        if hasattr(renderer, "last_u"):
            renderer.last_u = None  # the torque arrow of the last action is not tracked
        for ours, theirs in counterpart[1].items():
            value = getattr(self, ours)
            setattr(renderer, theirs, float(value[index]) if isinstance(value, torch.Tensor) else float(value))
        frame = renderer.render()
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def close_extras(self, **kwargs: Any) -> None:
        renderer = self.__dict__.pop("_renderer", None)
        if renderer is not None:
            renderer.close()
        super().close_extras(**kwargs)  # type: ignore[misc]
