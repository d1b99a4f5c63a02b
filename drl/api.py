"""What the CLI and users call: ``train``, ``resume``, ``evaluate``, ``load_agent``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drl.checkpoint import CheckpointError, load_agent_state, load_run_checkpoint
from drl.config import ConfigError, TrainConfig, load_yaml, merge
from drl.registry import AGENTS, resolve_config
from drl.runners.on_policy import EVAL_SEED_OFFSET, evaluate_policy
from envs import make_vec_env
from envs.core import MissingDependencyError, resolve_device

__all__ = ["CONFIG_DIR", "config_path_for", "load_config", "train", "resume", "evaluate", "load_agent"]

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def config_path_for(agent: str, env_id: str) -> Path:
    """``configs/<agent>/<env id>.yaml`` (a ``drl/`` namespace becomes ``drl-``)."""
    return CONFIG_DIR / agent / f"{env_id.replace('/', '-')}.yaml"


def load_config(agent: str | None = None, env_id: str | None = None, config_file: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- tuned file for (agent, env) or ``config_file`` <- explicit fields <- overrides."""
    raw: dict[str, Any] = {}
    if config_file is not None:
        raw = load_yaml(config_file)
    else:
        guess_agent = agent or "ppo"
        guess_env = env_id or "CartPole-v1"
        tuned = config_path_for(guess_agent, guess_env)
        if tuned.is_file():
            raw = load_yaml(tuned)
    if agent is not None:
        raw["agent"] = agent
    if env_id is not None:
        raw = merge(raw, {"env": {"id": env_id}})
    return resolve_config(merge(raw, overrides or {}))


def _default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.agent}-{cfg.env.id.replace('/', '-')}-s{cfg.seed}-{stamp}"


def train(cfg: TrainConfig, run_dir: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Train from scratch into ``run_dir`` (default ``runs/<agent>-<env>-s<seed>-<time>``)."""
    run_dir = Path(run_dir) if run_dir is not None else _default_run_dir(cfg)
    if (run_dir / "checkpoints" / "latest.pt").exists():
        raise FileExistsError(
            f"run folder '{run_dir}' already holds a run; continue it with --resume {run_dir} "
            "or choose another --run-dir"
        )
    runner = AGENTS[cfg.agent].runner_class(cfg, AGENTS[cfg.agent].agent_class, run_dir)
    return run_dir, runner.train()


RUN_CONFIG_KEYS = ("agent", "env", "total_steps", "seed", "algo")  # always in a run's config.yaml


def _config_of_run(run_dir: Path) -> TrainConfig:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(f"'{run_dir}' is not a drl run folder: no config.yaml in it")
    raw = load_yaml(config_file)
    # a run writes its config in full; without these keys, resuming would silently train defaults
    missing = [key for key in RUN_CONFIG_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"'{config_file}' is {'empty' if not raw else f'missing {missing}'}, but a run writes its "
                          "whole config there; restore it (the checkpoints hold a copy under 'config') "
                          "or start a new run")
    return resolve_config(raw)


def resume(run_dir: str | Path) -> dict[str, Any]:
    """Continue an interrupted run to the total steps it was started with."""
    run_dir = Path(run_dir)
    cfg = _config_of_run(run_dir)
    runner = AGENTS[cfg.agent].runner_class(cfg, AGENTS[cfg.agent].agent_class, run_dir, resume=True)
    return runner.train()


def load_agent(run_dir: str | Path, checkpoint: str = "best", device: str = "cpu") -> tuple[Any, TrainConfig]:
    """Rebuild a trained agent from a run folder (``checkpoint``: best | latest | a file path)."""
    run_dir = Path(run_dir)
    cfg = _config_of_run(run_dir)
    path = Path(checkpoint) if checkpoint not in ("best", "latest") else run_dir / "checkpoints" / f"{checkpoint}.pt"
    if checkpoint == "best" and not path.exists():
        path = run_dir / "checkpoints" / "latest.pt"
    dev = resolve_device(device)
    ckpt = load_run_checkpoint(path, map_location=dev, required={"agent": str, "agent_state": dict})
    if ckpt["agent"] != cfg.agent:
        raise CheckpointError(f"'{path}' holds agent '{ckpt.get('agent')}' but the run is '{cfg.agent}'")
    probe = make_vec_env(cfg.env.id, 1, dev, "sync", cfg.env.kwargs)
    agent = AGENTS[cfg.agent].agent_class(probe.single_observation_space, probe.single_action_space, cfg.algo,
                                          cfg.env.num_envs, dev)
    probe.close()
    load_agent_state(agent, ckpt["agent_state"], path)
    return agent, cfg


def evaluate(run_dir: str | Path, episodes: int = 10, checkpoint: str = "best", device: str = "cpu",
             video: bool = False, video_dir: str | Path = "videos", seed: int | None = None) -> dict[str, Any]:
    """Deterministic evaluation of a trained run; optionally records one episode to an mp4."""
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    agent, cfg = load_agent(run_dir, checkpoint, device)
    seed = cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
    env = make_vec_env(cfg.env.id, min(cfg.env.num_eval_envs, episodes), resolve_device(device), "sync",
                       cfg.env.kwargs)
    returns = evaluate_policy(agent, env, episodes, seed)
    env.close()
    result: dict[str, Any] = {"episodes": episodes, "mean_return": float(np.mean(returns)),
                              "std_return": float(np.std(returns)), "returns": returns}
    if video:
        name = f"{Path(run_dir).name}.mp4"
        result["video"] = str(record_video(agent, cfg, Path(video_dir) / name, seed))
    return result


def record_video(agent: Any, cfg: TrainConfig, out: Path, seed: int, max_steps: int = 1000) -> Path:
    """Roll out one deterministic episode in a rendering copy of the env and write an mp4."""
    import gymnasium as gym

    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (imageio needs it for mp4)
    except ImportError as err:
        raise MissingDependencyError("drl eval --video", "video", "imageio imageio-ffmpeg") from err
    if cfg.env.id.startswith("drl/"):
        raise ValueError(f"env '{cfg.env.id}' is a batched torch env without a renderer; "
                         "--video works with gymnasium ids (e.g. CartPole-v1, HalfCheetah-v5)")
    env = gym.make(cfg.env.id, render_mode="rgb_array", **cfg.env.kwargs)
    if not isinstance(env.observation_space, (gym.spaces.Box, gym.spaces.Dict)):
        env = gym.wrappers.FlattenObservation(env)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    for _ in range(max_steps):
        if isinstance(obs, dict):
            obs_t = {k: torch.as_tensor(v, dtype=torch.float32, device=agent.device).unsqueeze(0)
                     for k, v in obs.items()}
        else:
            obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=agent.device).unsqueeze(0)
        action, _ = agent.act(obs_t, deterministic=True, update_stats=False)
        obs, _, terminated, truncated, _ = env.step(action[0].cpu().numpy())
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    fps = env.metadata.get("render_fps", 30)
    imageio.mimsave(out, frames, fps=fps, macro_block_size=1)
    return out
