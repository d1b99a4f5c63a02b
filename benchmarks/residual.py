"""Residual off-policy RL (ResFiT) vs an on-policy (PPO) residual vs TD3 from scratch, on a frozen BC base.

Usage: python -m benchmarks.residual [--tasks drl/PandaPush-v0 drl/PandaPickPlace-v0] [--seeds 3]
                                     [--steps 100000] [--ppo-steps 1000000] [--only residual ppo-residual td3]
                                     [--dry-run] [--out benchmarks/results/residual]

Per task and seed: ``--demo-episodes`` scripted-expert episodes with ``--action-noise`` injected and the sparse
success reward (``drl demos ... --action-noise --env-kwarg reward_type=sparse``), then behaviour cloning on them
(configs/bc/<task>.yaml, ``--bc-updates`` gradient steps): the frozen base, whose success rate is measured at the
end of its offline phase. Then, all on the same sparse reward and seed:

* ``residual``: residual TD3 on the base (configs/residual/<task>.yaml), with the demos in half of each batch;
* ``ppo-residual``: PPO learning a correction on the same base (configs/ppo-residual/<task>.yaml);
* ``td3``: TD3 from scratch with the residual's learner (configs/td3/<task>-sparse.yaml).

Success = the eval return (reward 1 on success, then the episode ends), ``--eval-episodes`` deterministic
episodes every ``--eval-every`` (``--ppo-eval-every`` for PPO) env steps. The report gives, per task: the base's
success, each variant's success at the end, the env steps until an evaluation first reaches the base's success
(at step 0 every residual starts at the base, so this is the first evaluation that stays at or above it after
the warm-up: see :func:`steps_to`) and 90%, and the ratio of the PPO residual's steps to the residual TD3's.
The run folders live in a temporary folder; ``results.json``, ``report.md`` and ``success.png`` go to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, header_lines, machine_line, pyplot, save_figure

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PLOT = "success.png"
TASKS = ["drl/PandaPush-v0", "drl/PandaPickPlace-v0"]


@dataclass(frozen=True)
class Variant:
    """One learner on the base: ``--only`` name, label, registry agent, config file pattern (``{env}``: the
    task's file name), and whether it acts on the base."""

    name: str
    label: str
    agent: str
    config: str
    on_base: bool = True


VARIANTS = [
    Variant("residual", "residual TD3 (ResFiT)", "residual", "residual/{env}.yaml"),
    Variant("ppo-residual", "PPO residual", "ppo-residual", "ppo-residual/{env}.yaml"),
    Variant("td3", "TD3 from scratch", "td3", "td3/{env}-sparse.yaml", on_base=False),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.residual", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="+", default=TASKS, help="env ids with a scripted expert")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant and task (0 .. N-1)")
    parser.add_argument("--demo-episodes", type=int, default=10, help="scripted-expert episodes per seed")
    parser.add_argument("--action-noise", type=float, default=0.3, help="noise injected into the expert's actions")
    parser.add_argument("--bc-updates", type=int, default=20_000, help="BC gradient steps (the base)")
    parser.add_argument("--steps", type=int, default=100_000, help="env steps of residual TD3 and TD3")
    parser.add_argument("--ppo-steps", type=int, default=1_000_000, help="env steps of the PPO residual")
    parser.add_argument("--eval-episodes", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=5_000, help="env steps between evaluations (TD3s)")
    parser.add_argument("--ppo-eval-every", type=int, default=20_000, help="env steps between PPO evaluations")
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every learner's config (not the base's), e.g. algo.compile=false")
    script.add_only(parser, [v.name for v in VARIANTS])
    script.add_out(parser, RESULTS_DIR / "residual")
    args = parser.parse_args(argv)
    if args.action_noise < 0:
        parser.error(f"--action-noise must be >= 0, got {args.action_noise}")
    script.check_args(parser, args, ("seeds", "demo_episodes", "bc_updates", "steps", "ppo_steps", "eval_episodes",
                                     "eval_every", "ppo_eval_every"), [v.name for v in VARIANTS])
    return args


