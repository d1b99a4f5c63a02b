"""Small privileged tasks for the AAWR tests and the benchmark's smoke run: a search task (a stand-in for
drl/ActiveSearch-v0 until that env is merged) and a cue task that needs memory (:class:`CueStandIn`).

1-D: the agent starts at ``x = 0`` and must reach a goal ``g`` drawn from ``+-U(0.3, 0.9)`` within 0.05;
the action moves it by ``0.1 a``, ``a`` in ``[-1, 1]``. The policy sees the goal only when within 0.3 of it
(an active-perception sensor), the critic always:

* ``"policy"`` ``[N, 4]``: ``(x, seen, seen * (g - x), t / T)``;
* ``"critic"`` ``[N, 3]``: ``(x, g, t / T)``.

Reward 1 and termination on success (``info["success"]``), truncation after ``T = 40`` steps. The scripted
expert (:func:`expert_action`, a function of the policy observation only) sweeps right for 12 steps,
then left, and heads for the goal once it sees it; ``noise`` makes it suboptimal.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from envs import ENVS, EnvInfo
from envs.core import TorchVecEnv

ENV_ID = "drl/TestSearch-v0"
HORIZON = 40
SENSOR_RADIUS = 0.3
SUCCESS_RADIUS = 0.05


class SearchStandIn(TorchVecEnv):
    """See the module docstring."""

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", max_episode_steps: int = HORIZON):
        obs_space = gym.spaces.Dict({
            "policy": gym.spaces.Box(-2.0, 2.0, (4,), np.float32),
            "critic": gym.spaces.Box(-2.0, 2.0, (3,), np.float32)})
        super().__init__(num_envs, obs_space, gym.spaces.Box(-1.0, 1.0, (1,), np.float32), max_episode_steps, device)
        self.x = torch.zeros(num_envs, device=self.device)
        self.goal = torch.zeros(num_envs, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        magnitude = self._uniform(0.3, 0.9, (self.num_envs,))
        sign = torch.where(torch.rand(self.num_envs, generator=self.generator, device=self.device) < 0.5, -1.0, 1.0)
        self.goal = torch.where(mask, sign * magnitude, self.goal)
        self.x = torch.where(mask, torch.zeros_like(self.x), self.x)

    def _observe(self) -> dict[str, torch.Tensor]:
        t = self.episode_steps.float() / HORIZON
        seen = ((self.goal - self.x).abs() < SENSOR_RADIUS).float()
        policy = torch.stack([self.x, seen, seen * (self.goal - self.x), t], dim=-1)
        critic = torch.stack([self.x, self.goal, t], dim=-1)
        return {"policy": policy, "critic": critic}

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x = (self.x + 0.1 * actions.reshape(self.num_envs).clamp(-1.0, 1.0)).clamp(-1.0, 1.0)
        success = (self.x - self.goal).abs() < SUCCESS_RADIUS
        self._step_info = {"success": success}
        return success.float(), success

    def expert_action(self) -> torch.Tensor:
        """The scripted expert (noise-free) on the current observation: ``[N, 1]``."""
        return expert_action(self._observe()["policy"])

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"x": self.x.clone(), "goal": self.goal.clone()}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.x = self._check_state_shape("x", state["x"], self.x).clone()
        self.goal = self._check_state_shape("goal", state["goal"], self.goal).clone()


CUE_ENV_ID = "drl/TestCue-v0"
CUE_HORIZON = 8


class CueStandIn(TorchVecEnv):
    """A task only a policy with memory solves (for the AAWR memory tests): 1-D, the agent starts at ``x = 0``
    and must reach the goal ``g = +-0.5`` (sign at random) within 0.05, moving ``0.1 a`` per step. The policy
    sees the goal's side only at the episode's first step:

    * ``"policy"`` ``[N, 2]``: ``(cue, t / T)``, ``cue = sign(g)`` at ``t = 0``, else 0 (no position either);
    * ``"critic"`` ``[N, 3]``: ``(x, g, t / T)``.

    Reward 1 and termination on success, truncation after ``T = 8`` steps. The expert (:meth:`expert_action`,
    reading the state) goes straight to the goal (5 steps). A memoryless policy sees the same obs on both sides
    after step 0, so its moves from then on are the same for both; reaching both sides would take at least
    ``1 + 3.5 + 7 > 8`` steps: it succeeds on one side at most (about half of the episodes).
    """

    def __init__(self, num_envs: int, device: str | torch.device = "cpu", max_episode_steps: int = CUE_HORIZON):
        obs_space = gym.spaces.Dict({
            "policy": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
            "critic": gym.spaces.Box(-2.0, 2.0, (3,), np.float32)})
        super().__init__(num_envs, obs_space, gym.spaces.Box(-1.0, 1.0, (1,), np.float32), max_episode_steps, device)
        self.x = torch.zeros(num_envs, device=self.device)
        self.goal = torch.zeros(num_envs, device=self.device)

    def _reset_envs(self, mask: torch.Tensor) -> None:
        sign = torch.where(torch.rand(self.num_envs, generator=self.generator, device=self.device) < 0.5, -1.0, 1.0)
        self.goal = torch.where(mask, 0.5 * sign, self.goal)
        self.x = torch.where(mask, torch.zeros_like(self.x), self.x)

    def _observe(self) -> dict[str, torch.Tensor]:
        t = self.episode_steps.float() / CUE_HORIZON
        cue = torch.where(self.episode_steps == 0, torch.sign(self.goal), 0.0)
        return {"policy": torch.stack([cue, t], dim=-1), "critic": torch.stack([self.x, self.goal, t], dim=-1)}

    def _physics_step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.x = (self.x + 0.1 * actions.reshape(self.num_envs).clamp(-1.0, 1.0)).clamp(-1.0, 1.0)
        success = (self.x - self.goal).abs() < SUCCESS_RADIUS
        self._step_info = {"success": success}
        return success.float(), success

    def expert_action(self) -> torch.Tensor:
        """Straight to the goal: ``[N, 1]``."""
        return ((self.goal - self.x) / 0.1).clamp(-1.0, 1.0).unsqueeze(-1)

    def _get_state(self) -> dict[str, torch.Tensor]:
        return {"x": self.x.clone(), "goal": self.goal.clone()}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.x = self._check_state_shape("x", state["x"], self.x).clone()
        self.goal = self._check_state_shape("goal", state["goal"], self.goal).clone()


def expert_action(policy_obs: torch.Tensor, noise: float = 0.0, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """``[N, 4]`` policy obs -> ``[N, 1]`` actions: to the goal when seen, else sweep right then left."""
    x, seen, offset, t = policy_obs.unbind(-1)
    sweep = torch.where(t * HORIZON < 12, 1.0, -1.0)
    action = torch.where(seen > 0, (offset / 0.1).clamp(-1.0, 1.0), sweep)
    if noise:
        action = action + noise * torch.randn(action.shape, generator=generator)
    return action.clamp(-1.0, 1.0).unsqueeze(-1)


def register() -> None:
    """Register :data:`ENV_ID` (idempotent)."""
    if ENV_ID not in ENVS:
        gym.register(id=ENV_ID, vector_entry_point=SearchStandIn, disable_env_checker=True)
        ENVS[ENV_ID] = EnvInfo(ENV_ID, "torch (test)", "cpu", None, "AAWR test stand-in: 1-D privileged search")
    if CUE_ENV_ID not in ENVS:
        gym.register(id=CUE_ENV_ID, vector_entry_point=CueStandIn, disable_env_checker=True)
        ENVS[CUE_ENV_ID] = EnvInfo(CUE_ENV_ID, "torch (test)", "cpu", None, "AAWR test: a cue seen once, to remember")


def write_demos(path, episodes: int = 40, seed: int = 0, noise: float = 0.3):
    """Record noisy-expert demos of the stand-in to ``path`` (the project's demo format)."""
    from envs.tasks.demos import collect_demos, save_demos

    register()
    generator = torch.Generator().manual_seed(seed)
    demos = collect_demos(ENV_ID, episodes, seed=seed, num_envs=8,
                          policy=lambda _env, obs: expert_action(obs["policy"], noise, generator))
    return save_demos(demos, path), demos["meta"]["success_rate"]


def write_cue_demos(path, episodes: int = 40, seed: int = 0, noise: float = 0.3):
    """Record noisy-expert demos of the cue task to ``path``."""
    from envs.tasks.demos import collect_demos, save_demos

    register()
    generator = torch.Generator().manual_seed(seed)

    def policy(env, _obs):
        action = env.unwrapped.expert_action()
        return (action + noise * torch.randn(action.shape, generator=generator)).clamp(-1.0, 1.0)

    demos = collect_demos(CUE_ENV_ID, episodes, seed=seed, num_envs=8, policy=policy)
    return save_demos(demos, path), demos["meta"]["success_rate"]


register()  # importing the module registers the task (benchmarks.active_search --import tests.aawr_standin)
