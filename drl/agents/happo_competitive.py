"""Competitive HAPPO: two teams, each its own HAPPO learner, trained on the same rollouts.

The competitive variant of "A Framework for Scalable Heterogeneous Multi-Agent Adversarial RL in IsaacLab"
(``shared/PAPERS.md``, "HAPPO"): every team of a two-team env (:mod:`envs.multi_agent`, e.g.
``drl/PursuitEvasion-v0``) is a :class:`drl.agents.happo.HAPPO` instance over that team's agents only: its
own actors, its own centralised critic ``V_team(obs["state"])`` with its own value, obs and reward
normalisers, and its advantages (GAE) and compounding factor on its own team reward, the mean of the
team's reward columns (``env.team_columns(team)``). Nothing is copied from HAPPO: this class only routes
each team's slice of the rollout to its learner (storage fields ``<team>/<HAPPO field>``; the ``rewards``
field of a team holds only its own columns, so HAPPO's team reward is that team's mean).

Schedules (``schedule``; which teams learn from the rollout of update ``u``, counted from 0):

* ``simultaneous``: both teams, every update;
* ``alternate`` (leapfrog): team ``teams[(u // alternate_interval) % 2]`` only: one team learns for
  ``alternate_interval`` updates while the other is frozen, then they swap;
* ``ladder``: one learning team at a time (first ``first_learner``); at each league evaluation (see
  :class:`drl.runners.competitive.CompetitiveRunner`, every ``league_interval`` iterations) the learner's
  win rate against the frozen opponent it is training against (the opponent's snapshot taken at that
  evaluation, which is its current policy since it is frozen) is compared with ``ladder_threshold``; at or
  above it, the roles swap from the next update on. ``ladder_max_iterations`` (optional) swaps anyway after
  that many updates of one learner.

A frozen team keeps acting with its (stochastic) policy; it neither updates nor changes its obs statistics.
The env's ``teams`` are copied into ``algo.teams`` when the run starts (:meth:`wrap_env`), so a saved run
rebuilds the same split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from drl.agents.happo import HAPPO, HAPPOConfig
from drl.config import ConfigError, TrainConfig, check, check_range
from drl.nn import RunningMeanStd
from drl.nn.actor_critic import Actor
from drl.nn.deploy import DeployedActor
from drl.storage import RolloutBuffer
from envs.multi_agent import STATE_KEY, is_multi_agent

__all__ = ["HAPPOCompetitiveConfig", "HAPPOCompetitive", "TeamPolicy"]

SCHEDULES = ("simultaneous", "alternate", "ladder")


@dataclass
class HAPPOCompetitiveConfig(HAPPOConfig):
    """HAPPOConfig (both teams' learners use it) plus the schedule and the league evaluation."""

    schedule: Literal["simultaneous", "alternate", "ladder"] = "simultaneous"
    alternate_interval: int = 10  # alternate: updates a team learns while the other is frozen
    ladder_threshold: float = 0.6  # ladder: the learner's win rate vs its frozen opponent that swaps the roles
    ladder_max_iterations: int | None = None  # ladder: swap anyway after this many updates; null: never
    first_learner: str | None = None  # alternate, ladder: the team that learns first; null: the env's first
    teams: dict[str, list[str]] | None = None  # null: the env's (filled in when the run starts)
    league_interval: int = 10  # K: iterations between league snapshots + evaluations (the runner's)
    league_episodes: int = 32  # episodes per opponent in a league evaluation
    league_max_snapshots: int | None = None  # keep at most this many snapshots per pool; null: all
    league_scripted: bool = True  # the env's scripted team policies (if it has them) join the pools

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        super().validate(prefix, train)
        check(self.schedule in SCHEDULES, key("schedule"), f"must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        check_range(self.alternate_interval, key("alternate_interval"), 1, 10**9)
        check(0.0 < self.ladder_threshold <= 1.0, key("ladder_threshold"),
              f"must be a win rate in (0, 1], got {self.ladder_threshold}")
        if self.ladder_max_iterations is not None:
            check_range(self.ladder_max_iterations, key("ladder_max_iterations"), 1, 10**9)
        check_range(self.league_interval, key("league_interval"), 1, 10**9)
        check_range(self.league_episodes, key("league_episodes"), 1, 10**7)
        if self.league_max_snapshots is not None:
            check_range(self.league_max_snapshots, key("league_max_snapshots"), 1, 10**6)
        if self.teams is not None:
            check(isinstance(self.teams, dict) and len(self.teams) == 2 and all(self.teams.values()),
                  key("teams"), f"must map exactly two team names to their agents (or be null), got {self.teams}")
        if self.first_learner is not None and self.teams is not None:
            check(self.first_learner in self.teams, key("first_learner"),
                  f"must be one of the teams {list(self.teams)} (or null), got {self.first_learner!r}")


class TeamPolicy(nn.Module):
    """One team's deterministic policy for league play: ``obs dict -> {agent: env action [N, ...]}``.

    Holds the team's actors and their obs normalisers (as modules: :meth:`state_dict` is a snapshot of
    both); reads only its agents' entries of the obs dict and never updates the statistics.
    """

    def __init__(self, actors: nn.ModuleDict, obs_normalizers: nn.ModuleDict, normalize_obs: bool):
        super().__init__()
        self.actors = actors
        self.obs_normalizers = obs_normalizers
        self.normalize_obs = normalize_obs

    @torch.no_grad()
    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        actions = {}
        for agent, actor in self.actors.items():
            x = obs[agent] if obs[agent].dim() == 2 else obs[agent].flatten(1)
            if self.normalize_obs:
                x = self.obs_normalizers[agent].update_normalize(x, False)
            action, _ = actor.act(x, deterministic=True)
            actions[agent] = actor.head.env_action(action)
        return actions


class _TeamView:
    """A team's slice of the shared rollout, as the :class:`RolloutBuffer` its HAPPO reads
    (``capacity``, ``num_envs``, ``view[field]`` = ``storage["<team>/<field>"]``)."""

    def __init__(self, storage: RolloutBuffer, team: str):
        self.storage, self.prefix = storage, f"{team}/"
        self.capacity, self.num_envs = storage.capacity, storage.num_envs

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.storage[self.prefix + name]


class HAPPOCompetitive:
    """Two HAPPO learners, one per team (see the module doc); the runner's agent interface.

    Args:
        observation_space, action_space: the env's ``Dict`` spaces (every agent, plus ``"state"``).
        cfg: hyperparameters; ``cfg.teams`` must name the two teams' agents (:meth:`wrap_env` fills it in).
        num_envs, device, generator, total_steps: as :class:`HAPPO`'s.

    Raises:
        ConfigError: the teams are missing, not two, or do not partition the env's agents.
    """

    config_class = HAPPOCompetitiveConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: HAPPOCompetitiveConfig,
                 num_envs: int, device: torch.device, generator: torch.Generator | None = None,
                 total_steps: int | None = None):
        if not (isinstance(action_space, gym.spaces.Dict) and isinstance(observation_space, gym.spaces.Dict)
                and STATE_KEY in observation_space.spaces):
            raise ConfigError("config key 'env.id': happo-competitive needs a two-team multi-agent env "
                              "(e.g. drl/PursuitEvasion-v0)")
        if cfg.teams is None or len(cfg.teams) != 2:
            raise ConfigError(f"config key 'algo.teams': happo-competitive needs the env's two teams, got {cfg.teams}")
        members = [a for agents in cfg.teams.values() for a in agents]
        if sorted(members) != sorted(action_space.spaces):
            raise ConfigError(f"config key 'algo.teams': the teams {cfg.teams} do not partition the env's agents "
                              f"{sorted(action_space.spaces)}")
        self.cfg = cfg
        self.device = device
        self.teams: dict[str, tuple[str, ...]] = {t: tuple(a) for t, a in cfg.teams.items()}
        self.team_names: tuple[str, str] = tuple(self.teams)  # type: ignore[assignment]
        # reward columns: env.agents order = the teams' agents one team after the other (checked in wrap_env)
        self.columns = {t: [members.index(a) for a in agents] for t, agents in self.teams.items()}
        self.learners: dict[str, HAPPO] = {}
        for team, agents in self.teams.items():
            obs = gym.spaces.Dict({**{a: observation_space[a] for a in agents},
                                   STATE_KEY: observation_space[STATE_KEY]})
            act = gym.spaces.Dict({a: action_space[a] for a in agents})
            self.learners[team] = HAPPO(obs, act, cfg, num_envs, device, generator, total_steps)
        self.metric_columns = [f"{t}/{c}" for t in self.team_names for c in
                               ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance",
                                *HAPPO.metric_columns)] + [f"learning/{t}" for t in self.team_names]
        first = cfg.first_learner if cfg.first_learner is not None else self.team_names[0]
        self.updates = 0  # update() calls so far
        self.ladder_learner = self.team_names.index(first)  # ladder: index of the learning team
        self.ladder_since = 0  # ladder: the update at which the current learner started
        self.first = self.team_names.index(first)

    @classmethod
    def wrap_env(cls, env: Any, cfg: HAPPOCompetitiveConfig, training: bool) -> Any:
        """The env unchanged; fills ``cfg.teams`` with the env's teams (or checks the configured ones).

        Raises:
            ConfigError: the env has not two teams, or its agents are not listed team by team.
        """
        base = env if is_multi_agent(env) else getattr(env, "unwrapped", env)
        teams = getattr(base, "teams", None) if is_multi_agent(base) else None
        if not teams or len(teams) != 2:
            raise ConfigError(f"config key 'env.id': happo-competitive needs a two-team multi-agent env "
                              f"(e.g. drl/PursuitEvasion-v0); this env has teams {list(teams or [])}")
        env_teams = {t: list(a) for t, a in teams.items()}
        if [a for agents in env_teams.values() for a in agents] != list(base.agents):
            raise ConfigError("config key 'env.id': happo-competitive needs env.agents listed team by team")
        if cfg.teams is None:
            cfg.teams = env_teams
        elif {t: list(a) for t, a in cfg.teams.items()} != env_teams:
            raise ConfigError(f"config key 'algo.teams': {cfg.teams} differs from the env's teams {env_teams}; "
                              "set it to null")
        if cfg.first_learner is not None and cfg.first_learner not in env_teams:
            raise ConfigError(f"config key 'algo.first_learner': must be one of the teams {list(env_teams)} "
                              f"(or null), got {cfg.first_learner!r}")
        return env

    # --- the schedule -------------------------------------------------------------------------------
    def learning_teams(self) -> tuple[str, ...]:
        """The teams that learn from the rollout now being collected (update number :attr:`updates`)."""
        cfg = self.cfg
        if cfg.schedule == "simultaneous":
            return self.team_names
        if cfg.schedule == "alternate":
            return (self.team_names[(self.first + self.updates // cfg.alternate_interval) % 2],)
        return (self.team_names[self.ladder_learner],)

    def on_league_evaluation(self, iteration: int, rates: dict[str, dict[str, float]], latest: dict[str, str]) -> None:
        """Ladder: swap the roles when the learner's win rate against ``latest[learner]`` (the newest snapshot
        of the frozen opponent in the learner's pool) reaches ``ladder_threshold``. ``rates``: ``{team:
        {opponent: win rate}}`` of this evaluation. Other schedules ignore it."""
        if self.cfg.schedule != "ladder":
            return
        learner = self.team_names[self.ladder_learner]
        if rates.get(learner, {}).get(latest.get(learner, ""), 0.0) >= self.cfg.ladder_threshold:
            self._swap()

    def _swap(self) -> None:
        self.ladder_learner = 1 - self.ladder_learner
        self.ladder_since = self.updates

    # --- rollout side ---------------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Any]:
        """Every team's HAPPO fields as ``<team>/<field>`` (its ``rewards`` holds only its own columns)."""
        return {f"{t}/{k}": f for t, learner in self.learners.items() for k, f in learner.storage_fields().items()}

    @torch.inference_mode()
    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = False, update_stats: bool = True
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every team's :meth:`HAPPO.act` (a frozen team leaves its obs statistics alone)."""
        learning = self.learning_teams()
        actions, record = {}, {}
        for team, learner in self.learners.items():
            team_actions, team_record = learner.act(obs, deterministic, update_stats and team in learning)
            actions.update(team_actions)
            record.update((f"{team}/{k}", v) for k, v in team_record.items())
        return actions, record

    def export_actors(self) -> dict[str, DeployedActor]:
        """Every agent's deterministic actor, keyed by agent name (:meth:`HAPPO.export_actors` of each team):
        one file per agent, whichever team it plays for."""
        return {name: actor for learner in self.learners.values() for name, actor in learner.export_actors().items()}

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each team's record gets its own reward columns ``reward[:, columns]`` and the shared flags."""
        out = {}
        for team, learner in self.learners.items():
            prefix = f"{team}/"
            part = {k[len(prefix):]: v for k, v in record.items() if k.startswith(prefix)}
            part = learner.record_outcome(part, reward[:, self.columns[team]], terminated, truncated, final_obs)
            out.update((prefix + k, v) for k, v in part.items())
        return out

    def on_env_reset(self) -> None:
        for learner in self.learners.values():
            learner.on_env_reset()

    # --- learning side --------------------------------------------------------------------------
    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """The learning teams' HAPPO updates on their slices of the rollout; metrics ``<team>/<metric>``
        and ``learning/<team>`` (1 when that team learned from this rollout)."""
        learning = self.learning_teams()
        metrics: dict[str, float] = {}
        for team, learner in self.learners.items():
            metrics[f"learning/{team}"] = float(team in learning)
            if team in learning:
                team_metrics = learner.update(_TeamView(storage, team), progress)
                metrics.update((f"{team}/{k}", v) for k, v in team_metrics.items())
        self.updates += 1
        limit = self.cfg.ladder_max_iterations
        if self.cfg.schedule == "ladder" and limit is not None and self.updates - self.ladder_since >= limit:
            self._swap()
        return metrics

    # --- league play ----------------------------------------------------------------------------
    def team_policy(self, team: str) -> TeamPolicy:
        """``team``'s current deterministic policy (live: it shares the learner's modules)."""
        learner = self.learners[team]
        norms = nn.ModuleDict({a: learner.obs_normalizers[a] for a in self.teams[team]})
        return TeamPolicy(learner.actors, norms, self.cfg.normalize_obs)

    def make_team_policy(self, team: str) -> TeamPolicy:
        """A new :class:`TeamPolicy` of ``team``'s architecture (a snapshot's ``load_state_dict`` fills it).

        Its initialisation draws from a forked RNG: building snapshots (also when a resume reloads them)
        leaves the global RNG, and so the run, as it was."""
        learner = self.learners[team]
        with torch.random.fork_rng(devices=[]):
            if self.cfg.share_actor:
                first = self.teams[team][0]
                shared = Actor(learner.obs_dims[first], learner.action_spaces[first], self.cfg)
                actors = nn.ModuleDict(dict.fromkeys(learner.agents, shared))
            else:
                actors = nn.ModuleDict({a: Actor(learner.obs_dims[a], learner.action_spaces[a], self.cfg)
                                        for a in learner.agents})
        norms = nn.ModuleDict({a: RunningMeanStd((learner.obs_dims[a],)) for a in self.teams[team]})
        return TeamPolicy(actors, norms, self.cfg.normalize_obs).to(self.device)

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Both learners' :meth:`HAPPO.state_dict` and the schedule's counters."""
        return {"learners": {t: learner.state_dict() for t, learner in self.learners.items()},
                "schedule": {"updates": self.updates, "ladder_learner": self.ladder_learner,
                             "ladder_since": self.ladder_since}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for team, learner in self.learners.items():
            learner.load_state_dict(state["learners"][team])
        self.updates = int(state["schedule"]["updates"])
        self.ladder_learner = int(state["schedule"]["ladder_learner"])
        self.ladder_since = int(state["schedule"]["ladder_since"])

    @property
    def policy(self) -> nn.Module:
        """Every team's actors, ``{team: {agent: actor}}``."""
        return nn.ModuleDict({t: learner.actors for t, learner in self.learners.items()})
