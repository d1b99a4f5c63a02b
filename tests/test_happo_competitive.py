"""Competitive HAPPO (drl/agents/happo_competitive.py) and its league runner (drl/runners/competitive.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from agent_checks import assert_equal, rollout, train_interrupted_at_step

from drl import api
from drl.agents.happo_competitive import HAPPOCompetitive, HAPPOCompetitiveConfig, _TeamView
from drl.checkpoint import load_checkpoint
from drl.cli import main
from drl.config import ConfigError, TrainConfig
from drl.logging import TIMING_COLUMNS
from drl.registry import AGENTS, resolve_config
from drl.runners.competitive import WIN_RATES_CSV, CompetitiveRunner
from drl.storage import RolloutBuffer
from envs.tasks.pursuit_evasion import EVADERS, PURSUERS, PursuitEvasion

TEAMS = {PURSUERS: ["pursuer_0", "pursuer_1"], EVADERS: ["evader_0"]}


def _agent(num_envs: int = 4, **algo: Any) -> tuple[HAPPOCompetitive, PursuitEvasion]:
    env = PursuitEvasion(num_envs, max_episode_steps=20, shaping=1.0)
    cfg = HAPPOCompetitiveConfig(num_steps=8, **algo)
    HAPPOCompetitive.wrap_env(env, cfg, training=True)
    train = TrainConfig(agent="happo-competitive")
    train.env.num_envs = num_envs
    cfg.validate("algo", train)
    agent = HAPPOCompetitive(env.single_observation_space, env.single_action_space, cfg, num_envs,
                             torch.device("cpu"), torch.Generator().manual_seed(0))
    return agent, env


def _team_state(agent: HAPPOCompetitive, team: str) -> dict[str, torch.Tensor]:
    learner = agent.learners[team]
    modules = {"actors": learner.actors, "critic": learner.critic, "obs": learner.obs_normalizers,
               "value": learner.value_normalizer}
    return {f"{name}.{k}": v.detach().clone() for name, m in modules.items() for k, v in m.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], prefix: str) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


# --- the teams' learners ---------------------------------------------------------------------------------
def test_wrap_env_fills_the_teams_and_each_learner_has_only_its_team() -> None:
    agent, env = _agent()
    assert agent.cfg.teams == TEAMS and agent.columns == {PURSUERS: [0, 1], EVADERS: [2]}
    assert agent.learners[PURSUERS].agents == ("pursuer_0", "pursuer_1")
    assert agent.learners[EVADERS].agents == ("evader_0",)
    assert agent.learners[PURSUERS].critic is not agent.learners[EVADERS].critic


def test_alternate_schedule_updates_only_the_learning_team_and_freezes_the_other() -> None:
    """alternate_interval 2, pursuers first: updates 0, 1 train the pursuers, 2, 3 the evaders, 4 the pursuers;
    the frozen team's actors, critic and obs/value statistics stay bitwise the same, also through its rollouts."""
    agent, env = _agent(schedule="alternate", alternate_interval=2, first_learner=PURSUERS, normalize_obs=True)
    expected = [PURSUERS, PURSUERS, EVADERS, EVADERS, PURSUERS]
    for k, learner in enumerate(expected):
        frozen = EVADERS if learner == PURSUERS else PURSUERS
        assert agent.learning_teams() == (learner,)
        before = {t: _team_state(agent, t) for t in TEAMS}
        metrics = agent.update(rollout(agent, env, 8, seed=k))
        after = {t: _team_state(agent, t) for t in TEAMS}
        assert metrics[f"learning/{learner}"] == 1.0 and metrics[f"learning/{frozen}"] == 0.0
        assert f"{learner}/policy_loss" in metrics and f"{frozen}/policy_loss" not in metrics
        assert before[frozen].keys() == after[frozen].keys()
        assert not _changed(before[frozen], after[frozen], ""), f"update {k}: {frozen} changed"
        for part in ("actors.", "critic.", "obs."):
            assert _changed(before[learner], after[learner], part), f"update {k}: {learner} {part} unchanged"


