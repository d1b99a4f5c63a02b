"""Embedding-similarity rewards (drl.wrappers.embedding_reward, drl.nn.encoders): VLM-RM's reward against hand
values, encoder plug-in shapes (tensor and dict obs, import paths, files), goals from demos and from text,
learner state, one-line config errors, and a PPO run through ``wrappers:`` that logs the env's own return."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from pendulum_wrappers import PENDULUM, ppo_config, save_pendulum_demos

from drl import api
from drl.checkpoint import load_checkpoint
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.nn.encoders import (
    MLPEncoder,
    RandomProjection,
    demo_progress,
    load_encoder,
    save_encoder,
    train_progress_encoder,
)
from drl.wrappers import make_run_env
from drl.wrappers.embedding_reward import EmbeddingReward, similarity_reward
from envs import make_vec_env
from envs.tasks.demos import FORMAT_VERSION, collect_demos, save_demos


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pendulum_demos(tmp_path_factory.mktemp("demos") / "pendulum.pt", 2)


def _hand_demos(obs: list[list[list[float]]], success: list[bool]) -> dict[str, Any]:
    """A demo dict of episodes ``obs[e] = [o_0, ..., o_T]`` (``T`` steps, ``o_T`` the true final obs)."""
    rows, nxt, index, done = [], [], [], []
    for e, episode in enumerate(obs):
        rows += episode[:-1]
        nxt += episode[1:]
        index += [e] * (len(episode) - 1)
        done += [False] * (len(episode) - 2) + [success[e]]
    m = len(rows)
    return {"obs/policy": torch.tensor(rows), "next_obs/policy": torch.tensor(nxt), "actions": torch.zeros(m, 1),
            "rewards": torch.zeros(m), "terminated": torch.tensor(done), "truncated": torch.zeros(m, dtype=torch.bool),
            "success": torch.tensor(done), "episode_index": torch.tensor(index),
            "meta": {"format_version": FORMAT_VERSION, "env_id": "hand", "episodes": len(obs), "success_rate": 0.5,
                     "seed": 0}}


class DictEnv(gym.vector.VectorEnv):
    """Dict obs ``{"policy": [N, 2], "image": [N, 3, 4, 4]}``; obs at step k are k + 1 everywhere, reward 7."""

    def __init__(self, num_envs: int = 3):
        self.num_envs, self.device, self.k = num_envs, torch.device("cpu"), 0
        self.single_observation_space = gym.spaces.Dict({"policy": gym.spaces.Box(-9, 9, (2,), np.float32),
                                                         "image": gym.spaces.Box(0, 1, (3, 4, 4), np.float32)})
        self.single_action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def _obs(self) -> dict[str, torch.Tensor]:
        return {"policy": torch.full((self.num_envs, 2), float(self.k)),
                "image": torch.full((self.num_envs, 3, 4, 4), float(self.k))}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        self.k = 0
        return self._obs(), {}

    def step(self, actions: torch.Tensor):
        self.k += 1
        done = torch.zeros(self.num_envs, dtype=torch.bool)
        return self._obs(), torch.full((self.num_envs,), 7.0), done, done, {"final_obs": self._obs()}


class ToyCLIP(torch.nn.Module):
    """A joint 'image-text' encoder: images -> their channel means [B, 3]; each known word -> a fixed vector."""

    WORDS = {"red": [1.0, 0.0, 0.0], "green": [0.0, 1.0, 0.0], "blue": [0.0, 0.0, 1.0], "wide": [1.0, 1.0, 1.0, 1.0]}

    def encode_image(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.mean(dim=(2, 3))

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        return torch.tensor([self.WORDS[p] for p in prompts])


# --- the reward against hand values ------------------------------------------------------------
def test_similarity_is_cosine_and_the_projection_matches_vlmrm_by_hand():
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    goal, baseline = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    torch.testing.assert_close(similarity_reward(x, goal), torch.tensor([0.6, 0.0]))
    torch.testing.assert_close(similarity_reward(x, goal, baseline, 0.0), torch.tensor([0.6, 0.0]))
    # x1 = (.6, .8, 0): v = x - g = (-.4, .8, 0), u = (1, -1, 0)/sqrt2, v.u = -1.2/sqrt2, proj = (-.6, .6, 0)
    # alpha 1: 1 - |(-.6, .6, 0)|^2 / 2 = 0.64; alpha .5: P v = (-.5, .7, 0) -> 1 - .74 / 2 = 0.63
    # x2 = (0, 0, 1): v = (-1, 0, 1), v.u = -1/sqrt2, proj = (-.5, .5, 0): alpha 1 -> 0.75; alpha .5: P v =
    # (-.75, .25, .5) -> 1 - .875 / 2 = 0.5625
    torch.testing.assert_close(similarity_reward(x, goal, baseline, 1.0), torch.tensor([0.64, 0.75]))
    torch.testing.assert_close(similarity_reward(x, goal, baseline, 0.5), torch.tensor([0.63, 0.5625]))
    torch.testing.assert_close(similarity_reward(x, 5 * goal, 2 * baseline, 0.5), torch.tensor([0.63, 0.5625]))


# --- encoders ----------------------------------------------------------------------------------
def test_import_path_factory_on_tensor_obs_and_the_logged_env_reward(demo_file):
    env = EmbeddingReward(make_vec_env(PENDULUM, 4, "cpu"), encoder="drl.nn.encoders:random_projection",
                          encoder_kwargs={"in_dim": 3, "out_dim": 5, "seed": 1}, goal_demos=str(demo_file),
                          successful_only=False, mode="add", coef=2.0, offset=-1.0)
    assert isinstance(env.encoder, RandomProjection) and env.embed_dim == 5 and env.goal.shape == (5,)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(torch.zeros(4, 1))
    expected = info["env_reward"] + 2.0 * (similarity_reward(env.encoder(info["final_obs"]), env.goal) - 1.0)
    assert reward.shape == (4,)
    torch.testing.assert_close(reward, expected)
    assert set(env.metrics()) == {"embedding_reward/similarity"}


def test_dict_obs_groups_a_user_module_by_import_path_and_text_goals(tmp_path, monkeypatch):
    (tmp_path / "my_encoders.py").write_text(
        "def scaled(scale: float = 1.0):\n    return lambda x: scale * x.flatten(1)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_encoders", raising=False)
    path = save_demos(_hand_demos([[[0.0, 1.0], [1.0, 0.0]]], [True]), tmp_path / "hand.pt")
    user = EmbeddingReward(DictEnv(), encoder="my_encoders:scaled", encoder_kwargs={"scale": -2.0},
                           goal_demos=str(path))  # the "policy" group [N, 2]
    torch.testing.assert_close(user.goal, torch.tensor([-1.0, 0.0]))
    user.reset()
    _, reward, _, _, _ = user.step(torch.zeros(3, 1))  # policy obs (1, 1): embedding (-2, -2)
    torch.testing.assert_close(reward, torch.full((3,), 1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="goal_text needs a joint image-text encoder with an encode_text"):
        EmbeddingReward(DictEnv(), encoder="my_encoders:scaled", obs_group="image", goal_text="red")
    env = EmbeddingReward(DictEnv(), encoder=ToyCLIP(), obs_group="image", goal_text=["red", "green"],
                          baseline_text="blue", alpha=0.5)
    assert env.embed(torch.zeros(5, 3, 4, 4)).shape == (5, 3)
    torch.testing.assert_close(env.goal, torch.tensor([1.0, 1.0, 0.0]) / math.sqrt(2))
    env.reset()
    _, reward, _, _, _ = env.step(torch.zeros(3, 1))  # every pixel 1: embedding (1, 1, 1)
    expected = similarity_reward(torch.ones(1, 3), env.goal, torch.tensor([0.0, 0.0, 1.0]), 0.5)
    torch.testing.assert_close(reward, expected.expand(3))


def test_goal_from_demos_is_the_mean_final_embedding(tmp_path):
    demos = _hand_demos([[[0.0, 1.0], [3.0, 4.0], [1.0, 0.0]],   # ends at (1, 0): success
                         [[0.0, 1.0], [0.0, 2.0]],               # ends at (0, 2): success
                         [[5.0, 5.0], [-1.0, 0.0]]], [True, True, False])
    path = save_demos(demos, tmp_path / "hand.pt")
    env = EmbeddingReward(DictEnv(), encoder=lambda x: x, goal_demos=str(path))  # identity on "policy"
    torch.testing.assert_close(env.goal, torch.tensor([1.0, 1.0]) / math.sqrt(2))  # (1,0), (0,1): mean direction
    two = EmbeddingReward(DictEnv(), encoder=lambda x: x, goal_demos=str(path), final_steps=2)
    # (3,4)/5, (1,0), (0,1): mean (1.6, 1.8) / 3
    torch.testing.assert_close(two.goal, torch.nn.functional.normalize(torch.tensor([1.6, 1.8]), dim=0))
    every = EmbeddingReward(DictEnv(), encoder=lambda x: x, goal_demos=str(path), successful_only=False)
    torch.testing.assert_close(every.goal, torch.tensor([0.0, 1.0]))  # (1,0) + (0,1) + (-1,0)
    calibrated = EmbeddingReward(DictEnv(), encoder=lambda x: x, goal_demos=str(path), baseline_demo_start=True,
                                 alpha=0.5, normalize="demos", coef=3.0)
    torch.testing.assert_close(calibrated.baseline, torch.tensor([0.0, 1.0]))  # both starts at (0, 1)
    start, goal = calibrated.calibration.tolist()
    env_obs = torch.tensor([[2.0, 2.0]])  # DictEnv's obs after 2 steps
    sim = similarity_reward(env_obs, calibrated.goal, calibrated.baseline, 0.5)
    calibrated.reset()
    calibrated.step(torch.zeros(3, 1))
    _, reward, _, _, _ = calibrated.step(torch.zeros(3, 1))
    torch.testing.assert_close(reward, (3.0 * (sim - goal) / (goal - start)).expand(3))


def test_progress_encoder_learns_progress_and_round_trips_as_a_file(tmp_path):
    torch.manual_seed(0)
    episodes = []
    for e in range(8):  # straight lines from a random start to (1, 1), 4 or 6 steps
        start, length = torch.randn(2), 4 + 2 * (e % 2)
        episodes.append([(start + (torch.ones(2) - start) * t / length).tolist() for t in range(length + 1)])
    demos = _hand_demos(episodes, [True] * 8)
    x, progress = demo_progress(demos)
    assert x.shape == (4 * 4 + 4 * 6 + 8, 2) and progress.max() == 1.0 and progress.min() == 0.0
    encoder = train_progress_encoder(demos, steps=300, out_dim=4, hidden=[32], seed=0)
    e = torch.nn.functional.normalize(encoder(x), dim=-1)
    goal = torch.nn.functional.normalize(e[progress == 1].mean(0), dim=0)
    sim = e @ goal
    assert sim[progress == 1].mean() > 0.9 and sim[progress == 0].mean() < 0.0  # untrained: both near the same
    binned = [sim[(progress >= a) & (progress < a + 0.25)].mean().item() for a in (0.0, 0.25, 0.5, 0.75)]
    assert binned == sorted(binned) and binned[-1] < sim[progress == 1].mean()  # similarity grows with progress
    path = save_encoder(encoder, tmp_path / "enc.pt")
    loaded = load_encoder(path)
    assert isinstance(loaded, MLPEncoder)
    torch.testing.assert_close(loaded(x), encoder(x))
    with pytest.raises(TypeError, match="save_encoder writes drl's encoders"):
        save_encoder(torch.nn.Linear(2, 2), tmp_path / "other.pt")


# --- learner state --------------------------------------------------------------------------------
def test_learner_state_round_trip(demo_file, tmp_path):
    path = save_encoder(RandomProjection(3, 6, seed=2), tmp_path / "rp.pt")
    env = EmbeddingReward(make_vec_env(PENDULUM, 2, "cpu"), encoder_file=str(path), goal_demos=str(demo_file),
                          successful_only=False, baseline_demo_start=True, alpha=0.3, normalize="demos")
    other = EmbeddingReward(make_vec_env(PENDULUM, 2, "cpu"), encoder_file=str(path), goal_demos=str(demo_file),
                            successful_only=False, final_steps=50)
    obs = torch.randn(5, 3)
    assert not torch.allclose(other.learned_reward(obs), env.learned_reward(obs))
    other.load_learner_state_dict(env.learner_state_dict())
    torch.testing.assert_close(other.learned_reward(obs), env.learned_reward(obs))
    assert other.alpha == 0.3 and other.calibration is not None
    small = EmbeddingReward(make_vec_env(PENDULUM, 2, "cpu"), encoder="drl.nn.encoders:random_projection",
                            encoder_kwargs={"in_dim": 3, "out_dim": 4}, goal_demos=str(demo_file),
                            successful_only=False)
    with pytest.raises(ValueError, match=r"saved goal embedding has shape \(6,\) but this encoder gives 4 dims"):
        small.load_learner_state_dict(env.learner_state_dict())


# --- config ----------------------------------------------------------------------------------------
def _spec(demo_file: Path, **extra: Any) -> dict[str, Any]:
    return {"name": "embedding_reward", "encoder": "drl.nn.encoders:random_projection",
            "encoder_kwargs": {"in_dim": 3, "out_dim": 8}, "goal_demos": str(demo_file), "successful_only": False,
            **extra}


def test_config_errors_are_one_line(demo_file, tmp_path):
    wrong = _hand_demos([[[0.0, 1.0], [1.0, 0.0]]], [True])
    save_demos(wrong, tmp_path / "wrong.pt")
    (tmp_path / "junk.pt").write_text("not an encoder")
    base = _spec(demo_file)
    cases = [
        (dict(base, goal_demos=str(tmp_path / "none.pt")), "none.pt' does not exist"),
        (dict(base, goal_demos=str(tmp_path / "wrong.pt")), "has obs/policy of shape (2,), but this env's is (3,)"),
        (dict(base, successful_only=True), "has no successful episode to take a goal from"),
        (dict(base, obs_group="critic"), "obs_group 'critic' asked of an observation without groups"),
        (dict(base, encoder="no_such_pkg.mod:make"), "cannot import 'no_such_pkg.mod' (ModuleNotFoundError"),
        (dict(base, encoder="drl.nn.encoders"), "encoder must be 'package.module:factory', got 'drl.nn.encoders'"),
        (dict(base, encoder="drl.nn.encoders:nothing"), "module 'drl.nn.encoders' has no callable 'nothing'"),
        (dict(base, encoder_kwargs={"in_dim": 3, "bad": 1}), "the factory failed (TypeError"),
        (dict(base, encoder_kwargs={"in_dim": 5}), "the encoder fails on observations of shape (1, 3)"),
        ({k: v for k, v in base.items() if k not in ("encoder", "encoder_kwargs")}, "give exactly one encoder"),
        (dict(base, encoder_file=str(tmp_path / "junk.pt"), encoder=None, encoder_kwargs=None),
         "is not a readable encoder file"),
        (dict(base, goal_text="a pendulum upright"), "give exactly one goal"),
        (dict(base, alpha=0.5), "alpha = 0.5 projects onto the goal-baseline line"),
        (dict(base, alpha=1.5), "alpha must be in [0, 1], got 1.5"),
        (dict(base, normalize="minmax"), "wrappers[0].normalize'"),
        ({"name": "embedding_reward", "encoder": "drl.nn.encoders:random_projection"}, "give exactly one goal"),
    ]
    for spec, message in cases:
        with pytest.raises(ConfigError) as err:
            make_run_env(ppo_config([spec]), 2, torch.device("cpu"))
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_text_and_obs_embeddings_of_different_sizes_are_one_error():
    with pytest.raises(ValueError, match=r"goal_text embeds to shape \(1, 4\) but the encoder maps observations "
                                         "to 3 dims"):
        EmbeddingReward(DictEnv(), encoder=ToyCLIP(), obs_group="image", goal_text="wide")


def test_ppo_through_config_logs_the_env_return_and_resumes_exactly(demo_file, tmp_path):
    spec = _spec(demo_file, baseline_demo_start=True, alpha=0.5, normalize="demos")
    run_dir, _ = api.train(ppo_config([spec], total_steps=1024), run_dir=tmp_path / "full")
    rows = read_metrics(run_dir / "metrics.csv")
    returns = [float(r["episode_return"]) for r in rows if r["episode_return"] != ""]
    sims = [float(r["embedding_reward/similarity"]) for r in rows if r["embedding_reward/similarity"] != ""]
    assert returns and all(r < -100 for r in returns)  # Pendulum's own return (costs over 200 steps)
    assert len(sims) == 4 and all(-1.0 <= s <= 1.0 for s in sims)
    full = load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    state = full["wrappers"][0]["state"]
    assert state["goal"].shape == (8,) and state["alpha"] == 0.5 and state["calibration"].shape == (2,)
    half_dir, _ = api.train(ppo_config([spec], total_steps=512), run_dir=tmp_path / "half")
    api.resume(half_dir, total_steps=1024)
    half = load_checkpoint(half_dir / "checkpoints" / "latest.pt")
    assert half["wrappers"][0]["name"] == "embedding_reward"
    torch.testing.assert_close(half["wrappers"][0]["state"]["goal"], state["goal"], rtol=0, atol=0)


# --- the demonstration script (benchmarks/embedding_reward.py) ------------------------------------
def test_benchmark_summary_and_claim_against_hand_values():
    from benchmarks.embedding_reward import claim_line, summarise

    def run(seed: int, final: float, untrained: float, random: float) -> dict[str, Any]:
        return {"seed": seed, "final": final, "untrained": untrained, "random": random, "demo_success": 1.0,
                "sps": 100.0}

    runs = [run(0, 0.6, 0.0, 0.02), run(1, 0.4, 0.1, 0.0), run(2, 0.2, 0.0, 0.04)]
    summary = summarise(runs)
    assert summary["final_mean"] == pytest.approx(0.4) and summary["untrained_mean"] == pytest.approx(0.1 / 3)
    assert summary["random_mean"] == pytest.approx(0.02) and summary["claim"]
    assert claim_line(summary).endswith("yes (final success 0.40 +- 0.16; step 0 0.03; random policy 0.02)")
    assert not summarise(runs[:2])["claim"]  # fewer than 3 seeds
    assert not summarise(runs + [run(3, 0.05, 0.1, 0.0)])["claim"]  # one seed below its step-0 success
    assert summarise(runs + [{"seed": 4, "error": "boom"}])["errors"] == 1


def test_benchmark_runs_end_to_end_at_a_tiny_budget(tmp_path, monkeypatch):
    import json

    import benchmarks.embedding_reward as bench
    from benchmarks.embedding_reward import main

    monkeypatch.setattr(bench, "EVAL_EPISODES", 10)
    monkeypatch.setattr(bench, "RANDOM_EPISODES", 10)

    for bad in (["--seeds", "0"], ["--action-noise", "-1"], ["--encoder-steps", "0"]):
        with pytest.raises(SystemExit):
            main(bad + ["--dry-run"])
    out = tmp_path / "out"
    assert main(["--seeds", "1", "--steps", "1024", "--demo-episodes", "4", "--encoder-steps", "20",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    (run,) = results["runs"]
    assert "error" not in run, run.get("error")
    assert [p["step"] for p in run["points"]] == [0, 1024] and 0.0 <= run["final"] <= 1.0
    assert run["points"][0]["success"] == run["untrained"]
    assert 0.0 <= run["untrained"] <= 1.0 and 0.0 <= run["random"] <= 1.0
    assert run["demo_success"] > 0.5 and run["similarity_first"] is not None
    report = (out / "report.md").read_text()
    assert "## Claim (issue 15)" in report and ">= 3 seeds): no" in report  # one seed cannot support the claim
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_camera_frames_of_a_panda_task_and_the_cli_flag(tmp_path):
    from drl.wrappers import parse_wrapper_flag

    kwargs = {"image": True, "image_size": 16, "max_episode_steps": 10}
    demos = collect_demos("drl/PandaReach-v0", 2, num_envs=2, env_kwargs=kwargs)
    assert demos["obs/image"].shape[1:] == (3, 16, 16)
    path = save_demos(demos, tmp_path / "frames.pt")
    spec = parse_wrapper_flag(f"embedding_reward:encoder=drl.nn.encoders:random_projection,encoder_kwargs="
                              f"{{in_dim: 768, out_dim: 8}},goal_demos={path},obs_group=image,final_steps=2")
    cfg = api.load_config("ppo", "drl/PandaReach-v0", overrides={"env": {"num_envs": 2, "kwargs": kwargs},
                                                                 "device": "cpu", "wrappers": [spec]})
    env = make_run_env(cfg, 2, torch.device("cpu"))
    try:
        assert isinstance(env, EmbeddingReward) and env.goal.shape == (8,)
        env.reset(seed=0)
        _, reward, _, _, info = env.step(torch.zeros(2, 3))
        frames = info["final_obs"]["image"]
        torch.testing.assert_close(reward, similarity_reward(env.encoder(frames), env.goal))
        assert info["env_reward"].shape == (2,) and not torch.equal(info["env_reward"], reward)
    finally:
        env.close()
