"""Active search in 2-D: a robot with a narrow field-of-view sensor must find a target, then reach it.

An active-perception task in the spirit of the simulated tasks of "Real-World RL of Active Perception
Behaviors" (Hu et al. 2025): the target is usually out of view at the start, so the policy has to move
its sensor (turn, drive) to find it before it can go there, and it sees the target only while it keeps it
in view. The critic gets the full state (the target's position) as privileged information.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import TorchVecEnv

TWO_PI = 2 * math.pi


def wrap_angle(theta: torch.Tensor) -> torch.Tensor:
    """Angles to ``[-pi, pi)``; an angle already there comes back bit for bit (no rounding when nothing wraps)."""
    return theta - TWO_PI * torch.floor((theta + math.pi) / TWO_PI)


__all__ = ["ActiveSearch", "wrap_angle", "reference_searcher", "DEMO_SUCCESS_RATE", "REFERENCE_SUCCESS_RATE"]

# Measured with envs.tasks.demos (1000 episodes, seed 0, 64 envs, default max_episode_steps=100):
DEMO_SUCCESS_RATE = 0.489  # ActiveSearch.expert_action (the slow, noisy demonstrator)
REFERENCE_SUCCESS_RATE = 0.963  # reference_searcher


class ActiveSearch(TorchVecEnv):
    """Batched 2-D active search: find a randomly placed target with a limited field of view, then reach it.

    World (every length in metres, angles in radians, one step = one action):

    * arena ``[-ARENA, ARENA]^2`` with ``ARENA = 1.0``; the agent's position is clamped to it (no walls to
      bump into, it just stops at the edge);
    * agent pose ``(x, y, h)``, heading ``h`` in ``[-pi, pi)`` (0 = +x, counter-clockwise positive);
    * target: a point, uniform in the arena, at least ``MIN_START_DISTANCE = 0.5`` from the agent's start
      (16 candidates are drawn per reset and the first far enough is taken; if none is, probability below
      ``0.2^16``, the arena corner farthest from the agent, which is always >= sqrt(2) away);
    * start pose: position uniform in the arena, heading uniform in ``[-pi, pi)``.

    Action ``Box(-1, 1, (2,))`` (clipped; NaN reads as 0): ``a[0]`` forward speed, ``a[1]`` turn rate. A step
    first turns by ``a[1] * MAX_TURN`` (``MAX_TURN = 0.25`` rad) and then moves ``a[0] * MAX_MOVE``
    (``MAX_MOVE = 0.05`` m; negative drives backwards) along the new heading (a unicycle, Euler step).

    Sensor: the target is in view when its distance is at most ``VIEW_RANGE = 1.25`` m and its bearing
    (angle between the heading and the direction to the target) at most ``VIEW_HALF_ANGLE = pi / 6``
    (30 deg): a 60 deg cone. The target at the agent's own position counts as in view. From the arena's
    centre the range reaches everything but the corners' tips (beyond 1.25 of 1.41 m), so the search is
    mostly turning, plus moving when the start is far from the target.

    Observation, a dict of float32 groups:

    * ``"policy"`` ``[N, 7]``: ``(x, y, cos h, sin h, in_view, rel_x, rel_y)``: the agent's pose (odometry),
      the in-view flag (0 or 1) and, only while in view, the target relative to the agent in the agent's
      frame (``rel_x`` ahead, ``rel_y`` to the left); zeros while out of view. Nothing remembers the last
      sighting: a policy that needs it must keep a memory (recurrent state, a history window).
    * ``"critic"`` ``[N, 9]``: ``(x, y, cos h, sin h, target_x, target_y, rel_x, rel_y, in_view)``, the full
      state, the relative position given whether in view or not.

    Reward: sparse, ``1.0`` on the step that brings the agent within ``SUCCESS_DISTANCE = 0.1`` m of the
    target, else 0. Success terminates the episode and is ``info["success"]`` ``[N]`` bool; the episode is
    truncated after ``max_episode_steps`` (default 100). A full turn takes 26 steps at the maximum rate and
    crossing the arena's diagonal (2.83 m) 57 steps at full speed: :func:`reference_searcher` (scan once,
    go to the centre, scan again; full speed) succeeds in 96.3% of episodes within the 100 steps.

    Scripted demonstrator :meth:`expert_action`: slow and noisy. Out of view it turns in place at
    ``DEMO_TURN = 0.25`` of the maximum rate (0.0625 rad/step, 101 steps a turn) in a fixed direction
    (counter-clockwise), and when it faces the arena centre (within 30 deg) while more than
    ``DEMO_CENTRE_RADIUS = 0.3`` m from it, it also drives at ``DEMO_SPEED = 0.4`` (0.02 m/step), so it
    drifts toward the centre while it scans; in view, it steers at the target (turn action
    ``DEMO_STEER_GAIN * bearing / MAX_TURN``, clipped) and drives at ``DEMO_SPEED``. Gaussian noise of std
    ``DEMO_NOISE = 0.4`` (action units, drawn from the env's generator) is added to both actions. It reads
    only what the policy group holds (pose, in-view flag, relative target), so the agent could represent
    it. Its measured success rate is 48.9% (:data:`DEMO_SUCCESS_RATE`; 1000 episodes,
    ``envs.tasks.demos.expert_success_rate("drl/ActiveSearch-v0", 1000, seed=0, num_envs=64)``), well
    below the reference searcher's: RL fine-tuning has room.

    Randomisation: start pose and target per episode (nothing physical to randomise). Seeding, SAME_STEP
    autoreset and the env-state capability (``state_dict`` / ``load_state_dict``: pose and target) follow
    :class:`envs.core.TorchVecEnv`. ``reset(options={"state": s})`` with ``s`` ``[N, 5]`` =
    ``(x, y, h, target_x, target_y)`` places the agent and target by hand. ``render(index=0)`` draws one
    env as ``uint8 [H, W, 3]`` (arena, sensor cone, agent, target) with numpy.

    Args:
        num_envs: number of envs in the batch.
        device: where the state and every returned tensor live (``"cpu"``, ``"cuda"``).
        max_episode_steps: time limit (truncation), default 100.
        render_size: side of the square picture of :meth:`render`, in pixels.
    """

    ARENA = 1.0  # m, half the arena's side
    MAX_MOVE = 0.05  # m per step at |a[0]| = 1
    MAX_TURN = 0.25  # rad per step at |a[1]| = 1
    VIEW_RANGE = 1.25  # m
    VIEW_HALF_ANGLE = math.pi / 6  # rad (30 deg)
    SUCCESS_DISTANCE = 0.1  # m
    MIN_START_DISTANCE = 0.5  # m between the agent's start and the target
    CANDIDATES = 16  # target draws per reset (the first far enough is used)
    DEMO_TURN = 0.25  # fraction of MAX_TURN while searching
    DEMO_SPEED = 0.4  # fraction of MAX_MOVE while driving
    DEMO_NOISE = 0.4  # std of the Gaussian action noise (action units)
    DEMO_CENTRE_RADIUS = 0.3  # m: the demonstrator stops drifting to the centre inside this radius
    DEMO_STEER_GAIN = 2.0  # in view: turn action = gain * bearing / MAX_TURN (clipped)

    metadata: dict[str, Any] = {**TorchVecEnv.metadata, "render_modes": ["rgb_array"], "render_fps": 20}
    render_mode = "rgb_array"
    render_fps = 20

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 100,
        render_size: int = 256,
    ):
        if render_size < 16:
            raise ValueError(f"render_size must be >= 16 pixels, got {render_size}")
        r = self.VIEW_RANGE
        a = self.ARENA
        diagonal = 2 * math.sqrt(2) * a  # the largest |relative position|
        policy_high = np.array([a, a, 1.0, 1.0, 1.0, r, r], dtype=np.float32)
        policy_low = np.array([-a, -a, -1.0, -1.0, 0.0, -r, -r], dtype=np.float32)
        critic_high = np.array([a, a, 1.0, 1.0, a, a, diagonal, diagonal, 1.0], dtype=np.float32)
        critic_low = np.array([-a, -a, -1.0, -1.0, -a, -a, -diagonal, -diagonal, 0.0], dtype=np.float32)
        observation_space = gym.spaces.Dict({
            "policy": gym.spaces.Box(policy_low, policy_high, dtype=np.float32),
            "critic": gym.spaces.Box(critic_low, critic_high, dtype=np.float32),
        })
        super().__init__(num_envs, observation_space, gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
                         max_episode_steps, device)
        self.render_size = int(render_size)
        self.pose = torch.zeros(num_envs, 3, device=self.device)  # (x, y, h)
        self.target = torch.zeros(num_envs, 2, device=self.device)  # (x, y)

    # --- geometry -----------------------------------------------------------------------------
    def relative_target(self) -> torch.Tensor:
        """The target in the agent's frame ``[N, 2]``: ``(ahead, left)`` in metres, ``R(-h) (target - xy)``."""
        dx, dy = (self.target - self.pose[:, :2]).unbind(-1)
        cos, sin = torch.cos(self.pose[:, 2]), torch.sin(self.pose[:, 2])
        return torch.stack((cos * dx + sin * dy, -sin * dx + cos * dy), dim=-1)

    def in_view(self, relative: torch.Tensor | None = None) -> torch.Tensor:
        """``[N]`` bool: the target is within ``VIEW_RANGE`` and ``VIEW_HALF_ANGLE`` of the heading."""
        rel = self.relative_target() if relative is None else relative
        bearing = torch.atan2(rel[:, 1], rel[:, 0])  # atan2(0, 0) = 0: at the agent counts as in view
        return (rel.norm(dim=-1) <= self.VIEW_RANGE) & (bearing.abs() <= self.VIEW_HALF_ANGLE)

    def target_distance(self) -> torch.Tensor:
        """``[N]`` metres from the agent to the target."""
        return (self.target - self.pose[:, :2]).norm(dim=-1)

    # --- TorchVecEnv hooks -------------------------------------------------------------------
    def _reset_envs(self, mask: torch.Tensor) -> None:
        """New start pose and target for the envs where ``mask[N]`` is true (fixed draws: no host sync)."""
        n, a = self.num_envs, self.ARENA
        xy = self._uniform(-a, a, (n, 2))
        heading = wrap_angle(self._uniform(-math.pi, math.pi, (n, 1)))  # float32 may round up to pi
        candidates = self._uniform(-a, a, (n, self.CANDIDATES, 2))
        far = (candidates - xy[:, None, :]).norm(dim=-1) >= self.MIN_START_DISTANCE  # [N, K]
        first = far.to(torch.int8).argmax(dim=-1)  # index of the first far candidate (0 when none is)
        target = candidates[torch.arange(n, device=self.device), first]
        corner = torch.where(xy > 0, -a, a)  # the arena corner farthest from the agent
        target = torch.where(far.any(dim=-1, keepdim=True), target, corner)
        self.pose = torch.where(mask[:, None], torch.cat((xy, heading), dim=-1), self.pose)
        self.target = torch.where(mask[:, None], target, self.target)

    def _observe(self) -> dict[str, torch.Tensor]:
        """``{"policy": [N, 7], "critic": [N, 9]}`` float32 (see the class docstring for the layout)."""
        rel = self.relative_target()
        seen = self.in_view(rel)
        pose = torch.stack((self.pose[:, 0], self.pose[:, 1], torch.cos(self.pose[:, 2]), torch.sin(self.pose[:, 2])),
                           dim=-1)
        flag = seen.to(torch.float32)[:, None]
        policy = torch.cat((pose, flag, rel * flag), dim=-1)
        critic = torch.cat((pose, self.target, rel, flag), dim=-1)
        return {"policy": policy, "critic": critic}

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn, then move; ``actions[N, 2]`` -> ``(reward[N], terminated[N])``."""
        if tuple(actions.shape) != (self.num_envs, 2):
            raise ValueError(f"actions must have shape {(self.num_envs, 2)}, got {tuple(actions.shape)}")
        act = torch.nan_to_num(actions.to(device=self.device, dtype=torch.float32)).clamp(-1.0, 1.0)
        heading = wrap_angle(self.pose[:, 2] + act[:, 1] * self.MAX_TURN)
        step = act[:, 0] * self.MAX_MOVE
        x = (self.pose[:, 0] + step * torch.cos(heading)).clamp(-self.ARENA, self.ARENA)
        y = (self.pose[:, 1] + step * torch.sin(heading)).clamp(-self.ARENA, self.ARENA)
        self.pose = torch.stack((x, y, heading), dim=-1)
        success = self.target_distance() <= self.SUCCESS_DISTANCE
        self._step_info = {"success": success}
        return success.to(torch.float32), success

    def _set_state(self, state: torch.Tensor) -> None:
        """``state`` ``[N, 5]``: ``(x, y, h, target_x, target_y)``; positions clamped to the arena, h wrapped."""
        if tuple(state.shape) != (self.num_envs, 5):
            raise ValueError(f"ActiveSearch: options['state'] must have shape {(self.num_envs, 5)}, "
                             f"got {tuple(state.shape)}")
        state = state.to(device=self.device, dtype=torch.float32)
        xy = state[:, :2].clamp(-self.ARENA, self.ARENA)
        self.pose = torch.cat((xy, wrap_angle(state[:, 2:3])), dim=-1)
        self.target = state[:, 3:5].clamp(-self.ARENA, self.ARENA).clone()

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"pose": self.pose, "target": self.target}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.pose = self._check_state_shape("pose", state["pose"], self.pose).clone()
        self.target = self._check_state_shape("target", state["target"], self.target).clone()

    # --- scripted demonstrator -------------------------------------------------------------------
    def expert_action(self, turn: float | None = None, speed: float | None = None,
                      noise: float | None = None) -> torch.Tensor:
        """The slow, noisy scripted searcher's actions ``[N, 2]`` (see the class docstring).

        ``turn``, ``speed``, ``noise`` override ``DEMO_TURN``, ``DEMO_SPEED``, ``DEMO_NOISE`` (e.g. the
        fast noiseless searcher is ``expert_action(1.0, 1.0, 0.0)``). The noise is drawn from the env's
        generator, so a seeded rollout is reproducible and part of the saved env state.
        """
        turn = self.DEMO_TURN if turn is None else turn
        speed = self.DEMO_SPEED if speed is None else speed
        noise = self.DEMO_NOISE if noise is None else noise
        rel = self.relative_target()
        seen = self.in_view(rel)
        xy, heading = self.pose[:, :2], self.pose[:, 2]
        # searching: turn counter-clockwise; creep toward the arena centre when facing it
        to_centre = wrap_angle(torch.atan2(-xy[:, 1], -xy[:, 0]) - heading)
        drift = (to_centre.abs() < math.pi / 6) & (xy.norm(dim=-1) > self.DEMO_CENTRE_RADIUS)
        search = torch.stack((drift.to(torch.float32) * speed, torch.full_like(heading, turn)), dim=-1)
        # in view: steer at the target, drive at `speed`
        bearing = torch.atan2(rel[:, 1], rel[:, 0])
        steer = (self.DEMO_STEER_GAIN * bearing / self.MAX_TURN).clamp(-1.0, 1.0)
        approach = torch.stack((torch.full_like(heading, speed), steer), dim=-1)
        action = torch.where(seen[:, None], approach, search)
        action = action + noise * torch.randn(action.shape, generator=self.generator, device=self.device)
        return action.clamp(-1.0, 1.0)

    # --- rendering -----------------------------------------------------------------------------
    def render(self, index: int = 0) -> np.ndarray:
        """Env ``index`` as ``uint8 [render_size, render_size, 3]``: grey arena, yellow sensor cone (range and
        half-angle), blue agent with a heading tick, red target (green once within the success distance)."""
        if not 0 <= index < self.num_envs:
            raise IndexError(f"render index {index} is out of range for {self.num_envs} envs")
        size = self.render_size
        x, y, h = (float(v) for v in self.pose[index].cpu())
        tx, ty = (float(v) for v in self.target[index].cpu())
        metres = (np.arange(size) + 0.5) / size * 2 * self.ARENA - self.ARENA
        px, py = np.meshgrid(metres, metres[::-1])  # row 0 is the top (+y)
        image = np.full((size, size, 3), 235, dtype=np.uint8)
        dx, dy = px - x, py - y
        ahead = np.cos(h) * dx + np.sin(h) * dy
        left = -np.sin(h) * dx + np.cos(h) * dy
        cone = (np.hypot(dx, dy) <= self.VIEW_RANGE) & (np.abs(np.arctan2(left, ahead)) <= self.VIEW_HALF_ANGLE)
        image[cone] = (250, 225, 120)
        pixel = 2 * self.ARENA / size
        radius = max(self.SUCCESS_DISTANCE / 2, 2 * pixel)
        reached = math.hypot(tx - x, ty - y) <= self.SUCCESS_DISTANCE
        image[np.hypot(px - tx, py - ty) <= radius] = (40, 170, 60) if reached else (210, 40, 40)
        image[np.hypot(dx, dy) <= radius] = (40, 80, 200)
        tick = (np.abs(left) <= pixel) & (ahead >= 0) & (ahead <= 2 * radius)
        image[tick] = (20, 20, 20)
        border = max(1, size // 128)
        image[:border], image[-border:], image[:, :border], image[:, -border:] = 60, 60, 60, 60
        return image


def reference_searcher(env: gym.vector.VectorEnv, obs: Any = None) -> torch.Tensor:
    """A fast scripted searcher ``[N, 2]`` (a :data:`envs.tasks.demos.Policy`), to show what the time limit allows.

    In view: steer at the target (turn ``2 bearing / MAX_TURN``, clipped), full speed. Out of view: during an
    episode's first 26 steps turn in place at the full rate (one full scan), then turn toward the arena
    centre and drive at full speed while facing it within 30 deg, and once within 0.1 m of the centre turn
    in place. It reads the policy group's information plus the episode step count (a memory a recurrent
    policy can keep). No noise. Measured success rate: :data:`REFERENCE_SUCCESS_RATE`.
    """
    task: ActiveSearch = env.unwrapped
    rel = task.relative_target()
    seen = task.in_view(rel)
    xy, heading = task.pose[:, :2], task.pose[:, 2]
    ones, zeros = torch.ones_like(heading), torch.zeros_like(heading)
    bearing = torch.atan2(rel[:, 1], rel[:, 0])
    approach = torch.stack((ones, (2.0 * bearing / task.MAX_TURN).clamp(-1.0, 1.0)), dim=-1)
    spin = torch.stack((zeros, ones), dim=-1)
    to_centre = wrap_angle(torch.atan2(-xy[:, 1], -xy[:, 0]) - heading)
    go = torch.stack(((to_centre.abs() < math.pi / 6).to(torch.float32), (to_centre / task.MAX_TURN).clamp(-1.0, 1.0)),
                     dim=-1)
    full_turn = math.ceil(2 * math.pi / task.MAX_TURN)
    scanning = (task.episode_steps < full_turn) | (xy.norm(dim=-1) <= 0.1)
    search = torch.where(scanning[:, None], spin, go)
    return torch.where(seen[:, None], approach, search)