def test_simultaneous_schedule_each_team_update_touches_only_its_own_modules() -> None:
    agent, env = _agent(schedule="simultaneous")
    storage = rollout(agent, env, 8)
    assert agent.learning_teams() == (PURSUERS, EVADERS)
    for team, other in ((PURSUERS, EVADERS), (EVADERS, PURSUERS)):
        before = {t: _team_state(agent, t) for t in TEAMS}
        agent.learners[team].update(_TeamView(storage, team))
        after = {t: _team_state(agent, t) for t in TEAMS}
        assert _changed(before[team], after[team], "actors.") and _changed(before[team], after[team], "critic.")
        assert not _changed(before[other], after[other], "")


def test_each_team_reward_and_advantages_use_only_its_own_columns() -> None:
    """Hand check, T = 3, N = 1, critic output 0, no normalisation: GAE on the mean of the team's columns."""
    agent, env = _agent(num_envs=1, gamma=0.5, gae_lambda=0.5, value_norm=False, normalize_reward=False)
    for learner in agent.learners.values():
        torch.nn.init.zeros_(learner.critic[-1].weight)
        torch.nn.init.zeros_(learner.critic[-1].bias)
    # [T, A]: pursuer_0, pursuer_1, evader_0
    rewards = torch.tensor([[1.0, 3.0, -7.0], [0.0, 2.0, 5.0], [4.0, 0.0, 1.0]])
    storage = RolloutBuffer(3, 1, agent.storage_fields())
    obs, _ = env.reset(seed=0)
    no = torch.zeros(1, dtype=torch.bool)
    for t in range(3):
        _, record = agent.act(obs)
        storage.add(agent.record_outcome(record, rewards[t:t + 1], no, no, obs))
    # team rewards: pursuers (1+3)/2, (0+2)/2, (4+0)/2 = 2, 1, 2; evaders -7, 5, 1; no episode end, V = 0:
    # A_2 = r_2, A_1 = r_1 + 0.25 A_2, A_0 = r_0 + 0.25 A_1
    hand = {PURSUERS: [2 + 0.25 * (1 + 0.25 * 2), 1 + 0.25 * 2, 2.0], EVADERS: [-7 + 0.25 * (5 + 0.25 * 1), 5.25, 1.0]}
    for team, learner in agent.learners.items():
        view = _TeamView(storage, team)
        assert torch.equal(view["rewards"][:, 0], rewards[:, agent.columns[team]])
        _, advantages, _ = learner.compute_returns(view, view["rewards"].mean(-1))
        assert torch.allclose(advantages[:, 0], torch.tensor(hand[team])), (team, advantages[:, 0])


def test_ladder_swaps_when_the_learner_beats_its_frozen_opponent() -> None:
    agent, _ = _agent(schedule="ladder", ladder_threshold=0.6, first_learner=EVADERS)
    assert agent.learning_teams() == (EVADERS,)
    agent.on_league_evaluation(10, {EVADERS: {"iter_10": 0.55, "random": 1.0}, PURSUERS: {"iter_10": 0.9}},
                               {EVADERS: "iter_10", PURSUERS: "iter_10"})
    assert agent.learning_teams() == (EVADERS,)  # only the win rate against the current frozen opponent counts
    agent.on_league_evaluation(20, {EVADERS: {"iter_20": 0.6}, PURSUERS: {"iter_20": 0.0}},
                               {EVADERS: "iter_20", PURSUERS: "iter_20"})
    assert agent.learning_teams() == (PURSUERS,)
    capped, env = _agent(schedule="ladder", ladder_max_iterations=2)
    storage = rollout(capped, env, 8)
    seen = []
    for _ in range(5):
        seen.append(capped.learning_teams()[0])
        capped.update(storage)
    assert seen == [PURSUERS, PURSUERS, EVADERS, EVADERS, PURSUERS]


def test_save_load_round_trip() -> None:
    agent, env = _agent(schedule="alternate", alternate_interval=1, normalize_obs=True)
    agent.update(rollout(agent, env, 8))
    other, _ = _agent(schedule="alternate", alternate_interval=1, normalize_obs=True)
    other.load_state_dict(agent.state_dict())
    assert other.updates == 1 and other.learning_teams() == (EVADERS,)
    obs, _ = env.reset(seed=3)
    a, _ = agent.act(obs, deterministic=True, update_stats=False)
    b, _ = other.act(obs, deterministic=True, update_stats=False)
    assert set(a) == set(env.agents) and all(torch.equal(a[k], b[k]) for k in a)
    snap = agent.make_team_policy(PURSUERS)
    snap.load_state_dict(agent.team_policy(PURSUERS).state_dict())
    live = agent.team_policy(PURSUERS)(obs)
    assert set(live) == {"pursuer_0", "pursuer_1"} and all(torch.equal(live[k], snap(obs)[k]) for k in live)


