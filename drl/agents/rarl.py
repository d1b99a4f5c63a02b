"""Robust Adversarial RL (Pinto et al. 2017): a protagonist and a force-applying adversary, both PPO.

The game (PAPERS.md, RARL): the protagonist mu maximises the env reward r; the adversary nu, which
pushes named bodies with bounded forces (:class:`envs.adversarial.AdversarialEnv`), gets -r. Both act in
every step of every rollout. Training alternates (the paper's Algorithm 1): ``protagonist_iterations``
(N_mu) iterations in which only the protagonist learns, the adversary frozen, then
``adversary_iterations`` (N_nu) iterations in which only the adversary learns; the paper's official
code uses 1 and 1 (with TRPO; here each player is a :class:`drl.agents.ppo.PPO`, with all of PPO's
math and options, unchanged).

Storage: one :class:`drl.storage.RolloutBuffer` (the runner's) holds both players' records, each
player's PPO fields under its prefix (``protagonist/obs/policy``, ``adversary/actions``, ...); the
adversary's ``rewards`` are the negated env rewards. Each PPO updates on a prefixed view of it.

Evaluation: the training env carries the adversary; the evaluation env has it switched off, so
``eval_return`` is the protagonist alone; ``eval_return_adversary`` (logged when
``evaluate_with_adversary``) is with the adversary's deterministic forces. A run loaded for
evaluation (``drl eval``, ``drl video``, ``drl robustness``) sees the plain env: the agent is then
built on the env's own Box action space and is the protagonist alone.

"Same budget" as PPO (configs/rarl/): protagonist env steps, i.e. the env steps of the rollouts the
protagonist learns from; with N_mu = N_nu = 1 a RARL run's ``total_steps`` is twice PPO's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from gymnasium.vector import VectorEnv

from drl.agents.ppo import PPO, PPOConfig
from drl.config import ConfigError, TrainConfig, check, check_range
from drl.storage import Field, RolloutBuffer
from envs.adversarial import DEFAULT_MAX_FORCE, AdversarialEnv

__all__ = ["RARLConfig", "RARL", "PLAYERS", "PPO_METRICS"]

PLAYERS = ("protagonist", "adversary")
# what PPO.update reports (action_std: a Gaussian head with a free std, as both players have)
PPO_METRICS = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "grad_norm",
               "explained_variance", "learning_rate", "epochs", "action_std")
MAX_PHASE = 10**6  # iterations of one phase: far past any published setting


@dataclass
class RARLConfig(PPOConfig):
    """PPO's hyperparameters (shared by both players) plus the game's.

    ``adv_fraction`` 0.25 is not from PAPERS.md (which gives the bound 5.0 * adv_fraction but no
    fraction per task); tune it per task.
    """

    protagonist_iterations: int = 1  # N_mu: protagonist updates per round, adversary frozen
    adversary_iterations: int = 1  # N_nu: adversary updates per round, protagonist frozen
    adv_fraction: float = 0.25  # force bound = max_force * adv_fraction (newtons, per component)
    max_force: float = DEFAULT_MAX_FORCE
    adversary_bodies: list[str] | None = None  # null: the paper's bodies for the task
    adversary_axes: str | None = None  # world force axes per body, e.g. "xz"; null: the paper's
    evaluate_with_adversary: bool = True  # also log eval_return_adversary

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check_range(self.protagonist_iterations, f"{prefix}.protagonist_iterations", 1, MAX_PHASE)
        check_range(self.adversary_iterations, f"{prefix}.adversary_iterations", 1, MAX_PHASE)
        check_range(self.adv_fraction, f"{prefix}.adv_fraction", 0.0, 1e6, what="a fraction of max_force")
        check_range(self.max_force, f"{prefix}.max_force", 0.0, 1e9, low_open=True, what="newtons")
        check(not self.recurrent, f"{prefix}.rnn_type", f"RARL's players are feed-forward; got {self.rnn_type}")
        check(self.adversary_bodies is None or len(self.adversary_bodies) > 0, f"{prefix}.adversary_bodies",
              "must name at least one body, or be null for the paper's bodies")
        axes = self.adversary_axes
        check(axes is None or (0 < len(axes) == len(set(axes)) and set(axes) <= set("xyz")),
              f"{prefix}.adversary_axes", f"must be distinct letters of 'xyz' (e.g. 'xz') or null, got {axes!r}")
        check(train.env.vectorization == "sync", "env.vectorization",
              "RARL's adversary writes each MuJoCo env's forces in this process: use 'sync'")


class _PlayerView:
    """One player's fields of the shared :class:`RolloutBuffer`, under their PPO names (what
    :meth:`PPO.update` reads: ``storage[name]``, ``flat(names)``, ``capacity``, ``num_envs``)."""

    def __init__(self, storage: RolloutBuffer, player: str):
        self.storage, self.prefix = storage, f"{player}/"
        self.capacity, self.num_envs = storage.capacity, storage.num_envs

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.storage[self.prefix + name]

    def flat(self, names: list[str]) -> dict[str, torch.Tensor]:
        flat = self.storage.flat([self.prefix + name for name in names])
        return {name: flat[self.prefix + name] for name in names}


class RARL:
    """Protagonist and adversary, two :class:`PPO` learners on one env, trained alternately.

    Args:
        observation_space: the env's single observation space (both players read it).
        action_space: ``Tuple((protagonist Box, adversary Box))`` of :class:`AdversarialEnv` (training);
            a plain Box builds the protagonist alone (a run loaded for evaluation on the plain env).
        cfg, num_envs, device, generator, total_steps: as for :class:`PPO`.
    """

    config_class = RARLConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: RARLConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        self.cfg = cfg
        self.device = device
        two_players = isinstance(action_space, gym.spaces.Tuple)
        spaces = action_space.spaces if two_players else (action_space,)
        self.players: dict[str, PPO] = {
            player: PPO(observation_space, space, cfg, num_envs, device, generator, total_steps)
            for player, space in zip(PLAYERS, spaces, strict=False)
        }
        self.protagonist = self.players["protagonist"]
        self.adversary = self.players.get("adversary")  # None: the protagonist alone (evaluation)
        self.action_space = action_space
        self.iteration = 0  # updates so far, both players': its place in the round picks who learns
        self.updates = dict.fromkeys(PLAYERS, 0)

    # --- the two hooks the runner calls (class-level: before the agent exists) ---------------------
    @classmethod
    def wrap_env(cls, env: VectorEnv, cfg: RARLConfig, training: bool) -> AdversarialEnv:
        """The two-player env: the training env with the adversary on, the evaluation env with it off."""
        try:
            return AdversarialEnv(env, cfg.adversary_bodies, cfg.adversary_axes, cfg.adv_fraction, cfg.max_force,
                                  active=training)
        except ValueError as err:  # a body the model lacks, or an env the adversary cannot push
            key = "algo.adversary_bodies" if "bodies" in str(err) else "env.id"
            raise ConfigError(f"config key '{key}': {err}") from err

    def evaluation_variants(self, eval_env: AdversarialEnv) -> dict[str, contextlib.AbstractContextManager]:
        """``{"adversary": ...}``: one more evaluation with the adversary's forces on (if configured)."""
        if not self.cfg.evaluate_with_adversary or self.adversary is None:
            return {}
        return {"adversary": _adversary_on(eval_env)}

    @property
    def metric_columns(self) -> list[str]:
        columns = [f"{player}/{name}" for player in PLAYERS for name in PPO_METRICS]
        columns += ["adversary_learns", "protagonist_updates", "adversary_updates"]
        if self.cfg.evaluate_with_adversary:
            columns += ["eval_return_adversary", "eval_return_adversary_std"]
        return columns

    # --- schedule ------------------------------------------------------------------------------------
    @property
    def learner(self) -> str:
        """The player the next update trains: ``"protagonist"`` for the first N_mu of each round of
        N_mu + N_nu iterations, ``"adversary"`` for the rest."""
        cfg = self.cfg
        phase = self.iteration % (cfg.protagonist_iterations + cfg.adversary_iterations)
        return "protagonist" if phase < cfg.protagonist_iterations else "adversary"

    # --- rollout side -------------------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        """Each player's PPO fields under ``<player>/``."""
        return {f"{player}/{name}": f for player, ppo in self.players.items()
                for name, f in ppo.storage_fields().items()}

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(action [N, P + A], record)``: both players' env actions, concatenated (protagonist first),
        and their records under their prefixes. The protagonist alone: ``action [N, P]``."""
        actions, record = [], {}
        for player, ppo in self.players.items():
            action, own = ppo.act(obs, deterministic, update_stats)
            actions.append(action.flatten(1))
            record |= {f"{player}/{name}": value for name, value in own.items()}
        return (actions[0] if self.adversary is None else torch.cat(actions, dim=1)), record

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """Complete the step: the protagonist's reward is ``reward [N]``, the adversary's ``-reward`` (zero-sum)."""
        out = {}
        for player, ppo in self.players.items():
            prefix = f"{player}/"
            own = {name[len(prefix):]: value for name, value in record.items() if name.startswith(prefix)}
            player_reward = reward if player == "protagonist" else -reward
            own = ppo.record_outcome(own, player_reward, terminated, truncated, final_obs)
            out |= {prefix + name: value for name, value in own.items()}
        return out

    # --- learning side -------------------------------------------------------------------------------
    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """One PPO update of the player whose turn it is (:attr:`learner`) on its view of the rollout;
        the other is frozen. Metrics: the learner's, prefixed; the frozen player's are left out (empty cells)."""
        learner = self.learner
        metrics = self.players[learner].update(_PlayerView(storage, learner), progress)
        self.iteration += 1
        self.updates[learner] += 1
        out = {f"{learner}/{name}": value for name, value in metrics.items()}
        out |= {"adversary_learns": float(learner == "adversary"),
                "protagonist_updates": float(self.updates["protagonist"]),
                "adversary_updates": float(self.updates["adversary"])}
        return out

    def on_env_reset(self) -> None:
        for ppo in self.players.values():
            ppo.on_env_reset()

    # --- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Each player's :meth:`PPO.state_dict` and the schedule. The protagonist alone keeps empty
        ``adversary`` and ``schedule`` mappings, which accept a training checkpoint's."""
        state: dict[str, Any] = {player: ppo.state_dict() for player, ppo in self.players.items()}
        if self.adversary is None:
            return {**state, "adversary": {}, "schedule": {}}
        state["schedule"] = {"iteration": self.iteration, **{f"{p}_updates": n for p, n in self.updates.items()}}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.protagonist.load_state_dict(state["protagonist"])
        if self.adversary is not None:
            self.adversary.load_state_dict(state["adversary"])
            schedule = state["schedule"]
            self.iteration = int(schedule["iteration"])
            self.updates = {p: int(schedule[f"{p}_updates"]) for p in PLAYERS}

    @property
    def policy(self) -> torch.nn.Module:
        """The protagonist's actor-critic (what is deployed)."""
        return self.protagonist.model

    def export_actor(self) -> torch.nn.Module:
        """The protagonist's deterministic actor (:meth:`PPO.export_actor`): what is deployed, without the adversary."""
        return self.protagonist.export_actor()


@contextlib.contextmanager
def _adversary_on(env: AdversarialEnv) -> Iterator[None]:
    """Switch the evaluation env's adversary on for the block."""
    before = env.active
    env.active = True
    try:
        yield
    finally:
        env.active = before
