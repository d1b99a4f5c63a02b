"""End to end on drl's torch-batched envs: PPO, and SAC/TD3's parallel mode; env steps/s and return vs wall-clock.

    python -m benchmarks.torch_ppo [--device cuda|cpu|auto] [--rows cartpole pendulum halfcheetah
                                    sac-pendulum td3-pendulum sac-halfcheetah td3-halfcheetah]
                                   [--scale 1.0] [--steps ROW=N ...] [--evals 20] [--append]
                                   [--out benchmarks/results/torch_ppo_<device>/]

This is where the GPU targets of the benchmarks are checked: PPO on ``drl/CartPole-v0`` and
``drl/Pendulum-v0`` at >= 1e7 end-to-end env steps/s, and PPO on the MuJoCo Warp
``drl/HalfCheetah-v0`` with 4096 envs at >= 500k env steps/s reaching a return of 6,000 within five
minutes. Each row trains with ``drl.api.train`` (the whole loop: env, rollout storage, update,
logging; evaluations excluded from the clock) on one device, with the row's settings for that
device, and reports what it measured next to the target. Every number comes from the run; the
targets are only what it is compared to.

``--steps halfcheetah=4e7`` sets one row's step budget (a shorter run than the target's, to fit a
time-limited GPU session; the report then says the return target was not reached within it).
``--append`` keeps the rows of an earlier call in ``--out`` (rows run again are replaced), so one
report can be built over several calls.

On the CPU the same rows run at a small scale (few envs, short budgets), which checks the pipeline
rather than the targets. ``--scale`` multiplies every step budget (e.g. 0.01 for a smoke run).

The off-policy rows (``sac-*``, ``td3-*``) measure the parallel mode's throughput (FastTD3's recipe:
many envs, large batches, UTD below 1, n-step returns) with the agent's tuned config for the env
(``configs/<agent>/drl-Pendulum-v0.yaml``, ``configs/<agent>/drl-HalfCheetah-v0.yaml``; its
num_envs on CUDA, a few envs on the CPU): a short warm-up (the config's ``learning_starts`` of random
actions, then one iteration of updates, which pays any compile) and then a fixed number of
vectorised steps (``--steps sac-pendulum=N``: N vectorised steps). ``steps/s after warm-up`` is
measured over those; there is no return target for them (the run is too short).

Writes ``results.json``, ``report.md`` and ``return_vs_wall.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.machine import load_average, machine_info, versions
from benchmarks.harness.sides import read_drl_curve
from drl.api import load_config, train
from drl.config import to_dict
from envs.core import resolve_device

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Scale:
    """A row's settings on one device kind."""

    num_envs: int  # off-policy rows: 0 = the tuned config's own
    total_steps: int  # env steps (PPO rows; unused by off-policy rows)
    algo: dict[str, Any] = field(default_factory=dict, hash=False)  # must set num_steps (steps per iteration)
    vec_steps: int = 0  # off-policy rows: vectorised steps timed after the warm-up


@dataclass(frozen=True)
class TorchRow:
    name: str
    env_id: str
    cuda: Scale
    cpu: Scale
    target_sps: float | None  # end-to-end env steps/s the row is compared to (on CUDA); None: measured only
    target_return: float | None = None  # eval return to reach ...
    target_seconds: float | None = None  # ... within this many training seconds (on CUDA)
    agent: str = "ppo"


