"""What the CLI and users call: ``train``, ``resume``, ``evaluate``, ``load_agent``."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from drl import distributed
from drl.agents.aacd import locate_chained_teacher
from drl.checkpoint import CheckpointError, load_agent_state, load_run_checkpoint
from drl.config import ConfigError, TrainConfig, load_yaml, merge
from drl.guards import atomic_write_text
from drl.registry import AGENTS, check_distributed, resolve_config
from drl.runners.base import episode_memory
from drl.runners.common import check_run_dir_free, find_resume_checkpoint
from drl.runners.on_policy import EVAL_SEED_OFFSET, evaluate_policy
from drl.wrappers import make_run_env
from envs.core import MissingDependencyError, resolve_device

__all__ = ["CONFIG_DIR", "config_path_for", "load_config", "train", "check_resume", "resume", "evaluate", "load_agent"]



def _config_dir() -> Path:
    """The tuned configs: ``drl/configs`` in a non-editable install (setup.py maps the top-level
    ``configs/`` there), else the checkout's top-level ``configs/`` (a source tree, an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "configs"
    return installed if installed.is_dir() else package.parent / "configs"


CONFIG_DIR = _config_dir()


def config_path_for(agent: str, env_id: str) -> Path:
    """``configs/<agent>/<env id>.yaml`` (``drl/`` becomes ``drl-``, ``mamujoco:`` becomes ``mamujoco-``)."""
    return CONFIG_DIR / agent / f"{env_id.replace('/', '-').replace(':', '-')}.yaml"


