"""Distributed training (torchrun): throughput with 1, 2, ... processes and learning at equal total env steps.

    python -m benchmarks.distributed [--nproc 1 2] [--agents ppo sac] [--env drl/Pendulum-v0] [--seeds 3]
                                     [--steps N] [--device cpu|cuda] [--set KEY=VALUE ...]
                                     [--out benchmarks/results/distributed] [--dry-run]

Each run is ``drl train AGENT --env ENV --nproc P`` (P = 1: one plain process, no torchrun) with the agent's
tuned config: ``env.num_envs`` envs per process (data parallel: P processes step P x num_envs envs), gradients
averaged across processes, ``total_steps`` counting the env steps of all processes, so every P trains on the same
total env steps (P = 2: half the iterations or vectorised steps, each with twice the data). Every process uses
one torch thread. ``--set KEY=VALUE`` (repeatable) overrides a config key in every run (e.g.
``algo.normalize_obs=true``: the configs leave it off). On a GPU (``--device cuda``) each process takes one GPU
(NCCL): P must not exceed the GPUs (larger P are skipped with the reason).

Reported per agent and P: training env steps per second (evaluation time excluded; mean over seeds), the
scaling efficiency ``sps(P) / (P x sps(1))`` and the final evaluation return (mean +- std over seeds), with the
eval return vs env steps curves in ``curves.png``. Runs go seed by seed, each seed's process counts back to back
(drift in the machine's speed over the benchmark then reaches every P alike). Writes ``results.json``,
``report.md`` and ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, eval_curves_plot, header_lines, machine_line
from benchmarks.harness.report import number as _n

RESULTS_DIR = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
EVAL_EPISODES = 10
PLOT = "curves.png"
AGENTS = ["ppo", "sac"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2], help="process counts to compare")
    parser.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
    parser.add_argument("--env", default="drl/Pendulum-v0", help="env id (each agent needs its config for it)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per agent and process count (0 .. N-1)")
    parser.add_argument("--steps", type=int, default=None, help="total env steps per run (default: the configs')")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds one run may take")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key in every run (repeatable), e.g. algo.normalize_obs=true")
    script.add_out(parser, RESULTS_DIR / "distributed")
    args = parser.parse_args(argv)
    args.only = None  # no variants to pick: the process counts and agents are the variants
    script.check_args(parser, args, ("seeds", "steps"), [])
    if any(p < 1 for p in args.nproc):
        parser.error(f"--nproc values must be >= 1, got {args.nproc}")
    for agent in args.agents:
        if not config_file(agent, args.env).is_file():
            parser.error(f"--env {args.env}: no config {config_file(agent, args.env)} for {agent}")
    return args


def config_file(agent: str, env_id: str) -> Path:
    from drl.api import config_path_for

    return config_path_for(agent, env_id)


def skip_reason(nproc: int, device: str) -> str | None:
    """Why ``nproc`` processes cannot run on ``device`` here (None: they can)."""
    if device == "cuda" and nproc > torch.cuda.device_count():
        return f"{nproc} processes need {nproc} GPUs (one each, NCCL); this machine has {torch.cuda.device_count()}"
    return None


def command(agent: str, env_id: str, nproc: int, seed: int, args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The ``drl train`` command of one run (``--nproc`` only for P > 1)."""
    cmd = [sys.executable, "-m", "drl", "train", agent, "--env", env_id, "--seed", str(seed), "--device", args.device,
           "--run-dir", str(run_dir), "--no-progress", "--set", "torch_threads=1", "--set", "checkpoint_interval=0",
           "--set", f"eval_episodes={EVAL_EPISODES}", "--set", f"env.num_eval_envs={EVAL_EPISODES}"]
    if args.steps is not None:
        cmd += ["--steps", str(args.steps)]
    for override in args.overrides:
        cmd += ["--set", override]
    return cmd + (["--nproc", str(nproc)] if nproc > 1 else [])


