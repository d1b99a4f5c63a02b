"""Env steps/s of the multi-agent paths next to the single-agent ones on the same robot, machine and num_envs.

    python -m benchmarks.multi_agent_speed [--num-envs 8 64] [--warp-num-envs 64 1024 4096] [--device auto]
                                           [--steps S] [--budget-s B] [--only NAME ...] [--out DIR]

Two pairs, HalfCheetah in both (MaMuJoCo partition 2x3, two agents of three joints):

* CPU adapters: ``mamujoco:HalfCheetah-2x3`` (gymnasium-robotics' MaMuJoCo through drl's PettingZoo
  adapter, :class:`envs.pettingzoo.PettingZooVecEnv`) vs ``HalfCheetah-v5`` through drl's gymnasium
  adapter (:class:`envs.core.GymnasiumVecEnv`), each ``"sync"`` (the copies stepped one after another in
  this process) and ``"async"`` (one subprocess per copy: worth it with many cores).
* MuJoCo Warp: ``drl/HalfCheetah-2x3-v0`` (:class:`envs.mjwarp.partitions.MaMuJoCoPartition`) vs the
  single-agent ``drl/HalfCheetah-v0`` on ``--device``.

What is timed per (variant, num_envs): drawing uniformly random actions (a dict of per-agent tensors for
the multi-agent envs, on the env's device) and ``env.step`` with its autoresets, through
:func:`benchmarks.env_throughput.time_loop` (5 blocks, the median block's env steps per second, CUDA
synchronised at the end of each block). Construction, reset and warm-up steps are not timed. One torch
thread. The ratio column is multi-agent / single-agent steps/s at the same num_envs.

Writes ``results.json``, ``report.md`` and ``speed.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from benchmarks.env_throughput import time_loop, torch_action_sampler
from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, number, one_plot, save_figure

PLOT = "speed.png"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "multi_agent_speed"


@dataclass(frozen=True)
class Variant:
    name: str
    env_id: str
    pair: str  # the comparison it belongs to
    multi_agent: bool
    warp: bool  # on --device (MuJoCo Warp); else the CPU adapters
    vectorization: str = "sync"  # the CPU adapters': copies in this process, or one subprocess each


VARIANTS = [
    Variant("mamujoco", "mamujoco:HalfCheetah-2x3", "cpu adapters, sync", True, False),
    Variant("gymnasium", "HalfCheetah-v5", "cpu adapters, sync", False, False),
    Variant("mamujoco-async", "mamujoco:HalfCheetah-2x3", "cpu adapters, async", True, False, "async"),
    Variant("gymnasium-async", "HalfCheetah-v5", "cpu adapters, async", False, False, "async"),
    Variant("mjwarp-2x3", "drl/HalfCheetah-2x3-v0", "mujoco-warp", True, True),
    Variant("mjwarp", "drl/HalfCheetah-v0", "mujoco-warp", False, True),
]
NAMES = [v.name for v in VARIANTS]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_agent_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[8, 16],
                        help="copies for the CPU adapters (async: one subprocess each)")
    parser.add_argument("--warp-num-envs", type=int, nargs="+", default=[64, 1024, 4096],
                        help="worlds for the MuJoCo Warp pair")
    parser.add_argument("--device", default="auto", help="device of the MuJoCo Warp pair (auto: cuda if available)")
    parser.add_argument("--steps", type=int, default=2000, help="most vectorized steps timed per configuration")
    parser.add_argument("--budget-s", type=float, default=10.0, help="most seconds timed per configuration")
    script.add_only(parser, NAMES)
    script.add_out(parser, DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    for dest in ("num_envs", "warp_num_envs"):
        if min(getattr(args, dest)) < 1:
            parser.error(f"--{dest.replace('_', '-')} values must be >= 1")
    if args.budget_s <= 0:
        parser.error(f"--budget-s must be > 0, got {args.budget_s}")
    script.check_args(parser, args, ("steps",), NAMES)
    return args


def sampler(env: Any, device: torch.device) -> Any:
    """Uniform random actions: ``{agent: [N, *act_i]}`` for a multi-agent env, else ``[N, *act]``."""
    if hasattr(env, "single_action_spaces"):
        draws = {a: _draw(space, env.num_envs, device) for a, space in env.single_action_spaces.items()}
        return lambda: {a: draw() for a, draw in draws.items()}
    return torch_action_sampler(env.action_space, device)


def _draw(space: gym.Space, num_envs: int, device: torch.device) -> Any:
    if isinstance(space, gym.spaces.Discrete):
        return lambda: torch.randint(int(space.n), (num_envs,), device=device)
    batched = gym.vector.utils.batch_space(space, num_envs)
    return torch_action_sampler(batched, device)


def measure(variant: Variant, num_envs: int, device: str, steps: int, budget_s: float) -> dict[str, Any]:
    """Env steps/s of one variant at ``num_envs``."""
    from envs import make_vec_env

    env = make_vec_env(variant.env_id, num_envs, device, variant.vectorization)
    try:
        env.reset(seed=0)
        dev = torch.device(env.device)
        sample = sampler(env, dev)
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        result = time_loop(lambda: env.step(sample()), sync, num_envs, steps, budget_s, warmup=5)
        agents = len(env.agents) if hasattr(env, "agents") and isinstance(env.agents, tuple) else 1
    finally:
        env.close()
    return result | {"device": str(dev), "agents": agents}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (pair, num_envs): multi-agent and single-agent steps/s and their ratio."""
    rate = {(r["variant"], r["num_envs"]): r.get("steps_per_s") for r in runs if "error" not in r}
    rows = []
    for pair in dict.fromkeys(v.pair for v in VARIANTS):
        multi = next(v for v in VARIANTS if v.pair == pair and v.multi_agent)
        single = next(v for v in VARIANTS if v.pair == pair and not v.multi_agent)
        for n in sorted({r["num_envs"] for r in runs if r["variant"] in (multi.name, single.name)}):
            m, s = rate.get((multi.name, n)), rate.get((single.name, n))
            rows.append({"pair": pair, "num_envs": n, "multi": multi.env_id, "single": single.env_id,
                         "multi_steps_per_s": m, "single_steps_per_s": s,
                         "ratio": m / s if m is not None and s else None})
    return rows


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = header_lines("Multi-agent env steps/s next to single-agent (HalfCheetah, MaMuJoCo 2x3)", meta)
    lines += [machine_line(meta, software=("torch", "gymnasium", "mujoco"),
                           extra=(f"MuJoCo Warp on {meta['device']}", "one torch thread")), "",
              "Random actions + `env.step` (with autoresets), median of 5 timed blocks; env steps/s count env copies "
              "(one step of every agent of a copy is one env step).", "",
              "| pair | num_envs | multi-agent | steps/s | single-agent | steps/s | multi / single |",
              "|---|---|---|---|---|---|---|"]
    for row in results["summary"]:
        ratio = f"{row['ratio']:.2f}" if row["ratio"] is not None else "-"
        lines.append(f"| {row['pair']} | {row['num_envs']:,} | `{row['multi']}` | {number(row['multi_steps_per_s'])} "
                     f"| `{row['single']}` | {number(row['single_steps_per_s'])} | {ratio} |")
    return close_report(lines, results["runs"], out, ("env steps/s vs num_envs", PLOT),
                        config_line=lambda r: f"- `{r['variant']}`: `{r['config']}`",
                        failed_line=lambda r: f"- {r['variant']} ({r['num_envs']} envs) failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    fig, ax = one_plot()
    for i, v in enumerate(VARIANTS):
        points = sorted((r["num_envs"], r["steps_per_s"]) for r in results["runs"]
                        if r["variant"] == v.name and "error" not in r)
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=f"C{i // 2}",
                    linestyle="-" if v.multi_agent else "--", label=f"{v.env_id} ({v.pair})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("num_envs")
    ax.set_ylabel("env steps/s")
    ax.set_title("multi-agent (solid) vs single-agent (dashed)", fontsize=10)
    return save_figure(fig, out / PLOT, axes=[ax], legend=8)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
    plan = [(v, n) for v in chosen for n in (args.warp_num_envs if v.warp else args.num_envs)]
    print(f"multi_agent_speed: {len(plan)} configurations, at most {args.steps:,} steps / {args.budget_s} s each; "
          f"MuJoCo Warp on {args.device}")
    for v, n in plan:
        print(f"  {v.name:<15} {v.env_id:<26} num_envs {n:,}")
    if args.dry_run:
        return 0
    shown = [("DIR" if i and argv[i - 1] == "--out" else a) for i, a in enumerate(argv)]  # no local paths
    began, meta = script.start("multi_agent_speed", shown, args.out, device=args.device, steps=args.steps,
                               budget_s=args.budget_s)
    runs = []
    for v, n in plan:
        device = args.device if v.warp else "cpu"
        where = args.device if v.warp else f"cpu, {v.vectorization}"
        record = {"variant": v.name, "env_id": v.env_id, "pair": v.pair, "num_envs": n,
                  "config": f"{v.env_id}, num_envs {n}, {where}"}
        runs.append(script.attempt(record, f"{v.name} x{n}", lambda v=v, n=n, d=device: measure(
            v, n, d, args.steps, args.budget_s), lambda r: f"{number(r['steps_per_s'])} env steps/s"))
    results = {"meta": meta, "variants": [v.__dict__ for v in chosen], "runs": runs}
    return script.finish(results, began, args.out, summarise, write_report, write_plot)


if __name__ == "__main__":
    raise SystemExit(main())
