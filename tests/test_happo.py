"""HAPPO / MAPPO (drl/agents/happo.py), the multi-agent runner (drl/runners/multi_agent.py) and drl/Rendezvous-v0."""

from __future__ import annotations

import copy
import csv
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from agent_checks import assert_equal, rollout, train_interrupted_at_step

from drl import api
from drl.agents.happo import HAPPO, HAPPOConfig, compounding_factor
from drl.agents.ppo import PPO, PPOConfig
from drl.checkpoint import load_checkpoint
from drl.cli import main
from drl.config import ConfigError, TrainConfig
from drl.logging import TIMING_COLUMNS
from drl.registry import AGENTS, resolve_config
from drl.runners.base import EpisodeTracker
from drl.runners.multi_agent import MultiAgentOnPolicyRunner
from drl.storage import RolloutBuffer
from envs import make_vec_env
from envs.tasks.rendezvous import Rendezvous


def _box(n: int, bound: float = np.inf) -> gym.spaces.Box:
    return gym.spaces.Box(-bound, bound, (n,), np.float32)


def _validated(cfg: HAPPOConfig, num_envs: int) -> HAPPOConfig:
    train = TrainConfig(agent="happo")
    train.env.num_envs = num_envs
    cfg.validate("algo", train)
    return cfg


def _params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# --- the compounding factor ---------------------------------------------------------------------
def test_compounding_factor_hand_values_three_agents() -> None:
    """M starts at 1; after agents with ratios 2, 0.5, 3 on sample 0 (and 1, 4, 0.25 on sample 1)."""
    old = torch.zeros(2)
    factor = torch.ones(2)
    expected = [[2.0, 1.0], [1.0, 4.0], [3.0, 1.0]]
    for ratios, want in zip([[2.0, 1.0], [0.5, 4.0], [3.0, 0.25]], expected, strict=True):
        factor = compounding_factor(factor, torch.tensor(ratios).log(), old)
        assert torch.allclose(factor, torch.tensor(want))
    assert not factor.requires_grad