# --- config errors -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("algo", "key", "message"), [
    ({"schedule": "leapfrog"}, "algo.schedule", "must be one of"),
    ({"alternate_interval": 0}, "algo.alternate_interval", "must be >= 1"),
    ({"ladder_threshold": 0.0}, "algo.ladder_threshold", "must be a win rate in (0, 1]"),
    ({"league_interval": 0}, "algo.league_interval", "must be >= 1"),
    ({"league_episodes": 0}, "algo.league_episodes", "must be >= 1"),
    ({"teams": {"a": ["x"]}}, "algo.teams", "exactly two team names"),
])
def test_bad_config_names_the_key(algo: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config({"agent": "happo-competitive", "algo": algo})
    assert f"'{key}'" in str(err.value) and message in str(err.value)


def test_wrong_env_or_teams_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "happo-competitive", "--env", "drl/Rendezvous-v0", "--steps", "64", "--no-progress",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "config key 'env.id': happo-competitive needs a two-team" in err[0], err
    assert not (tmp_path / "r").exists()
    code = main(["train", "happo-competitive", "--steps", "64", "--no-progress", "--run-dir", str(tmp_path / "r"),
                 "--set", "algo.first_learner=hunters"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "config key 'algo.first_learner'" in err[0], err


def test_registry_names() -> None:
    spec = AGENTS["happo-competitive"]
    assert spec.agent_class is HAPPOCompetitive and spec.runner_class is CompetitiveRunner
    assert spec.default_env == "drl/PursuitEvasion-v0"


# --- runs: league snapshots, tables, resume, learning ------------------------------------------------------
def _run_cfg(**overrides: Any):
    return api.load_config("happo-competitive", "drl/PursuitEvasion-v0",
                           overrides={"progress": False, "seed": 1, **overrides})


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def _small(**algo: Any) -> dict[str, Any]:
    return {"total_steps": 5 * 10 * 4, "eval_interval": 0, "eval_episodes": 2,
            "env": {"num_envs": 4, "num_eval_envs": 4, "kwargs": {"max_episode_steps": 12, "shaping": 1.0}},
            "algo": {"num_steps": 10, "league_interval": 2, "league_episodes": 4, "normalize_obs": True,
                     "normalize_reward": True, **algo}}


def test_league_snapshots_at_the_right_iterations_and_the_win_rate_table(tmp_path: Path) -> None:
    """5 iterations, K = 2: snapshots and evaluations at iterations 0, 2, 4 and the last (5); the rows of 2, 4
    and 5 carry win_rate/<team>/<opponent>, mean and min; win_rates.csv holds every evaluation."""
    cfg = _run_cfg(**_small())
    runner = CompetitiveRunner(cfg, HAPPOCompetitive, tmp_path / "run")
    calls = []
    runner.agent.on_league_evaluation = lambda it, rates, latest: calls.append((it, latest, rates))
    runner.train()
    snaps = ["iter_0", "iter_2", "iter_4", "iter_5"]
    assert [(it, latest) for it, latest, _ in calls] == [(i, {PURSUERS: f"iter_{i}", EVADERS: f"iter_{i}"})
                                                        for i in (0, 2, 4, 5)]
    assert calls[-1][2][EVADERS] == runner.leagues[EVADERS].history[-1][1]
    assert runner.leagues[PURSUERS].snapshot_names == snaps == runner.leagues[EVADERS].snapshot_names
    assert list(runner.leagues[PURSUERS].opponents) == ["random", "fleeing", *snaps]
    assert list(runner.leagues[EVADERS].opponents) == ["random", "greedy", *snaps]
    rows = _rows(tmp_path / "run")
    assert len(rows) == 5
    for row in rows:
        logged = row["win_rate/pursuers/random"] != ""
        assert logged == (int(row["iteration"]) in (2, 4, 5)), row["iteration"]
        assert row["learning/evaders"] == "1.0" and row["learning/pursuers"] == "1.0"
        if int(row["iteration"]) >= 2:  # episodes (12 steps) have ended
            returns = [float(row[f"ep_return/{a}"]) for a in TEAMS[PURSUERS]]
            assert float(row["ep_return/pursuers"]) == pytest.approx(sum(returns) / 2)
    last = rows[-1]
    assert float(last["eval_return/evaders"]) == float(last["eval_return/evader_0"])
    rates = [float(last[f"win_rate/evaders/{o}"]) for o in ["random", "greedy", *snaps]]
    assert float(last["win_rate/evaders/min"]) == min(rates)
    assert float(last["win_rate/evaders/mean"]) == pytest.approx(sum(rates) / len(rates))
    with (tmp_path / "run" / WIN_RATES_CSV).open() as f:
        table = list(csv.DictReader(f))
    assert sorted({(int(r["iteration"]), r["team"]) for r in table}) == [
        (i, t) for i in (0, 2, 4, 5) for t in (EVADERS, PURSUERS)]
    assert {r["opponent"] for r in table if r["iteration"] == "0"} == {"random", "fleeing", "greedy", "iter_0"}


def test_bitwise_resume_with_the_league(tmp_path: Path) -> None:
    """A run stopped inside iteration 4 of 5 and resumed ends in the uninterrupted run's state: both learners,
    the schedule, the league pools (snapshot weights) and history, the rows and the win-rate table."""
    cfg = _run_cfg(**_small(schedule="alternate", alternate_interval=2))
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    CompetitiveRunner(cfg, HAPPOCompetitive, whole).train()
    train_interrupted_at_step(CompetitiveRunner(cfg, HAPPOCompetitive, parts), 3 * 10 + 5)  # inside iteration 4
    saved = load_checkpoint(parts / "checkpoints" / "latest.pt")
    assert saved["runner"]["iteration"] == 3 and list(saved["leagues"][PURSUERS]["snapshots"]) == ["iter_0", "iter_2"]
    resumed = CompetitiveRunner(cfg, HAPPOCompetitive, parts, resume=True)
    assert resumed.leagues[EVADERS].snapshot_names == ["iter_0", "iter_2"]
    resumed.train()
    assert _rows(parts) == _rows(whole)
    assert (parts / WIN_RATES_CSV).read_text() == (whole / WIN_RATES_CSV).read_text()
    a, b = load_checkpoint(whole / "checkpoints" / "latest.pt"), load_checkpoint(parts / "checkpoints" / "latest.pt")
    for key in ("agent_state", "leagues", "tracker", "generator", "env_state"):
        assert_equal(a[key], b[key], key)


def test_drl_eval_prints_per_team_returns_and_win_rates(tmp_path: Path, capsys) -> None:
    cfg = _run_cfg(**_small())
    CompetitiveRunner(cfg, HAPPOCompetitive, tmp_path / "run").train()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--episodes", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["agent_returns"]) == {"pursuer_0", "pursuer_1", "evader_0"}
    agents = out["agent_returns"]
    assert out["team_returns"][PURSUERS] == pytest.approx((agents["pursuer_0"] + agents["pursuer_1"]) / 2)
    assert out["team_returns"][EVADERS] == pytest.approx(agents["evader_0"])
    assert set(out["win_rates"][PURSUERS]) == {"self", "random", "fleeing"}
    assert set(out["win_rates"][EVADERS]) == {"self", "random", "greedy"}
    # 12-step episodes: a draw is impossible (caught, or truncated with the evader free)
    assert out["win_rates"][PURSUERS]["self"] + out["win_rates"][EVADERS]["self"] == 1.0


def test_benchmark_script_plumbing(tmp_path: Path) -> None:
    """benchmarks/competitive.py at a tiny budget: two seeds trained, win rates read, summarised, plotted."""
    from benchmarks import competitive as bench

    with pytest.raises(SystemExit):
        bench.parse_args(["--seeds", "0"])
    code = bench.main(["--seeds", "2", "--schedules", "simultaneous", "--steps", "240", "--league-every", "2",
                       "--episodes", "4",
                       "--set", "env.num_envs=4", "--set", "env.num_eval_envs=4", "--set", "algo.num_steps=20",
                       "--set", "env.kwargs.max_episode_steps=10", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    runs = results["runs"]
    assert [("error" in r, r["steps"]) for r in runs] == [(False, 240), (False, 240)]
    assert [p["iteration"] for p in runs[0]["curves"][PURSUERS]] == [0, 2, 3]
    assert bench.opponents(runs[0], EVADERS) == ["iter_0", "iter_2", "random", "greedy"]
    assert [(s["schedule"], s["team"], s["seeds"]) for s in results["summary"]] == [
        ("simultaneous", PURSUERS, 2), ("simultaneous", EVADERS, 2)]
    report = (tmp_path / "report.md").read_text()
    assert "| simultaneous | pursuers | 2 | 240 | iter_0 |" in report and "## Claims" in report
    assert (tmp_path / "win_rates.png").read_bytes()[:4] == b"\x89PNG"


def test_pursuers_learn_to_beat_the_random_evaders(tmp_path: Path) -> None:
    """The tuned config (simultaneous) cut to 20 iterations of 32 envs x 50 steps (32,000 steps): the pursuers'
    win rate against the scripted random evaders over 64 league episodes rises by at least 0.1 (measured: seed 0
    0.00 -> 0.19, seed 1 0.06 -> 0.30), and both teams were trained every iteration."""
    cfg = _run_cfg(seed=0, total_steps=20 * 50 * 32, eval_interval=0, eval_episodes=2,
                   env={"num_envs": 32, "num_eval_envs": 64},
                   algo={"num_steps": 50, "league_interval": 20, "league_episodes": 64})
    assert cfg.algo.schedule == "simultaneous" and cfg.env.kwargs["shaping"] == 1.0
    _, summary = api.train(cfg, tmp_path / "run")
    with (tmp_path / "run" / WIN_RATES_CSV).open() as f:
        table = {(int(r["iteration"]), r["team"], r["opponent"]): float(r["win_rate"]) for r in csv.DictReader(f)}
    start, end = table[(0, PURSUERS, "random")], table[(20, PURSUERS, "random")]
    assert end >= start + 0.1, (start, end)
    rows = _rows(tmp_path / "run")
    assert all(r["learning/pursuers"] == "1.0" and r["learning/evaders"] == "1.0" for r in rows)
    assert float(rows[-1]["win_rate/pursuers/random"]) == end


def test_benchmark_gains_by_hand() -> None:
    from benchmarks import competitive as bench

    curve = [{"iteration": 0, "rates": {"random": 0.0, "iter_0": 0.5}},
             {"iteration": 2, "rates": {"random": 0.5, "iter_0": 0.5, "iter_2": 0.25}},
             {"iteration": 4, "rates": {"random": 1.0, "iter_0": 0.75, "iter_2": 0.5, "iter_4": 0.5}}]
    run = {"curves": {PURSUERS: curve}}
    # iteration-0 pool (random, iter_0): 0.25 -> 0.875; since frozen: iter_0 0.5 -> 0.75, iter_2 0.25 -> 0.5
    assert bench._pool_mean(run, PURSUERS, -1) - bench._pool_mean(run, PURSUERS, 0) == 0.625
    assert bench._gain_since_frozen(run, PURSUERS) == 0.25
    assert bench._verdict([0.25]) == "not judged (one seed)"
    assert bench._verdict([0.2, 0.3, 0.25]).startswith("yes") and bench._verdict([0.2, -0.3, 0.1]).startswith("not")


def test_pursuit_evasion_scripted_policies_by_team() -> None:
    env = PursuitEvasion(3)
    obs, _ = env.reset(seed=0)
    for team, names in ((PURSUERS, ["random", "greedy"]), (EVADERS, ["random", "fleeing"])):
        policies = env.scripted_policies(team)
        assert list(policies) == names
        for policy in policies.values():
            actions = policy(obs)
            assert set(actions) == set(env.teams[team]) and all(a.shape == (3, 2) for a in actions.values())
    with pytest.raises(ValueError, match="no team 'hunters'"):
        env.scripted_policies("hunters")
