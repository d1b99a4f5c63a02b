"""Where multi-task envs come from: torch-batched control families, MiniGrid task sets, Meta-World.

Every source returns a :class:`envs.multi_task.MultiTaskVecEnv` of ``num_envs`` copies in all,
``num_envs / T`` per task (``ValueError`` unless ``num_envs`` is a multiple of the T tasks). Ids:

* ``drl/MT-CartPole-v0``, ``drl/MT-Pendulum-v0``: torch-batched families of one classic-control
  task with different physical parameters (:data:`MT_CARTPOLE_TASKS`, :data:`MT_PENDULUM_TASKS`), one
  batched env per task on the run's device. ``env.kwargs``: ``tasks`` (a list of task names: a subset;
  or ``{name: {parameter: value}}``: your own family), anything else (``max_episode_steps``, ``dtype``,
  ``randomize``, a parameter) goes to every task (a task's own parameters win).
* ``minigrid-mt:<set>``: MiniGrid tasks through the gymnasium adapter (:data:`MINIGRID_TASK_SETS`, or
  ``minigrid-mt:<id>,<id>,...`` for any MiniGrid ids). All share one encoding: the 7x7x3 egocentric
  view and the direction one-hot, flattened (151 numbers; the text mission is dropped); 7 actions.
  ``info["success"]``: the episode ended by reaching the task's goal (terminated with a positive reward).
* ``metaworld:MT10`` / ``metaworld:MT50`` / ``metaworld:<task>,<task>,...``: Meta-World v3 tasks (Sawyer
  arm, 39-d obs, 4-d actions, 500-step episodes, ``info["success"]``); each task draws its goal among
  its benchmark's 50 at every reset. Meta-World 3.1.1 pins mujoco 3.3.0; drl runs mujoco 4, whose
  weld constraints have 12 numbers where Meta-World's ``reset_mocap_welds`` writes 11, so this
  adapter patches that method to write the first 11 (:func:`patch_metaworld_for_mujoco4`).
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.core import GymnasiumVecEnv, MissingDependencyError
from envs.multi_task import MultiTaskVecEnv

__all__ = ["MT_CARTPOLE_TASKS", "MT_PENDULUM_TASKS", "MINIGRID_TASK_SETS", "METAWORLD_SETS", "SCHEMES",
           "make_mt_cartpole", "make_mt_pendulum", "make_scheme_env", "is_scheme_id", "is_multi_task_id",
           "envs_per_task", "min_copies",
           "patch_metaworld_for_mujoco4", "MiniGridSuccess"]

# CartPole-v1 variants (half pole length, pole mass, push force): different dynamics, one balancing skill
MT_CARTPOLE_TASKS: dict[str, dict[str, float]] = {
    "nominal": {},
    "short_pole": {"length": 0.25},
    "long_heavy_pole": {"length": 1.0, "masspole": 0.5},
    "weak_push": {"force_mag": 5.0},
}
# Pendulum-v1 variants (mass, length, gravity): the swing-up with different torque margins
MT_PENDULUM_TASKS: dict[str, dict[str, float]] = {
    "nominal": {},
    "heavy": {"mass": 1.5},
    "long": {"length": 1.5},
    "low_gravity": {"g": 5.0},
}
MINIGRID_TASK_SETS: dict[str, tuple[str, ...]] = {
    # quick to learn: what this machine's benchmarks afford
    "Basic": ("MiniGrid-Empty-Random-5x5-v0", "MiniGrid-DoorKey-5x5-v0", "MiniGrid-LavaGapS5-v0",
              "MiniGrid-Unlock-v0"),
    "DoorKey": ("MiniGrid-DoorKey-5x5-v0", "MiniGrid-DoorKey-6x6-v0", "MiniGrid-DoorKey-8x8-v0",
                "MiniGrid-DoorKey-16x16-v0"),
    # the curricula of Mastering-Rate curriculum learning, which CAMRL's released code points to
    "BlockedUnlockPickup": ("MiniGrid-Unlock-v0", "MiniGrid-UnlockPickup-v0", "MiniGrid-BlockedUnlockPickup-v0"),
    "KeyCorridor": tuple(f"MiniGrid-KeyCorridor{s}-v0" for s in ("S3R1", "S3R2", "S3R3", "S4R3", "S5R3", "S6R3")),
}
METAWORLD_SETS = ("MT10", "MT50")

# (id pattern, backend, devices, extra, description): the rows `drl list` shows beside the registered ids
SCHEMES: list[tuple[str, str, str, str | None, str]] = [
    ("minigrid-mt:<set>", "gymnasium (CPU)", "cpu", "minigrid",
     f"multi-task MiniGrid; sets: {', '.join(MINIGRID_TASK_SETS)}; or minigrid-mt:<id>,<id>,..."),
    ("metaworld:MT10", "metaworld (MuJoCo, CPU)", "cpu", None,
     "Meta-World MT10 (also MT50, or metaworld:<task>,<task>,...); 500-step episodes, success in info; "
     "pip install --no-deps metaworld"),
]


def envs_per_task(num_envs: int, num_tasks: int, env_id: str) -> int:
    """``num_envs / num_tasks``; ValueError naming the config keys unless it divides."""
    if num_envs % num_tasks:
        good = sorted({num_tasks * max(1, num_envs // num_tasks), num_tasks * (num_envs // num_tasks + 1)})
        raise ValueError(f"'{env_id}' has {num_tasks} tasks, so its number of copies must be a multiple of "
                         f"{num_tasks} (set env.num_envs and env.num_eval_envs to e.g. "
                         f"{' or '.join(map(str, good))}), got {num_envs}")
    return num_envs // num_tasks


def _choose_tasks(family: Mapping[str, dict[str, float]], tasks: Any, env_id: str) -> dict[str, dict[str, float]]:
    """``tasks``: None (the whole family), a list of its names, or ``{name: parameters}`` (a new family)."""
    if tasks is None:
        return dict(family)
    if isinstance(tasks, Mapping):
        if not tasks or not all(isinstance(v, Mapping) for v in tasks.values()):
            raise ValueError(f"{env_id}: env.kwargs.tasks must map task names to parameter dicts, got {tasks!r}")
        return {str(k): dict(v) for k, v in tasks.items()}
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    unknown = [n for n in names if n not in family]
    if unknown or not names:
        raise ValueError(f"{env_id}: unknown task(s) {unknown or '[]'} in env.kwargs.tasks; its tasks: "
                         f"{', '.join(family)}")
    return {n: family[n] for n in names}


def _torch_family(vector_entry: str, family: dict[str, dict[str, float]],
                  env_id: str) -> Callable[..., MultiTaskVecEnv]:
    def make(num_envs: int, device: str | torch.device = "cpu", tasks: Any = None, **kwargs: Any) -> MultiTaskVecEnv:
        chosen = _choose_tasks(family, tasks, env_id)
        per_task = envs_per_task(num_envs, len(chosen), env_id)
        module, _, name = vector_entry.partition(":")
        cls = getattr(importlib.import_module(module), name)
        task_envs = [cls(per_task, device=device, **{**kwargs, **params}) for params in chosen.values()]
        return MultiTaskVecEnv(task_envs, tuple(chosen), env_id=env_id)

    make.__doc__ = (f"``{env_id}``: one batched ``{vector_entry}`` per task of ``num_envs / T`` copies "
                    f"(tasks: {', '.join(family)}); see the module doc for ``tasks`` and the other kwargs.")
    return make


make_mt_cartpole = _torch_family("envs.torch_classic.cartpole:CartPole", MT_CARTPOLE_TASKS, "drl/MT-CartPole-v0")
make_mt_pendulum = _torch_family("envs.torch_classic.pendulum:Pendulum", MT_PENDULUM_TASKS, "drl/MT-Pendulum-v0")


class MiniGridSuccess(gym.Wrapper):
    """``info["success"] = 1.0`` at the step that ends a MiniGrid episode at its goal (terminated with a
    positive reward: reached the goal, opened the door, picked up the object), else 0.0."""

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["success"] = float(bool(terminated) and float(reward) > 0.0)
        return obs, reward, terminated, truncated, info


def _short_minigrid_name(env_id: str) -> str:
    return env_id.removeprefix("MiniGrid-").removeprefix("BabyAI-").rsplit("-v", 1)[0]


def _make_minigrid(spec: str, num_envs: int, device: torch.device, vectorization: str,
                   env_kwargs: dict[str, Any] | None) -> MultiTaskVecEnv:
    env_id = f"minigrid-mt:{spec}"
    try:
        importlib.import_module("minigrid")
    except ImportError as err:
        raise MissingDependencyError(f"env '{env_id}'", "minigrid", "minigrid") from err
    ids = MINIGRID_TASK_SETS.get(spec) or tuple(s.strip() for s in spec.split(",") if s.strip())
    if spec not in MINIGRID_TASK_SETS and not all(i in gym.registry for i in ids):
        unknown = [i for i in ids if i not in gym.registry]
        raise gym.error.NameNotFound(f"unknown MiniGrid task set '{spec}' (not a set and not MiniGrid ids: "
                                     f"{unknown}); sets: {', '.join(MINIGRID_TASK_SETS)}")
    per_task = envs_per_task(num_envs, len(ids), env_id)
    task_envs: list[GymnasiumVecEnv] = []
    try:
        with warnings.catch_warnings():  # the text mission is dropped from every task: said in the module doc
            warnings.filterwarnings("ignore", message=".*dropping observation entries", category=UserWarning)
            for task in ids:
                task_envs.append(GymnasiumVecEnv(task, per_task, device=device, vectorization=vectorization,
                                                 wrappers=[MiniGridSuccess], env_kwargs=env_kwargs))
    except BaseException:
        for env in task_envs:
            env.close()
        raise
    return MultiTaskVecEnv(task_envs, tuple(_short_minigrid_name(i) for i in ids), env_id=env_id, reports_success=True)


def patch_metaworld_for_mujoco4() -> None:
    """Make Meta-World 3.1.1 run on mujoco 4: its ``SawyerMocapBase.reset_mocap_welds`` assigns 11
    weld parameters to ``model.eq_data[i]``, which mujoco 4 made 12 long (a shape error at every reset);
    the patched method writes the same 11 values to ``eq_data[i, :11]`` and leaves the 12th as the model
    has it. Idempotent; a no-op where ``eq_data`` rows have 11 numbers (mujoco 3)."""
    import mujoco
    from metaworld.sawyer_xyz_env import SawyerMocapBase

    if getattr(SawyerMocapBase.reset_mocap_welds, "_drl_patched", False):
        return
    weld = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0])  # Meta-World's own values

    def reset_mocap_welds(self: Any) -> None:
        if self.model.nmocap > 0 and self.model.eq_data is not None:
            for i in range(self.model.eq_data.shape[0]):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    self.model.eq_data[i, : weld.size] = weld

    reset_mocap_welds._drl_patched = True  # type: ignore[attr-defined]
    SawyerMocapBase.reset_mocap_welds = reset_mocap_welds


def _make_metaworld(spec: str, num_envs: int, device: torch.device, vectorization: str,
                    env_kwargs: dict[str, Any] | None) -> MultiTaskVecEnv:
    env_id = f"metaworld:{spec}"
    try:
        metaworld = importlib.import_module("metaworld")
    except ImportError as err:
        raise MissingDependencyError(f"env '{env_id}'", None, "metaworld",
                                     hint="pip install --no-deps metaworld (Meta-World v3 pins mujoco 3.3.0; drl "
                                          "runs it on the mujoco it has)") from err
    patch_metaworld_for_mujoco4()
    kwargs = dict(env_kwargs or {})
    benchmark_seed = int(kwargs.pop("benchmark_seed", 0))  # which 50 goals each task draws from
    if spec in METAWORLD_SETS:
        names = list(getattr(metaworld, spec)(seed=benchmark_seed).train_classes)
    else:
        names = [s.strip() for s in spec.split(",") if s.strip()]
        unknown = [n for n in names if n not in metaworld.ALL_V3_ENVIRONMENTS]
        if unknown or not names:
            raise gym.error.NameNotFound(f"unknown Meta-World task(s) {unknown or '[]'} in '{env_id}'; use "
                                         f"{' or '.join(METAWORLD_SETS)} or names like reach-v3,push-v3")
    per_task = envs_per_task(num_envs, len(names), env_id)
    task_envs: list[GymnasiumVecEnv] = []
    try:
        for name in names:
            task_envs.append(GymnasiumVecEnv(
                "Meta-World/MT1", per_task, device=device, vectorization=vectorization,
                env_kwargs={"env_name": name, "seed": benchmark_seed, "disable_env_checker": True, **kwargs}))
    except BaseException:
        for env in task_envs:
            env.close()
        raise
    return MultiTaskVecEnv(task_envs, tuple(names), env_id=env_id, reports_success=True)


_SCHEME_MAKERS = {"minigrid-mt": _make_minigrid, "metaworld": _make_metaworld}


def is_scheme_id(env_id: str) -> bool:
    """Whether ``env_id`` is one of the multi-task schemes here (``minigrid-mt:...``, ``metaworld:...``)."""
    scheme, sep, rest = env_id.partition(":")
    return bool(sep and rest) and scheme in _SCHEME_MAKERS


def is_multi_task_id(env_id: str) -> bool:
    """Whether ``env_id`` builds a multi-task env: a scheme here, or a registered id with several tasks."""
    from envs import ENVS

    return is_scheme_id(env_id) or (env_id in ENVS and ENVS[env_id].num_tasks > 1)


def min_copies(env_id: str, env_kwargs: dict[str, Any] | None = None) -> int:
    """The fewest copies ``env_id`` can be built with: its number of tasks for a multi-task id (a probe of
    its spaces needs one copy per task), else 1."""
    from envs import ENVS

    scheme, _, rest = env_id.partition(":")
    if is_scheme_id(env_id):
        sizes = {k: len(v) for k, v in MINIGRID_TASK_SETS.items()} if scheme == "minigrid-mt" else {"MT10": 10,
                                                                                                     "MT50": 50}
        return sizes.get(rest) or len([s for s in rest.split(",") if s.strip()])
    if env_id in ENVS and ENVS[env_id].num_tasks > 1:
        tasks = (env_kwargs or {}).get("tasks")
        return ENVS[env_id].num_tasks if tasks is None else (1 if isinstance(tasks, str) else len(tasks))
    return 1


def make_scheme_env(env_id: str, num_envs: int, device: torch.device, vectorization: str = "sync",
                    env_kwargs: dict[str, Any] | None = None) -> MultiTaskVecEnv:
    """Build a ``minigrid-mt:...`` or ``metaworld:...`` env (see the module doc)."""
    scheme, _, rest = env_id.partition(":")
    return _SCHEME_MAKERS[scheme](rest, num_envs, device, vectorization, env_kwargs)

