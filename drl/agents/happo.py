"""Heterogeneous-Agent PPO (Kuba et al. 2022, "Trust Region Policy Optimisation in Multi-Agent RL"; HARL).

A cooperative team of named agents (the :mod:`envs.multi_agent` contract), each with its own actor over its
own observation ``obs[agent]`` and action space; one centralised critic ``V(obs["state"])``. The team
reward is the mean of the agents' reward columns (a cooperative env gives every agent the same reward).

Each update (HAPPO, HARL's ``happo`` trainer):

1. values ``V(state_t)``, ``V(final_state_t)`` in one batched pass (denormalised with value
   normalisation), advantages by GAE on the team reward (:func:`drl.returns.gae`), normalised once
   over the whole rollout;
2. a random permutation ``i_1 .. i_n`` of the agents; the factor starts at ``M = 1`` per sample;
3. for each agent ``i_m`` in turn: ``num_epochs`` of the clipped loss on ``M * A``
   (``M > 0``, so it sits outside the min; the paper's eq. 11 / HARL's ``factor * min(r A, clip(r) A)``)::

       L_i = -mean(M * min(r_i A, clip(r_i, 1 - eps, 1 + eps) A)) - ent_coef * mean(H_i),
       r_i = pi_i,new(a_i | o_i) / pi_i,old(a_i | o_i)

   then ``M <- M * r_i`` on the whole rollout with the updated actor (detached, unclipped; ``r_i`` is the
   product over the agent's action dimensions, as its log-prob is their sum);
4. the critic: ``critic_epochs`` on the (normalised) returns, Huber or squared error, optionally clipped
   around the old values.

``update_scheme: mappo`` (Yu et al. 2022) updates every actor on the same advantages with ``M = 1``
(simultaneous: the actors share no parameters, so the order is irrelevant). With one agent HAPPO is
PPO's update on the same batch (tests/test_happo.py checks it to float tolerance).

Differences from HARL, deliberate: value normalisation uses drl's :class:`RunningMeanStd` updated once
per rollout (HARL's ValueNorm is an exponential average updated per minibatch); the action std is
drl's free log-std (HARL: a sigmoid of a parameter). The team reward averages every reward column of the
rollout; competitive play (two teams) is :mod:`drl.agents.happo_competitive`, one HAPPO per team on its own
agents and reward columns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from drl.agents.ppo import COMPILE_AUTO_MIN_STEPS, PPOConfig
from drl.base_policy import describe_space
from drl.config import ConfigError, TrainConfig, check, check_range
from drl.nn import RewardScaler, RunningMeanStd
from drl.nn.actor_critic import Actor
from drl.nn.deploy import CallActor, DeployedActor, FrozenNormalizer
from drl.nn.heads import LOG_STD_MAX, LOG_STD_MIN
from drl.nn.mlp import flat_dim, make_mlp, reset_linear_layers
from drl.optim import TrainStep, compiler_available
from drl.returns import gae
from drl.storage import Field, MinibatchSampler, RolloutBuffer
from envs.multi_agent import STATE_KEY

__all__ = ["HAPPOConfig", "HAPPO", "compounding_factor"]

MAX_EPOCHS = 10_000


@dataclass
class HAPPOConfig(PPOConfig):
    """HAPPO/MAPPO hyperparameters (defaults: HARL's; PPOConfig's other fields mean what they mean there)."""

    num_steps: int = 200
    minibatch_size: int | None = None  # null: the whole rollout in one minibatch (HARL's num_mini_batch 1)
    num_epochs: int = 5  # actor epochs, per agent
    critic_epochs: int | None = None  # null: num_epochs
    learning_rate: float = 5e-4
    critic_learning_rate: float | None = None  # null: learning_rate
    ent_coef: float = 0.01
    vf_coef: float = 1.0
    max_grad_norm: float = 10.0
    actor_hidden: list[int] = field(default_factory=lambda: [128, 128])
    critic_hidden: list[int] = field(default_factory=lambda: [128, 128])
    activation: Literal["tanh", "relu", "elu", "silu"] = "relu"
    critic_obs: str = STATE_KEY  # the centralised critic's input
    compile: bool | Literal["auto"] = "auto"  # as PPO's: "auto" compiles the steps of runs long enough to repay it
    numba_actor: bool | Literal["auto"] = False
    update_scheme: Literal["happo", "mappo"] = "happo"
    share_actor: bool = False  # one actor for every agent (homogeneous teams: same obs and action spaces)
    value_norm: bool = True  # the critic predicts returns normalised by their running mean and std
    huber_delta: float | None = 10.0  # Huber value loss with this delta; null: squared error
    clip_grad_per_network: bool = True  # each actor and the critic have their own optimiser and gradient norm

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check(self.critic_obs == STATE_KEY, key("critic_obs"),
              f"the centralised critic reads obs['{STATE_KEY}']; got {self.critic_obs!r}")
        check(self.actor_obs == "policy", key("actor_obs"),
              f"each HAPPO actor reads its own agent's obs entry; leave it at 'policy', got {self.actor_obs!r}")
        check(self.rnn_type == "none", key("rnn_type"), "HAPPO's actors are feed-forward; set it to none")
        check(not self.intrinsic_value, key("intrinsic_value"), "is not supported by HAPPO; set it to false")
        check(self.target_kl is None, key("target_kl"), "is not supported by HAPPO; set it to null")
        check(self.numba_actor is not True, key("numba_actor"), "HAPPO acts with torch; set it to false")
        check(self.clip_grad_per_network, key("clip_grad_per_network"),
              "HAPPO and MAPPO train each actor and the critic with its own optimiser, so their gradient norms are "
              "always clipped apart; leave it true")
        batch = self.num_steps * train.env.num_envs
        # PPO's checks, with the whole rollout standing in for a null minibatch_size
        PPOConfig.validate(replace(self, minibatch_size=self.minibatch_size or batch), prefix, train)
        if self.critic_epochs is not None:
            check_range(self.critic_epochs, key("critic_epochs"), 1, MAX_EPOCHS)
        check(self.critic_learning_rate is None or self.critic_learning_rate > 0, key("critic_learning_rate"),
              f"must be > 0 or null, got {self.critic_learning_rate}")
        check(self.huber_delta is None or self.huber_delta > 0, key("huber_delta"),
              f"must be > 0 or null, got {self.huber_delta}")


def compounding_factor(factor: torch.Tensor, new_log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """HAPPO's factor after one more agent's update: ``M * pi_new(a|o) / pi_old(a|o)``, all ``[B]``, detached."""
    return (factor * (new_log_prob - old_log_prob).exp()).detach()


class HAPPO:
    """HAPPO / MAPPO agent: ``act`` during rollouts, ``update`` on a filled :class:`RolloutBuffer`.

    Args:
        observation_space: the env's single observation space, a ``Dict`` of every agent's space plus ``"state"``.
        action_space: the ``Dict`` of the agents' action spaces (Discrete or Box each).
        cfg: hyperparameters.
        num_envs: envs per rollout.
        device: where networks and rollouts live.
        generator: torch generator for the agent order and minibatches (seeded by the runner).
        total_steps: the run's env-step budget (decides ``compile: auto``); None: unknown.

    Raises:
        ConfigError: the spaces are not a multi-agent env's, or ``share_actor`` with agents whose spaces differ.
    """

    config_class = HAPPOConfig
    metric_columns = ["grad_norm", "critic_grad_norm", "factor_mean", "factor_max"]  # besides PPO's columns

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: HAPPOConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        if not (isinstance(observation_space, gym.spaces.Dict) and isinstance(action_space, gym.spaces.Dict)
                and STATE_KEY in observation_space.spaces):
            raise ConfigError("config key 'env.id': HAPPO needs a multi-agent env (obs {agent: ..., 'state': ...}, "
                              "actions {agent: ...}; see `drl list`)")
        self.cfg = cfg
        self.device = device
        self.num_envs = num_envs
        self.generator = generator
        self.agents: tuple[str, ...] = tuple(action_space.spaces)  # the Dict's (sorted) key order
        self.action_spaces = dict(action_space.spaces)
        self.obs_dims = {a: flat_dim(observation_space[a].shape) for a in self.agents}
        state_dim = flat_dim(observation_space[STATE_KEY].shape)
        if cfg.share_actor:
            first = self.agents[0]
            same = all(self.obs_dims[a] == self.obs_dims[first] and self.action_spaces[a] == self.action_spaces[first]
                       for a in self.agents)
            if not same:
                raise ConfigError("config key 'algo.share_actor': the agents' observation or action spaces differ; "
                                  "one actor needs a homogeneous team, so set it to false")
            shared = Actor(self.obs_dims[first], self.action_spaces[first], cfg)
            self.actors = nn.ModuleDict(dict.fromkeys(self.agents, shared))
        else:
            self.actors = nn.ModuleDict({a: Actor(self.obs_dims[a], self.action_spaces[a], cfg) for a in self.agents})
        self.critic = make_mlp(state_dim, cfg.critic_hidden, 1, cfg.activation, output_gain=1.0)
        if cfg.init == "default":
            reset_linear_layers(self.critic)
        self.actors.to(device)
        self.critic.to(device)
        compile_step = _should_compile(cfg, num_envs, total_steps)
        steps: dict[int, TrainStep] = {}  # one optimiser per distinct actor module (one when shared)
        for a in self.agents:
            actor = self.actors[a]
            if id(actor) not in steps:
                steps[id(actor)] = TrainStep(actor, _actor_loss_fn(actor, cfg), cfg.learning_rate,
                                             cfg.max_grad_norm, eps=cfg.adam_eps, compile=compile_step)
        self.actor_steps = {a: steps[id(self.actors[a])] for a in self.agents}
        self.critic_step = TrainStep(self.critic, self._critic_loss, cfg.critic_learning_rate or cfg.learning_rate,
                                     cfg.max_grad_norm, eps=cfg.adam_eps, compile=compile_step)
        self.value_normalizer = RunningMeanStd((), clip=float("inf")).to(device)
        groups = {**self.obs_dims, STATE_KEY: state_dim}
        self.obs_normalizers = nn.ModuleDict({g: RunningMeanStd((d,)) for g, d in groups.items()}).to(device)
        self.reward_scaler = RewardScaler(num_envs, cfg.gamma).to(device)

    # --- rollout side ---------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        """Per agent ``obs/<agent>``, ``actions/<agent>``, ``log_probs/<agent>``; the state and final state;
        ``rewards [A]`` (the env's columns), ``terminated``, ``truncated``."""
        fields = {f"obs/{a}": Field((d,)) for a, d in self.obs_dims.items()}
        state_dim = self.obs_normalizers[STATE_KEY].mean.shape[0]
        fields |= {f"obs/{STATE_KEY}": Field((state_dim,)), f"final_obs/{STATE_KEY}": Field((state_dim,))}
        for a, space in self.action_spaces.items():
            discrete = isinstance(space, gym.spaces.Discrete)
            fields[f"actions/{a}"] = Field((), torch.int64) if discrete else Field((flat_dim(space.shape),))
            fields[f"log_probs/{a}"] = Field(())
        fields["rewards"] = Field((len(self.agents),))
        fields["terminated"] = Field((), torch.bool)
        fields["truncated"] = Field((), torch.bool)
        return fields

    def _normalize(self, group: str, x: torch.Tensor, update: bool) -> torch.Tensor:
        x = x if x.dim() == 2 else x.flatten(1)
        return self.obs_normalizers[group].update_normalize(x, update) if self.cfg.normalize_obs else x

    @torch.inference_mode()
    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = False, update_stats: bool = True
            ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``obs`` ``{agent: [N, *obs_i], "state": [N, *state]}`` -> ``({agent: env action [N, ...]}, record)``.

        Each actor reads only its own entry; the record holds the (normalised) obs, actions and log-probs.
        """
        env_actions, record = {}, {}
        for a in self.agents:
            x = record[f"obs/{a}"] = self._normalize(a, obs[a], update_stats)
            actor = self.actors[a]
            action, record[f"log_probs/{a}"] = actor.act(x, deterministic)
            record[f"actions/{a}"] = action
            env_actions[a] = actor.head.env_action(action)
        record[f"obs/{STATE_KEY}"] = self._normalize(STATE_KEY, obs[STATE_KEY], update_stats)
        return env_actions, record

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Complete a step's record: ``reward [N, A]``, the flags ``[N]`` and the true next state."""
        record[f"final_obs/{STATE_KEY}"] = self._normalize(STATE_KEY, final_obs[STATE_KEY], update=False)
        record["rewards"] = reward
        record["terminated"] = terminated
        record["truncated"] = truncated
        return record

    def on_env_reset(self) -> None:
        """Every env was reset outside a rollout: the reward scaler's running returns restart."""
        self.reward_scaler.returns.zero_()

    # --- learning side --------------------------------------------------------------------
    def _values(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V normalised, V in return units)``, both ``[B]``, of states ``[B, S]``."""
        out = self.critic(state).squeeze(-1)
        if not self.cfg.value_norm:
            return out, out
        norm = self.value_normalizer
        return out, out * norm.std_as(out.dtype) + norm.mean.to(out.dtype)

    @torch.no_grad()
    def compute_returns(self, storage: RolloutBuffer, rewards: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values [T, N] as the critic output them, advantages [T, N], returns [T, N])`` on the team reward."""
        steps, n = storage.capacity, storage.num_envs
        values_out, values = self._values(storage[f"obs/{STATE_KEY}"].reshape(steps * n, -1))
        _, next_values = self._values(storage[f"final_obs/{STATE_KEY}"].reshape(steps * n, -1))
        advantages, returns = gae(rewards, values.view(steps, n), next_values.view(steps, n),
                                  storage["terminated"], storage["truncated"], self.cfg.gamma, self.cfg.gae_lambda)
        return values_out.view(steps, n), advantages, returns

    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """One HAPPO (or MAPPO) update on a full rollout; ``progress`` in [0, 1] drives LR annealing."""
        cfg = self.cfg
        scale = 1.0 - progress if cfg.anneal_lr else 1.0
        for step in {id(s): s for s in self.actor_steps.values()}.values():
            step.set_learning_rate(cfg.learning_rate * scale)
        self.critic_step.set_learning_rate((cfg.critic_learning_rate or cfg.learning_rate) * scale)
        rewards = storage["rewards"].mean(-1)  # the team reward [T, N]
        if cfg.normalize_reward:
            rewards = self.reward_scaler.scale_rollout(rewards, storage["terminated"], storage["truncated"])
        old_values, advantages, returns = self.compute_returns(storage, rewards)
        advantages, returns, old_values = advantages.reshape(-1), returns.reshape(-1), old_values.reshape(-1)
        values = returns - advantages  # the old values in return units (for the explained variance)
        if cfg.normalize_advantages and advantages.numel() > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        size = advantages.shape[0]
        sampler = MinibatchSampler(size, cfg.minibatch_size or size, self.generator, self.device)

        order = self._agent_order()
        factor = torch.ones(size, device=self.device)
        stats: dict[str, list[torch.Tensor]] = {k: [] for k in ("policy_loss", "entropy", "approx_kl",
                                                                "clip_fraction", "grad_norm")}
        for index in order:
            agent = self.agents[index]
            batch = {"obs": storage[f"obs/{agent}"].flatten(0, 1), "actions": storage[f"actions/{agent}"].flatten(0, 1),
                     "log_probs": storage[f"log_probs/{agent}"].reshape(-1), "advantages": advantages,
                     "factor": factor}
            for _ in range(cfg.num_epochs):
                for minibatch in sampler.minibatches(batch):
                    losses = self.actor_steps[agent](minibatch)
                    for k in stats:
                        stats[k].append(losses[k])
            if cfg.update_scheme == "happo":  # the next agent sees this agent's new/old ratio folded in
                with torch.no_grad():
                    new_log_prob, _ = self.actors[agent].evaluate(batch["obs"], batch["actions"])
                factor = compounding_factor(factor, new_log_prob, batch["log_probs"])

        targets = self.value_normalizer.update_normalize(returns) if cfg.value_norm else returns
        critic_batch = {"state": storage[f"obs/{STATE_KEY}"].flatten(0, 1), "values": old_values, "targets": targets}
        value_stats: dict[str, list[torch.Tensor]] = {"value_loss": [], "critic_grad_norm": []}
        for _ in range(cfg.critic_epochs or cfg.num_epochs):
            for minibatch in sampler.minibatches(critic_batch):
                losses = self.critic_step(minibatch)
                value_stats["value_loss"].append(losses["value_loss"])
                value_stats["critic_grad_norm"].append(losses["grad_norm"])

        var_returns = returns.var()
        metrics = {k: torch.stack(v).mean().item() for k, v in {**stats, **value_stats}.items()}
        metrics |= {"explained_variance": (1.0 - (returns - values).var() / var_returns).item()
                    if var_returns > 0 else float("nan"),
                    "learning_rate": cfg.learning_rate * scale, "epochs": float(cfg.num_epochs),
                    "factor_mean": factor.mean().item(), "factor_max": factor.max().item()}
        stds = [actor.head.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp().mean() for actor in self.actors.values()
                if hasattr(actor.head, "log_std") and not cfg.state_dependent_std]
        if stds:
            metrics["action_std"] = torch.stack(stds).mean().item()
        return metrics

    def _agent_order(self) -> list[int]:
        """The order the actors are updated in (indices into :attr:`agents`): a random permutation for HAPPO
        (from the run's generator), the agents' order for MAPPO (where it plays no part)."""
        if self.cfg.update_scheme == "happo":
            return torch.randperm(len(self.agents), generator=self.generator).tolist()
        return list(range(len(self.agents)))

    def _critic_loss(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``vf_coef *`` the value loss of ``V(state)`` against the (normalised) returns: Huber with
        ``huber_delta`` (else squared error); with ``clip_value`` the larger of it and that of the update
        clipped to +-clip_value around the old value (PPO2's / HARL's clipped value loss)."""
        cfg = self.cfg
        new = self.critic(mb["state"]).squeeze(-1)
        errors = [new - mb["targets"]]
        if cfg.clip_value is not None:
            errors.append(mb["values"] + (new - mb["values"]).clamp(-cfg.clip_value, cfg.clip_value) - mb["targets"])
        if cfg.huber_delta is None:
            per_sample = [e.square() for e in errors]
        else:  # e^2 / 2 for |e| <= delta, else delta (|e| - delta / 2)
            per_sample = [F.huber_loss(e, torch.zeros_like(e), reduction="none", delta=cfg.huber_delta)
                          for e in errors]
        value_loss = (per_sample[0] if len(per_sample) == 1 else torch.max(*per_sample)).mean()
        return {"loss": cfg.vf_coef * value_loss, "value_loss": value_loss.detach()}

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, every optimiser's moments, the value, obs and reward normalisers' statistics."""
        unique = {id(s): s for s in self.actor_steps.values()}
        return {"actors": self.actors.state_dict(), "critic": self.critic.state_dict(),
                "actor_optimizers": [s.adam.state_dict() for s in unique.values()],
                "critic_optimizer": self.critic_step.adam.state_dict(),
                "value_normalizer": self.value_normalizer.state_dict(),
                "obs_normalizers": self.obs_normalizers.state_dict(),
                "reward_scaler": self.reward_scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.actors.load_state_dict(state["actors"])
        self.critic.load_state_dict(state["critic"])
        unique = {id(s): s for s in self.actor_steps.values()}
        for step, saved in zip(unique.values(), state["actor_optimizers"], strict=True):
            step.adam.load_state_dict(saved)
        self.critic_step.adam.load_state_dict(state["critic_optimizer"])
        self.value_normalizer.load_state_dict(state["value_normalizer"])
        self.obs_normalizers.load_state_dict(state["obs_normalizers"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])

    @property
    def policy(self) -> nn.Module:
        """The actors, one entry per agent (for evaluation and export)."""
        return self.actors

    def export_actors(self) -> dict[str, DeployedActor]:
        """One deterministic actor per agent, keyed by the agent's name: ``obs[agent]`` ``[N, D_i]`` raw ->
        what ``act(obs, deterministic=True, update_stats=False)[0][agent]`` is (the agent's frozen obs
        normaliser, its actor's mean or argmax, the clip or tanh-rescale into its bounds). With
        ``share_actor`` the agents' files hold the same network but each its own normaliser."""
        exported = {}
        for a in self.agents:
            actor = self.actors[a]

            def act(x: torch.Tensor, actor: Actor = actor) -> torch.Tensor:
                return actor.head.env_action(actor.act(x, deterministic=True)[0])

            rms = self.obs_normalizers[a] if self.cfg.normalize_obs else None
            exported[a] = DeployedActor(FrozenNormalizer(rms), CallActor(act, actor.actor_body, actor.head),
                                        self.obs_dims[a], a, output_key=a,
                                        metadata={"agent": a, "action_space": describe_space(self.action_spaces[a])})
        return exported


def _should_compile(cfg: HAPPOConfig, num_envs: int, total_steps: int | None) -> bool:
    """``compile``; for "auto" (PPO's rule): when the run makes at least COMPILE_AUTO_MIN_STEPS actor steps."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    if total_steps is None or not compiler_available():
        return False
    batch = cfg.num_steps * num_envs
    iterations = -(-total_steps // batch)
    return iterations * (batch // (cfg.minibatch_size or batch)) * cfg.num_epochs >= COMPILE_AUTO_MIN_STEPS


def _actor_loss_fn(actor: Actor, cfg: HAPPOConfig) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """The loss function of one actor's :class:`TrainStep` (see :func:`actor_loss`)."""
    return lambda mb: actor_loss(actor, cfg, mb)


def actor_loss(actor: Actor, cfg: HAPPOConfig, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HAPPO's clipped surrogate on one agent's minibatch ``mb`` (``obs``, ``actions``, ``log_probs``,
    ``advantages``, ``factor``, all ``[M, ...]``): ``-mean(M * min(r A, clip(r) A)) - ent_coef * mean(H)``.
    With ``factor`` all ones this is PPO's policy loss and entropy bonus."""
    log_prob, entropy = actor.evaluate(mb["obs"], mb["actions"])
    log_ratio = log_prob - mb["log_probs"]
    ratio = log_ratio.exp()
    advantages = mb["advantages"]
    surrogate = torch.min(advantages * ratio, advantages * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef))
    policy_loss = -(mb["factor"] * surrogate).mean()
    entropy_mean = entropy.mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1.0) - log_ratio).mean()
        clip_fraction = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
    return {"loss": policy_loss - cfg.ent_coef * entropy_mean, "policy_loss": policy_loss.detach(),
            "entropy": entropy_mean.detach(), "approx_kl": approx_kl, "clip_fraction": clip_fraction}