def _three_agent_agent(scheme: str = "happo") -> tuple[HAPPO, RolloutBuffer]:
    obs = gym.spaces.Dict({"a": _box(2), "b": _box(3), "c": _box(1), "state": _box(4)})
    act = gym.spaces.Dict({"a": _box(1, 1.0), "b": gym.spaces.Discrete(3), "c": _box(2, 1.0)})
    cfg = _validated(HAPPOConfig(num_steps=6, num_epochs=2, update_scheme=scheme, learning_rate=0.05), 4)
    agent = HAPPO(obs, act, cfg, 4, torch.device("cpu"), torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    storage = RolloutBuffer(6, 4, agent.storage_fields())
    for _ in range(6):
        sample = {k: torch.as_tensor(np.stack([s.sample() for _ in range(4)])) for k, s in obs.spaces.items()}
        _, record = agent.act(sample)
        final = {"state": torch.randn(4, 4)}
        storage.add(agent.record_outcome(record, torch.randn(4, 3), torch.rand(4) < 0.1, torch.rand(4) < 0.1, final))
    return agent, storage


def test_factor_each_agent_sees_is_the_product_of_the_earlier_agents_ratios(monkeypatch) -> None:
    """Fixed order c, a, b: c trains with M = 1, a with r_c, b with r_c * r_a (new/old ratios of the actors after
    their own update, on the whole rollout)."""
    agent, storage = _three_agent_agent()
    monkeypatch.setattr(agent, "_agent_order", lambda: [2, 0, 1])
    seen: dict[str, list[torch.Tensor]] = {a: [] for a in agent.agents}
    for name in agent.agents:
        step = agent.actor_steps[name]

        def recording(mb: dict[str, torch.Tensor], loss=step.loss_fn, name=name) -> dict[str, torch.Tensor]:
            seen[name].append(mb["factor"].clone())
            return loss(mb)
        step.loss_fn = recording
    agent.update(storage)

    def ratio(name: str) -> torch.Tensor:  # one actor's final new/old ratio per sample (flattened rollout)
        with torch.no_grad():
            obs, actions = storage[f"obs/{name}"].flatten(0, 1), storage[f"actions/{name}"].flatten(0, 1)
            new, _ = agent.actors[name].evaluate(obs, actions)
        return (new - storage[f"log_probs/{name}"].reshape(-1)).exp()

    # whole-rollout minibatch: every epoch sees the same factor, up to the sampler's shuffle
    for name, want in (("c", torch.ones(24)), ("a", ratio("c")), ("b", ratio("c") * ratio("a"))):
        assert len(seen[name]) == 2
        for got in seen[name]:
            assert torch.allclose(got.sort().values, want.sort().values, rtol=1e-5), name
    assert not torch.allclose(ratio("c"), torch.ones(24))  # the factor really moved


def test_mappo_trains_every_actor_with_factor_one(monkeypatch) -> None:
    agent, storage = _three_agent_agent("mappo")
    seen: list[torch.Tensor] = []
    for name in agent.agents:
        step = agent.actor_steps[name]

        def recording(mb: dict[str, torch.Tensor], loss=step.loss_fn) -> dict[str, torch.Tensor]:
            seen.append(mb["factor"].clone())
            return loss(mb)
        step.loss_fn = recording
    metrics = agent.update(storage)
    assert len(seen) == 6 and all(torch.equal(f, torch.ones(24)) for f in seen)
    assert metrics["factor_mean"] == 1.0


def test_happo_draws_a_random_order_from_the_generator() -> None:
    agent, _ = _three_agent_agent()
    orders = {tuple(agent._agent_order()) for _ in range(30)}
    assert len(orders) > 1 and all(sorted(o) == [0, 1, 2] for o in orders)


# --- one agent: HAPPO's update is PPO's -----------------------------------------------------------
def test_one_agent_happo_update_equals_ppo() -> None:
    """Same weights, same batch: after HAPPO's update (one actor, factor 1, MSE value loss, no value
    normalisation) actor and critic equal PPO's (one joint Adam step per minibatch is per-element, so it is
    the actor's and the critic's; gradient clipping is off: max_grad_norm far above the norms)."""
    steps, n = 8, 4
    common = dict(num_steps=steps, minibatch_size=steps * n, num_epochs=3, learning_rate=3e-3, ent_coef=0.01,
                  vf_coef=0.5, max_grad_norm=1e9, clip_coef=0.2, actor_hidden=[16], critic_hidden=[16],
                  activation="tanh", compile=False, numba_actor=False, critic_obs="state")
    obs_space = gym.spaces.Dict({"solo": _box(3), "state": _box(5)})
    ppo = PPO(obs_space, _box(2, 1.0), PPOConfig(actor_obs="solo", **common), n, torch.device("cpu"),
              torch.Generator().manual_seed(0))
    happo = HAPPO(obs_space, gym.spaces.Dict({"solo": _box(2, 1.0)}),
                  _validated(HAPPOConfig(value_norm=False, huber_delta=None, **common), n), n,
                  torch.device("cpu"), torch.Generator().manual_seed(1))
    actor = happo.actors["solo"]
    actor.actor_body.load_state_dict(ppo.model.actor_body.state_dict())
    actor.head.load_state_dict(ppo.model.head.state_dict())
    happo.critic.load_state_dict(ppo.model.critic.state_dict())

    torch.manual_seed(2)
    obs, state, final = torch.randn(steps, n, 3), torch.randn(steps, n, 5), torch.randn(steps, n, 5)
    actions = torch.randn(steps, n, 2).clamp(-1, 1)
    with torch.no_grad():
        log_probs, _ = ppo.model.evaluate(obs.flatten(0, 1), actions.flatten(0, 1))
    rewards, terminated, truncated = torch.randn(steps, n), torch.rand(steps, n) < 0.1, torch.rand(steps, n) < 0.1
    # the env contract: where an episode goes on, the final obs is the next step's obs (PPO relies on it)
    done = terminated | truncated
    final[:-1] = torch.where(done[:-1, :, None], final[:-1], state[1:])
    ppo_storage = RolloutBuffer(steps, n, ppo.storage_fields())
    happo_storage = RolloutBuffer(steps, n, happo.storage_fields())
    for t in range(steps):
        shared = {"terminated": terminated[t], "truncated": truncated[t]}
        ppo_storage.add({"obs/solo": obs[t], "obs/state": state[t], "final_obs/state": final[t],
                         "actions": actions[t], "log_probs": log_probs.view(steps, n)[t], "rewards": rewards[t],
                         **shared})
        happo_storage.add({"obs/solo": obs[t], "obs/state": state[t], "final_obs/state": final[t],
                           "actions/solo": actions[t], "log_probs/solo": log_probs.view(steps, n)[t],
                           "rewards": rewards[t, :, None], **shared})
    before = _params(actor)
    ppo_metrics, happo_metrics = ppo.update(ppo_storage), happo.update(happo_storage)
    moved = [not torch.equal(p.detach(), before[k]) for k, p in actor.named_parameters()]
    assert moved and all(moved)  # the update moved every parameter
    for key, value in _params(actor).items():
        part, name = key.split(".", 1)  # actor_body.* or head.*
        want = getattr(ppo.model, part).state_dict()[name]
        torch.testing.assert_close(value, want, rtol=1e-5, atol=1e-6)
    for key, value in happo.critic.state_dict().items():
        torch.testing.assert_close(value, ppo.model.critic.state_dict()[key], rtol=1e-5, atol=1e-6)
    for key in ("policy_loss", "entropy", "approx_kl", "explained_variance"):
        assert math.isclose(happo_metrics[key], ppo_metrics[key], rel_tol=1e-4, abs_tol=1e-6), key


# --- heterogeneous spaces, what each network reads ------------------------------------------------
@pytest.mark.parametrize("env_id", ["drl/Rendezvous-v0", "drl/RendezvousDiscrete-v0"])
def test_heterogeneous_spaces_flow_through_storage_and_update(env_id: str) -> None:
    env = make_vec_env(env_id, 4, "cpu")
    cfg = _validated(HAPPOConfig(num_steps=10, num_epochs=2, normalize_obs=True, normalize_reward=True), 4)
    agent = HAPPO(env.single_observation_space, env.single_action_space, cfg, 4, torch.device("cpu"),
                  torch.Generator().manual_seed(0))
    storage = rollout(agent, env, 10)
    discrete = "Discrete" in env_id
    assert storage["obs/rover"].shape == (10, 4, 4) and storage["obs/rail"].shape == (10, 4, 5)
    assert storage["obs/state"].shape == (10, 4, 4) and storage["rewards"].shape == (10, 4, 2)
    assert storage["actions/rover"].shape == ((10, 4) if discrete else (10, 4, 2))
    assert storage["actions/rail"].shape == ((10, 4) if discrete else (10, 4, 1))
    if discrete:
        assert storage["actions/rover"].dtype == torch.int64 and int(storage["actions/rover"].max()) < 5
        assert int(storage["actions/rail"].max()) < 3
    before = {a: _params(agent.actors[a]) for a in agent.agents} | {"critic": _params(agent.critic)}
    metrics = agent.update(storage)
    assert all(math.isfinite(v) for v in metrics.values())
    after = {a: _params(agent.actors[a]) for a in agent.agents} | {"critic": _params(agent.critic)}
    for name in before:
        assert any(not torch.equal(before[name][k], after[name][k]) for k in before[name]), name


def test_actors_read_only_their_own_obs_and_the_critic_only_the_state() -> None:
    env = Rendezvous(6)
    cfg = _validated(HAPPOConfig(num_steps=5, update_scheme="mappo"), 6)
    agent = HAPPO(env.single_observation_space, env.single_action_space, cfg, 6, torch.device("cpu"),
                  torch.Generator().manual_seed(0))
    obs, _ = env.reset(seed=0)
    clean, _ = agent.act(obs, deterministic=True)
    for own in agent.agents:  # every other entry, the state included, replaced by NaN
        poisoned = {k: v if k == own else torch.full_like(v, math.nan) for k, v in obs.items()}
        actions, _ = agent.act(poisoned, deterministic=True)
        assert torch.equal(actions[own], clean[own]), own
    storage = rollout(agent, env, 5)
    values = agent.compute_returns(storage, storage["rewards"].mean(-1))
    for name in agent.agents:
        storage[f"obs/{name}"].normal_()
    again = agent.compute_returns(storage, storage["rewards"].mean(-1))
    assert all(torch.equal(x, y) for x, y in zip(values, again, strict=True))
    # MAPPO's update of one actor does not change when another agent's stored obs do
    twin = HAPPO(env.single_observation_space, env.single_action_space, cfg, 6, torch.device("cpu"),
                 torch.Generator())
    twin.load_state_dict(copy.deepcopy(agent.state_dict()))
    agent.generator.manual_seed(4)
    twin.generator.manual_seed(4)
    storage_twin = RolloutBuffer(5, 6, agent.storage_fields())
    for t in range(5):
        storage_twin.add({k: storage[k][t] for k, _ in storage.items()})
    storage_twin["obs/rail"].normal_()
    agent.update(storage)
    twin.update(storage_twin)
    for k, v in _params(agent.actors["rover"]).items():
        assert torch.equal(v, _params(twin.actors["rover"])[k]), k
    assert not all(torch.equal(v, _params(twin.actors["rail"])[k]) for k, v in _params(agent.actors["rail"]).items())


def test_shared_actor_needs_a_homogeneous_team() -> None:
    env = Rendezvous(2)
    cfg = _validated(HAPPOConfig(num_steps=4, share_actor=True), 2)
    with pytest.raises(ConfigError, match=r"^config key 'algo.share_actor': the agents' observation or action"):
        HAPPO(env.single_observation_space, env.single_action_space, cfg, 2, torch.device("cpu"))
    obs = gym.spaces.Dict({"x": _box(3), "y": _box(3), "state": _box(6)})
    agent = HAPPO(obs, gym.spaces.Dict({"x": _box(2, 1.0), "y": _box(2, 1.0)}), cfg, 2, torch.device("cpu"))
    assert agent.actors["x"] is agent.actors["y"] and agent.actor_steps["x"] is agent.actor_steps["y"]
    assert len(agent.state_dict()["actor_optimizers"]) == 1


def test_single_agent_env_is_one_config_error() -> None:
    cfg = _validated(HAPPOConfig(num_steps=4), 2)
    with pytest.raises(ConfigError, match=r"^config key 'env.id': HAPPO needs a multi-agent env"):
        HAPPO(_box(3), _box(1, 1.0), cfg, 2, torch.device("cpu"))


@pytest.mark.parametrize(("algo", "key", "message"), [
    ({"critic_obs": "rover"}, "algo.critic_obs", "reads obs['state']"),
    ({"actor_obs": "critic"}, "algo.actor_obs", "reads its own agent's obs entry"),
    ({"huber_delta": 0.0}, "algo.huber_delta", "must be > 0 or null"),
    ({"critic_epochs": 0}, "algo.critic_epochs", "must be >= 1"),
    ({"update_scheme": "ippo"}, "algo.update_scheme", "must be one of ['happo', 'mappo']"),
    ({"rnn_type": "gru"}, "algo.rnn_type", "feed-forward"),
    ({"minibatch_size": 7}, "algo.minibatch_size", "must divide the rollout batch"),
    ({"clip_grad_per_network": False}, "algo.clip_grad_per_network", "its own optimiser"),
    ({"adam_eps": 1e-50}, "algo.adam_eps", "must be in [1.18e-38 (float32's smallest normal number), 1]"),
])
def test_bad_config_names_the_key(algo: dict, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_config({"agent": "happo", "algo": algo})
    assert f"'{key}'" in str(err.value) and message in str(err.value)


def test_registry_names() -> None:
    assert resolve_config({"agent": "happo"}).algo.update_scheme == "happo"
    assert resolve_config({"agent": "mappo"}).algo.update_scheme == "mappo"
    assert AGENTS["happo"].runner_class is MultiAgentOnPolicyRunner and AGENTS["mappo"].agent_class is HAPPO


# --- save / load --------------------------------------------------------------------------------
def test_save_load_round_trip() -> None:
    env = Rendezvous(4)
    cfg = _validated(HAPPOConfig(num_steps=8, normalize_obs=True), 4)
    agent = HAPPO(env.single_observation_space, env.single_action_space, cfg, 4, torch.device("cpu"),
                  torch.Generator().manual_seed(0))
    agent.update(rollout(agent, env, 8))
    other = HAPPO(env.single_observation_space, env.single_action_space, cfg, 4, torch.device("cpu"),
                  torch.Generator().manual_seed(5))
    other.load_state_dict(copy.deepcopy(agent.state_dict()))
    obs, _ = env.reset(seed=3)
    a, _ = agent.act(obs, deterministic=True, update_stats=False)
    b, _ = other.act(obs, deterministic=True, update_stats=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    storage = rollout(agent, env, 8, seed=4)
    agent.generator.manual_seed(9)
    other.generator.manual_seed(9)
    agent.update(storage)
    other.update(storage)
    for k, v in agent.state_dict()["actors"].items():
        assert torch.equal(v, other.state_dict()["actors"][k]), k


# --- episode tracking with a reward column per agent ------------------------------------------------
def test_episode_tracker_tracks_each_reward_column() -> None:
    tracker = EpisodeTracker(2, torch.device("cpu"), reward_shape=(2,))
    rewards = torch.tensor([[[1.0, 10.0], [2.0, 20.0]], [[3.0, 30.0], [4.0, 40.0]], [[5.0, 50.0], [6.0, 60.0]]])
    done = torch.tensor([[False, True], [True, False], [False, False]])
    mean, length, count = tracker.update(rewards, done)
    # env 1 ends at t=0 with (2, 20); env 0 at t=1 with (4, 40); team returns 11 and 22
    assert count == 2 and tracker.finished_columns.tolist() == [[2.0, 20.0], [4.0, 40.0]]
    assert tracker.finished_returns.tolist() == [11.0, 22.0] and mean == 16.5 and length == 1.5
    assert tracker.carry_return.tolist() == [[5.0, 50.0], [10.0, 100.0]]
    tracker.update(rewards[:1], torch.tensor([[True, True]]))
    assert tracker.finished_columns.tolist() == [[6.0, 60.0], [12.0, 120.0]]


# --- runs: learning, per-agent logs, eval, determinism, resume ---------------------------------------------
def _run_cfg(agent: str = "happo", env_id: str = "drl/Rendezvous-v0", **overrides: Any):
    raw = {"progress": False, "seed": 1, **overrides}
    return api.load_config(agent, env_id, overrides=raw)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(f)]


def test_happo_learns_rendezvous_and_logs_per_agent_returns(tmp_path: Path, capsys) -> None:
    """The tuned config (configs/happo/drl-Rendezvous-v0.yaml) cut to 38,400 steps: the first iteration's team
    loses 25-40 per episode; HAPPO's final greedy team under 14 (seeds 0 and 1 reach about -11)."""
    cfg = _run_cfg(total_steps=38_400, eval_interval=0)
    _, summary = api.train(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    first = float(rows[0]["episode_return"])
    assert first < -24, first
    assert summary["final_eval_return"] > max(-14, first + 10), (first, summary["final_eval_return"])
    assert {"ep_return/rover", "ep_return/rail", "eval_return/rover", "eval_return/rail"} <= set(rows[-1])
    assert float(rows[-1]["ep_return/rover"]) == float(rows[-1]["episode_return"])  # shared reward
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--episodes", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["agent_returns"]) == {"rover", "rail"} and out["mean_return"] > -15


@pytest.mark.parametrize("agent", ["happo", "mappo"])
def test_same_seed_same_run_and_bitwise_resume(agent: str, tmp_path: Path) -> None:
    """Two runs with one seed log the same rows; a run stopped after 3 of 6 iterations and resumed ends in the
    uninterrupted run's exact state (agent, tracker, env, RNGs) with the same rows (discrete actions)."""
    cfg = _run_cfg(agent, "drl/RendezvousDiscrete-v0", total_steps=6 * 40 * 4, eval_interval=320, eval_episodes=2,
                   env={"num_envs": 4, "num_eval_envs": 2, "kwargs": {"max_episode_steps": 15}},
                   algo={"num_steps": 40, "normalize_obs": True, "normalize_reward": True, "minibatch_size": 80})
    whole, again, parts = tmp_path / "whole", tmp_path / "again", tmp_path / "parts"
    spec = AGENTS[agent]
    MultiAgentOnPolicyRunner(cfg, spec.agent_class, whole).train()
    MultiAgentOnPolicyRunner(cfg, spec.agent_class, again).train()
    assert _rows(whole) == _rows(again) and len(_rows(whole)) == 6
    # stopped inside iteration 4: resume redoes it
    train_interrupted_at_step(MultiAgentOnPolicyRunner(cfg, spec.agent_class, parts), 3 * 40 + 5)
    assert load_checkpoint(parts / "checkpoints" / "latest.pt")["runner"]["iteration"] == 3
    MultiAgentOnPolicyRunner(cfg, spec.agent_class, parts, resume=True).train()
    assert _rows(parts) == _rows(whole)
    a, b = load_checkpoint(whole / "checkpoints" / "latest.pt"), load_checkpoint(parts / "checkpoints" / "latest.pt")
    for key in ("agent_state", "tracker", "generator", "env_state"):
        assert_equal(a[key], b[key], key)
    assert a["runner"]["agent_windows"] == b["runner"]["agent_windows"]


def test_benchmark_script_plumbing(tmp_path: Path) -> None:
    """benchmarks/happo.py on drl/Rendezvous-v0 at a tiny budget: both methods trained, summarised, plotted."""
    from benchmarks import happo as bench

    with pytest.raises(SystemExit):
        bench.parse_args(["--envs", "drl/CartPole-v0"])  # no configs/happo/drl-CartPole-v0.yaml
    code = bench.main(["--envs", "drl/Rendezvous-v0", "--seeds", "1", "--steps", "640", "--eval-every", "640",
                       "--set", "eval_episodes=2", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(r["method"], "error" in r) for r in results["runs"]] == [("happo", False), ("mappo", False)]
    assert all(set(r["per_agent"]) == {"rover", "rail"} and r["steps"] == 640 for r in results["runs"])
    assert [s["method"] for s in results["summary"]] == ["happo", "mappo"]
    report = (tmp_path / "report.md").read_text()
    assert "| drl/Rendezvous-v0 | HAPPO | 1 | 640 |" in report and "not judged (one seed)" in report
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # --append: MAPPO rerun alone; HAPPO's run is kept, the report names the earlier call
    code = bench.main(["--envs", "drl/Rendezvous-v0", "--seeds", "1", "--steps", "640", "--eval-every", "640",
                       "--only", "mappo", "--set", "eval_episodes=2", "--out", str(tmp_path), "--append"])
    assert code == 0
    appended = json.loads((tmp_path / "results.json").read_text())
    assert [r["method"] for r in appended["runs"]] == ["happo", "mappo"]
    assert appended["runs"][0] == results["runs"][0] and len(appended["meta"]["earlier_calls"]) == 1
    assert "Runs kept from an earlier call (`--append`)" in (tmp_path / "report.md").read_text()
    assert bench.main(["--envs", "drl/Rendezvous-v0", "--seeds", "1", "--steps", "1280", "--only", "mappo",
                       "--out", str(tmp_path), "--append"]) == 2  # another budget: refused, nothing written
    assert json.loads((tmp_path / "results.json").read_text()) == appended


def test_train_happo_on_a_single_agent_env_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "happo", "--env", "drl/CartPole-v0", "--steps", "64", "--no-progress",
                 "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "config key 'env.id': HAPPO needs a multi-agent env" in err[0]
    assert not (tmp_path / "r").exists()


def test_compile_auto_follows_ppos_rule(monkeypatch) -> None:
    from drl.agents import happo as module

    monkeypatch.setattr(module, "compiler_available", lambda: True)
    cfg = HAPPOConfig(num_steps=200, num_epochs=15)
    # 2,500 iterations x 1 minibatch x 15 epochs = 37,500 actor steps: below 50,000; 4 minibatches: above
    assert not module._should_compile(cfg, 20, 10_000_000) and not module._should_compile(cfg, 20, None)
    assert module._should_compile(replace(cfg, minibatch_size=1000), 20, 10_000_000)
    assert module._should_compile(replace(cfg, compile=True), 20, None)


def test_a_single_agent_agent_on_a_multi_agent_env_names_the_multi_agent_agents(tmp_path, capsys) -> None:
    """`drl train ppo|sac --env drl/Rendezvous-v0`: one line (exit 2) naming the env's agents and the agents that
    train multi-agent envs; no run folder written."""
    from drl.cli import main

    for agent in ("ppo", "sac"):
        code = main(["train", agent, "--env", "drl/Rendezvous-v0", "--steps", "64", "--no-progress",
                     "--run-dir", str(tmp_path / agent)])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err == (
            "drl train: error: config key 'env.id': drl/Rendezvous-v0 is a multi-agent env (agents ['rover', 'rail']), "
            f"but {agent} trains single-agent envs; use a multi-agent agent (happo, mappo, happo-competitive) or a "
            "single-agent env")
        assert not (tmp_path / agent).exists()
