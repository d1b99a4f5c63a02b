"""Asymmetric actor-critic (Pinto et al. 2017): with ``critic_obs: critic`` the actor NEVER receives the
privileged "critic" tensor (acting, evaluation and every loss) and the critic does.

The two groups have the same width (a wrong routing would not crash) and disjoint values: "policy"
rows lie in [10, 11), "critic" rows in [-11, -10). The actor's (and critic's) first layer records
every tensor it is given.
"""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from drl.agents.ppo import PPO, PPOConfig
from drl.agents.sac import SAC, SACConfig
from drl.agents.td3 import TD3, TD3Config
from drl.nn.numba_actor import numba_available
from drl.registry import resolve_config
from drl.storage import ReplayBuffer, RolloutBuffer

WIDTH = 3
GROUPED = gym.spaces.Dict({"policy": gym.spaces.Box(-20, 20, (WIDTH,)), "critic": gym.spaces.Box(-20, 20, (WIDTH,))})


def grouped_obs(n: int) -> dict[str, torch.Tensor]:
    return {"policy": 10.0 + torch.rand(n, WIDTH), "critic": -10.0 - torch.rand(n, WIDTH)}


def is_policy(x: torch.Tensor) -> bool:
    return bool(((x >= 10.0) & (x < 11.0)).all())


def is_critic(x: torch.Tensor) -> bool:
    return bool(((x > -11.0) & (x <= -10.0)).all())


def record_inputs(layer: torch.nn.Module) -> list[torch.Tensor]:
    """Wrap ``layer.forward`` (an instance attribute: both ``layer(x)`` and ``layer.forward(x)`` reach it)."""
    seen: list[torch.Tensor] = []
    original = layer.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.detach().clone())
        return original(x)

    layer.forward = forward
    return seen


def test_aac_is_ppo_with_the_privileged_critic_by_default() -> None:
    cfg = resolve_config({"agent": "aac"})
    assert isinstance(cfg.algo, PPOConfig) and cfg.algo.critic_obs == "critic" and cfg.algo.actor_obs == "policy"
    assert resolve_config({"agent": "ppo"}).algo.critic_obs == "policy"  # the plain name keeps PPO's default


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "box"])
def test_ppo_actor_never_sees_the_critic_group(action_space: gym.Space) -> None:
    cfg = PPOConfig(critic_obs="critic", num_steps=8, minibatch_size=8, num_epochs=2, actor_hidden=[8],
                    critic_hidden=[8], compile=False, numba_actor=False)
    agent = PPO(GROUPED, action_space, cfg, 2, torch.device("cpu"), torch.Generator().manual_seed(0))
    actor_inputs = record_inputs(agent.model.actor_body[0])
    critic_inputs = record_inputs(agent.model.critic[0])
    storage = RolloutBuffer(cfg.num_steps, 2, agent.storage_fields())
    for _ in range(cfg.num_steps):
        obs = grouped_obs(2)
        _, record = agent.act(obs)
        storage.add(agent.record_outcome(record, torch.randn(2), torch.zeros(2, dtype=torch.bool),
                                         torch.zeros(2, dtype=torch.bool), grouped_obs(2)))
    acting = len(actor_inputs)
    agent.act(grouped_obs(2), deterministic=True, update_stats=False)
    assert len(actor_inputs) == acting + 1 and not critic_inputs  # acting runs the actor only
    agent.update(storage)
    assert len(actor_inputs) == acting + 1 + cfg.num_epochs * 2  # every minibatch loss ran the actor
    assert all(is_policy(x) for x in actor_inputs)
    assert critic_inputs and all(is_critic(x) for x in critic_inputs)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_ppo_numba_actor_is_given_the_policy_group_only() -> None:
    cfg = PPOConfig(critic_obs="critic", actor_hidden=[8], critic_hidden=[8], compile=False, numba_actor=True)
    agent = PPO(GROUPED, gym.spaces.Box(-1, 1, (2,)), cfg, 2, torch.device("cpu"))
    seen = []
    original = agent.numba_actor.sample

    def sample(x: torch.Tensor, deterministic: bool) -> tuple:
        seen.append(x.clone())
        return original(x, deterministic)

    agent.numba_actor.sample = sample
    agent.act(grouped_obs(2))
    agent.act(grouped_obs(2), deterministic=True)
    assert len(seen) == 2 and all(is_policy(x) for x in seen)


def record_calls(agent: SAC | TD3) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Every obs the actor's and the critic's (online and target) forward passes receive."""
    actor_seen: list[torch.Tensor] = []
    critic_seen: list[torch.Tensor] = []
    apply_params, q = agent.actor.apply_params, agent.critic.q

    def actor_apply(params, obs, *args, **kwargs):
        actor_seen.append(obs.detach().clone())
        return apply_params(params, obs, *args, **kwargs)

    def critic_q(params, obs, *args, **kwargs):
        critic_seen.append(obs.detach().clone())
        return q(params, obs, *args, **kwargs)

    agent.actor.apply_params = actor_apply
    agent.critic.q = critic_q
    return actor_seen, critic_seen


@pytest.mark.parametrize("agent_class,config_class", [(SAC, SACConfig), (TD3, TD3Config)], ids=["sac", "td3"])
def test_off_policy_actor_never_sees_the_critic_group(agent_class: type, config_class: type) -> None:
    cfg = config_class(critic_obs="critic", actor_hidden=[8], critic_hidden=[8], batch_size=8, compile=False)
    agent = agent_class(GROUPED, gym.spaces.Box(-1, 1, (2,)), cfg, 1, torch.device("cpu"),
                        torch.Generator().manual_seed(0))
    actor_seen, critic_seen = record_calls(agent)
    replay = ReplayBuffer(32, 1, agent.storage_fields())
    for t in range(32):
        _, record = agent.act(grouped_obs(1))
        replay.add(agent.record_outcome(record, torch.randn(1), torch.tensor([t % 8 == 7]),
                                        torch.zeros(1, dtype=torch.bool), grouped_obs(1)))
    agent.act(grouped_obs(1), deterministic=True)
    assert len(actor_seen) == 33 and not critic_seen
    assert all(name in replay.data for name in ("obs/critic", "next_obs/critic"))  # next_obs kept per group
    agent.update(replay, 4)
    # per update: the target action from next_obs and the policy loss from obs (TD3: on its actor steps)
    assert len(actor_seen) > 33 + 4
    assert all(is_policy(x) for x in actor_seen)
    # the critic reads obs (online Q) and next_obs (target Q), both privileged
    assert len(critic_seen) >= 2 * 4 and all(is_critic(x) for x in critic_seen)


NEW_CONFIGS = ["aac/drl-CartPoleNoVel-v0", "aac/drl-PendulumNoVel-v0", "aacd/drl-CartPoleNoVel-v0",
               "aacd/drl-PendulumNoVel-v0", "dagger/drl-CartPoleNoVel-v0", "dagger/drl-PendulumNoVel-v0",
               "sac/drl-PendulumNoVel-v0", "td3/drl-PendulumNoVel-v0"]


@pytest.mark.parametrize("name", NEW_CONFIGS)
def test_privileged_configs_resolve_with_the_actor_on_policy(name: str) -> None:
    from drl.api import CONFIG_DIR
    from drl.config import load_yaml

    agent, env = name.split("/")
    cfg = resolve_config(load_yaml(CONFIG_DIR / f"{name}.yaml"))
    assert cfg.agent == agent and cfg.env.id == env.replace("drl-", "drl/")
    assert cfg.algo.actor_obs == "policy"
    if agent != "dagger":
        assert cfg.algo.critic_obs == "critic"
