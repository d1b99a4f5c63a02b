"""Pursuit-evasion in a 2-D arena with circular obstacles: two competing teams, batched in torch.

The competitive task of issue 13 (after the pursuit-evasion games of "A Framework for Scalable
Heterogeneous Multi-Agent Adversarial RL in IsaacLab"): heterogeneous pursuers (by default a fast one with
a short sensor range and a slow one with a long range) chase evaders around randomly placed obstacles. It
follows the multi-agent contract of :mod:`envs.multi_agent` with two teams, ``"pursuers"`` and
``"evaders"``. Scripted team policies (:class:`GreedyPursuers`, :class:`FleeingEvaders`,
:class:`RandomTeam`) give reference opponents for the league evaluation of :mod:`drl.league`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.multi_agent import STATE_KEY, MultiAgentTorchVecEnv

__all__ = ["PursuitEvasion", "GreedyPursuers", "FleeingEvaders", "RandomTeam", "PURSUERS", "EVADERS",
           "OWN_DIM", "OTHER_DIM", "OBSTACLE_DIM"]

PURSUERS, EVADERS = "pursuers", "evaders"
OWN_DIM = 7  # (x, y, vx, vy, max_speed, sensor_range, alive)
OBSTACLE_DIM = 3  # (dx, dy, radius)
OTHER_DIM = 5  # (visible, dx, dy, vx, vy)
CANDIDATES = 16  # position draws per placement (the first valid one is used)


class PursuitEvasion(MultiAgentTorchVecEnv):
    """Batched pursuit-evasion: pursuers must come within ``capture_radius`` of every evader.

    World (lengths in arena units, one step = one action): the square ``[-arena_half, arena_half]^2`` with
    walls; ``num_obstacles`` discs. Agents are discs of radius ``agent_radius`` that collide with the walls
    and the obstacles but not with each other.

    Agents, in reward-column order: ``pursuer_0 .. pursuer_{P-1}`` (team ``"pursuers"``), then
    ``evader_0 .. evader_{E-1}`` (team ``"evaders"``). Agent ``i`` has a maximum speed ``speed_i`` (units
    per step) and a sensor range ``range_i``; the counts are the lengths of the speed lists.

    Actions, each agent ``Box(-1, 1, (2,))``: a velocity command. NaN reads as 0, each component is
    clipped to ``[-1, 1]`` and the vector is scaled to norm at most 1 (so every heading has the same top
    speed): the agent moves ``speed_i * a`` this step. A captured evader does not move. After the move the
    position is clamped into the walls (``|x|, |y| <= arena_half - agent_radius``) and then pushed out of
    any obstacle it entered, radially onto the obstacle grown by ``agent_radius`` (an agent heading for
    the centre of an obstacle stops at its edge; otherwise it slides along it). Obstacles are placed so
    that the grown discs do not overlap each other and leave room to the walls, so one push always ends in
    free space. The velocity kept in the state is the displacement actually made.

    Capture: evader ``j`` (alive at the start of the step) is captured when some pursuer came within
    ``capture_radius`` of it during the step, measured as the minimum over ``t in [0, 1]`` of the distance
    of the linearly interpolated relative position (so fast agents cannot pass through each other). A
    captured evader stays where it was caught, no longer moves, and is invisible to every sensor.

    Rewards ``[N, A]``, shared within each team (zero-sum between the team means):

    * each pursuer gets ``+capture_reward`` per evader captured this step, each evader ``-capture_reward``;
    * optional shaping (``shaping > 0``, default 0): potential-based on ``phi(s) = -sum over alive evaders
      of the distance to the nearest pursuer``: pursuers get ``shaping * (phi(s') - phi(s))``, evaders its
      negative. A capture removes the evader's term from ``phi(s')``.

    Episode ends: terminated when every evader is captured (``info["pursuers_win"]`` true on that step);
    truncated at ``max_episode_steps`` with an evader still free (``info["evaders_win"]`` true). Both
    flags are bool ``[N]`` every step, false where the episode did not end. There is no extra reward at
    the time-out: it is a truncation (bootstrapped), and the evaders' advantage is the captures avoided.

    Observation of agent ``i`` (float32, ``[N, 7 + 3 M + 5 (A - 1)]``), only its own view:

    * own ``(x, y, vx, vy, speed_i, range_i, alive)`` (``alive`` is 1 for pursuers);
    * per obstacle ``(dx, dy, radius)``: the centre relative to the agent (the map is known);
    * per other agent, in agent order without ``i``, ``(visible, dx, dy, vx, vy)``: ``visible`` is 1 when the
      other is alive, within ``range_i`` (distance ``<= range_i``) and, with ``occlusion`` (default), no
      obstacle blocks the line of sight (the segment between the two passes closer than the radius to an
      obstacle's centre); the relative position and the other's velocity are given only then, zeros
      otherwise. Evaders can hide behind obstacles.

    ``obs["state"]`` (``[N, 5 A + 3 M + 1]``): every agent's ``(x, y, vx, vy, alive)``, every obstacle's
    ``(x, y, radius)`` and the time ``t / max_episode_steps`` (0 without a time limit).

    Start (per episode, from the env generator): obstacle radii uniform in ``obstacle_radius``, centres
    uniform where they keep clear of the walls and of the earlier obstacles; agents uniform in free space,
    evaders at least ``min_start_distance`` from every pursuer (16 draws each, the first valid one is
    taken; if none is, the draw that violates least). ``reset(options={"state": s})`` places everything by
    hand: ``s`` ``[N, 2 A + 3 M]`` = every agent's ``(x, y)`` then every obstacle's ``(x, y, radius)``;
    velocities zero, every evader alive, positions clamped into the walls (obstacles are not checked).

    The env-state capability (``state_dict``/``load_state_dict``) saves positions, velocities, capture
    flags and obstacles. ``render(index)`` draws one env copy as ``uint8 [H, W, 3]`` with numpy.

    Args:
        num_envs: N, env copies.
        device: where every tensor lives.
        max_episode_steps: the time limit (truncation), default 200.
        pursuer_speeds, pursuer_ranges: per pursuer, units per step and sensor range (same length, >= 1).
        evader_speeds, evader_ranges: per evader (same length, >= 1).
        arena_half: half the arena's side.
        num_obstacles: M discs (>= 0).
        obstacle_radius: ``(low, high)`` of the uniform obstacle radius.
        capture_radius: pursuer-evader distance that captures.
        agent_radius: the agents' body radius (for walls and obstacles).
        min_start_distance: the least start distance of an evader from every pursuer.
        capture_reward: the reward per capture.
        shaping: the scale of the distance shaping (0: none).
        occlusion: obstacles block the sensors' line of sight.
        render_size: pixels per side of :meth:`render`.

    Raises:
        ValueError: a bad option (named in the message).
    """

    metadata: dict[str, Any] = {**MultiAgentTorchVecEnv.metadata, "render_modes": ["rgb_array"], "render_fps": 20}
    render_mode = "rgb_array"
    render_fps = 20

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        max_episode_steps: int | None = 200,
        pursuer_speeds: Sequence[float] = (0.06, 0.03),
        pursuer_ranges: Sequence[float] = (0.5, 1.5),
        evader_speeds: Sequence[float] = (0.05,),
        evader_ranges: Sequence[float] = (1.0,),
        arena_half: float = 1.0,
        num_obstacles: int = 3,
        obstacle_radius: Sequence[float] = (0.1, 0.2),
        capture_radius: float = 0.1,
        agent_radius: float = 0.02,
        min_start_distance: float = 0.5,
        capture_reward: float = 1.0,
        shaping: float = 0.0,
        occlusion: bool = True,
        render_size: int = 256,
    ):
        name = type(self).__name__
        for what, speeds, ranges in (("pursuer", pursuer_speeds, pursuer_ranges),
                                     ("evader", evader_speeds, evader_ranges)):
            if len(speeds) < 1 or len(speeds) != len(ranges):
                raise ValueError(f"{name}: {what}_speeds and {what}_ranges must be lists of the same length >= 1, "
                                 f"got {list(speeds)} and {list(ranges)}")
            if min(speeds) <= 0 or min(ranges) <= 0:
                raise ValueError(f"{name}: {what} speeds and ranges must be > 0, got {list(speeds)}, {list(ranges)}")
        low_r, high_r = (float(r) for r in obstacle_radius)
        if num_obstacles < 0 or not 0 < low_r <= high_r:
            raise ValueError(f"{name}: num_obstacles must be >= 0 and obstacle_radius (low, high) with "
                             f"0 < low <= high, got {num_obstacles}, {list(obstacle_radius)}")
        if arena_half <= 0 or capture_radius <= 0 or agent_radius < 0 or min_start_distance < 0 or shaping < 0:
            raise ValueError(f"{name}: arena_half and capture_radius must be > 0 and agent_radius, "
                             f"min_start_distance, shaping >= 0")
        if high_r + 2 * agent_radius >= arena_half:
            raise ValueError(f"{name}: obstacles of radius {high_r} do not fit the arena of half side {arena_half}")
        if render_size < 16:
            raise ValueError(f"{name}: render_size must be >= 16 pixels, got {render_size}")
        self.num_pursuers, self.num_evaders, self.num_obstacles = len(pursuer_speeds), len(evader_speeds), num_obstacles
        pursuers = [f"pursuer_{i}" for i in range(self.num_pursuers)]
        evaders = [f"evader_{j}" for j in range(self.num_evaders)]
        agents = pursuers + evaders
        num_agents, m = len(agents), num_obstacles
        obs_dim = OWN_DIM + OBSTACLE_DIM * m + OTHER_DIM * (num_agents - 1)
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        act = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        super().__init__(num_envs, {a: box(obs_dim) for a in agents}, {a: act for a in agents},
                         box(5 * num_agents + OBSTACLE_DIM * m + 1), max_episode_steps, device,
                         teams={PURSUERS: pursuers, EVADERS: evaders})
        self.arena_half, self.capture_radius = float(arena_half), float(capture_radius)
        self.agent_radius = float(agent_radius)
        self.obstacle_radius = (low_r, high_r)
        self.min_start_distance = float(min_start_distance)
        self.capture_reward, self.shaping = float(capture_reward), float(shaping)
        self.occlusion = bool(occlusion)
        self.render_size = int(render_size)
        self.speeds = torch.tensor([*pursuer_speeds, *evader_speeds], dtype=torch.float32, device=self.device)
        self.ranges = torch.tensor([*pursuer_ranges, *evader_ranges], dtype=torch.float32, device=self.device)
        self.is_pursuer = torch.arange(num_agents, device=self.device) < self.num_pursuers
        self.pos = torch.zeros(num_envs, num_agents, 2, device=self.device)
        self.vel = torch.zeros(num_envs, num_agents, 2, device=self.device)
        self.alive = torch.ones(num_envs, self.num_evaders, dtype=torch.bool, device=self.device)
        self.obstacles = torch.zeros(num_envs, m, 3, device=self.device)  # (x, y, radius)
        # others[i]: the agent indices agent i observes, in agent order without i
        self.others = torch.tensor([[k for k in range(num_agents) if k != i] for i in range(num_agents)],
                                   dtype=torch.long, device=self.device).reshape(num_agents, num_agents - 1)

    # --- layout helpers (for scripted policies) ---------------------------------------------------
    def other_agents(self, agent: str) -> tuple[str, ...]:
        """The agents in ``agent``'s observation, in order (every agent but ``agent``)."""
        return tuple(a for a in self.agents if a != agent)

    def split_observation(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        """One agent's observation ``[N, D]`` as ``own [N, 7]``, ``obstacles [N, M, 3]``, ``others [N, A-1, 5]``."""
        n, m = obs.shape[0], self.num_obstacles
        return {"own": obs[:, :OWN_DIM],
                "obstacles": obs[:, OWN_DIM:OWN_DIM + OBSTACLE_DIM * m].reshape(n, m, OBSTACLE_DIM),
                "others": obs[:, OWN_DIM + OBSTACLE_DIM * m:].reshape(n, self.num_agents - 1, OTHER_DIM)}

    def scripted_policies(self, team: str) -> dict[str, Any]:
        """The scripted reference policies of ``team`` by name (league opponents, :mod:`drl.league`):
        pursuers ``{"random", "greedy"}`` (:class:`RandomTeam`, :class:`GreedyPursuers`), evaders
        ``{"random", "fleeing"}`` (:class:`RandomTeam`, :class:`FleeingEvaders`); ValueError for another team."""
        if team == PURSUERS:
            return {"random": RandomTeam(self, PURSUERS), "greedy": GreedyPursuers(self)}
        if team == EVADERS:
            return {"random": RandomTeam(self, EVADERS), "fleeing": FleeingEvaders(self)}
        raise ValueError(f"{type(self).__name__}: no team {team!r}; teams: {list(self.teams)}")

    @property
    def agent_alive(self) -> torch.Tensor:
        """``[N, A]`` bool: pursuers always, evaders until captured."""
        pursuers = torch.ones(self.num_envs, self.num_pursuers, dtype=torch.bool, device=self.device)
        return torch.cat((pursuers, self.alive), dim=1)

    # --- geometry -----------------------------------------------------------------------------------
    def _resolve_collisions(self, pos: torch.Tensor) -> torch.Tensor:
        """``pos [N, A, 2]`` clamped into the walls, then pushed radially out of the grown obstacles."""
        bound = self.arena_half - self.agent_radius
        pos = pos.clamp(-bound, bound)
        for k in range(self.num_obstacles):
            centre, reach = self.obstacles[:, k:k + 1, :2], self.obstacles[:, k:k + 1, 2:] + self.agent_radius
            offset = pos - centre
            dist = offset.norm(dim=-1, keepdim=True)
            plus_x = torch.tensor([1.0, 0.0], device=self.device)  # the push direction from the very centre
            direction = torch.where(dist > 0, offset / dist.clamp_min(1e-12), plus_x)
            pos = torch.where(dist < reach, centre + direction * reach, pos)
        return pos

    def _capture(self, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
        """``[N, E]`` bool: evaders alive at the start that a pursuer came within ``capture_radius`` of."""
        p = self.num_pursuers
        rel0 = start[:, None, p:] - start[:, :p, None]  # [N, P, E, 2]: evader minus pursuer
        delta = (end[:, None, p:] - end[:, :p, None]) - rel0
        moved = (delta * delta).sum(-1)
        t = torch.where(moved > 0, -(rel0 * delta).sum(-1) / moved.clamp_min(1e-12), torch.zeros_like(moved))
        closest = (rel0 + t.clamp(0.0, 1.0)[..., None] * delta).norm(dim=-1)  # [N, P, E]
        return (closest <= self.capture_radius).any(dim=1) & self.alive

    def _blocked(self, rel: torch.Tensor) -> torch.Tensor:
        """``[N, A, A-1]``: an obstacle cuts the segment from agent ``i`` to its ``k``-th other (``rel`` its offset)."""
        start = self.pos[:, :, None, None]  # [N, A, 1, 1, 2]
        seg = rel[:, :, :, None]  # [N, A, A-1, 1, 2]
        to_centre = self.obstacles[:, None, None, :, :2] - start  # [N, A, 1, M, 2]
        length2 = (seg * seg).sum(-1)
        t = ((to_centre * seg).sum(-1) / length2.clamp_min(1e-12)).clamp(0.0, 1.0)  # the closest point's fraction
        gap = (t[..., None] * seg - to_centre).norm(dim=-1)  # [N, A, A-1, M]
        return (gap < self.obstacles[:, None, None, :, 2]).any(-1)

    def _potential(self) -> torch.Tensor:
        """``phi [N]``: minus the sum over alive evaders of the distance to the nearest pursuer."""
        p = self.num_pursuers
        nearest = (self.pos[:, None, p:] - self.pos[:, :p, None]).norm(dim=-1).amin(dim=1)  # [N, E]
        return -(nearest * self.alive).sum(-1)

    # --- placement ------------------------------------------------------------------------------------
    def _first_valid(self, candidates: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
        """The first candidate with ``score >= 0`` (else the best score): ``[N, K, D] -> [N, D]``."""
        valid = score >= 0
        pick = torch.where(valid.any(-1), valid.to(torch.int8).argmax(-1), score.argmax(-1))
        return candidates[torch.arange(candidates.shape[0], device=self.device), pick]

    def _draw_obstacles(self) -> torch.Tensor:
        n, (low_r, high_r), r = self.num_envs, self.obstacle_radius, self.agent_radius
        placed: list[torch.Tensor] = []
        for _ in range(self.num_obstacles):
            radius = self._uniform(low_r, high_r, (n, CANDIDATES, 1))
            limit = self.arena_half - radius - 2 * r  # the grown disc and an agent fit between it and the wall
            centre = self._uniform(-1.0, 1.0, (n, CANDIDATES, 2)) * limit
            score = torch.zeros(n, CANDIDATES, device=self.device)
            if placed:
                prev = torch.stack(placed, dim=1)  # [N, k, 3]
                gap = (centre[:, :, None] - prev[:, None, :, :2]).norm(dim=-1) - (radius + prev[:, None, :, 2] + 2 * r)
                score = gap.amin(-1)
            placed.append(self._first_valid(torch.cat((centre, radius), -1), score))
        return torch.stack(placed, dim=1) if placed else torch.zeros(n, 0, 3, device=self.device)

    def _free_space_score(self, candidates: torch.Tensor, obstacles: torch.Tensor) -> torch.Tensor:
        """``[N, K]``: the least clearance of each candidate from the grown obstacles (>= 0: free)."""
        if self.num_obstacles == 0:
            return torch.zeros(candidates.shape[:2], device=self.device)
        dist = (candidates[:, :, None] - obstacles[:, None, :, :2]).norm(dim=-1)
        return (dist - obstacles[:, None, :, 2] - self.agent_radius).amin(-1)

    def _draw_positions(self, obstacles: torch.Tensor) -> torch.Tensor:
        n, bound = self.num_envs, self.arena_half - self.agent_radius
        chosen: list[torch.Tensor] = []
        for i in range(self.num_agents):
            candidates = self._uniform(-bound, bound, (n, CANDIDATES, 2))
            score = self._free_space_score(candidates, obstacles)
            if i >= self.num_pursuers:
                pursuers = torch.stack(chosen[: self.num_pursuers], dim=1)  # [N, P, 2]
                far = (candidates[:, :, None] - pursuers[:, None]).norm(dim=-1).amin(-1) - self.min_start_distance
                score = torch.minimum(score, far)
            chosen.append(self._first_valid(candidates, score))
        return torch.stack(chosen, dim=1)

    # --- TorchVecEnv hooks -----------------------------------------------------------------------------
    def _reset_envs(self, mask: torch.Tensor) -> None:
        """Fresh obstacles and start positions where ``mask [N]`` is true (fixed draws: no host sync)."""
        obstacles = self._draw_obstacles()
        pos = self._draw_positions(obstacles)
        self.obstacles = torch.where(mask[:, None, None], obstacles, self.obstacles)
        self.pos = torch.where(mask[:, None, None], pos, self.pos)
        self.vel = torch.where(mask[:, None, None], torch.zeros_like(self.vel), self.vel)
        self.alive = self.alive | mask[:, None]

    def _observe(self) -> dict[str, torch.Tensor]:
        """``{agent: [N, 7 + 3 M + 5 (A - 1)], "state": [N, 5 A + 3 M + 1]}`` (layout: the class doc)."""
        n, num_agents = self.num_envs, self.num_agents
        alive = self.agent_alive.to(torch.float32)  # [N, A]
        own = torch.cat((self.pos, self.vel, self.speeds.expand(n, num_agents)[..., None],
                         self.ranges.expand(n, num_agents)[..., None], alive[..., None]), dim=-1)  # [N, A, 7]
        rel_obstacles = self.obstacles[:, None, :, :2] - self.pos[:, :, None]  # [N, A, M, 2]
        radii = self.obstacles[:, None, :, 2:].expand(n, num_agents, self.num_obstacles, 1)
        obstacles = torch.cat((rel_obstacles, radii), -1).reshape(n, num_agents, -1)
        rel = self.pos[:, self.others] - self.pos[:, :, None]  # [N, A, A-1, 2]
        visible = (rel.norm(dim=-1) <= self.ranges[:, None]) & self.agent_alive[:, self.others]  # [N, A, A-1]
        if self.occlusion and self.num_obstacles:
            visible = visible & ~self._blocked(rel)
        flag = visible.to(torch.float32)[..., None]
        others = torch.cat((torch.ones_like(flag), rel, self.vel[:, self.others]), -1) * flag
        others = others.reshape(n, num_agents, -1)
        per_agent = torch.cat((own, obstacles, others), -1)
        obs = {a: per_agent[:, i] for i, a in enumerate(self.agents)}
        horizon = self.max_episode_steps
        time = self.episode_steps.to(torch.float32) / horizon if horizon else torch.zeros(n, device=self.device)
        state = torch.cat((torch.cat((self.pos, self.vel, alive[..., None]), -1).reshape(n, -1),
                           self.obstacles.reshape(n, -1), time[:, None]), -1)
        obs[STATE_KEY] = state
        return obs

    def _physics_step(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Move, collide, capture; returns ``(reward [N, A], terminated [N])``."""
        shape = (self.num_envs, 2)
        for a in self.agents:
            if tuple(actions[a].shape) != shape:
                raise ValueError(f"PursuitEvasion: actions[{a!r}] must have shape {shape}, "
                                 f"got {tuple(actions[a].shape)}")
        act = torch.stack([actions[a] for a in self.agents], 1).to(torch.float32)
        act = torch.nan_to_num(act).clamp(-1.0, 1.0)
        act = act / act.norm(dim=-1, keepdim=True).clamp_min(1.0)
        act = act * self.agent_alive[..., None]  # a captured evader stays put
        phi = self._potential()
        start = self.pos
        self.pos = self._resolve_collisions(start + self.speeds[:, None] * act)
        self.vel = self.pos - start
        caught = self._capture(start, self.pos)  # [N, E]
        self.alive = self.alive & ~caught
        captures = caught.sum(-1).to(torch.float32)  # [N]
        team = self.capture_reward * captures
        if self.shaping > 0:
            team = team + self.shaping * (self._potential() - phi)
        reward = torch.where(self.is_pursuer, team[:, None], -team[:, None])
        terminated = ~self.alive.any(-1)
        if self.max_episode_steps is None:
            timeout = torch.zeros_like(terminated)
        else:
            timeout = self.episode_steps + 1 >= self.max_episode_steps
        self._step_info = {"pursuers_win": terminated, "evaders_win": timeout & ~terminated}
        return reward, terminated

    def _set_state(self, state: torch.Tensor) -> None:
        """``state [N, 2 A + 3 M]``: agent positions, then obstacles ``(x, y, radius)``; see the class doc."""
        want = (self.num_envs, 2 * self.num_agents + OBSTACLE_DIM * self.num_obstacles)
        if tuple(state.shape) != want:
            raise ValueError(f"PursuitEvasion: options['state'] must have shape {want}, got {tuple(state.shape)}")
        state = state.to(device=self.device, dtype=torch.float32)
        bound = self.arena_half - self.agent_radius
        self.pos = state[:, : 2 * self.num_agents].reshape(self.num_envs, -1, 2).clamp(-bound, bound).clone()
        self.obstacles = state[:, 2 * self.num_agents:].reshape(self.num_envs, -1, OBSTACLE_DIM).clone()
        self.vel = torch.zeros_like(self.vel)
        self.alive = torch.ones_like(self.alive)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"pos": self.pos, "vel": self.vel, "alive": self.alive, "obstacles": self.obstacles}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        for key in ("pos", "vel", "alive", "obstacles"):
            setattr(self, key, self._check_state_shape(key, state[key], getattr(self, key)).clone())

    # --- rendering ---------------------------------------------------------------------------------------
    def render(self, index: int = 0) -> np.ndarray:
        """Env ``index`` as ``uint8 [render_size, render_size, 3]``: grey obstacles, each pursuer's sensor
        range as a faint ring, pursuers blue (the capture radius as a light disc), evaders red (grey once
        captured)."""
        if not 0 <= index < self.num_envs:
            raise IndexError(f"render index {index} is out of range for {self.num_envs} envs")
        size, half = self.render_size, self.arena_half
        units = (np.arange(size) + 0.5) / size * 2 * half - half
        px, py = np.meshgrid(units, units[::-1])  # row 0 is the top (+y)
        image = np.full((size, size, 3), 240, dtype=np.uint8)
        pixel = 2 * half / size
        pos = self.pos[index].cpu().numpy()
        alive = self.agent_alive[index].cpu().numpy()
        for x, y, r in self.obstacles[index].cpu().numpy():
            image[np.hypot(px - x, py - y) <= r] = (120, 120, 120)
        body = max(self.agent_radius, 2 * pixel)
        for i in range(self.num_pursuers):
            d = np.hypot(px - pos[i, 0], py - pos[i, 1])
            image[np.abs(d - float(self.ranges[i])) <= pixel] = (170, 190, 230)
            image[d <= self.capture_radius] = (200, 215, 245)
        for i in range(self.num_agents):
            d = np.hypot(px - pos[i, 0], py - pos[i, 1])
            colour = (40, 80, 200) if i < self.num_pursuers else ((210, 40, 40) if alive[i] else (90, 90, 90))
            image[d <= body * (1.5 if i < self.num_pursuers else 1.0)] = colour
        border = max(1, size // 128)
        image[:border], image[-border:], image[:, :border], image[:, -border:] = 60, 60, 60, 60
        return image


# --- scripted team policies: callables obs dict -> {agent: actions [N, 2]} for one team ----------------------
def _unit(vec: torch.Tensor) -> torch.Tensor:
    """``vec [..., 2]`` scaled to norm 1 (zero stays zero)."""
    return vec / vec.norm(dim=-1, keepdim=True).clamp_min(1e-9)


class GreedyPursuers:
    """Each pursuer heads at full speed for the nearest evader it sees; seeing none, for the arena centre.

    Reads only each pursuer's own observation (the visibility flags and relative positions).
    """

    def __init__(self, env: PursuitEvasion):
        self.agents = env.teams[PURSUERS]
        self.env = env
        self.evader_columns = {a: [k for k, b in enumerate(env.other_agents(a)) if b in env.teams[EVADERS]]
                               for a in self.agents}

    def __call__(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        actions = {}
        for a in self.agents:
            part = self.env.split_observation(obs[a])
            seen = part["others"][:, self.evader_columns[a]]  # [N, E, 5]
            dist = torch.where(seen[..., 0] > 0, seen[..., 1:3].norm(dim=-1), torch.full_like(seen[..., 0], math.inf))
            nearest = seen[torch.arange(seen.shape[0], device=seen.device), dist.argmin(-1), 1:3]
            target = torch.where(torch.isfinite(dist.amin(-1))[:, None], nearest, -part["own"][:, :2])
            actions[a] = _unit(target)
        return actions


class FleeingEvaders:
    """Each evader runs from the pursuers it sees (away from each, weighted by 1 / distance); seeing none,
    it stays. Reads only each evader's own observation."""

    def __init__(self, env: PursuitEvasion):
        self.agents = env.teams[EVADERS]
        self.env = env
        self.pursuer_columns = {a: [k for k, b in enumerate(env.other_agents(a)) if b in env.teams[PURSUERS]]
                                for a in self.agents}

    def __call__(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        actions = {}
        for a in self.agents:
            seen = self.env.split_observation(obs[a])["others"][:, self.pursuer_columns[a]]  # [N, P, 5]
            rel = seen[..., 1:3]
            weight = seen[..., :1] / (rel * rel).sum(-1, keepdim=True).clamp_min(1e-6)  # unit direction / distance
            actions[a] = _unit(-(rel * weight).sum(1))
        return actions


class RandomTeam:
    """Uniform random actions in ``[-1, 1]^2`` for one team's agents, from its own generator.

    ``reset(seed)`` reseeds it (the league evaluation calls it so a seeded evaluation repeats exactly).
    """

    def __init__(self, env: PursuitEvasion, team: str, seed: int = 0):
        self.agents = env.teams[team]
        self.device = env.device
        self.generator = torch.Generator(device=env.device)
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Reseed the action draws."""
        self.generator.manual_seed(int(seed))

    def __call__(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = obs[STATE_KEY].shape[0]
        return {a: torch.rand(n, 2, generator=self.generator, device=self.device) * 2 - 1 for a in self.agents}
