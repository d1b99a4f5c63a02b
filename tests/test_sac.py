"""SAC: the squashed log-density, the temperature, the shared off-policy plumbing, learning Pendulum."""

from __future__ import annotations

import math

import gymnasium as gym
import pytest
import torch

from drl.agents.sac import SAC, SACConfig, squashed_gaussian
from drl.config import ConfigError, TrainConfig, build
from drl.optim import compiler_available
from drl.returns import n_step_replay as _n_step_replay
from drl.storage import ReplayBuffer

OBS = gym.spaces.Box(-5.0, 5.0, (3,))
ACT = gym.spaces.Box(-2.0, 2.0, (1,))


def make_sac(obs_space: gym.Space = OBS, action_space: gym.Space = ACT, seed: int = 0, **overrides: object) -> SAC:
    settings = {"actor_hidden": [16, 16], "critic_hidden": [16, 16], "batch_size": 8, "compile": False} | overrides
    cfg = SACConfig(**settings)
    return SAC(obs_space, action_space, cfg, 1, torch.device("cpu"), torch.Generator().manual_seed(seed))


def filled_replay(agent: SAC, rows: int = 64, seed: int = 0) -> ReplayBuffer:
    torch.manual_seed(seed)
    replay = ReplayBuffer(rows, 1, agent.storage_fields())
    for t in range(rows):
        obs = torch.randn(1, agent.obs_dims[agent.cfg.actor_obs]) if not agent.grouped_obs else {
            g: torch.randn(1, d) for g, d in agent.obs_dims.items()}
        _, record = agent.random_act(obs)
        next_obs = {g: torch.randn(1, d) for g, d in agent.obs_dims.items()} if agent.grouped_obs else torch.randn(
            1, agent.obs_dims[agent.cfg.actor_obs])
        done = torch.tensor([t % 10 == 9])
        replay.add(agent.record_outcome(record, torch.randn(1), done, torch.zeros(1, dtype=torch.bool), next_obs))
    return replay


def test_squashed_log_prob_matches_numerical_change_of_variables() -> None:
    """log p(x) for x = center + scale * tanh(u), u ~ N(mean, std): log N(u) - log |det dx/du|, the
    Jacobian by central finite differences in float64."""
    torch.manual_seed(0)
    mean, log_std, noise = torch.randn(4, 3).double(), (torch.randn(4, 3) * 0.5).double(), torch.randn(4, 3).double()
    center, scale = torch.tensor([0.0, 1.0, -3.0]).double(), torch.tensor([2.0, 0.5, 3.0]).double()
    _, log_prob = squashed_gaussian(mean, log_std, noise, log_scale=scale.log())
    _, log_prob_unit = squashed_gaussian(mean, log_std, noise)
    u = mean + log_std.exp() * noise
    eps = 1e-6
    for b in range(4):
        def f(v: torch.Tensor) -> torch.Tensor:
            return center + scale * torch.tanh(v)

        jacobian = torch.stack([(f(u[b] + eps * e) - f(u[b] - eps * e)) / (2 * eps) for e in torch.eye(3).double()], 1)
        log_normal = (-0.5 * ((u[b] - mean[b]) / log_std[b].exp()) ** 2 - log_std[b] - 0.5 * math.log(2 * math.pi))
        expected = log_normal.sum() - torch.linalg.slogdet(jacobian).logabsdet
        assert log_prob[b].item() == pytest.approx(expected.item(), abs=1e-6)
        assert (log_prob_unit[b] - log_prob[b]).item() == pytest.approx(scale.log().sum().item(), abs=1e-12)
    # stable where tanh(u) rounds to +-1 in float32: finite, equal to the float64 value
    big = torch.tensor([[30.0, -30.0]])
    _, far = squashed_gaussian(big, torch.zeros(1, 2), torch.zeros(1, 2))
    _, far64 = squashed_gaussian(big.double(), torch.zeros(1, 2).double(), torch.zeros(1, 2).double())
    assert torch.isfinite(far).all() and far.item() == pytest.approx(far64.item(), rel=1e-6)


