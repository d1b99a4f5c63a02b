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
    # best.yaml is a normal config: drl.config reads back the trial's config, sampled values included
    cfg = load_config(config_file=result.best_config)
    assert to_dict(cfg) == best.user_attrs["config"]
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