def run(agent: str, env_id: str, nproc: int, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.logging import read_metrics

    run_dir = work / f"{agent}-p{nproc}-s{seed}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command(agent, env_id, nproc, seed, args, run_dir), cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    points = script.eval_points(read_metrics(run_dir / "metrics.csv"))
    return {"points": points, "final": points[-1]["eval_return"] if points else None, "steps": summary["steps"],
            "train_sps": summary["train_sps"], "train_s": summary["wall_s"] - summary["eval_s"],
            "ranks": summary.get("ranks", 1),
            "config": {"file": f"configs/{agent}/{config_file(agent, env_id).name}", "steps": summary["total_steps"]}}


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per agent and process count: mean training steps/s, scaling efficiency against P = 1 of the same agent
    (``sps(P) / (P sps(1))``), final return mean and std over seeds."""
    out = []
    keys = list(dict.fromkeys((r["agent"], r["nproc"]) for r in runs))
    base: dict[str, float] = {}
    for agent, nproc in keys:
        mine = [r for r in runs if r["agent"] == agent and r["nproc"] == nproc]
        done = [r for r in mine if "error" not in r and "skipped" not in r]
        sps = statistics.fmean([r["train_sps"] for r in done]) if done else None
        finals = [r["final"] for r in done if r["final"] is not None]
        if nproc == 1 and sps is not None:
            base[agent] = sps
        out.append({"env": mine[0]["env"], "agent": agent, "variant": f"{agent}-p{nproc}",
                    "label": f"{agent}, {nproc} process{'es' if nproc > 1 else ''}", "nproc": nproc,
                    "seeds": len(done), "errors": sum("error" in r for r in mine),
                    "skipped": next((r["skipped"] for r in mine if "skipped" in r), None), "train_sps": sps,
                    "final_mean": statistics.fmean(finals) if finals else None,
                    "final_std": statistics.pstdev(finals) if finals else None})
    for s in out:
        one = base.get(s["agent"])
        s["efficiency"] = s["train_sps"] / (s["nproc"] * one) if one and s["train_sps"] is not None else None
    return out


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = header_lines("Distributed training (torchrun): scaling and learning at equal env steps", meta)
    lines += [machine_line(meta, extra=("one torch thread per process", f"device {meta['device']}")), "",
              f"Seeds per agent and process count: {meta['seeds']}. Each process steps the config's `env.num_envs` "
              "envs; `total_steps` counts all processes' env steps, so every process count trains on the same "
              "total. Steps/s: training env steps per second of all processes together, evaluations excluded. "
              "Efficiency: steps/s(P) / (P x steps/s(1)), 1.00 = linear scaling. On a machine with fewer free "
              "cores than processes the efficiency measures the contention, not the method. Runs go seed by seed, "
              "each seed's process counts back to back. Every minibatch step of P > 1 waits for one gradient "
              "all-reduce (gloo on the CPU: 0.3-1.5 ms of wall-clock per collective on the 2-core machine the "
              "committed report comes from, where one process runs a whole PPO iteration of the Pendulum config, "
              "64 x 64 env steps and 40 minibatch steps, in about 0.2 s).", "",
              "| agent | processes | train env steps/s | efficiency | final eval return | seeds |",
              "|---|---|---|---|---|---|"]
    for s in results["summary"]:
        if s["skipped"]:
            lines.append(f"| {s['agent']} | {s['nproc']} | skipped: {s['skipped']} | - | - | 0 |")
            continue
        eff = f"{s['efficiency']:.2f}" if s["efficiency"] is not None else "-"
        lines.append(f"| {s['agent']} | {s['nproc']} | {_n(s['train_sps'])} | {eff} | {_n(s['final_mean'], 1)} +- "
                     f"{_n(s['final_std'], 1)} | {s['seeds']} |")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT), key="variant",
                        config_line=lambda r: f"- `{r['variant']}`: `{r['config']['file']}`, "
                                              f"{r['config']['steps']:,} env steps",
                        failed_line=lambda r: f"- {r['variant']} seed {r['seed']} failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    return eval_curves_plot(results, out / PLOT, "label", {}, EVAL_EPISODES)


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    print(f"distributed: agents {args.agents} on {args.env}, processes {args.nproc}, {args.seeds} seeds, device "
          f"{args.device}, budget {'the configs' if args.steps is None else f'{args.steps:,}'} env steps"
          + "".join(f", --set {o}" for o in args.overrides))
    for nproc in args.nproc:
        reason = skip_reason(nproc, args.device)
        print(f"  {nproc} process{'es' if nproc > 1 else ''}" + (f": skipped ({reason})" if reason else ""))
    if args.dry_run:
        return 0
    began, meta = script.start("distributed", argv, args.out, seeds=args.seeds, device=args.device,
                               nproc=args.nproc, eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-distributed-") as tmp:
        for agent in args.agents:
            for seed in range(args.seeds):  # process counts interleaved: the machine's drift hits every P alike
                for nproc in args.nproc:
                    record = {"agent": agent, "env": args.env, "nproc": nproc, "variant": f"{agent}-p{nproc}",
                              "seed": seed}
                    reason = skip_reason(nproc, args.device)
                    if reason:
                        results["runs"].append(record | {"skipped": reason, "points": []})
                        continue
                    results["runs"].append(script.attempt(
                        record, f"{agent} P={nproc} seed {seed}",
                        lambda agent=agent, nproc=nproc, seed=seed: run(agent, args.env, nproc, seed, args, Path(tmp)),
                        lambda r: f"{_n(r['train_sps'])} env steps/s, final {_n(r['final'], 1)}"))
    return script.finish(results, began, args.out, summarise, write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
