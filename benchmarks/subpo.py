"""SubPO vs modular RL vs the greedy reference on the coverage tasks, plus the submodular wrapper's steps/s.

    python -m benchmarks.subpo [--seeds 3] [--only grid-coverage grid-logdet pointmass] [--steps N]
                               [--episodes 64] [--throughput-envs 4096] [--device cpu|cuda|auto]
                               [--out benchmarks/results/subpo] [--dry-run]

Tasks (``--only`` names), each a pair of configs that differ only in the ``submodular`` wrapper's
``modular`` switch (the same F made additive, repeats counted: the paper's modular-RL baseline), so both
runs of a task have the same budget, envs, policy and optimiser:

* ``grid-coverage``: ``configs/subpo/drl-CoverageGrid-v0[-modular].yaml`` (30x30, horizon 40, GP-weighted
  coverage, REINFORCE);
* ``grid-logdet``: ``configs/subpo/drl-CoverageGrid-v0-logdet[modular].yaml`` (GP entropy, REINFORCE);
* ``pointmass``: ``configs/subpo/drl-CoveragePointMass-v0[-modular].yaml`` (100x100 coverage grid over
  [-20, 20]^2, horizon 100, GAE).

Score: ``F(trajectory)``, the objective's value of a whole episode, the mean over ``--episodes`` episodes of
the trained stochastic policy (the objective ``E[F]``), and of its deterministic policy; the learning curve
is the ``submodular/episode_value`` column of each run (F of the training episodes). Greedy reference:
:func:`drl.wrappers.submodular.greedy_rollout` with the task's F and known dynamics (one-step greedy over
the task's candidate actions), the same number of episodes. A claim "SubPO > modular" counts only beyond
twice the standard error of the difference over seeds. Throughput: env steps/s of the task env alone and
inside the ``submodular`` (+ ``coverage_obs``) wrappers at ``--throughput-envs`` envs, random actions.
Writes ``results.json``, ``report.md`` and ``curves.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, seed_band, study_header
from benchmarks.harness.report import number as _n
from benchmarks.masked_velocity import _verdict

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "subpo"
PLOT = "curves.png"
VALUE = "submodular/episode_value"


@dataclass(frozen=True)
class Task:
    name: str
    label: str
    subpo: str  # config file names in configs/subpo
    modular: str


TASKS = [
    Task("grid-coverage", "30x30 grid, GP-weighted coverage", "drl-CoverageGrid-v0.yaml",
         "drl-CoverageGrid-v0-modular.yaml"),
    Task("grid-logdet", "30x30 grid, GP entropy (log-det)", "drl-CoverageGrid-v0-logdet.yaml",
         "drl-CoverageGrid-v0-logdetmodular.yaml"),
    Task("pointmass", "point mass, coverage of a 100x100 grid", "drl-CoveragePointMass-v0.yaml",
         "drl-CoveragePointMass-v0-modular.yaml"),
]
METHODS = ("subpo", "modular")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.subpo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per task and method (0 .. N-1)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the configs')")
    parser.add_argument("--episodes", type=int, default=64, help="episodes scoring each trained policy")
    parser.add_argument("--throughput-envs", type=int, default=4096, help="envs of the steps/s measurement")
    script.add_only(parser, [t.name for t in TASKS])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "subpo")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "episodes", "throughput_envs"), [t.name for t in TASKS])
    return args


def _config(file: str, overrides: dict[str, Any]) -> Any:
    from drl.api import load_config

    return load_config(config_file=CONFIGS / file, overrides=overrides)


@torch.no_grad()
def policy_values(run_dir: Path, cfg: Any, episodes: int, deterministic: bool, seed: int) -> list[float]:
    """F of one episode in each of ``episodes`` envs (the run's wrappers) under the trained policy."""
    from drl.api import load_agent
    from drl.wrappers import make_run_env

    agent, _ = load_agent(run_dir)
    env = make_run_env(cfg, episodes, torch.device(cfg.device if cfg.device != "auto" else "cpu"))
    obs, _ = env.reset(seed=seed)
    values = torch.full((episodes,), float("nan"))
    while bool(values.isnan().any()):
        action, _ = agent.act(obs, deterministic=deterministic, update_stats=False)
        obs, _, terminated, truncated, info = env.step(action)
        done = (terminated | truncated).cpu() & values.isnan()
        values = torch.where(done, info["submodular_value"].cpu(), values)
    env.close()
    return values.tolist()


def greedy_values(cfg: Any, episodes: int, seed: int) -> list[float]:
    """The greedy reference's F over ``episodes`` envs, with the F of ``cfg``'s ``submodular`` wrapper."""
    from drl.wrappers import wrap_env
    from drl.wrappers.submodular import greedy_rollout
    from envs import make_vec_env

    spec = [dict(w, modular=False) for w in cfg.wrappers if w["name"] == "submodular"]
    env = wrap_env(make_vec_env(cfg.env.id, episodes, torch.device("cpu"), env_kwargs=cfg.env.kwargs), spec)
    return greedy_rollout(env, env.unwrapped.greedy_candidates(), seed=seed).tolist()


def run(task: Task, method: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.config import to_dict

    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device}
    if args.steps is not None:
        overrides |= {"total_steps": args.steps, "eval_interval": args.steps}
    cfg = _config(task.subpo if method == "subpo" else task.modular, overrides)
    run_dir, summary, rows = script.train_run(cfg, work / f"{task.name}-{method}-s{seed}")
    curve = [{"step": int(float(r["global_step"])), "value": float(r[VALUE])} for r in rows if r.get(VALUE)]
    stochastic = policy_values(run_dir, cfg, args.episodes, False, 10_000 + seed)
    deterministic = policy_values(run_dir, cfg, args.episodes, True, 10_000 + seed)
    return {"curve": curve, "final": statistics.fmean(stochastic), "final_det": statistics.fmean(deterministic),
            "steps": summary["steps"], "train_s": summary["wall_s"] - summary["eval_s"],
            "config": {"file": f"configs/subpo/{task.subpo if method == 'subpo' else task.modular}",
                       "total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs, "wrappers": cfg.wrappers,
                       "algo": to_dict(cfg.algo)}}


def throughput(task: Task, num_envs: int, device: str, steps: int = 30) -> dict[str, float]:
    """Env steps/s of the task env alone and wrapped (``submodular`` only; + ``coverage_obs``)."""
    from drl.wrappers import wrap_env
    from envs import make_vec_env

    cfg = _config(task.subpo, {})
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    out = {}
    for name, specs in (("env", []), ("submodular", cfg.wrappers[:1]), ("submodular+coverage_obs", cfg.wrappers)):
        env = wrap_env(make_vec_env(cfg.env.id, num_envs, dev, env_kwargs=cfg.env.kwargs), specs)
        env.reset(seed=0)
        actions = [env.action_space.sample() for _ in range(4)]
        actions = [torch.as_tensor(a, device=dev) for a in actions]
        env.step(actions[0])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(steps):
            env.step(actions[i % 4])
        if dev.type == "cuda":
            torch.cuda.synchronize()
        out[name] = num_envs * steps / (time.perf_counter() - start)
        env.close()
    return out


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], tasks: list[Task]) -> list[dict[str, Any]]:
    out = []
    for task in tasks:
        for method in (*METHODS, "greedy"):
            done = [r for r in runs if r["task"] == task.name and r["method"] == method and "error" not in r]
            finals = [r["final"] for r in done]
            dets = [r["final_det"] for r in done if r.get("final_det") is not None]
            out.append({"task": task.name, "variant": method, "seeds": len(done),
                        "errors": sum(1 for r in runs if r["task"] == task.name and r["method"] == method) - len(done),
                        "final_mean": statistics.fmean(finals) if finals else None,
                        "final_std": statistics.pstdev(finals) if finals else None,
                        "det_mean": statistics.fmean(dets) if dets else None,
                        "train_s_mean": statistics.fmean([r["train_s"] for r in done if "train_s" in r])
                        if any("train_s" in r for r in done) else None})
    return out


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("SubPO: submodular RL on coverage tasks", meta)
    lines += [f"{meta['seeds']} seeds per task and method; SubPO and modular RL run the same config but for the "
              "wrapper's `modular` switch. F = the objective's value of a whole episode: mean over "
              f"{meta['episodes']} episodes of the trained stochastic policy (the objective E[F]), mean +- std over "
              "seeds; 'det.' = the deterministic policy. Greedy = one-step greedy on the marginal gain with known "
              "dynamics (ties at random), seeds as its rollout seeds.", "", "## Claims (issue 17)", ""]
    for task in dict.fromkeys(s["task"] for s in summary):
        by = {s["variant"]: s for s in summary if s["task"] == task}
        sub, greedy = by["subpo"]["final_mean"], by["greedy"]["final_mean"]
        ratio = _n(sub / greedy, 2) if sub is not None and greedy else "-"
        lines.append(f"- {task}: SubPO beats modular RL: {_verdict(by, 'subpo', 'modular')}; SubPO / greedy = {ratio}")
    lines += ["", "| task | method | F (stochastic) | F (det.) | mean training s |", "|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['task']} | {s['variant']} | {_n(s['final_mean'], 1)} +- {_n(s['final_std'], 1)} | "
                     f"{_n(s['det_mean'], 1)} | {_n(s['train_s_mean'], 1)} |")
    lines += ["", f"## Wrapper throughput ({meta['throughput_envs']} envs, {meta['device']}, random actions)", "",
              "| task | env alone steps/s | + submodular | + submodular + coverage_obs |", "|---|---|---|---|"]
    for name, tp in results.get("throughput", {}).items():
        if "error" in tp:
            lines.append(f"| {name} | failed: `{tp['error']}` | | |")
            continue
        lines.append(f"| {name} | {_n(tp['env'])} | {_n(tp['submodular'])} | {_n(tp['submodular+coverage_obs'])} |")
    return close_report(lines, [r for r in results["runs"] if r["method"] != "greedy"], out,
                        ("F of training episodes vs env steps", PLOT), key="task",
                        config_line=lambda r: f"- {r['task']}: `{r['config']['file']}` (and its modular twin), "
                                              f"total_steps {r['config']['total_steps']:,}, num_envs "
                                              f"{r['config']['num_envs']}, wrappers `{r['config']['wrappers']}`",
                        failed_line=lambda r: f"- {r['task']} {r['method']} seed {r['seed']} failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    tasks = list(dict.fromkeys(s["task"] for s in results["summary"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, method in enumerate(METHODS):
            curves = [r["curve"] for r in results["runs"]
                      if r["task"] == task and r["method"] == method and "error" not in r and r["curve"]]
            if not curves:
                continue
            seed_band(ax, curves, "value", f"C{i}", f"{method} ({len(curves)} seeds)")
        greedy = next((s for s in results["summary"] if s["task"] == task and s["variant"] == "greedy"), None)
        if greedy and greedy["final_mean"] is not None:
            ax.axhline(greedy["final_mean"], color="grey", linestyle="--", linewidth=1, label="greedy")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("F of training episodes: mean, min-max over seeds")
    return save_figure(fig, out / PLOT, axes=axes[0])


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    tasks = [t for t in TASKS if not args.only or t.name in args.only]
    print(f"subpo: {args.seeds} seeds, tasks {[t.name for t in tasks]}, budget "
          f"{'the configs' if args.steps is None else f'{args.steps:,}'} env steps, device {args.device}")
    if args.dry_run:
        return 0
    began, meta = script.start("subpo", argv, args.out, seeds=args.seeds, device=args.device,
                               episodes=args.episodes, throughput_envs=args.throughput_envs)
    results: dict[str, Any] = {"meta": meta, "tasks": [vars(t) for t in tasks], "runs": [], "throughput": {}}
    with tempfile.TemporaryDirectory(prefix="drl-subpo-") as tmp:
        for task in tasks:
            results["runs"] += script.run_grid(
                {"task": [task.name], "method": [*METHODS, "greedy"], "seed": list(range(args.seeds))},
                lambda task, method, seed, spec=task: (
                    {"final": statistics.fmean(greedy_values(_config(spec.subpo, {}), args.episodes, seed))}
                    if method == "greedy" else run(spec, method, seed, args, Path(tmp))),
                "{task} {method} seed {seed}",
                lambda r: f"F {_n(r['final'], 1)}" + (f" (det. {_n(r['final_det'], 1)})" if "final_det" in r else ""),
                loops=("task", "seed", "method"))
            tp: dict[str, Any] = {}
            results["throughput"][task.name] = script.attempt(
                tp, f"{task.name} throughput", lambda task=task: throughput(task, args.throughput_envs, args.device),
                lambda r: ", ".join(f"{k} {_n(v)}" for k, v in r.items()))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, tasks), write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