@pytest.mark.parametrize("target_entropy,direction", [(-50.0, -1), (50.0, 1)])
def test_temperature_moves_the_right_way(target_entropy: float, direction: int) -> None:
    """Entropy above the target (-log pi > H_target) -> alpha decreases; below -> alpha increases."""
    agent = make_sac(target_entropy=target_entropy)
    replay = filled_replay(agent)
    before = agent.nets["log_alpha"].value.item()
    stats = agent.update(replay, 3)
    after = agent.nets["log_alpha"].value.item()
    assert (after - before) * direction > 0
    assert stats["alpha"].item() == pytest.approx(math.exp(before + (after - before) * 2 / 3), rel=1e-3)
    fixed = make_sac(ent_coef=0.3)
    fixed.update(filled_replay(fixed), 3)
    assert fixed.nets["log_alpha"].value.item() == pytest.approx(math.log(0.3))


def test_discrete_actions_raise_one_line_type_error() -> None:
    with pytest.raises(TypeError, match=r"^SAC needs a Box action space; for Discrete actions use: ppo"):
        make_sac(action_space=gym.spaces.Discrete(3))


@pytest.mark.parametrize("key,value", [("tau", 0.0), ("gamma", 1.5), ("num_q_target_pair", 3), ("num_q", 0),
                                       ("ent_coef", -1.0), ("updates_per_step", 0.0), ("batch_size", 0),
                                       ("n_step", 0), ("learning_rate", 0.0), ("alpha_learning_rate", -1.0),
                                       ("v_max", -300.0), ("critic_obs", "bad name"), ("actor_hidden", [0])])
def test_bad_config_values_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"algo.{key}'"):
        build(SACConfig, {key: value}, prefix="algo").validate("algo", TrainConfig())


def test_bad_config_types_name_the_key() -> None:
    with pytest.raises(ConfigError, match="algo.critic_type"):
        build(SACConfig, {"critic_type": "quantile"}, prefix="algo")
    with pytest.raises(ConfigError, match="algo.ent_coef"):
        build(SACConfig, {"ent_coef": "learned"}, prefix="algo")


def test_state_dict_round_trip_continues_identically() -> None:
    agent = make_sac(seed=0)
    replay = filled_replay(agent)
    agent.update(replay, 5)
    clone = make_sac(seed=1)
    clone.load_state_dict(agent.state_dict())
    for name, value in agent.state_dict()["nets"].items():
        assert torch.equal(value, clone.state_dict()["nets"][name]), name
    clone.generator.set_state(agent.generator.get_state())
    first, second = agent.update(replay, 2), clone.update(replay, 2)
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert torch.equal(agent.step.params.data, clone.step.params.data)
    assert torch.equal(agent.step.target.data, clone.step.target.data)
    assert clone.num_updates == agent.num_updates == 7


