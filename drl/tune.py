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
takes ``choices``. Before the study is created (so nothing is written on bad input) the base config (agent +
env + overrides) is resolved and its run built once in a scratch folder (a bad env id, a multi-agent env for a
single-agent agent or an agent/env mismatch are refused there), and every entry is checked against the agent's
config: its type (``float`` on an integer key is refused) and a config at each bound and choice. Each problem
is one :class:`ConfigError` line naming the file and the entry. A config error inside a trial stops the study
with one line too; a trial that diverges or whose env fails (NonFiniteError, EnvStepError) is marked failed and
the study goes on.

The study lives in a folder (default ``tune/<agent>-<env>``): its storage defaults to the SQLite file
``study.db`` there; give ``storage`` (an RDB URL, e.g. ``postgresql://...`` or the same ``sqlite:///...``
file) and the same ``study_name`` to several processes or machines to share one study (each runs its own
``trials``). Trials train in ``<folder>/trials/trial-<number>``, quietly and evaluating ``evals`` times
(:data:`TRIAL_ONLY_KEYS`). At the end ``best.yaml`` (the best trial's full config, with the trial-only keys
back at the base config's values: a normal drl config, ``drl train --config best.yaml``) and ``trials.csv`` are
written there.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import re
import sys
import tempfile
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from drl.config import ConfigError, TrainConfig, load_yaml, merge, to_dict

__all__ = ["DISTRIBUTIONS", "SAMPLERS", "PRUNERS", "TRIAL_ONLY_KEYS", "STORAGE_FORMS", "TuneResult",
           "search_space_path", "load_search_space", "check_search_space", "check_run_builds", "check_storage",
           "best_config", "suggest", "make_sampler", "make_pruner", "tune"]

DISTRIBUTIONS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"},
                 "categorical": {"choices"}}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
# what a trial forces for itself (quiet, evaluated ``evals`` times); best.yaml gets the base config's values back
TRIAL_ONLY_KEYS = ("progress", "log_interval", "eval_interval")
STORAGE_FORMS = ("sqlite:///path/to/study.db, postgresql://user:password@host/database or "
                 "mysql://user:password@host/database (a driver may follow the name: postgresql+psycopg2://...)")


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


def _field_type(agent: str, key: str) -> Any:
    """The declared type of config key ``key`` (dotted) of ``agent``'s config, without ``None``; None where
    the key is not a typed field (unknown: resolving the config names it; a free-form mapping: anything goes)."""
    import dataclasses

    from drl.registry import AGENTS

    node: Any = TrainConfig
    for part in key.split("."):
        if not (isinstance(node, type) and dataclasses.is_dataclass(node)):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = AGENTS[agent].config_class if node is TrainConfig and part == "algo" and agent in AGENTS \
            else hints[part]
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            members = [arg for arg in typing.get_args(node) if arg is not type(None)]
            node = members[0] if len(members) == 1 else tuple(members)
    return node


def check_search_space(agent: str, env_id: str, space: dict[str, Any], overrides: dict[str, Any] | None = None
                       ) -> None:
    """Check every entry against ``agent``'s config: its distribution type against the key's type (a
    ``float`` distribution draws fractional values, so an integer key needs ``type: int``), then the config
    resolved with every bound and choice of every parameter (the others at their defaults): an unknown key, a
    wrong type or an out-of-range value is a :class:`ConfigError` naming the entry."""
    from drl.api import load_config

    base_raw = merge(space["base"], overrides or {})
    load_config(agent, env_id, overrides=base_raw)  # the base itself
    for key, spec in space["params"].items():
        where = f"search space {space['source']}: params.{key}"
        field_type = _field_type(agent, key)
        if spec["type"] == "float" and field_type is int:
            raise ConfigError(f"{where}: type float draws fractional values, but config key '{key}' is an "
                              f"integer; use type: int (low {spec['low']}, high {spec['high']})")
        if spec["type"] in ("float", "int") and field_type in (bool, str):
            raise ConfigError(f"{where}: type {spec['type']} draws numbers, but config key '{key}' is a "
                              f"{field_type.__name__}; use type: categorical with choices")
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            try:
                load_config(agent, env_id, overrides=_trial_raw(base_raw, {key: value}))
            except ConfigError as err:
                raise ConfigError(f"{where} = {value!r} is not a valid config value: {err}") from err


def _config_errors() -> tuple[type[BaseException], ...]:
    """What a bad config or env choice raises while a run is built (the CLI's one-line, exit-2 errors)."""
    from gymnasium.error import Error as GymError

    from envs.core import MissingDependencyError

    return ConfigError, ValueError, TypeError, GymError, MissingDependencyError, FileNotFoundError, FileExistsError


