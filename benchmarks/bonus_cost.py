"""Per-step cost of the shaping and intrinsic-bonus wrappers, next to the bare env and one extra critic pass.

    python -m benchmarks.bonus_cost [--device cpu|cuda] [--repeats 5] [--only NAME ...]
                                    [--out benchmarks/results/bonus_cost] [--dry-run]

Issue 14's cost targets: per-step overhead below 15% for shaping (``potential_shaping``, ``barfi``) and
counts, and below the cost of one extra critic pass for RND / E3B. Two cases: ``drl/CartPole-v0`` with
4096 envs (a batched env, where the bonus's batched networks matter) and ``HalfCheetah-v5`` with one env (a
CPU simulator, where per-call overhead matters).

Per case and variant: ``env.step`` (random actions drawn up front) timed over a block of steps after a
warm-up, the median over ``--repeats`` blocks, divided by the steps: seconds per vectorised step. A wrapper
that learns has its ``update()`` called, untimed, after every rollout's worth of steps (as a PPO iteration
would), so its recorded transitions do not pile up in the timed steps. Variants:
``bare`` (no wrapper), ``shaping`` (``potential_shaping``: CartPole's upright potential, a linear potential
of HalfCheetah's observation), ``barfi`` (two heuristics with learned blend weights: CartPole's upright term
and a step penalty, HalfCheetah's action cost and a step penalty), ``count``, ``rnd``, ``icm``, ``e3b``,
``rnd-e3b`` (the ``bonus`` wrapper's parts, with its default networks). The reference ``critic`` is one forward pass
of PPO's default critic (MLP 64-64, tanh) on the step's observations, no env step. ``update()`` (training the
learned parts on one iteration's recorded steps) runs once per iteration, not per step: timed separately,
per recorded env step. One torch thread. Writes ``results.json`` and ``report.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import number as _n
from benchmarks.harness.report import study_header, write_lines

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# case -> (num_envs, steps per timed block, recorded steps per update = one PPO iteration's rollout length)
CASES = {"drl/CartPole-v0": (4096, 50, 16), "HalfCheetah-v5": (1, 500, 2048)}
# variant -> its wrapper config, per case where the wrapper needs the task's observation layout (None: no wrapper)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "bare": None,
    "shaping": {"name": "potential_shaping"},
    "barfi": {"name": "barfi"},
    "count": {"name": "bonus", "global_bonus": "none", "episodic_bonus": "count"},
    "rnd": {"name": "bonus", "global_bonus": "rnd"},
    "icm": {"name": "bonus", "global_bonus": "icm"},
    "e3b": {"name": "bonus", "global_bonus": "none", "episodic_bonus": "e3b"},
    "rnd-e3b": {"name": "bonus", "global_bonus": "rnd", "episodic_bonus": "e3b"},
}
PER_CASE: dict[str, dict[str, dict[str, Any]]] = {
    "drl/CartPole-v0": {
        "shaping": {"potential": "cartpole_upright"},
        "barfi": {"heuristics": ["cartpole_upright", {"fn": "step_penalty", "kwargs": {"cost": 2.0}}]},
    },
    "HalfCheetah-v5": {
        "shaping": {"potential": "linear", "potential_kwargs": {"weights": [1.0] * 17}},
        "barfi": {"heuristics": ["action_cost", "step_penalty"]},
    },
}
SHAPING = ("shaping", "barfi", "count")  # the variants with the 15% target; the rest: one critic pass


def wrapper_config(case: str, variant: str) -> dict[str, Any] | None:
    """The wrapper ``variant`` adds on ``case`` (None for ``bare``)."""
    spec = VARIANTS[variant]
    return None if spec is None else {**spec, **PER_CASE[case].get(variant, {})}
WARMUP = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bonus_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed blocks per measurement (median)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the steps per block (smoke runs: < 1)")
    parser.add_argument("--case", nargs="+", default=list(CASES), help=f"of {list(CASES)}")
    script.add_only(parser, list(VARIANTS))
    script.add_out(parser, RESULTS_DIR / "bonus_cost")
    args = parser.parse_args(argv)
    for case in args.case:
        if case not in CASES:
            parser.error(f"--case {case}: not one of {list(CASES)}")
    script.check_args(parser, args, ("repeats",), list(VARIANTS))
    return args


def _device(name: str) -> torch.device:
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name))


def _actions(env: Any, count: int, device: torch.device) -> list[torch.Tensor]:
    space = env.single_action_space
    gen = torch.Generator().manual_seed(0)
    if hasattr(space, "n"):
        return [torch.randint(0, int(space.n), (env.num_envs,), generator=gen).to(device) for _ in range(count)]
    low, high = torch.as_tensor(space.low), torch.as_tensor(space.high)
    return [(low + (high - low) * torch.rand(env.num_envs, *space.shape, generator=gen)).to(device)
            for _ in range(count)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_steps(env: Any, actions: list[torch.Tensor], record: int, learns: bool, device: torch.device) -> float:
    """Seconds spent in ``env.step`` over ``actions``; a wrapper that learns gets its ``update()`` (untimed) after
    every ``record`` steps, as once per PPO iteration, so its recorded transitions do not pile up."""
    total = 0.0
    for first in range(0, len(actions), record):
        _sync(device)
        start = time.perf_counter()
        for a in actions[first:first + record]:
            env.step(a)
        _sync(device)
        total += time.perf_counter() - start
        if learns:
            env.update()
    return total


def measure(case: str, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per vectorised step (median over blocks) and, for learned parts, update seconds per env step."""
    from drl.wrappers import wrap_env
    from envs import make_vec_env

    device = _device(args.device)
    num_envs, block, record = CASES[case]
    block = max(1, int(block * args.scale))
    env = make_vec_env(case, num_envs, device)
    spec = wrapper_config(case, variant)
    if spec is not None:
        env = wrap_env(env, [spec], defaults={"seed": 0})
    env.reset(seed=0)
    actions = _actions(env, block, device)
    learns = spec is not None and env.records_transitions
    for a in actions[:WARMUP]:
        env.step(a)
    if learns:
        env.update()
    times = [_timed_steps(env, actions, max(1, int(record * args.scale)), learns, device) / block
             for _ in range(args.repeats)]
    out: dict[str, Any] = {"case": case, "variant": variant, "num_envs": num_envs, "step_s": statistics.median(times),
                           "step_s_all": times}
    if learns:  # a learned part: time its per-iteration update too
        env.recorded_batch()
        steps = max(1, int(record * args.scale))
        for a in _actions(env, steps, device):
            env.step(a)
        _sync(device)
        start = time.perf_counter()
        env.update()
        _sync(device)
        out["update_s_per_env_step"] = (time.perf_counter() - start) / (steps * num_envs)
    env.close()
    return out


