"""Fault injection: kill training runs at random moments, resume them, check what they left.

    python -m benchmarks.faults [--trials 10] [--seed 0] [--envs drl/CartPole-v0 drl/Pendulum-v0]
                                [--out benchmarks/results/faults/]

Each trial starts a small real training run as a subprocess (``drl train`` through a thin launcher,
``python -m benchmarks.faults child ...``), delivers SIGKILL, SIGTERM or SIGINT at a random moment
(during start-up, at a random time in training, or while ``latest.pt`` is being written: the
launcher holds the k-th checkpoint's rename for a moment and says so through a marker file), then
runs ``drl train --resume`` until the run completes (a resumed run may be killed again). An
uninterrupted run per env with the same seed is the reference. A trial is **consistent** when:

* every exit code is the expected one (130 SIGINT, 143 SIGTERM, -9 SIGKILL, 0 when the signal came
  after the run had finished; a kill during start-up may leave no run folder: the trial then
  starts the run again, as a user would);
* ``metrics.csv`` has each ``global_step`` once, strictly increasing, exactly the reference's steps,
  with evaluations at the reference's steps;
* no ``*.tmp`` is left anywhere in the run folder;
* ``latest.pt`` and ``best.pt`` load with ``weights_only=True`` and hold only finite tensors;
* ``summary.json`` reports the full run (steps, not interrupted) and ``curve.png`` exists.

A trial is **bitwise equal** when the final ``latest.pt`` parameters equal the reference run's
(``torch.equal``): that needs the env state in checkpoints, so the count says how far resume is
from bitwise today. Writes ``report.md`` and ``results.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import random
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[1]
STALL_ENV = "DRL_FAULTS_STALL"  # "<k>:<marker path>": hold the k-th rename onto latest.pt, touch the marker
STARTED_ENV = "DRL_FAULTS_STARTED"  # a marker the child touches when it calls drl's CLI
STALL_SECONDS = 1.5
SIGNALS = {"SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT}
EXPECTED_EXIT = {"SIGKILL": -9, "SIGTERM": 143, "SIGINT": 130}

# per env: a tiny run with frequent checkpoints and evaluations (steps per iteration: num_envs * num_steps)
CONFIGS: dict[str, dict[str, Any]] = {
    "drl/CartPole-v0": {"steps": 3840, "num_envs": 8, "set": [
        "algo.num_steps=16", "algo.minibatch_size=64", "algo.num_epochs=2", "eval_interval=512",
        "eval_episodes=2", "env.num_eval_envs=2", "checkpoint_interval=384", "torch_threads=1"]},
    "drl/Pendulum-v0": {"steps": 3840, "num_envs": 8, "set": [
        "algo.num_steps=16", "algo.minibatch_size=64", "algo.num_epochs=2", "eval_interval=512",
        "eval_episodes=2", "env.num_eval_envs=2", "checkpoint_interval=384", "torch_threads=1"]},
}


def train_args(env_id: str, run_dir: Path, seed: int) -> list[str]:
    cfg = CONFIGS[env_id]
    args = ["train", "ppo", "--env", env_id, "--steps", str(cfg["steps"]), "--num-envs", str(cfg["num_envs"]),
            "--seed", str(seed), "--device", "cpu", "--no-progress", "--run-dir", str(run_dir)]
    for item in cfg["set"]:
        args += ["--set", item]
    return args


# --- the child: drl's CLI, optionally holding one checkpoint write open --------------------------
def child(argv: list[str]) -> int:
    """``drl`` with ``argv``; with ``DRL_FAULTS_STALL=k:marker`` the k-th ``latest.pt`` rename waits."""
    stall = os.environ.get(STALL_ENV)
    if stall:
        index, marker = stall.split(":", 1)
        real_replace = os.replace
        count = [0]

        def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if str(dst).endswith("latest.pt"):
                count[0] += 1
                if count[0] == int(index):  # the temp file is complete, the rename not done: kill now
                    Path(marker).touch()
                    time.sleep(STALL_SECONDS)
            real_replace(src, dst, *args, **kwargs)

        os.replace = replace  # type: ignore[assignment]
    from drl.cli import main as drl_main

    if os.environ.get(STARTED_ENV):
        Path(os.environ[STARTED_ENV]).touch()
    return drl_main(argv)


def _child_cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.faults", "child", *argv]


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(_child_cmd(argv), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


# --- checks --------------------------------------------------------------------------------------
def metrics_steps(run_dir: Path) -> tuple[list[int], list[int]]:
    """``(global steps, steps with an evaluation)`` of ``metrics.csv``."""
    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [int(r["global_step"]) for r in rows], [int(r["global_step"]) for r in rows if r.get("eval_return")]


def final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    from drl.checkpoint import load_checkpoint

    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")["agent_state"]["model"]


def _all_finite(obj: Any) -> bool:
    import torch

    if isinstance(obj, torch.Tensor):
        return not obj.is_floating_point() or bool(torch.isfinite(obj).all())
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    return True


def check_run(run_dir: Path, reference: dict[str, Any]) -> list[str]:
    """What is wrong with a finished (resumed) run folder; empty when it is consistent.

    Args:
        run_dir: the run folder.
        reference: ``{"steps": [...], "eval_steps": [...], "total_steps": int}`` of the uninterrupted run.
    """
    from drl.checkpoint import CheckpointError, load_checkpoint

    problems = []
    if not (run_dir / "metrics.csv").is_file():
        return ["no metrics.csv"]
    try:
        steps, eval_steps = metrics_steps(run_dir)
    except (ValueError, KeyError, csv.Error) as err:
        return [f"metrics.csv unreadable: {err}"]
    if len(set(steps)) != len(steps):
        problems.append(f"metrics.csv repeats global_step {sorted({s for s in steps if steps.count(s) > 1})}")
    if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
        problems.append("metrics.csv global_step not strictly increasing")
    if steps != reference["steps"]:
        problems.append(f"metrics.csv steps differ from the reference ({len(steps)} rows vs {len(reference['steps'])})")
    if eval_steps != reference["eval_steps"]:
        problems.append(f"evaluations at {eval_steps}, reference at {reference['eval_steps']}")
    stray = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.tmp"))
    if stray:
        problems.append(f"temp files left: {stray}")
    for name in ("latest.pt", "best.pt"):
        try:
            ckpt = load_checkpoint(run_dir / "checkpoints" / name)
        except CheckpointError as err:
            problems.append(f"{name}: {err}")
            continue
        if not _all_finite(ckpt.get("agent_state")):
            problems.append(f"{name} holds non-finite values")
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():
        problems.append("no summary.json")
    else:
        summary = json.loads(summary_file.read_text())
        if summary.get("steps") != reference["total_steps"] or summary.get("interrupted"):
            problems.append(f"summary.json: steps {summary.get('steps')}, interrupted {summary.get('interrupted')}")
    if not (run_dir / "curve.png").is_file():
        problems.append("no curve.png")
    return problems


def bitwise_equal(run_dir: Path, reference_params: dict[str, torch.Tensor]) -> bool:
    import torch

    try:
        params = final_parameters(run_dir)
    except Exception:  # noqa: BLE001  (a broken checkpoint is already reported by check_run)
        return False
    return set(params) == set(reference_params) and all(torch.equal(params[k], reference_params[k])
                                                        for k in reference_params)


# --- trials --------------------------------------------------------------------------------------
@dataclass
class Kill:
    signal: str
    moment: str  # start-up | training | checkpoint-write
    delay_s: float | None = None  # after the first log write (training) or drl's CLI start (start-up)
    sent: bool = False  # False: the process had already exited
    exit_code: int | None = None
    resume_step: int | None = None  # the newest checkpoint's step after the kill (None: none, resume restarts)


@dataclass
class Trial:
    index: int
    env_id: str
    kills: list[Kill] = field(default_factory=list)
    resumes: int = 0
    consistent: bool = False
    bitwise_equal: bool = False
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def _wait_for(predicate: Any, proc: subprocess.Popen, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def _newest_checkpoint_step(run_dir: Path) -> int | None:
    from drl.checkpoint import CheckpointError, load_checkpoint

    steps = []
    for name in ("latest.pt", "best.pt"):
        try:
            steps.append(load_checkpoint(run_dir / "checkpoints" / name)["runner"]["global_step"])
        except (CheckpointError, KeyError, TypeError):
            pass
    return max(steps, default=None)


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _kill_once(argv: list[str], run_dir: Path, kill: Kill, rng: random.Random, train_s: float,
               work: Path) -> tuple[Kill, str]:
    """Start ``argv``, deliver ``kill`` per its moment, wait for the exit; returns it and stderr's tail."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    marker = work / f"stall-{rng.randrange(10**9)}"
    if kill.moment == "checkpoint-write":
        env[STALL_ENV] = f"{rng.randint(1, 3)}:{marker}"
    started = work / f"started-{rng.randrange(10**9)}"
    env[STARTED_ENV] = str(started)
    proc = subprocess.Popen(_child_cmd(argv), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)
    if kill.moment == "start-up":  # into drl's start-up (imports, env, agent), once its CLI is running
        _wait_for(started.exists, proc, 300)
        kill.delay_s = round(rng.uniform(0.0, 2.5), 3)
        time.sleep(kill.delay_s)
    elif kill.moment == "checkpoint-write":
        _wait_for(marker.exists, proc, 300)
        time.sleep(rng.uniform(0.0, STALL_SECONDS / 2))
    else:
        metrics, before = run_dir / "metrics.csv", _mtime(run_dir / "metrics.csv")
        _wait_for(lambda: _mtime(metrics) != before, proc, 300)  # training has begun: the log was written
        kill.delay_s = round(rng.uniform(0.0, train_s), 3)
        time.sleep(kill.delay_s)
    kill.sent = proc.poll() is None
    if kill.sent:
        proc.send_signal(SIGNALS[kill.signal])
    _, err = proc.communicate(timeout=300)
    kill.exit_code = proc.returncode
    return kill, err[-500:]


