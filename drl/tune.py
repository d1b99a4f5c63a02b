"""Hyperparameter search on Optuna (``drl tune``): sample configs, train each, prune on evaluation returns.

A study trains ``trials`` runs of one agent on one env. Each trial's config is the usual one (the agent's
defaults <- the tuned ``configs/<agent>/<env>.yaml`` when there is one <- the search space's ``base:`` <- the
caller's overrides, e.g. ``--steps``) with the values the sampler draws for the search space's ``params``.
The run evaluates ``evals`` times (``eval_interval = total_steps // evals``); after each evaluation the mean
eval return is reported to the trial (the runner's ``eval_callbacks``, nothing agent-specific), and the pruner
(median or Hyperband, on those intermediate values) may stop it. The trial's value is the run's final
evaluation return (maximised).

The search space of agent ``a`` is ``configs/a/tune.yaml`` (or any file given), e.g.::

    base:                       # optional: config values every trial starts from
      eval_episodes: 5
    params:                     # config key (dotted, as for --set) -> distribution
      algo.learning_rate: {type: float, low: 1.0e-5, high: 3.0e-3, log: true}
      algo.num_epochs: {type: int, low: 3, high: 20}
      algo.gamma: {type: categorical, choices: [0.95, 0.99, 0.995]}

``type: float`` and ``type: int`` take ``low``, ``high`` and optionally ``log`` or ``step``; ``categorical``
takes ``choices``. Every bound and choice is checked against the agent's config before the study starts, so a
bad key, type or value is one :class:`ConfigError` line naming the file and the entry.

The study lives in a folder (default ``tune/<agent>-<env>``): its storage defaults to the SQLite file
``study.db`` there; give ``storage`` (an RDB URL, e.g. ``postgresql://...`` or the same ``sqlite:///...``
file) and the same ``study_name`` to several processes or machines to share one study (each runs its own
``trials``). Trials train in ``<folder>/trials/trial-<number>``. At the end ``best.yaml`` (the best trial's
full config, a normal drl config: ``drl train --config best.yaml``) and ``trials.csv`` are written there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drl.config import ConfigError, load_yaml, merge, to_dict

__all__ = ["DISTRIBUTIONS", "SAMPLERS", "PRUNERS", "TuneResult", "search_space_path", "load_search_space",
           "check_search_space", "suggest", "make_sampler", "make_pruner", "tune"]

DISTRIBUTIONS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                 "categorical": {"choices"}}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


def search_space_path(agent: str) -> Path:
    """``configs/<agent>/tune.yaml``."""
    from drl.api import CONFIG_DIR

    return CONFIG_DIR / agent / "tune.yaml"


def _nested(key: str, value: Any) -> dict[str, Any]:
    """``"algo.gamma", 0.9`` -> ``{"algo": {"gamma": 0.9}}``."""
    out: dict[str, Any] = {}
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _check_entry(source: str, key: str, spec: Any) -> None:
    where = f"search space {source}: params.{key}"
    if not isinstance(spec, dict) or spec.get("type") not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: must be a mapping with type: one of {list(DISTRIBUTIONS)}, got {spec!r}")
    kind = spec["type"]
    allowed = DISTRIBUTIONS[kind]
    extra = sorted(set(spec) - allowed - {"type"})
    if extra:
        raise ConfigError(f"{where}: unknown field(s) {extra} for type {kind}; allowed: {sorted(allowed)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        return
    number = int if kind == "int" else (int, float)
    low, high = spec.get("low"), spec.get("high")
    for name, value in (("low", low), ("high", high)):
        if not isinstance(value, number) or isinstance(value, bool) or not math.isfinite(value):
            raise ConfigError(f"{where}: {name} must be a finite {'whole ' if kind == 'int' else ''}number, "
                              f"got {value!r}")
    if not low < high:
        raise ConfigError(f"{where}: low must be below high, got low {low}, high {high}")
    if spec.get("log") and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got {low}")
    if spec.get("log") and spec.get("step") is not None:
        raise ConfigError(f"{where}: give log or step, not both")
    step = spec.get("step")
    if step is not None and (not isinstance(step, number) or isinstance(step, bool) or not step > 0):
        raise ConfigError(f"{where}: step must be a number > 0, got {step!r}")


def load_search_space(agent: str, path: str | Path | None = None) -> dict[str, Any]:
    """Read and check the shape of a search space file (default :func:`search_space_path`).

    Returns:
        ``{"source": str, "base": dict, "params": {key: spec}}``.

    Raises:
        ConfigError: no such file, or a malformed one (one line naming the file and entry).
    """
    path = Path(path) if path is not None else search_space_path(agent)
    if not path.is_file():
        raise ConfigError(f"no search space for agent '{agent}': {path} does not exist (write one: see drl/tune.py, "
                          "or give --space FILE)")
    raw = load_yaml(path)
    source = str(path)
    unknown = sorted(set(raw) - {"base", "params"})
    if unknown:
        raise ConfigError(f"search space {source}: unknown top-level key(s) {unknown}; allowed: base, params")
    base, params = raw.get("base") or {}, raw.get("params")
    if not isinstance(base, dict):
        raise ConfigError(f"search space {source}: base must be a mapping of config values")
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"search space {source}: params must be a non-empty mapping of config key -> distribution")
    for key, spec in params.items():
        _check_entry(source, str(key), spec)
    return {"source": source, "base": base, "params": params}


def _trial_raw(base_raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    raw = base_raw
    for key, value in values.items():
        raw = merge(raw, _nested(key, value))
    return raw


def check_search_space(agent: str, env_id: str, space: dict[str, Any], overrides: dict[str, Any] | None = None
                       ) -> None:
    """Resolve the config with every bound and choice of every parameter (the others at their defaults):
    an unknown key, a wrong type or an out-of-range value is a :class:`ConfigError` naming the entry."""
    from drl.api import load_config

    base_raw = merge(space["base"], overrides or {})
    load_config(agent, env_id, overrides=base_raw)  # the base itself
    for key, spec in space["params"].items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            try:
                load_config(agent, env_id, overrides=_trial_raw(base_raw, {key: value}))
            except ConfigError as err:
                raise ConfigError(f"search space {space['source']}: params.{key} = {value!r} is not a valid "
                                  f"config value: {err}") from err


def suggest(trial: Any, space: dict[str, Any]) -> dict[str, Any]:
    """Draw one value per parameter from ``trial`` (an ``optuna.Trial``): ``{config key: value}``."""
    values = {}
    for key, spec in space["params"].items():
        kind = spec["type"]
        if kind == "categorical":
            values[key] = trial.suggest_categorical(key, spec["choices"])
        elif kind == "int":
            values[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step") or 1,
                                            log=bool(spec.get("log")))
        else:
            values[key] = trial.suggest_float(key, spec["low"], spec["high"], step=spec.get("step"),
                                              log=bool(spec.get("log")))
    return values


def make_sampler(name: str, seed: int | None) -> Any:
    """``tpe`` (Optuna's TPESampler) or ``random``, seeded."""
    import optuna

    if name not in SAMPLERS:
        raise ConfigError(f"--sampler must be one of {list(SAMPLERS)}, got {name!r}")
    return optuna.samplers.TPESampler(seed=seed) if name == "tpe" else optuna.samplers.RandomSampler(seed=seed)


def make_pruner(name: str, total_steps: int, eval_interval: int) -> Any:
    """``median`` (after 2 complete trials, from the first evaluation on), ``hyperband`` (resources in env
    steps: first evaluation .. ``total_steps``) or ``none``."""
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"--pruner must be one of {list(PRUNERS)}, got {name!r}")
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, eval_interval), max_resource=total_steps)
    return optuna.pruners.NopPruner()


