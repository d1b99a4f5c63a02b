"""PPO's model (and that of the agents built on PPO): actor and critic MLPs, optional recurrent cores."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from torch import nn

from drl.nn.heads import make_action_head
from drl.nn.mlp import make_mlp, mlp_forward, reset_linear_layers
from drl.nn.recurrent import RecurrentCore

__all__ = ["ActorCritic", "Actor", "reset_init"]


def reset_init(body: nn.Module, head: nn.Module, *critics: nn.Module | None) -> None:
    """``init: default``: PyTorch's ``nn.Linear`` init for the MLPs and the head's mean (or logits) layer; a
    state-dependent log-std layer keeps its init (bias ``log_std_init``), as the free log-std parameter does."""
    reset_linear_layers(body)
    for name, layer in head.named_children():
        if name != "log_std_layer":
            reset_linear_layers(layer)
    for critic in critics:
        if critic is not None:
            reset_linear_layers(critic)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over (possibly different) flat observation groups; ``cfg`` is a
    :class:`drl.agents.ppo.PPOConfig` (its widths, activation, action head and recurrent options).

    With ``rnn_type`` set, ``actor_rnn`` (and with ``rnn_critic`` ``critic_rnn``) maps the obs group
    to ``rnn_hidden_size`` features first; :meth:`act`, :meth:`evaluate` and :meth:`value` then take
    those features in place of the observation. Without, both are None.
    """

    def __init__(self, actor_dim: int, critic_dim: int, action_space: gym.Space, cfg: Any):
        super().__init__()
        self.actor_rnn = self.critic_rnn = None
        if cfg.recurrent:
            self.actor_rnn = RecurrentCore(cfg.rnn_type, actor_dim, cfg.rnn_hidden_size, cfg.rnn_num_layers)
            actor_dim = cfg.rnn_hidden_size
        if cfg.critic_recurrent:
            self.critic_rnn = RecurrentCore(cfg.rnn_type, critic_dim, cfg.rnn_hidden_size, cfg.rnn_num_layers)
            critic_dim = cfg.rnn_hidden_size
        self.actor_body = make_mlp(actor_dim, cfg.actor_hidden, None, cfg.activation)
        width = cfg.actor_hidden[-1] if cfg.actor_hidden else actor_dim
        self.head = make_action_head(action_space, width, cfg.log_std_init, cfg.state_dependent_std,
                                     cfg.squash_actions)
        self.critic = make_mlp(critic_dim, cfg.critic_hidden, 1, cfg.activation, output_gain=1.0)
        # V_I, on the critic's input (algo.intrinsic_value); None otherwise
        self.intrinsic_critic = (make_mlp(critic_dim, cfg.critic_hidden, 1, cfg.activation, output_gain=1.0)
                                 if cfg.intrinsic_value else None)
        if cfg.init == "default":  # PyTorch's init of the MLPs and the action mean (the recurrent cores keep theirs)
            reset_init(self.actor_body, self.head, self.critic, self.intrinsic_critic)

    def cores(self) -> dict[str, RecurrentCore]:
        """The recurrent cores by role (``"actor"``, ``"critic"``); empty for a feed-forward model."""
        return {role: core for role, core in (("actor", self.actor_rnn), ("critic", self.critic_rnn))
                if core is not None}

    @staticmethod
    def clip_groups() -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Parameter-name prefixes of the actor and of the critic (:class:`drl.optim.TrainStep`'s ``clip_groups``)."""
        return ("actor_rnn.", "actor_body.", "head."), ("critic_rnn.", "critic.", "intrinsic_critic.")

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        """``[B, critic_dim] -> [B]``."""
        return mlp_forward(self.critic, critic_obs).squeeze(-1)

    def act(self, actor_obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, actor_dim] -> (action[B, ...], log_prob[B])``."""
        return self.head.sample(mlp_forward(self.actor_body, actor_obs), deterministic)

    def evaluate(self, actor_obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob[B], entropy[B])`` of stored actions."""
        return self.head.evaluate(mlp_forward(self.actor_body, actor_obs), action)


class Actor(nn.Module):
    """An actor alone (for agents whose critic is elsewhere, e.g. HAPPO's per-agent actors): ActorCritic's
    actor MLP and action head over one flat obs of ``obs_dim`` values; ``cfg`` gives ``actor_hidden``,
    ``activation``, ``log_std_init``, ``state_dependent_std`` and ``squash_actions`` (a PPOConfig)."""

    def __init__(self, obs_dim: int, action_space: gym.Space, cfg: Any):
        super().__init__()
        self.actor_body = make_mlp(obs_dim, cfg.actor_hidden, None, cfg.activation)
        width = cfg.actor_hidden[-1] if cfg.actor_hidden else obs_dim
        self.head = make_action_head(action_space, width, cfg.log_std_init, cfg.state_dependent_std,
                                     cfg.squash_actions)
        if cfg.init == "default":
            reset_init(self.actor_body, self.head)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, obs_dim] -> (action[B, ...], log_prob[B])``."""
        return self.head.sample(mlp_forward(self.actor_body, obs), deterministic)

    def evaluate(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob[B], entropy[B])`` of stored actions."""
        return self.head.evaluate(mlp_forward(self.actor_body, obs), action)
