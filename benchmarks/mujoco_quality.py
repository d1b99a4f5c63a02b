"""Learning quality of drl's PPO on gymnasium MuJoCo v5 (HalfCheetah, Hopper): seeds x steps.

    python -m benchmarks.mujoco_quality [--envs HalfCheetah-v5 Hopper-v5] [--seeds 0 1 2]
                                        [--steps 1000000] [--out benchmarks/results/mujoco_quality]

Each run uses the tuned config ``configs/ppo/<env>.yaml`` and writes a normal drl run folder under
``--out/runs``; the script then writes ``results.json``, ``report.md`` (final and best evaluation
return, mean +- std over seeds, wall-clock and steps/s) and ``curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.harness.machine import cpu_model
from drl import api
from drl.plotting import plot_runs, read_metrics


def run(envs: list[str], seeds: list[int], steps: int, out: Path) -> dict:
    results: dict = {"command": "python -m benchmarks.mujoco_quality " + shlex.join(sys.argv[1:]),
                     "date": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(), "steps": steps, "rows": []}
    for env_id in envs:
        for seed in seeds:
            run_dir = out / "runs" / f"{env_id}-s{seed}"
            summary_file = run_dir / "summary.json"
            if summary_file.is_file() and json.loads(summary_file.read_text())["steps"] >= steps:
                summary = json.loads(summary_file.read_text())  # finished earlier: reuse, don't rerun
            else:
                cfg = api.load_config("ppo", env_id, overrides={"total_steps": steps, "seed": seed,
                                                                "progress": False, "device": "cpu"})
                if (run_dir / "config.yaml").is_file():  # started earlier: resume (from step 0 if no checkpoint)
                    summary = api.resume(run_dir)
                else:
                    _, summary = api.train(cfg, run_dir)
            metrics = read_metrics(run_dir)
            train_s = metrics["wall_s"][-1] - metrics["eval_s"][-1]
            results["rows"].append({"env": env_id, "seed": seed, "steps": summary["steps"],
                                    "final_eval_return": summary["final_eval_return"],
                                    "best_eval_return": summary["best_eval_return"],
                                    "train_s": train_s, "train_sps": summary["steps"] / train_s,
                                    "run_dir": str(run_dir.relative_to(out))})
            print(json.dumps(results["rows"][-1]), flush=True)
    return results


def _machine() -> dict:
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__}


def write_report(results: dict, out: Path) -> None:
    lines = ["# drl PPO on gymnasium MuJoCo v5", "",
             f"Command: `{results['command']}`  ", f"Date: {results['date']}  ",
             f"Machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, "
             f"python {results['machine']['python']}, torch {results['machine']['torch']} (CPU, 1 thread)", "",
             f"Evaluation: 10 deterministic episodes every 50k steps; {results['steps']:,} env steps per run.", "",
             "| env | seeds | final eval return (mean ± std) | best eval return (mean ± std) | train steps/s |",
             "|---|---|---|---|---|"]
    for env_id in dict.fromkeys(r["env"] for r in results["rows"]):
        rows = [r for r in results["rows"] if r["env"] == env_id]
        final = np.array([r["final_eval_return"] for r in rows])
        best = np.array([r["best_eval_return"] for r in rows])
        sps = np.array([r["train_sps"] for r in rows])
        lines.append(f"| {env_id} | {len(rows)} | {final.mean():.0f} ± {final.std():.0f} | "
                     f"{best.mean():.0f} ± {best.std():.0f} | {sps.mean():,.0f} |")
    lines += ["", "Per run:", "", "| env | seed | final | best | train s |", "|---|---|---|---|---|"]
    lines += [f"| {r['env']} | {r['seed']} | {r['final_eval_return']:.0f} | {r['best_eval_return']:.0f} | "
              f"{r['train_s']:.0f} |" for r in results["rows"]]
    lines += ["", "![curves](curves.png)", ""]
    (out / "report.md").write_text("\n".join(lines))
    (out / "results.json").write_text(json.dumps(results, indent=2))
    run_dirs = [out / r["run_dir"] for r in results["rows"]]
    plot_runs(run_dirs, out / "curves.png", labels=[f"{r['env']} s{r['seed']}" for r in results["rows"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["HalfCheetah-v5", "Hopper-v5"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mujoco_quality"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(args.envs, args.seeds, args.steps, args.out)
    write_report(results, args.out)
    print(f"wrote {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
