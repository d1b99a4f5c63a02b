"""K actor-critics stored as stacked parameters and evaluated in one batched call (a task axis).

A multi-task agent with one learner per task (CAMRL, independent single-task learners) keeps the
``K`` networks as parameters with a leading learner axis: a layer's weight is ``[K, in, out]``, its
bias ``[K, out]``, and every layer is one ``torch.baddbmm`` over all learners. Inputs are
learner-major, ``[K, B, in]``: row ``k`` holds the samples of learner ``k``. :class:`TaskRouter` maps the
env axis ``[N, ...]`` to that layout and back (env ``i`` to learner ``task_ids[i]``): a view when the
envs of each task form equal contiguous blocks (the multi-task env's layout), one gather otherwise.

Learner ``k`` of a :class:`BatchedActorCritic` computes exactly what a
:class:`drl.nn.actor_critic.ActorCritic` with the same weights computes (tested, with gradients):
:meth:`BatchedActorCritic.load_separate` copies T separate networks in.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from drl.nn.heads import _LOG_SQRT_2PI, LOG_STD_MAX, LOG_STD_MIN
from drl.nn.mlp import ACTIVATIONS

__all__ = ["BatchedLinear", "BatchedMLP", "BatchedActorCritic", "TaskRouter"]


class BatchedLinear(nn.Module):
    """``K`` linear layers: ``x[K, B, in] -> x @ weight[k] + bias[k]``, ``[K, B, out]``.

    Each learner's weight is initialised as :func:`drl.nn.mlp.orthogonal_init` initialises an
    ``nn.Linear`` (orthogonal with ``gain``, zero bias), independently per learner.
    """

    def __init__(self, num_learners: int, in_dim: int, out_dim: int, gain: float):
        super().__init__()
        weight = torch.empty(num_learners, out_dim, in_dim)
        for k in range(num_learners):
            nn.init.orthogonal_(weight[k], gain)
        self.weight = nn.Parameter(weight.transpose(1, 2).contiguous())  # [K, in, out]
        self.bias = nn.Parameter(torch.zeros(num_learners, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)


class BatchedMLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim`` for ``K`` learners (:func:`drl.nn.mlp.make_mlp`'s gains:
    sqrt(2) for hidden layers, ``output_gain`` for the output layer; none when ``out_dim`` is None)."""

    def __init__(self, num_learners: int, in_dim: int, hidden: list[int], out_dim: int | None, activation: str,
                 output_gain: float = 1.0):
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [BatchedLinear(num_learners, last, width, math.sqrt(2)), ACTIVATIONS[activation]()]
            last = width
        if out_dim is not None:
            layers.append(BatchedLinear(num_learners, last, out_dim, output_gain))
        super().__init__(*layers)


