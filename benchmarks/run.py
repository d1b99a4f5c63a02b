"""drl vs Stable-Baselines3 (and rsl_rl on torch-batched envs), side by side on this machine, in one run.

    python -m benchmarks.run --suite quick|full|tiny|offpolicy|rslrl|rslrl-tiny [--device cpu|cuda|auto]
                             [--out DIR] [--seeds N] [--steps N]
                             [--only NAME ...] [--keep-runs] [--dry-run] [--floor [N]]

Runs every row of the suite (see ``benchmarks/harness/suites.py`` and ``benchmarks/README.md``),
interleaving the sides seed by seed (drl seed 0, SB3 seed 0, drl seed 1, SB3 seed 1, ...), and
writes ``results.json``, ``report.md`` and three PNG plots to ``--out`` (default
``benchmarks/results/<suite>/``). Every number in the report comes from this run.

``--device`` picks where the torch-batched env rows (drl/CartPole-v0) run besides the CPU: ``cpu``
(CPU only), ``cuda`` (CPU and CUDA; an error without CUDA) or ``auto`` (CUDA too when available).
The gymnasium rows (MuJoCo, CartPole-v1, Pendulum-v1) always run on the CPU, for both libraries.

The SAC/TD3 rows (``sac-halfcheetah``, ``td3-halfcheetah``, ``sac-pendulum``, ``td3-pendulum``) run
SB3's default hyperparameters on both sides, one env; they are skipped while ``drl.registry.AGENTS``
has no such agent. ``--floor [N]`` adds the floor of the SAC update to the report: the time of N
updates (default 500) in a tight loop, drl's and plain eager torch's, from
``benchmarks.sac_floor.measure`` (measured after the timed runs, in the same process).

The ``rslrl`` suite (``rslrl-tiny``: its smoke test) compares drl with rsl_rl (``rsl-rl-lib``, Isaac Lab's PPO)
on drl's torch-batched envs with the same PPO hyperparameters; see ``benchmarks/harness/rslrl_side.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from benchmarks.harness.analysis import compare
from benchmarks.harness.machine import load_average, machine_info, versions
from benchmarks.harness.report import write_plots, write_report
from benchmarks.harness.suites import SUITES, Row, Suite, Variant

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FLOOR_UPDATES = 500  # --floor without a number

TIMING = (
    "Both libraries run in this one process, one run at a time, with `torch.set_num_threads(1)` (drl: "
    "`torch_threads: 1` in its config; SB3: set before building the model), on the CPU unless the row says "
    "cuda. The clock starts just before training's first `env.reset` and stops after the last update. "
    "*Excluded on both sides*: building the envs and the model, a replay buffer's allocation included (drl: "
    "the runner's constructor; SB3: `make_vec_env` + `PPO(...)` / `SAC(...)` / `TD3(...)`), every evaluation "
    "(drl: its logged `eval_s`; SB3: evaluations run in the callback are timed and subtracted), the harness's "
    "bookkeeping in the SB3 callback, and the final deterministic evaluation. *Included on both sides*: each "
    "library's own per-update logging (drl: `metrics.csv` + TensorBoard; SB3: its logger) and episode "
    "statistics (drl: its tracker; SB3: `Monitor`). "
    "(drl creates its logger just before its clock starts; SB3 configures its logger inside `learn()`, "
    "inside the clock: milliseconds either way.) "
    "drl checkpoints are written only after the clock stops (`checkpoint_interval: 0`; the SAC/TD3 rows also "
    "`save_replay: false`). Both sides use single-process vector envs (drl: its adapter's in-process loop over "
    "gymnasium envs; SB3: `DummyVecEnv`). The SAC/TD3 rows record a row every 1,000 env steps (100 in the tiny "
    "suite) on both sides (drl: `algo.num_steps`; SB3: the harness's callback at the same steps). "
    "Before the first timed run, both libraries do one short untimed warm-up run (CartPole PPO; with SAC/TD3 "
    "rows planned, also 200 steps of each planned off-policy agent on Pendulum-v1), so neither pays one-off "
    "initialisation costs inside a timed run. *drl's JIT work is inside its clock*: `torch.compile` of "
    "its update step (`compile: auto` turns it on for runs of at least 50,000 optimiser steps, e.g. the 500k-step "
    "MuJoCo rows, not the 32k-step quick rows) and the first compile of its numba actor kernel. Both are cached "
    "on disk by torch and numba, so the first run of a new network shape pays a cold compile (about 10 s on one "
    "core) and later runs about 2 s; the warm-up does not compile the benchmark's shapes."
)

# Rough env steps/s per (env id, num_envs) on 2 CPU cores, for the up-front estimate only: used when no
# earlier results.json under benchmarks/results/ measured that (agent, lib, env, num_envs, device).
ROUGH_SPS = {"HalfCheetah-v5": {1: 2000, 8: 3500}, "Hopper-v5": {1: 2000, 8: 3500}, "CartPole-v1": {8: 2500},
             "Pendulum-v1": {8: 4000}, "drl/CartPole-v0": {256: 40_000},
             # the batched rows (drl and rsl_rl; x3 on CUDA)
             "drl/Pendulum-v0": {64: 20_000, 1024: 80_000, 4096: 80_000, 65_536: 300_000},
             "drl/HalfCheetah-v0": {1024: 7_000, 4096: 7_000}}  # MuJoCo Warp on the CPU
# Rough SB3 env steps/s of the SAC/TD3 rows with one env (SAC on HalfCheetah-v5: about 11.4 ms per step here).
OFFPOLICY_ROUGH_SPS = {"HalfCheetah-v5": 90, "Pendulum-v1": 150}
MUJOCO = {"HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto",
                        help="devices for the torch-batched env rows (CPU always; cuda: also CUDA)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default benchmarks/results/<suite>/)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per row (default: the suite's)")
    parser.add_argument("--only", nargs="+", metavar="NAME", default=None, help="run only these rows")
    parser.add_argument("--steps", type=int, default=None, metavar="N",
                        help="env steps per run in every row, instead of the suite's (short probes: the numbers are "
                             "not the suite's, and drl's compile: auto may then stay off)")
    parser.add_argument("--keep-runs", action="store_true", help="keep drl's run folders under OUT/runs/")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the time estimate, then exit")
    parser.add_argument("--floor", type=int, nargs="?", const=FLOOR_UPDATES, default=None, metavar="N",
                        help=f"also measure the SAC update's floor over N tight-loop updates (default {FLOOR_UPDATES})")
    args = parser.parse_args(argv)
    if args.seeds is not None and args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be >= 1 env steps, got {args.steps}")
    if args.floor is not None and args.floor < 1:
        parser.error(f"--floor must be >= 1 updates, got {args.floor}")
    names = [r.name for r in SUITES[args.suite].rows]
    for name in args.only or []:
        if name not in names:
            parser.error(f"--only: unknown row '{name}' in suite '{args.suite}'; valid rows: {names}")
    return args


# --- plan -----------------------------------------------------------------------------------
def no_agent(agent: str) -> str:
    """The status of an off-policy row whose agent drl does not have (yet)."""
    return f"skipped: drl has no '{agent}' agent (drl.registry.AGENTS)"


def _env_problem(env_id: str) -> str | None:
    """Why a gymnasium env cannot be built here (a missing dependency, said clearly), or None."""
    if env_id.startswith("drl/"):
        return None
    try:
        gym.make(env_id).close()
    except (gym.error.DependencyNotInstalled, ImportError) as err:
        what = "MuJoCo" if "mujoco" in str(gym.spec(env_id).entry_point).lower() else "a dependency"
        return (f"skipped: env '{env_id}' needs {what}, which is not installed here "
                f"(pip install 'drl[mujoco]' or 'gymnasium[mujoco]'): {err}")
    return None


def _variant_status(variant: Variant, device_arg: str) -> str:
    if not variant.device.startswith("cuda"):
        return "ok"
    if device_arg == "cpu":
        return "skipped: --device cpu"
    if not torch.cuda.is_available():
        return "skipped: no CUDA device on this machine"
    return "ok"


def plan(suite: Suite, args: argparse.Namespace) -> tuple[list[dict], list[tuple[Row, Variant, int]], list[str]]:
    """Row records (with statuses), the ordered list of runs, and notes for the report."""
    from drl.registry import AGENTS

    rows, runs, notes = [], [], []
    for row in suite.rows:
        if args.only and row.name not in args.only:
            continue
        if args.steps is not None:
            row = dataclasses.replace(row, total_steps=args.steps, log_every=min(row.log_every, args.steps))
        seeds = args.seeds or row.seeds
        status = "ok"
        if row.kind == "offpolicy" and row.agent not in AGENTS:
            status = no_agent(row.agent)
        else:
            for env_id in dict.fromkeys(v.env_id for v in row.variants):
                problem = _env_problem(env_id)
                if problem:
                    status = problem
                    notes.append(f"{row.title}: {problem}")
                    break
        variants = [{"label": v.label, "lib": v.lib, "env_id": v.env_id, "device": v.device,
                     "status": _variant_status(v, args.device)} for v in row.variants]
        rows.append({"name": row.name, "title": row.title, "kind": row.kind, "env_id": row.env_id,
                     "agent": row.agent, "hparams": row.hparams, "seeds": seeds, "eval_interval": row.eval_interval,
                     "target_ratio": row.target_ratio, "status": status, "variants": variants})
        if status != "ok":
            continue
        for seed in range(seeds):
            for v, rec in zip(row.variants, variants, strict=True):
                if rec["status"] == "ok":
                    runs.append((row, v, seed))
    return rows, runs, notes


def _measured_rates() -> dict[tuple, float]:
    """Median steps/s per (agent, lib, env, num_envs, device) from earlier results.json files, for the estimate."""
    rates: dict[tuple, list[float]] = {}
    for path in RESULTS_DIR.glob("*/results.json"):
        try:
            data = json.loads(path.read_text())
            if data.get("suite") == "tiny":
                continue
            agents = {row["name"]: row.get("agent", "ppo") for row in data.get("rows", [])}
            for r in data.get("runs", []):
                if r.get("sps"):
                    key = (agents.get(r["row"], "ppo"), r["lib"], r["env_id"], r["num_envs"], r["device"])
                    rates.setdefault(key, []).append(r["sps"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return {k: sorted(v)[len(v) // 2] for k, v in rates.items()}


def estimate_seconds(runs: list[tuple[Row, Variant, int]], eval_episodes: int) -> tuple[float, str]:
    """Expected wall-clock of the planned runs (training + evaluations + construction)."""
    from benchmarks.harness.sides import EVAL_ENV_OF, drl_config

    measured = _measured_rates()
    used_measured = False
    total = 10.0  # imports and warm-up
    for row, variant, seed in runs:
        if row.kind == "offpolicy":  # SB3's defaults, one env: no drl config needed for the estimate
            total_steps, num_envs, eval_interval, eval_episodes_during = row.total_steps, row.num_envs or 1, 0, 0
        else:
            cfg = drl_config(row, variant, seed)
            total_steps, num_envs = cfg.total_steps, cfg.env.num_envs
            eval_interval, eval_episodes_during = cfg.eval_interval, cfg.eval_episodes
        key = (row.agent, variant.lib, variant.env_id, num_envs, variant.device)
        similar = [v for k, v in measured.items() if k[:2] == key[:2] and k[3:] == key[3:] and k[2] in MUJOCO
                   and key[2] in MUJOCO]  # another CPU MuJoCo env with the same agent, lib, num_envs and device
        if key in measured or similar:
            sps, used_measured = measured.get(key) or min(similar), True
        elif row.kind == "offpolicy":
            sps = OFFPOLICY_ROUGH_SPS.get(variant.env_id, 100)
        else:
            table = ROUGH_SPS.get(variant.env_id, {})
            sps = table.get(num_envs) or (800 if num_envs == 1 else 2000)
            if variant.device.startswith("cuda"):
                sps *= 3
        episode = gym.spec(EVAL_ENV_OF.get(variant.env_id, variant.env_id)).max_episode_steps or 1000
        evals = (total_steps // eval_interval) if eval_interval else 0
        eval_steps = eval_episodes * episode  # the final evaluation
        if evals and not variant.env_id.startswith("drl/"):  # evaluations during training (~half-length episodes)
            eval_steps += evals * eval_episodes_during * episode / 2
        total += total_steps / sps + eval_steps / 2500 + 4.0
    source = "steps/s measured by earlier benchmark runs where available, else rough built-in rates" \
        if used_measured else "rough built-in rates for a 2-core CPU (no earlier results to calibrate on)"
    return total, source


# --- execution ------------------------------------------------------------------------------
def warm_up(work_dir: Path, offpolicy_agents: tuple[str, ...] = (), libs: tuple[str, ...] = ("drl", "sb3"),
            batched_devices: tuple[str, ...] = ("cpu",)) -> None:
    """One tiny untimed run per library (CartPole PPO, and 200 steps on Pendulum-v1 of each off-policy
    agent in ``offpolicy_agents``), so one-off initialisation is paid outside the timed runs. With
    ``"rslrl"`` in ``libs``: also the ``rslrl-tiny`` suite's row once per side (drl and rsl_rl, untimed) on
    each of ``batched_devices``; without ``"sb3"`` there: no SB3 run."""
    if "rslrl" in libs:
        from benchmarks.harness.rslrl_side import run_drl_batched, run_rslrl

        row = SUITES["rslrl-tiny"].rows[0]
        for device in batched_devices:
            drl, rslrl = (dataclasses.replace(v, device=device) for v in row.variants)
            run_drl_batched(row, drl, 0, work_dir / f"warmup-batched-{device}", 1)
            run_rslrl(row, rslrl, 0, work_dir / f"warmup-batched-{device}", 1)
    if "sb3" not in libs:
        return
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from benchmarks.harness.sides import run_drl, run_sb3
    from benchmarks.harness.suites import warm_up_row
    from drl.api import load_config, train

    cfg = load_config("ppo", "CartPole-v1", overrides={
        "total_steps": 64, "device": "cpu", "torch_threads": 1, "progress": False, "checkpoint_interval": 0,
        "eval_episodes": 1, "env": {"num_envs": 2, "num_eval_envs": 1},
        "algo": {"num_steps": 32, "minibatch_size": 32, "num_epochs": 1}})
    train(cfg, work_dir / "warmup")
    torch.set_num_threads(1)
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    PPO("MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=1, device="cpu", seed=0).learn(64)
    venv.close()
    for agent in offpolicy_agents:
        row = warm_up_row(agent)
        run_drl(row, row.variants[0], 0, work_dir / "warmup-offpolicy", 1)
        run_sb3(row, row.variants[1], 0, 1)


def measure_floor(num_updates: int) -> dict[str, Any]:
    """The SAC update's floor: ``benchmarks.sac_floor.measure(num_updates)`` (ms per update, e.g. for
    ``"drl"`` and ``"eager_torch"``), with one torch thread; a status saying why when it cannot run."""
    try:
        from benchmarks.sac_floor import measure
    except ImportError as err:
        return {"status": f"floor not measured: benchmarks.sac_floor is not importable ({type(err).__name__}: {err})"}
    torch.set_num_threads(1)
    try:
        ms = measure(num_updates)
    except Exception as err:  # noqa: BLE001  (the runs' results must still be written)
        traceback.print_exc()
        return {"status": f"floor not measured: benchmarks.sac_floor.measure({num_updates}) failed: "
                          f"{type(err).__name__}: {err}"}
    return {"status": "ok", "num_updates": num_updates, "ms_per_update": {str(k): float(v) for k, v in ms.items()}}


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf -> null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def save_json(results: dict[str, Any], out: Path) -> Path:
    path = out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(results), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


def _fmt_s(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_one(row: Row, variant: Variant, seed: int, work_dir: Path, eval_episodes: int) -> dict[str, Any]:
    from benchmarks.harness.sides import run_drl, run_sb3

    try:
        if row.kind == "batched":  # drl vs rsl_rl on a torch-batched env
            from benchmarks.harness.rslrl_side import run_drl_batched, run_rslrl

            run = run_rslrl if variant.lib == "rslrl" else run_drl_batched
            return run(row, variant, seed, work_dir, eval_episodes)
        if variant.lib == "drl":
            return run_drl(row, variant, seed, work_dir, eval_episodes)
        return run_sb3(row, variant, seed, eval_episodes)
    except Exception as err:  # noqa: BLE001  (one failed run must not lose the others)
        traceback.print_exc()
        return {"row": row.name, "variant": variant.label, "lib": variant.lib, "env_id": variant.env_id,
                "device": variant.device, "seed": seed, "error": f"{type(err).__name__}: {err}"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    suite = SUITES[args.suite]
    libs = {v.lib for row in suite.rows if not args.only or row.name in args.only for v in row.variants}
    for lib, module, package in (("sb3", "stable_baselines3", "stable-baselines3"), ("rslrl", "rsl_rl", "rsl-rl-lib")):
        try:
            if lib in libs:
                __import__(f"{module}.runners" if lib == "rslrl" else module)
        except ImportError as err:
            print(f"error: the suite's rows need {package} ({err}): pip install 'drl[bench]'", file=sys.stderr)
            return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was requested but CUDA is not available; use --device cpu or auto",
              file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    out = args.out or RESULTS_DIR / suite.name
    out.mkdir(parents=True, exist_ok=True)

    rows, runs, notes = plan(suite, args)
    estimate, source = estimate_seconds(runs, suite.final_eval_episodes)
    print(f"benchmark suite '{suite.name}': {suite.description}")
    for row in rows:
        print(f"  {row['name']:<22} {row['title']:<52} seeds={row['seeds']}  {row['status']}")
        for v in row["variants"]:
            if v["status"] != "ok" and row["status"] == "ok":
                print(f"  {'':<22}   {v['label']}: {v['status']}")
    print(f"{len(runs)} training runs; estimated time ~{_fmt_s(estimate)} ({source})", flush=True)
    if args.dry_run:
        return 0

    started = time.perf_counter()
    results: dict[str, Any] = {
        "suite": suite.name,
        "meta": {"command": "python -m benchmarks.run " + shlex.join(argv), "date":
                 datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                 "suite_description": suite.description, "machine": machine_info(), "versions": versions(),
                 "torch_threads": torch.get_num_threads(), "device_arg": args.device,
                 "final_eval_episodes": suite.final_eval_episodes, "timing": TIMING, "estimate_s": estimate,
                 "estimate_source": source, "load_start": load_average(), "notes": notes},
        "rows": rows, "runs": [], "comparisons": {},
    }
    with tempfile.TemporaryDirectory(prefix="drl-bench-") as tmp:
        work_dir = out / "runs" if args.keep_runs else Path(tmp)
        warm_up(Path(tmp), tuple(dict.fromkeys(r.agent for r, _, _ in runs if r.kind == "offpolicy")),
                tuple(dict.fromkeys(v.lib for _, v, _ in runs)),
                tuple(dict.fromkeys(v.device for r, v, _ in runs if r.kind == "batched")))
        for i, (row, variant, seed) in enumerate(runs, 1):
            run = run_one(row, variant, seed, work_dir, suite.final_eval_episodes)
            results["runs"].append(run)
            save_json(results, out)
            elapsed = time.perf_counter() - started
            what = f"[{i}/{len(runs)}] {row.name} seed {seed} {variant.label}"
            if "error" in run:
                print(f"{what}: FAILED: {run['error']}", flush=True)
            else:
                solve = f", solved at {run['solve']['train_s']:.2f} s" if run.get("solve") else ""
                print(f"{what}: {run['steps']:,} steps in {run['train_s']:.1f} s = {run['sps']:,.0f} steps/s, "
                      f"final eval {run['final_eval']['mean']:.1f}{solve}  (elapsed {_fmt_s(elapsed)})", flush=True)
        if args.floor is not None:
            print(f"measuring the SAC update's floor over {args.floor} updates ...", flush=True)
            results["floor"] = measure_floor(args.floor)
        else:
            results["floor"] = {"status": "floor not measured (run with --floor)"}
        print(f"floor: {results['floor']}", flush=True)
    results["meta"]["elapsed_s"] = time.perf_counter() - started
    results["meta"]["load_end"] = load_average()
    results["comparisons"] = compare(rows, results["runs"], results["floor"])
    save_json(results, out)
    write_plots(results, out)
    report = write_report(results, out).read_text()
    start, end = report.find("## 1."), report.find("## Plots")
    print("\n" + report[start:end].rstrip())
    print(f"\nwrote {out / 'results.json'}, {out / 'report.md'} and plots to {out}/ in "
          f"{_fmt_s(results['meta']['elapsed_s'])} (estimated {_fmt_s(estimate)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