def critic_pass(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One forward pass of PPO's default critic on a step's observations (the reference cost)."""
    from drl.nn import make_mlp
    from envs import make_vec_env

    device = _device(args.device)
    num_envs, block, _ = CASES[case]
    block = max(1, int(block * args.scale))
    env = make_vec_env(case, num_envs, device)
    obs, _ = env.reset(seed=0)
    critic = make_mlp(obs.shape[1], [64, 64], 1, "tanh").to(device)
    times = []
    with torch.no_grad():
        for _ in range(WARMUP):
            critic(obs)
        for _ in range(args.repeats):
            _sync(device)
            start = time.perf_counter()
            for _ in range(block):
                critic(obs)
            _sync(device)
            times.append((time.perf_counter() - start) / block)
    env.close()
    return {"case": case, "variant": "critic", "num_envs": num_envs, "step_s": statistics.median(times),
            "step_s_all": times}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for case in dict.fromkeys(r["case"] for r in runs):
        mine = {r["variant"]: r for r in runs if r["case"] == case and "error" not in r}
        bare, critic = mine.get("bare"), mine.get("critic")
        for name, r in mine.items():
            if name in ("bare", "critic"):
                continue
            extra = r["step_s"] - bare["step_s"] if bare else None
            out.append({"case": case, "variant": name, "step_us": r["step_s"] * 1e6,
                        "overhead_us": extra * 1e6 if extra is not None else None,
                        "overhead_pct": 100 * extra / bare["step_s"] if extra is not None else None,
                        "critic_us": critic["step_s"] * 1e6 if critic else None,
                        "overhead_vs_critic": extra / critic["step_s"] if extra is not None and critic else None,
                        "update_us_per_env_step": r.get("update_s_per_env_step", 0.0) * 1e6 or None})
    return out


def write_report(results: dict[str, Any], out: Path) -> Path:
    meta = results["meta"]
    lines = study_header("Shaping and intrinsic-bonus wrappers: per-step cost", meta)
    lines += ["Targets (issue 14): overhead < 15% of the bare step for shaping (`shaping`, `barfi`) and counts; "
              "< one extra critic pass for RND / E3B. `overhead` = wrapped step - bare step (median over blocks); "
              "`critic` = one forward pass of PPO's default critic (64-64 tanh) on the step's observations.", "",
              "| case | bare step (us) | variant | step (us) | overhead (us) | overhead % | critic pass (us) | "
              "overhead / critic | update per env step (us) |", "|---|---|---|---|---|---|---|---|---|"]
    bare = {r["case"]: r["step_s"] * 1e6 for r in results["runs"] if r["variant"] == "bare" and "error" not in r}
    for s in results["summary"]:
        lines.append(f"| {s['case']} | {_n(bare.get(s['case']), 1)} | `{s['variant']}` | {_n(s['step_us'], 1)} | "
                     f"{_n(s['overhead_us'], 1)} | {_n(s['overhead_pct'], 1)} | {_n(s['critic_us'], 1)} | "
                     f"{_n(s['overhead_vs_critic'], 2)} | {_n(s['update_us_per_env_step'], 2)} |")
    failed = [f"- {r['case']} {r['variant']} failed: `{r['error']}`" for r in results["runs"] if "error" in r]
    return write_lines(lines + ["", "## Notes", ""] + (failed or ["- none"]), out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    variants = [v for v in VARIANTS if not args.only or v in args.only or v == "bare"]
    print(f"bonus_cost: cases {args.case}, variants {variants} + critic, device {args.device}, "
          f"{args.repeats} blocks each")
    if args.dry_run:
        return 0
    began, meta = script.start("bonus_cost", argv, args.out, device=args.device, repeats=args.repeats,
                               scale=args.scale)
    results: dict[str, Any] = {"meta": meta, "runs": []}
    for case in args.case:
        results["runs"].append(script.attempt({"case": case, "variant": "critic"}, f"{case} critic",
                                              lambda case=case: critic_pass(case, args),
                                              lambda r: f"{r['step_s'] * 1e6:.1f} us"))
        for v in variants:
            results["runs"].append(script.attempt({"case": case, "variant": v}, f"{case} {v}",
                                                  lambda case=case, v=v: measure(case, v, args),
                                                  lambda r: f"{r['step_s'] * 1e6:.1f} us per step"))
    return script.finish(results, began, args.out, summarise, write_report, lambda results, out: out)


if __name__ == "__main__":
    sys.exit(main())