class BatchedActorCritic(nn.Module):
    """``K`` actor-critics (PPO's :class:`drl.nn.actor_critic.ActorCritic`, feed-forward) on a learner axis.

    Args:
        num_learners: ``K`` (T for one learner per task, 1 for one shared network).
        actor_dim, critic_dim: input widths.
        action_space: Discrete (categorical logits) or Box (diagonal Gaussian, free log-std per learner,
            actions clipped to the bounds when sent to the env).
        cfg: widths (``actor_hidden``, ``critic_hidden``), ``activation`` and ``log_std_init``.

    Every method takes learner-major inputs ``[K, B, ...]`` and returns ``[K, B, ...]``.
    """

    def __init__(self, num_learners: int, actor_dim: int, critic_dim: int, action_space: gym.Space, cfg: Any):
        super().__init__()
        self.num_learners = num_learners
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if not self.discrete and not isinstance(action_space, gym.spaces.Box):
            raise TypeError(f"unsupported action space {action_space}; the batched learners support Discrete and Box")
        width = cfg.actor_hidden[-1] if cfg.actor_hidden else actor_dim
        self.actor_body = BatchedMLP(num_learners, actor_dim, list(cfg.actor_hidden), None, cfg.activation)
        if self.discrete:
            self.action_out = BatchedLinear(num_learners, width, int(action_space.n), 0.01)
        else:
            act_dim = int(math.prod(action_space.shape))
            self.action_out = BatchedLinear(num_learners, width, act_dim, 0.01)
            self.log_std = nn.Parameter(torch.full((num_learners, act_dim), float(cfg.log_std_init)))
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32).flatten())
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32).flatten())
        self.critic = BatchedMLP(num_learners, critic_dim, list(cfg.critic_hidden), 1, cfg.activation)

    def actor_parameters(self) -> list[nn.Parameter]:
        """The actor's parameters, each ``[K, ...]`` (what CAMRL's transfer regulariser reads)."""
        params = [*self.actor_body.parameters(), *self.action_out.parameters()]
        return params if self.discrete else [*params, self.log_std]

    def value(self, critic_obs: torch.Tensor) -> torch.Tensor:
        """``[K, B, critic_dim] -> [K, B]``."""
        return self.critic(critic_obs).squeeze(-1)

    def _out(self, actor_obs: torch.Tensor) -> torch.Tensor:
        return self.action_out(self.actor_body(actor_obs))

    def _log_std(self, mean: torch.Tensor) -> torch.Tensor:
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).unsqueeze(1).expand_as(mean)

    def act(self, actor_obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``[K, B, actor_dim] -> (action [K, B(, A)], log_prob [K, B])``."""
        out = self._out(actor_obs)
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            if deterministic:
                action = log_probs.argmax(-1)
            else:
                action = torch.multinomial(log_probs.exp().flatten(0, 1), 1).view(out.shape[:-1])
            return action, log_probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
        log_std = self._log_std(out)
        log_norm = log_std.sum(-1) + _LOG_SQRT_2PI * out.shape[-1]
        if deterministic:
            return out, -log_norm
        noise = torch.randn_like(out)
        return out + log_std.exp() * noise, -0.5 * noise.square().sum(-1) - log_norm

    def evaluate(self, actor_obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_prob [K, B], entropy [K, B])`` of stored actions ``[K, B(, A)]``."""
        out = self._out(actor_obs)
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            return log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1), entropy
        log_std = self._log_std(out)
        z = (action - out) * torch.exp(-log_std)
        log_prob = (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(-1)
        return log_prob, (log_std + 0.5 + _LOG_SQRT_2PI).sum(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """The action the env receives: clipped to the bounds (continuous) or as is (discrete)."""
        return action if self.discrete else torch.clamp(action, self.low, self.high)

    @torch.no_grad()
    def load_separate(self, models: list[nn.Module]) -> None:
        """Copy ``K`` :class:`drl.nn.actor_critic.ActorCritic` networks (feed-forward, free log-std, no squashing)
        into the learner axis: learner ``k`` then computes what ``models[k]`` computes."""
        if len(models) != self.num_learners:
            raise ValueError(f"expected {self.num_learners} networks, got {len(models)}")
        for k, model in enumerate(models):
            mine = [m for m in self.actor_body if isinstance(m, BatchedLinear)] + [self.action_out]
            head_linear = model.head.logits if self.discrete else model.head.mean
            theirs = [m for m in model.actor_body if isinstance(m, nn.Linear)] + [head_linear]
            mine += [m for m in self.critic if isinstance(m, BatchedLinear)]
            theirs += [m for m in model.critic if isinstance(m, nn.Linear)]
            if len(mine) != len(theirs):
                raise ValueError(f"network {k} has {len(theirs)} linear layers, the batched one {len(mine)}")
            for batched, linear in zip(mine, theirs, strict=True):
                batched.weight[k].copy_(linear.weight.T)
                batched.bias[k].copy_(linear.bias)
            if not self.discrete:
                self.log_std[k].copy_(model.head.log_std)


class TaskRouter:
    """Env axis ``[N, ...]`` <-> learner axis ``[K, N / K, ...]`` for fixed per-env learner ids ``[N]``.

    With equal contiguous blocks (env ``i`` belongs to learner ``i // (N / K)``) both directions are
    views; with equal counts in another order, one gather (a stable sort of the ids) each way.
    :attr:`even` is False when the counts differ: :meth:`gather_outputs` then evaluates every learner
    on every env (``[K, N, ...]``) and picks learner ``ids[i]`` for env ``i`` (evaluation envs whose
    count is not a multiple of ``K``).
    """

    def __init__(self, ids: torch.Tensor, num_learners: int):
        self.ids = ids.long()
        self.num_learners = num_learners
        n = ids.numel()
        counts = torch.bincount(self.ids, minlength=num_learners)
        self.even = bool((counts == n // num_learners).all()) and n % num_learners == 0
        self.per_learner = n // num_learners
        blocks = torch.arange(num_learners, device=ids.device).repeat_interleave(max(self.per_learner, 1))
        self.contiguous = self.even and bool((self.ids == blocks[:n]).all())
        self.order = None if self.contiguous or not self.even else torch.sort(self.ids, stable=True).indices
        self.inverse = None if self.order is None else torch.argsort(self.order)

    def to_learners(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, ...] -> [K, N / K, ...]`` (learner ``k``'s envs in env order); needs :attr:`even`."""
        if self.order is not None:
            x = x[self.order]
        return x.reshape(self.num_learners, self.per_learner, *x.shape[1:])

    def to_envs(self, x: torch.Tensor) -> torch.Tensor:
        """``[K, N / K, ...] -> [N, ...]``, the inverse of :meth:`to_learners`."""
        x = x.reshape(self.num_learners * self.per_learner, *x.shape[2:])
        return x if self.inverse is None else x[self.inverse]

    def pick(self, x: torch.Tensor) -> torch.Tensor:
        """``[K, N, ...]`` (every learner on every env) ``-> [N, ...]``: learner ``ids[i]``'s output for env ``i``."""
        return x[self.ids, torch.arange(self.ids.numel(), device=x.device)]
