"""TD3: delayed actor updates, target smoothing, exploration noise, config and state, learning Pendulum."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch
from test_sac import filled_replay

from drl.agents.td3 import TD3, TD3Config, smoothed_target_action
from drl.config import ConfigError, TrainConfig, build

OBS = gym.spaces.Box(-5.0, 5.0, (3,))
ACT = gym.spaces.Box(-2.0, 2.0, (2,))


def make_td3(seed: int = 0, obs_space: gym.Space = OBS, action_space: gym.Space = ACT, **overrides: object) -> TD3:
    settings = {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "batch_size": 8, "compile": False} | overrides
    cfg = TD3Config(**settings)
    return TD3(obs_space, action_space, cfg, 1, torch.device("cpu"), torch.Generator().manual_seed(seed))


def _snapshot(agent: TD3) -> dict[str, torch.Tensor]:
    step = agent.step
    out = {"target": step.target.data.clone()}
    for name in ("critic", "actor"):
        out[name] = step.params.data[step.slices[name]].clone()
        adam = step.adams[name]
        out[f"{name}_adam"] = torch.cat([adam.exp_avg, adam.exp_avg_sq, adam.step_count.view(1)]).clone()
    return out


def test_delayed_update_leaves_the_actor_untouched_on_critic_steps() -> None:
    agent = make_td3(policy_delay=3)
    replay = filled_replay(agent)
    for update in range(1, 7):
        before = _snapshot(agent)
        stats = agent.update(replay, 1)
        after = _snapshot(agent)
        actor_step = update % 3 == 0
        assert not torch.equal(before["critic"], after["critic"])
        assert not torch.equal(before["critic_adam"], after["critic_adam"])
        for name in ("actor", "actor_adam", "target"):  # params, Adam moments and step count, targets
            assert torch.equal(before[name], after[name]) != actor_step, (update, name)
        assert ("actor_loss" in stats) == actor_step
    assert agent.step.adams["critic"].step_count.item() == 6
    assert agent.step.adams["actor"].step_count.item() == 2


def test_update_means_count_each_stat_over_the_steps_that_made_it() -> None:
    agent = make_td3(policy_delay=2)
    stats = agent.update(filled_replay(agent), 4)
    assert set(stats) == {"critic_loss", "q", "actor_loss"} and all(v.dim() == 0 for v in stats.values())


def test_target_smoothing_is_clipped_hand_values() -> None:
    target_action = torch.tensor([[0.9, -0.2, 0.0, -0.9]])
    noise = torch.tensor([[10.0, -10.0, 1.0, -1.0]])
    # std * noise = [2, -2, .2, -.2] -> clipped [.5, -.5, .2, -.2] -> [1.4, -.7, .2, -1.1] -> clamped [1, -.7, .2, -1]
    smoothed = smoothed_target_action(target_action, noise, 0.2, 0.5)
    assert smoothed[0].tolist() == pytest.approx([1.0, -0.7, 0.2, -1.0])


def test_exploration_noise_stays_in_bounds_and_deterministic_acts_are_the_mean() -> None:
    agent = make_td3(exploration_noise=5.0)
    obs = torch.randn(64, 3)
    env_action, record = agent.act(obs)
    assert (env_action.abs() <= 2.0).all() and (record["actions"].abs() <= 1.0).all()
    assert (record["actions"].abs() == 1.0).any()  # std 5 hits the bounds: clipped, not squashed
    mean_action, _ = agent.act(obs, deterministic=True)
    torch.testing.assert_close(mean_action, 2.0 * agent._mu(agent.actor.own_params(), obs))
    low, _ = agent.random_act(obs)
    assert (low.abs() <= 2.0).all()


def test_discrete_actions_raise_one_line_type_error() -> None:
    with pytest.raises(TypeError, match=r"^TD3 needs a Box action space; for Discrete actions use: ppo"):
        make_td3(action_space=gym.spaces.Discrete(4))


@pytest.mark.parametrize("key,value", [("policy_delay", 0), ("target_policy_noise", -0.1),
                                       ("target_noise_clip", -1.0), ("exploration_noise", -0.5),
                                       ("num_atoms", 1), ("critic_learning_rate", 0.0)])
def test_bad_config_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"algo.{key}'"):
        build(TD3Config, {key: value}, prefix="algo").validate("algo", TrainConfig())


def test_state_dict_round_trip_continues_identically() -> None:
    agent = make_td3(seed=0)
    replay = filled_replay(agent)
    agent.update(replay, 3)  # odd: the next update is an actor step on both copies
    clone = make_td3(seed=5)
    clone.load_state_dict(agent.state_dict())
    clone.generator.set_state(agent.generator.get_state())
    first, second = agent.update(replay, 3), clone.update(replay, 3)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert torch.equal(agent.step.params.data, clone.step.params.data)
    assert torch.equal(agent.step.target.data, clone.step.target.data)


def test_categorical_ensemble_with_layer_norm_and_redq_subset_trains() -> None:
    agent = make_td3(critic_type="categorical", num_atoms=11, v_min=-5.0, v_max=5.0, num_q=4,
                     num_q_target_pair=2, layer_norm=True, n_step=3)
    replay = filled_replay(agent)
    batch = agent.sample_batch(replay)
    assert batch["heads"].shape == (2,) and batch["heads"].unique().numel() == 2
    stats = agent.update(replay, 4)
    assert all(torch.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("n_step", [1, 3])
def test_without_bootstrap_truncated_a_time_limit_ends_the_target(n_step: int) -> None:
    """bootstrap_truncated false: a window that ends at a truncated row gets discount 0 (hand values); other
    windows, and every window with the default, are n_step_replay's."""
    from drl.storage import ReplayBuffer

    gamma = 0.9
    rewards = [1.0, 2.0, 3.0, 4.0, 5.0]
    truncated = [False, True, False, False, False]  # episode 1 is rows 0-1 (time limit), episode 2 rows 2-4
    for bootstrap in (True, False):
        agent = make_td3(n_step=n_step, gamma=gamma, bootstrap_truncated=bootstrap)
        replay = ReplayBuffer(8, 1, agent.storage_fields(), agent.device)
        for r, cut in zip(rewards, truncated, strict=True):
            replay.add({"obs/policy": torch.zeros(1, 3), "next_obs/policy": torch.zeros(1, 3),
                        "actions": torch.zeros(1, 2), "rewards": torch.tensor([r]),
                        "terminated": torch.zeros(1, dtype=torch.bool), "truncated": torch.tensor([cut])})
        steps = torch.arange(5)
        returns, discounts, last = agent.td_rows(replay, steps, torch.zeros(5, dtype=torch.int64))
        if n_step == 1:
            expected_returns, expected_last = rewards, [0, 1, 2, 3, 4]
            expected_discounts = [gamma, gamma if bootstrap else 0.0, gamma, gamma, gamma]
        else:  # row 4 is the newest: its window stops there and bootstraps
            expected_returns = [1 + 0.9 * 2, 2, 3 + 0.9 * 4 + 0.81 * 5, 4 + 0.9 * 5, 5]
            expected_last = [1, 1, 4, 4, 4]
            expected_discounts = [gamma**2 if bootstrap else 0.0, gamma if bootstrap else 0.0, gamma**3, gamma**2,
                                  gamma]
        assert returns.tolist() == pytest.approx(expected_returns)
        assert discounts.tolist() == pytest.approx(expected_discounts)
        assert last.tolist() == expected_last
