"""Proximal Policy Optimisation (Schulman et al. 2017), on torch-batched rollouts.

Everything PPO does is in this file: the actor-critic, the clipped surrogate, the (optionally
clipped) value loss, the entropy bonus, advantage normalisation, gradient clipping, learning-rate
annealing, target-KL early stop, observation normalisation and reward scaling.

Two choices differ from most peers and are deliberate:

* values are computed after the rollout in one batched pass: ``V(obs_t)`` and ``V(final_obs_t)``
  for every step, so the per-step path runs only the actor (on the CPU ``V(final_obs_t)`` reuses
  ``V(obs_{t+1})`` wherever step t ended no episode: see :meth:`PPO._next_values`);
* a truncated episode bootstraps from ``V(final_obs)`` (see :func:`drl.returns.gae`).

The critic may read another obs group than the actor (``critic_obs: critic``): a privileged
critic is a config switch, not a new agent.

Recurrent policies (``rnn_type: gru | lstm``) put a :class:`drl.nn.recurrent.RecurrentCore` in front
of the actor MLP (and of the critic MLP with ``rnn_critic``). The agent keeps each core's hidden
state per env, ``[N, S, H]``, zeroed when an episode ends; each step stores the state it entered
with (``hidden/actor``, ``hidden/critic``). Training unrolls chunks of ``seq_len`` steps from their
stored initial states (:class:`drl.storage.ChunkSampler`), zeroing the state at episode starts.
GAE's values come from one batched step of the critic core per stored step: ``V(obs_t)`` from the
stored state ``h_t`` it entered with, giving ``h'_t``; ``V(final_obs_t)`` from ``h'_t``, not reset:
the final obs continues the episode of ``obs_t`` (for a step that does not end an episode it is
``obs_{t+1}`` and ``h'_t = h_{t+1}``, so both values agree with the next step's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, ClassVar

import gymnasium as gym
import torch
from torch import nn

from drl import distributed
from drl.agents import ppo_intrinsic as intrinsic
from drl.agents.ppo_config import (  # noqa: F401 - the config and its bounds, imported from here too
    COMPILE_AUTO_MAX_CPU_MINIBATCH,
    COMPILE_AUTO_MIN_STEPS,
    MAX_EPOCHS,
    MAX_HIDDEN_WEIGHTS,
    MAX_LOSS_COEF,
    MAX_RNN_LAYERS,
    MAX_WIDTH,
    PPOConfig,
)
from drl.nn import RewardScaler, RunningMeanStd
from drl.nn.actor_critic import ActorCritic
from drl.nn.deploy import CallActor, DeployedActor, ExportError, FrozenNormalizer
from drl.nn.heads import LOG_STD_MAX, LOG_STD_MIN
from drl.nn.mlp import flat_dim, fused_available, group_space
from drl.nn.normalization import merge_ranks
from drl.nn.numba_actor import NumbaGaussianActor, numba_available
from drl.nn.recurrent import RecurrentMemory
from drl.optim import TrainStep, compiler_available
from drl.returns import gae
from drl.storage import ChunkSampler, Field, MinibatchSampler, RolloutBuffer
from envs.core import MissingDependencyError

__all__ = ["PPOConfig", "PPO", "ActorCritic", "COMPILE_AUTO_MIN_STEPS"]

# On the CPU an eager minibatch step takes its loss and gradient in chunks of at most this many rows (drl.optim.
# TrainStep's row_chunk): a [64, 64] actor-critic's forward + backward on 32,768 rows at once takes about 30% longer
# than on four chunks of 8,192, whose activations stay in cache (one thread); at 8,192 rows and below, no chunks.
CPU_ROW_CHUNK = 8192


class PPO:
    """PPO agent: ``act`` during rollouts, ``update`` on a filled :class:`RolloutBuffer`.

    Args:
        observation_space: the env's single observation space (Box or Dict of groups).
        action_space: the env's single action space (Discrete or Box).
        cfg: hyperparameters.
        num_envs: envs per rollout (sizes the reward scaler's running returns).
        device: where networks and rollouts live.
        generator: torch generator for minibatch shuffling (seeded by the runner).
        total_steps: the run's env-step budget (decides ``compile: auto``); None: unknown.
    """

    # trains under `drl train --nproc N` / torchrun: every update goes through drl.optim.TrainStep or FusedUpdate,
    # which average the gradients across ranks (drl.distributed); subclasses inherit it
    distributed: ClassVar[bool] = True

    config_class = PPOConfig
    extra_fields: tuple[str, ...] = ()  # stored fields a subclass's losses read besides obs, actions, log_probs

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: PPOConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        self.cfg = cfg
        self.device = device
        self.num_envs = num_envs
        self.action_space = action_space
        self.generator = generator
        self.grouped_obs = isinstance(observation_space, gym.spaces.Dict)
        actor_space = group_space(observation_space, cfg.actor_obs, "actor", "PPO")
        critic_space = group_space(observation_space, cfg.critic_obs, "critic", "PPO")
        self.groups = sorted({cfg.actor_obs, cfg.critic_obs})
        self.group_shapes = {cfg.actor_obs: actor_space.shape, cfg.critic_obs: critic_space.shape}
        self.model = ActorCritic(self._actor_dim(flat_dim(actor_space.shape)), flat_dim(critic_space.shape),
                                 action_space, cfg)
        self.model.to(device)
        self.across_ranks = distributed.active()  # torchrun: minibatch statistics over all ranks (drl.distributed)
        # parameters, gradients and Adam's moments each in one flat tensor; optionally one compiled graph
        compile_ = self._should_compile(num_envs, total_steps)
        self.train_step = TrainStep(self.model, self._minibatch_loss, cfg.learning_rate, cfg.max_grad_norm,
                                    eps=cfg.adam_eps, compile=compile_, clip_groups=self._clip_groups(),
                                    row_chunk=self._row_chunk())
        self.numba_actor = self._make_numba_actor()  # after TrainStep: it keeps views of the final storage
        # under torchrun each rank folds in its own obs during a rollout; sync_ranks merges them at its end;
        # on CUDA the update + normalise is compiled with the step (a few kernels per env step)
        self.obs_normalizers = nn.ModuleDict(
            {g: RunningMeanStd((flat_dim(self.group_shapes[g]),), rank_merge="boundary", compile_cuda=compile_)
             for g in self.groups}
        ).to(device)
        self.reward_scaler = RewardScaler(num_envs, cfg.gamma).to(device)
        if isinstance(action_space, gym.spaces.Discrete):
            self.action_field = Field((), torch.int64)
        else:
            self.action_field = Field((flat_dim(action_space.shape),), torch.float32)
        # each recurrent core's state per env; None for a feed-forward policy
        self.memory = RecurrentMemory(self.model.cores(), num_envs, device) if cfg.recurrent else None
        # env info entries the runner stores with each step: {info key: storage field}
        self.info_fields = {intrinsic.INFO_KEY: intrinsic.FIELD} if cfg.intrinsic_value else {}
        self.info_fields_source = "algo.intrinsic_value"  # the option that asks for them (named in errors)

    def _clip_groups(self) -> tuple[tuple[str, ...], ...] | None:
        """The parameter groups whose gradient norms are clipped apart (``algo.clip_grad_per_network``); None: one
        joint norm."""
        return self.model.clip_groups() if self.cfg.clip_grad_per_network else None

    def _row_chunk(self) -> int | None:
        """The training step's ``row_chunk``: :data:`CPU_ROW_CHUNK` on the CPU; None on a GPU and for a recurrent
        policy (whose minibatches are whole chunks of steps)."""
        return CPU_ROW_CHUNK if self.device.type == "cpu" and not self.cfg.recurrent else None

    def _actor_dim(self, obs_dim: int) -> int:
        """The width of the actor MLP's input for an actor obs group of ``obs_dim`` values (a subclass may add
        inputs, e.g. a residual policy's base action)."""
        return obs_dim

    def _make_numba_actor(self) -> NumbaGaussianActor | None:
        wanted = self.cfg.numba_actor
        if wanted is False or self.cfg.recurrent:  # validation refused numba_actor: true with a recurrent policy
            return None
        supported = self.device.type == "cpu" and NumbaGaussianActor.supports(self.model.actor_body, self.model.head)
        if wanted == "auto" and not (supported and numba_available()):
            return None  # auto: fall back to the torch actor quietly
        if not numba_available():
            raise MissingDependencyError("algo.numba_actor: true", "numba")
        if not supported:
            raise ValueError("algo.numba_actor: true needs device cpu, an MLP actor and a Gaussian head with "
                             "state_dependent_std: false; set algo.numba_actor to auto or false")
        return NumbaGaussianActor(self.model.actor_body, self.model.head)

    def _should_compile(self, num_envs: int, total_steps: int | None) -> bool:
        if self.cfg.compile != "auto":
            return bool(self.cfg.compile)
        if total_steps is None or not compiler_available() or self.cfg.recurrent:
            return False
        if (self.device.type == "cpu" and self.cfg.minibatch_size >= COMPILE_AUTO_MAX_CPU_MINIBATCH
                and self.cfg.activation in ("tanh", "relu") and fused_available()):
            return False
        minibatches = self.cfg.num_steps * num_envs // self.cfg.minibatch_size
        iterations = -(-total_steps // (self.cfg.num_steps * num_envs))
        return iterations * minibatches * self.cfg.num_epochs >= COMPILE_AUTO_MIN_STEPS

    # --- rollout side ---------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        """What the runner stores each step (obs groups already normalised)."""
        fields = {f"obs/{g}": Field((flat_dim(self.group_shapes[g]),)) for g in self.groups}
        fields[f"final_obs/{self.cfg.critic_obs}"] = Field((flat_dim(self.group_shapes[self.cfg.critic_obs]),))
        fields |= {
            "actions": self.action_field,
            "log_probs": Field(()),
            "rewards": Field(()),
            "terminated": Field((), torch.bool),
            "truncated": Field((), torch.bool),
        }
        # the recurrent state each core entered the step with
        fields |= {f"hidden/{role}": Field(core.state_shape) for role, core in self.model.cores().items()}
        fields |= {name: Field(()) for name in self.info_fields.values()}
        return fields

    def _groups_of(self, obs: torch.Tensor | dict[str, torch.Tensor], groups: list[str]) -> dict[str, torch.Tensor]:
        """Pick obs groups and flatten each to ``[N, dim]``."""
        if not self.grouped_obs:
            return dict.fromkeys(groups, obs if obs.dim() == 2 else obs.flatten(1))
        return {g: obs[g] if obs[g].dim() == 2 else obs[g].flatten(1) for g in groups}

    def _normalize(self, groups: dict[str, torch.Tensor], update: bool) -> dict[str, torch.Tensor]:
        if not self.cfg.normalize_obs:
            return groups
        return {g: self.obs_normalizers[g].update_normalize(x, update) for g, x in groups.items()}

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Choose actions for ``obs`` ``[N, ...]``.

        Returns ``(env_action, record)``: the action to send to the env (clipped or squashed into
        the bounds) and what to store for this step (normalised obs groups, raw action, log-prob).
        """
        groups = self._groups_of(obs, self.groups)
        actor_key = self.cfg.actor_obs
        if self.memory is not None:
            return self._act_recurrent(self._normalize(groups, update=update_stats), deterministic)
        if self.numba_actor is not None and groups[actor_key].shape[0] <= self.numba_actor.max_batch:
            if self.cfg.normalize_obs:  # the kernel normalises the actor's group in the same call
                others = self._normalize({g: x for g, x in groups.items() if g != actor_key}, update=update_stats)
                groups[actor_key], action, log_prob, env_action = self.numba_actor.sample_normalized(
                    groups[actor_key], self.obs_normalizers[actor_key], update_stats, deterministic)
                groups.update(others)
            else:
                action, log_prob, env_action = self.numba_actor.sample(groups[actor_key], deterministic)
        else:
            groups = self._normalize(groups, update=update_stats)
            actor_obs = groups[actor_key]
            action, log_prob = self.model.act(actor_obs, deterministic)
            env_action = self.model.head.env_action(action)
        record = {f"obs/{g}": x for g, x in groups.items()}
        record["actions"] = action
        record["log_probs"] = log_prob
        return env_action, record

    def _act_recurrent(self, groups: dict[str, torch.Tensor], deterministic: bool
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`act` of a recurrent policy on normalised groups: record each core's state, then advance it
        (only the cores in :attr:`memory`: an evaluation steps the actor's alone)."""
        record = {f"obs/{g}": x for g, x in groups.items()}
        features = {}
        for role in list(self.memory.states):
            group = self.cfg.actor_obs if role == "actor" else self.cfg.critic_obs
            record[f"hidden/{role}"], features[role] = self.memory.step(role, groups[group])
        action, log_prob = self.model.act(features["actor"], deterministic)
        record["actions"] = action
        record["log_probs"] = log_prob
        return self.model.head.env_action(action), record

    def end_episodes(self, done: torch.Tensor) -> None:
        """Zero the recurrent state of the envs whose episode ended (``done [N]`` bool); no-op when feed-forward."""
        if self.memory is not None:
            self.memory.end_episodes(done)

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """Act on ``num_envs`` other envs (an evaluation, a video) with their own recurrent state.

        Inside, :meth:`act` starts from a zero actor state for ``num_envs`` envs; call the yielded
        function with each step's ``done [num_envs]`` (terminated or truncated) to zero it where an
        episode ended. On exit the training state is back, untouched. No-op when feed-forward.
        """
        with contextlib.nullcontext() if self.memory is None else self.memory.fresh(num_envs, roles=("actor",)):
            yield self.end_episodes

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """Complete a step's record with its reward and true next obs.

        The reward is stored as the env gave it: with ``normalize_reward``, :meth:`update` scales the
        rollout's rewards (:meth:`RewardScaler.scale_rollout`, the same values as scaling each step).
        """
        critic_key = self.cfg.critic_obs
        critic_obs = self._groups_of(final_obs, [critic_key])[critic_key]
        if self.cfg.normalize_obs:
            critic_obs = self.obs_normalizers[critic_key].normalize(critic_obs)
        record[f"final_obs/{critic_key}"] = critic_obs
        record["rewards"] = reward
        record["terminated"] = terminated
        record["truncated"] = truncated
        if self.memory is not None:  # feed-forward: nothing per env to restart (no op on the step path)
            self.memory.end_episodes(terminated | truncated)
        return record

    def sync_ranks(self) -> None:
        """Under torchrun, at the end of each rollout (the runner calls it on every rank before :meth:`update`):
        merge the obs statistics each rank gathered on its own during the rollout (one all-gather;
        :func:`drl.nn.normalization.merge_ranks`). Within a rollout a rank normalises with the statistics as of
        the rollout's start plus its own envs' obs so far; after this call every rank holds the statistics of
        all ranks' obs. A no-op in one process or without ``normalize_obs``."""
        if self.cfg.normalize_obs:
            merge_ranks(self.obs_normalizers.values())

    # --- learning side --------------------------------------------------------------------
    @torch.no_grad()
    def compute_returns(self, storage: RolloutBuffer, rewards: torch.Tensor | None = None,
                        intrinsic_out: dict[str, torch.Tensor] | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(values, advantages, returns)``, each ``[T, N]``, with two batched critic passes.

        ``rewards[T, N]``: the rewards to learn from (scaled ones); default the stored ones. With
        ``algo.intrinsic_value`` pass ``intrinsic_out`` (a dict): the advantages are then the mixed ones
        and it receives ``intrinsic_values`` and ``intrinsic_returns`` ``[T, N]`` (:mod:`ppo_intrinsic`).
        """
        critic_key = self.cfg.critic_obs
        steps, n = storage.capacity, storage.num_envs
        obs = storage[f"obs/{critic_key}"].reshape(steps * n, -1)
        final_obs = storage[f"final_obs/{critic_key}"].reshape(steps * n, -1)
        core = self.model.critic_rnn
        if core is not None:  # the state h_t each step entered with gives h'_t; final_obs_t continues from h'_t
            obs, next_state = core.step(obs, storage["hidden/critic"].flatten(0, 1))
            final_obs, _ = core.step(final_obs, next_state)
        values = self.model.value(obs).view(steps, n)
        if core is None and intrinsic_out is None and not self.cfg.normalize_obs and obs.device.type == "cpu":
            next_values = self._next_values(values, final_obs, storage["terminated"] | storage["truncated"])
        else:
            next_values = self.model.value(final_obs).view(steps, n)
        advantages, returns = gae(storage["rewards"] if rewards is None else rewards, values, next_values,
                                  storage["terminated"], storage["truncated"], self.cfg.gamma, self.cfg.gae_lambda)
        if intrinsic_out is not None:  # the second stream, on the same critic inputs
            head = self.model.intrinsic_critic
            intrinsic_values = head(obs).view(steps, n)
            advantages, intrinsic_out["intrinsic_returns"] = intrinsic.combined_advantages(
                self.cfg, advantages, storage[intrinsic.FIELD], intrinsic_values, head(final_obs).view(steps, n),
                storage["terminated"], storage["truncated"])
            intrinsic_out["intrinsic_values"] = intrinsic_values
        return values, advantages, returns

    def _next_values(self, values: torch.Tensor, final_obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """``V(final_obs_t) [T, N]`` from ``values = V(obs_t) [T, N]``: where step t ended no episode, its final obs
        is the next step's obs (the env contract; stored unnormalised), so ``V(obs_{t+1})`` is reused and the critic
        runs only on the last step's and the done steps' final obs (``final_obs [T * N, D]``, ``done [T, N]``).

        One critic pass over ``T * N`` rows fewer; the values agree with the full pass up to the matmul's summation
        order over a different batch. The done rows are found on the host: CPU only (on a GPU the full pass
        costs less than the sync).
        """
        steps, n = values.shape
        rows = torch.cat([done[:-1].reshape(-1).nonzero().squeeze(1),
                          torch.arange((steps - 1) * n, steps * n, device=values.device)])
        next_values = torch.cat([values[1:], values.new_empty(1, n)])
        next_values.view(-1)[rows] = self.model.value(final_obs[rows])
        return next_values

    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """Run the PPO epochs on a full rollout. ``progress`` in [0, 1] drives LR annealing.

        With ``normalize_reward`` this is where the reward scaler takes the rollout (once per call).
        """
        cfg = self.cfg
        lr = cfg.learning_rate * (1.0 - progress) if cfg.anneal_lr else cfg.learning_rate
        self.train_step.set_learning_rate(lr)
        rewards = None
        if cfg.intrinsic_value:  # the extrinsic stream learns from the reward without the bonus
            rewards = intrinsic.split_rewards(storage["rewards"], storage[intrinsic.FIELD])
        if cfg.normalize_reward:
            rewards = self.reward_scaler.scale_rollout(storage["rewards"] if rewards is None else rewards,
                                                       storage["terminated"], storage["truncated"])
        extra: dict[str, torch.Tensor] = {}
        if cfg.intrinsic_value:
            values, advantages, returns = self.compute_returns(storage, rewards, intrinsic_out=extra)
        else:
            values, advantages, returns = self.compute_returns(storage, rewards)
        if cfg.recurrent:
            minibatches = self._chunked(storage, values, advantages, returns, extra)
        else:
            batch = storage.flat([f"obs/{g}" for g in self.groups] + ["actions", "log_probs", *self.extra_fields])
            batch["values"] = values.reshape(-1)
            batch["advantages"] = advantages.reshape(-1)
            batch["returns"] = returns.reshape(-1)
            batch |= {key: x.reshape(-1) for key, x in extra.items()}
            sampler = MinibatchSampler(batch["values"].shape[0], cfg.minibatch_size, self.generator, self.device)
            minibatches = partial(sampler.minibatches, batch)

        stats = {"policy_loss": [], "value_loss": [], "entropy": [], "approx_kl": [], "clip_fraction": [],
                 "grad_norm": []}
        if cfg.intrinsic_value:
            stats["intrinsic_value_loss"] = []
        epochs_run = 0
        stop = False
        for _ in range(cfg.num_epochs):
            # one gather per field per epoch; the minibatches are then contiguous views
            for minibatch in self._normalized_advantages(list(minibatches())):
                losses = self.train_step(minibatch)
                for k in stats:
                    stats[k].append(losses[k])
                # every rank stops alike: on the rank mean of the KL (itself without other ranks)
                if cfg.target_kl is not None and distributed.mean_scalar(losses["approx_kl"]) > cfg.target_kl:
                    stop = True
                    break
            epochs_run += 1
            if stop:
                break

        returns, values = returns.reshape(-1), values.reshape(-1)
        var_returns = returns.var()
        explained_var = 1.0 - (returns - values).var() / var_returns
        metrics = {k: torch.stack(v).mean().item() for k, v in stats.items()}
        metrics |= {
            "explained_variance": explained_var.item() if var_returns > 0 else float("nan"),
            "learning_rate": lr,
            "epochs": float(epochs_run),
        }
        if hasattr(self.model.head, "log_std") and not cfg.state_dependent_std:
            metrics["action_std"] = self.model.head.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp().mean().item()
        return metrics

    def _normalized_advantages(self, minibatches: list[dict[str, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """An epoch's minibatches (all of one size ``M``) with ``normalize_advantages``: each one's advantages
        ``[M]`` minus their mean, over their std (+1e-8), all K minibatches' statistics in one
        :func:`drl.distributed.mean_std_rows` call (under torchrun: every rank's k-th minibatch together, in one
        collective). Done before the training step, so a step that takes a minibatch in row chunks
        (``TrainStep.row_chunk``) still normalises over all of it."""
        if not self.cfg.normalize_advantages or not minibatches or minibatches[0]["advantages"].numel() <= 1:
            return minibatches
        advantages = torch.stack([mb["advantages"] for mb in minibatches])  # [K, M]
        means, stds = distributed.mean_std_rows(advantages)
        normalized = (advantages - means.unsqueeze(1)) / (stds.unsqueeze(1) + 1e-8)
        for mb, row in zip(minibatches, normalized, strict=True):
            mb["advantages"] = row
        return minibatches

    def _chunked(self, storage: RolloutBuffer, values: torch.Tensor, advantages: torch.Tensor,
                 returns: torch.Tensor, extra: dict[str, torch.Tensor] | None = None
                 ) -> Callable[[], Iterator[dict[str, torch.Tensor]]]:
        """One epoch's minibatches of whole chunks of ``seq_len`` steps for a recurrent policy (a new
        order per call): per-step fields ``[B * seq_len, ...]`` (with ``resets``: the step starts an
        episode) and the chunks' initial states ``hidden/<role> [B, S, H]``."""
        sampler = ChunkSampler(storage.capacity, storage.num_envs, self.cfg.seq_len, self.cfg.minibatch_size,
                               self.generator, self.device)
        steps = {name: storage[name] for name in [f"obs/{g}" for g in self.groups] + ["actions", "log_probs"]}
        steps |= {"values": values, "advantages": advantages, "returns": returns, **(extra or {})}
        initial = {f"hidden/{role}": storage[f"hidden/{role}"] for role in self.model.cores()}
        done = storage["terminated"] | storage["truncated"]
        return partial(sampler.minibatches, *sampler.split(steps, initial, done))

    def _features(self, mb: dict[str, torch.Tensor], role: str) -> torch.Tensor:
        """What the actor's or critic's MLP reads on minibatch ``mb``: its obs group ``[M, D]``, or, with a
        recurrent core, the core's features ``[M, H]`` unrolled over the minibatch's chunks."""
        obs = mb[f"obs/{self.cfg.actor_obs if role == 'actor' else self.cfg.critic_obs}"]
        core = self.model.cores().get(role)
        return obs if core is None else core.unroll_flat(obs, mb[f"hidden/{role}"], mb["resets"])

    def _minibatch_loss(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Clipped surrogate + value loss - entropy bonus on one minibatch."""
        cfg = self.cfg
        mixed = cfg.autocast == "bf16"
        with torch.autocast(self.device.type, torch.bfloat16) if mixed else contextlib.nullcontext():
            log_prob, entropy = self.model.evaluate(self._features(mb, "actor"), mb["actions"])
            critic_features = self._features(mb, "critic")
            new_values = self.model.value(critic_features)
        log_prob, entropy, new_values = log_prob.float(), entropy.float(), new_values.float()
        log_ratio = log_prob - mb["log_probs"]
        ratio = log_ratio.exp()
        advantages = mb["advantages"]  # normalised over the whole minibatch by update() (normalize_advantages)
        policy_loss = -torch.min(
            advantages * ratio, advantages * ratio.clamp(1.0 - cfg.clip_coef, 1.0 + cfg.clip_coef)
        ).mean()

        value_loss = self._value_loss(new_values, mb["values"], mb["returns"])
        entropy_mean = entropy.mean()
        loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * entropy_mean
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()  # unbiased, non-negative estimator
            clip_fraction = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
        out = {"loss": loss, "policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
               "entropy": entropy_mean.detach(), "approx_kl": approx_kl, "clip_fraction": clip_fraction}
        if self.model.intrinsic_critic is not None:  # V_I's loss, weighted as V_E's (RND sums the two)
            intrinsic_loss = self._value_loss(self.model.intrinsic_critic(critic_features.float()).squeeze(-1),
                                              mb["intrinsic_values"], mb["intrinsic_returns"])
            out["loss"] = loss + cfg.vf_coef * intrinsic_loss
            out["intrinsic_value_loss"] = intrinsic_loss.detach()
        return out

    def _value_loss(self, new_values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
        """Mean squared error of ``new_values [M]`` to ``returns``; with ``clip_value`` the larger of it and the
        error of the update clipped to +-clip_value around ``old_values`` (PPO2's clipped value loss)."""
        clip = self.cfg.clip_value
        if clip is not None:
            clipped = old_values + (new_values - old_values).clamp(-clip, clip)
            return torch.max((new_values - returns).square(), (clipped - returns).square()).mean()
        return (new_values - returns).square().mean()

    # --- persistence ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Weights, Adam's moments, normaliser statistics and, for a recurrent policy, ``memory``: each
        core's state per training env ``[N, S, H]`` (part of the agent: a resumed run continues it)."""
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.train_step.adam.state_dict(),
            "obs_normalizers": self.obs_normalizers.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
        }
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.obs_normalizers.load_state_dict(state["obs_normalizers"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])

    def on_env_reset(self) -> None:
        """Every env was reset outside a rollout (a resume without env state): the reward
        scaler's running discounted returns restart at 0, as at an episode end, and so does
        a recurrent policy's state."""
        self.reward_scaler.returns.zero_()
        if self.memory is not None:
            self.memory.reset()

    @property
    def policy(self) -> nn.Module:
        """The actor (with its obs normalisers) for evaluation and export."""
        return self.model

    def export_actor(self) -> DeployedActor:
        """The deterministic actor as one traceable module: the raw ``actor_obs`` group ``[N, D]`` -> what
        ``act(obs, deterministic=True, update_stats=False)`` returns (the frozen normaliser, the MLP, the head's
        mode and its clip or tanh-rescale into the bounds; Discrete: the argmax ``[N]`` int64).

        Raises:
            ExportError: a recurrent policy (its hidden state lives between calls, outside one forward).
        """
        if self.cfg.recurrent:
            raise ExportError(f"{type(self).__name__}: a recurrent policy carries its hidden state from step to "
                              "step; export takes feed-forward actors only")
        model, group = self.model, self.cfg.actor_obs

        def actor(x: torch.Tensor) -> torch.Tensor:
            return model.head.env_action(model.act(x, deterministic=True)[0])

        rms = self.obs_normalizers[group] if self.cfg.normalize_obs else None
        return DeployedActor(FrozenNormalizer(rms), CallActor(actor, model.actor_body, model.head),
                             flat_dim(self.group_shapes[group]), group)