@dataclass
class TuneResult:
    """What :func:`tune` leaves: the study folder, the best config file, the best trial's number and value."""

    folder: Path
    best_config: Path | None
    best_trial: int | None
    best_value: float | None
    trials: int
    pruned: int
    failed: int


def _write_trials_csv(study: Any, path: Path) -> None:
    keys = sorted({key for t in study.trials for key in t.params})
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["number", "state", "value", "last_step", *keys])
        for t in study.trials:
            last = max(t.intermediate_values) if t.intermediate_values else ""
            writer.writerow([t.number, t.state.name, "" if t.value is None else t.value, last,
                             *[t.params.get(k, "") for k in keys]])


def tune(agent: str, env_id: str, trials: int, storage: str | None = None, study_name: str | None = None,
         out: str | Path | None = None, space_file: str | Path | None = None,
         overrides: dict[str, Any] | None = None, evals: int = 5, sampler: str | Any = "tpe",
         pruner: str | Any = "median", seed: int | None = 0, progress: bool = True) -> TuneResult:
    """Run (or continue) a study; see the module docstring.

    Args:
        agent, env_id: what to tune, as for ``drl train``.
        trials: trials this call runs (several processes on one storage each run their own).
        storage: an Optuna storage URL; None: ``sqlite:///<folder>/study.db``.
        study_name: None: ``<agent>-<env id>``.
        out: the study folder; None: ``tune/<agent>-<env id>`` (``/`` in the env id becomes ``-``).
        space_file: the search space; None: ``configs/<agent>/tune.yaml``.
        overrides: config values over the search space's ``base`` for every trial (e.g. ``total_steps``).
        evals: evaluations per trial (the pruner's intermediate values).
        sampler, pruner: names (:data:`SAMPLERS`, :data:`PRUNERS`) or Optuna objects.
        seed: the sampler's seed (None: random). Every trial trains with the config's seed.
        progress: print one line per finished trial.

    Raises:
        ConfigError: a bad search space, name or argument (one line).
    """
    import optuna

    from drl.api import load_config, train
    from drl.guards import EnvStepError, NonFiniteError

    if trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {trials}")
    if evals < 1:
        raise ConfigError(f"--evals must be >= 1, got {evals}")
    space = load_search_space(agent, space_file)
    check_search_space(agent, env_id, space, overrides)
    # quiet trials (no bar, no table) unless the space or the caller says otherwise
    base_raw = merge({"progress": False, "log_interval": -1}, merge(space["base"], overrides or {}))
    total = load_config(agent, env_id, overrides=base_raw).total_steps
    eval_interval = max(1, total // evals)
    base_raw = merge(base_raw, {"eval_interval": eval_interval})
    folder = Path(out) if out is not None else Path("tune") / f"{agent}-{env_id.replace('/', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(folder / 'study.db').resolve()}"
    study_name = study_name or f"{agent}-{env_id}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="maximize", load_if_exists=True,
        sampler=make_sampler(sampler, seed) if isinstance(sampler, str) else sampler,
        pruner=make_pruner(pruner, total, eval_interval) if isinstance(pruner, str) else pruner)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        cfg = load_config(agent, env_id, overrides=_trial_raw(base_raw, values))
        trial.set_user_attr("config", to_dict(cfg))

        def report(step: int, mean_return: float) -> None:
            trial.report(mean_return, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step} (eval return {mean_return:.4g})")

        run_dir = folder / "trials" / f"trial-{trial.number:04d}"
        with contextlib.redirect_stdout(io.StringIO()):  # the run's config and summary: its folder has them
            _, summary = train(cfg, run_dir, eval_callbacks=[report])
        value = summary.get("final_eval_return")
        return math.nan if value is None else float(value)

    def say(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not progress:
            return
        if trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            outcome = f"pruned at step {step} (eval return {trial.intermediate_values[step]:.4g})"
        else:
            value = "" if trial.value is None else f", final eval return {trial.value:.4g}"
            outcome = trial.state.name.lower() + value
        print(f"trial {trial.number}: {outcome} {trial.params}", flush=True)

    study.optimize(objective, n_trials=trials, catch=(NonFiniteError, EnvStepError), callbacks=[say])
    _write_trials_csv(study, folder / "trials.csv")
    states = [t.state for t in study.trials]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None
                and math.isfinite(t.value)]
    result = TuneResult(folder, None, None, None, len(states), states.count(optuna.trial.TrialState.PRUNED),
                        states.count(optuna.trial.TrialState.FAIL))
    if complete:
        best = max(complete, key=lambda t: t.value)
        path = folder / "best.yaml"
        header = (f"# drl tune: best of study '{study_name}' (trial {best.number} of {len(states)}, final eval "
                  f"return {best.value:.6g} after {best.user_attrs['config']['total_steps']} steps)\n"
                  f"# params: {best.params}\n")
        path.write_text(header + yaml.safe_dump(best.user_attrs["config"], sort_keys=False))
        result.best_config, result.best_trial, result.best_value = path, best.number, float(best.value)
    elif progress:
        print("no trial completed: no best.yaml written", file=sys.stderr)
    return result
