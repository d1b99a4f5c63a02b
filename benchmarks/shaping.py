"""BARFI demonstration (issue 14): unshaped PPO vs naive added shaping vs learned (BARFI-style) blend weights.

    python -m benchmarks.shaping [--seeds 3] [--steps N] [--only NAME ...] [--device cpu|cuda|auto]
                                 [--out benchmarks/results/shaping] [--dry-run]

Task: drl/CartPole-v0 with two designer heuristics, one helpful (``cartpole_upright``: 1 - |theta| / 12 deg)
and one misaligned (``step_penalty`` with cost 2: the "finish fast" term of goal-reaching tasks; added as is,
the reward per step is at most 0, so ending the episode early pays). Variants (``--only`` names):

* ``unshaped``: ``configs/ppo/drl-CartPole-v0.yaml``, the env's reward only;
* ``naive``: ``configs/ppo/drl-CartPole-v0-naive.yaml``, r + 1 * upright + 1 * step penalty, fixed;
* ``barfi``: ``configs/ppo/drl-CartPole-v0-barfi.yaml``, the same blend starting at 1, 1 with the weights
  learned for the primary return (:mod:`drl.wrappers.barfi`);
* ``unshaped-norm``: the unshaped config with PPO's reward normalisation, a control for the one PPO setting
  the shaped configs change.

Every variant runs with the budget and evaluation interval of the ``barfi`` config (``--steps`` overrides the
budget) and otherwise identical PPO settings, except that the two shaped configs normalise rewards
(``algo.normalize_reward``): a blend rescales the reward (BARFI's learned weights reach up to 7x CartPole's
reward per step); without normalisation BARFI's last evaluations kept dipping below 500 (475 +- 16 over 5 seeds
at 100k steps, where the unshaped config ends at 499 +- 2).
The claims compare against the tuned ``unshaped`` config; ``unshaped-norm`` shows that normalisation does not
help the env reward alone. Returns are always CartPole's own (the primary): evaluation
(10 deterministic episodes, no reward wrapper) and the training episodes' ``info["env_reward"]``.
Claims (issue 14): naive shaping hurts the primary return; BARFI matches or beats the unshaped baseline.
Writes ``results.json``, ``report.md`` and ``curves.png`` (eval return vs env steps; BARFI's blend weights vs
env steps; mean and min-max band over seeds) to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, seed_band, study_header, wrapped_config_line
from benchmarks.harness.report import number as _n

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
EVAL_EPISODES = 10
PLOT = "curves.png"
BUDGET_CONFIG = "configs/ppo/drl-CartPole-v0-barfi.yaml"  # budget and eval interval of every variant


@dataclass(frozen=True)
class Variant:
    name: str
    label: str
    config: str
    algo: dict[str, Any] = field(default_factory=dict)  # overrides of the config's algo section


VARIANTS = [
    Variant("unshaped", "PPO, env reward only", "configs/ppo/drl-CartPole-v0.yaml"),
    Variant("naive", "PPO + naive shaping (fixed weights 1, 1)", "configs/ppo/drl-CartPole-v0-naive.yaml"),
    Variant("barfi", "PPO + BARFI (learned weights)", BUDGET_CONFIG),
    Variant("unshaped-norm", "PPO, env reward only, normalised rewards (control)",
            "configs/ppo/drl-CartPole-v0.yaml", {"normalize_reward": True}),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shaping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (0 .. N-1)")
    parser.add_argument("--steps", type=int, default=None, help=f"env steps per run (default: {BUDGET_CONFIG})")
    script.add_only(parser, [v.name for v in VARIANTS])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "shaping")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps"), [v.name for v in VARIANTS])
    return args


# --- one run --------------------------------------------------------------------------------
def run(variant: Variant, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.api import load_config
    from drl.config import load_yaml, to_dict

    budget = load_yaml(ROOT / BUDGET_CONFIG)
    overrides: dict[str, Any] = {"seed": seed, "progress": False, "checkpoint_interval": 0, "torch_threads": 1,
                                 "device": args.device, "eval_episodes": EVAL_EPISODES,
                                 "eval_interval": budget["eval_interval"],
                                 "total_steps": args.steps if args.steps is not None else budget["total_steps"],
                                 "env": {"num_eval_envs": EVAL_EPISODES}}
    if variant.algo:
        overrides["algo"] = dict(variant.algo)
    cfg = load_config(config_file=ROOT / variant.config, overrides=overrides)
    _, summary, rows = script.train_run(cfg, work / f"{variant.name}-s{seed}")
    points = script.eval_points(rows)
    train = [{"step": int(float(r["global_step"])), "return": float(r["episode_return"])} for r in rows
             if r.get("episode_return") not in (None, "", "nan")]
    weight_keys = [k for k in rows[0] if k.startswith("barfi/phi_")] if rows else []
    weights = [{"step": int(float(r["global_step"])),
                **{k.removeprefix("barfi/phi_"): float(r[k]) for k in weight_keys}} for r in rows]
    return {"points": points, "train": train, "weights": weights if weight_keys else [],
            "final": points[-1]["eval_return"] if points else None,
            "mean_eval": statistics.fmean(p["eval_return"] for p in points) if points else None,
            "steps": summary["steps"], "train_s": summary["wall_s"] - summary["eval_s"],
            "config": {"file": variant.config, "total_steps": cfg.total_steps, "num_envs": cfg.env.num_envs,
                       "eval_interval": cfg.eval_interval, "wrappers": cfg.wrappers, "algo": to_dict(cfg.algo)}}


# --- summary, report, plot ------------------------------------------------------------------
def _stats(values: list[float]) -> tuple[float | None, float | None]:
    return (statistics.fmean(values), statistics.pstdev(values)) if values else (None, None)


def summarise(runs: list[dict[str, Any]], variants: list[Variant]) -> list[dict[str, Any]]:
    out = []
    for v in variants:
        mine = [r for r in runs if r["variant"] == v.name]
        done = [r for r in mine if "error" not in r]
        final_mean, final_std = _stats([r["final"] for r in done if r["final"] is not None])
        auc_mean, auc_std = _stats([r["mean_eval"] for r in done if r["mean_eval"] is not None])
        last_weights = [r["weights"][-1] for r in done if r["weights"]]
        weights = {k: statistics.fmean(w[k] for w in last_weights) for k in last_weights[0] if k != "step"} \
            if last_weights else {}
        out.append({"variant": v.name, "label": v.label, "seeds": len(done), "errors": len(mine) - len(done),
                    "final_mean": final_mean, "final_std": final_std, "auc_mean": auc_mean, "auc_std": auc_std,
                    "final_weights": weights})
    return out


def _compare(by: dict[str, dict[str, Any]], a: str, b: str, key: str) -> tuple[float, float] | None:
    """``(mean_a - mean_b, two standard errors of that difference)`` of ``key`` over seeds, or None."""
    x, y = by.get(a, {}), by.get(b, {})
    if x.get(f"{key}_mean") is None or y.get(f"{key}_mean") is None or min(x["seeds"], y["seeds"]) < 2:
        return None
    noise = math.sqrt(x[f"{key}_std"] ** 2 / (x["seeds"] - 1) + y[f"{key}_std"] ** 2 / (y["seeds"] - 1))
    return x[f"{key}_mean"] - y[f"{key}_mean"], 2 * noise


def claim_lines(summary: list[dict[str, Any]]) -> list[str]:
    """The two claims, on the final evaluation and on the mean over all evaluations (area under the curve)."""
    by = {s["variant"]: s for s in summary}
    lines = []
    for key, what in (("final", "final eval return"), ("auc", "mean eval return over the run")):
        hurt = _compare(by, "naive", "unshaped", key)
        match = _compare(by, "barfi", "unshaped", key)
        if hurt is None or match is None:
            lines.append(f"- {what}: not judged (a variant missing or one seed)")
            continue
        hurt_text = "yes" if hurt[0] < -hurt[1] else "not beyond seed noise"
        if match[0] > match[1]:
            match_text = "beats"
        elif match[0] >= -match[1]:
            match_text = "matches (within seed noise)"
        else:
            match_text = "no, below"
        lines.append(f"- {what}: naive shaping hurts: {hurt_text} (naive - unshaped = {_n(hurt[0], 1)}, "
                     f"2 s.e. {_n(hurt[1], 1)}); BARFI matches or beats unshaped: {match_text} (barfi - unshaped "
                     f"= {_n(match[0], 1)}, 2 s.e. {_n(match[1], 1)})")
    return lines


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta, summary = results["meta"], results["summary"]
    lines = study_header("Behaviour-aligned shaping (BARFI) vs naive shaping vs none, drl/CartPole-v0", meta)
    lines += [f"{meta['seeds']} seeds per variant, equal budget and PPO settings except reward normalisation in "
              "the shaped configs (a blend rescales the reward; `unshaped-norm` is the control); heuristics: "
              "`cartpole_upright` (helpful) and `step_penalty` cost 2 (misaligned). Returns are CartPole's own. "
              f"Final = the last evaluation ({EVAL_EPISODES} deterministic episodes) of each seed; mean eval = the "
              "mean over all of a run's evaluations (area under the curve / steps); mean +- std over seeds.", "",
              "## Claims (issue 14)", ""]
    lines += claim_lines(summary)
    lines += ["", "| variant | final eval return | mean eval return | final blend weights (mean over seeds) |",
              "|---|---|---|---|"]
    for s in summary:
        weights = ", ".join(f"{k} {v:+.2f}" for k, v in s["final_weights"].items()) or "-"
        lines.append(f"| {s['label']} (`{s['variant']}`) | {_n(s['final_mean'], 1)} +- {_n(s['final_std'], 1)} | "
                     f"{_n(s['auc_mean'], 1)} +- {_n(s['auc_std'], 1)} | {weights} |")
    return close_report(lines, results["runs"], out, ("eval return and blend weights vs env steps", PLOT),
                        key="variant", config_line=_config_line,
                        failed_line=lambda r: f"- {r['variant']} seed {r['seed']} failed: `{r['error']}`")


def _config_line(run: dict[str, Any]) -> str:
    return wrapped_config_line(run["variant"], run["config"])


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    fig, (ax_r, ax_w) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, s in enumerate(results["summary"]):
        done = [r for r in results["runs"] if r["variant"] == s["variant"] and "error" not in r]
        curves = [r["points"] for r in done if r["points"]]
        if curves:
            seed_band(ax_r, curves, "eval_return", f"C{i}", f"{s['label']} ({len(curves)})")
        weight_curves = [r["weights"] for r in done if r["weights"]]
        if s["variant"] == "barfi" and weight_curves:
            for j, name in enumerate(k for k in weight_curves[0][0] if k != "step"):
                seed_band(ax_w, weight_curves, name, f"C{3 + j}", f"{name} ({len(weight_curves)})")
    ax_r.set_xlabel("env steps")
    ax_r.set_ylabel(f"eval return ({EVAL_EPISODES} episodes, CartPole's own)")
    ax_w.axhline(0.0, color="grey", linewidth=1)
    ax_w.set_xlabel("env steps")
    ax_w.set_ylabel("BARFI blend weight phi")
    return save_figure(fig, out / PLOT, axes=(ax_r, ax_w))


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v.name in args.only]
    print(f"shaping: {args.seeds} seeds, budget {'of ' + BUDGET_CONFIG if args.steps is None else f'{args.steps:,}'}"
          f" env steps, device {args.device}")
    for v in variants:
        print(f"  {v.name:<9} {v.label}  ({v.config})")
    if args.dry_run:
        return 0
    began, meta = script.start("shaping", argv, args.out, seeds=args.seeds, device=args.device,
                               eval_episodes=EVAL_EPISODES)
    results: dict[str, Any] = {"meta": meta, "variants": [vars(v) for v in variants], "runs": []}
    with tempfile.TemporaryDirectory(prefix="drl-shaping-") as tmp:
        by_name = {v.name: v for v in variants}
        results["runs"] = script.run_grid(
            {"variant": list(by_name), "seed": list(range(args.seeds))},
            lambda variant, seed: run(by_name[variant], seed, args, Path(tmp)), "{variant} seed {seed}",
            lambda r: f"final {_n(r['final'], 1)}, mean eval {_n(r['mean_eval'], 1)}", loops=("seed", "variant"))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, variants), write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
