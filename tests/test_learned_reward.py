"""Learned-reward wrappers (drl.wrappers.learned_reward, drl.wrappers.preference): the reward forms, losses
and penalties against hand values, the discriminator and the query selection at work, learner state, config
errors, and a PPO run through ``wrappers:`` that logs the env's own return."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pendulum_wrappers import PENDULUM, ppo_config, save_pendulum_demos

from drl import api
from drl.checkpoint import load_checkpoint
from drl.config import ConfigError
from drl.logging import read_metrics
from drl.wrappers import make_run_env
from drl.wrappers.learned_reward import (
    AdversarialReward,
    Discriminator,
    discriminator_loss,
    gradient_penalty,
    reward_from_logits,
)
from drl.wrappers.preference import (
    PreferenceReward,
    SyntheticOracle,
    bradley_terry_loss,
    cut_segments,
    select_by_disagreement,
)
from envs import make_vec_env
from envs.tasks.demos import load_demos, save_demos


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_pendulum_demos(tmp_path_factory.mktemp("demos") / "pendulum.pt", 4)


def _random_batch(env: Any, steps: int, seed: int = 0) -> dict[str, Any]:
    """``steps`` steps of uniform random actions through ``env`` (a recording wrapper); its record."""
    generator = torch.Generator().manual_seed(seed)
    env.reset(seed=seed)
    for _ in range(steps):
        env.step(torch.rand(env.num_envs, 1, generator=generator) * 4 - 2)
    return env.recorded_batch()


# --- GAIL / AIRL -------------------------------------------------------------------------------
def test_reward_forms_against_hand_values():
    logits = torch.tensor([0.0, math.log(3.0)])  # D = 0.5, 0.75
    torch.testing.assert_close(reward_from_logits(logits, "gail"), torch.tensor([math.log(2), math.log(4)]))
    torch.testing.assert_close(reward_from_logits(logits, "gail_log_d"), torch.tensor([-math.log(2), math.log(0.75)]))
    torch.testing.assert_close(reward_from_logits(logits, "airl"), torch.tensor([0.0, math.log(3)]))
    with pytest.raises(ValueError, match="reward_form must be one of"):
        reward_from_logits(logits, "wgan")


def test_discriminator_loss_and_gradient_penalty_against_hand_values():
    loss = discriminator_loss(torch.tensor([0.0]), torch.tensor([math.log(3.0)]))
    assert loss.item() == pytest.approx(math.log(2) + math.log(4))
    w = torch.tensor([3.0, 4.0, 12.0])  # a linear logit: its gradient is w wherever it is taken

    def logit(x: torch.Tensor) -> torch.Tensor:
        return x @ w

    demo, policy, eps = torch.randn(5, 3), torch.randn(5, 3), torch.rand(5, 1)
    assert gradient_penalty(logit, demo, policy, eps, 1.0).item() == pytest.approx((13 - 1) ** 2)
    assert gradient_penalty(logit, demo, policy, eps, 1.0, skip_last=1).item() == pytest.approx((5 - 1) ** 2)
    assert gradient_penalty(logit, demo, policy, eps, 0.0, skip_last=1).item() == pytest.approx(25.0)


def test_airl_logit_is_g_plus_discounted_h_difference_with_h_dropped_at_termination():
    disc = Discriminator(obs_dim=2, act_dim=1, hidden=[4], airl=True, state_only=False, gamma=0.9)
    with torch.no_grad():  # constant g = 1 and h = 2: f = 1 + 0.9 c 2 - 2
        for net, value in ((disc.g, 1.0), (disc.h, 2.0)):
            net[-1].weight.zero_()
            net[-1].bias.fill_(value)
    x = torch.randn(2, 2 + 1 + 2 + 1)
    x[:, -1] = torch.tensor([1.0, 0.0])  # continuing, terminated
    torch.testing.assert_close(disc(x), torch.tensor([1 + 0.9 * 2 - 2, 1 - 2.0]))


@pytest.mark.parametrize("form, state_only", [("gail", False), ("airl", False), ("gail", True)])
def test_discriminator_separates_demos_from_random_transitions(demo_file, form, state_only):
    env = AdversarialReward(make_vec_env(PENDULUM, 4, "cpu"), demos=str(demo_file), reward_form=form,
                            state_only=state_only, disc_epochs=150, minibatch_size=128, learning_rate=3e-3, gp_coef=1.0,
                            seed=0)
    batch = _random_batch(env, 64)
    demos = load_demos(demo_file)
    demo_x = env._pack(demos["obs/policy"], demos["actions"], demos["next_obs/policy"], demos["terminated"])
    with torch.no_grad():
        before = (env.disc(demo_x) > 0).float().mean().item()
    env.update(batch)
    policy_x = env._pack(batch["obs"].flatten(0, 1), batch["actions"].flatten(0, 1),
                         batch["next_obs"].flatten(0, 1), batch["terminated"].flatten(0, 1))
    with torch.no_grad():
        demo_acc = (env.disc(demo_x) > 0).float().mean().item()
        policy_acc = (env.disc(policy_x) < 0).float().mean().item()
        rewards = reward_from_logits(env.disc(demo_x), form).mean(), reward_from_logits(env.disc(policy_x), form).mean()
    assert demo_acc > 0.8 and policy_acc > 0.8, (before, demo_acc, policy_acc)  # chance: 0.5
    assert rewards[0] > rewards[1]  # the learned reward is higher on demo-like transitions


def test_gail_learner_state_round_trip(demo_file):
    env = AdversarialReward(make_vec_env(PENDULUM, 2, "cpu"), demos=str(demo_file), reward_form="airl", seed=0)
    env.update(_random_batch(env, 16))
    state = env.learner_state_dict()
    other = AdversarialReward(make_vec_env(PENDULUM, 2, "cpu"), demos=str(demo_file), reward_form="airl", seed=5)
    x = env.demo_x[:10]
    assert not torch.allclose(other.disc(x), env.disc(x))
    other.load_learner_state_dict(state)
    torch.testing.assert_close(other.disc(x), env.disc(x))
    torch.testing.assert_close(other.train_step.adam.exp_avg, env.train_step.adam.exp_avg)
    batch = _random_batch(env, 16, seed=3)
    assert other.update(batch) == env.update(batch)  # same weights, optimiser and draws: the same step


# --- preferences -------------------------------------------------------------------------------
def test_bradley_terry_loss_against_hand_values():
    ra, rb = torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    sp = math.log1p(math.exp(-1.0))  # -log sigmoid(1)
    expected = (sp + (1 + sp) + 0.5 * (sp + 1 + sp)) / 3  # p = 1, 0, 0.5 (softplus(1) = 1 + softplus(-1))
    assert bradley_terry_loss(ra, rb, torch.tensor([1.0, 0.0, 0.5])).item() == pytest.approx(expected)


def test_oracle_labels():
    def seg(returns: list[float]) -> dict[str, torch.Tensor]:
        r = torch.tensor(returns)[:, None].repeat(1, 4) / 4  # [Q, L=4], summing to `returns`
        return {"env_reward": r, "obs": torch.zeros(len(returns), 4, 1), "actions": torch.zeros(len(returns), 4, 1)}

    a, b = seg([3.0, 1.0, 2.0]), seg([1.0, 3.0, 2.0])
    torch.testing.assert_close(SyntheticOracle().label(a, b), torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(SyntheticOracle(flip_prob=1.0).label(a, b), torch.tensor([0.0, 1.0, 0.5]))
    many_a, many_b = seg([1.0] * 20000), seg([0.0] * 20000)  # Boltzmann: P[label 1] = sigmoid(1 / 1)
    share = SyntheticOracle(temperature=1.0, seed=0).label(many_a, many_b).mean().item()
    assert share == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.015)
    with pytest.raises(ValueError, match="oracle_flip_prob"):
        SyntheticOracle(flip_prob=1.5)


def test_selection_picks_the_most_disputed_pairs_and_segments_stay_in_one_episode():
    probs = torch.tensor([[0.5, 0.9, 0.1, 0.3], [0.5, 0.1, 0.2, 0.3]])  # std over members: 0, 0.4, 0.05, 0
    assert select_by_disagreement(probs, 2).tolist() == [1, 2]
    x = torch.arange(12.0).reshape(6, 2)  # [T=6, N=2]
    done = torch.zeros(6, 2, dtype=torch.bool)
    done[1, 0] = True  # env 0 ends at t = 1: its first window [0, 3) crosses the end
    done[5, 1] = True  # env 1 ends at t = 5, the last step of its second window: kept
    assert cut_segments(x, done, 3).tolist() == [[1.0, 3.0, 5.0], [6.0, 8.0, 10.0], [7.0, 9.0, 11.0]]


def test_pessimistic_reward_is_mean_minus_k_std(monkeypatch):
    env = PreferenceReward(make_vec_env(PENDULUM, 2, "cpu"), num_models=2, pessimism=1.0)
    monkeypatch.setattr(env, "member_rewards", lambda x: torch.tensor([[1.0, 2.0], [3.0, 2.0]]))
    torch.testing.assert_close(env.learned_reward(torch.zeros(2, 3), torch.zeros(2, 1)), torch.tensor([1.0, 2.0]))
    env.pessimism = 0.0
    torch.testing.assert_close(env.learned_reward(torch.zeros(2, 3), torch.zeros(2, 1)), torch.tensor([2.0, 2.0]))


def test_preference_queries_learn_the_true_order_and_state_round_trips():
    env = PreferenceReward(make_vec_env(PENDULUM, 4, "cpu"), segment_length=10, queries_per_update=40,
                           num_candidates=200, query_budget=100, epochs=30, learning_rate=3e-3, seed=0)
    for i in range(3):
        env.reset(seed=i)
        generator = torch.Generator().manual_seed(i)
        for _ in range(100):
            env.step(torch.rand(4, 1, generator=generator) * 4 - 2)
        metrics = env.update()
    assert env.queries == 100 and metrics["total_queries"] == 100.0  # the budget caps the third round at 20
    assert metrics["label_accuracy"] > 0.8  # the ensemble orders the labelled pairs as the oracle does
    state = env.learner_state_dict()
    other = PreferenceReward(make_vec_env(PENDULUM, 4, "cpu"), segment_length=10, seed=9)
    other.load_learner_state_dict(state)
    x = env.pool["x"][:5]
    torch.testing.assert_close(other.member_rewards(x), env.member_rewards(x))
    assert other.queries == 100 and torch.equal(other.labels["p"], env.labels["p"])


# --- config --------------------------------------------------------------------------------------
def test_config_errors_are_one_line(demo_file, tmp_path):
    bad_dims = load_demos(demo_file)
    for key in ("obs/policy", "next_obs/policy"):
        bad_dims[key] = torch.zeros(bad_dims[key].shape[0], 5)
    save_demos(bad_dims, tmp_path / "wrong.pt")
    cases = [
        ([{"name": "gail"}], "wrapper 'gail' needs ['demos']"),
        ([{"name": "gail", "demos": str(tmp_path / "none.pt")}], "none.pt' does not exist"),
        ([{"name": "gail", "demos": str(tmp_path / "wrong.pt")}], "has obs/policy of 5 dims and actions of 1, but "
                                                                   "this env's are 3 and 1"),
        ([{"name": "gail", "demos": str(demo_file), "reward_form": "wgan"}], "wrappers[0].reward_form'"),
        ([{"name": "gail", "demos": str(demo_file), "gp_coef": -1}], "gp_coef must be >= 0, got -1"),
        ([{"name": "preference", "queries_per_update": 20, "num_candidates": 10}],
         "num_candidates must be >= max(1, queries_per_update = 20), got 10"),
        ([{"name": "preference", "obs_group": "critic"}], "obs_group 'critic' asked of an observation without"),
    ]
    for wrappers, message in cases:
        with pytest.raises(ConfigError) as err:
            make_run_env(ppo_config(wrappers), 2, torch.device("cpu"))
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_relative_demo_path_is_made_absolute(demo_file, monkeypatch):
    monkeypatch.chdir(demo_file.parent)
    cfg = ppo_config([{"name": "gail", "demos": demo_file.name}])
    assert cfg.wrappers[0]["demos"] == str(demo_file.resolve())


@pytest.mark.parametrize("wrapper", [{"name": "gail", "reward_form": "gail"}, {"name": "preference"}])
def test_ppo_through_config_logs_the_env_return(demo_file, tmp_path, wrapper):
    spec = dict(wrapper, demos=str(demo_file)) if wrapper["name"] == "gail" else dict(wrapper, segment_length=16)
    run_dir, _ = api.train(ppo_config([spec], total_steps=1024), run_dir=tmp_path / "run")
    rows = read_metrics(run_dir / "metrics.csv")
    returns = [float(r["episode_return"]) for r in rows if r["episode_return"] != ""]
    name = wrapper["name"]
    learned = [float(r[f"{name}/reward"]) for r in rows if r[f"{name}/reward"] != ""]
    assert returns and all(r < -100 for r in returns)  # Pendulum's own return (costs), not the learned one
    assert learned and any(abs(v) > 0 for v in learned)
    if name == "gail":
        assert all(v > 0 for v in learned)  # softplus: the replaced reward was positive
        assert "gail/disc_loss" in rows[-1] and "gail/grad_penalty" in rows[-1]
    else:
        assert "preference/bt_loss" in rows[-1] and float(rows[-1]["preference/total_queries"]) > 0


@pytest.mark.parametrize("wrapper", ["gail", "preference"])
def test_resume_continues_the_learned_reward_exactly(demo_file, tmp_path, wrapper):
    spec = {"name": "gail", "demos": str(demo_file)} if wrapper == "gail" else {"name": "preference",
                                                                                 "segment_length": 16}
    full_dir, _ = api.train(ppo_config([spec], total_steps=512), run_dir=tmp_path / "full")
    half_dir, _ = api.train(ppo_config([spec], total_steps=256), run_dir=tmp_path / "half")
    api.resume(half_dir, total_steps=512)
    full = load_checkpoint(full_dir / "checkpoints" / "latest.pt")["wrappers"][0]["state"]
    half = load_checkpoint(half_dir / "checkpoints" / "latest.pt")["wrappers"][0]["state"]
    model = "disc" if wrapper == "gail" else "model"
    for key, value in full[model].items():
        torch.testing.assert_close(half[model][key], value, rtol=0, atol=0)
    if wrapper == "preference":
        assert half["queries"] == full["queries"] == 2 * 10  # two updates of 10 queries each
        torch.testing.assert_close(half["labels"]["p"], full["labels"]["p"], rtol=0, atol=0)


# --- the demonstration script (benchmarks/learned_reward.py) --------------------------------------
def test_benchmark_scores_and_claims_against_hand_values():
    from benchmarks.learned_reward import VARIANTS, claim_lines, score, summarise

    assert score(-200.0, -150.0, -1200.0) == pytest.approx(1000 / 1050)  # negative returns: vs the floor
    assert score(None, -150.0, -1200.0) is None and score(-1.0, -5.0, -5.0) is None
    expert = {"expert_return": -150.0, "random_return": -1250.0}

    def run(variant: str, final: float, sps: float, queries: float | None = None) -> dict[str, Any]:
        return {"variant": variant, "seed": 0, "final": final, "sps": sps, "queries": queries}

    runs = [run("ppo", -250.0, 1000.0), run("gail", -370.0, 800.0), run("airl", -400.0, 500.0),
            run("preference", -600.0, 400.0, 1400.0)]
    summary = {s["variant"]: s for s in summarise(runs, VARIANTS, expert)}
    assert summary["gail"]["expert_score"] == pytest.approx(0.8)  # (1250 - 370) / 1100
    assert summary["preference"]["ppo_score"] == pytest.approx(650 / 1000)
    assert summary["airl"]["relative_sps"] == pytest.approx(0.5)
    assert claim_lines(list(summary.values())) == [
        "- gail reaches >= 0.8 of the expert's score: yes (0.80)",
        "- airl reaches >= 0.8 of the expert's score: no (0.77)",
        "- preference reaches >= 0.7 of PPO-with-true-reward's score: no (0.65, 1,400 oracle labels)"]


def test_benchmark_dry_run_and_bad_arguments(tmp_path, capsys):
    from benchmarks.learned_reward import main

    assert main(["--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "configs/ppo/drl-Pendulum-v0-airl.yaml" in out and "preference" in out and not (tmp_path / "out").exists()
    for bad in (["--only", "nope"], ["--seeds", "0"], ["--expert-steps", "0"]):
        with pytest.raises(SystemExit):
            main(bad + ["--dry-run"])
