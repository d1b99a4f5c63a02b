"""drl environments: every id registered with gymnasium under the ``drl/`` namespace.

``gymnasium.make_vec("drl/CartPole-v0", num_envs=4096, device="cuda")`` gives the batched torch env;
``gymnasium.make("drl/CartPole-v0")`` gives a single numpy env (the batched env with one copy).
:func:`make_vec_env` is what drl itself calls: it accepts these ids and any plain gymnasium id.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch

from envs.core import GymnasiumVecEnv, MissingDependencyError, TorchVecEnv, resolve_device

__all__ = ["EnvInfo", "ENVS", "ENV_FAMILIES", "make_vec_env", "register_env", "TorchVecEnv", "GymnasiumVecEnv"]


@dataclass(frozen=True)
class EnvInfo:
    """What ``drl list`` shows about a registered env."""

    id: str
    backend: str
    devices: str
    extra: str | None  # the pip extra the backend needs, if any
    description: str
    num_tasks: int = 1  # a multi-task env (envs.multi_task): its copies come in multiples of this


ENVS: dict[str, EnvInfo] = {}
# id schemes resolved by make_vec_env without a gymnasium registration (shown by ``drl list``)
ENV_FAMILIES: dict[str, EnvInfo] = {
    "mamujoco:<Robot>-<partition>": EnvInfo(
        "mamujoco:<Robot>-<partition>", "pettingzoo adapter", "cpu", "multiagent",
        "gymnasium-robotics MaMuJoCo (multi-agent), e.g. mamujoco:HalfCheetah-2x3; env kwargs e.g. agent_obsk"),
    "pettingzoo:<module path>": EnvInfo(
        "pettingzoo:<module path>", "pettingzoo adapter", "cpu", "multiagent",
        "any PettingZoo parallel env (multi-agent), e.g. pettingzoo:pettingzoo.sisl.pursuit_v5"),
}


def register_env(
    env_id: str,
    vector_entry_point: str,
    backend: str,
    devices: str,
    description: str,
    extra: str | None = None,
    num_tasks: int = 1,
) -> None:
    """Register a batched torch env with gymnasium (vector and single-env entry points); a multi-task
    env (:mod:`envs.multi_task`) says its ``num_tasks``."""
    gym.register(
        id=env_id,
        entry_point=_single_env_factory(vector_entry_point),
        vector_entry_point=vector_entry_point,
        disable_env_checker=True,
    )
    ENVS[env_id] = EnvInfo(env_id, backend, devices, extra, description, num_tasks)


def _single_env_factory(vector_entry_point: str):
    def make_single(**kwargs: Any) -> gym.Env:
        from envs.single import TorchSingleEnv

        return TorchSingleEnv(vector_entry_point, **kwargs)

    return make_single


_CLASSIC = "torch (batched)"
register_env("drl/CartPole-v0", "envs.torch_classic.cartpole:CartPole", _CLASSIC, "cpu, cuda",
             "CartPole-v1 dynamics, batched in torch")
register_env("drl/Pendulum-v0", "envs.torch_classic.pendulum:Pendulum", _CLASSIC, "cpu, cuda",
             "Pendulum-v1 dynamics, batched in torch")
register_env("drl/MountainCarContinuous-v0", "envs.torch_classic.mountain_car:MountainCarContinuous", _CLASSIC,
             "cpu, cuda", "MountainCarContinuous-v0 dynamics, batched in torch")
register_env("drl/Acrobot-v0", "envs.torch_classic.acrobot:Acrobot", _CLASSIC, "cpu, cuda",
             "Acrobot-v1 dynamics, batched in torch")
for _name in ("HalfCheetah", "Hopper", "Walker2d", "Ant"):
    register_env(f"drl/{_name}-v0", f"envs.mjwarp.locomotion:{_name}", "mujoco-warp", "cuda, cpu (warp)",
                 f"{_name}-v5 (gymnasium MJCF and task definition) on MuJoCo Warp", extra="mjwarp")
for _name in ("Swimmer", "InvertedPendulum"):  # the RARL paper's other tasks (issue 12)
    register_env(f"drl/{_name}-v0", f"envs.mjwarp.locomotion:{_name}", "mujoco-warp", "cuda, cpu (warp)",
                 f"{_name}-v5 (gymnasium MJCF and task definition) on MuJoCo Warp", extra="mjwarp")
for _name, _part, _agents in (("HalfCheetah", "2x3", "2 agents: back / front leg"),
                              ("HalfCheetah", "6x1", "6 agents: one joint each"),
                              ("Ant", "2x4", "2 agents: front / back legs"), ("Ant", "4x2", "4 agents: one leg each"),
                              ("Walker2d", "2x3", "2 agents: right / left leg"),
                              ("Hopper", "3x1", "3 agents: one joint each")):  # multi-agent (issue 13)
    register_env(f"drl/{_name}-{_part}-v0", f"envs.mjwarp.partitions:{_name}_{_part}", "mujoco-warp",
                 "cuda, cpu (warp)", f"multi-agent {_name}-v5 as MaMuJoCo '{_part}' ({_agents}) on MuJoCo Warp",
                 extra="mjwarp")
for _name, _what in (("Reach", "reach a target"), ("Push", "push a cube to a goal"),
                     ("PickPlace", "pick a cube and place it at a goal")):
    register_env(f"drl/Panda{_name}-v0", f"envs.tasks.panda:Panda{_name}", "pybullet", "cpu",
                 f"Franka Panda: {_what}; 'policy'/'critic' obs groups", extra="pybullet")
register_env("drl/PandaPickOccluded-v0", "envs.tasks.panda:PandaPickOccluded", "pybullet", "cpu",
             "Franka Panda: pick-and-place, the cube occluded from 'policy' at random steps", extra="pybullet")


register_env("drl/CartPoleNoVel-v0", "envs.tasks.partial:CartPoleNoVel", _CLASSIC, "cpu, cuda",
             "CartPole-v1; 'policy': (x, theta), 'critic': the full state")
register_env("drl/PendulumNoVel-v0", "envs.tasks.partial:PendulumNoVel", _CLASSIC, "cpu, cuda",
             "Pendulum-v1; 'policy': (cos, sin), 'critic': with the velocity")
register_env("drl/CoverageGrid-v0", "envs.tasks.coverage:CoverageGrid", _CLASSIC, "cpu, cuda",
             "30x30 gridworld, horizon 40, no reward of its own: for submodular objectives (subpo)")
register_env("drl/CoveragePointMass-v0", "envs.tasks.coverage:CoveragePointMass", _CLASSIC, "cpu, cuda",
             "point mass on [-20, 20]^2, horizon 100, 100x100 coverage grid; no reward of its own (subpo)")
register_env("drl/ActiveSearch-v0", "envs.tasks.active_search:ActiveSearch", _CLASSIC, "cpu, cuda",
             "find a target with a 60 deg sensor, reach it; sparse; 'critic': the target; demonstrator")
# multi-agent (envs/multi_agent.py contract): obs {agent: ..., "state": ...}, reward [N, A]
register_env("drl/Rendezvous-v0", "envs.tasks.rendezvous:Rendezvous", _CLASSIC, "cpu, cuda",
             "2 heterogeneous agents (rover: plane, rail: x axis) meet at a goal; multi-agent, shared reward")
register_env("drl/RendezvousDiscrete-v0", "envs.tasks.rendezvous:RendezvousDiscrete", _CLASSIC, "cpu, cuda",
             "drl/Rendezvous-v0 with per-agent Discrete actions (rover 5 moves, rail 3)")
register_env("drl/PursuitEvasion-v0", "envs.tasks.pursuit_evasion:PursuitEvasion", _CLASSIC, "cpu, cuda",
             "multi-agent, 2 teams: a fast short-sensor and a slow long-sensor pursuer vs an evader, obstacles")

register_env("drl/MT-CartPole-v0", "envs.multi_task_sources:make_mt_cartpole", _CLASSIC, "cpu, cuda",
             "multi-task: CartPole with 4 pole/force variants (obs 'policy' + 'task' one-hot)", num_tasks=4)
register_env("drl/MT-Pendulum-v0", "envs.multi_task_sources:make_mt_pendulum", _CLASSIC, "cpu, cuda",
             "multi-task: Pendulum with 4 mass/length/gravity variants (obs 'policy' + 'task' one-hot)",
             num_tasks=4)


def make_vec_env(
    env_id: str,
    num_envs: int,
    device: str | torch.device = "cpu",
    vectorization: str = "sync",
    env_kwargs: dict[str, Any] | None = None,
) -> gym.vector.VectorEnv:
    """Build a vector env that speaks the torch contract of :mod:`envs.core`.

    ``drl/...`` ids build the batched backend on ``device``; ``mamujoco:<Robot>-<partition>`` and
    ``pettingzoo:<module path>`` build :class:`envs.pettingzoo.PettingZooVecEnv` (multi-agent, the
    families in :data:`ENV_FAMILIES`); any other gymnasium id goes through
    :class:`GymnasiumVecEnv` (``vectorization`` = ``"sync"`` or ``"async"``). Gymnasium's
    ``"module:Env-v0"`` form imports ``module`` first (where ``Env-v0`` is registered). The multi-task
    schemes ``minigrid-mt:<set>`` and ``metaworld:<set>`` build a :class:`envs.multi_task.MultiTaskVecEnv`
    (:mod:`envs.multi_task_sources`).
    """
    device = resolve_device(device)
    from envs.multi_task_sources import is_scheme_id, make_scheme_env

    if is_scheme_id(env_id):
        return make_scheme_env(env_id, num_envs, device, vectorization, env_kwargs)
    if env_id.startswith(("mamujoco:", "pettingzoo:")):  # multi-agent: PettingZoo parallel envs
        from envs.pettingzoo import make_pettingzoo_vec_env

        return make_pettingzoo_vec_env(env_id, num_envs, device, env_kwargs, vectorization)
    if env_id in ENVS or env_id in gym.registry:
        _route_mujoco_warnings(env_id)
    if env_id in ENVS:
        return gym.make_vec(env_id, num_envs=num_envs, device=device, **(env_kwargs or {}))
    if env_id.startswith("isaaclab:"):  # an Isaac Lab task (optional extra): one shared simulation per process
        from envs.isaaclab import make_isaaclab_env

        return make_isaaclab_env(env_id, num_envs, device, env_kwargs)
    if env_id.startswith("drl/"):
        raise gym.error.NameNotFound(
            f"unknown drl env '{env_id}'; registered drl envs: {', '.join(sorted(ENVS))}"
        )
    _import_env_package(env_id)
    try:
        _find_spec(env_id)
    except gym.error.Error as err:
        raise gym.error.NameNotFound(
            f"unknown env id '{env_id}': not a drl env ({', '.join(sorted(ENVS))}) and gymnasium says: {err}"
        ) from err
    try:
        return GymnasiumVecEnv(env_id, num_envs, device=device, vectorization=vectorization, env_kwargs=env_kwargs)
    except gym.error.DependencyNotInstalled as err:
        extra = _extra_for(env_id)
        raise MissingDependencyError(f"gymnasium env '{env_id}'", extra, _EXTRA_PACKAGES.get(extra),
                                     hint=str(err)) from err


def _find_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """gymnasium's spec of ``env_id``; ``"module:Env-v0"`` imports ``module`` and looks up ``Env-v0``."""
    module, sep, name = env_id.partition(":")
    if not sep:
        return gym.spec(env_id)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name is not None and module.split(".")[0] == err.name.split(".")[0]:
            raise gym.error.NameNotFound(f"module '{module}' (of env id '{env_id}') cannot be imported: {err}") from err
        raise
    return gym.spec(name)


