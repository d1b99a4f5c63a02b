"""``drl robustness``: a trained policy's return under model errors (RARL, Pinto et al. 2017, Sec. 5).

Body masses (named bodies or all; inertia scaled along) and geom friction are scaled over a grid,
the saved policy acts deterministically, and each grid point gets ``episodes`` episodes. Any saved
continuous-control run on a MuJoCo env works (PPO, SAC, TD3, RARL: a RARL run loads as its protagonist
on the plain env). Each env copy runs one episode at one grid point (:class:`envs.model_scaling.ModelScaler`
sets its parameters): on MJWarp a whole sweep is one batch of per-world parameters; on the CPU adapter
each sub-env owns its MuJoCo model, batched a few points at a time. The model is restored afterwards.

Outputs (``--out``, default ``<run>/robustness``): ``robustness.csv`` (one row per episode:
``mass_scale, friction_scale, episode, return``), ``robustness.json`` (per grid point: mean, std, min,
max; overall: mean over the grid, worst point mean) and plots: ``return_vs_<param>.png`` (mean with a
+-1 std band and the min) or, for ``both``, ``heatmap.png`` (mean return over mass x friction).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from drl.runners.base import episode_memory
from envs.model_scaling import PER_ENV_FIELDS, ModelScaler

__all__ = ["parse_scales", "grid_for", "run_grid", "summarize", "robustness", "label_grid_axes", "PARAMS"]

PARAMS = ("mass", "friction", "both")
DEFAULT_SCALES = "0.5:1.5:11"  # the paper's mass sweep: 0.5x to 1.5x, 11 points
MAX_CPU_ENVS = 64  # sub-envs of one CPU batch (each a gymnasium MuJoCo env in this process)
MAX_WARP_ENVS = 8192  # worlds of one MJWarp batch


def _new_sweep_folder(parent: Path, param: str) -> Path:
    """``parent/<param>-<YYYYmmdd-HHMMSS>[-k]``, created empty: a new sweep never overwrites an earlier one."""
    import time

    parent.mkdir(parents=True, exist_ok=True)
    base = f"{param}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 10_000):
        folder = parent / (base if k == 1 else f"{base}-{k}")
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"no free sweep folder name for '{base}' in '{parent}'")


def parse_scales(text: str) -> list[float]:
    """``"LOW:HIGH:COUNT"`` (evenly spaced, ends included) or ``"a,b,c"`` -> positive scales.

    Raises:
        ValueError: one line naming what is wrong.
    """
    try:
        if ":" in text:
            low, high, count = text.split(":")
            n = int(count)
            if n < 1:
                raise ValueError
            values = [float(low)] if n == 1 else np.linspace(float(low), float(high), n).tolist()
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--scales must be LOW:HIGH:COUNT (e.g. 0.5:1.5:11) or a list a,b,c of numbers, "
                         f"got {text!r}") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"--scales must all be finite and > 0, got {text!r}")
    return [round(v, 10) for v in values]


def grid_for(param: str, scales: Sequence[float]) -> list[tuple[float, float]]:
    """``(mass_scale, friction_scale)`` points: one axis swept (the other at 1), or the full product."""
    if param == "mass":
        return [(s, 1.0) for s in scales]
    if param == "friction":
        return [(1.0, s) for s in scales]
    if param == "both":
        return [(m, f) for m in scales for f in scales]
    raise ValueError(f"--param must be one of {list(PARAMS)}, got {param!r}")


@torch.inference_mode()
def run_grid(agent: Any, env: gym.vector.VectorEnv, grid: Sequence[tuple[float, float]], episodes: int, seed: int,
             bodies: Sequence[str] | None = None, max_steps: int = 100_000) -> list[dict[str, float]]:
    """One episode per env copy: ``env.num_envs`` must be a multiple of ``episodes``; the grid is run
    ``num_envs // episodes`` points at a time. Returns one row per episode. The env's model is
    restored afterwards (also when this raises).

    Raises:
        ValueError: ``num_envs`` not a multiple of ``episodes``; not a MuJoCo env; unknown bodies.
        RuntimeError: an episode ran past ``max_steps``.
    """
    num_envs = env.num_envs
    if num_envs % episodes:
        raise ValueError(f"the env has {num_envs} copies, not a multiple of episodes={episodes}")
    per_batch = num_envs // episodes
    scaler = ModelScaler(env, bodies)
    rows: list[dict[str, float]] = []
    try:
        for start in range(0, len(grid), per_batch):
            points = list(grid[start: start + per_batch])
            points += [(1.0, 1.0)] * (per_batch - len(points))  # padding envs: run, not reported
            mass = [p[0] for p in points for _ in range(episodes)]
            friction = [p[1] for p in points for _ in range(episodes)]
            scaler.apply(mass, friction)
            returns = _one_episode_each(agent, env, seed + start * episodes, max_steps)
            for k in range(min(per_batch, len(grid) - start)):
                for e in range(episodes):
                    rows.append({"mass_scale": points[k][0], "friction_scale": points[k][1], "episode": e,
                                 "return": float(returns[k * episodes + e])})
    finally:
        scaler.restore()
    return rows


def _one_episode_each(agent: Any, env: gym.vector.VectorEnv, seed: int, max_steps: int) -> np.ndarray:
    """The return ``[N]`` of each env copy's first episode (deterministic actions)."""
    n = env.num_envs
    running = torch.zeros(n, dtype=torch.float64)
    returns = torch.zeros(n, dtype=torch.float64)
    finished = torch.zeros(n, dtype=torch.bool)
    obs, _ = env.reset(seed=seed)
    with episode_memory(agent, n) as end_episodes:
        for _ in range(max_steps):
            action, _ = agent.act(obs, deterministic=True, update_stats=False)
            obs, reward, terminated, truncated, info = env.step(action)
            ended = (terminated | truncated).cpu()
            end_episodes(ended.to(terminated.device))
            running += torch.where(finished, 0.0, info.get("env_reward", reward).detach().cpu().double())
            newly = ended & ~finished
            returns[newly] = running[newly]
            finished |= ended
            if bool(finished.all()):
                return returns.numpy()
    raise RuntimeError(f"an episode ran past {max_steps} steps")