def _exit_problem(kill: Kill, run_dir: Path, stderr: str) -> str | None:
    """What is wrong with a killed process's exit (None: as expected)."""
    summary_file = run_dir / "summary.json"
    finished = summary_file.is_file() and json.loads(summary_file.read_text()).get("interrupted") is False
    if kill.exit_code == 0:  # only a run that completed (the signal came too late, or not at all) exits 0
        return None if finished else "exit 0 but the run is not complete"
    if kill.exit_code != EXPECTED_EXIT[kill.signal] or not kill.sent:
        return f"exit {kill.exit_code}, expected {EXPECTED_EXIT[kill.signal]}; stderr: {stderr.strip()[-300:]}"
    if kill.signal != "SIGKILL" and "Traceback" in stderr:
        return f"a traceback: {stderr.strip()[-300:]}"
    return None


def run_trial(index: int, env_id: str, seed: int, reference: dict[str, Any], rng: random.Random,
              work: Path) -> Trial:
    trial = Trial(index, env_id)
    start = time.monotonic()
    run_dir = work / f"trial{index}"
    for k in range(rng.choice([1, 1, 2])):  # sometimes the resumed run is killed too
        sig = rng.choice(list(SIGNALS))
        moment = rng.choices(["start-up", "training", "checkpoint-write"], weights=[1, 3, 2])[0]
        fresh = not (run_dir / "config.yaml").is_file()
        argv = train_args(env_id, run_dir, seed) if fresh else ["train", "--resume", str(run_dir), "--no-progress"]
        if not fresh:
            trial.resumes += 1
        kill, err = _kill_once(argv, run_dir, Kill(sig, moment), rng, reference["train_s"], work)
        kill.resume_step = _newest_checkpoint_step(run_dir)
        trial.kills.append(kill)
        problem = _exit_problem(kill, run_dir, err)
        if problem:
            trial.problems.append(f"kill {k + 1} ({sig} at {moment}): {problem}")
    fresh = not (run_dir / "config.yaml").is_file()
    argv = train_args(env_id, run_dir, seed) if fresh else ["train", "--resume", str(run_dir), "--no-progress"]
    if not fresh:
        trial.resumes += 1
    done = _run(argv, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        trial.problems.append(f"final run exited {done.returncode}: {done.stderr.strip()[-300:]}")
    trial.problems += check_run(run_dir, reference)
    trial.consistent = not trial.problems
    trial.bitwise_equal = bitwise_equal(run_dir, reference["params"])
    trial.wall_s = round(time.monotonic() - start, 2)
    return trial


def reference_run(env_id: str, seed: int, work: Path) -> dict[str, Any]:
    run_dir = work / f"reference-{env_id.replace('/', '-')}"
    start = time.monotonic()
    done = _run(train_args(env_id, run_dir, seed), env=dict(os.environ, OMP_NUM_THREADS="1"))
    if done.returncode != 0:
        raise RuntimeError(f"reference run of {env_id} failed ({done.returncode}): {done.stderr[-500:]}")
    steps, eval_steps = metrics_steps(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"steps": steps, "eval_steps": eval_steps, "total_steps": summary["steps"],
            "train_s": float(summary["wall_s"]), "process_s": round(time.monotonic() - start, 2),
            "params": final_parameters(run_dir)}


# --- report --------------------------------------------------------------------------------------
def t_total(trial: Trial, references: dict[str, dict[str, Any]]) -> int:
    """The trial's total steps (its env's reference run)."""
    return references[trial.env_id]["total_steps"] if trial.env_id in references else 2**62


def write_report(out: Path, trials: list[Trial], references: dict[str, dict[str, Any]], command: str,
                 seed: int) -> dict[str, Any]:
    mid_run = [t for t in trials if any(0 < (k.resume_step or 0) < t_total(t, references) for k in t.kills)]
    counts = {"trials": len(trials), "consistent": sum(t.consistent for t in trials),
              "bitwise_equal": sum(t.bitwise_equal for t in trials),
              "resumed_mid_run": len(mid_run), "bitwise_equal_resumed_mid_run": sum(t.bitwise_equal for t in mid_run),
              "kills": sum(len(t.kills) for t in trials), "resumes": sum(t.resumes for t in trials)}
    by_signal: dict[str, dict[str, int]] = {}
    for t in trials:
        for kill in t.kills:
            entry = by_signal.setdefault(f"{kill.signal} at {kill.moment}", {"kills": 0, "in_consistent_trials": 0})
            entry["kills"] += 1
            entry["in_consistent_trials"] += int(t.consistent)
    data = {
        "command": command, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seed": seed, "counts": counts, "by_kill": by_signal,
        "references": {k: {"steps": v["total_steps"], "train_s": v["train_s"], "process_s": v["process_s"]}
                       for k, v in references.items()},
        "trials": [asdict(t) for t in trials],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=2))
    lines = [
        "# Fault injection: kill, resume, check", "",
        f"`{command}` ({data['date']}, seed {seed}).", "",
        f"**{counts['consistent']} of {counts['trials']} trials consistent; "
        f"{counts['bitwise_equal']} of {counts['trials']} bitwise equal** to the uninterrupted run "
        f"({counts['kills']} kills, {counts['resumes']} resumes). "
        f"{counts['resumed_mid_run']} trials resumed from a checkpoint part-way through the run (the others restarted "
        f"from step 0 or were stopped after the end); {counts['bitwise_equal_resumed_mid_run']} of those are bitwise "
        "equal.", "",
        "Consistent: expected exit codes, `metrics.csv` with each reference step once and evaluations at the "
        "reference's steps, no `*.tmp` left, `latest.pt`/`best.pt` loadable and finite, `summary.json` complete, "
        "`curve.png` present. Bitwise equal: the final `latest.pt` parameters equal the reference run's "
        "(`torch.equal`).", "",
        "| kill | kills | in consistent trials |", "|---|---:|---:|",
        *[f"| {name} | {v['kills']} | {v['in_consistent_trials']} |" for name, v in sorted(by_signal.items())], "",
        "| trial | env | kills (signal at moment: exit, resumed from step) | resumes | consistent | bitwise equal "
        "| problems |",
        "|---:|---|---|---:|---|---|---|",
    ]
    for t in trials:
        kills = "; ".join(f"{k.signal} at {k.moment}: {k.exit_code}, {k.resume_step if k.resume_step else 0}"
                          for k in t.kills)
        problems = "; ".join(t.problems).replace("|", "/") or "-"
        lines.append(f"| {t.index} | {t.env_id} | {kills} | {t.resumes} | {'yes' if t.consistent else 'NO'} | "
                     f"{'yes' if t.bitwise_equal else 'no'} | {problems} |")
    lines += ["", "References (uninterrupted, same seed): " + ", ".join(
        f"{k}: {v['total_steps']} steps, {v['train_s']:.1f} s training" for k, v in references.items()), ""]
    (out / "report.md").write_text("\n".join(lines))
    return data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill schedule and the runs")
    parser.add_argument("--envs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "faults")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    command = "python -m benchmarks.faults " + shlex.join(argv)
    with tempfile.TemporaryDirectory(prefix="drl-faults-") as tmp:
        work = Path(tmp)
        references = {env_id: reference_run(env_id, args.seed, work) for env_id in args.envs}
        trials = []
        for i in range(args.trials):
            env_id = args.envs[i % len(args.envs)]
            trial = run_trial(i, env_id, args.seed, references[env_id], rng, work)
            trials.append(trial)
            status = "consistent" if trial.consistent else "INCONSISTENT: " + "; ".join(trial.problems)
            print(f"trial {i} {env_id} [{', '.join(f'{k.signal}@{k.moment}' for k in trial.kills)}]: {status}; "
                  f"bitwise {'equal' if trial.bitwise_equal else 'different'} ({trial.wall_s:.1f} s)", flush=True)
        data = write_report(args.out, trials, references, command, args.seed)
    counts = data["counts"]
    print(f"{counts['consistent']}/{counts['trials']} consistent, {counts['bitwise_equal']}/{counts['trials']} "
          f"bitwise equal; wrote {args.out / 'report.md'}")
    return 0 if counts["consistent"] == counts["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