def test_privileged_critic_never_feeds_the_critic_group_to_the_actor() -> None:
    space = gym.spaces.Dict({"policy": gym.spaces.Box(-1.0, 1.0, (3,)), "critic": gym.spaces.Box(-1.0, 1.0, (5,))})
    agent = make_sac(obs_space=space, critic_obs="critic")
    seen: list[torch.Tensor] = []
    apply = agent.actor.apply_params

    def recording(params: list[torch.Tensor], x: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(x)
        return apply(params, x, heads)

    agent.actor.apply_params = recording
    assert agent.storage_fields()["obs/critic"].shape == (5,)
    obs = {"policy": torch.randn(2, 3), "critic": torch.full((2, 5), float("nan"))}
    action, record = agent.act(obs)
    assert torch.isfinite(action).all() and torch.equal(seen[-1], obs["policy"])
    replay = filled_replay(agent)
    batch = agent.sample_batch(replay)
    loss, _ = agent._loss(agent.step.split(agent.step.params.data), agent.step.split(agent.step.params.data),
                          agent.step.split(agent.step.target.data, ["critic"]), batch, "all")
    actor_inputs = seen[1:]
    assert len(actor_inputs) == 2 and all(x.shape[-1] == 3 for x in actor_inputs)
    assert {id(x) for x in actor_inputs} == {id(batch["obs/policy"]), id(batch["next_obs/policy"])}
    assert torch.isfinite(loss)


def test_n_step_batches_hand_values() -> None:
    """Ring of 6 rows, 1 env, newest row 1 (head 2): rewards 1..6 by row, row 4 terminated, row 5 truncated."""
    rewards = torch.tensor([[10.0], [20.0], [0.0], [1.0], [2.0], [3.0]])  # rows 0, 1 newest (wrapped)
    terminated = torch.tensor([[False], [False], [False], [False], [True], [False]])
    truncated = torch.tensor([[False], [False], [False], [False], [False], [True]])
    steps, envs = torch.tensor([2, 3, 5, 0, 1]), torch.zeros(5, dtype=torch.int64)
    returns, discounts, last = _n_step_replay(rewards, terminated, truncated, steps, envs, 2, 6, 0.5, 3)
    # row 2: 0 + .5*1 + .25*2, ends by termination at row 4 -> discount 0
    # row 3: 1 + .5*2 (terminated at 4) ; row 5: 3, truncated -> bootstrap from row 5 with 0.5
    # row 0: 10 + .5*20, stops at the newest row 1 -> 0.25 ; row 1: 20 -> 0.5
    assert returns.tolist() == pytest.approx([1.0, 2.0, 3.0, 20.0, 20.0])
    assert discounts.tolist() == pytest.approx([0.0, 0.0, 0.5, 0.25, 0.5])
    assert last.tolist() == [4, 4, 5, 1, 1]


@pytest.mark.skipif(not compiler_available(), reason="torch.compile needs a C++ compiler")
def test_compiled_update_equals_eager_update() -> None:
    eager, compiled = make_sac(seed=0), make_sac(seed=0, compile=True)
    compiled.load_state_dict(eager.state_dict())
    replay = filled_replay(eager)
    compiled.generator.set_state(eager.generator.get_state())
    for _ in range(3):
        first, second = eager.update(replay, 1), compiled.update(replay, 1)
        for name in first:
            torch.testing.assert_close(first[name], second[name], rtol=1e-4, atol=1e-5)
    assert compiled.step.compile  # it did compile (no eager fallback)
    torch.testing.assert_close(eager.step.params.data, compiled.step.params.data, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eager.step.target.data, compiled.step.target.data, rtol=1e-4, atol=1e-5)
    assert eager.step.adams["log_alpha"].step_count.item() == compiled.step.adams["log_alpha"].step_count.item() == 3


def test_categorical_ensemble_with_layer_norm_and_n_step_trains() -> None:
    agent = make_sac(critic_type="categorical", num_atoms=11, v_min=-5.0, v_max=5.0, num_q=5,
                     num_q_target_pair=2, layer_norm=True, n_step=3)
    replay = filled_replay(agent)
    stats = agent.update(replay, 4)
    assert all(torch.isfinite(v) for v in stats.values())
    assert agent.critic.weight0.shape[0] == 5 and "ln_weight0" in dict(agent.critic.named_parameters())


def test_warm_up_actions_and_observation_normalisation() -> None:
    agent = make_sac(normalize_obs=True)
    obs = torch.randn(500, 3) * 2.0 + 5.0
    env_action, record = agent.random_act(obs)
    # uniform in the Box [-2, 2]; stored normalised to [-1, 1]
    assert (env_action.abs() <= 2.0).all() and torch.equal(env_action, 2.0 * record["actions"])
    assert env_action.mean().abs() < 0.2 and env_action.std() == pytest.approx(4.0 / math.sqrt(12.0), rel=0.1)
    assert torch.equal(record["obs/policy"], obs)  # raw obs stored; the batch is normalised when sampled
    normalizer = agent.obs_normalizers["policy"]
    torch.testing.assert_close(normalizer.mean.float(), obs.mean(0), rtol=1e-3, atol=1e-3)
    replay = ReplayBuffer(4, 1, agent.storage_fields())
    no = torch.zeros(1, dtype=torch.bool)
    for row in range(4):
        _, record = agent.act(obs[row:row + 1], update_stats=False)
        replay.add(agent.record_outcome(record, torch.zeros(1), no, no, obs[row + 1:row + 2]))
    batch = agent.sample_batch(replay)
    expected = normalizer.normalize(replay["obs/policy"][:, 0])
    assert all(any(torch.equal(x, e) for e in expected) for x in batch["obs/policy"])
    before = normalizer.mean.clone()
    agent.act(obs[:1] + 100.0, deterministic=True)  # evaluation does not move the statistics
    assert torch.equal(normalizer.mean, before)
    agent.act(obs[:1] + 100.0)
    assert not torch.equal(normalizer.mean, before)
