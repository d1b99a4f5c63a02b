"""The on-policy loop for two-team learners, with league evaluation (:mod:`drl.league`).

:class:`CompetitiveRunner` is :class:`MultiAgentOnPolicyRunner` plus one :class:`drl.league.League` per
team on the evaluation env. Every ``algo.league_interval`` iterations (K), at iteration 0 (before any
update) and at the last iteration:

1. each team's current policy is snapshotted (``iter_<iteration>``) into the *other* team's opponent pool;
2. each team's current deterministic policy plays ``algo.league_episodes`` episodes against every opponent
   in its pool: the env's scripted policies of the other team (``env.scripted_policies(team)``, when the env
   has them and ``algo.league_scripted``) and the frozen snapshots, including the one just taken (the
   opponent's current policy);
3. the win rates go into the iteration's metrics.csv row as ``win_rate/<team>/<opponent>`` plus
   ``win_rate/<team>/mean`` and ``.../min`` (iteration 0 has no row: it is in the table only), into
   ``win_rates.csv`` in the run folder (``iteration, team, opponent, win_rate, episodes``), and to the
   agent's optional ``on_league_evaluation(iteration, rates, latest)`` hook (ladder schedules).

Also logged: ``ep_return/<team>`` every iteration and ``eval_return/<team>`` with each evaluation, the mean over
the team's agents of ``ep_return/<agent>`` / ``eval_return/<agent>``.

The agent provides ``teams`` (``{team: agents}``), ``team_policy(team) -> nn.Module`` (live) and
``make_team_policy(team) -> nn.Module`` (a blank one for loading snapshots), and its config the
``league_*`` fields of :class:`drl.agents.happo_competitive.HAPPOCompetitiveConfig`. The pools (snapshot
weights) and the win-rate history are saved in checkpoints (``leagues``); league play uses only seeded
generators of its own, so a resumed run repeats the uninterrupted one bitwise.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

from drl.guards import atomic_write_text
from drl.league import League, play
from drl.logging import RunLogger, Stopwatch
from drl.runners.base import EVAL_SEED_OFFSET
from drl.runners.multi_agent import MultiAgentOnPolicyRunner

__all__ = ["CompetitiveRunner", "WIN_RATES_CSV", "team_win_rates"]

WIN_RATES_CSV = "win_rates.csv"


class CompetitiveRunner(MultiAgentOnPolicyRunner):
    """:class:`MultiAgentOnPolicyRunner` with a league per team (see the module doc); same arguments and errors."""

    _saved_leagues: dict[str, Any] | None = None

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        algo = self.cfg.algo
        teams = list(self.agent.teams)
        scripted = getattr(getattr(self.eval_env, "unwrapped", self.eval_env), "scripted_policies", None)
        self.leagues: dict[str, League] = {}
        for team in teams:
            other = teams[1] if team == teams[0] else teams[0]
            league = League(self.eval_env, team, policy_factory=lambda o=other: self.agent.make_team_policy(o),
                            snapshot_interval=algo.league_interval, max_snapshots=algo.league_max_snapshots,
                            episodes=algo.league_episodes, seed=self.cfg.seed + EVAL_SEED_OFFSET)
            if algo.league_scripted and callable(scripted):
                for name, policy in scripted(other).items():
                    league.add(name, policy)
            self.leagues[team] = league
        if self._saved_leagues is not None:
            for team, league in self.leagues.items():
                league.load_state_dict(self._saved_leagues[team])

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        super()._restore(ckpt, path)
        self._saved_leagues = ckpt.get("leagues")

    def checkpoint_payload(self) -> dict[str, Any]:
        payload = super().checkpoint_payload()
        leagues = getattr(self, "leagues", None)  # absent while the base class builds the runner
        if leagues is not None:
            payload["leagues"] = {team: league.state_dict() for team, league in leagues.items()}
        return payload

    # --- the league ---------------------------------------------------------------------------------
    def league_step(self, iteration: int) -> dict[str, float]:
        """Snapshot every team into the other's pool, evaluate every team against its pool, write the
        table, tell the agent; returns the ``win_rate/...`` metrics."""
        start = time.perf_counter()
        teams = list(self.leagues)
        latest = {}
        for team in teams:
            other = teams[1] if team == teams[0] else teams[0]
            latest[team] = self.leagues[team].snapshot(self.agent.team_policy(other), iteration)
        rates, metrics = {}, {}
        with self.stop.interruptible():
            for team, league in self.leagues.items():
                rates[team] = league.evaluate(self.agent.team_policy(team), iteration=iteration)
                metrics.update(league.metrics())
        hook = getattr(self.agent, "on_league_evaluation", None)
        if hook is not None:
            hook(iteration, rates, latest)
        self.write_win_rates()
        self.state["eval_s"] += time.perf_counter() - start
        return metrics

    def write_win_rates(self) -> Path:
        """``win_rates.csv``: every league evaluation so far, one row per (iteration, team, opponent)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["iteration", "team", "opponent", "win_rate", "episodes"])
        for team, league in self.leagues.items():
            for iteration, rates in league.history:
                for name, rate in rates.items():
                    writer.writerow([iteration, team, name, f"{rate:.6g}", league.episodes])
        return atomic_write_text(self.run_dir / WIN_RATES_CSV, out.getvalue())

    def _train_loop(self, logger: RunLogger, clock: Stopwatch) -> bool:
        if self.state["iteration"] == 0 and not any(league.history for league in self.leagues.values()):
            self.league_step(0)  # the untrained teams: the iter_0 snapshots and the first table rows
        return super()._train_loop(logger, clock)

    def _summarize_returns(self, returns: list[Any]) -> tuple[float, float]:
        """The multi-agent runner's, plus ``eval_return/<team>``: the mean of the team's agents' returns."""
        result = super()._summarize_returns(returns)
        for team, agents in self.agent.teams.items():
            members = [self.extra_eval[f"eval_return/{a}"] for a in agents]
            self.extra_eval[f"eval_return/{team}"] = sum(members) / len(members)
        return result

    def _episode_columns(self, row: dict[str, Any], episodes: int) -> None:
        """Per-team returns every iteration; the league step every ``league_interval`` iterations and at the end."""
        super()._episode_columns(row, episodes)
        for team, agents in self.agent.teams.items():
            row[f"ep_return/{team}"] = sum(row[f"ep_return/{a}"] for a in agents) / len(agents)
        iteration = self.state["iteration"]
        if iteration % self.cfg.algo.league_interval == 0 or iteration == self.num_iterations:
            row.update(self.league_step(iteration))


def team_win_rates(agent: Any, env: Any, episodes: int, seed: int) -> dict[str, dict[str, float]]:
    """``{team: {opponent: win rate}}`` of a two-team agent's deterministic team policies (``drl eval``):
    ``"self"``, the other team of the same agent, and the env's scripted policies of the other team (when it
    has ``scripted_policies``), ``episodes`` episodes each from ``seed`` (:func:`drl.league.play`)."""
    teams = list(agent.teams)
    scripted = getattr(getattr(env, "unwrapped", env), "scripted_policies", None)
    policies = {team: agent.team_policy(team) for team in teams}
    self_play = play(env, policies, episodes, seed)
    rates: dict[str, dict[str, float]] = {}
    for team in teams:
        other = teams[1] if team == teams[0] else teams[0]
        rates[team] = {"self": self_play[team] / episodes}
        for name, opponent in (scripted(other).items() if callable(scripted) else ()):
            rates[team][name] = play(env, {team: policies[team], other: opponent}, episodes, seed)[team] / episodes
    return rates
