"""League evaluation for two-team envs: a team's policy against a pool of frozen opponents.

In a competitive game the returns of both teams move together with their opponents, so progress is
measured as the win rate of the current policy against frozen past opponents (the league), as in the
competitive HAPPO framework (``shared/PAPERS.md``, "HAPPO", competitive variant).

A *team policy* is any callable ``obs dict -> {agent: actions [N, *act_i]}`` for one team's agents
(:data:`TeamPolicy`): a scripted policy, or an ``nn.Module`` (e.g. the team trainer's actors in
deterministic mode). It reads only its own agents' entries of the multi-agent obs dict. A policy may
define ``reset(seed: int)``; :func:`play` calls it before the episodes so a seeded evaluation repeats
exactly (e.g. a random policy reseeding its generator).

The env follows :mod:`envs.multi_agent` with exactly two teams and reports the winner of every finished
episode as ``info["<team>_win"]`` (bool ``[N]``, true on the step a team wins; neither: a draw), as
``drl/PursuitEvasion-v0`` does with ``pursuers_win`` / ``evaders_win``.

:class:`League` keeps, for one evaluated team, the pool of opponents of the other team: fixed ones
(scripted, added by name) and snapshots of a learning opponent taken every ``snapshot_interval``
iterations (frozen copies; saved in checkpoints as state dicts and rebuilt through ``policy_factory``).
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from drl.guards import atomic_write_text
from envs.multi_agent import is_multi_agent

__all__ = ["TeamPolicy", "play", "League"]

TeamPolicy = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def _two_teams(env: Any) -> tuple[str, str]:
    if not is_multi_agent(env) or len(getattr(env, "teams", {})) != 2:
        teams = list(getattr(env, "teams", {}))
        raise ValueError(f"league evaluation needs a multi-agent env with exactly two teams, got teams {teams}")
    first, second = env.teams
    return first, second


@torch.no_grad()
def play(env: Any, policies: Mapping[str, TeamPolicy], episodes: int, seed: int,
         max_steps: int = 1_000_000) -> dict[str, int]:
    """Play ``episodes`` episodes of a two-team env; count each team's wins.

    The episodes are spread evenly over the env copies (each copy plays a fixed quota, so short episodes
    are not over-represented); the env is reset with ``seed`` and every policy with a ``reset`` method gets
    ``reset(seed + 1 + k)``, ``k`` its team's index in ``env.teams``.

    Args:
        env: a multi-agent env with two teams and ``info["<team>_win"]`` flags.
        policies: ``{team: policy}`` for both teams.
        episodes: how many episodes to count (>= 1).
        seed: the env seed.
        max_steps: give up after this many vector steps.

    Returns:
        ``{team: wins}`` for both teams plus ``"episodes"``; draws are ``episodes`` minus both.

    Raises:
        ValueError: the env has not two teams, ``policies`` does not name them, a policy returned actions
            for other agents than its team's, or the env does not report ``info["<team>_win"]``.
        RuntimeError: the episodes did not finish within ``max_steps``.
    """
    teams = _two_teams(env)
    if set(policies) != set(teams):
        raise ValueError(f"play needs one policy per team {list(teams)}, got {sorted(policies)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    for k, team in enumerate(teams):
        reset = getattr(policies[team], "reset", None)
        if callable(reset):
            reset(seed + 1 + k)
    n, device = env.num_envs, env.device
    quota = torch.full((n,), episodes // n, dtype=torch.int64, device=device)
    quota[: episodes % n] += 1
    finished = torch.zeros(n, dtype=torch.int64, device=device)
    wins = {team: torch.zeros((), dtype=torch.int64, device=device) for team in teams}
    obs, _ = env.reset(seed=seed)
    for _ in range(max_steps):
        if bool((finished >= quota).all()):
            break
        actions: dict[str, torch.Tensor] = {}
        for team in teams:
            out = policies[team](obs)
            if set(out) != set(env.teams[team]):
                raise ValueError(f"the {team!r} policy returned actions for {sorted(out)}; it must act for exactly "
                                 f"{list(env.teams[team])}")
            actions.update(out)
        obs, _, terminated, truncated, info = env.step(actions)
        counted = (terminated | truncated) & (finished < quota)
        for team in teams:
            if f"{team}_win" not in info:
                raise ValueError(f"the env does not report info[{f'{team}_win'!r}] (bool [N]), needed for win rates")
            wins[team] += (info[f"{team}_win"] & counted).sum()
        finished += counted
    else:
        raise RuntimeError(f"play did not finish {episodes} episodes within {max_steps} steps")
    return {"episodes": episodes, **{team: int(w) for team, w in wins.items()}}


class League:
    """A pool of frozen opponents for one team of a two-team env, and its win-rate table.

    Args:
        env: the evaluation env (multi-agent, two teams, ``info["<team>_win"]``); :meth:`evaluate` resets it.
        team: the evaluated team; the pool holds policies of the other team (:attr:`opponent_team`).
        policy_factory: builds an opponent-team policy module (``nn.Module`` called as a
            :data:`TeamPolicy`) whose ``load_state_dict`` takes a snapshot; needed to load snapshots from a
            checkpoint. Without it a snapshot is a deep copy of the module given. Frozen opponents are
            moved to the env's device.
        snapshot_interval: K, :meth:`maybe_snapshot` adds a snapshot every K iterations (>= 1).
        max_snapshots: keep at most this many snapshots (the oldest go first); None: all.
        episodes: episodes per opponent in :meth:`evaluate` (>= 1).
        seed: the evaluation seed (the same for every opponent: they face the same start states).

    Raises:
        ValueError: a bad argument (named).
    """

    def __init__(self, env: Any, team: str, policy_factory: Callable[[], nn.Module] | None = None,
                 snapshot_interval: int = 10, max_snapshots: int | None = None, episodes: int = 64, seed: int = 0):
        teams = _two_teams(env)
        if team not in teams:
            raise ValueError(f"League: team {team!r} is not one of the env's teams {list(teams)}")
        if snapshot_interval < 1 or episodes < 1 or (max_snapshots is not None and max_snapshots < 1):
            raise ValueError(f"League: snapshot_interval, episodes and max_snapshots must be >= 1, got "
                             f"{snapshot_interval}, {episodes}, {max_snapshots}")
        self.env = env
        self.team = team
        self.opponent_team = teams[1] if team == teams[0] else teams[0]
        self.policy_factory = policy_factory
        self.snapshot_interval = int(snapshot_interval)
        self.max_snapshots = max_snapshots
        self.episodes = int(episodes)
        self.seed = int(seed)
        self.opponents: dict[str, TeamPolicy] = {}  # insertion order: the table's columns
        self._fixed: set[str] = set()
        self._snapshots: dict[str, dict[str, Any]] = {}  # name -> {"iteration", "state"}
        self.history: list[tuple[int | None, dict[str, float]]] = []  # (iteration, {opponent: win rate})

    # --- the pool ---------------------------------------------------------------------------------------
    def add(self, name: str, policy: TeamPolicy) -> None:
        """Add a fixed opponent (e.g. a scripted policy); it is not saved by :meth:`state_dict`, only named."""
        self._check_new(name)
        self.opponents[name] = policy
        self._fixed.add(name)

    def snapshot(self, policy: nn.Module, iteration: int) -> str:
        """Add a frozen copy of the opponent team's ``policy`` as ``iter_<iteration>``; returns the name."""
        name = f"iter_{int(iteration)}"
        self._check_new(name)
        state = {k: v.detach().to("cpu", copy=True) for k, v in policy.state_dict().items()}
        self._add_snapshot(name, int(iteration), state, policy)
        return name

    def maybe_snapshot(self, policy: nn.Module, iteration: int) -> str | None:
        """:meth:`snapshot` when ``iteration`` is a multiple of ``snapshot_interval``; returns the name or None."""
        if iteration % self.snapshot_interval != 0:
            return None
        return self.snapshot(policy, iteration)

    @property
    def snapshot_names(self) -> list[str]:
        """The snapshots in the pool, oldest first."""
        return list(self._snapshots)

    def _check_new(self, name: str) -> None:
        if name in self.opponents:
            raise ValueError(f"League: the pool already has an opponent named {name!r}")

    def _add_snapshot(self, name: str, iteration: int, state: dict[str, torch.Tensor],
                      source: nn.Module | None) -> None:
        if self.policy_factory is not None:
            frozen = self.policy_factory()
            frozen.load_state_dict(state)
        elif source is not None:
            frozen = copy.deepcopy(source)
        else:
            raise ValueError("League: loading snapshots needs a policy_factory (it builds the opponent policy module)")
        frozen.to(self.env.device).eval().requires_grad_(False)
        self.opponents[name] = frozen
        self._snapshots[name] = {"iteration": iteration, "state": state}
        while self.max_snapshots is not None and len(self._snapshots) > self.max_snapshots:
            oldest = next(iter(self._snapshots))
            del self._snapshots[oldest], self.opponents[oldest]

    # --- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self, team_policy: TeamPolicy, opponents: list[str] | None = None,
                 iteration: int | None = None) -> dict[str, float]:
        """Win rates of ``team_policy`` against each opponent (all in the pool by default).

        Each opponent plays ``episodes`` episodes from ``seed`` (:func:`play`); a win rate is the fraction
        of those episodes :attr:`team` won (draws count as not won). The result is appended to
        :attr:`history` with ``iteration`` (for :meth:`table` and :meth:`metrics`).

        Returns:
            ``{opponent: win rate in [0, 1]}``.
        """
        names = list(self.opponents) if opponents is None else list(opponents)
        unknown = [o for o in names if o not in self.opponents]
        if unknown:
            raise ValueError(f"League: no opponents {unknown} in the pool {list(self.opponents)}")
        rates = {}
        for name in names:
            result = play(self.env, {self.team: team_policy, self.opponent_team: self.opponents[name]},
                          self.episodes, self.seed)
            rates[name] = result[self.team] / result["episodes"]
        self.history.append((iteration, rates))
        return rates

    def metrics(self) -> dict[str, float]:
        """The latest evaluation as ``win_rate/<team>/<opponent>``, plus ``.../mean`` and ``.../min``."""
        if not self.history:
            return {}
        rates = self.history[-1][1]
        out = {f"win_rate/{self.team}/{name}": rate for name, rate in rates.items()}
        if rates:
            out[f"win_rate/{self.team}/mean"] = sum(rates.values()) / len(rates)
            out[f"win_rate/{self.team}/min"] = min(rates.values())
        return out

    def table(self) -> str:
        """The win-rate table: one row per evaluation (iteration), one column per opponent ever evaluated."""
        columns: list[str] = []
        for _, rates in self.history:
            columns += [c for c in rates if c not in columns]
        head = ["iteration", *columns]
        rows = [[("-" if it is None else str(it)), *(f"{rates[c]:.3f}" if c in rates else "" for c in columns)]
                for it, rates in self.history]
        widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
        title = f"win rate of {self.team} vs the {self.opponent_team} league ({self.episodes} episodes each)"
        lines = [title, "  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def write_csv(self, path: str | Path) -> Path:
        """Write :attr:`history` to ``path`` (atomically) as rows ``iteration, opponent, win_rate, episodes``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["iteration", "opponent", "win_rate", "episodes"])
        for iteration, rates in self.history:
            for name, rate in rates.items():
                writer.writerow(["" if iteration is None else iteration, name, f"{rate:.6g}", self.episodes])
        return atomic_write_text(path, out.getvalue())

    # --- checkpoints -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The pool (snapshot state dicts, the names of fixed opponents, the order) and the history."""
        return {"team": self.team, "opponent_team": self.opponent_team, "order": list(self.opponents),
                "fixed": sorted(self._fixed),
                "snapshots": {k: {"iteration": v["iteration"], "state": dict(v["state"])}
                              for k, v in self._snapshots.items()},
                "history": [(it, dict(r)) for it, r in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s pool: snapshots rebuilt with ``policy_factory``; fixed opponents must
        already be in the pool (scripted policies are not saved: :meth:`add` them before loading).

        Raises:
            ValueError: the state is of another team, a fixed opponent is missing, or snapshots need a
                ``policy_factory`` that is not given.
        """
        if state["team"] != self.team or state["opponent_team"] != self.opponent_team:
            raise ValueError(f"League: the saved league is of team {state['team']!r} vs {state['opponent_team']!r}, "
                             f"this one of {self.team!r} vs {self.opponent_team!r}")
        missing = [f for f in state["fixed"] if f not in self._fixed]
        if missing:
            raise ValueError(f"League: the saved league has fixed opponents {missing}; add them with League.add "
                             "before loading")
        if state["snapshots"] and self.policy_factory is None:
            raise ValueError("League: loading snapshots needs a policy_factory (it builds the opponent policy module)")
        fixed = {name: self.opponents[name] for name in self._fixed}
        self.opponents, self._snapshots = {}, {}
        for name in state["order"]:
            if name in state["snapshots"]:
                saved = state["snapshots"][name]
                self._add_snapshot(name, int(saved["iteration"]), dict(saved["state"]), None)
            else:
                self.opponents[name] = fixed.pop(name)
        self.opponents.update(fixed)  # fixed opponents added here but absent from the save come last
        self.history = [(it, dict(r)) for it, r in state["history"]]
