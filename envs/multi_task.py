"""The multi-task environment contract: one vectorized env whose copies belong to T tasks.

:class:`MultiTaskVecEnv` is built from T task envs, each one of drl's vectorized backends (a
torch-batched :class:`~envs.core.TorchVecEnv`, the gymnasium adapter
:class:`~envs.core.GymnasiumVecEnv`, ...) holding ``envs_per_task`` copies, and concatenates their
batches along the env axis::

    env = MultiTaskVecEnv([cartpole_a, cartpole_b, cartpole_c], ("a", "b", "c"))  # 3 tasks x E copies
    obs, info = env.reset(seed=0)
    # obs = {"policy": [N, D], "task": [N, T] one-hot float32}, N = T * E
    obs, reward, terminated, truncated, info = env.step(actions)   # reward etc. are [N]
    # info["task_id"] [N]; info["success"] [N] float when the tasks report success

* ``env.num_tasks`` (T), ``env.task_names`` (tuple, in task order), ``env.envs_per_task`` (E);
  ``env.task_ids``: LongTensor ``[N]`` on ``env.device``, fixed per copy, in contiguous blocks
  (copies ``k*E .. (k+1)*E - 1`` are task ``k``).
* Every task has the same single action space and observation spaces of the same structure,
  shapes and dtypes (``ValueError`` naming the first task that differs). Box observation bounds may
  differ between tasks; the exposed bounds are their union (elementwise min/max).
* Observations: ``"policy"`` is the task env's own observation; a task env with observation groups
  (``"policy"``/``"critic"``) keeps them; ``"task"`` is the one-hot of the copy's task. The exposed
  ``single_observation_space`` is the ``Dict`` of those groups.
* SAME_STEP autoreset as every drl env: each task env resets its finished copies in the step;
  ``info["final_obs"]`` (with its ``"task"`` group) holds the true last obs, ``info["_final_obs"]``
  the mask.
* ``info["success"]`` ``[N]`` float (1.0 = the task is solved at this step; at a finished copy the
  value of its last step) when ``env.reports_success``: read from each task env's ``info["success"]``
  (for the gymnasium adapter, from ``final_info`` at finished copies).
* Env state: ``supports_state_dict`` when every task env has the capability; the state holds every
  task env's state and ``state["obs"]``, the combined observation.
* Seeding: ``reset(seed=s)`` gives task ``k`` its own seed stream, :func:`task_seed` ``(s, k)``.

Torch task envs stay on ``env.device`` and nothing on the step path synchronises with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.core import EnvStepError, Obs, TorchVecEnv, supports_env_state

__all__ = ["MultiTaskVecEnv", "is_multi_task", "task_seed", "TASK_KEY"]

TASK_KEY = "task"
_GROUPS = ("policy", "critic")


def is_multi_task(env: Any) -> bool:
    """True when ``env`` (or the env a wrapper stack ends in) follows the multi-task contract."""
    return isinstance(getattr(env, "task_names", None), tuple) and isinstance(getattr(env, "task_ids", None),
                                                                               torch.Tensor)


def task_seed(seed: int, task: int) -> int:
    """The seed of task ``task`` when the multi-task env is reset with ``seed``: an independent
    stream per task (numpy's ``SeedSequence([seed, task])``), so no two tasks share random draws."""
    return int(np.random.SeedSequence([int(seed) % 2**63, task]).generate_state(1, np.uint32)[0])


def _union_space(name: str, first: str, space: gym.Space, other: gym.Space) -> gym.Space:
    """``space`` widened by ``other``'s Box bounds; ValueError unless both have one structure, shape, dtype."""
    if isinstance(space, gym.spaces.Box) and isinstance(other, gym.spaces.Box):
        if space.shape == other.shape and space.dtype == other.dtype:
            return gym.spaces.Box(np.minimum(space.low, other.low), np.maximum(space.high, other.high),
                                  dtype=space.dtype)
    elif isinstance(space, gym.spaces.Dict) and isinstance(other, gym.spaces.Dict):
        if list(space.spaces) == list(other.spaces):
            return gym.spaces.Dict({k: _union_space(name, first, v, other.spaces[k]) for k, v in space.spaces.items()})
    elif space == other:
        return space
    raise ValueError(f"task '{name}' has observation space {other}, task '{first}' has {space}; every task of a "
                     "multi-task env needs observations of the same structure, shape and dtype")


class MultiTaskVecEnv(VectorEnv):
    """T task envs of ``envs_per_task`` copies each, as one vector env (see the module doc).

    Args:
        task_envs: the T vector envs, in task order, each with the same ``num_envs`` (E) and device.
        task_names: one unique name per task (``ep_return/<name>`` in the logs).
        env_id: the id this env was built from (error messages).
        reports_success: the task envs put ``"success"`` in their info (then ``info["success"]`` is
            always there and the runners log ``success/<task>``).

    Raises:
        ValueError: no task, names not unique or not one per env, task envs with different copy
            counts or devices, different action spaces, observations of another structure, shape or
            dtype, or a task env with its own ``"task"`` observation group (naming the task).
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task_envs: Sequence[VectorEnv], task_names: Sequence[str], env_id: str = "multi-task",
                 reports_success: bool = False):
        task_envs, task_names = list(task_envs), tuple(str(n) for n in task_names)
        self.env_id = env_id
        try:
            self._check_tasks(task_envs, task_names)
        except ValueError:
            for env in task_envs:
                env.close()
            raise
        self.task_envs = task_envs
        self.task_names: tuple[str, ...] = task_names
        self.num_tasks = len(task_envs)
        self.envs_per_task = int(task_envs[0].num_envs)
        self.num_envs = self.num_tasks * self.envs_per_task
        self.device = torch.device(task_envs[0].device)
        self.reports_success = bool(reports_success)
        first = task_envs[0]
        space = first.single_observation_space
        for name, env in zip(task_names[1:], task_envs[1:], strict=True):
            space = _union_space(name, task_names[0], space, env.single_observation_space)
        self._groups = list(space.spaces) if isinstance(space, gym.spaces.Dict) else None
        groups = dict(space.spaces) if self._groups is not None else {"policy": space}
        groups[TASK_KEY] = gym.spaces.Box(0.0, 1.0, (self.num_tasks,), dtype=np.float32)
        self.single_observation_space = gym.spaces.Dict(groups)
        self.single_action_space = first.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        limits = [getattr(env, "max_episode_steps", None) for env in task_envs]
        self.max_episode_steps: int | None = None if None in limits else max(limits)
        e = self.envs_per_task
        self.task_ids = torch.arange(self.num_tasks, device=self.device).repeat_interleave(e)
        self._one_hot = torch.nn.functional.one_hot(self.task_ids, self.num_tasks).to(torch.float32)
        self._slices = [slice(k * e, (k + 1) * e) for k in range(self.num_tasks)]

    def _check_tasks(self, task_envs: list[VectorEnv], task_names: tuple[str, ...]) -> None:
        if not task_envs:
            raise ValueError(f"{self.env_id}: a multi-task env needs at least one task")
        if len(task_names) != len(task_envs) or len(set(task_names)) != len(task_names):
            raise ValueError(f"{self.env_id}: task_names {task_names} must name the {len(task_envs)} tasks, "
                             "each once")
        first, name0 = task_envs[0], task_names[0]
        for name, env in zip(task_names, task_envs, strict=True):
            if env.num_envs != first.num_envs:
                raise ValueError(f"{self.env_id}: task '{name}' has {env.num_envs} copies, task '{name0}' "
                                 f"{first.num_envs}; every task needs envs_per_task copies")
            if torch.device(env.device) != torch.device(first.device):
                raise ValueError(f"{self.env_id}: task '{name}' is on {env.device}, task '{name0}' on {first.device}")
            if env.single_action_space != first.single_action_space:
                raise ValueError(f"task '{name}' has action space {env.single_action_space}, task '{name0}' has "
                                 f"{first.single_action_space}; every task of a multi-task env needs the same "
                                 "action space")
            space = env.single_observation_space
            if isinstance(space, gym.spaces.Dict) and (TASK_KEY in space.spaces or not set(space.spaces) <= set(
                    _GROUPS)):
                raise ValueError(f"task '{name}' has observation groups {list(space.spaces)}; a task env's groups "
                                 f"must be among {list(_GROUPS)} ('{TASK_KEY}' is the multi-task env's own)")

    # --- observations -------------------------------------------------------------------------
    def _combine(self, parts: list[Obs]) -> dict[str, torch.Tensor]:
        """The task envs' obs ``[E, ...]`` each -> the combined dict ``[N, ...]`` with the one-hot."""
        if self._groups is None:
            out = {"policy": torch.cat([p.to(self.device) for p in parts])}  # type: ignore[union-attr]
        else:
            out = {g: torch.cat([p[g].to(self.device) for p in parts]) for g in self._groups}  # type: ignore[index]
        out[TASK_KEY] = self._one_hot.clone()
        return out

    # --- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict]:
        """Reset every task env (task ``k`` with :func:`task_seed` ``(seed, k)``); an
        ``options["state"]`` ``[N, ...]`` is split into the tasks' blocks."""
        parts = []
        k = 0
        try:
            for k, env in enumerate(self.task_envs):
                task_options = options
                if options and "state" in options:
                    task_options = {**options, "state": options["state"][self._slices[k]]}
                parts.append(env.reset(seed=None if seed is None else task_seed(seed, k), options=task_options)[0])
        except EnvStepError as err:
            self._name_task(err, k)
            raise
        return self._combine(parts), {"task_id": self.task_ids.clone()}

    def step(self, actions: Any) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        """Step every task env on its block of ``actions`` ``[N, ...]``; see the module doc for ``info``."""
        results = []
        k = 0
        try:
            for k, env in enumerate(self.task_envs):
                results.append(env.step(actions[self._slices[k]]))
        except EnvStepError as err:
            self._name_task(err, k)
            raise
        obs = self._combine([r[0] for r in results])
        reward, terminated, truncated = (torch.cat([r[i].to(self.device) for r in results]) for i in (1, 2, 3))
        infos = [r[4] for r in results]
        info: dict[str, Any] = {
            "final_obs": self._combine([i["final_obs"] for i in infos]),
            "_final_obs": torch.cat([i["_final_obs"].to(self.device) for i in infos]),
            "task_id": self.task_ids.clone(),
        }
        if self.reports_success:
            info["success"] = torch.cat([self._success(i, r[2] | r[3]) for i, r in zip(infos, results, strict=True)])
        for key, value in infos[0].items():  # per-copy tensors every task reports (reward terms, env_reward)
            if key not in info and isinstance(value, torch.Tensor) and value.dim() >= 1:
                values = [i.get(key) for i in infos]
                if all(isinstance(v, torch.Tensor) and v.shape[:1] == (self.envs_per_task,) for v in values):
                    info[key] = torch.cat([v.to(self.device) for v in values])
        return obs, reward, terminated, truncated, info

    def _success(self, info: dict[str, Any], done: torch.Tensor) -> torch.Tensor:
        """One task's ``[E]`` float success: ``info["success"]``; the gymnasium adapter's info is
        numpy with ``_success`` masks, and a finished copy's last step is in ``final_info``."""
        value = info.get("success")
        if isinstance(value, torch.Tensor):
            return value.to(self.device, torch.float32)
        success = _masked(info, "success", self.envs_per_task)
        final = info.get("final_info")
        if isinstance(final, dict) and "success" in final:
            done_np = done.cpu().numpy()
            success = np.where(done_np, _masked(final, "success", self.envs_per_task), success)
        return torch.as_tensor(success, dtype=torch.float32).to(self.device)

    def _name_task(self, err: EnvStepError, k: int) -> None:
        """Make task ``k``'s :class:`EnvStepError` name the task and the failed copy's index in N."""
        if err.env_index is not None:
            err.env_index += k * self.envs_per_task
        err.env_id = f"{self.env_id} (task '{self.task_names[k]}')"

    # --- state (optional capability) ----------------------------------------------------------
    @property
    def supports_state_dict(self) -> bool:
        """True when every task env has the env-state capability."""
        return all(supports_env_state(env) for env in self.task_envs)

    def state_dict(self) -> dict[str, Any]:
        """Every task env's ``state_dict()`` (``tasks``), the task names, ``num_envs`` and ``obs`` (the
        combined obs of the tasks' saved obs). NotImplementedError without the capability."""
        if not self.supports_state_dict:
            raise NotImplementedError(f"{self.env_id}: not every task env saves its state")
        tasks = [env.state_dict() for env in self.task_envs]
        return {"env": type(self).__name__, "task_names": list(self.task_names), "num_envs": self.num_envs,
                "tasks": tasks, "obs": self._combine([saved["obs"] for saved in tasks])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; ValueError naming the mismatch for another task set or size."""
        for key, mine in (("env", type(self).__name__), ("task_names", list(self.task_names)),
                          ("num_envs", self.num_envs)):
            if state.get(key) != mine:
                raise ValueError(f"{self.env_id}: the saved env state has {key}={state.get(key)!r}, this env "
                                 f"has {mine!r}")
        for env, saved in zip(self.task_envs, state["tasks"], strict=True):
            env.load_state_dict(saved)

    # --- the rest -----------------------------------------------------------------------------
    def render(self, index: int = 0) -> Any:
        """Copy ``index`` (of N) as the task env renders it."""
        k, i = divmod(index, self.envs_per_task)
        env = self.task_envs[k]
        if isinstance(env, TorchVecEnv):  # a torch-batched env renders one copy by index
            return env.render(index=i)
        frames = env.render()
        return frames[i] if isinstance(frames, (tuple, list)) else frames

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.task_envs:
            env.close()


def _masked(info: dict[str, Any], key: str, num: int) -> np.ndarray:
    """``info[key]`` as float ``[num]``, 0 where gymnasium's ``_key`` mask says it was not reported."""
    value = info.get(key)
    if value is None:
        return np.zeros(num, np.float32)
    value = np.asarray(value, dtype=np.float32).reshape(num)
    mask = info.get(f"_{key}")
    return value if mask is None else np.where(np.asarray(mask, dtype=bool), value, 0.0).astype(np.float32)
