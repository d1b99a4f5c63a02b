"""The four comparisons, computed from recorded runs only (nothing here is typed in)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from benchmarks.harness.suites import SOLVE_THRESHOLD

__all__ = ["final_train_return", "compare", "finite", "not_worse"]

LAST_FRACTION = 0.1  # "training return at the end": episodes finished in the last 10% of env steps


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _stats(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if finite(v)]
    if not vals:
        return {"n": 0, "mean": None, "std": None, "min": None, "max": None, "median": None}
    return {"n": len(vals), "mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "median": statistics.median(vals)}


def final_train_return(curve: dict[str, list]) -> float:
    """Mean training-episode return over the episodes that finished in the last 10% of env steps.

    Each logged iteration holds the mean return of the episodes that finished in it and their
    count; iterations are weighted by that count. If no episode finished in the window, the window
    grows back to the last iteration that had one.
    """
    steps = curve["step"]
    if not steps:
        return float("nan")
    cutoff = steps[-1] * (1.0 - LAST_FRACTION)
    total = count = 0.0
    for i in range(len(steps) - 1, -1, -1):
        ret, n = curve["return"][i], curve["episodes"][i]
        if finite(ret) and n:
            total += ret * n
            count += n
        if steps[i] <= cutoff and count:
            break
    return total / count if count else float("nan")


def _ok(run: dict[str, Any]) -> bool:
    return "error" not in run


def _runs(runs: list[dict], row: str, lib: str | None = None, variant: str | None = None) -> list[dict]:
    return sorted((r for r in runs if r["row"] == row and _ok(r) and (lib is None or r["lib"] == lib)
                   and (variant is None or r["variant"] == variant)), key=lambda r: r["seed"])


def _ratio(a: Any, b: Any) -> float | None:
    return a / b if finite(a) and finite(b) and b > 0 else None


def _throughput(row: dict, runs: list[dict], drl_variant: str | None = None) -> dict[str, Any]:
    drl, sb3 = _runs(runs, row["name"], "drl", drl_variant), _runs(runs, row["name"], "sb3")
    by_seed = {r["seed"]: r for r in sb3}
    per_seed = [{"seed": d["seed"], "drl_sps": d["sps"], "sb3_sps": by_seed[d["seed"]]["sps"],
                 "drl_train_s": d["train_s"], "sb3_train_s": by_seed[d["seed"]]["train_s"],
                 "ratio": _ratio(d["sps"], by_seed[d["seed"]]["sps"])} for d in drl if d["seed"] in by_seed]
    ratios = [p["ratio"] for p in per_seed if p["ratio"] is not None]
    return {
        "row": row["name"], "title": row["title"], "env_id": row["env_id"], "status": row["status"],
        "num_envs": drl[0]["num_envs"] if drl else None, "steps": drl[0]["steps"] if drl else None,
        "per_seed": per_seed, "median_ratio": statistics.median(ratios) if ratios else None,
        "drl_median_sps": _stats([r["sps"] for r in drl])["median"],
        "sb3_median_sps": _stats([r["sps"] for r in sb3])["median"],
    }


def _side_returns(runs: list[dict]) -> dict[str, Any]:
    train = [final_train_return(r["curve"]) for r in runs]
    evals = [r["final_eval"]["mean"] for r in runs]
    return {"seeds": [r["seed"] for r in runs], "per_seed_train": train, "per_seed_eval": evals,
            "train": _stats(train), "eval": _stats(evals),
            "eval_episodes": runs[0]["final_eval"]["episodes"] if runs else None}


def _returns(row: dict, runs: list[dict], drl_variant: str | None = None) -> dict[str, Any]:
    drl, sb3 = _runs(runs, row["name"], "drl", drl_variant), _runs(runs, row["name"], "sb3")
    return {"row": row["name"], "title": row["title"], "env_id": row["env_id"], "status": row["status"],
            "steps": drl[0]["steps"] if drl else (sb3[0]["steps"] if sb3 else None),
            "drl": _side_returns(drl), "sb3": _side_returns(sb3)}


def _solve(row: dict, runs: list[dict]) -> dict[str, Any]:
    variants = []
    for v in row["variants"]:
        vr = _runs(runs, row["name"], variant=v["label"])
        per_seed = [{"seed": r["seed"], "solved": r["solve"] is not None,
                     "train_s": r["solve"]["train_s"] if r["solve"] else None,
                     "step": r["solve"]["step"] if r["solve"] else None,
                     "total_train_s": r["train_s"], "final_eval": r["final_eval"]["mean"]} for r in vr]
        solved = [p for p in per_seed if p["solved"]]
        variants.append({
            "label": v["label"], "lib": v["lib"], "env_id": v["env_id"], "device": v["device"],
            "status": v.get("status", "ok"), "num_envs": vr[0]["num_envs"] if vr else None,
            "total_steps": vr[0]["total_steps"] if vr else None, "seeds": len(per_seed), "solved": len(solved),
            "per_seed": per_seed,
            "median_s": statistics.median([p["train_s"] for p in solved]) if solved else None,
            "median_step": statistics.median([p["step"] for p in solved]) if solved else None,
        })
    reference = next((v for v in variants if v["lib"] == "sb3"), None)
    for v in variants:
        all_solved = v["seeds"] and v["solved"] == v["seeds"]
        ref_ok = reference is not None and reference["seeds"] and reference["solved"] == reference["seeds"]
        v["sb3_over_this"] = _ratio(reference["median_s"], v["median_s"]) if all_solved and ref_ok else None
    return {"row": row["name"], "title": row["title"], "status": row["status"], "threshold": SOLVE_THRESHOLD,
            "eval_interval": row["eval_interval"], "reference": reference["label"] if reference else None,
            "variants": variants}


NOISE_SIGMAS = 2.0  # "not worse beyond seed noise": drl's mean >= SB3's mean - 2 standard errors of the difference


def not_worse(drl: list[float], sb3: list[float]) -> dict[str, Any]:
    """Is drl's mean return not worse than SB3's beyond seed noise?

    ``difference`` = mean(drl) - mean(sb3); ``margin`` = 2 x sqrt(s_d^2 / n_d + s_s^2 / n_s) with the
    sample standard deviations over seeds (Welch's standard error of the difference). ``verdict``:
    ``"not worse"`` when difference >= -margin, ``"worse"`` otherwise, ``"n/a ..."`` with fewer than
    two finite values per side.
    """
    d, s = [v for v in drl if finite(v)], [v for v in sb3 if finite(v)]
    if len(d) < 2 or len(s) < 2:
        return {"difference": statistics.fmean(d) - statistics.fmean(s) if d and s else None, "margin": None,
                "verdict": "n/a (needs >= 2 seeds per side)"}
    difference = statistics.fmean(d) - statistics.fmean(s)
    margin = NOISE_SIGMAS * math.sqrt(statistics.variance(d) / len(d) + statistics.variance(s) / len(s))
    return {"difference": difference, "margin": margin, "verdict": "not worse" if difference >= -margin else "worse"}


def _offpolicy_rows(row: dict, runs: list[dict], floor: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One comparison per drl side of an off-policy row (:func:`_offpolicy`), each against the same SB3 runs; a
    drl side other than the first is titled ``<row title> (<its label>)`` and judged against no target."""
    drl_labels = [v["label"] for v in row["variants"] if v["lib"] == "drl"]
    if len(drl_labels) < 2:
        return [_offpolicy(row, runs, floor)]
    out = [_offpolicy(row, runs, floor, drl_labels[0])]
    for label in drl_labels[1:]:
        out.append(_offpolicy(row | {"title": f"{row['title']} ({label})", "target_ratio": None}, runs, None, label))
    return out


def _offpolicy(row: dict, runs: list[dict], floor: dict[str, Any] | None,
               drl_variant: str | None = None) -> dict[str, Any]:
    out = {"agent": row["agent"], "row": row["name"], "title": row["title"], "env_id": row["env_id"],
           "status": row["status"], "target_ratio": row.get("target_ratio"), "drl_variant": drl_variant}
    if row["agent"] == "sac" and floor is not None:
        out["floor"] = floor
    if row["status"] != "ok":
        return out
    throughput, returns = _throughput(row, runs, drl_variant), _returns(row, runs, drl_variant)
    ratio, target = throughput["median_ratio"], row.get("target_ratio")
    out |= {
        "throughput": throughput, "returns": returns,
        "drl_ms_per_step": 1000.0 / throughput["drl_median_sps"] if finite(throughput["drl_median_sps"]) else None,
        "sb3_ms_per_step": 1000.0 / throughput["sb3_median_sps"] if finite(throughput["sb3_median_sps"]) else None,
        "speed_verdict": None if target is None or ratio is None else ("met" if ratio >= target else "not met"),
        "eval_not_worse": not_worse(returns["drl"]["per_seed_eval"], returns["sb3"]["per_seed_eval"]),
        "train_not_worse": not_worse(returns["drl"]["per_seed_train"], returns["sb3"]["per_seed_train"]),
    }
    return out


def _batched(row: dict, runs: list[dict]) -> dict[str, Any]:
    """A drl vs peer row on a torch-batched env (the peer: the row's non-drl library, e.g. ``"rslrl"``):
    steps/s per seed and their ratio, the speed verdict against the row's target, returns at equal env steps."""
    peer = next(v["lib"] for v in row["variants"] if v["lib"] != "drl")
    out = {"row": row["name"], "title": row["title"], "env_id": row["env_id"], "status": row["status"], "peer": peer,
           "peer_label": next(v["label"] for v in row["variants"] if v["lib"] == peer),
           "target_ratio": row.get("target_ratio")}
    if row["status"] != "ok":
        return out
    drl, other = _runs(runs, row["name"], "drl"), _runs(runs, row["name"], peer)
    skipped = [v["status"] for v in row["variants"] if v.get("status", "ok") != "ok"]
    if skipped and not drl and not other:  # e.g. the CUDA rows without CUDA
        return out | {"status": skipped[0]}
    by_seed = {r["seed"]: r for r in other}
    per_seed = [{"seed": d["seed"], "drl_sps": d["sps"], "peer_sps": by_seed[d["seed"]]["sps"],
                 "ratio": _ratio(d["sps"], by_seed[d["seed"]]["sps"])} for d in drl if d["seed"] in by_seed]
    ratios = [p["ratio"] for p in per_seed if p["ratio"] is not None]
    ratio, target = (statistics.median(ratios) if ratios else None), row.get("target_ratio")
    drl_returns, peer_returns = _side_returns(drl), _side_returns(other)
    return out | {
        "num_envs": drl[0]["num_envs"] if drl else None, "steps": drl[0]["steps"] if drl else None,
        "peer_steps": other[0]["steps"] if other else None, "per_seed": per_seed, "median_ratio": ratio,
        "drl_median_sps": _stats([r["sps"] for r in drl])["median"],
        "peer_median_sps": _stats([r["sps"] for r in other])["median"],
        "speed_verdict": None if target is None or ratio is None else ("met" if ratio >= target else "not met"),
        "drl": drl_returns, "peer_returns": peer_returns,
        "eval_not_worse": not_worse(drl_returns["per_seed_eval"], peer_returns["per_seed_eval"]),
        "train_not_worse": not_worse(drl_returns["per_seed_train"], peer_returns["per_seed_train"]),
    }


def compare(rows: list[dict], runs: list[dict], floor: dict[str, Any] | None = None) -> dict[str, list[dict]]:
    """``{"throughput", "return", "cartpole_solve", "off_policy", "batched"}``: one entry per row of each kind.

    ``floor``: the SAC update's floor (``benchmarks.run --floor``), attached to the SAC rows.
    """
    out: dict[str, list[dict]] = {"throughput": [], "return": [], "cartpole_solve": [], "off_policy": [],
                                  "batched": []}
    for row in rows:
        if row["kind"] == "ppo":
            out["throughput"].append(_throughput(row, runs))
            out["return"].append(_returns(row, runs))
        elif row["kind"] == "solve":
            out["cartpole_solve"].append(_solve(row, runs))
        elif row["kind"] == "offpolicy":
            out["off_policy"].extend(_offpolicy_rows(row, runs, floor))
        elif row["kind"] == "batched":
            out["batched"].append(_batched(row, runs))
    return out
