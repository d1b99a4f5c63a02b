"""``drl``: train | eval | list | plot | demos. Thin: it parses, then calls :mod:`drl.api`."""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from pathlib import Path
from typing import Any

from drl.config import MAX_EVAL_EPISODES, parse_int  # light (yaml only): the parser needs them

DEFAULT_AGENT = "ppo"
DEFAULT_ENV = "drl/CartPole-v0"


def _train(args: argparse.Namespace) -> int:
    from drl import distributed

    if args.nproc is not None and not distributed.launched():  # the shortcut: torchrun runs this command N times
        _check_before_launch(args)  # bad input: one line here, not once per rank under torchrun
        return distributed.launch(args.nproc, _without_nproc(getattr(args, "argv", None) or sys.argv[1:]))
    if not distributed.launched():
        return _train_process(args)
    try:
        distributed.init(args.device or "auto", args.dist_timeout)
        return _train_process(args)
    except distributed.DistributedError as err:
        if os.environ.get("DRL_DEBUG"):
            raise
        print(f"drl train: error: {err}", file=sys.stderr, flush=True)
        return EXIT_DISTRIBUTED
    finally:  # now, not at interpreter exit, where gloo may abort tearing down a group a dead rank broke
        distributed.shutdown()


EXIT_DISTRIBUTED = 6  # under torchrun: a collective failed or timed out (another rank died or hung)


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N``, starting with the ``train`` command."""
    kept, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--nproc="):
            skip = False
            continue
        skip = arg == "--nproc"
        if not skip:
            kept.append(arg)
    return kept if kept[:1] == ["train"] else ["train", *kept]


def _check_before_launch(args: argparse.Namespace) -> None:
    """``drl train --nproc N`` before torchrun starts: the config resolved and validated, the agent able to
    train with N processes, the run folder free; on ``--resume`` what :func:`drl.api.check_resume` checks
    (the steps, the run's own number of processes). Raises the ConfigError (etc.) the ranks would raise."""
    from drl import api
    from drl.registry import AGENTS, check_distributed
    from drl.runners.common import check_run_dir_free

    if args.resume:
        _check_resume_flags(args)
        api.check_resume(args.resume, args.steps, args.device, args.nproc)
        return
    cfg = _train_config(args)
    check_distributed(cfg.agent, args.nproc)
    if args.run_dir is not None:
        check_run_dir_free(args.run_dir, args.overwrite, getattr(AGENTS[cfg.agent].agent_class, "run_subfolders", ()))


def _check_resume_flags(args: argparse.Namespace) -> None:
    """One ConfigError naming the flags ``--resume`` does not take (the run's saved config is used)."""
    from drl.config import ConfigError

    given = [("AGENT" if name == "agent" else f"--{name.replace('_', '-')}")
             for name in ("agent", "env", "config", "num_envs", "seed", "run_dir", "teacher", "demos", "base",
                          "wrapper")
             if getattr(args, name) not in (None, [])] + (["--set"] if args.set else []) + (
             ["--overwrite"] if args.overwrite else [])
    if given:
        raise ConfigError(f"--resume continues a run with its saved config (only --steps and --device may "
                          f"change); drop {given}")


def _train_process(args: argparse.Namespace) -> int:
    """``drl train`` in this process (one rank of a torchrun job, or the whole run)."""
    from drl import api, distributed
    from drl.runners.common import resume_command

    if args.resume:
        _check_resume_flags(args)
        summary = api.resume(args.resume, total_steps=args.steps, progress=False if args.no_progress else None,
                             device=args.device)
        if not distributed.is_main():
            return _exit_code(summary, Path(args.resume), quiet=True)
        if summary.pop("already_finished", False):
            print(f"run '{args.resume}' is already finished ({summary.get('steps')} steps): nothing to do; "
                  f"extend it with: {resume_command(args.resume)} --steps N")
            return 0
        print(json.dumps(summary, indent=2))
        print(f"run folder: {args.resume}")
        return _exit_code(summary, Path(args.resume))
    run_dir, summary = api.train(_train_config(args), args.run_dir, overwrite=args.overwrite)
    if not distributed.is_main():  # rank 0 reports the run
        return _exit_code(summary, run_dir, quiet=True)
    print(json.dumps(summary, indent=2))
    print(f"run folder: {run_dir}")
    return _exit_code(summary, run_dir)


def _train_config(args: argparse.Namespace) -> Any:
    """The resolved and validated config of a fresh ``drl train`` (a :class:`drl.config.TrainConfig`).

    Raises:
        ConfigError: a bad flag or config value (one line naming it).
    """
    from drl import api
    from drl.config import parse_overrides

    overrides = parse_overrides(args.set or [])
    for key, value in (("total_steps", args.steps), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.num_envs is not None:
        overrides.setdefault("env", {})["num_envs"] = args.num_envs
    if args.demos is not None:  # made absolute when the config is built (drl.config.PATH)
        overrides.setdefault("algo", {})["demos"] = args.demos
    if args.no_progress:
        overrides["progress"] = False
    agent = args.agent if args.agent is not None else (None if args.config else DEFAULT_AGENT)
    if args.teacher is not None:
        _check_takes("--teacher", "teacher", "learns without a teacher run", agent, args.config)
        overrides.setdefault("algo", {})["teacher"] = args.teacher
    if args.base is not None:  # made absolute when the config is built (drl.config.PATH)
        _check_takes("--base", "base", "has no base policy", agent, args.config)
        overrides.setdefault("algo", {})["base"] = args.base
    if args.env is not None or args.config:
        env_id = args.env
    else:  # the agent's own default env (a continuous one for SAC/TD3)
        from drl.registry import AGENTS

        env_id = AGENTS[agent].default_env if agent in AGENTS else DEFAULT_ENV
    if args.demos is not None:
        _check_takes("--demos", "demos", "does not learn from demonstrations", agent, args.config)
    cfg = api.load_config(agent, env_id, args.config, overrides)
    if args.wrapper:  # appended to the config file's wrappers (outermost last)
        from drl.wrappers import parse_wrapper_flag, validate_wrappers

        cfg.wrappers = list(cfg.wrappers) + [parse_wrapper_flag(text) for text in args.wrapper]
        validate_wrappers(cfg.wrappers)
    return cfg


def _check_takes(flag: str, field_name: str, what: str, agent: str | None, config_file: str | None) -> None:
    """``flag`` sets ``algo.<field_name>``: one ConfigError unless the agent's config has that field."""
    import dataclasses

    from drl.config import ConfigError, load_yaml
    from drl.registry import AGENTS

    if agent is None and config_file is not None:
        agent = load_yaml(config_file).get("agent", DEFAULT_AGENT)
    if agent not in AGENTS:
        return  # the config's own check names an unknown agent
    takes = sorted(name for name, spec in AGENTS.items()
                   if field_name in {f.name for f in dataclasses.fields(spec.config_class)})
    if agent not in takes:
        raise ConfigError(f"{flag}: agent '{agent}' {what}; agents that take one: {takes}")


def _exit_code(summary: dict[str, Any], run_dir: Path, quiet: bool = False) -> int:
    """0 for a finished run; 128 + signal (130 SIGINT, 143 SIGTERM) for an interrupted one, with the resume line
    (unless ``quiet``)."""
    from drl.runners.common import resume_command

    name = summary.get("interrupted_by")
    if not summary.get("interrupted") or name is None:
        return 0
    if quiet:
        return 128 + signal.Signals[name].value
    step = summary.get("checkpoint_step")
    start = f"step {step}" if step is not None else "step 0 (no checkpoint was written yet)"
    print(f"drl train: interrupted by {name} at step {summary.get('steps')}; continue from {start} with: "
          f"{resume_command(run_dir)}", file=sys.stderr)
    return 128 + signal.Signals[name].value


def _eval(args: argparse.Namespace) -> int:
    from drl import api

    result = api.evaluate(args.run_dir, episodes=args.episodes, checkpoint=args.checkpoint, device=args.device,
                          video=args.video, video_dir=args.video_dir)
    print(json.dumps(_json_safe({k: v for k, v in result.items() if k != "returns"}), indent=2))
    return 0


def _robustness(args: argparse.Namespace) -> int:
    from drl.robustness import parse_scales, robustness

    summary = robustness(args.run_dir, args.param, parse_scales(args.scales), args.episodes, args.bodies, args.out,
                         args.checkpoint, args.device, args.seed)
    print(json.dumps({k: v for k, v in summary.items() if k != "points"}, indent=2))
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from drl.api import CONFIG_DIR
    from drl.registry import AGENTS
    from envs import ENV_FAMILIES, ENVS

    console = Console()
    if not console.is_terminal:
        console = Console(width=200)  # piped output: do not fold ids to an 80-column guess
    agents = Table(title="agents")
    for col in ("name", "description"):
        agents.add_column(col)
    for name, spec in AGENTS.items():
        agents.add_row(name, spec.description)
    console.print(agents)
    envs_table = Table(title="drl envs (plus any gymnasium id, e.g. CartPole-v1, HalfCheetah-v5)")
    for col in ("id", "backend", "devices", "extra", "description"):
        envs_table.add_column(col)
    for info in [*ENVS.values(), *ENV_FAMILIES.values()]:
        envs_table.add_row(info.id, info.backend, info.devices, info.extra or "-", info.description)
    from envs.multi_task_sources import SCHEMES  # multi-task id schemes (minigrid-mt:<set>, metaworld:MT10)

    for scheme_id, backend, devices, extra, description in SCHEMES:
        envs_table.add_row(scheme_id, backend, devices, extra or "-", description)
    console.print(envs_table)
    from drl.wrappers import WRAPPERS

    wrappers = Table(title="env wrappers (config `wrappers: [{name: ...}]` or `drl train --wrapper NAME:k=v`)")
    for col in ("name", "in eval", "description"):
        wrappers.add_column(col)
    for name, cls in sorted(WRAPPERS.items()):
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        wrappers.add_row(name, "yes" if cls.applies_to_eval else "no", " ".join(doc.split()))
    console.print(wrappers)
    configs = Table(title=f"tuned configs ({CONFIG_DIR.name}/)")
    configs.add_column("agent")
    configs.add_column("config (env id with / as -, then any -variant)")
    for path in sorted(p for p in CONFIG_DIR.glob("*/*.yaml") if p.name != "tune.yaml"):  # tune.yaml: drl tune's
        configs.add_row(path.parent.name, path.name)
    console.print(configs)
    return 0


def _plot(args: argparse.Namespace) -> int:
    import warnings

    from drl.plotting import aggregate_runs, group_runs, plot_runs

    out = args.out or (Path(args.run_dirs[0]) / "curve.png" if len(args.run_dirs) == 1 else Path("curves.png"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = plot_runs(args.run_dirs, out, aggregate=not args.no_aggregate)
    for warning in caught:
        print(f"drl plot: warning: {warning.message}", file=sys.stderr)
    if not args.no_aggregate:
        groups = group_runs(args.run_dirs)
        for (agent, env), dirs in groups.items():
            if len(dirs) < 2:
                continue
            try:
                agg = aggregate_runs(dirs)[(agent, env)]
            except ValueError:
                continue
            print(f"{agent} on {env}: {agg.num_runs} runs, train return at step {agg.steps[-1]:,.0f}: mean "
                  f"{agg.mean[-1]:.2f} (95% CI {agg.ci_low[-1]:.2f} to {agg.ci_high[-1]:.2f}), IQM {agg.iqm[-1]:.2f}")
    print(f"wrote {path}")
    return 0


def _demos(args: argparse.Namespace) -> int:
    from drl.config import ConfigError, parse_overrides
    from envs.tasks.demos import collect_demos, save_demos

    if args.action_noise < 0:
        raise ConfigError(f"--action-noise must be >= 0, got {args.action_noise}")
    env_kwargs = parse_overrides(args.env_kwarg or [])
    demos = collect_demos(args.env, episodes=args.episodes, seed=args.seed, num_envs=args.num_envs,
                          env_kwargs=env_kwargs or None, action_noise=args.action_noise)
    path = save_demos(demos, args.out)
    meta = demos["meta"]
    print(f"wrote {path}: {meta['episodes']} episodes, success rate {meta['success_rate']:.2f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from drl.export import export_policy

    result = export_policy(args.run_dir, args.format, args.out, args.checkpoint)
    for written in (result.get("actors") or {"": result}).values():  # one file per agent or task, or one
        meta = written["metadata"]
        who = "".join(f" [{k} {meta[k]}]" for k in ("agent", "task") if k in meta)
        extra = "".join(f", input '{group}' {shape} (as the env gives it)" for key, value in meta.items()
                        if key.startswith("input_") for group, shape in [value.split(":")[0].split(" ", 1)])
        print(f"wrote {written['path']} ({written['format']}){who}: input 'obs' [N, {meta['obs_dim']}] float32 = "
              f"the raw obs group '{meta['obs_group']}' (normalised inside){extra}, output 'action' in "
              f"{meta['action_space']}; matches the agent's deterministic actions "
              f"(max |diff| {written['max_abs_diff']:.2g})")
    if meta["obs_wrappers"]:
        print(f"note: the policy reads the observations of the run's wrappers {meta['obs_wrappers']}: compute "
              "them the same way before calling it")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from drl.config import parse_overrides
    from drl.tune import tune

    overrides = parse_overrides(args.set or [])
    for key, value in (("total_steps", args.steps), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    result = tune(args.agent, args.env, args.trials, storage=args.storage, study_name=args.study, out=args.out,
                  space_file=args.space, overrides=overrides, evals=args.evals, sampler=args.sampler,
                  pruner=args.pruner, seed=args.seed)
    print(f"study folder: {result.folder} ({result.trials} trials in the study: {result.pruned} pruned, "
          f"{result.failed} failed)")
    if result.best_config is None:
        return 1
    print(f"best: trial {result.best_trial}, final eval return {result.best_value:.4g}; config: {result.best_config} "
          f"(drl train --config {result.best_config})")
    return 0


def _integer(minimum: int, what: str, maximum: int | None = None):
    """An argparse ``type``: a whole number in ``[minimum, maximum]``, also written ``1e6`` or ``1_000_000``."""

    def parse(text: str) -> int:
        value = parse_int(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"{what} must be a whole number (e.g. 1000000, 1e6 or 1_000_000), "
                                             f"got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum}, got {text!r}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{what} must be <= {maximum}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drl", description="Train and evaluate deep-RL agents.",
        epilog="exit codes: 0 done, 2 bad input, 3 non-finite value (NaN/inf: divergence or a faulty env), "
               "4 an env raised, 5 cannot write the run folder (read-only, disk full), 6 under torchrun: another rank "
               "died or hung",
    )
    sub = parser.add_subparsers(dest="command")

    train = sub.add_parser("train", help=f"train an agent (no arguments: {DEFAULT_AGENT} on {DEFAULT_ENV})")
    train.add_argument("agent", nargs="?", help="agent name (see `drl list`)")
    train.add_argument("--env", help="env id: a drl/... id or any gymnasium id")
    train.add_argument("--config", help="YAML config file (default: configs/<agent>/<env>.yaml when it exists)")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key, e.g. "
                       "algo.learning_rate=1e-3 (repeatable)")
    train.add_argument("--steps", type=_integer(1, "steps"), help="total env steps (e.g. 1000000, 1e6, 1_000_000)")
    train.add_argument("--num-envs", type=_integer(1, "num-envs"), help="parallel envs")
    train.add_argument("--seed", type=_integer(0, "seed"))
    train.add_argument("--device", help="cpu | cuda | cuda:<i> | auto")
    train.add_argument("--demos", metavar="FILE", help="demonstrations to learn from (sets algo.demos; a file "
                       "written by `drl demos`), for agents that take them (aawr, bc, residual)")
    train.add_argument("--wrapper", action="append", metavar="NAME[:KEY=VALUE,...]", help="wrap the env (after the "
                       "config's `wrappers:`; repeatable, innermost first), e.g. bonus:global_bonus=rnd,coef=0.01; "
                       "see `drl list`")
    train.add_argument("--run-dir", help="run folder (default runs/<agent>-<env>-s<seed>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its newest checkpoint to its total "
                       "steps (or to a new total given with --steps)")
    train.add_argument("--teacher", metavar="RUN_DIR", help="a trained teacher run (sets algo.teacher; aacd, "
                       "dagger); aacd without it trains its teacher first, in <run-dir>/teacher")
    train.add_argument("--base", metavar="PATH", help="a frozen base policy (sets algo.base; residual agents): a "
                       "drl run folder or a Stable-Baselines3 .zip")
    train.add_argument("--overwrite", action="store_true", help="replace the drl run already in --run-dir")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--nproc", type=_integer(1, "nproc"), help="train with N processes on this machine (torchrun "
                       "--standalone --nproc-per-node N): env.num_envs envs and seed + rank * num_envs per process, "
                       "gradients averaged; for several machines run torchrun yourself (see the README)")
    train.add_argument("--dist-timeout", type=float, default=300.0, metavar="SECONDS", help="under torchrun: how "
                       "long a rank waits for the others in a collective before the job stops with an error")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a trained run (deterministic actions)")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=_integer(1, "episodes", MAX_EVAL_EPISODES), default=10)
    ev.add_argument("--checkpoint", default="best", help="best | latest | path to a checkpoint file")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--video", action="store_true", help="also record one episode to a new mp4 "
                    "(<run>-<checkpoint>-<time>.mp4; never overwrites)")
    ev.add_argument("--video-dir", help="folder for the video (default: <run_dir>/videos)")
    ev.set_defaults(func=_eval)

    rob = sub.add_parser("robustness", help="return of a trained continuous-control MuJoCo run under scaled body "
                         "masses and geom friction (CSV, JSON, plots)")
    rob.add_argument("run_dir")
    rob.add_argument("--param", choices=["mass", "friction", "both"], default="mass",
                     help="what to scale (both: the mass x friction grid, a heatmap)")
    rob.add_argument("--scales", default="0.5:1.5:11", help="LOW:HIGH:COUNT or a,b,c (default 0.5:1.5:11)")
    rob.add_argument("--episodes", type=_integer(1, "episodes", MAX_EVAL_EPISODES), default=10,
                     help="episodes per grid point")
    rob.add_argument("--bodies", nargs="+", metavar="BODY", help="bodies whose mass is scaled (default: all)")
    rob.add_argument("--out", help="output folder (default: a new <run_dir>/robustness/<param>-<time>, so a sweep "
                     "never overwrites another)")
    rob.add_argument("--checkpoint", default="best", help="best | latest | path to a checkpoint file")
    rob.add_argument("--device", default="cpu")
    rob.add_argument("--seed", type=_integer(0, "seed"), help="first env seed (default: the run's eval seed)")
    rob.set_defaults(func=_robustness)

    ls = sub.add_parser("list", help="agents, env ids and tuned configs")
    ls.set_defaults(func=_list)

    plot = sub.add_parser("plot", help="learning curves of one or more runs to a PNG (seeds of one agent/env "
                          "aggregated: mean, 95%% bootstrap CI, IQM; one row of plots per env)")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--out", help="PNG path (default: <run>/curve.png for one run, curves.png otherwise)")
    plot.add_argument("--no-aggregate", action="store_true",
                      help="draw every run on its own instead of the mean, 95%% CI and IQM over runs of one agent/env")
    plot.set_defaults(func=_plot)

    demos = sub.add_parser("demos", help="record scripted-expert demonstrations (envs with an "
                           "expert_action: the Panda tasks, drl/ActiveSearch-v0)")
    demos.add_argument("env", help="e.g. drl/PandaPickPlace-v0")
    demos.add_argument("--episodes", type=_integer(1, "episodes", MAX_EVAL_EPISODES), default=50)
    demos.add_argument("--out", required=True, help="output .pt file")
    demos.add_argument("--seed", type=_integer(0, "seed"), default=0)
    demos.add_argument("--num-envs", type=_integer(1, "num-envs"), default=8)
    demos.add_argument("--action-noise", type=float, default=0.0, metavar="STD", help="Gaussian noise injected "
                       "into the expert's actions (std in units of the action half-range; the noisy action is "
                       "executed and recorded)")
    demos.add_argument("--env-kwarg", action="append", metavar="KEY=VALUE", help="env constructor argument, e.g. "
                       "reward_type=sparse (repeatable; record demos with the reward the learner will use)")
    demos.set_defaults(func=_demos)

    export = sub.add_parser("export", help="the deterministic actor of a run (obs normaliser, network, action "
                            "clip/squash) as an ONNX or TorchScript file")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    export.add_argument("--out", help="output file (default <run_dir>/policy-<checkpoint>.onnx or .pt); "
                        "HAPPO/MAPPO and per-task CAMRL write <stem>-<agent or task><suffix> next to it")
    export.add_argument("--checkpoint", default="best", help="best | latest | path to a checkpoint file")
    export.set_defaults(func=_export)

    tune = sub.add_parser("tune", help="hyperparameter search with Optuna (TPE, median/Hyperband pruning on "
                          "evaluation returns; search space configs/<agent>/tune.yaml); writes best.yaml")
    tune.add_argument("agent", help="agent name (see `drl list`)")
    tune.add_argument("--env", required=True, help="env id, as for drl train")
    tune.add_argument("--trials", type=_integer(1, "trials"), required=True, help="trials this process runs")
    tune.add_argument("--storage", help="Optuna storage URL shared by several processes/machines, e.g. "
                      "postgresql://user@host/db or mysql://user@host/db (default sqlite:///<out>/study.db)")
    tune.add_argument("--study", help="study name (default <agent>-<env>)")
    tune.add_argument("--out", help="study folder (default tune/<agent>-<env>)")
    tune.add_argument("--steps", type=_integer(1, "steps"), help="env steps per trial (default: the config's)")
    tune.add_argument("--evals", type=_integer(1, "evals"), default=5, help="evaluations per trial, reported to "
                      "the pruner (default 5)")
    tune.add_argument("--space", metavar="FILE", help="search space YAML (default configs/<agent>/tune.yaml)")
    tune.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    tune.add_argument("--pruner", choices=["median", "hyperband", "none"], default="median")
    tune.add_argument("--seed", type=_integer(0, "seed"), default=0, help="the sampler's seed")
    tune.add_argument("--device", help="cpu | cuda | cuda:<i> | auto")
    tune.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key in every trial "
                      "(repeatable)")
    tune.set_defaults(func=_tune)
    return parser



def _json_safe(value: Any) -> Any:
    """``value`` with every non-finite float as None (JSON has no NaN: a task no evaluation episode ran is null)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    """Run one ``drl`` command; returns the exit status (2: bad input; 130/143: SIGINT/SIGTERM)."""
    command = "train"
    try:
        with _StartupSignals():  # first: the imports below take seconds
            parser = build_parser()
            args = parser.parse_args(argv)
            if args.command is None:
                args = parser.parse_args(["train", *(argv or [])])
            command = args.command
            args.argv = list(sys.argv[1:] if argv is None else argv)  # what `drl train --nproc` relaunches
            return _dispatch(args)
    except KeyboardInterrupt as err:  # Ctrl-C, or a stop signal that ended a run (TrainingInterrupted)
        signum = getattr(err, "signum", signal.SIGINT)
        run_dir = getattr(err, "run_dir", None)  # set by a runner that had claimed its folder
        rerun_dir = getattr(err, "rerun_dir", None)  # set by AACD's stage 1: the train command continues it
        if rerun_dir is not None:
            print(f"drl {command}: interrupted by {signal.Signals(signum).name} in stage 1 (the teacher in "
                  f"'{run_dir}'); continue with the same command: "
                  f"{_rerun_command(sys.argv[1:] if argv is None else argv, rerun_dir)}", file=sys.stderr)
        elif run_dir is not None:
            from drl.runners.common import resume_command

            print(f"drl {command}: interrupted by {signal.Signals(signum).name}; continue from its newest "
                  f"checkpoint with: {resume_command(run_dir)}", file=sys.stderr)
        else:
            print(f"drl {command}: interrupted by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + signum


def _rerun_command(argv: list[str], run_dir: Path) -> str:
    """``drl ARGV`` with ``--run-dir run_dir`` and without ``--overwrite`` (which would start over)."""
    import shlex

    kept, skip = [], False
    for arg in argv:
        if skip or arg == "--overwrite" or arg.startswith("--run-dir="):
            skip = False
            continue
        skip = arg == "--run-dir"
        if not skip:
            kept.append(arg)
    return "drl " + shlex.join([*kept, "--run-dir", str(run_dir)])


class _Terminated(KeyboardInterrupt):
    """SIGTERM before a runner handles signals: stopped like Ctrl-C (one line, exit 143)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StartupSignals:
    """Until a runner installs its own handlers, SIGTERM stops like Ctrl-C does: one line, no traceback."""

    @staticmethod
    def _handler(signum: int, _frame: Any) -> None:
        raise _Terminated(signum)

    def __enter__(self) -> None:
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            self.previous = None

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _dispatch(args: argparse.Namespace) -> int:
    from gymnasium.error import Error as GymError

    from drl import guards
    from drl.checkpoint import CheckpointError
    from drl.config import ConfigError
    from envs.core import MissingDependencyError
    from envs.mjwarp.render import RenderUnavailableError

    try:
        return args.func(args)
    except (guards.NonFiniteError, guards.EnvStepError, guards.RunWriteError) as err:  # one line, its own code
        if os.environ.get("DRL_DEBUG"):
            raise
        print(f"drl {args.command}: error: {err}", file=sys.stderr)
        if isinstance(err, guards.NonFiniteError):
            return guards.EXIT_NON_FINITE
        return guards.EXIT_ENV_ERROR if isinstance(err, guards.EnvStepError) else guards.EXIT_WRITE_ERROR
    except (ConfigError, CheckpointError, MissingDependencyError, GymError, FileNotFoundError, FileExistsError,
            ValueError, TypeError, RenderUnavailableError) as err:
        if os.environ.get("DRL_DEBUG"):
            raise
        print(f"drl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # any other file-system failure: one line, not a traceback
        if os.environ.get("DRL_DEBUG"):
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"drl {args.command}: error: {where}{err.strerror or err}", file=sys.stderr)
        return guards.EXIT_WRITE_ERROR


if __name__ == "__main__":
    sys.exit(main())
