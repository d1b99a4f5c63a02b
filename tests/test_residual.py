"""Residual off-policy RL (drl/agents/residual.py): it starts exactly at the base, stays in bounds, never
updates the base, warms up as configured, and trains with one CPU env and with torch-batched envs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drl import api
from drl.agents.ppo_residual import PPOResidual
from drl.agents.residual import Residual, ResidualConfig, residual_action
from drl.base_policy import load_base_policy
from drl.cli import main
from drl.registry import AGENTS
from drl.runners.offline_to_online import OfflineToOnlineRunner
from drl.runners.on_policy import OnPolicyRunner
from drl.storage import ReplayBuffer
from envs import make_vec_env
from envs.tasks.demos import collect_demos, save_demos

SEARCH = "drl/ActiveSearch-v0"
PENDULUM = "drl/Pendulum-v0"


@pytest.fixture(scope="module")
def sb3_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    stable_baselines3 = pytest.importorskip("stable_baselines3")
    model = stable_baselines3.TD3("MlpPolicy", "Pendulum-v1", learning_starts=10, seed=0,
                                  policy_kwargs={"net_arch": [16, 16]})
    model.learn(30)
    path = tmp_path_factory.mktemp("sb3") / "td3.zip"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def search_demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_demos(collect_demos(SEARCH, episodes=6, seed=0, num_envs=3), tmp_path_factory.mktemp("d") / "d.pt")


@pytest.fixture(scope="module")
def bc_run(tmp_path_factory: pytest.TempPathFactory, search_demos: Path) -> Path:
    """A chunked BC base (k = 4, temporal ensembling) on the search task."""
    cfg = api.load_config("bc", SEARCH, overrides={
        "total_steps": 10, "eval_episodes": 2, "progress": False, "log_interval": -1,
        "env": {"num_envs": 1, "num_eval_envs": 2},
        "algo": {"demos": str(search_demos), "offline_updates": 50, "offline_log_interval": 50, "num_steps": 10,
                 "chunk_size": 4}})
    return api.train(cfg, tmp_path_factory.mktemp("bc") / "run")[0]


def _agent(env: object, base: Path, num_envs: int, **algo: object) -> Residual:
    cfg = ResidualConfig(base=str(base), compile=False, **algo)
    return Residual(env.single_observation_space, env.single_action_space, cfg, num_envs, torch.device("cpu"),
                    torch.Generator().manual_seed(0))


def test_residual_action_math() -> None:
    base = torch.tensor([[0.5, -0.95, 0.0]])
    out = torch.tensor([[0.0, -3.0, 1.0]])
    expected = torch.tensor([[0.5, max(-0.95 + 0.2 * torch.tanh(torch.tensor(-3.0)).item(), -1.0),
                              0.2 * torch.tanh(torch.tensor(1.0)).item()]])
    assert torch.allclose(residual_action(base, out, 0.2), expected)
    assert residual_action(base, out, 0.2)[0, 1].item() == -1.0  # clamped into the bounds


def test_zero_initialised_residual_is_exactly_the_base(sb3_zip: Path, bc_run: Path) -> None:
    env = make_vec_env(PENDULUM, 4, "cpu")
    obs, _ = env.reset(seed=1)
    agent = _agent(env, sb3_zip, 4)
    action, record = agent.act(obs, deterministic=True)
    assert torch.equal(action, agent.base(obs))
    assert torch.equal(record["actions"], record["base_actions"])
    env.close()
    # a chunked base: the residual's base state advances exactly as a lone copy of the base does
    env = make_vec_env(SEARCH, 2, "cpu")
    obs, _ = env.reset(seed=2)
    agent = _agent(env, bc_run, 2)
    lone = load_base_policy(bc_run, env.single_observation_space, env.single_action_space, 2)
    for _ in range(6):
        action, _ = agent.act(obs, deterministic=True)
        assert torch.equal(action, lone(obs))
        obs, _, terminated, truncated, _ = env.step(action)
        lone.end_episodes(terminated | truncated)
        agent.base.end_episodes(terminated | truncated)
    env.close()


def test_executed_action_stays_in_bounds(sb3_zip: Path) -> None:
    env = make_vec_env(PENDULUM, 64, "cpu")
    obs, _ = env.reset(seed=0)
    agent = _agent(env, sb3_zip, 64, residual_scale=2.0, exploration_noise=3.0)
    with torch.no_grad():
        for p in agent.actor.parameters():
            p.normal_(0.0, 5.0)  # a wild residual
    for deterministic in (True, False):
        action, record = agent.act(obs, deterministic=deterministic)
        assert bool((action.abs() <= 2.0).all()) and bool((record["actions"].abs() <= 1.0).all())
        assert bool((action.abs() == 2.0).any())  # the clamp is what kept it in
    warm, record = agent.random_act(obs)
    assert bool((warm.abs() <= 2.0).all())
    assert bool(((record["actions"] - record["base_actions"]).abs() <= agent.cfg.warmup_noise + 1e-6).all())
    env.close()


def test_critic_only_warm_up_then_delayed_actor(sb3_zip: Path) -> None:
    env = make_vec_env(PENDULUM, 2, "cpu")
    agent = _agent(env, sb3_zip, 2, critic_warmup_updates=4, policy_delay=2, batch_size=16, n_step=3, num_q=4)
    replay = ReplayBuffer(64, 2, agent.storage_fields(), torch.device("cpu"))
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        action, record = agent.random_act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        replay.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
    actor = [p.detach().clone() for p in agent.actor.parameters()]
    critic = [p.detach().clone() for p in agent.critic.parameters()]
    stats = agent.update(replay, 4)
    assert "actor_loss" not in stats
    assert all(torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(critic, agent.critic.parameters(), strict=True))
    stats = agent.update(replay, 2)  # updates 5 and 6: the 6th steps the actor (policy_delay 2)
    assert "actor_loss" in stats
    assert not all(torch.equal(a, b) for a, b in zip(actor, agent.actor.parameters(), strict=True))
    env.close()


@pytest.mark.parametrize("setting", ["sb3-batched", "chunked-demos-one-env"])
def test_training_never_updates_the_base(tmp_path: Path, sb3_zip: Path, bc_run: Path, search_demos: Path,
                                         setting: str) -> None:
    if setting == "sb3-batched":
        env_id, base, algo, num_envs = PENDULUM, sb3_zip, {}, 4
    else:
        env_id, base, algo, num_envs = SEARCH, bc_run, {"demos": str(search_demos)}, 1
    cfg = api.load_config("residual", env_id, overrides={
        "total_steps": 240, "eval_episodes": 2, "progress": False, "log_interval": -1, "eval_interval": 120,
        "env": {"num_envs": num_envs, "num_eval_envs": 2},
        "algo": {"base": str(base), "learning_starts": 40, "critic_warmup_updates": 20, "updates_per_step": 2,
                 "num_steps": 40, "batch_size": 32, "num_q": 4, "compile": False, **algo}})
    runner = OfflineToOnlineRunner(cfg, Residual, tmp_path / "run")
    agent = runner.agent
    base_module = agent.base.model.policy if setting == "sb3-batched" else agent.base.agent.net
    before = {k: v.clone() for k, v in base_module.state_dict().items()}
    last_layer = len(agent.actor.widths) - 2
    assert not getattr(agent.actor, f"weight{last_layer}").any()
    summary = runner.train()
    assert summary["steps"] == 240 and summary["final_eval_return"] is not None
    assert all(torch.equal(v, before[k]) for k, v in base_module.state_dict().items())
    assert not any(p.requires_grad for p in base_module.parameters())
    assert getattr(agent.actor, f"weight{last_layer}").any()  # the residual did train
    if setting != "sb3-batched":
        assert agent.demo_buffer is not None and "base_actions" in agent.demo_buffer.fields
        # the TD target's next base action is the one the chunked base executed at the next step
        data, rows = runner.replay.data, len(runner.replay)
        going_on = ~(data["terminated"][:rows - 1] | data["truncated"][:rows - 1])
        assert bool(going_on.any())
        assert torch.equal(data["next_base_actions"][:rows - 1][going_on], data["base_actions"][1:rows][going_on])
    result = api.evaluate(runner.run_dir, episodes=2)
    assert len(result["returns"]) == 2


def test_demos_of_another_env_or_reward_are_one_clear_error(tmp_path: Path, bc_run: Path, search_demos: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """A demo file recorded on another env id, or with other env kwargs (its rewards are used as stored), is
    refused in one line before the run folder is claimed."""
    data = torch.load(search_demos, weights_only=True)
    other_id = {**data, "meta": {**data["meta"], "env_id": "drl/PandaReach-v0"}}
    other_kwargs = {**data, "meta": {**data["meta"], "env_kwargs": {"reward_type": "dense"}}}
    for name, payload, expected in (
            ("id.pt", other_id, "was recorded on 'drl/PandaReach-v0', this run's env is 'drl/ActiveSearch-v0'"),
            ("kw.pt", other_kwargs, "was recorded with env kwargs {'reward_type': 'dense'}, this run's env.kwargs "
                                    "are {}")):
        torch.save(payload, tmp_path / name)
        code = main(["train", "residual", "--env", SEARCH, "--base", str(bc_run), "--demos", str(tmp_path / name),
                     "--steps", "64", "--no-progress", "--run-dir", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err
        assert not (tmp_path / "run").exists()


def test_ppo_residual_starts_at_the_base_and_never_updates_it(tmp_path: Path, sb3_zip: Path) -> None:
    cfg = api.load_config("ppo-residual", PENDULUM, overrides={
        "total_steps": 256, "eval_episodes": 2, "progress": False, "log_interval": -1,
        "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"base": str(sb3_zip), "num_steps": 32, "minibatch_size": 32, "num_epochs": 2, "compile": False,
                 "residual_scale": 0.5}})
    runner = OnPolicyRunner(cfg, PPOResidual, tmp_path / "run")
    agent = runner.agent
    env = make_vec_env(PENDULUM, 4, "cpu")
    obs, _ = env.reset(seed=1)
    action, record = agent.act(obs, deterministic=True, update_stats=False)
    assert torch.equal(action, agent.base(obs)) and torch.equal(record["actions"], torch.zeros(4, 1))
    explored, record = agent.act(obs, update_stats=False)
    assert bool((explored.abs() <= 2.0).all()) and not torch.equal(explored, action)
    before = {k: v.clone() for k, v in agent.base.model.policy.state_dict().items()}
    summary = runner.train()
    assert summary["steps"] == 256
    assert all(torch.equal(v, before[k]) for k, v in agent.base.model.policy.state_dict().items())
    assert agent.model.head.mean.weight.any()  # the residual policy did train
    env.close()


def test_cli_base_flag(tmp_path: Path, sb3_zip: Path, capsys: pytest.CaptureFixture) -> None:
    assert AGENTS["residual"].agent_class is Residual
    assert main(["train", "residual", "--env", PENDULUM, "--run-dir", str(tmp_path / "a")]) == 2
    assert "'algo.base': the residual needs a frozen base policy" in capsys.readouterr().err
    assert main(["train", "sac", "--base", str(sb3_zip)]) == 2
    err = capsys.readouterr().err
    assert "--base: agent 'sac' has no base policy; agents that take one: ['ppo-residual', 'residual']" in err
    assert main(["train", "residual", "--env", PENDULUM, "--base", str(tmp_path / "none"), "--run-dir",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert f"base policy '{tmp_path / 'none'}' does not exist" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_residual_improves_a_weak_base_fast(tmp_path: Path, sb3_zip: Path) -> None:
    """A nearly untrained SB3 base on Pendulum (about -1300 per episode): with a full-range residual the
    evaluation return rises well above the base's within 6000 env steps."""
    cfg = api.load_config("residual", PENDULUM, overrides={
        "total_steps": 6000, "eval_episodes": 4, "progress": False, "log_interval": -1, "eval_interval": 6000,
        "env": {"num_envs": 1, "num_eval_envs": 4},
        "algo": {"base": str(sb3_zip), "residual_scale": 1.0, "learning_starts": 500, "critic_warmup_updates": 500,
                 "updates_per_step": 1, "num_q": 2, "n_step": 1, "exploration_noise": 0.1, "compile": False}})
    base_cfg = api.load_config("residual", PENDULUM, overrides={
        "total_steps": 1, "eval_episodes": 4, "progress": False, "log_interval": -1,
        "env": {"num_envs": 1, "num_eval_envs": 4}, "algo": {"base": str(sb3_zip), "compile": False}})
    base_return = api.train(base_cfg, tmp_path / "base")[1]["final_eval_return"]
    summary = api.train(cfg, tmp_path / "residual")[1]
    assert summary["final_eval_return"] > base_return + 500