def summarize(rows: Sequence[dict[str, float]]) -> dict[str, Any]:
    """Per grid point ``mean, std, min, max`` of the returns; ``grid_mean`` (mean over points of the
    point means), ``worst_point_mean`` (lowest point mean) and ``worst_episode``."""
    points: dict[tuple[float, float], list[float]] = {}
    for row in rows:
        points.setdefault((row["mass_scale"], row["friction_scale"]), []).append(row["return"])
    table = [{"mass_scale": m, "friction_scale": f, "mean": float(np.mean(r)), "std": float(np.std(r)),
              "min": float(np.min(r)), "max": float(np.max(r)), "episodes": len(r)}
             for (m, f), r in points.items()]
    means = [p["mean"] for p in table]
    return {"points": table, "grid_mean": float(np.mean(means)), "worst_point_mean": float(np.min(means)),
            "worst_episode": float(min(r["return"] for r in rows))}


def label_grid_axes(ax: Any, masses: Sequence[float], frictions: Sequence[float]) -> None:
    """Label a heatmap's cells (rows: mass scales, columns: friction scales) with their scales."""
    for setter, values in ((ax.set_xticks, frictions), (ax.set_yticks, masses)):
        step = max(1, len(values) // 6)  # at most ~6 labels per axis
        ticks = list(range(0, len(values), step))
        setter(ticks, [f"{values[i]:g}" for i in ticks])
    ax.set_xlabel("friction scale")
    ax.set_ylabel("mass scale")


def _plot(summary: dict[str, Any], param: str, out: Path, title: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = summary["points"]
    if param == "both":
        masses = sorted({p["mass_scale"] for p in points})
        frictions = sorted({p["friction_scale"] for p in points})
        grid = np.full((len(masses), len(frictions)), np.nan)
        for p in points:
            grid[masses.index(p["mass_scale"]), frictions.index(p["friction_scale"])] = p["mean"]
        fig, ax = plt.subplots(figsize=(6, 5))
        image = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        label_grid_axes(ax, masses, frictions)
        fig.colorbar(image, ax=ax, label="mean return")
        path = out / "heatmap.png"
    else:
        key = "mass_scale" if param == "mass" else "friction_scale"
        points = sorted(points, key=lambda p: p[key])
        x = np.array([p[key] for p in points])
        mean = np.array([p["mean"] for p in points])
        std = np.array([p["std"] for p in points])
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(x, mean, marker="o", label="mean")
        ax.fill_between(x, mean - std, mean + std, alpha=0.25, label="+-1 std")
        ax.plot(x, [p["min"] for p in points], linestyle="--", label="min")
        ax.set_xlabel(f"{param} scale")
        ax.set_ylabel("return")
        ax.legend()
        path = out / f"return_vs_{param}.png"
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def robustness(run_dir: str | Path, param: str = "mass", scales: Sequence[float] | None = None,
               episodes: int = 10, bodies: Sequence[str] | None = None, out: str | Path | None = None,
               checkpoint: str = "best", device: str = "cpu", seed: int | None = None) -> dict[str, Any]:
    """Sweep a saved run over model scales; writes the CSV, JSON and plots into ``out``; returns the summary.

    Raises:
        ValueError: a bad ``param``/``scales``/``episodes``, a discrete-action run, a non-MuJoCo env, unknown bodies.
        FileNotFoundError, CheckpointError: as :func:`drl.api.load_agent`.
    """
    from drl.api import load_agent
    from drl.runners.base import EVAL_SEED_OFFSET
    from drl.wrappers import make_run_env
    from envs import ENVS
    from envs.core import resolve_device

    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {episodes}")
    scales = parse_scales(DEFAULT_SCALES) if scales is None else list(scales)
    grid = grid_for(param, scales)
    agent, cfg = load_agent(run_dir, checkpoint, device)
    kwargs = dict(cfg.env.kwargs)
    warp = cfg.env.id in ENVS and ENVS[cfg.env.id].backend == "mujoco-warp"
    if warp:  # one copy of the swept fields per world
        kwargs["per_env_model_fields"] = tuple(dict.fromkeys([*kwargs.get("per_env_model_fields", ()),
                                                              *PER_ENV_FIELDS]))
    points_per_batch = max(1, (MAX_WARP_ENVS if warp else MAX_CPU_ENVS) // episodes)
    num_envs = min(points_per_batch, len(grid)) * episodes
    env = make_run_env(cfg, num_envs, resolve_device(device), for_eval=True, env_kwargs=kwargs)
    try:
        if not isinstance(env.single_action_space, gym.spaces.Box):
            raise ValueError(f"drl robustness needs a continuous-control run; '{run_dir}' acts in "
                             f"{env.single_action_space}")
        rows = run_grid(agent, env, grid, episodes, cfg.seed + EVAL_SEED_OFFSET if seed is None else seed, bodies)
    finally:
        env.close()
    summary = {"run": Path(run_dir).resolve().name, "agent": cfg.agent, "env": cfg.env.id, "param": param,
               "scales": list(scales), "episodes": episodes, "bodies": list(bodies) if bodies else "all",
               "checkpoint": checkpoint, **summarize(rows)}
    folder = Path(out) if out is not None else _new_sweep_folder(Path(run_dir) / "robustness", param)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "robustness.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["mass_scale", "friction_scale", "episode", "return"])
        writer.writeheader()
        writer.writerows(rows)
    (folder / "robustness.json").write_text(json.dumps(summary, indent=2))
    plots = _plot(summary, param, folder, f"{cfg.agent} on {cfg.env.id}")
    summary["files"] = [str(folder / "robustness.csv"), str(folder / "robustness.json"), *map(str, plots)]
    return summary
