"""MaMuJoCo-style multi-agent partitions of the MuJoCo Warp locomotion tasks, batched on the GPU.

``drl/HalfCheetah-2x3-v0`` is :class:`envs.mjwarp.locomotion.HalfCheetah` (the v5 task on MuJoCo Warp)
whose six joints are split between two agents exactly as gymnasium-robotics' MaMuJoCo
(``mamujoco_v1.parallel_env("HalfCheetah", "2x3")``) splits them:

* agents ``agent_0, agent_1, ...``, one per part of the partition; each agent's action is the ctrl
  of its part's joints, in the part's order, and the joint action is their scatter into the task's
  ``[N, nu]`` action (MaMuJoCo's ``map_local_actions_to_global_action``);
* each agent observes (``agent_obsk = k``, default 1) its own joints with the local categories of
  depth 0 (``qpos``, ``qvel``; Ant also ``cfrc_ext`` of each joint's bodies, clipped to [-1, 1]),
  the joints at graph distance ``d <= k`` with those of depth ``d`` (``qpos``), and then the global
  nodes' ``qpos`` and ``qvel`` (the root's free coordinates), in MaMuJoCo's order (depth, then
  joint label, then category) and with its per-node rules (the root's x position hidden, Hopper's
  velocities clipped to [-10, 10]);
* ``obs["state"]`` is the single-agent v5 observation; every agent's reward is the single-agent
  reward (a cooperative team); ``terminated``/``truncated`` are the task's.

The graphs below are MaMuJoCo's (``gymnasium_robotics.envs.multiagent_mujoco.obsk.get_parts_and_edges``,
v1), written out as index tables so that every agent's observation is one gather from a per-env
source vector ``[qpos, qvel, clip(qvel, -10, 10), clip(cfrc_ext, -1, 1)]`` (no Python per step).
tests/envs/test_mjwarp_partitions.py checks them against gymnasium-robotics for the same physical state.

Physics, resets, truncation and the env-state capability are the wrapped task's (``env.task``); the
env's generator is the task's, so ``reset(seed=s)`` gives the single-agent task's initial states.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.mjwarp.locomotion import Ant, HalfCheetah, Hopper, Walker2d
from envs.multi_agent import STATE_KEY, MultiAgentTorchVecEnv

__all__ = ["MaMuJoCoPartition", "PARTITIONS", "agent_observation_indices"]

_QPOS, _QVEL, _QVEL_CLIP, _CFRC = "qpos", "qvel", "qvel_clip", "cfrc"


@dataclass(frozen=True)
class _Node:
    """One joint (or global coordinate) of MaMuJoCo's graph.

    ``qpos``/``qvel``: what the node shows for those categories, as ``(source, index)`` pairs (an
    empty tuple hides the category, as MaMuJoCo's ``extra_obs`` lambdas returning ``[]`` do);
    ``act``: its actuator (None for global nodes); ``bodies``: the bodies of its ``cfrc_ext``.
    """

    label: str
    qpos: tuple[tuple[str, int], ...]
    qvel: tuple[tuple[str, int], ...]
    act: int | None = None
    bodies: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Graph:
    task: type
    nodes: dict[str, _Node]
    edges: tuple[tuple[str, ...], ...]  # hyperedges: every node of one is adjacent to the others
    globals: tuple[str, ...]
    local_categories: tuple[tuple[str, ...], ...]  # per depth; the last repeats for deeper ones
    partitions: dict[str, tuple[tuple[str, ...], ...]]


def _joint(label: str, q: int, v: int, act: int, bodies: tuple[int, ...] = (), qvel: str = _QVEL) -> _Node:
    return _Node(label, ((_QPOS, q),), ((qvel, v),), act, bodies)


def _root(label: str, qpos: Sequence[int], qvel: Sequence[int], qvel_source: str = _QVEL) -> _Node:
    return _Node(label, tuple((_QPOS, i) for i in qpos), tuple((qvel_source, i) for i in qvel))


def _planar_roots(qvel_source: str = _QVEL) -> list[_Node]:
    """root_x (position hidden), root_z, root_y: the planar robots' global nodes."""
    return [_root("root_x", [], [0], qvel_source), _root("root_z", [1], [1], qvel_source),
            _root("root_y", [2], [2], qvel_source)]


def _graph(task: type, joints: list[_Node], roots: list[_Node], edges: list[tuple[str, ...]],
           local: list[tuple[str, ...]], partitions: dict[str, list[tuple[str, ...]]]) -> _Graph:
    nodes = {n.label: n for n in [*joints, *roots]}
    return _Graph(task, nodes, tuple(edges), tuple(n.label for n in roots), tuple(local),
                  {k: tuple(v) for k, v in partitions.items()})


_CHEETAH = ["bthigh", "bshin", "bfoot", "fthigh", "fshin", "ffoot"]
_WALKER = ["thigh_joint", "leg_joint", "foot_joint", "thigh_left_joint", "leg_left_joint", "foot_left_joint"]
_ANT_LEGS = [("hip1", "ankle1"), ("hip2", "ankle2"), ("hip3", "ankle3"), ("hip4", "ankle4")]
# Ant: (qpos index, actuator, cfrc_ext bodies) of each leg's hip and ankle (qvel index = qpos index - 1)
_ANT_JOINTS = {"hip1": (7, 2, (1, 2)), "ankle1": (8, 3, (2, 3, 4)), "hip2": (9, 4, (1, 5)),
               "ankle2": (10, 5, (5, 6, 7)), "hip3": (11, 6, (1, 8)), "ankle3": (12, 7, (8, 9, 10)),
               "hip4": (13, 0, (1, 11)), "ankle4": (14, 1, (11, 12, 13))}

GRAPHS: dict[str, _Graph] = {
    "HalfCheetah": _graph(
        HalfCheetah, [_joint(n, 3 + i, 3 + i, i) for i, n in enumerate(_CHEETAH)], _planar_roots(),
        list(zip(["bfoot", "bshin", "bthigh", "fthigh", "fshin"], ["bshin", "bthigh", "fthigh", "fshin", "ffoot"],
                 strict=True)),
        [(_QPOS, _QVEL), (_QPOS,)],
        {"2x3": [("bthigh", "bshin", "bfoot"), ("fthigh", "fshin", "ffoot")], "6x1": [(n,) for n in _CHEETAH]}),
    "Ant": _graph(
        Ant, [_joint(n, q, q - 1, a, b) for n, (q, a, b) in _ANT_JOINTS.items()],
        [_root("root", range(2, 7), range(0, 6))],
        [("ankle4", "hip4"), ("ankle1", "hip1"), ("ankle2", "hip2"), ("ankle3", "hip3"),
         ("hip4", "hip1", "hip2", "hip3")],
        [(_QPOS, _QVEL, _CFRC), (_QPOS,)],
        {"2x4": [("hip1", "ankle1", "hip2", "ankle2"), ("hip3", "ankle3", "hip4", "ankle4")],
         "2x4d": [("hip1", "ankle1", "hip4", "ankle4"), ("hip2", "ankle2", "hip3", "ankle3")],
         "4x2": _ANT_LEGS}),
    "Hopper": _graph(
        Hopper, [_joint(n, 3 + i, 3 + i, i, qvel=_QVEL_CLIP) for i, n in enumerate(_WALKER[:3])],
        _planar_roots(_QVEL_CLIP), [("foot_joint", "leg_joint"), ("leg_joint", "thigh_joint")],
        [(_QPOS, _QVEL), (_QPOS,)], {"3x1": [(n,) for n in _WALKER[:3]]}),
    "Walker2d": _graph(
        Walker2d, [_joint(n, 3 + i, 3 + i, i) for i, n in enumerate(_WALKER)], _planar_roots(),
        [("foot_joint", "leg_joint"), ("leg_joint", "thigh_joint"), ("foot_left_joint", "leg_left_joint"),
         ("leg_left_joint", "thigh_left_joint"), ("thigh_joint", "thigh_left_joint")],
        [(_QPOS, _QVEL), (_QPOS,)],
        {"2x3": [("foot_joint", "leg_joint", "thigh_joint"),
                 ("foot_left_joint", "leg_left_joint", "thigh_left_joint")]}),
}
# the registered ids (drl/<Robot>-<partition>-v0)
PARTITIONS: tuple[tuple[str, str], ...] = (("HalfCheetah", "2x3"), ("HalfCheetah", "6x1"), ("Ant", "2x4"),
                                           ("Ant", "4x2"), ("Walker2d", "2x3"), ("Hopper", "3x1"))


def _depths(graph: _Graph, part: tuple[str, ...], k: int) -> list[list[str]]:
    """MaMuJoCo's ``get_joints_at_kdist``: the joints at each distance ``0..k`` from ``part``, sorted by label."""
    explored, frontier, out = set(part), set(part), [sorted(part)]
    for _ in range(k):
        adjacent = {n for edge in graph.edges for n in edge if frontier & set(edge)}
        frontier = adjacent - explored
        explored |= frontier
        out.append(sorted(frontier))
    return out


def agent_observation_indices(
    robot: str, partition: str, agent_obsk: int, offsets: dict[str, int]
) -> list[list[int]]:
    """Per agent, the indices into the source vector that make its observation (MaMuJoCo's ``build_obs``).

    ``offsets``: where each source (``qpos``, ``qvel``, ``qvel_clip``, ``cfrc``) starts in the source
    vector; ``cfrc`` holds ``cfrc_ext`` flattened ``[nbody * 6]``.
    """
    graph = GRAPHS[robot]
    out = []
    for part in graph.partitions[partition]:
        index: list[int] = []
        seen_bodies: set[int] = set()
        for depth, labels in enumerate(_depths(graph, part, agent_obsk)):
            categories = graph.local_categories[min(depth, len(graph.local_categories) - 1)]
            for label in labels:
                node = graph.nodes[label]
                for category in categories:
                    if category == _CFRC:  # each body once per agent
                        for body in node.bodies:
                            if body not in seen_bodies:
                                seen_bodies.add(body)
                                index += [offsets[_CFRC] + 6 * body + j for j in range(6)]
                    else:
                        index += [offsets[src] + i for src, i in getattr(node, category)]
        for category in (_QPOS, _QVEL):  # the global categories, MaMuJoCo's default ("qpos", "qvel")
            for label in graph.globals:
                index += [offsets[src] + i for src, i in getattr(graph.nodes[label], category)]
        out.append(index)
    return out


class MaMuJoCoPartition(MultiAgentTorchVecEnv):
    """A MuJoCo Warp locomotion task split into MaMuJoCo's agents (see the module doc).

    Args:
        robot: ``"HalfCheetah"``, ``"Ant"``, ``"Hopper"`` or ``"Walker2d"``.
        partition: one of MaMuJoCo's partitions of that robot (``"2x3"``, ``"6x1"``, ``"2x4"``, ``"2x4d"``,
            ``"4x2"``, ``"3x1"``).
        num_envs: N, the number of env copies (warp worlds).
        device: the torch device (warp runs on the matching one).
        agent_obsk: k, the graph distance up to which an agent observes other joints (MaMuJoCo's default 1).
        max_episode_steps: truncation horizon (v5: 1000).
        **task_kwargs: the single-agent task's keyword arguments (v5 reward weights, ``xml_file``,
            backend options such as ``use_graph``). Arguments that change what the physics exposes
            to the agents (``exclude_current_positions_from_observation``) only change ``"state"``.

    Raises:
        ValueError: an unknown robot or partition, or ``agent_obsk < 0``.
    """

    def __init__(
        self,
        robot: str,
        partition: str,
        num_envs: int,
        device: str | torch.device = "cpu",
        agent_obsk: int = 1,
        max_episode_steps: int | None = 1000,
        **task_kwargs: Any,
    ):
        if robot not in GRAPHS:
            raise ValueError(f"MaMuJoCo partitions exist for {sorted(GRAPHS)}, not '{robot}'")
        graph = GRAPHS[robot]
        if partition not in graph.partitions:
            raise ValueError(f"{robot} has the partitions {sorted(graph.partitions)}, not '{partition}'")
        if isinstance(agent_obsk, bool) or not isinstance(agent_obsk, int) or agent_obsk < 0:
            raise ValueError(f"agent_obsk must be an integer >= 0 (graph distance observed), got {agent_obsk!r}")
        if robot == "Ant":  # MaMuJoCo's Ant agents observe cfrc_ext whatever the single-agent obs holds
            task_kwargs["compute_contact_forces"] = True
        self.task = graph.task(num_envs, device, max_episode_steps=None, **task_kwargs)
        self.robot, self.partition, self.agent_obsk = robot, partition, agent_obsk
        mjm = self.task.mj_model
        nq, nv = mjm.nq, mjm.nv
        offsets = {_QPOS: 0, _QVEL: nq, _QVEL_CLIP: nq + nv, _CFRC: nq + 2 * nv}
        self._with_cfrc = robot == "Ant"
        parts = graph.partitions[partition]
        names = [f"agent_{i}" for i in range(len(parts))]
        dev = self.task.device
        self._obs_index = [torch.as_tensor(ix, dtype=torch.long, device=dev)
                           for ix in agent_observation_indices(robot, partition, agent_obsk, offsets)]
        # agent i's action j is the task's actuator act_index[i][j] (MaMuJoCo's action mapping)
        self._act_index = [[graph.nodes[label].act for label in part] for part in parts]
        self._act_perm = torch.as_tensor([a for acts in self._act_index for a in acts], dtype=torch.long, device=dev)
        self._act_inverse = torch.argsort(self._act_perm)
        low = self.task.single_action_space.low
        high = self.task.single_action_space.high
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32)  # noqa: E731
        obs_spaces = {a: box(len(ix)) for a, ix in zip(names, self._obs_index, strict=True)}
        act_spaces = {a: gym.spaces.Box(low[acts], high[acts], dtype=np.float32)
                      for a, acts in zip(names, self._act_index, strict=True)}
        super().__init__(num_envs, obs_spaces, act_spaces, self.task.single_observation_space, max_episode_steps,
                         dev)
        self.generator = self.task.generator  # one generator: reset(seed) seeds the task's reset noise
        self.dt = self.task.dt
        # the task's simulator state, also here (what memory accounting, drl.resources.per_env_bytes, walks)
        self.mj_model, self.model, self.data = mjm, self.task.model, self.task.data
        self.qpos, self.qvel = self.task.qpos, self.task.qvel  # [N, nq], [N, nv] views of the warp state

    # --- the action and observation maps ------------------------------------------------------
    def joint_action(self, actions: dict[str, torch.Tensor]) -> torch.Tensor:
        """The single-agent action ``[N, nu]`` of the agents' ``{agent: [N, |part|]}`` actions."""
        stacked = torch.cat([actions[a].to(torch.float32).reshape(self.num_envs, -1) for a in self.agents], dim=1)
        return stacked[:, self._act_inverse]

    def agent_actions(self, action: torch.Tensor) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`joint_action`: ``[N, nu]`` -> ``{agent: [N, |part|]}``."""
        return {a: action[:, acts] for a, acts in zip(self.agents, self._act_index, strict=True)}

    def _source(self) -> torch.Tensor:
        """``[N, S]``: qpos, qvel, clip(qvel, -10, 10) and (Ant) clip(cfrc_ext, -1, 1) flattened."""
        task = self.task
        parts = [task.qpos, task.qvel, task.qvel.clamp(-10.0, 10.0)]
        if self._with_cfrc:
            parts.append(task.cfrc_ext.clamp(-1.0, 1.0).flatten(1))
        return torch.cat(parts, dim=1)

    # --- MultiAgentTorchVecEnv hooks (the task does the physics) -----------------------------
    def _observe(self) -> dict[str, torch.Tensor]:
        source = self._source()
        obs = {a: source[:, ix] for a, ix in zip(self.agents, self._obs_index, strict=True)}
        obs[STATE_KEY] = self.task._observe()
        return obs

    def _physics_step(self, actions: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        for agent in self.agents:
            expected = (self.num_envs, *self.single_action_spaces[agent].shape)
            if tuple(actions[agent].shape) != expected:
                raise ValueError(f"{type(self).__name__}: the action of agent '{agent}' must have shape {expected}, "
                                 f"got {tuple(actions[agent].shape)}")
        reward, terminated = self.task._physics_step(self.joint_action(actions))
        self._step_info = self.task._step_info
        return reward.unsqueeze(1).expand(-1, self.num_agents), terminated

    def _reset_envs(self, mask: torch.Tensor) -> None:
        self.task._reset_envs(mask)

    def _set_state(self, state: torch.Tensor) -> None:
        self.task._set_state(state)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return self.task._get_state()

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.task._load_state(state)

    @property
    def render_mode(self) -> str:
        return self.task.render_mode

    @property
    def render_fps(self) -> int:
        return self.task.render_fps

    def render(self, index: int = 0) -> np.ndarray:
        """An ``rgb_array`` frame of env ``index`` (the task's renderer)."""
        return self.task.render(index)

    def close_extras(self, **kwargs: Any) -> None:
        self.task.close()


def partition_entry_point(robot: str, partition: str) -> Any:
    """The vector entry point of ``drl/<robot>-<partition>-v0``: ``(num_envs, device, **kwargs) -> env``."""
    return functools.partial(MaMuJoCoPartition, robot, partition)


for _robot, _partition in PARTITIONS:  # module attributes the gymnasium registrations point at
    globals()[f"{_robot}_{_partition}"] = partition_entry_point(_robot, _partition)