def test_benchmark_steps_to_and_ratio_against_hand_values(capsys: pytest.CaptureFixture) -> None:
    from benchmarks.residual import main as residual_benchmark
    from benchmarks.residual import steps_to, summarise

    points = [{"step": 100, "success": 0.3}, {"step": 200, "success": 0.1}, {"step": 300, "success": 0.4},
              {"step": 400, "success": 0.95}, {"step": 500, "success": 0.9}]
    assert steps_to(points, 0.3) == 300  # 100 reached it, but 200 fell below: only from 300 on does it stay
    assert steps_to(points, 0.9) == 400 and steps_to(points, 0.99) is None
    bases = [{"task": "t", "seed": 0, "base_success": 0.3, "expert_success": 1.0},
             {"task": "t", "seed": 1, "base_success": 0.0, "expert_success": 1.0}]
    runs = [{"task": "t", "variant": "residual", "seed": 0, "points": points, "final_success": 0.9},
            {"task": "t", "variant": "ppo-residual", "seed": 0, "final_success": 0.4,
             "points": [{"step": 30_000, "success": 0.35}]},
            {"task": "t", "variant": "residual", "seed": 1, "points": points, "final_success": 0.9}]
    (row,) = summarise(runs, bases, ["t"])
    residual = row["variants"]["residual"]
    assert residual["to_base"]["mean"] == 300 and residual["to_base_reached"] == 1  # seed 1's 0% base: no level
    assert residual["to_90"]["mean"] == 400 and residual["to_90_reached"] == 2
    assert row["ppo_over_residual_steps"] == 100.0 and row["base"]["mean"] == 0.15
    assert residual_benchmark(["--dry-run"]) == 0
    assert "residual TD3 (ResFiT)" in capsys.readouterr().out
