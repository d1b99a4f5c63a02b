"""PPO unit tests: the pieces of the update, on synthetic rollouts."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.optim import compiler_available
from drl.storage import RolloutBuffer

OBS = gym.spaces.Box(-1, 1, (5,))
GROUPED = gym.spaces.Dict({"policy": gym.spaces.Box(-1, 1, (5,)), "critic": gym.spaces.Box(-1, 1, (9,))})
CONT = gym.spaces.Box(-2, 2, (3,))


def _agent(obs_space=OBS, act_space=CONT, **cfg) -> PPO:
    torch.manual_seed(0)
    return PPO(obs_space, act_space, PPOConfig(**cfg), num_envs=4, device=torch.device("cpu"),
               generator=torch.Generator().manual_seed(0))


def _random_obs(space, n, gen):
    if isinstance(space, gym.spaces.Dict):
        return {k: torch.randn(n, *s.shape, generator=gen) for k, s in space.spaces.items()}
    return torch.randn(n, *space.shape, generator=gen)


def _fill(agent: PPO, obs_space=OBS, steps: int = 16, seed: int = 0) -> RolloutBuffer:
    gen = torch.Generator().manual_seed(seed)
    storage = RolloutBuffer(steps, 4, agent.storage_fields())
    for _ in range(steps):
        obs = _random_obs(obs_space, 4, gen)
        _, record = agent.act(obs)
        done = torch.rand(4, generator=gen) < 0.1
        storage.add(agent.record_outcome(record, torch.randn(4, generator=gen), done, torch.zeros(4, dtype=torch.bool),
                                         _random_obs(obs_space, 4, gen)))
    return storage


def test_env_actions_respect_bounds_and_record_is_complete():
    agent = _agent(log_std_init=2.0)
    action, record = agent.act(torch.randn(64, 5))
    assert action.shape == (64, 3) and (action.abs() <= 2.0).all()
    assert (record["actions"].abs() > 2.0).any()  # the stored action is the unclipped sample
    assert set(record) == {"obs/policy", "actions", "log_probs"}


def test_squashed_actions_inside_bounds():
    agent = _agent(squash_actions=True, log_std_init=1.0)
    action, _ = agent.act(torch.randn(256, 5))
    assert (action > -2.0).all() and (action < 2.0).all()


def test_privileged_critic_reads_its_own_group():
    agent = _agent(GROUPED, critic_obs="critic")
    storage = _fill(agent, GROUPED)
    assert storage["obs/critic"].shape == (16, 4, 9) and storage["final_obs/critic"].shape == (16, 4, 9)
    assert agent.model.critic[0].in_features == 9 and agent.model.actor_body[0].in_features == 5
    metrics = agent.update(storage)
    assert all(v == v for k, v in metrics.items() if k != "explained_variance")
    with pytest.raises(ValueError, match="critic reads obs group 'state'.*groups are \\['critic', 'policy'\\]"):
        _agent(GROUPED, critic_obs="state")


def test_discrete_actions():
    agent = _agent(act_space=gym.spaces.Discrete(4))
    action, record = agent.act(torch.randn(8, 5))
    assert action.dtype == torch.int64 and action.shape == (8,) and ((0 <= action) & (action < 4)).all()
    agent.update(_fill(agent))


def test_target_kl_stops_epochs_early():
    agent = _agent(num_epochs=50, minibatch_size=16, learning_rate=0.01, target_kl=1e-4)
    metrics = agent.update(_fill(agent))
    assert metrics["epochs"] < 50
    full = _agent(num_epochs=3, minibatch_size=16)
    assert full.update(_fill(full))["epochs"] == 3


def test_learning_rate_annealing():
    agent = _agent(learning_rate=1e-3, anneal_lr=True, minibatch_size=16)
    assert agent.update(_fill(agent), progress=0.75)["learning_rate"] == pytest.approx(2.5e-4)
    assert agent.train_step.lr.item() == pytest.approx(2.5e-4)


def test_clipped_value_loss_matches_formula():
    agent = _agent(clip_value=0.1)
    mb = {"obs/policy": torch.randn(8, 5), "actions": torch.randn(8, 3), "log_probs": torch.zeros(8),
          "values": torch.zeros(8), "advantages": torch.randn(8), "returns": torch.full((8,), 5.0)}
    losses = agent._minibatch_loss(mb)
    new_values = agent.model.value(mb["obs/policy"]).detach()
    clipped = new_values.clamp(-0.1, 0.1)
    expected = torch.max((new_values - 5.0).square(), (clipped - 5.0).square()).mean()
    assert losses["value_loss"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_observation_normalizer_updates_only_when_asked():
    agent = _agent(normalize_obs=True)
    agent.act(torch.randn(32, 5) * 4 + 3)
    count = agent.obs_normalizers["policy"].count.item()
    agent.act(torch.randn(32, 5), update_stats=False)
    assert agent.obs_normalizers["policy"].count.item() == count
    assert agent.obs_normalizers["policy"].mean.mean().item() == pytest.approx(3.0, abs=1.0)


def test_update_is_deterministic_given_seed():
    a = _agent(minibatch_size=16)
    ma = a.update(_fill(a))
    b = _agent(minibatch_size=16)  # reseeds the global RNG the rollout samples from
    mb = b.update(_fill(b))
    assert ma == mb
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def _actor_after_update(reward_scale: float, **cfg) -> list[torch.Tensor]:
    """The actor's parameters after one PPO update on a rollout whose rewards are scaled by ``reward_scale``,
    from a critic whose output layer is zero (so the advantages scale with the rewards, and their
    normalisation gives the actor the same loss at every scale)."""
    agent = _agent(minibatch_size=16, num_epochs=3, **cfg)
    for p in agent.model.critic[-1].parameters():
        p.data.zero_()
    storage = _fill(agent)
    storage["rewards"].mul_(reward_scale)
    agent.update(storage)
    return [p.detach().clone() for p in [*agent.model.actor_body.parameters(), *agent.model.head.parameters()]]


def test_per_network_clipping_keeps_the_actor_step_independent_of_the_critic_gradient():
    # rsl_rl's rule: the actor's gradient is clipped on its own norm, so a critic gradient 1000x larger
    # (rewards 1000x larger) leaves the actor's update as it is
    small, large = (_actor_after_update(scale, clip_grad_per_network=True) for scale in (1.0, 1000.0))
    for p, q in zip(small, large, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    # a joint clip (SB3's rule) scales the actor's gradient by the critic's norm: the actor barely moves
    small, large = (_actor_after_update(scale) for scale in (1.0, 1000.0))
    start = _actor_after_update(1.0, learning_rate=0.0)
    moved = [sum((p - q).abs().sum().item() for p, q in zip(after, start, strict=True)) for after in (small, large)]
    assert moved[1] < 0.5 * moved[0]


def test_row_chunked_update_matches_the_whole_minibatch(monkeypatch):
    # 64-row minibatches taken in chunks of 24, 24 and 16 rows: the advantages are normalised over the whole
    # minibatch first, so the step is the same up to float summation order
    import drl.agents.ppo as ppo_module

    whole = _agent(minibatch_size=64, num_epochs=2, clip_grad_per_network=True)
    whole_metrics = whole.update(_fill(whole))
    monkeypatch.setattr(ppo_module, "CPU_ROW_CHUNK", 24)
    chunked = _agent(minibatch_size=64, num_epochs=2, clip_grad_per_network=True)
    assert chunked.train_step.row_chunk == 24
    chunked_metrics = chunked.update(_fill(chunked))
    for key, value in whole_metrics.items():
        assert chunked_metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    for p, q in zip(chunked.model.parameters(), whole.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_adam_eps_reaches_the_optimiser():
    assert _agent().train_step.adam.eps == 1e-5  # SB3's and CleanRL's PPO default
    assert _agent(adam_eps=1e-8).train_step.adam.eps == 1e-8


@pytest.mark.skipif(not compiler_available(), reason="torch.compile needs a C++ compiler on the CPU")
def test_compiled_update_matches_eager():
    eager = _agent(minibatch_size=32, num_epochs=2, compile=False)
    compiled = _agent(minibatch_size=32, num_epochs=2, compile=True)
    assert compiled.train_step.compiled and not eager.train_step.compiled
    for agent in (eager, compiled):
        torch.manual_seed(1)  # the same sampled actions for both
        for _ in range(2):
            agent.update(_fill(agent))
    assert compiled.train_step.compiled  # it did not fall back to eager
    for pe, pc in zip(eager.model.parameters(), compiled.model.parameters(), strict=True):
        torch.testing.assert_close(pe, pc, rtol=1e-4, atol=1e-5)


def test_compile_auto_follows_the_run_length():
    cfg = {"num_steps": 64, "minibatch_size": 64, "num_epochs": 10}
    short = PPO(OBS, CONT, PPOConfig(**cfg), 4, torch.device("cpu"), total_steps=10_000)
    unknown = PPO(OBS, CONT, PPOConfig(**cfg), 4, torch.device("cpu"))
    assert not short.train_step.compiled and not unknown.train_step.compiled
    long = PPO(OBS, CONT, PPOConfig(**cfg), 4, torch.device("cpu"), total_steps=2_000_000)
    assert long.train_step.compiled == compiler_available()