def check_run_builds(cfg: TrainConfig) -> None:
    """Build the run of ``cfg`` (envs, agent, storage: what every trial builds) in a scratch folder, then
    close and delete it, so a bad env id, a multi-agent env for a single-agent agent or an agent that does not
    fit the env is refused before a study exists. An agent with a ``prepare`` step (AACD trains its teacher
    first) only has its envs built.

    Raises:
        ConfigError: one line naming the agent, the env and the problem.
    """
    from drl.registry import AGENTS
    from drl.wrappers import make_run_env
    from envs.core import resolve_device

    spec = AGENTS[cfg.agent]
    with tempfile.TemporaryDirectory(prefix="drl-tune-check-") as scratch, \
            contextlib.redirect_stdout(io.StringIO()):
        try:
            if spec.prepare is not None:
                make_run_env(cfg, cfg.env.num_envs, resolve_device(cfg.device), cfg.env.vectorization).close()
                return
            runner = spec.runner_class(cfg, spec.agent_class, Path(scratch) / "run")
        except _config_errors() as err:
            raise ConfigError(f"{cfg.agent} on env {cfg.env.id}: {err}") from err
        try:
            for env in (runner.env, runner.eval_env):
                with contextlib.suppress(Exception):
                    env.close()
        finally:
            runner.close()


def check_storage(url: str) -> Any:
    """Open the Optuna storage at ``url`` (an RDB URL, see :data:`STORAGE_FORMS`).

    Raises:
        ConfigError: not such a URL, or it cannot be opened (one line naming the URL and the accepted forms).
    """
    import optuna

    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    dialect = scheme.group(1).split("+")[0].lower() if scheme else None
    if dialect not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError(f"--storage {url!r} is not a storage URL drl tune can use; give {STORAGE_FORMS}")
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as err:  # noqa: BLE001 - any failure to open a user's database is one line
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"--storage {url!r}: cannot open it ({type(err).__name__}: {reason}); give "
                          f"{STORAGE_FORMS}") from None


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
    # everything about the input is checked before the study (its folder, its storage) exists
    space = load_search_space(agent, space_file)
    check_search_space(agent, env_id, space, overrides)
    user_raw = merge(space["base"], overrides or {})
    user_cfg = load_config(agent, env_id, overrides=user_raw)
    check_run_builds(user_cfg)
    if isinstance(sampler, str):
        sampler = make_sampler(sampler, seed)
    eval_interval = max(1, user_cfg.total_steps // evals)
    if isinstance(pruner, str):
        pruner = make_pruner(pruner, user_cfg.total_steps, eval_interval)
    # quiet trials (no bar, no table) unless the space or the caller says otherwise; evaluated `evals` times
    base_raw = merge(merge({"progress": False, "log_interval": -1}, user_raw), {"eval_interval": eval_interval})
    rdb = check_storage(storage) if storage is not None else None
    folder = Path(out) if out is not None else Path("tune") / f"{agent}-{env_id.replace('/', '-')}"
    folder.mkdir(parents=True, exist_ok=True)
    if rdb is None:
        rdb = check_storage(f"sqlite:///{(folder / 'study.db').resolve()}")
    study_name = study_name or f"{agent}-{env_id}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial is one line (say), not Optuna's traceback
    study = optuna.create_study(storage=rdb, study_name=study_name, direction="maximize", load_if_exists=True,
                                sampler=sampler, pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        values = suggest(trial, space)
        try:
            cfg = load_config(agent, env_id, overrides=_trial_raw(base_raw, values))
            trial.set_user_attr("config", to_dict(cfg))

            def report(step: int, mean_return: float) -> None:
                trial.report(mean_return, step)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (eval return {mean_return:.4g})")

            run_dir = folder / "trials" / f"trial-{trial.number:04d}"
            with contextlib.redirect_stdout(io.StringIO()):  # the run's config and summary: its folder has them
                _, summary = train(cfg, run_dir, eval_callbacks=[report])
        except (NonFiniteError, EnvStepError) as err:  # this trial's values diverged or broke the env: next trial
            trial.set_user_attr("error", str(err).strip().splitlines()[0] if str(err).strip() else repr(err))
            raise
        except _config_errors() as err:  # a config no trial can run: the study stops, one line
            raise ConfigError(f"trial {trial.number} ({values}): {err}") from err
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
            error = f" ({trial.user_attrs['error']})" if "error" in trial.user_attrs else ""
            outcome = trial.state.name.lower() + value + error
        print(f"trial {trial.number}: {outcome} {trial.params}", flush=True)

    try:
        study.optimize(objective, n_trials=trials, catch=(NonFiniteError, EnvStepError), callbacks=[say])
    finally:
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
        path.write_text(header + yaml.safe_dump(best_config(best.user_attrs["config"], user_cfg), sort_keys=False))
        result.best_config, result.best_trial, result.best_value = path, best.number, float(best.value)
    elif progress:
        print("no trial completed: no best.yaml written", file=sys.stderr)
    return result


def best_config(trial_config: dict[str, Any], base: TrainConfig) -> dict[str, Any]:
    """A trial's config (``to_dict`` form) with :data:`TRIAL_ONLY_KEYS` back at ``base``'s values (the config
    the user asked for, before tune made its trials quiet and evaluated them for the pruner)."""
    restored = dict(trial_config)
    base_dict = to_dict(base)
    for key in TRIAL_ONLY_KEYS:
        restored[key] = base_dict[key]
    return restored
