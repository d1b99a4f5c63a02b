"""Hyperparameter search (drl/tune.py, `drl tune`): a tiny study runs end to end on its SQLite storage, the
runner's evaluations reach the pruner, the best config is a normal drl config, and bad search spaces are one line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from drl.api import load_config
from drl.cli import main
from drl.config import ConfigError, to_dict
from drl.tune import load_search_space, search_space_path, tune

# a tiny PPO budget on CartPole: 2 iterations of 4 x 64 steps, one evaluation after each
TINY = {"total_steps": 512, "eval_episodes": 2, "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 64, "minibatch_size": 128, "num_epochs": 1}}


def _space(tmp_path: Path, params: dict, base: dict | None = None) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"base": base or {}, "params": params}))
    return path


SMALL_SPACE = {"algo.learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
               "algo.clip_coef": {"type": "categorical", "choices": [0.1, 0.2]}}


def test_tiny_study_end_to_end_and_best_config_round_trips(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = tune("ppo", "CartPole-v1", 2, out=out, space_file=_space(tmp_path, SMALL_SPACE), overrides=TINY,
                  evals=2, pruner="none", progress=False)
    assert result.trials == 2 and result.pruned == 0 and result.failed == 0
    assert (out / "study.db").is_file() and (out / "trials.csv").read_text().count("COMPLETE") == 2
    study = optuna.load_study(study_name="ppo-CartPole-v1", storage=f"sqlite:///{(out / 'study.db').resolve()}")
    best = study.best_trial
    assert result.best_trial == best.number and result.best_value == pytest.approx(best.value)
    assert sorted(best.intermediate_values) == [256, 512]  # the runner's two evaluations, at their env steps
    assert best.intermediate_values[512] == pytest.approx(best.value)  # the value is the final evaluation
    # best.yaml is a normal config: drl.config reads back the trial's config, sampled values included, with
    # what tune forced on the trial (quiet, evaluated twice) back at the user's values (here the defaults and
    # configs/ppo/CartPole-v1.yaml: a progress bar, a table row every ~10 s, an evaluation every 10000 steps)
    trial_config = best.user_attrs["config"]
    assert (trial_config["progress"], trial_config["log_interval"], trial_config["eval_interval"]) == (False, -1, 256)
    cfg = load_config(config_file=result.best_config)
    assert (cfg.progress, cfg.log_interval, cfg.eval_interval) == (True, 0, 10_000)
    assert to_dict(cfg) == {**trial_config, "progress": True, "log_interval": 0, "eval_interval": 10_000}
    assert cfg.algo.learning_rate == best.params["algo.learning_rate"]
    assert cfg.algo.clip_coef == best.params["algo.clip_coef"] and cfg.total_steps == 512
    # a second process (here: a second call) on the same storage continues the study
    again = tune("ppo", "CartPole-v1", 1, out=out, space_file=_space(tmp_path, SMALL_SPACE), overrides=TINY,
                 evals=2, pruner="none", progress=False)
    assert again.trials == 3 and (out / "trials" / "trial-0002" / "summary.json").is_file()


class AlwaysPrune(optuna.pruners.BasePruner):
    """Prunes at the first reported value."""

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        return True


def test_pruning_is_wired_to_the_runner_evaluations(tmp_path: Path) -> None:
    result = tune("ppo", "CartPole-v1", 1, out=tmp_path / "study", space_file=_space(tmp_path, SMALL_SPACE),
                  overrides=TINY, evals=2, pruner=AlwaysPrune(), progress=False)
    assert result.pruned == 1 and result.best_config is None
    study = optuna.load_study(study_name="ppo-CartPole-v1",
                              storage=f"sqlite:///{(tmp_path / 'study' / 'study.db').resolve()}")
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [256]  # stopped at the first evaluation, before the second
    assert not (tmp_path / "study" / "trials" / "trial-0000" / "summary.json").exists()


@pytest.mark.parametrize("params,message", [
    ({"algo.learning_rat": {"type": "float", "low": 1e-4, "high": 1e-3}}, "params.algo.learning_rat"),
    ({"algo.learning_rate": {"type": "float", "low": 1e-3, "high": 1e-4}}, "low must be below high"),
    ({"algo.learning_rate": {"type": "gaussian", "low": 0, "high": 1}}, "type: one of"),
    ({"algo.learning_rate": {"type": "float", "low": 0.0, "high": 1e-3, "log": True}}, "log scale needs low > 0"),
    ({"algo.num_epochs": {"type": "int", "low": 1.5, "high": 4}}, "low must be a finite whole number"),
    ({"algo.gamma": {"type": "categorical", "choices": []}}, "choices must be a non-empty list"),
    ({"algo.gamma": {"type": "categorical", "choices": [0.9, 1.5]}}, "algo.gamma"),
    ({"algo.gamma": {"type": "float", "low": 0.9, "high": 0.99, "lo": 1}}, "unknown field(s) ['lo']"),
    # integral bounds, but a float distribution draws e.g. 3.19 for an integer key
    ({"algo.num_epochs": {"type": "float", "low": 3, "high": 20}},
     "params.algo.num_epochs: type float draws fractional values, but config key 'algo.num_epochs' is an integer; "
     "use type: int"),
    ({"algo.anneal_lr": {"type": "int", "low": 0, "high": 1}},
     "params.algo.anneal_lr: type int draws numbers, but config key 'algo.anneal_lr' is a bool; use type: "
     "categorical"),
])
def test_bad_search_space_gives_one_line(tmp_path: Path, capsys, params: dict, message: str) -> None:
    space = _space(tmp_path, params)
    with pytest.raises(ConfigError, match=None) as info:
        tune("ppo", "CartPole-v1", 1, out=tmp_path / "study", space_file=space, overrides=TINY, progress=False)
    assert message in str(info.value) and str(space) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "study").exists()  # refused before anything is created
    code = main(["tune", "ppo", "--env", "CartPole-v1", "--trials", "1", "--space", str(space),
                 "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_shipped_search_spaces_are_valid() -> None:
    """configs/<agent>/tune.yaml of ppo, sac and td3: every bound and choice makes a valid config."""
    from drl.tune import check_search_space

    for agent, env_id in (("ppo", "CartPole-v1"), ("sac", "Pendulum-v1"), ("td3", "Pendulum-v1")):
        assert search_space_path(agent).is_file()
        check_search_space(agent, env_id, load_search_space(agent))
    with pytest.raises(ConfigError, match="no search space for agent 'bc'"):
        load_search_space("bc")


@pytest.mark.parametrize("agent,env_id,message", [
    ("ppo", "drl/Nope-v0", "ppo on env drl/Nope-v0: unknown drl env 'drl/Nope-v0'; registered drl envs:"),
    ("ppo", "drl/Rendezvous-v0", "ppo on env drl/Rendezvous-v0: config key 'env.id': drl/Rendezvous-v0 is a "
     "multi-agent env (agents ['rover', 'rail']), but ppo trains single-agent envs; use a multi-agent agent (happo, "
     "mappo, happo-competitive)"),
    ("sac", "drl/CartPole-v0", "sac on env drl/CartPole-v0: SAC needs a Box action space; for Discrete actions "
     "use: ppo"),
])
def test_bad_agent_or_env_is_refused_before_the_study(tmp_path: Path, capsys, agent: str, env_id: str,
                                                      message: str) -> None:
    """The base config's run is built before the study: one line, exit 2, no study folder (no failed trial)."""
    code = main(["tune", agent, "--env", env_id, "--trials", "1", "--steps", "512", "--out", str(tmp_path / "s")])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f"drl tune: error: {message}")
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.out + captured.err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("url,message", [
    ("bogus://x", "--storage 'bogus://x' is not a storage URL drl tune can use; give sqlite:///path/to/study.db, "
     "postgresql://"),
    ("sqlite:////no/such/folder/study.db", "--storage 'sqlite:////no/such/folder/study.db': cannot open it "
     "(OperationalError"),
])
def test_bad_storage_url_is_one_line(tmp_path: Path, capsys, url: str, message: str) -> None:
    code = main(["tune", "ppo", "--env", "CartPole-v1", "--trials", "1", "--space", str(_space(tmp_path, SMALL_SPACE)),
                 "--storage", url, "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"drl tune: error: {message}") and len(err.strip().splitlines()) == 1
    assert "mysql://" in err and not (tmp_path / "s").exists()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # PartialFixedSampler
def test_config_error_inside_a_trial_stops_the_study_with_one_line(tmp_path: Path) -> None:
    """Each value alone makes a valid config (checked before the study), but the pair drawn for trial 0 does
    not (minibatch 256 > rollout batch 32 x 4 = 128): the study stops there, after one failed trial of three."""
    space = {"algo.num_steps": {"type": "categorical", "choices": [64, 32]},
             "algo.minibatch_size": {"type": "categorical", "choices": [128, 256]}}
    sampler = optuna.samplers.PartialFixedSampler({"algo.num_steps": 32, "algo.minibatch_size": 256},
                                                  optuna.samplers.RandomSampler(seed=0))
    with pytest.raises(ConfigError) as info:
        tune("ppo", "CartPole-v1", 3, out=tmp_path / "study", space_file=_space(tmp_path, space), overrides=TINY,
             sampler=sampler, pruner="none", progress=False)
    assert str(info.value) == ("trial 0 ({'algo.minibatch_size': 256, 'algo.num_steps': 32}): config key "
                               "'algo.minibatch_size': must divide the rollout batch algo.num_steps x env.num_envs = "
                               "32 x 4 = 128; got 256")
    study = optuna.load_study(study_name="ppo-CartPole-v1",
                              storage=f"sqlite:///{(tmp_path / 'study' / 'study.db').resolve()}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    assert (tmp_path / "study" / "trials.csv").read_text().count("FAIL") == 1
