"""`drl eval --video` on every kind of env: torch-batched classic control and MJWarp (rendered from the
batch itself), gymnasium classic control, toy-text (0-d discrete actions) and MiniGrid (text mission
dropped by the adapter); unique names under the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from drl.cli import main

imageio = pytest.importorskip("imageio.v2")
pytest.importorskip("imageio_ffmpeg")

TINY = ["--steps", "64", "--num-envs", "2", "--no-progress", "--device", "cpu", "--set", "algo.num_steps=32",
        "--set", "algo.minibatch_size=32", "--set", "algo.num_epochs=1", "--set", "eval_episodes=1",
        "--set", "env.num_eval_envs=1", "--set", "log_interval=-1"]


def _train(tmp_path: Path, env_id: str, *extra: str) -> Path:
    run_dir = tmp_path / "run"
    assert main(["train", "ppo", "--env", env_id, "--run-dir", str(run_dir), *TINY, *extra]) == 0
    return run_dir


def _eval_video(run_dir: Path, capsys, *extra: str) -> dict:
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1", "--video", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("env_id, extra", [
    ("drl/CartPole-v0", []),
    ("drl/Pendulum-v0", ["--set", "env.kwargs={max_episode_steps: 20}"]),
    ("CartPole-v1", []),
    ("FrozenLake-v1", []),
    ("MiniGrid-Empty-5x5-v0", ["--set", "env.kwargs={max_steps: 12}"]),
])
def test_eval_video_writes_new_mp4_under_the_run(tmp_path, capsys, env_id, extra):
    if env_id.startswith("MiniGrid"):
        pytest.importorskip("minigrid")
    run_dir = _train(tmp_path, env_id, *extra)
    first = _eval_video(run_dir, capsys)
    second = _eval_video(run_dir, capsys)
    paths = [Path(first["video"]), Path(second["video"])]
    assert paths[0] != paths[1] and all(p.parent == run_dir / "videos" for p in paths)
    assert sorted(run_dir.joinpath("videos").glob("*.mp4")) == sorted(paths)  # two evals, two files
    assert paths[0].name.startswith("run-best-") and paths[1].name.startswith("run-best-")
    frames = imageio.mimread(paths[0], memtest=False)
    assert len(frames) == first["video_frames"] > 1
    assert frames[0].ndim == 3 and frames[0].shape[-1] == 3 and frames[0].dtype == np.uint8


def test_video_dir_option_and_checkpoint_in_name(tmp_path, capsys):
    run_dir = _train(tmp_path, "drl/CartPole-v0")
    result = _eval_video(run_dir, capsys, "--video-dir", str(tmp_path / "vids"), "--checkpoint", "latest")
    path = Path(result["video"])
    assert path.parent == tmp_path / "vids" and path.name.startswith("run-latest-") and path.stat().st_size > 1000


def test_video_follows_the_training_obs_pipeline(tmp_path, capsys):
    """The recorded episode's return equals a deterministic evaluation episode with the same seed."""
    from drl import api
    from drl.runners.on_policy import evaluate_policy
    from envs import make_vec_env

    run_dir = _train(tmp_path, "drl/Pendulum-v0", "--set", "env.kwargs={max_episode_steps: 15}",
                     "--set", "algo.normalize_obs=true")
    result = _eval_video(run_dir, capsys)
    agent, cfg = api.load_agent(run_dir)
    env = make_vec_env(cfg.env.id, 1, torch.device("cpu"), "sync", cfg.env.kwargs)
    expected = evaluate_policy(agent, env, 1, seed=cfg.seed + 1_000_003)[0]
    assert result["video_return"] == pytest.approx(expected, rel=1e-6)
    assert result["video_frames"] == 15  # first obs + 14 steps; the 15th step ends the episode


def test_torch_classic_frames_equal_gymnasium_renderer():
    import gymnasium as gym

    from envs import make_vec_env

    env = make_vec_env("drl/CartPole-v0", 3, env_kwargs={"randomize": {"length": (0.3, 1.0)}})
    env.reset(seed=4)
    reference = gym.make("CartPole-v1", render_mode="rgb_array").unwrapped
    reference.reset(seed=0)
    reference.state = env.state[2].double().numpy()
    reference.length = float(env.length[2])
    frame = env.render(2)
    assert frame.dtype == np.uint8 and frame.shape == (400, 600, 3)
    assert np.array_equal(frame, reference.render())
    with pytest.raises(IndexError, match="render index 3 is out of range for 3 envs"):
        env.render(3)
    env.close()


def test_mjwarp_render_frame(tmp_path):
    pytest.importorskip("mujoco_warp")
    from envs import make_vec_env
    from envs.mjwarp.render import RenderUnavailableError

    env = make_vec_env("drl/HalfCheetah-v0", 2, env_kwargs={"max_episode_steps": 10})
    env.reset(seed=0)
    try:
        first = env.render(0)
    except RenderUnavailableError as err:
        pytest.skip(f"no off-screen OpenGL here: {err}")
    for _ in range(5):
        env.step(torch.ones(2, 6))
    moved = env.render(0)
    assert first.shape == (480, 480, 3) and first.dtype == np.uint8
    assert not np.array_equal(first, moved)
    env.close()


def test_panda_render_frame():
    pytest.importorskip("pybullet")
    from envs import make_vec_env

    env = make_vec_env("drl/PandaReach-v0", 2)
    env.reset(seed=0)
    frame = env.render(1)
    assert frame.shape == (240, 240, 3) and frame.dtype == np.uint8 and frame.std() > 0
    assert env.render_fps == 24
    env.close()


def test_mjwarp_record_video_from_the_batched_env(tmp_path):
    """MJWarp: the episode is recorded from the batched env itself (num_envs=1), frames from render()."""
    pytest.importorskip("mujoco_warp")
    from drl import api
    from drl.registry import AGENTS
    from envs import make_vec_env
    from envs.mjwarp.render import RenderUnavailableError

    cfg = api.load_config("ppo", "drl/Hopper-v0", overrides={"device": "cpu",
                                                             "env": {"kwargs": {"max_episode_steps": 6}}})
    probe = make_vec_env(cfg.env.id, 1, torch.device("cpu"), "sync", cfg.env.kwargs)
    agent = AGENTS["ppo"].agent_class(probe.single_observation_space, probe.single_action_space, cfg.algo, 1,
                                      torch.device("cpu"))
    probe.close()
    try:
        path, frames, _ = api.record_video(agent, cfg, tmp_path / "hopper.mp4", seed=0)
    except RenderUnavailableError as err:
        pytest.skip(f"no off-screen OpenGL here: {err}")
    assert frames == 6 and len(imageio.mimread(path, memtest=False)) == 6  # first obs + 5 steps; the 6th ends it


def test_failed_recording_leaves_no_empty_file_and_one_error_line(tmp_path, capsys, monkeypatch):
    from drl import api

    run_dir = _train(tmp_path, "drl/CartPole-v0")

    def no_frames(*args, **kwargs):
        raise ValueError("env 'drl/CartPole-v0' cannot render frames, so --video is not available for it")

    monkeypatch.setattr(api, "record_video", no_frames)
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--episodes", "1", "--video"]) == 2
    assert capsys.readouterr().err == ("drl eval: error: env 'drl/CartPole-v0' cannot render frames, so --video is "
                                       "not available for it\n")
    assert list((run_dir / "videos").glob("*")) == []
