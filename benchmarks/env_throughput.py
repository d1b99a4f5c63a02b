"""Environment throughput: env steps per second of the drl backends next to gymnasium's SyncVectorEnv.

    python -m benchmarks.env_throughput [--num-envs 1 64 1024 4096] [--devices cpu cuda] [--steps S]
                                        [--out benchmarks/results/env_throughput/]

What is timed, per (backend, device, num_envs): a loop of vectorized steps, each one = drawing a batch of
uniformly random actions (on the env's device for drl backends; ``action_space.sample()`` in numpy for
gymnasium) + ``env.step(actions)`` including autoreset of finished envs. Env construction, ``reset`` and
warm-up steps are not timed; on CUDA the device is synchronised at the end of every timed block. The
loop runs in 5 blocks and the reported rate is the median block's ``num_envs * steps / seconds`` (the
median makes the number robust to the machine being shared with other work). A configuration runs at
most ``--steps`` vectorized steps or ``--budget-s`` seconds, whichever comes first. torch runs with
``--threads`` CPU threads, by default 1, the one core gymnasium's SyncVectorEnv uses (on a busy machine
a second OpenMP thread also makes the timings erratic: a parallel op waits whenever one of its threads
is descheduled).

Backends: the four torch classic-control envs (``drl/CartPole-v0`` ...) on every available device, each
next to its gymnasium reference (``CartPole-v1`` ...) in ``gymnasium.make_vec(..., vectorization_mode=
"sync")``, and any other registered drl backend that imports (``--other-ids``; by default
``drl/HalfCheetah-v0`` on mujoco-warp, next to gymnasium's ``HalfCheetah-v5``, and ``drl/PandaReach-v0``
on pybullet). Those run in a subprocess with a time limit, so a missing dependency, a crash or a slow
compile is reported as a note instead of stopping the benchmark.

Writes ``results.json``, ``report.md`` and ``throughput.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from benchmarks.harness.machine import cpu_model, load_average

CLASSIC = {  # drl id -> gymnasium reference id
    "drl/CartPole-v0": "CartPole-v1",
    "drl/Pendulum-v0": "Pendulum-v1",
    "drl/MountainCarContinuous-v0": "MountainCarContinuous-v0",
    "drl/Acrobot-v0": "Acrobot-v1",
}
OTHER_REFERENCES = {"drl/HalfCheetah-v0": "HalfCheetah-v5"}
GYM_SYNC = "gymnasium SyncVectorEnv"
REPO_ROOT = Path(__file__).resolve().parents[1]
BLOCKS = 5
TARGET = ("drl/CartPole-v0", "cpu", 1024, 20.0)  # env, device, num_envs, minimum speed-up over gymnasium


# --- timing ---------------------------------------------------------------------------------------


def time_loop(
    step: Callable[[], None], sync: Callable[[], None], num_envs: int, max_steps: int, budget_s: float, warmup: int
) -> dict[str, Any]:
    """Time ``step`` (one vectorized step) in ``BLOCKS`` blocks; rates are env steps per second."""
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    step()
    sync()
    probe = time.perf_counter() - start
    steps_per_block = max(1, min(max_steps, int(budget_s / max(probe, 1e-9))) // BLOCKS)
    rates = []
    for _ in range(BLOCKS):
        sync()
        start = time.perf_counter()
        for _ in range(steps_per_block):
            step()
        sync()
        rates.append(num_envs * steps_per_block / (time.perf_counter() - start))
    return {
        "steps_per_s": statistics.median(rates),
        "steps_per_s_min": min(rates),
        "steps_per_s_max": max(rates),
        "vector_steps_timed": BLOCKS * steps_per_block,
    }


def torch_action_sampler(space: gym.Space, device: torch.device) -> Callable[[], torch.Tensor]:
    """Random actions for a batched action space, drawn on ``device``."""
    if isinstance(space, gym.spaces.MultiDiscrete):
        high = torch.as_tensor(space.nvec, device=device)
        return lambda: (torch.rand(high.shape, device=device) * high).long()
    if isinstance(space, gym.spaces.Box):
        low = torch.as_tensor(np.nan_to_num(space.low, neginf=-1.0), device=device)
        high = torch.as_tensor(np.nan_to_num(space.high, posinf=1.0), device=device)
        return lambda: low + (high - low) * torch.rand(low.shape, device=device)
    raise TypeError(f"no torch sampler for action space {space}")


def measure_drl(env_id: str, device: str, num_envs: int, max_steps: int, budget_s: float) -> dict[str, Any]:
    """Env steps/s of a registered drl backend: random actions on the device + ``env.step``."""
    env = gym.make_vec(env_id, num_envs=num_envs, device=device)
    env.reset(seed=0)
    dev = torch.device(device)
    sample = torch_action_sampler(env.action_space, dev)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    result = time_loop(lambda: env.step(sample()), sync, num_envs, max_steps, budget_s, warmup=10)
    env.close()
    return {"env_id": env_id, "backend": envs.ENVS[env_id].backend, "device": device, "num_envs": num_envs, **result}


def measure_gymnasium(env_id: str, num_envs: int, max_steps: int, budget_s: float) -> dict[str, Any]:
    """Env steps/s of gymnasium's SyncVectorEnv: ``action_space.sample()`` + ``env.step`` in numpy."""
    env = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                       vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    env.reset(seed=0)
    env.action_space.seed(0)
    result = time_loop(lambda: env.step(env.action_space.sample()), lambda: None, num_envs, max_steps, budget_s,
                       warmup=3)
    env.close()
    return {"env_id": env_id, "backend": GYM_SYNC, "device": "cpu", "num_envs": num_envs, **result}


