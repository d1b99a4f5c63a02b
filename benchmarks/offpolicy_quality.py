"""Learning quality of drl's SAC and TD3 on gymnasium MuJoCo v5 at 300k env steps, against published figures.

    python -m benchmarks.offpolicy_quality run [--agents sac td3] [--envs HalfCheetah-v5 Hopper-v5]
                                               [--seeds 0 1 2] [--steps 300000] [--out RUNS_DIR]
                                               [--jobs K] [--nice 19] [--dry-run]
    python -m benchmarks.offpolicy_quality report [--runs RUNS_DIR] [same grid options]
                                                  [--out benchmarks/results/offpolicy_quality]

``run`` walks the grid (agent x env x seed, run folder ``RUNS_DIR/<agent>-<env>-s<seed>``): a
finished run (``summary.json`` with ``steps >= --steps``) is skipped, a started one is resumed
(``drl train --resume``), a run folder held by a live drl process is left alone, and a missing one
is started with the tuned config ``configs/<agent>/<env>.yaml`` (rl-baselines3-zoo hyperparameters)::

    drl train AGENT --config configs/AGENT/ENV.yaml --steps 300000 --seed S
        --set checkpoint_interval=10000 --run-dir RUNS_DIR/AGENT-ENV-sS --no-progress

Run it from the repository root (the config paths are relative; ``drl`` is the console script on
PATH). Each is a subprocess (``--jobs K`` at once, optionally under ``nice -n N``), its output in
``RUNS_DIR/<run>.log``; every command is printed and appended to ``RUNS_DIR/commands.jsonl``.
Each run takes about an hour of one CPU core.

``report`` reads every run folder's ``metrics.csv`` and ``summary.json`` (whatever exists: it says
which runs are missing or unfinished) and writes ``results.json``, ``report.md`` and
``curves.png``: drl's evaluation return at ``--steps`` per seed (the configs evaluate every 50k
steps, 10 deterministic episodes, so 300k is an evaluation point), mean ± std over seeds, the
mean training-episode return over the last 10% of the steps up to ``--steps``, the published
reference figures (:data:`REFERENCES`, with their sources) and one verdict per reference at the
same step count: drl's mean of the same metric within / below / above the reference band.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness.analysis import final_train_return, finite
from benchmarks.harness.machine import load_average, machine_info, versions

AGENTS = ["sac", "td3"]
ENVS = ["HalfCheetah-v5", "Hopper-v5"]
SEEDS = [0, 1, 2]
STEPS = 300_000
CHECKPOINT_INTERVAL = 10_000
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "offpolicy_quality"
PLOT = "curves.png"
COMMANDS_LOG = "commands.jsonl"
STEP_TOLERANCE = 0.02  # an evaluation within 2% of --steps counts as "at --steps"


# --- published reference figures --------------------------------------------------------------
@dataclass(frozen=True)
class Reference:
    """One published figure for (agent, env).

    Args:
        agent, env: drl's names (``sac``/``td3``, the v5 env it is compared with).
        steps: env steps the figure is for (300k is compared; others are context only).
        value: the figure (mean over the source's seeds / runs).
        low, high: the band around it (the source's ± or its shaded band), used for the verdict.
        metric: ``"eval"`` (deterministic evaluation return) or ``"train"`` (training-episode return).
        kind: ``"table"`` (a number the source states) or ``"plot"`` (read off a plot: approximate).
        env_version: the env the source ran (v2/v3/v4 differ from v5 in details, not in the task).
        source: who, where (table / figure) and how many seeds.
        url: where to check it.
        note: what differs from drl's runs (hyperparameters, metric).
    """

    agent: str
    env: str
    steps: int
    value: float
    low: float | None
    high: float | None
    metric: str
    kind: str
    env_version: str
    source: str
    url: str
    note: str = ""


_CLEANRL_PLOT = ("CleanRL docs, learning curve of {script} on {env} (3 seeds; line: mean, band: the shaded region "
                 "as plotted; y: training episodic return), read off at 300k")
_CLEANRL_DOCS = "https://github.com/vwxyzjn/cleanrl/blob/fe8d8a03c41a7ef5b523e2e354bd01c363e786bb/docs/rl-algorithms/"
_CLEANRL_NOTE = {
    "sac": "CleanRL's SAC: [256, 256], policy lr 3e-4, Q lr 1e-3, policy update every 2 steps, learning_starts 5k "
           "(drl: the zoo's lr 3e-4 for both, every step, learning_starts 10k)",
    "td3": "CleanRL's TD3: [256, 256], lr 3e-4, learning_starts 25k (drl: the zoo's [400, 300], lr 1e-3, "
           "learning_starts 10k)",
}
_SEUNGJU = ("seungju-k1m/sac-td3-td7 README, 'Experiment Results' table (a PyTorch reimplementation, "
            "'average value across eight different seeds'; ± as given there)")
_SEUNGJU_URL = "https://github.com/seungju-k1m/sac-td3-td7/blob/c3d51f608d40aa907409c471aeaf7e4dc70df7c6/README.md"
_ZOO = ("rl-baselines3-zoo benchmark.md (SB3 with the zoo's hyperparameters, the ones drl's configs copy; one "
        "trained agent, mean ± std over its evaluation episodes)")
_ZOO_URL = "https://github.com/DLR-RM/rl-baselines3-zoo/blob/22e3ff2450fd92033f7f032915e1f64894a09584/benchmark.md"
_CLEANRL_SAC_URL = "https://docs.cleanrl.dev/rl-algorithms/sac/#experiment-results"
_CLEANRL_TD3_URL = "https://docs.cleanrl.dev/rl-algorithms/td3/#experiment-results"


def _band(value: float, pm: float) -> tuple[float, float]:
    return value - pm, value + pm


#: Published SAC / TD3 figures on HalfCheetah and Hopper. Only numbers a source states are
#: ``kind="table"``; ``kind="plot"`` values were read off the source's PNG at 300k (the mean line's
#: and the shaded band's pixel rows mapped through the y gridlines; about ± 100 on HalfCheetah,
#: ± 50 on Hopper).
#: No source found states SAC/TD3 at 300k steps with SB3/rl-zoo or CleanRL as a table: the TD7
#: paper (Fujimoto et al. 2023, "For SALE", Table 1: TD3, SAC, TQC, TD3+OFE and TD7 at 300k, 1M
#: and 5M steps on gym MuJoCo v4, 10 seeds) has them, but its TD3/SAC values were not retrievable
#: when this table was written; add them here (kind="table") when checked against the paper.
REFERENCES: list[Reference] = [
    # --- 300k: read off CleanRL's plots (approximate; training episodic return) ---
    Reference("sac", "HalfCheetah-v5", 300_000, 7750, 6700, 8500, "train", "plot", "HalfCheetah-v2",
              _CLEANRL_PLOT.format(script="sac_continuous_action.py", env="HalfCheetah-v2"),
              _CLEANRL_DOCS + "sac/HalfCheetah-v2.png",
              _CLEANRL_NOTE["sac"]),
    Reference("sac", "Hopper-v5", 300_000, 2330, 1850, 2800, "train", "plot", "Hopper-v2",
              _CLEANRL_PLOT.format(script="sac_continuous_action.py", env="Hopper-v2"),
              _CLEANRL_DOCS + "sac/Hopper-v2.png",
              _CLEANRL_NOTE["sac"]),
    Reference("td3", "HalfCheetah-v5", 300_000, 7000, 5650, 8000, "train", "plot", "HalfCheetah-v2",
              _CLEANRL_PLOT.format(script="td3_continuous_action.py", env="HalfCheetah-v2"),
              _CLEANRL_DOCS + "td3/HalfCheetah-v2.png",
              _CLEANRL_NOTE["td3"]),
    Reference("td3", "Hopper-v5", 300_000, 1400, 800, 2300, "train", "plot", "Hopper-v2",
              _CLEANRL_PLOT.format(script="td3_continuous_action.py", env="Hopper-v2"),
              _CLEANRL_DOCS + "td3/Hopper-v2.png",
              _CLEANRL_NOTE["td3"]),
    # --- 300k: a third-party reimplementation's table (evaluation return) ---
    Reference("sac", "HalfCheetah-v5", 300_000, 7847, *_band(7847, 384), "eval", "table", "HalfCheetah-v4", _SEUNGJU,
              _SEUNGJU_URL, "not SB3/CleanRL: its own SAC, 25k initial random steps, eval every 5k steps"),
    Reference("sac", "Hopper-v5", 300_000, 1908, *_band(1908, 1117), "eval", "table", "Hopper-v4", _SEUNGJU,
              _SEUNGJU_URL, "not SB3/CleanRL: its own SAC, 25k initial random steps, eval every 5k steps"),
    Reference("td3", "HalfCheetah-v5", 300_000, 7316, *_band(7316, 118), "eval", "table", "HalfCheetah-v4", _SEUNGJU,
              _SEUNGJU_URL, "not SB3/CleanRL: its own TD3 (lr 3e-4), 25k initial random steps"),
    Reference("td3", "Hopper-v5", 300_000, 733, *_band(733, 817), "eval", "table", "Hopper-v4", _SEUNGJU,
              _SEUNGJU_URL, "not SB3/CleanRL: its own TD3 (lr 3e-4), 25k initial random steps"),
    # --- 1M (the nearest published SB3-zoo / CleanRL tables): context only, no verdict at 300k ---
    Reference("sac", "HalfCheetah-v5", 1_000_000, 9535.451, *_band(9535.451, 100.470), "eval", "table",
              "HalfCheetah-v3", _ZOO, _ZOO_URL),
    Reference("sac", "Hopper-v5", 1_000_000, 2325.547, *_band(2325.547, 1129.676), "eval", "table", "Hopper-v3",
              _ZOO, _ZOO_URL),
    Reference("td3", "HalfCheetah-v5", 1_000_000, 9655.666, *_band(9655.666, 969.916), "eval", "table",
              "HalfCheetah-v3", _ZOO, _ZOO_URL),
    Reference("td3", "Hopper-v5", 1_000_000, 3606.390, *_band(3606.390, 4.027), "eval", "table", "Hopper-v3",
              _ZOO, _ZOO_URL),
    Reference("sac", "HalfCheetah-v5", 1_000_000, 9634.89, *_band(9634.89, 1423.73), "train", "table",
              "HalfCheetah-v2", "CleanRL docs, SAC 'Experiment results' table (training episodic return)",
              _CLEANRL_SAC_URL, _CLEANRL_NOTE["sac"]),
    Reference("sac", "Hopper-v5", 1_000_000, 2310.46, *_band(2310.46, 342.82), "train", "table", "Hopper-v2",
              "CleanRL docs, SAC 'Experiment results' table (training episodic return)", _CLEANRL_SAC_URL,
              _CLEANRL_NOTE["sac"]),
    Reference("td3", "HalfCheetah-v5", 1_000_000, 9583.22, *_band(9583.22, 126.09), "train", "table",
              "HalfCheetah-v4", "CleanRL docs, TD3 'Experiment results' table (3 seeds, average episodic return)",
              _CLEANRL_TD3_URL, _CLEANRL_NOTE["td3"]),
    Reference("td3", "Hopper-v5", 1_000_000, 3134.61, *_band(3134.61, 360.18), "train", "table", "Hopper-v4",
              "CleanRL docs, TD3 'Experiment results' table (3 seeds, average episodic return)", _CLEANRL_TD3_URL,
              _CLEANRL_NOTE["td3"]),
]


# --- the grid and its commands ----------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    agent: str
    env: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.agent}-{self.env}-s{self.seed}"


def grid(agents: list[str], envs: list[str], seeds: list[int], runs_dir: Path) -> list[RunSpec]:
    """Every (agent, env, seed), seeds innermost, run folder ``runs_dir/<agent>-<env>-s<seed>``."""
    return [RunSpec(a, e, s, runs_dir / f"{a}-{e}-s{s}") for a in agents for e in envs for s in seeds]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _in_use(run_dir: Path) -> bool:
    from drl.runners.common import check_not_in_use

    try:
        check_not_in_use(run_dir)
    except FileExistsError:
        return True
    return False


def run_status(run_dir: Path, steps: int) -> str:
    """``finished`` (summary with ``steps >= steps``), ``running`` (a live drl process holds the
    folder), ``started`` (a config, not finished: resume it) or ``missing``."""
    summary = _read_json(run_dir / "summary.json")
    if summary is not None and int(summary.get("steps") or 0) >= steps:
        return "finished"
    if not (run_dir / "config.yaml").is_file():
        return "missing"
    return "running" if _in_use(run_dir) else "started"


def train_command(spec: RunSpec, steps: int, status: str, nice: int | None = None) -> list[str] | None:
    """The ``drl train`` command that brings ``spec`` to ``steps`` (None: nothing to do)."""
    if status in ("finished", "running"):
        return None
    if status == "started":
        cmd = ["drl", "train", "--resume", str(spec.run_dir), "--steps", str(steps), "--no-progress"]
    else:
        cmd = ["drl", "train", spec.agent, "--config", f"configs/{spec.agent}/{spec.env}.yaml", "--steps",
               str(steps), "--seed", str(spec.seed), "--set", f"checkpoint_interval={CHECKPOINT_INTERVAL}",
               "--run-dir", str(spec.run_dir), "--no-progress"]
    return (["nice", "-n", str(nice)] if nice is not None else []) + cmd


def plan(specs: list[RunSpec], steps: int, nice: int | None = None) -> list[dict[str, Any]]:
    """One entry per run: its status and the command that runs it (None when there is nothing to do)."""
    out = []
    for spec in specs:
        status = run_status(spec.run_dir, steps)
        out.append({"run": spec.name, "status": status, "command": train_command(spec, steps, status, nice)})
    return out


def execute(specs: list[RunSpec], steps: int, runs_dir: Path, jobs: int = 1, nice: int | None = None) -> int:
    """Run the plan's commands, ``jobs`` at a time; each command's output goes to ``runs_dir/<run>.log``
    and the command, its start, end and exit code to ``runs_dir/commands.jsonl``. Returns the number
    of commands that failed."""
    todo = [(spec, entry) for spec, entry in zip(specs, plan(specs, steps, nice), strict=True)]
    for spec, entry in todo:
        print(f"{spec.name:<28} {entry['status']:<9} "
              + (shlex.join(entry["command"]) if entry["command"] else "(nothing to do)"), flush=True)
    queue = [(spec, entry["command"]) for spec, entry in todo if entry["command"]]
    running: list[tuple[RunSpec, list[str], subprocess.Popen, Any, str]] = []
    failed = 0
    runs_dir.mkdir(parents=True, exist_ok=True)

    def record(item: dict[str, Any]) -> None:
        with (runs_dir / COMMANDS_LOG).open("a") as f:
            f.write(json.dumps(item) + "\n")

    while queue or running:
        while queue and len(running) < jobs:
            spec, cmd = queue.pop(0)
            log = (runs_dir / f"{spec.name}.log").open("a")
            started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
            print(f"start {spec.name}: {shlex.join(cmd)}", flush=True)
            running.append((spec, cmd, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, started))
        time.sleep(1.0)
        for item in list(running):
            spec, cmd, proc, log, started = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            failed += proc.returncode != 0
            print(f"done  {spec.name}: exit code {proc.returncode}", flush=True)
            record({"run": spec.name, "command": shlex.join(cmd), "started": started, "returncode": proc.returncode,
                    "ended": datetime.datetime.now().astimezone().isoformat(timespec="seconds")})
    return failed


# --- reading the runs -------------------------------------------------------------------------
def _float(cell: Any) -> float:
    try:
        return float(cell)
    except (TypeError, ValueError):
        return math.nan


def read_run(run_dir: Path, steps: int) -> dict[str, Any]:
    """What the report needs from one run folder (any state: missing, in progress, finished).

    ``evals``: every evaluation (step, mean, std over its episodes); ``eval_at_steps``: the
    evaluation at ``steps`` (within 2%), None if the run has not got there; ``train_return``: mean
    training-episode return over the episodes that ended in the last 10% of the steps up to
    ``steps`` (the harness's rule, weighted by episodes); ``last_step``: the newest logged step.
    """
    from drl.logging import read_metrics

    csv_path = run_dir / "metrics.csv"
    summary = _read_json(run_dir / "summary.json")
    out: dict[str, Any] = {"run_dir": run_dir.name, "exists": run_dir.is_dir(), "summary": summary, "evals": [],
                           "last_step": 0, "eval_at_steps": None, "train_return": None, "train_sps": None}
    rows = read_metrics(csv_path) if csv_path.is_file() else []
    curve: dict[str, list] = {"step": [], "return": [], "episodes": []}
    for row in rows:
        step = int(row["global_step"])
        out["last_step"] = step
        value = _float(row.get("eval_return"))
        if finite(value):
            out["evals"].append({"step": step, "eval_return": value, "eval_return_std": _float(row.get(
                "eval_return_std"))})
        if step <= steps:
            curve["step"].append(step)
            curve["return"].append(_float(row.get("iter_episode_return") or row.get("episode_return")))
            curve["episodes"].append(int(_float(row.get("episodes"))) if finite(_float(row.get("episodes"))) else 0)
    at = [e for e in out["evals"] if abs(e["step"] - steps) <= STEP_TOLERANCE * steps]
    out["eval_at_steps"] = min(at, key=lambda e: abs(e["step"] - steps)) if at else None
    if curve["step"] and curve["step"][-1] >= steps * (1 - STEP_TOLERANCE):
        value = final_train_return(curve)
        out["train_return"] = value if finite(value) else None
    if summary is not None:
        out["train_sps"] = summary.get("train_sps")
    return out


def stats(values: list[float]) -> dict[str, Any]:
    """n, mean, std (population, as the harness), min, max of the finite values."""
    vals = [v for v in values if finite(v)]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None}
    return {"n": len(vals), "mean": statistics.fmean(vals), "std": statistics.pstdev(vals), "min": min(vals),
            "max": max(vals)}


def verdict(mean: float | None, ref: Reference) -> str:
    """drl's mean against the reference band: within / below / above (or why not judged)."""
    if mean is None:
        return "not judged: no seed has reached this step count"
    if ref.low is None or ref.high is None:
        return "not judged: the reference has no band"
    if mean < ref.low:
        return "below the reference band"
    if mean > ref.high:
        return "above the reference band"
    return "within the reference band"


def summarise(specs: list[RunSpec], steps: int, references: list[Reference] | None = None) -> dict[str, Any]:
    """Per run and per (agent, env): values at ``steps``, mean ± std, references and verdicts."""
    references = REFERENCES if references is None else references
    runs = []
    for spec in specs:
        r = read_run(spec.run_dir, steps)
        summary = r["summary"] or {}
        if r["eval_at_steps"] is not None:
            status = "finished" if int(summary.get("steps") or 0) >= steps or r["last_step"] >= steps else "at steps"
        elif not r["exists"] or not (spec.run_dir / "metrics.csv").is_file():
            status = "missing"
        elif int(summary.get("steps") or 0) >= steps or r["last_step"] >= steps:
            status = "no evaluation at steps"  # its eval_interval does not hit --steps
        else:
            status = "unfinished"
        runs.append({"agent": spec.agent, "env": spec.env, "seed": spec.seed, "status": status, **r})
    groups = []
    for agent in dict.fromkeys(s.agent for s in specs):
        for env in dict.fromkeys(s.env for s in specs):
            rs = [r for r in runs if r["agent"] == agent and r["env"] == env]
            if not rs:
                continue
            evals = [r["eval_at_steps"]["eval_return"] for r in rs if r["eval_at_steps"] is not None]
            trains = [r["train_return"] for r in rs if r["eval_at_steps"] is not None and r["train_return"] is not None]
            ev, tr = stats(evals), stats(trains)
            refs = []
            for ref in (x for x in references if x.agent == agent and x.env == env):
                mine = (ev if ref.metric == "eval" else tr)["mean"]
                judged = ref.steps == steps
                refs.append({**ref.__dict__, "drl_mean": mine if judged else None,
                             "verdict": verdict(mine, ref) if judged else
                             f"context only: a {ref.steps:,}-step figure, not compared at {steps:,}"})
            groups.append({"agent": agent, "env": env, "seeds": [r["seed"] for r in rs],
                           "seeds_at_steps": [r["seed"] for r in rs if r["eval_at_steps"] is not None],
                           "eval": ev, "train": tr, "references": refs})
    return {"runs": runs, "groups": groups}


# --- report and plot --------------------------------------------------------------------------
def _n(x: Any, digits: int = 0) -> str:
    return f"{x:,.{digits}f}" if finite(x) else "-"


def _ms(s: dict[str, Any]) -> str:
    return f"{_n(s['mean'])} ± {_n(s['std'])}" if s["n"] else "-"


def _short(ref: dict[str, Any]) -> str:
    """``CleanRL docs plot, train`` : the source's name, its kind and metric."""
    return f"{ref['source'].split(',')[0].split(' (')[0]} {ref['kind']}, {ref['metric']}"


def _metric(m: str) -> str:
    return "evaluation return" if m == "eval" else "training-episode return"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, groups, runs = results["meta"], results["groups"], results["runs"]
    steps = meta["steps"]
    m, v = meta["machine"], meta["versions"]
    missing = [r for r in runs if r["status"] in ("missing", "unfinished")]
    lines = [f"# SAC and TD3 on MuJoCo at {steps:,} env steps vs published figures", "",
             f"Generated {meta['date']} by `{meta['command']}` from the run folders in `{meta['runs_dir_name']}` "
             "(every number below comes from this run's `results.json`).", ""]
    if missing:
        lines += [f"**Partial: {len(missing)} of {len(runs)} runs have not reached {steps:,} steps** "
                  "(see Runs); the means below are over the seeds that have.", ""]
    lines += [f"Runs: `drl train AGENT --config configs/AGENT/ENV.yaml --steps {steps} --seed S --set "
              f"checkpoint_interval={CHECKPOINT_INTERVAL}` (rl-baselines3-zoo hyperparameters, one env, CPU), "
              f"seeds {meta['seeds']}. *Eval*: drl's evaluation at {steps:,} steps (10 deterministic episodes, the "
              f"configs' `eval_interval` 50k). *Train*: mean return of the training episodes that ended in the last "
              f"10% of the steps up to {steps:,}. Cells: mean ± std (population) over seeds. A verdict compares "
              "drl's mean of the reference's metric with the reference's band at the same step count; figures "
              "at other step counts are context only. Machine (report time): "
              f"{m['cpu']}, torch {v.get('torch')}, gymnasium {v.get('gymnasium')}, mujoco {v.get('mujoco')}.", "",
              "| agent | env | seeds at steps | drl eval | drl train | per seed (eval) | where drl lands |",
              "|---|---|---|---|---|---|---|"]
    for g in groups:
        per_seed = ", ".join(
            f"s{r['seed']}: {_n(r['eval_at_steps']['eval_return'])}" if r["eval_at_steps"] else f"s{r['seed']}: -"
            for r in runs if r["agent"] == g["agent"] and r["env"] == g["env"])
        lands = "; ".join(f"{_short(ref)}: {ref['verdict'].replace(' the reference band', '')}"
                          for ref in g["references"] if ref["steps"] == steps) or "no reference at this step count"
        lines.append(f"| {g['agent'].upper()} | {g['env']} | {len(g['seeds_at_steps'])}/{len(g['seeds'])} | "
                     f"{_ms(g['eval'])} | {_ms(g['train'])} | {per_seed} | {lands} |")
    lines += ["", "## Against the published figures", ""]
    for g in groups:
        lines += [f"### {g['agent'].upper()} on {g['env']}", "",
                  "| steps | reference | band | metric | env | kind | drl (same metric) | verdict | source |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for ref in g["references"]:
            kind = "table value" if ref["kind"] == "table" else "read off a plot (approximate)"
            lines.append(f"| {_n(ref['steps'])} | {'~' if ref['kind'] == 'plot' else ''}{_n(ref['value'])} | "
                         f"{_n(ref['low'])} .. {_n(ref['high'])} | {_metric(ref['metric'])} | {ref['env_version']} "
                         f"| {kind} | {_n(ref['drl_mean'])} | {ref['verdict']} | [{ref['source']}]({ref['url']})"
                         + (f"; {ref['note']}" if ref["note"] else "") + " |")
        if not g["references"]:
            lines.append("| - | no published figure found | | | | | | | |")
        lines.append("")
    lines += ["No table in the sources found states SAC or TD3 at 300k steps with the rl-zoo or CleanRL "
              "hyperparameters; the TD7 paper (Fujimoto et al. 2023, Table 1) has TD3 and SAC at 300k on gym "
              "v4 but its values were not available to this report. Gym v2/v3/v4 and gymnasium v5 are the same "
              "tasks with different MuJoCo bindings and fixes; numbers across versions are comparable in scale, "
              "not exactly.", "", f"![eval return vs env steps]({PLOT})", "", "## Runs", "",
              "| run | status | last step | evaluations (step: return) | train steps/s |", "|---|---|---|---|---|"]
    for r in runs:
        evals = ", ".join(f"{e['step'] // 1000}k: {_n(e['eval_return'])}" for e in r["evals"]) or "-"
        lines.append(f"| {r['agent']}-{r['env']}-s{r['seed']} | {r['status']} | {_n(r['last_step'])} | {evals} | "
                     f"{_n(r['train_sps'])} |")
    lines += ["", "Status: *finished* (summary at or past the step count), *at steps* (evaluated at the step count, "
              "the run still going), *no evaluation at steps* (past the step count, but its `eval_interval` skipped "
              "it), *unfinished* (not there yet: resume with `python -m benchmarks.offpolicy_quality "
              "run`), *missing* (no run folder or no metrics yet)."]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_plot(results: dict[str, Any], out: Path, runs_dir: Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    groups, steps = results["groups"], results["meta"]["steps"]
    cols = min(2, max(1, len(groups)))
    rows = max(1, math.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax, g in zip(axes.flat, groups, strict=False):
        runs = [r for r in results["runs"] if r["agent"] == g["agent"] and r["env"] == g["env"] and r["evals"]]
        by_step: dict[int, list[float]] = {}
        for r in runs:
            xs = [e["step"] for e in r["evals"]]
            ax.plot(xs, [e["eval_return"] for e in r["evals"]], color="C0", linewidth=0.8, alpha=0.5, marker=".")
            for e in r["evals"]:
                by_step.setdefault(e["step"], []).append(e["eval_return"])
        if by_step:
            xs = sorted(by_step)
            ax.plot(xs, [statistics.fmean(by_step[x]) for x in xs], color="C0", linewidth=2.5, marker="o",
                    label=f"drl, mean of {len(runs)} seed{'s' if len(runs) != 1 else ''} (thin: seeds)")
        for i, ref in enumerate(r for r in g["references"] if r["steps"] == steps):
            x = steps * (1.0 + 0.012 * (i + 1))
            yerr = [[ref["value"] - ref["low"]], [ref["high"] - ref["value"]]] if ref["low"] is not None else None
            label = f"{'~' if ref['kind'] == 'plot' else ''}{ref['value']:,.0f}: {_short(ref)}, {ref['env_version']}"
            ax.errorbar([x], [ref["value"]], yerr=yerr, fmt="o" if ref["kind"] == "table" else "s", color=f"C{i + 1}",
                        capsize=3, label=label)
        ax.axvline(steps, color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, steps * 1.08)  # the whole budget, also while the runs are young
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x / 1000:g}k"))
        ax.set_title(f"{g['agent'].upper()} on {g['env']}", fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("evaluation return (10 deterministic episodes)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    path = out / PLOT
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _portable(argv: list[str]) -> list[str]:
    """``argv`` with absolute paths cut to their last component (no machine paths in a committed report)."""
    return [Path(a).name if Path(a).is_absolute() else a for a in argv]


def report(specs: list[RunSpec], steps: int, runs_dir: Path, out: Path, argv: list[str]) -> dict[str, Any]:
    from benchmarks.run import save_json

    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"meta": {
        "command": "python -m benchmarks.offpolicy_quality " + shlex.join(_portable(argv)),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_info(), "versions": versions(), "load": load_average(), "steps": steps,
        "runs_dir_name": runs_dir.name, "agents": list(dict.fromkeys(s.agent for s in specs)),
        "envs": list(dict.fromkeys(s.env for s in specs)), "seeds": list(dict.fromkeys(s.seed for s in specs))},
        **summarise(specs, steps)}
    for r in results["runs"]:  # keep what the report needs, not the whole summary
        summary = r.pop("summary") or {}
        r["summary"] = {k: summary.get(k) for k in ("steps", "total_steps", "wall_s", "train_sps", "interrupted",
                                                       "final_eval_return", "git_commit", "torch_version")}
    save_json(results, out)
    write_report(results, out)
    write_plot(results, out)
    return results


# --- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.offpolicy_quality", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    for name in ("run", "report"):
        p = sub.add_parser(name)
        p.add_argument("--agents", nargs="+", default=AGENTS, choices=AGENTS)
        p.add_argument("--envs", nargs="+", default=ENVS)
        p.add_argument("--seeds", nargs="+", type=int, default=SEEDS)
        p.add_argument("--steps", type=int, default=STEPS)
        if name == "run":
            p.add_argument("--out", type=Path, default=Path("runs/offpolicy_quality"), help="folder of the run folders")
            p.add_argument("--jobs", type=int, default=1, help="runs at once (each takes one CPU core)")
            p.add_argument("--nice", type=int, default=None, help="run each under `nice -n NICE`")
            p.add_argument("--dry-run", action="store_true", help="print each run's status and command, then exit")
        else:
            p.add_argument("--runs", type=Path, default=Path("runs/offpolicy_quality"),
                           help="folder of the run folders")
            p.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.steps < 1 or (args.cmd == "run" and args.jobs < 1):
        parser.error("--steps and --jobs must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    runs_dir = args.out if args.cmd == "run" else args.runs
    specs = grid(args.agents, args.envs, args.seeds, runs_dir)
    if args.cmd == "run":
        if args.dry_run:
            for spec, entry in zip(specs, plan(specs, args.steps, args.nice), strict=True):
                print(f"{spec.name:<28} {entry['status']:<9} "
                      + (shlex.join(entry["command"]) if entry["command"] else "(nothing to do)"))
            return 0
        return 1 if execute(specs, args.steps, runs_dir, args.jobs, args.nice) else 0
    results = report(specs, args.steps, runs_dir, args.out, argv)
    print((args.out / "report.md").read_text())
    return 0 if results["runs"] else 1


if __name__ == "__main__":
    sys.exit(main())
