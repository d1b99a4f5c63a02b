"""RARL (drl/agents/rarl.py): the alternating schedule, the zero-sum records, evaluation with and without the
adversary, checkpoints, `drl robustness`, and learning InvertedPendulum against the adversary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from drl.agents.rarl import RARL, RARLConfig
from drl.api import evaluate, load_agent, load_config
from drl.cli import main
from drl.config import ConfigError
from drl.registry import resolve_config
from drl.robustness import grid_for, parse_scales, run_grid
from drl.storage import RolloutBuffer
from envs import make_vec_env

CPU = torch.device("cpu")
OBS = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
TWO_PLAYERS = gym.spaces.Tuple((gym.spaces.Box(-3.0, 3.0, (1,), np.float32),  # protagonist, adversary
                                gym.spaces.Box(-1.0, 1.0, (2,), np.float32)))
TINY = ["--num-envs", "2", "--no-progress", "--device", "cpu", "--set", "algo.num_steps=64",
        "--set", "algo.minibatch_size=64", "--set", "algo.num_epochs=1", "--set", "eval_episodes=2",
        "--set", "env.num_eval_envs=2"]


def make_agent(mu: int = 2, nu: int = 3, num_envs: int = 2) -> RARL:
    cfg = RARLConfig(num_steps=8, minibatch_size=8, num_epochs=1, protagonist_iterations=mu, adversary_iterations=nu,
                     compile=False, numba_actor=False)
    return RARL(OBS, TWO_PLAYERS, cfg, num_envs, CPU, torch.Generator().manual_seed(0))


def fill(agent: RARL, steps: int = 8, num_envs: int = 2) -> RolloutBuffer:
    storage = RolloutBuffer(steps, num_envs, agent.storage_fields(), CPU)
    torch.manual_seed(1)
    for _ in range(steps):
        obs = torch.randn(num_envs, 4)
        action, record = agent.act(obs)
        assert action.shape == (num_envs, 3)  # protagonist 1 + adversary 2
        reward = torch.randn(num_envs)
        storage.add(agent.record_outcome(record, reward, torch.zeros(num_envs, dtype=torch.bool),
                                         torch.zeros(num_envs, dtype=torch.bool), torch.randn(num_envs, 4)))
    return storage


def flat_params(ppo) -> torch.Tensor:
    return torch.cat([p.detach().flatten().clone() for p in ppo.model.parameters()])


def test_alternating_schedule_counts_and_frozen_player():
    agent = make_agent(mu=2, nu=3)
    storage = fill(agent)
    learners = []
    for _ in range(10):
        before = {name: flat_params(ppo) for name, ppo in agent.players.items()}
        expected = agent.learner
        metrics = agent.update(storage)
        learners.append(expected)
        frozen = "adversary" if expected == "protagonist" else "protagonist"
        assert torch.equal(flat_params(agent.players[frozen]), before[frozen])  # the other player is frozen
        assert not torch.equal(flat_params(agent.players[expected]), before[expected])
        assert f"{expected}/policy_loss" in metrics and f"{frozen}/policy_loss" not in metrics
        assert metrics["adversary_learns"] == float(expected == "adversary")
    assert learners == ["protagonist"] * 2 + ["adversary"] * 3 + ["protagonist"] * 2 + ["adversary"] * 3
    assert agent.updates == {"protagonist": 4, "adversary": 6}
    assert (metrics["protagonist_updates"], metrics["adversary_updates"]) == (4.0, 6.0)


def test_adversary_records_minus_the_reward_and_its_own_action():
    agent = make_agent()
    storage = fill(agent)
    torch.testing.assert_close(storage["adversary/rewards"], -storage["protagonist/rewards"])
    assert storage["protagonist/actions"].shape == (8, 2, 1) and storage["adversary/actions"].shape == (8, 2, 2)
    torch.testing.assert_close(storage["adversary/obs/policy"], storage["protagonist/obs/policy"])


def test_state_roundtrip_keeps_the_schedule_and_a_plain_box_is_the_protagonist_alone():
    agent = make_agent(mu=1, nu=2)
    storage = fill(agent)
    for _ in range(4):
        agent.update(storage)
    clone = make_agent(mu=1, nu=2)
    clone.load_state_dict(agent.state_dict())
    assert clone.iteration == 4 and clone.updates == agent.updates and clone.learner == agent.learner == "adversary"
    alone = RARL(OBS, TWO_PLAYERS.spaces[0], agent.cfg, 2, CPU)
    assert alone.adversary is None
    alone.load_state_dict(agent.state_dict())  # a training checkpoint loads into the protagonist alone
    obs = torch.randn(5, 4)
    action, _ = alone.act(obs, deterministic=True, update_stats=False)
    expected, _ = agent.protagonist.act(obs, deterministic=True, update_stats=False)
    assert action.shape == (5, 1) and torch.equal(action, expected)


def test_config_errors_name_the_key():
    base = {"agent": "rarl", "env": {"id": "InvertedPendulum-v5"}}
    for algo, key in (({"protagonist_iterations": 0}, "algo.protagonist_iterations"),
                      ({"adv_fraction": -1.0}, "algo.adv_fraction"),
                      ({"adversary_axes": "xq"}, "algo.adversary_axes"),
                      ({"rnn_type": "gru"}, "algo.rnn_type")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            resolve_config({**base, "algo": algo})


def test_robustness_grid_and_scales():
    assert parse_scales("0.5:1.5:11")[::5] == [0.5, 1.0, 1.5]
    assert parse_scales("0.8,1.2") == [0.8, 1.2]
    assert grid_for("both", [0.5, 1.0]) == [(0.5, 0.5), (0.5, 1.0), (1.0, 0.5), (1.0, 1.0)]
    for bad in ("0.5:1.5", "a:b:3", "0,1", "1:2:0"):
        with pytest.raises(ValueError, match="--scales"):
            parse_scales(bad)


class _PushRight:
    """A stand-in policy: always full force right (the cart runs off, the pole falls: short episodes)."""

    def act(self, obs, deterministic=False, update_stats=True):
        return torch.full((obs.shape[0], 1), 3.0), {}


def test_run_grid_uses_the_scaled_model_and_restores_it():
    env = make_vec_env("InvertedPendulum-v5", 4, CPU, "sync", {})  # 2 points x 2 episodes per batch
    models = [e.unwrapped.model for e in env.envs]
    nominal = [(m.body_mass.copy(), m.geom_friction.copy()) for m in models]
    rows = run_grid(_PushRight(), env, grid_for("mass", [0.5, 1.5, 1.0]), episodes=2, seed=0)
    assert [(r["mass_scale"], r["episode"]) for r in rows] == [(0.5, 0), (0.5, 1), (1.5, 0), (1.5, 1),
                                                               (1.0, 0), (1.0, 1)]
    returns = {r["mass_scale"]: r["return"] for r in rows}
    assert returns[0.5] != returns[1.5]  # the same push moves a lighter cart and pole differently
    for model, (mass, friction) in zip(models, nominal, strict=True):
        np.testing.assert_array_equal(model.body_mass, mass)
        np.testing.assert_array_equal(model.geom_friction, friction)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("rarl") / "run"
    assert main(["train", "rarl", "--env", "InvertedPendulum-v5", "--steps", "512", "--run-dir", str(run_dir),
                 *TINY]) == 0
    return run_dir


def test_run_logs_both_players_and_both_evaluations(tiny_run):
    with (tiny_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["adversary_learns"] for r in rows] == ["0.0", "1.0", "0.0", "1.0"]
    assert rows[0]["protagonist/policy_loss"] and not rows[0]["adversary/policy_loss"]
    assert rows[1]["adversary/policy_loss"] and not rows[1]["protagonist/policy_loss"]
    assert rows[-1]["eval_return"] and rows[-1]["eval_return_adversary"]


def test_eval_resume_and_robustness_of_a_rarl_run(tiny_run, tmp_path, capsys):
    agent, cfg = load_agent(tiny_run)
    assert agent.adversary is None  # evaluated on the plain env: the protagonist alone
    result = evaluate(tiny_run, episodes=2)
    assert np.isfinite(result["mean_return"])
    assert main(["train", "--resume", str(tiny_run), "--steps", "768", "--no-progress"]) == 0
    with (tiny_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and rows[-1]["protagonist_updates"] == "3.0" and rows[-1]["adversary_updates"] == "3.0"
    out = tmp_path / "rob"
    assert main(["robustness", str(tiny_run), "--param", "both", "--scales", "0.5,1.5", "--episodes", "1",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "robustness.json").read_text())
    assert len(summary["points"]) == 4 and (out / "heatmap.png").is_file() and (out / "robustness.csv").is_file()
    capsys.readouterr()
    assert main(["robustness", str(tiny_run), "--scales", "1:2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scales must be LOW:HIGH:COUNT" in err[0]
    assert main(["robustness", str(tiny_run), "--bodies", "wheel"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its bodies: ['world', 'cart', 'pole']" in err[0]


def test_rarl_learns_inverted_pendulum_against_its_adversary(tmp_path):
    """40,960 env steps (20,480 per player), 4 envs, adversary at adv_fraction 0.25: the protagonist
    balances the pole (an untrained policy: ~5-10 steps; solved: 1000)."""
    cfg = load_config("rarl", "InvertedPendulum-v5", overrides={
        "total_steps": 40960, "progress": False, "eval_interval": 40960, "eval_episodes": 5,
        "env": {"num_envs": 4}, "algo": {"num_steps": 512, "minibatch_size": 256, "learning_rate": 0.001,
                                         "compile": False}})
    from drl.api import train

    _, summary = train(cfg, tmp_path / "run")
    assert summary["final_eval_return"] >= 500


def test_benchmark_script_arguments(capsys):
    from benchmarks import rarl as bench

    assert bench.main(["--dry-run", "--scales", "0.5:1.5:3"]) == 0
    assert "mass/friction scales [0.5, 1.0, 1.5]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.parse_args(["--scales", "1:2"])
    assert "--scales must be LOW:HIGH:COUNT" in capsys.readouterr().err


def test_benchmark_append_keeps_the_runs_it_does_not_redo(tmp_path):
    """--append: earlier runs of other envs, methods or seeds stay; the redone ones go; commands are joined, envs
    merged, the earlier call recorded; another budget or sweep is refused."""
    from benchmarks import rarl as bench
    from benchmarks.harness import script

    runs = [{"env": env, "method": method, "seed": seed} for env in ("InvertedPendulum-v5", "Hopper-v5")
            for method in ("ppo", "rarl") for seed in (0, 1, 2)]
    sweep = {"steps": None, "episodes": 10, "scales": [0.5, 1.0], "heatmap_scales": [0.5, 1.0], "heatmap_episodes": 3,
             "eval_every": None, "overrides": [], "load_start": [0.1], "load_end": [0.2]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {"command": "python -m benchmarks.rarl --seeds 3", "date": "d0",
                                         "elapsed_s": 5.0, "envs": ["InvertedPendulum-v5", "Hopper-v5"], **sweep},
                                "runs": runs}))
    meta = {"command": "python -m benchmarks.rarl --envs Hopper-v5 --only rarl --seeds 2", "envs": ["Hopper-v5"],
            **sweep}
    grid = {"env": ["Hopper-v5"], "method": ["rarl"], "seed": [0, 1]}
    kept = script.append_runs(path, grid, meta, bench.SAME_ON_APPEND)
    assert kept == [r for r in runs if not (r["env"] == "Hopper-v5" and r["method"] == "rarl" and r["seed"] < 2)]
    assert len(kept) == 10
    assert meta["command"] == ("python -m benchmarks.rarl --seeds 3; "
                               "python -m benchmarks.rarl --envs Hopper-v5 --only rarl --seeds 2")
    assert meta["envs"] == ["InvertedPendulum-v5", "Hopper-v5"]
    assert [c["date"] for c in meta["earlier_calls"]] == ["d0"] and meta["earlier_calls"][0]["elapsed_s"] == 5.0
    assert script.append_runs(tmp_path / "missing.json", grid, dict(meta), bench.SAME_ON_APPEND) == []
    with pytest.raises(ValueError, match="--append: .* was made with episodes = 10, this call has 5"):
        script.append_runs(path, grid, {**meta, "episodes": 5}, bench.SAME_ON_APPEND)
    with pytest.raises(ValueError, match="--append: .* was made with overrides = \\[\\], this call has"):
        script.append_runs(path, grid, {**meta, "overrides": ["algo.num_steps=128"]}, bench.SAME_ON_APPEND)
    (tmp_path / "bad.json").write_text("{bad")
    with pytest.raises(ValueError, match="bad.json is not a results.json this script wrote"):
        script.append_runs(tmp_path / "bad.json", grid, dict(meta), bench.SAME_ON_APPEND)
    assert script.earlier_call_lines(meta)[0].startswith("Runs kept from an earlier call (`--append`): made d0, "
                                                         "which took 5 s")


@pytest.mark.slow
def test_benchmark_smoke_run(tmp_path):
    """The whole script on a tiny budget: both methods trained, swept, reported (about a minute)."""
    from benchmarks import rarl as bench

    code = bench.main(["--envs", "InvertedPendulum-v5", "--seeds", "1", "--steps", "1024", "--eval-every", "512",
                       "--episodes", "1", "--scales", "0.5,1.5", "--heatmap-scales", "0.5,1.5",
                       "--heatmap-episodes", "1", "--set", "env.num_envs=2", "--set", "algo.num_steps=256",
                       "--set", "algo.minibatch_size=128", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], "error" in r) for r in results["runs"]] == [("ppo", False), ("rarl", False)]
    rarl = results["runs"][1]
    assert rarl["steps"] == 2 * results["runs"][0]["steps"] and rarl["with_adversary"] is not None
    assert {p.name for p in tmp_path.glob("*.png")} == {f"InvertedPendulum-v5-{k}.png" for k in
                                                        ("mass", "friction", "heatmap")}


def test_train_on_an_env_the_adversary_cannot_push_is_one_line(tmp_path, capsys):
    for args, expected in ((["--env", "Pendulum-v1"], "config key 'env.id': env 'Pendulum-v1' is not a gymnasium "
                                                      "MuJoCo env"),
                           (["--env", "Hopper-v5", "--set", "algo.adversary_bodies=[feet]"],
                            "config key 'algo.adversary_bodies': adversary bodies ['feet'] are not bodies of the "
                            "Hopper model; its bodies: ['world', 'torso', 'thigh', 'leg', 'foot']")):
        assert main(["train", "rarl", *args, "--steps", "64", "--no-progress", "--run-dir", str(tmp_path / "r")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0]
        assert not (tmp_path / "r").exists()  # nothing claimed for a run that cannot start