def _route_mujoco_warnings(env_id: str) -> None:
    """MuJoCo-based ids: MuJoCo's warnings once each, through ``warnings`` (no ``MUJOCO_LOG.TXT``)."""
    from envs.mujoco_log import route_mujoco_warnings, uses_mujoco

    spec = gym.registry[env_id]
    if uses_mujoco(spec.entry_point) or uses_mujoco(getattr(spec, "vector_entry_point", None)):  # drl/ ids: vector
        route_mujoco_warnings()


# Packages that register their gymnasium ids on import: id prefix -> (module, drl extra).
_ENV_PACKAGES = {"MiniGrid-": ("minigrid", "minigrid"), "BabyAI-": ("minigrid", "minigrid")}


def _import_env_package(env_id: str) -> None:
    for prefix, (module, extra) in _ENV_PACKAGES.items():
        if env_id.startswith(prefix):
            try:
                importlib.import_module(module)
            except ImportError as err:
                raise MissingDependencyError(f"env '{env_id}'", extra, module) from err


# pip packages of the extras whose name alone would not install them
_EXTRA_PACKAGES = {"box2d": "gymnasium[box2d]"}


def _extra_for(env_id: str) -> str | None:
    """The drl extra that installs what ``env_id``'s entry point imports, or ``None`` when drl has none."""
    entry = str(_find_spec(env_id).entry_point).lower()
    for key, extra in (("mujoco", "mujoco"), ("minigrid", "minigrid"), ("bullet", "pybullet"), ("box2d", "box2d")):
        if key in entry:
            return extra
    return None