def load_config(agent: str | None = None, env_id: str | None = None, config_file: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Defaults <- tuned file for (agent, env) or ``config_file`` <- explicit fields <- overrides."""
    raw: dict[str, Any] = {}
    source = "defaults (no tuned config for this agent/env)"
    if config_file is not None:
        raw = load_yaml(config_file)
        source = f"config file {config_file}"
    else:
        guess_agent = agent or "ppo"
        guess_env = env_id or "CartPole-v1"
        tuned = config_path_for(guess_agent, guess_env)
        if tuned.is_file():
            raw = load_yaml(tuned)
            root = Path(__file__).resolve().parents[1]  # a source checkout names it by its place in the repo
            in_checkout = (root / "pyproject.toml").is_file() and tuned.resolve().is_relative_to(root)
            source = f"tuned config {tuned.resolve().relative_to(root) if in_checkout else tuned}"
    if agent is not None:
        raw["agent"] = agent
    if env_id is not None:
        raw = merge(raw, {"env": {"id": env_id}})
    if overrides:
        source += " + overrides"
    cfg = resolve_config(merge(raw, overrides or {}, replace=()))  # --set env.kwargs.x=1 keeps the other kwargs
    cfg.source = source  # printed at the start of training (not a config field: never saved)
    return cfg


def train(cfg: TrainConfig, run_dir: str | Path | None = None, overwrite: bool = False,
          eval_callbacks: Sequence[Callable[[int, float], None]] = ()) -> tuple[Path, dict[str, Any]]:
    """Train from scratch; returns ``(run folder, summary)``.

    Args:
        cfg: the resolved config.
        run_dir: the run folder; None: a new unique ``runs/<agent>-<env>-s<seed>-<time>[-k]``.
        overwrite: replace the drl run already in ``run_dir`` (otherwise a folder holding files is refused).
        eval_callbacks: each called as ``callback(global_step, mean eval return)`` after every evaluation (e.g.
            :func:`drl.tune.tune` reports to its trial); an exception raised there ends the run (envs closed).

    An agent whose registry entry has a ``prepare`` step (AACD: train the teacher first) runs it
    here, before its runner is built; it may choose and create ``run_dir`` and fill sub-folders of it.

    Raises:
        FileExistsError: ``run_dir`` holds files and ``overwrite`` is off (or it is not a drl run folder).
    """
    spec = AGENTS[cfg.agent]
    check_distributed(cfg.agent, distributed.world_size())
    if run_dir is not None and distributed.is_main():  # before building anything; the runner claims it atomically
        check_run_dir_free(run_dir, overwrite, getattr(spec.agent_class, "run_subfolders", ()))
    if spec.prepare is not None:  # e.g. AACD trains its teacher first, in a sub-folder of the run
        run_dir = spec.prepare(cfg, Path(run_dir) if run_dir is not None else None, overwrite)
    runner = spec.runner_class(cfg, spec.agent_class, Path(run_dir) if run_dir is not None else None,
                               overwrite=overwrite)
    runner.eval_callbacks.extend(eval_callbacks)
    try:
        summary = runner.train()
    except BaseException:
        for env in (runner.env, runner.eval_env):  # the runner closes them only when it ends normally
            with contextlib.suppress(Exception):
                env.close()
        raise
    return runner.run_dir, summary


RUN_CONFIG_KEYS = ("agent", "env", "total_steps", "seed", "algo")  # always in a run's config.yaml


def _config_of_run(run_dir: Path) -> TrainConfig:
    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        if (run_dir / "teacher" / "config.yaml").is_file():  # a chained AACD run stopped in stage 1
            raise FileNotFoundError(f"'{run_dir}' holds only the teacher (stage 1) of an aacd run: continue both "
                                    f"stages with the `drl train aacd ...` command that started it, with --run-dir "
                                    f"{run_dir}")
        raise FileNotFoundError(f"'{run_dir}' is not a drl run folder: no config.yaml in it")
    raw = load_yaml(config_file)
    # a run writes its config in full; without these keys, resuming would silently train defaults
    missing = [key for key in RUN_CONFIG_KEYS if key not in raw]
    if missing:
        raise ConfigError(f"'{config_file}' is {'empty' if not raw else f'missing {missing}'}, but a run writes its "
                          "whole config there; restore it (the checkpoints hold a copy under 'config') "
                          "or start a new run")
    return _in_run_folder(resolve_config(raw), run_dir)


def _in_run_folder(cfg: TrainConfig, run_dir: Path) -> TrainConfig:
    """``cfg`` of the run in ``run_dir``, with the paths of what the run keeps in its own sub-folders (a
    chained AACD run's teacher) pointing into ``run_dir``, wherever the run was trained."""
    if "teacher" in getattr(AGENTS[cfg.agent].agent_class, "run_subfolders", ()):
        locate_chained_teacher(cfg, run_dir)
    return cfg


def check_resume(run_dir: str | Path, total_steps: int | None = None, device: str | None = None,
                 nproc: int = 1) -> TrainConfig:
    """What ``drl train --resume`` checks before anything is built or written; returns the run's config
    (with the new total / device). The ``--nproc`` launcher calls it before starting torchrun.

    Raises:
        ConfigError: ``total_steps`` is below the newest checkpoint's step; ``nproc`` differs from the
            number of processes the run was trained with (the steps per iteration would change); the agent
            does not support ``nproc`` > 1.
        FileNotFoundError: ``run_dir`` is not a drl run folder.
        CheckpointError: a checkpoint cannot be loaded.
    """
    run_dir = Path(run_dir)
    cfg = _config_of_run(run_dir)
    changes = {key: value for key, value in (("total_steps", total_steps), ("device", device)) if value is not None}
    if changes:  # the new total / device is validated like any value
        cfg = _in_run_folder(resolve_config(merge(load_yaml(run_dir / "config.yaml"), changes)), run_dir)
    check_distributed(cfg.agent, nproc)
    found = find_resume_checkpoint(run_dir)
    if found is None:
        return cfg
    state = found[1]["runner"]
    done, saved = state["global_step"], state.get("nproc")  # no "nproc": a checkpoint from before it was recorded
    if saved is not None and saved != nproc:
        def flag(n: int) -> str:
            return f"--nproc {n}" if n > 1 else "no --nproc"

        raise ConfigError(f"'{run_dir}' was trained with {saved} process{'es' if saved > 1 else ''}, this resume "
                          f"would use {nproc} (the env steps per iteration would change): resume it with "
                          f"{flag(saved)}")
    if total_steps is not None and total_steps < done:
        raise ConfigError(f"--steps {total_steps} is below the {done} steps '{run_dir}' has already done; "
                          f"give --steps >= {done} to extend it")
    return cfg


def resume(run_dir: str | Path, total_steps: int | None = None, progress: bool | None = None,
           device: str | None = None) -> dict[str, Any]:
    """Continue a run from its newest checkpoint; returns the summary.

    Args:
        run_dir: the run folder.
        total_steps: a new total (extends a finished run, or shortens an unfinished one); it must be
            at least the checkpoint's step. None: the total the run was started with.
        progress: show the progress bar (None: as the run's config says).
        device: continue on another device (e.g. ``cpu`` for a run started on ``cuda``; None: the
            run's own). The checkpoint is loaded onto it; env state saved on another device type
            cannot be restored, so the envs are reset (with a warning) and the resume is not bitwise.

    A run with nothing left to do is not touched (no file is rewritten) and its summary comes back
    with ``already_finished: True``. A run stopped before its first checkpoint starts again from
    step 0 in the same folder. ``metrics.csv`` and TensorBoard continue exactly from the checkpoint.

    Raises:
        ConfigError: what :func:`check_resume` refuses (a total below the checkpoint's step, another number
            of processes than the run was trained with).
        FileNotFoundError: ``run_dir`` is not a drl run folder.
        CheckpointError: a checkpoint cannot be loaded.
    """
    run_dir = Path(run_dir)
    config_file = run_dir / "config.yaml"
    check_resume(run_dir, total_steps, device, distributed.world_size())  # before anything is built or written
    cfg = _config_of_run(run_dir)
    raw = load_yaml(config_file)
    changes = {key: value for key, value in (("total_steps", total_steps), ("device", device)) if value is not None}
    if changes:
        raw = merge(raw, changes)
        cfg = _in_run_folder(resolve_config(raw), run_dir)  # the new total / device is validated like any value
    if progress is not None:
        cfg.progress = progress
    cfg.source = f"{config_file} (resumed)"
    runner = AGENTS[cfg.agent].runner_class(cfg, AGENTS[cfg.agent].agent_class, run_dir, resume=True)
    done = runner.state["global_step"]
    if total_steps is not None:
        raw = merge(raw, {"total_steps": cfg.total_steps})  # whole iterations: the runner rounds up, and says so
    if changes and raw != load_yaml(config_file) and distributed.is_main():  # the config follows the new total/device
        atomic_write_text(config_file, yaml.safe_dump(raw, sort_keys=False))
    if runner.finished:
        runner.env.close()
        runner.eval_env.close()
        runner.close()
        summary_file = run_dir / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        if summary.get("steps") != done or summary.get("interrupted"):  # killed after the last checkpoint
            summary = runner._write_summary(False)
        return {**summary, "already_finished": True}
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
    from envs.multi_task_sources import min_copies

    probe = make_run_env(cfg, min_copies(cfg.env.id, cfg.env.kwargs), dev, for_eval=True)  # T for multi-task envs
    agent_class = AGENTS[cfg.agent].agent_class
    build = getattr(agent_class, "for_evaluation", agent_class)  # e.g. a DAgger student without its teacher
    agent = build(probe.single_observation_space, probe.single_action_space, cfg.algo, cfg.env.num_envs, dev)
    probe.close()
    load_agent_state(agent, ckpt["agent_state"], path)
    return agent, cfg


def evaluate(run_dir: str | Path, episodes: int = 10, checkpoint: str = "best", device: str = "cpu",
             video: bool = False, video_dir: str | Path | None = None, seed: int | None = None) -> dict[str, Any]:
    """Deterministic evaluation of a trained run; optionally records one episode to an mp4.

    The video goes to ``video_dir`` (default ``<run_dir>/videos``) as
    ``<run>-<checkpoint>-<YYYYmmdd-HHMMSS>[-k].mp4``: a new file every time, never an overwrite.
    """
    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if video:
        _require_video_writer()
        from envs.mjwarp.render import prepare_offscreen_gl

        prepare_offscreen_gl()  # before MuJoCo is imported: it picks its OpenGL backend once
    agent, cfg = load_agent(run_dir, checkpoint, device)
    seed = cfg.seed + EVAL_SEED_OFFSET if seed is None else seed
    from envs.multi_task import is_multi_task
    from envs.multi_task_sources import is_multi_task_id

    # a multi-task env's copies come in multiples of its tasks: its evaluation env keeps num_eval_envs
    num_envs = cfg.env.num_eval_envs if is_multi_task_id(cfg.env.id) else min(cfg.env.num_eval_envs, episodes)
    env = make_run_env(cfg, num_envs, resolve_device(device), for_eval=True)
    per_episode: list[tuple[int, float, float]] | None = [] if is_multi_task(env) else None
    returns = evaluate_policy(agent, env, episodes, seed, episodes_out=per_episode)
    agents = getattr(env, "agents", None)
    teams = getattr(env, "teams", None)
    win_rates = None
    if hasattr(agent, "team_policy") and teams is not None and len(teams) == 2:  # a two-team learner
        from drl.runners.competitive import team_win_rates

        win_rates = team_win_rates(agent, env, episodes, seed)
    env.close()
    team = returns
    if returns and isinstance(returns[0], list):  # a multi-agent env: per-agent returns; the team's is their mean
        table = np.asarray(returns, dtype=np.float64)
        team = table.mean(1).tolist()
    result: dict[str, Any] = {"episodes": episodes, "mean_return": float(np.mean(team)),
                              "std_return": float(np.std(team)), "returns": team}
    if team is not returns:
        names = agents if agents is not None else [f"agent_{i}" for i in range(table.shape[1])]
        result["agent_returns"] = {name: float(table[:, i].mean()) for i, name in enumerate(names)}
        if teams is not None and len(teams) > 1:  # competitive: each team's return, the mean of its agents'
            result["team_returns"] = {side: float(np.mean([result["agent_returns"][a] for a in members]))
                                      for side, members in teams.items()}
    if win_rates is not None:
        result["win_rates"] = win_rates
    if per_episode is not None:  # eval_return/<task> (and eval_success/<task>) as the training logs them
        from drl.runners.tasks import TaskStatistics

        result["tasks"] = TaskStatistics(env, 1, env.task_ids.device).evaluation(per_episode, env)
    if video:
        folder = Path(video_dir) if video_dir is not None else Path(run_dir) / "videos"
        label = checkpoint if checkpoint in ("best", "latest") else Path(checkpoint).stem
        out = unique_video_path(folder, f"{Path(run_dir).resolve().name}-{label}")
        try:
            path, frames, video_return = record_video(agent, cfg, out, seed)
        except BaseException:
            out.unlink(missing_ok=True)  # the name reserved for it: no empty mp4 left behind
            raise
        result.update({"video": str(path), "video_frames": frames, "video_return": video_return})
    return result


def _require_video_writer() -> None:
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401  (imageio needs it for mp4)
    except ImportError as err:
        raise MissingDependencyError("drl eval --video", "video", "imageio imageio-ffmpeg") from err


def unique_video_path(folder: Path, stem: str) -> Path:
    """Reserve ``folder/<stem>-<YYYYmmdd-HHMMSS>[-k].mp4`` (created empty, exclusively): never an existing file."""
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    for k in range(1, 10_000):
        path = folder / (f"{base}.mp4" if k == 1 else f"{base}-{k}.mp4")
        try:
            with path.open("xb"):
                return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free video name for '{base}' in '{folder}'")


def _frame(env: Any, env_id: str) -> np.ndarray:
    """Env 0 of a vector env as ``uint8 [H, W, 3]``."""
    try:
        frame = env.render()
    except NotImplementedError as err:
        raise ValueError(f"env '{env_id}' cannot render frames, so --video is not available for it") from err
    if isinstance(frame, (tuple, list)):
        frame = frame[0] if frame else None
    if frame is None:
        raise ValueError(f"env '{env_id}' returned no rgb_array frame, so --video is not available for it")
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise ValueError(f"env '{env_id}' renders frames of shape {frame.shape}, not an RGB image [H, W, 3]")
    return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)


def record_video(agent: Any, cfg: TrainConfig, out: Path, seed: int,
                 max_steps: int = 1000) -> tuple[Path, int, float]:
    """Roll out one deterministic episode and write it to the mp4 ``out``.

    The episode runs in a one-env copy of the training vector env (``make_run_env``: the same
    adapter, obs flattening and dropped entries as in training, e.g. MiniGrid's text mission), and
    actions come from ``agent.act(obs, deterministic=True, update_stats=False)`` on its obs, so the
    agent's own observation normaliser is applied exactly as in evaluation. ``drl/`` envs draw
    their env 0 (:meth:`render`); gymnasium envs are made with ``render_mode="rgb_array"``.

    Returns:
        ``(out, number of frames, episode return)``.

    Raises:
        ValueError: the env cannot render rgb_array frames.
        RenderUnavailableError: a MuJoCo env and no off-screen OpenGL backend.
    """
    import imageio.v2 as imageio

    kwargs = dict(cfg.env.kwargs)
    if not cfg.env.id.startswith("drl/"):
        kwargs["render_mode"] = "rgb_array"
    env = make_run_env(cfg, 1, agent.device, for_eval=True, env_kwargs=kwargs)
    episode_return = 0.0
    try:
        with episode_memory(agent, 1):  # one episode from a fresh memory (a recurrent policy's state)
            obs, _ = env.reset(seed=seed)
            frames = [_frame(env, cfg.env.id)]
            for _ in range(max_steps):
                action, _ = agent.act(obs, deterministic=True, update_stats=False)
                obs, reward, terminated, truncated, info = env.step(action)
                episode_return += float(info.get("env_reward", reward)[0].float().mean())  # multi-agent: team mean
                if bool(terminated[0] or truncated[0]):
                    break  # SAME_STEP autoreset: the env already shows the next episode's start
                frames.append(_frame(env, cfg.env.id))
        fps = getattr(env, "render_fps", None)
        if fps is None:
            inner = getattr(env, "envs", None)
            fps = (inner[0].metadata if inner else env.metadata).get("render_fps", 30)
    finally:
        env.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    imageio.mimsave(out, frames, fps=int(fps or 30), macro_block_size=1)
    return out, len(frames), episode_return