# --- other backends, isolated in a subprocess ------------------------------------------------------


def run_worker(job: dict[str, Any]) -> None:
    """Subprocess entry: measure one drl id at each size, one JSON line per result (flushed at once)."""
    for num_envs in job["sizes"]:
        try:
            if job["kind"] == "drl":
                record = measure_drl(job["env_id"], job["device"], num_envs, job["steps"], job["budget_s"])
            else:
                record = measure_gymnasium(job["env_id"], num_envs, job["steps"], job["budget_s"])
        except Exception as err:  # any failure of a backend (some are still being written) becomes a note
            print(json.dumps({"note": f"{job['env_id']} ({job['device']}, {num_envs} envs): "
                                      f"{type(err).__name__}: {err}"}), flush=True)
            return
        print(json.dumps(record), flush=True)


def measure_in_subprocess(job: dict[str, Any], timeout_s: float) -> tuple[list[dict[str, Any]], list[str]]:
    """Run :func:`run_worker` in a fresh interpreter; keep what it measured before a crash or the time limit."""
    cmd = [sys.executable, "-m", "benchmarks.env_throughput", "--worker", json.dumps(job),
           "--threads", str(job["threads"])]
    what = f"{job['env_id']} on {job['device']}"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=REPO_ROOT)
        out, notes = proc.stdout, []
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            notes.append(f"{what}: worker exited with {proc.returncode}: {tail}")
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        notes = [f"{what}: stopped after the {timeout_s:.0f} s limit (larger sizes not measured)"]
    records = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        item = json.loads(line)
        if "note" in item:
            notes.append(item["note"])
        else:
            records.append(item)
    return records, notes


def probe_backend(env_id: str) -> str | None:
    """``None`` if the drl id's module imports here, else why not."""
    if env_id not in envs.ENVS:
        return f"{env_id} is not registered"
    module = gym.spec(env_id).vector_entry_point.split(":")[0]
    code = f"import {module}"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return f"{env_id} skipped: importing {module} failed: {tail}"
    return None


# --- report ---------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "platform": platform.platform(),
        "load_average_start": load_average(),
    }


def label(record: dict[str, Any]) -> str:
    return GYM_SYNC if record["backend"] == GYM_SYNC else f"{record['backend']}, {record['device']}"


def reference_of(env_id: str) -> str | None:
    return CLASSIC.get(env_id) or OTHER_REFERENCES.get(env_id)


