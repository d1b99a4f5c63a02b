"""``drl``: train | eval | list | plot | demos. Thin: it parses, then calls :mod:`drl.api`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from drl.config import MAX_EVAL_EPISODES, ConfigError, parse_int, parse_overrides

DEFAULT_AGENT = "ppo"
DEFAULT_ENV = "drl/CartPole-v0"


def _train(args: argparse.Namespace) -> int:
    from drl import api

    if args.resume:
        given = [name for name in ("agent", "env", "config", "steps", "num_envs", "seed", "device", "run_dir")
                 if getattr(args, name) not in (None, [])] + (["--set"] if args.set else [])
        if given:
            raise ConfigError(f"--resume continues a run with its saved config; drop {given}")
        summary = api.resume(args.resume)
        print(json.dumps(summary, indent=2))
        print(f"run folder: {args.resume}")
        return 0
    overrides = parse_overrides(args.set or [])
    for key, value in (("total_steps", args.steps), ("seed", args.seed), ("device", args.device)):
        if value is not None:
            overrides[key] = value
    if args.num_envs is not None:
        overrides.setdefault("env", {})["num_envs"] = args.num_envs
    if args.no_progress:
        overrides["progress"] = False
    agent = args.agent if args.agent is not None else (None if args.config else DEFAULT_AGENT)
    env_id = args.env if args.env is not None else (None if args.config else DEFAULT_ENV)
    cfg = api.load_config(agent, env_id, args.config, overrides)
    run_dir, summary = api.train(cfg, args.run_dir)
    print(json.dumps(summary, indent=2))
    print(f"run folder: {run_dir}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from drl import api

    result = api.evaluate(args.run_dir, episodes=args.episodes, checkpoint=args.checkpoint, device=args.device,
                          video=args.video, video_dir=args.video_dir)
    print(json.dumps({k: v for k, v in result.items() if k != "returns"}, indent=2))
    return 0


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from drl.api import CONFIG_DIR
    from drl.registry import AGENTS
    from envs import ENVS

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
    for info in ENVS.values():
        envs_table.add_row(info.id, info.backend, info.devices, info.extra or "-", info.description)
    console.print(envs_table)
    configs = Table(title=f"tuned configs ({CONFIG_DIR.name}/)")
    configs.add_column("agent")
    configs.add_column("env")
    for path in sorted(CONFIG_DIR.glob("*/*.yaml")):
        configs.add_row(path.parent.name, path.stem)
    console.print(configs)
    return 0


def _plot(args: argparse.Namespace) -> int:
    from drl.plotting import plot_runs

    out = args.out or (Path(args.run_dirs[0]) / "curve.png" if len(args.run_dirs) == 1 else Path("curves.png"))
    print(f"wrote {plot_runs(args.run_dirs, out)}")
    return 0


def _demos(args: argparse.Namespace) -> int:
    from envs.tasks.demos import collect_demos, save_demos

    demos = collect_demos(args.env, episodes=args.episodes, seed=args.seed, num_envs=args.num_envs)
    path = save_demos(demos, args.out)
    meta = demos["meta"]
    print(f"wrote {path}: {meta['episodes']} episodes, success rate {meta['success_rate']:.2f}")
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
    parser = argparse.ArgumentParser(prog="drl", description="Train and evaluate deep-RL agents.")
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
    train.add_argument("--run-dir", help="run folder (default runs/<agent>-<env>-s<seed>-<time>)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run to its total steps")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="evaluate a trained run (deterministic actions)")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=_integer(1, "episodes", MAX_EVAL_EPISODES), default=10)
    ev.add_argument("--checkpoint", default="best", help="best | latest | path to a checkpoint file")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--video", action="store_true", help="also record one episode to an mp4")
    ev.add_argument("--video-dir", default="videos")
    ev.set_defaults(func=_eval)

    ls = sub.add_parser("list", help="agents, env ids and tuned configs")
    ls.set_defaults(func=_list)

    plot = sub.add_parser("plot", help="learning curves of one or more runs to a PNG")
    plot.add_argument("run_dirs", nargs="+")
    plot.add_argument("--out", help="PNG path (default: <run>/curve.png for one run, curves.png otherwise)")
    plot.set_defaults(func=_plot)

    demos = sub.add_parser("demos", help="record scripted-expert demonstrations (Panda tasks)")
    demos.add_argument("env", help="e.g. drl/PandaPickPlace-v0")
    demos.add_argument("--episodes", type=_integer(1, "episodes", MAX_EVAL_EPISODES), default=50)
    demos.add_argument("--out", required=True, help="output .pt file")
    demos.add_argument("--seed", type=_integer(0, "seed"), default=0)
    demos.add_argument("--num-envs", type=_integer(1, "num-envs"), default=8)
    demos.set_defaults(func=_demos)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["train", *(argv or [])])
    from gymnasium.error import Error as GymError

    from drl.checkpoint import CheckpointError
    from envs.core import MissingDependencyError

    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ConfigError, CheckpointError, MissingDependencyError, GymError, FileNotFoundError, FileExistsError,
            ValueError, TypeError) as err:
        if os.environ.get("DRL_DEBUG"):
            raise
        print(f"drl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