# --- runs -----------------------------------------------------------------------------------
def _common(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return {"seed": seed, "progress": False, "device": args.device, "checkpoint_interval": 0, "torch_threads": 1,
            "eval_episodes": args.eval_episodes, "env": {"num_eval_envs": min(args.eval_episodes, 10)}}


def train_base(task: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Demos, then the BC base: ``{"base": run folder, "demos": file, "expert_success", "base_success"}``."""
    from drl.api import CONFIG_DIR, load_config
    from envs.tasks.demos import collect_demos, save_demos

    name = task.replace("/", "-")
    demos = collect_demos(task, args.demo_episodes, seed=seed, num_envs=min(args.demo_episodes, 8),
                          env_kwargs={"reward_type": "sparse"}, action_noise=args.action_noise)
    demo_file = save_demos(demos, work / f"{name}-demos-s{seed}.pt")
    overrides = _common(seed, args) | {"total_steps": 1, "eval_interval": 0, "algo": {
        "demos": str(demo_file), "offline_updates": args.bc_updates, "save_replay": False,
        "offline_log_interval": max(1, min(2_000, args.bc_updates)), "num_steps": 1}}
    cfg = load_config("bc", config_file=CONFIG_DIR / "bc" / f"{name}.yaml", overrides=overrides)
    run_dir, _, rows = script.train_run(cfg, work / f"{name}-bc-s{seed}")
    base_success = next(p["success"] for p in script.eval_points(rows, name="success") if p["step"] == 0)
    return {"base": run_dir, "demos": demo_file, "expert_success": demos["meta"]["success_rate"],
            "base_success": base_success}


def run_config(variant: Variant, task: str, seed: int, base: dict[str, Any], args: argparse.Namespace) -> Any:
    """The variant's config file with the benchmark's budgets, evaluations, base and demos laid over it."""
    from drl.api import CONFIG_DIR, load_config
    from drl.config import merge, parse_overrides

    ppo = variant.agent == "ppo-residual"
    every = args.ppo_eval_every if ppo else args.eval_every
    overrides = _common(seed, args) | {"total_steps": args.ppo_steps if ppo else args.steps, "eval_interval": every}
    algo: dict[str, Any] = {"base": str(base["base"])} if variant.on_base else {}
    if not ppo:
        algo |= {"save_replay": False, "num_steps": min(1_000, every)}  # an evaluation is due at an iteration's end
    if variant.agent == "residual":
        algo["demos"] = str(base["demos"])
    overrides = merge(overrides | {"algo": algo}, parse_overrides(args.set))
    config = CONFIG_DIR / variant.config.format(env=task.replace("/", "-"))
    return load_config(variant.agent, config_file=config, overrides=overrides)


def run_one(variant: Variant, task: str, seed: int, base: dict[str, Any], args: argparse.Namespace,
            work: Path) -> dict[str, Any]:
    from drl.config import to_dict

    cfg = run_config(variant, task, seed, base, args)
    _, summary, rows = script.train_run(cfg, work / f"{task.replace('/', '-')}-{variant.name}-s{seed}")
    points = [p for p in script.eval_points(rows, name="success") if p["step"] > 0]  # online evaluations
    algo = to_dict(cfg.algo)
    for key in ("base", "demos"):  # no paths of this machine
        if algo.get(key):
            algo[key] = Path(algo[key]).name
    return {"points": points, "final_success": summary.get("final_eval_return"), "wall_s": summary.get("wall_s"),
            "steps": summary.get("steps"),
            "config": {"source": getattr(cfg, "source", "").replace(f"{Path(__file__).resolve().parents[1]}/", ""),
                       "algo": algo}}


# --- summary ----------------------------------------------------------------------------------
def steps_to(points: list[dict[str, float]], level: float) -> int | None:
    """The first evaluation step from which every later evaluation has ``success >= level`` (None: never).

    Every residual starts exactly at the base, and may dip below it while it learns; "reaching the base's
    success" counts only once the curve stays there, so a lucky early evaluation does not count."""
    reached = None
    for point in points:
        if point["success"] >= level:
            reached = point["step"] if reached is None else reached
        else:
            reached = None
    return reached


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "std": None}
    return {"n": len(values), "mean": statistics.fmean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def summarise(runs: list[dict[str, Any]], bases: list[dict[str, Any]], tasks: list[str]) -> list[dict[str, Any]]:
    """Per task: the base's and the expert's success, and per variant the final success and the steps to the
    base's success (the seed's own base) and to 90%; the PPO residual's steps over the residual TD3's."""
    out = []
    for task in tasks:
        task_bases = [b for b in bases if b["task"] == task and "error" not in b]
        row: dict[str, Any] = {"task": task, "base": _stats([b["base_success"] for b in task_bases]),
                               "expert": _stats([b["expert_success"] for b in task_bases]), "variants": {}}
        for v in VARIANTS:
            ok = [r for r in runs if r["task"] == task and r["variant"] == v.name and "error" not in r]
            to_base, to_90 = [], []
            for r in ok:
                level = next(b["base_success"] for b in task_bases if b["seed"] == r["seed"])
                to_base.append(steps_to(r["points"], level) if level > 0 else None)  # a 0% base: not a level
                to_90.append(steps_to(r["points"], 0.9))
            row["variants"][v.name] = {
                "seeds": len(ok), "final": _stats([r["final_success"] for r in ok if r["final_success"] is not None]),
                "to_base": _stats([s for s in to_base if s is not None]),
                "to_base_reached": sum(s is not None for s in to_base),
                "to_90": _stats([s for s in to_90 if s is not None]),
                "to_90_reached": sum(s is not None for s in to_90)}
        res, ppo = row["variants"]["residual"]["to_base"]["mean"], row["variants"]["ppo-residual"]["to_base"]["mean"]
        row["ppo_over_residual_steps"] = ppo / res if res and ppo else None
        out.append(row)
    return out


def _pct(x: Any) -> str:
    return f"{100 * x:.0f}%" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def _steps(stats: dict[str, Any], reached: int, seeds: int) -> str:
    if not reached:
        return f"never (0/{seeds})"
    return f"{stats['mean']:,.0f} +- {stats['std']:,.0f} ({reached}/{seeds})"


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = header_lines("Residual off-policy RL on a frozen BC base (ResFiT) vs PPO residual vs TD3", meta)
    lines += [machine_line(meta, extra=(f"device {meta['device']}", "one torch thread"), load=False), "",
              f"Per task and seed: {meta['demo_episodes']} scripted-expert demos with action noise "
              f"{meta['action_noise']} and the sparse success reward, BC on them ({meta['bc_updates']:,} gradient "
              f"steps) = the frozen base; then residual TD3 and TD3 from scratch for {meta['steps']:,} env steps and "
              f"the PPO residual for {meta['ppo_steps']:,}. Success: {meta['eval_episodes']} deterministic "
              "episodes per evaluation. Steps to a level: the first evaluation from which every later one is at or "
              "above it (seeds that never got there, or whose base never succeeded, are counted apart). Mean +- std "
              "(population) over seeds.", ""]
    for row in results["summary"]:
        lines += [f"## {row['task']}", "", f"Expert (noisy) demo success {_pct(row['expert']['mean'])}; BC base "
                  f"success {_pct(row['base']['mean'])} +- {_pct(row['base']['std'])} ({row['base']['n']} seeds).", "",
                  "| variant | seeds | final success | env steps to the base's success | env steps to 90% |",
                  "|---|---|---|---|---|"]
        for v in VARIANTS:
            s = row["variants"][v.name]
            lines.append(f"| {v.label} | {s['seeds']} | {_pct(s['final']['mean'])} +- {_pct(s['final']['std'])} | "
                         f"{_steps(s['to_base'], s['to_base_reached'], s['seeds'])} | "
                         f"{_steps(s['to_90'], s['to_90_reached'], s['seeds'])} |")
        ratio = row["ppo_over_residual_steps"]
        lines += ["", "PPO residual / residual TD3 env steps to the base's success: "
                  + (f"{ratio:,.1f}x" if ratio else "- (one of them never got there)"), ""]
    lines += ["Paper (Ankile et al. 2025): the residual reaches the base's success with ~200x fewer env steps than a "
              "PPO residual on a bimanual task; UTD 4 gives most of the gain."]
    return close_report(lines, results["runs"], out, ("success vs env steps", PLOT))


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    tasks = results["meta"]["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, v in enumerate(VARIANTS):
            color = f"C{i}"
            curves = [r["points"] for r in results["runs"]
                      if r["task"] == task and r["variant"] == v.name and "error" not in r and r["points"]]
            for points in curves:
                ax.plot([p["step"] for p in points], [p["success"] for p in points], color=color, alpha=0.25)
            steps = sorted({p["step"] for points in curves for p in points})
            means = [statistics.fmean([p["success"] for c in curves for p in c if p["step"] == s]) for s in steps]
            if steps:
                ax.plot(steps, means, color=color, marker="o", linewidth=2, label=f"{v.label} (mean of {len(curves)})")
        base = next((row["base"]["mean"] for row in results["summary"] if row["task"] == task), None)
        if base is not None:
            ax.axhline(base, color="k", linestyle="--", linewidth=1, label="BC base")
        ax.set_xscale("log")
        ax.set_xlabel("env steps")
        ax.set_ylabel("success rate")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(task, fontsize=10)
    return save_figure(fig, out / PLOT, axes=list(axes[0]), legend=8)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only]
    print(f"residual: {', '.join(args.tasks)}; {args.seeds} seeds; BC on {args.demo_episodes} noisy demos "
          f"({args.bc_updates:,} updates); {args.steps:,} steps (TD3s), {args.ppo_steps:,} (PPO); on {args.device}")
    for v in chosen:
        print(f"  {v.name:<13} {v.label:<24} configs/{v.config}")
    if args.dry_run:
        return 0
    began, meta = script.start("residual", argv, args.out, tasks=args.tasks, seeds=args.seeds,
                               demo_episodes=args.demo_episodes, action_noise=args.action_noise,
                               bc_updates=args.bc_updates, steps=args.steps, ppo_steps=args.ppo_steps,
                               eval_episodes=args.eval_episodes, eval_every=args.eval_every,
                               ppo_eval_every=args.ppo_eval_every, device=args.device, overrides=args.set)
    results: dict[str, Any] = {"meta": meta, "bases": [], "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-residual-") as tmp:
        work = Path(tmp)
        for task in args.tasks:
            for seed in range(args.seeds):
                base = script.attempt({"task": task, "seed": seed}, f"{task} seed {seed} BC base",
                                      lambda task=task, seed=seed: train_base(task, seed, args, work),
                                      lambda r: f"expert {_pct(r['expert_success'])}, base {_pct(r['base_success'])}")
                results["bases"].append({k: v for k, v in base.items() if k not in ("base", "demos")})
                for v in chosen:
                    record = {"task": task, "variant": v.name, "seed": seed}
                    if "error" in base:
                        results["runs"].append(record | {"error": f"no base: {base['error']}"})
                        continue
                    results["runs"].append(script.attempt(
                        record, f"{task} {v.name} seed {seed}",
                        lambda v=v, task=task, seed=seed, base=base: run_one(v, task, seed, base, args, work),
                        lambda r: f"final success {_pct(r['final_success'])}"))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, results["bases"], args.tasks),
                         write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