def tables(records: list[dict[str, Any]], sizes: list[int]) -> list[tuple[str, list[str], list[list[str]]]]:
    """Per task: (title, header, rows) of steps/s, with speed-up rows over gymnasium's SyncVectorEnv."""
    out = []
    for drl_id in dict.fromkeys(r["task"] for r in records):
        ref_id = reference_of(drl_id)
        mine = [r for r in records if r["task"] == drl_id]
        gym_rate = {r["num_envs"]: r["steps_per_s"] for r in mine if r["backend"] == GYM_SYNC}
        header = ["backend"] + [f"N={n}" for n in sizes]
        rows = []
        for name in dict.fromkeys(label(r) for r in mine):
            rate = {r["num_envs"]: r["steps_per_s"] for r in mine if label(r) == name}
            rows.append([name] + [f"{rate[n]:,.0f}" if n in rate else "-" for n in sizes])
            if name != GYM_SYNC and gym_rate:
                rows.append([f"  x vs {GYM_SYNC}"] + [
                    f"{rate[n] / gym_rate[n]:.1f}x" if n in rate and n in gym_rate else "-" for n in sizes
                ])
        title = f"{drl_id}" + (f" (vs gymnasium {ref_id})" if ref_id else "")
        out.append((title, header, rows))
    return out


def format_text(title: str, header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
              for row in rows]
    return "\n".join(lines)