ROWS = [
    TorchRow(
        "cartpole", "drl/CartPole-v0",
        cuda=Scale(65_536, 50_000_000, {"num_steps": 16, "minibatch_size": 262_144, "num_epochs": 2,
                                        "learning_rate": 0.01}),
        cpu=Scale(1_024, 400_000, {"num_steps": 16, "minibatch_size": 4_096, "num_epochs": 2, "learning_rate": 0.01}),
        target_sps=1e7, target_return=475.0,
    ),
    TorchRow(
        "pendulum", "drl/Pendulum-v0",
        cuda=Scale(65_536, 100_000_000, {"num_steps": 32, "minibatch_size": 262_144, "num_epochs": 5}),
        cpu=Scale(1_024, 600_000, {"num_steps": 32, "minibatch_size": 4_096, "num_epochs": 5}),
        target_sps=1e7, target_return=-250.0,
    ),
    TorchRow(
        "halfcheetah", "drl/HalfCheetah-v0",
        cuda=Scale(4_096, 150_000_000, {"num_steps": 32, "minibatch_size": 32_768, "num_epochs": 5,
                                        "learning_rate": 3e-4, "anneal_lr": True, "gamma": 0.97,
                                        "gae_lambda": 0.95, "normalize_obs": True, "normalize_reward": True,
                                        "actor_hidden": [128, 128], "critic_hidden": [256, 256], "activation": "elu"}),
        cpu=Scale(64, 32_768, {"num_steps": 32, "minibatch_size": 512, "num_epochs": 5, "normalize_obs": True,
                               "normalize_reward": True}),
        target_sps=5e5, target_return=6_000.0, target_seconds=300.0,
    ),
    *[TorchRow(f"{agent}-{short}", env_id, agent=agent, target_sps=None,
               cuda=Scale(cuda_envs, 0, {"num_steps": 50, **cuda_algo}, vec_steps=cuda_steps),
               cpu=Scale(16, 0, {"num_steps": 8, "buffer_size": 16_000, "learning_starts": 128}, vec_steps=32))
      # Pendulum's tuned config is sized for one CPU core (32 envs): on a GPU, 1024 envs and a batch of 8192
      for short, env_id, cuda_envs, cuda_algo, cuda_steps in (
          ("pendulum", "drl/Pendulum-v0", 1024, {"batch_size": 8192, "learning_starts": 8192}, 500),
          ("halfcheetah", "drl/HalfCheetah-v0", 0, {}, 300))
      for agent in ("sac", "td3")],
]
OFF_POLICY_ROWS = [r.name for r in ROWS if r.agent != "ppo"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.torch_ppo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    parser.add_argument("--rows", nargs="+", choices=[r.name for r in ROWS], default=None,
                        help="rows to run (default: every PPO row on CUDA; cartpole and pendulum on the CPU)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step budget by this")
    parser.add_argument("--steps", nargs="+", default=[], metavar="ROW=N",
                        help="a row's step budget on this device, e.g. halfcheetah=4e7 (before --scale)")
    parser.add_argument("--evals", type=int, default=20, help="evaluations per row (spread over its budget)")
    parser.add_argument("--append", action="store_true", help="keep earlier rows in --out's results.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error(f"--scale must be > 0, got {args.scale}")
    if args.evals < 1:
        parser.error(f"--evals must be >= 1, got {args.evals}")
    budgets = {}
    for item in args.steps:
        name, _, value = item.partition("=")
        try:
            steps = float(value)
        except ValueError:
            steps = math.nan
        if name not in {r.name for r in ROWS} or not math.isfinite(steps) or steps < 1 or steps != int(steps):
            parser.error(f"--steps takes ROW=N with ROW one of {[r.name for r in ROWS]} and N a whole number "
                         f">= 1, got '{item}'")
        budgets[name] = int(steps)
    args.steps = budgets
    return args


def offpolicy_plan(num_envs: int, num_steps: int, learning_starts: int, vec_steps: int) -> tuple[int, int]:
    """``(total env steps, env steps at the end of the warm-up)`` of an off-policy row, whole iterations.

    Warm-up: the iterations that hold the ``learning_starts`` env steps of random actions, plus one
    iteration of updates (which pays any compile); then ``vec_steps`` vectorised steps, rounded up to
    whole iterations of ``num_steps``.
    """
    iteration = num_envs * num_steps
    warm_iterations = math.ceil(learning_starts / iteration) + 1
    timed_iterations = max(math.ceil(vec_steps / num_steps), 1)
    return (warm_iterations + timed_iterations) * iteration, warm_iterations * iteration


def steady_sps(curve: dict[str, list], after_step: int) -> float | None:
    """Env steps/s between the first logged row at ``global_step >= after_step`` and the last one."""
    rows = [i for i, step in enumerate(curve["step"]) if step >= after_step]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    seconds = curve["train_s"][last] - curve["train_s"][first]
    return (curve["step"][last] - curve["step"][first]) / seconds if seconds > 0 else None


def _row_config(row: TorchRow, settings: Scale, device: torch.device, scale: float, seed: int, steps: int | None,
                evals: int) -> tuple[Any, int | None]:
    """The row's resolved drl config, and (off-policy rows) the env step where its warm-up ends."""
    common = {"seed": seed, "device": str(device), "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
              "eval_episodes": 10, "algo": dict(settings.algo)}
    if row.agent == "ppo":
        total_steps = max(int((steps if steps is not None else settings.total_steps) * scale), 1)
        batch = settings.num_envs * settings.algo["num_steps"]  # every row sets its rollout length
        overrides = {**common, "total_steps": max(total_steps, batch),
                     "eval_interval": max(total_steps // evals, batch),
                     "env": {"num_envs": settings.num_envs, "num_eval_envs": 10}}
        return load_config("ppo", row.env_id, overrides=overrides), None
    tuned = load_config(row.agent, row.env_id, overrides={"device": str(device)})  # its num_envs, learning_starts
    num_envs = settings.num_envs or tuned.env.num_envs
    vec_steps = max(int((steps if steps is not None else settings.vec_steps) * scale), 1)
    learning_starts = common["algo"].get("learning_starts", tuned.algo.learning_starts)
    total, warm = offpolicy_plan(num_envs, settings.algo["num_steps"], learning_starts, vec_steps)
    overrides = {**common, "total_steps": total, "eval_interval": 0, "algo": {"save_replay": False, **common["algo"]},
                 "env": {"num_envs": num_envs, "num_eval_envs": 10}}
    return load_config(row.agent, row.env_id, overrides=overrides), warm


def run_row(row: TorchRow, device: torch.device, scale: float, seed: int, work_dir: Path,
            steps: int | None = None, evals: int = 20) -> dict[str, Any]:
    """Train one row (``steps``: its budget instead of the device's default); return its measurements."""
    settings = row.cuda if device.type == "cuda" else row.cpu
    cfg, warm = _row_config(row, settings, device, scale, seed, steps, evals)
    run_dir, summary = train(cfg, work_dir / row.name)
    curve = read_drl_curve(run_dir)
    train_s = curve["train_s"][-1]
    steps = curve["step"][-1]
    reached = None
    if row.target_return is not None:
        for step, seconds, value in zip(curve["step"], curve["train_s"], curve["eval_return"], strict=True):
            if not math.isnan(value) and value >= row.target_return:
                reached = {"step": step, "train_s": seconds, "eval_return": value}
                break
    return {"row": row.name, "agent": row.agent, "env_id": row.env_id, "device": str(device),
            "num_envs": cfg.env.num_envs, "steps": steps, "train_s": train_s,
            "sps": steps / train_s if train_s > 0 else math.nan,
            "steady_sps": steady_sps(curve, warm) if warm is not None else None, "warmup_steps": warm,
            "final_eval": summary["final_eval_return"], "reached": reached, "curve": curve,
            "config": {"total_steps": cfg.total_steps, "algo": to_dict(cfg.algo) if warm is not None
                       else settings.algo}}


def _verdict(row: TorchRow, result: dict[str, Any]) -> str:
    if result["device"].startswith("cpu"):
        return "CPU scale (the targets are for a GPU)"
    if row.target_sps is None:
        return f"measured ({row.agent.upper()} parallel mode, after a warm-up of {result['warmup_steps']:,} env steps)"
    parts = [f"steps/s {'>=' if result['sps'] >= row.target_sps else '<'} {row.target_sps:,.0f}"]
    if row.target_return is not None:
        reached = result["reached"]
        in_time = reached is not None and (row.target_seconds is None or reached["train_s"] <= row.target_seconds)
        limit = f" within {row.target_seconds:.0f} s" if row.target_seconds else ""
        parts.append(f"return {row.target_return:,.0f}{limit}: {'met' if in_time else 'not met'}")
    return "; ".join(parts)


def write_report(out: Path, results: list[dict[str, Any]], notes: list[str], command: str) -> None:
    machine, software = machine_info(), versions()
    device_names = sorted({r["device"] for r in results})
    lines = [
        "# End to end on drl's torch-batched envs: PPO, and SAC/TD3 parallel mode", "",
        f"Generated {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} by `{command}`. "
        "Every number comes from this run's `results.json`.", "",
        f"Machine: {machine['cpu']}, {machine['usable_cores']} cores; GPU: {', '.join(machine['gpu'] or ['none'])}; "
        f"devices used: {', '.join(device_names) or 'none'}; torch {software['torch']}; load average "
        f"{load_average()}.", "",
        "Steps/s = env steps / training seconds (the whole loop; evaluations excluded). Steps/s after warm-up "
        "(SAC/TD3 rows): over the logged rows after the `learning_starts` random steps and one iteration of updates.",
        "",
        "| row | env | device | num_envs | env steps | train s | steps/s | steps/s after warm-up | final eval | "
        "target return reached at | vs targets |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = {r.name: r for r in ROWS}
    for r in results:
        reached = r["reached"]
        at = f"{reached['train_s']:.1f} s @ {reached['step']:,}" if reached else "not reached"
        final = "-" if r["final_eval"] is None else f"{r['final_eval']:.1f}"
        steady = "-" if r.get("steady_sps") is None else f"{r['steady_sps']:,.0f}"
        verdict = _verdict(rows[r["row"]], r)
        lines.append(f"| {r['row']} | {r['env_id']} | {r['device']} | {r['num_envs']:,} | {r['steps']:,} | "
                     f"{r['train_s']:.1f} | {r['sps']:,.0f} | {steady} | {final} | {at} | {verdict} |")
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    lines += ["", "![return vs wall-clock](return_vs_wall.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    _plot(out, results)


def _plot(out: Path, results: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(results), 1), figsize=(5 * max(len(results), 1), 3.5), squeeze=False)
    for ax, r in zip(axes[0], results, strict=False):
        curve = r["curve"]
        points = [(s, v) for s, v in zip(curve["train_s"], curve["eval_return"], strict=True) if not math.isnan(v)]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o")
        ax.set_title(f"{r['env_id']} ({r['device']}, {r['num_envs']:,} envs)")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("eval return")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "return_vs_wall.png", dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    ppo_rows = [r.name for r in ROWS if r.agent == "ppo"]
    names = args.rows or (ppo_rows if device.type == "cuda" else ["cartpole", "pendulum"])
    out = args.out or RESULTS_DIR / f"torch_ppo_{device.type}"
    out.mkdir(parents=True, exist_ok=True)
    command = "python -m benchmarks.torch_ppo " + shlex.join(sys.argv[1:] if argv is None else argv)
    results, notes = [], []
    previous = out / "results.json"
    if args.append and previous.is_file():
        earlier = json.loads(previous.read_text())
        results = [r for r in earlier.get("results", []) if r["row"] not in names]
        notes = [n for n in earlier.get("notes", []) if not any(n.startswith(f"{name} ") for name in names)]
        command = "; ".join(dict.fromkeys(earlier.get("command", "").split("; ") + [command]))
    with tempfile.TemporaryDirectory() as work:
        for row in ROWS:
            if row.name not in names:
                continue
            print(f"{row.name}: {row.env_id} on {device} ...", flush=True)
            try:
                result = run_row(row, device, args.scale, args.seed, Path(work), args.steps.get(row.name),
                                 args.evals)
            except Exception as err:  # noqa: BLE001 - a missing backend or a crash is a note, not the end
                notes.append(f"{row.name} ({row.env_id}) did not run: {type(err).__name__}: {err}")
                traceback.print_exc()
                continue
            steady = "" if result["steady_sps"] is None else f" ({result['steady_sps']:,.0f} after warm-up)"
            print(f"  {result['steps']:,} steps in {result['train_s']:.1f} s = {result['sps']:,.0f} steps/s{steady}; "
                  f"final eval {result['final_eval']}", flush=True)
            results.append(result)
            settings = row.cuda if device.type == "cuda" else row.cpu
            default = settings.total_steps if row.agent == "ppo" else settings.vec_steps
            if row.name in args.steps and args.steps[row.name] != default and row.agent != "ppo":
                notes.append(f"{row.name} timed {args.steps[row.name]:,} vectorised steps after its warm-up (--steps; "
                             f"the row's default is {default:,})")
            elif row.name in args.steps and args.steps[row.name] != default:
                notes.append(f"{row.name} ran {args.steps[row.name]:,} steps (--steps; the row's default is "
                             f"{default:,}), so its return target is judged within that budget only")
    (out / "results.json").write_text(json.dumps({"command": command, "machine": machine_info(),
                                                  "versions": versions(), "results": results, "notes": notes},
                                                 indent=1, default=str))
    write_report(out, results, notes, command)
    print(f"wrote {out / 'results.json'}, {out / 'report.md'} and {out / 'return_vs_wall.png'}")
    return 0 if results else 1


if __name__ == "__main__":
    raise SystemExit(main())
