"""A minimal off-policy training loop for the agents' learning tests (until the off-policy runner is merged).

TODO(merge): switch the learning tests to ``drl.runners.off_policy`` and delete this file.
"""

from __future__ import annotations

import torch

import envs
from drl.runners.on_policy import evaluate_policy
from drl.storage import ReplayBuffer


def train_and_evaluate(agent_class: type, cfg: object, env_id: str, total_steps: int, seed: int = 0,
                       eval_episodes: int = 5) -> float:
    """Train ``agent_class(cfg)`` for ``total_steps`` env steps on one env; return the mean
    deterministic evaluation return over ``eval_episodes`` episodes."""
    torch.manual_seed(seed)
    device = torch.device("cpu")
    env = envs.make_vec_env(env_id, 1, device)
    generator = torch.Generator().manual_seed(seed)
    agent = agent_class(env.single_observation_space, env.single_action_space, cfg, 1, device, generator,
                        total_steps)
    replay = ReplayBuffer(total_steps, 1, agent.storage_fields(), device)
    obs, _ = env.reset(seed=seed)
    for step in range(total_steps):
        warm_up = step < cfg.learning_starts
        action, record = agent.random_act(obs) if warm_up else agent.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        replay.add(agent.record_outcome(record, reward, terminated, truncated, info["final_obs"]))
        if not warm_up:
            agent.update(replay, 1)
    env.close()
    eval_env = envs.make_vec_env(env_id, 1, device)
    returns = evaluate_policy(agent, eval_env, eval_episodes, seed=seed + 1000)
    eval_env.close()
    return sum(returns) / len(returns)