def format_markdown(title: str, header: list[str], rows: list[list[str]]) -> str:
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def target_check(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    env_id, device, num_envs, minimum = TARGET
    ours = [r for r in records if r["task"] == env_id and r["device"] == device and r["num_envs"] == num_envs
            and r["backend"] != GYM_SYNC]
    ref = [r for r in records if r["task"] == env_id and r["num_envs"] == num_envs and r["backend"] == GYM_SYNC]
    if not ours or not ref:
        return None
    speedup = ours[0]["steps_per_s"] / ref[0]["steps_per_s"]
    return {"env_id": env_id, "device": device, "num_envs": num_envs, "speedup": speedup, "minimum": minimum,
            "met": speedup >= minimum}


def plot(records: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in records))
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        mine = [r for r in records if r["task"] == task]
        for name in dict.fromkeys(label(r) for r in mine):
            points = sorted((r["num_envs"], r["steps_per_s"]) for r in mine if label(r) == name)
            ax.plot(*zip(*points, strict=True), marker="o", label=name, linestyle="--" if name == GYM_SYNC else "-")
        ax.set(xscale="log", yscale="log", title=task, xlabel="num_envs", ylabel="env steps / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(out: Path, info: dict[str, Any], records: list[dict[str, Any]], notes: list[str],
                 sizes: list[int], command: str, wall_s: float) -> str:
    target = target_check(records)
    md = [
        "# Environment throughput",
        "",
        f"Generated {datetime.datetime.now().isoformat(timespec='seconds')} by `{command}` in {wall_s:.0f} s.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {info['cpu']} |",
        f"| logical cores / torch threads | {info['logical_cores']} / {info['torch_threads']} |",
        f"| GPU | {info['gpu']} |",
        f"| torch / gymnasium / numpy / python | {info['torch']} / {info['gymnasium']} / {info['numpy']} / "
        f"{info['python']} |",
        f"| platform | {info['platform']} |",
        f"| load average (1/5/15 min) at start / end | {info['load_average_start']} / {info['load_average_end']} |",
        "",
        "Env steps per second (num_envs x vectorized steps / s, median of 5 timed blocks). Timed: drawing random "
        "actions (on the env's device for drl backends, `action_space.sample()` for gymnasium) + `step` with "
        "autoreset; construction, reset and warm-up excluded; CUDA synchronised at the end of each block. "
        f"torch used {info['torch_threads']} CPU thread(s).",
        "",
    ]
    if target:
        verdict = "met" if target["met"] else "MISSED"
        md += [f"**Target** {target['env_id']} on {target['device']} at {target['num_envs']} envs >= "
               f"{target['minimum']:.0f}x gymnasium SyncVectorEnv: measured **{target['speedup']:.1f}x** ({verdict}).",
               ""]
    for title, header, rows in tables(records, sizes):
        md += [format_markdown(title, header, rows), ""]
    if notes:
        md += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["![throughput](throughput.png)", ""]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    return text


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 1024, 4096])
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=500, help="most vectorized steps timed per configuration")
    parser.add_argument("--budget-s", type=float, default=1.5, help="most seconds timed per configuration")
    parser.add_argument("--gym-max-envs", type=int, default=4096, help="largest num_envs run through gymnasium")
    parser.add_argument("--other-ids", nargs="*", default=["drl/HalfCheetah-v0", "drl/PandaReach-v0"])
    parser.add_argument("--other-max-envs", type=int, default=1024, help="largest num_envs for --other-ids")
    parser.add_argument("--other-timeout-s", type=float, default=90.0, help="time limit per other backend/device")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, the one core of SyncVectorEnv); 0: torch's choice")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/env_throughput"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.worker:
        run_worker(json.loads(args.worker))
        return

    command = " ".join(["python -m benchmarks.env_throughput", *(shlex.quote(a) for a in (argv or sys.argv[1:]))])
    started = time.perf_counter()
    info = machine_info()
    sizes = sorted(set(args.num_envs))
    notes: list[str] = []
    devices = []
    for device in args.devices:
        if torch.device(device).type == "cuda" and not torch.cuda.is_available():
            notes.append(f"device {device} skipped: CUDA is not available on this machine")
        else:
            devices.append(device)
    records: list[dict[str, Any]] = []

    def add(record: dict[str, Any], task: str) -> None:
        record["task"] = task
        records.append(record)
        print(f"  {task:32s} {label(record):34s} N={record['num_envs']:<6d} {record['steps_per_s']:>14,.0f} steps/s",
              flush=True)

    print(f"machine: {info['cpu']}, {info['logical_cores']} cores, torch {info['torch']}, GPU {info['gpu']}")
    for drl_id, gym_id in CLASSIC.items():
        for device in devices:
            for n in sizes:
                add(measure_drl(drl_id, device, n, args.steps, args.budget_s), drl_id)
        for n in sizes:
            if n > args.gym_max_envs:
                notes.append(f"gymnasium {gym_id} at {n} envs skipped (> --gym-max-envs {args.gym_max_envs})")
                continue
            add(measure_gymnasium(gym_id, n, args.steps, args.budget_s), drl_id)

    other_sizes = [n for n in sizes if n <= args.other_max_envs]
    for drl_id in args.other_ids:
        why_not = probe_backend(drl_id)
        if why_not:
            print(f"  note: {why_not}")
            notes.append(why_not)
            continue
        jobs = [{"kind": "drl", "env_id": drl_id, "device": d} for d in devices]
        if drl_id in OTHER_REFERENCES:
            jobs.append({"kind": "gym", "env_id": OTHER_REFERENCES[drl_id], "device": "cpu"})
        for job in jobs:
            job.update(sizes=other_sizes, steps=args.steps, budget_s=args.budget_s, threads=args.threads)
            found, job_notes = measure_in_subprocess(job, args.other_timeout_s)
            for record in found:
                add(record, drl_id)
            for note in job_notes:
                print(f"  note: {note}")
            notes += job_notes
        if other_sizes != sizes:
            notes.append(f"{drl_id}: sizes above --other-max-envs {args.other_max_envs} not run")

    wall_s = time.perf_counter() - started
    info["load_average_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    print()
    for title, header, rows in tables(records, sizes):
        print(format_text(title, header, rows), end="\n\n")
    target = target_check(records)
    if target:
        print(f"target: {target['env_id']} {target['device']} N={target['num_envs']}: {target['speedup']:.1f}x "
              f"gymnasium SyncVectorEnv (need >= {target['minimum']:.0f}x): {'met' if target['met'] else 'MISSED'}")
    payload = {"command": command, "machine": info, "wall_s": wall_s, "target": target, "notes": notes,
               "results": records}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2))
    write_report(args.out, info, records, notes, sizes, command, wall_s)
    plot(records, args.out / "throughput.png")
    print(f"wrote {args.out}/results.json, report.md, throughput.png ({wall_s:.0f} s)")


if __name__ == "__main__":
    main()
