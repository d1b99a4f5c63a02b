"""Asymmetric advantage-weighted regression (AAWR; Hu et al. 2025, "Real-World RL of Active Perception Behaviors").

All of AAWR's math is in this file. The policy ``pi(a | z)`` reads the robot's observation ``z`` (obs group
``actor_obs``, default ``"policy"``); the critics read the privileged state ``s`` (``critic_obs``, default
``"critic"``) and are trained with IQL (Kostrikov et al. 2022):

* ``V(s)``: expectile regression toward the target ``Q'(s, a) = min`` over ``num_q_target_pair`` (2) target
  heads drawn at random from the ``num_q`` (5), each update anew (the official code's choice):
  ``L_V = E[|expectile - 1(u < 0)| u^2]``, ``u = Q'(s, a) - V(s)`` (IQL Eq. 5, expectile 0.7);
* ``Q_k(s, a)``: TD toward ``y = r + gamma (1 - terminated) V(s')`` (IQL Eq. 6; n-step windows with
  ``n_step > 1``; a truncated end too with ``bootstrap_truncated: false``): ``L_Q = 0.5 sum_k E[(Q_k(s, a) - y)^2]``;
* the policy: maximise ``E[w log pi(a | z)]`` over the data's actions with ``w = min(exp(A / beta), max_weight)``
  and ``A = Q'(s, a) - V(s)`` (AAWR Eq. 3; official: ``exp(3 A)`` clipped at 100, so ``beta = 1/3``).

Which Q the advantage reads (``advantage_q``): by default ``min``, the same random-pair minimum of the
target heads that ``V`` is the expectile of (IQL's choice, min of its two target heads), so ``A > 0``
means "above the expectile" of exactly the quantity ``V`` estimates and the binary weights ``1[A > 0]``
select the top ``1 - expectile`` share of actions in expectation; ``mean`` (all K target heads) is the
less pessimistic option.

Weighting (``weighting``): ``exp`` (AWR), ``binary`` (``1[A > 0]``, the paper's online option) or
``uniform`` (``w = 1``: behaviour cloning); ``online_weighting`` (null: the same) switches it for the
online phase, e.g. ``exp`` offline and ``binary`` online (each weighting is its own variant of the fused
update). With ``uniform`` the critic and value losses are not computed at all (that variant of the update
steps only the actor): under uniform weights they cannot change
a single actor gradient, so BC gets the same batches, the same number of actor steps and the same learning
rate as AAWR and AWR, only without the cost of critics it never reads (configs/aawr/drl-ActiveSearch-v0-bc.yaml
also sets ``critic_obs: policy``, so nothing privileged is needed or stored). Symmetric AWR (the paper's baseline) is
this code with ``critic_obs: policy``.

Demonstrations (``demos``: a file of :mod:`envs.tasks.demos`) fill a demo replay buffer; offline updates
sample it alone, online updates draw ``round(demo_fraction * batch_size)`` rows of each batch from it
(:class:`drl.storage.replay.MixedSampler`) and the rest from the online replay. Without demos AAWR trains
online only (``learning_starts`` gives a uniform warm-up); BC (``weighting: uniform``) or
``demo_fraction: 1`` without demos is refused by :meth:`AAWR.load_demos`.

The policy is a Gaussian on ``R^A`` with mean ``tanh(mu(z))`` in ``(-1, 1)^A`` and log-std ``clamp(.., -5, 2)``
(both from one MLP); acting samples it and clamps to ``[-1, 1]`` (the replay stores the clamped action),
the deterministic action is the mean. Demo actions at the bounds: the log-density is the Gaussian's
own at ``a``, finite for every ``a`` including ``+-1`` (a tanh-squashed density would need
``atanh(+-1) = inf`` there and blow up on demos recorded against the action limits); demo actions are
normalised with the replay's affine map and clamped into ``[-1, 1]`` (what the env does to them).

One Adam over all losses (official) is one Adam per parameter group here
(:class:`drl.agents.off_policy_base.FusedUpdate`: per coordinate the same steps, all groups step together);
the gradient of the summed loss is clipped to a global norm of ``max_grad_norm`` (10) first, as officially.

Memory (the robot's observation is partial: the paper's policy reads ``z`` "or a short history"). Both read the
replay through :meth:`drl.storage.ReplayBuffer.window`: for a sampled transition at step ``t`` the last ``L``
steps of the same env up to ``t``, cut at the episode's first step (demos: at their ``episode_index``); the
steps before it are padding.

* ``history_length: k`` (> 1): ``z_t`` becomes the concatenation ``[z_{t-k+1}, ..., z_t]`` (oldest first, each
  normalised, the padding zeros); every network reading ``actor_obs`` reads it, so with symmetric critics
  (``critic_obs: policy``) ``V`` and ``Q`` read the window too and ``V(s')`` the window ending at ``next_obs``.
  ``k = 1`` is the feed-forward policy, bit for bit.
* ``rnn_type: gru | lstm``: the actor is a :class:`drl.nn.recurrent.RecurrentActor`, a GRU/LSTM core
  (``rnn_hidden_size``) then the MLP. Training unrolls the core over the ``sequence_length`` steps up to ``t``
  from a zero state, which is zero again entering the episode's first step, the first ``burn_in`` of them
  without gradient (R2D2's zero-state strategy with burn-in, Kapturowski et al. 2019); the weighted regression
  is applied at ``t`` only, the window's last step: every sampled transition then weighs once with its own
  advantage, as in the feed-forward loss, and the critics (feed-forward on ``critic_obs``: the point of AAWR)
  run on the ``B`` sampled rows, not ``B * L``. The earlier steps are context, shorter near the episode start.
  Acting carries the hidden state from the episode's first step (zeroed where an episode ends), so
  ``sequence_length`` should cover what the task needs remembered. A recurrent actor trains eagerly
  (``compile`` refused) and excludes ``history_length > 1``; symmetric critics read the current observation.

Acting keeps the per-env memory (the window, or the hidden state) in :attr:`AAWR.memory`: cleared where an episode
ended (:meth:`AAWR.record_outcome`; with SAME_STEP autoreset the next obs is the new episode's first), fresh in an
evaluation or a video (:meth:`AAWR.fresh_memory`), saved with the agent state.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from drl.agents.off_policy_base import OffPolicyAgent, OffPolicyConfig
from drl.config import MAX_STEPS, PATH, TrainConfig, check, check_range
from drl.nn.critics import EnsembleMLP, QEnsemble, td_critic_loss
from drl.nn.deploy import DeployedActor, ExportError
from drl.nn.recurrent import ObsHistory, RecurrentActor, RecurrentMemory
from drl.storage import ReplayBuffer

__all__ = ["AAWRConfig", "AAWR", "expectile_loss", "awr_weights", "gaussian_log_prob", "LOG_STD_MIN",
           "LOG_STD_MAX"]

LOG_STD_MIN = -5.0  # IQL's clamp of the policy's log-std
LOG_STD_MAX = 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
MAX_WINDOW = 4096  # steps in a history window or a training sequence
MAX_RNN_LAYERS = 16


@dataclass
class AAWRConfig(OffPolicyConfig):
    """AAWR hyperparameters (defaults: the official AAWR code's, see the module docstring)."""

    learning_starts: int = 0  # the (pre-trained) policy acts from the first online step
    tau: float = 0.01  # Polyak rate of the target Q heads ...
    target_update_interval: int = 2  # ... applied every this many updates
    num_q: int = 5
    num_q_target_pair: int = 2
    critic_obs: str = "critic"  # "policy": symmetric AWR
    expectile: float = 0.7  # V is this expectile of the target Q (0.5: the mean, SARSA-like)
    beta: float = 1.0 / 3.0  # temperature: w = exp(A / beta)
    max_weight: float = 100.0  # w is clipped to at most this
    weighting: Literal["exp", "binary", "uniform"] = "exp"  # uniform: behaviour cloning
    online_weighting: Literal["exp", "binary", "uniform"] | None = None  # online phase; null: weighting
    max_grad_norm: float | None = 10.0  # the official code's clip of the global gradient norm
    advantage_q: Literal["min", "mean"] = "min"  # the target Q in A: the random-pair min, or the mean of all heads
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    # demonstrations (envs/tasks/demos.py format); null: none (pure online; BC needs them)
    demos: str | None = field(default=None, metadata=PATH)
    demo_fraction: float = 0.5  # share of each online batch drawn from the demos (RLPD-style)
    offline_updates: int = 20_000  # gradient steps on demos only before the first env step
    offline_log_interval: int = 1_000  # offline gradient steps per metrics row (and latest.pt)
    # memory of the policy (see the module docstring): a window of the last history_length policy observations
    # (1: the current one only), or a recurrent actor trained on sequences of sequence_length steps
    history_length: int = 1
    rnn_type: Literal["none", "gru", "lstm"] = "none"
    rnn_hidden_size: int = 64
    rnn_num_layers: int = 1
    sequence_length: int = 16  # steps up to the sampled one a recurrent actor is unrolled over (zero state first)
    burn_in: int = 0  # the first of them unrolled without gradient

    @property
    def recurrent(self) -> bool:
        return self.rnn_type != "none"

    def validate(self, prefix: str, train: TrainConfig) -> None:
        super().validate(prefix, train)
        check_range(self.target_update_interval, f"{prefix}.target_update_interval", 1, MAX_STEPS)
        check(0.0 < self.expectile < 1.0, f"{prefix}.expectile", f"must be in (0, 1), got {self.expectile}")
        check_range(self.beta, f"{prefix}.beta", 0.0, 1e30, low_open=True)
        check_range(self.max_weight, f"{prefix}.max_weight", 0.0, 1e30, low_open=True)
        check_range(self.demo_fraction, f"{prefix}.demo_fraction", 0.0, 1.0)
        check_range(self.offline_updates, f"{prefix}.offline_updates", 0, MAX_STEPS)
        check_range(self.offline_log_interval, f"{prefix}.offline_log_interval", 1, MAX_STEPS)
        check(self.critic_type == "mse", f"{prefix}.critic_type", f"AAWR's IQL critics are scalar ('mse'), got "
              f"{self.critic_type!r}")
        check(self.demos is None or (isinstance(self.demos, str) and self.demos != ""), f"{prefix}.demos",
              f"must be the path of a demo file (drl demos ENV --out FILE) or null, got {self.demos!r}")
        check_range(self.history_length, f"{prefix}.history_length", 1, MAX_WINDOW)
        if self.recurrent:
            check_range(self.rnn_hidden_size, f"{prefix}.rnn_hidden_size", 1, 65_536)
            check_range(self.rnn_num_layers, f"{prefix}.rnn_num_layers", 1, MAX_RNN_LAYERS)
            check_range(self.sequence_length, f"{prefix}.sequence_length", 1, MAX_WINDOW)
            check_range(self.burn_in, f"{prefix}.burn_in", 0, self.sequence_length - 1,
                        what=f"steps without gradient, fewer than sequence_length = {self.sequence_length}")
            check(self.history_length == 1, f"{prefix}.history_length", f"a recurrent actor (rnn_type "
                  f"{self.rnn_type}) remembers by itself: set history_length to 1 (got {self.history_length}) "
                  "or rnn_type to none")
            check(self.compile is not True, f"{prefix}.compile", f"a recurrent actor trains eagerly; set it to "
                  f"auto or false with rnn_type {self.rnn_type}")


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL's asymmetric L2 (Kostrikov et al. 2022, Eq. 5): ``mean(|expectile - 1(diff < 0)| diff^2)``.

    ``diff = Q'(s, a) - V(s)`` ``[B]``: residuals where Q is above V weigh ``expectile``, below ``1 - expectile``.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.square()).mean()


def awr_weights(advantages: torch.Tensor, beta: float, max_weight: float,
                weighting: Literal["exp", "binary", "uniform"]) -> torch.Tensor:
    """Per-sample regression weights ``[B]`` from ``advantages`` ``[B]`` (no gradient flows through them).

    ``exp``: ``min(exp(A / beta), max_weight)`` (AWR, Peng et al. 2019, Eq. 7; computed as
    ``exp(min(A / beta, log max_weight))``, so a large ``A`` never overflows to inf); ``binary``:
    ``1[A > 0]``; ``uniform``: 1 (behaviour cloning).
    """
    advantages = advantages.detach()
    if weighting == "exp":
        return torch.exp(torch.clamp(advantages / beta, max=math.log(max_weight)))
    if weighting == "binary":
        return (advantages > 0).to(advantages.dtype)
    return torch.ones_like(advantages)


def gaussian_log_prob(actions: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(a; mean, exp(log_std)^2)`` summed over the action axis: ``[B, A] -> [B]`` (finite at ``a = +-1``)."""
    z = (actions - mean) * torch.exp(-log_std)
    return (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(-1)


class AAWR(OffPolicyAgent):
    """AAWR / symmetric AWR / BC: IQL critics on ``critic_obs``, an advantage-weighted Gaussian policy on ``actor_obs``.

    Parameter groups (one flat vector, in this order): ``critic`` (a K-head :class:`QEnsemble`), ``value``
    (V), ``actor``. The target is a copy of ``critic`` (Polyak ``tau`` every ``target_update_interval``
    updates). See :class:`drl.agents.off_policy_base.OffPolicyAgent` for the constructor; demonstrations
    are loaded by :meth:`load_demos` (the offline-to-online runner calls it before training).

    What :class:`drl.runners.offline_to_online.OfflineToOnlineRunner` calls besides the off-policy
    contract: :meth:`load_demos`, :meth:`offline_update`; :meth:`update` draws ``demo_fraction`` of each
    batch from the demos (:class:`MixedSampler`).

    Raises:
        TypeError: a non-Box action space ("AAWR needs a Box action space; for Discrete actions use: ppo").
    """

    name = "AAWR"
    config_class = AAWRConfig

    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict]:
        cfg: AAWRConfig = self.cfg
        k = cfg.history_length
        if cfg.critic_obs == cfg.actor_obs:  # symmetric critics read the policy's window too
            critic_dim *= k
        critic = QEnsemble(critic_dim, action_dim, cfg.critic_hidden, cfg.num_q, 1, cfg.activation, cfg.layer_norm)
        value = EnsembleMLP(critic_dim, cfg.critic_hidden, 1, 1, cfg.activation, cfg.layer_norm)
        # the per-env memory while acting (None: feed-forward on the current obs)
        self.memory: ObsHistory | RecurrentMemory | None = None
        if cfg.recurrent:
            actor = RecurrentActor(cfg.rnn_type, actor_dim, cfg.rnn_hidden_size, cfg.rnn_num_layers, cfg.actor_hidden,
                                   2 * action_dim, cfg.activation, cfg.layer_norm)
            self.memory = RecurrentMemory({"actor": actor.core}, self.num_envs, self.device)
        else:
            actor = EnsembleMLP(k * actor_dim, cfg.actor_hidden, 2 * action_dim, 1, cfg.activation, cfg.layer_norm)
            if k > 1:
                self.memory = ObsHistory(k, actor_dim, self.num_envs, self.device)
        self.critic, self.value, self.actor = critic, value, actor
        self._demo_since_start: torch.Tensor | None = None  # [M]: rows of its episode before each demo row
        nets = nn.ModuleDict({"critic": critic, "value": value, "actor": actor})
        target = nn.ModuleDict({"critic": copy.deepcopy(critic)})
        return nets, {"critic": cfg.lr("critic"), "value": cfg.lr("critic"), "actor": cfg.lr("actor")}, target

    def _should_compile(self, num_envs: int, total_steps: int | None) -> bool:
        """A recurrent actor trains eagerly (its unrolled loop would be compiled step by step)."""
        return False if self.cfg.recurrent else super()._should_compile(num_envs, total_steps)

    # --- the policy -------------------------------------------------------------------------
    @staticmethod
    def _gaussian(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's output ``[B, 2A]`` -> ``(mean[B, A] in (-1, 1), log_std[B, A] in [-5, 2])``."""
        mu, log_std = out.chunk(2, dim=-1)
        return torch.tanh(mu), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _mean_log_std(self, params: list[torch.Tensor], obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed-forward actor: ``obs[B, k D] -> (mean[B, A], log_std[B, A])`` (see :meth:`_gaussian`)."""
        return self._gaussian(self.actor.apply_params(params, obs).squeeze(0))

    def _sample(self, mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool) -> torch.Tensor:
        if deterministic:
            return mean
        return (mean + log_std.exp() * self.normal(tuple(mean.shape))).clamp(-1.0, 1.0)

    def _policy_action(self, actor_obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        return self._sample(*self._mean_log_std(self.actor.own_params(), actor_obs), deterministic)

    def _remember(self, raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Advance the memory with this step's raw ``actor_obs`` ``[N, D]``; the policy's ``(mean, log_std)`` now."""
        group, memory = self.cfg.actor_obs, self.memory
        if isinstance(memory, ObsHistory):
            window, valid = memory.push(raw)  # [N, k, D], [N, k]
            x = self._normalized(group, window.flatten(0, 1)).view_as(window) * valid.unsqueeze(-1)
            return self._mean_log_std(self.actor.own_params(), x.flatten(1))
        x = self._normalized(group, raw).unsqueeze(1)  # [N, 1, D]
        no_reset = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        out, memory.states["actor"] = self.actor.apply_params(list(self.actor.parameters()), x,
                                                              memory.states["actor"], no_reset)
        return self._gaussian(out)

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`OffPolicyAgent.act`; with memory, the policy reads this step's ``actor_obs`` after the memory
        (the window of the last ``history_length``, or the hidden state) of its env."""
        if self.memory is None:
            return super().act(obs, deterministic, update_stats)
        groups = self._groups_of(obs)
        action = self._sample(*self._remember(groups[self.cfg.actor_obs]), deterministic)
        return self.env_action(action), self._record(groups, action, update_stats and not deterministic)

    def export_actor(self) -> DeployedActor:
        """:meth:`OffPolicyAgent.export_actor` (the Gaussian's mean, in the bounds) for a feed-forward policy.

        Raises:
            ExportError: a policy with memory (``history_length`` > 1 or ``recurrent``): per-env state between steps.
        """
        if self.memory is not None:
            raise ExportError("AAWR with memory (algo.history_length > 1 or algo.recurrent) keeps per-env state from "
                              "step to step; export takes feed-forward policies only")
        return super().export_actor()

    @torch.inference_mode()
    def random_act(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`OffPolicyAgent.random_act`; the memory still takes in the obs (a warm-up step is part of the
        episode the policy continues)."""
        if self.memory is not None:
            self._remember(self._groups_of(obs)[self.cfg.actor_obs])
        return super().random_act(obs)

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """:meth:`OffPolicyAgent.record_outcome`; the memory of the envs whose episode ended is cleared."""
        if self.memory is not None:
            self.memory.end_episodes(terminated | truncated)
        return super().record_outcome(record, reward, terminated, truncated, final_obs)

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """Act on ``num_envs`` other envs (an evaluation, a video) from an empty memory; call the yielded function
        with each step's ``done [num_envs]`` to clear it where an episode ended. On exit the training memory is
        back, untouched. No-op without memory."""
        if self.memory is None:
            yield lambda done: None
            return
        with self.memory.fresh(num_envs):
            yield self.memory.end_episodes

    def on_env_reset(self) -> None:
        """Every env was reset outside the loop (a resume without env state): the memory starts empty."""
        if self.memory is not None:
            self.memory.reset()

    def _draw_noise(self, batch: dict[str, torch.Tensor]) -> None:
        """Nothing: every loss reads the data's actions (no sampled action, no target noise)."""

    # --- the losses -------------------------------------------------------------------------
    def _target_q(self, target: list[torch.Tensor], obs: torch.Tensor, actions: torch.Tensor,
                  heads: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(min over the drawn target heads [B], mean over all target heads [B])`` at the data's ``(s, a)``."""
        all_heads = self.critic.q(target, obs, actions).squeeze(-1)  # [K, B]
        drawn = all_heads if heads is None else all_heads.index_select(0, heads)  # [M, B]
        return drawn.min(dim=0).values, all_heads.mean(dim=0)

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg: AAWRConfig = self.cfg
        obs_critic, actions = batch[f"obs/{cfg.critic_obs}"], batch["actions"]
        if cfg.recurrent:  # unrolled from a zero state over the window, regressed at its last step
            seq = batch["actor_seq"]  # [B, L, D]
            state = self.actor.core.zero_state(seq.shape[0], seq.device)
            out, _ = self.actor.apply_params(params["actor"], seq, state, batch["actor_resets"], cfg.burn_in)
            mean, log_std = self._gaussian(out)
        else:  # obs/<actor_obs>: [B, D], or the window [B, k D] with history_length k
            mean, log_std = self._mean_log_std(params["actor"], batch[f"obs/{cfg.actor_obs}"])
        log_prob = gaussian_log_prob(actions, mean, log_std)  # [B]
        stats: dict[str, torch.Tensor] = {"log_prob": log_prob.detach().mean(), "std": log_std.detach().exp().mean()}
        if variant == "uniform":  # behaviour cloning: maximise E[log pi(a|z)]; no critic is read
            actor_loss = -log_prob.mean()
            stats["actor_loss"] = actor_loss.detach()
            return actor_loss, stats

        with torch.no_grad():
            q_min, q_mean = self._target_q(target["critic"], obs_critic, actions, batch.get("heads"))
        # V(s): expectile of the random-pair min of the target heads (IQL Eq. 5)
        v = self.value.apply_params(params["value"], obs_critic).view(-1)  # [B]
        value_loss = expectile_loss(q_min - v, cfg.expectile)
        # Q_k(s, a): TD toward y = R + d V(s'), V read detached (IQL Eq. 6); d = gamma^m (1 - terminated)
        next_v = self.value.apply_params(detached["value"], batch[f"next_obs/{cfg.critic_obs}"]).view(1, -1, 1)
        out = self.critic.q(params["critic"], obs_critic, actions)  # [K, B, 1]
        critic_loss = td_critic_loss(out, next_v, batch["returns"], batch["discounts"])
        # policy: maximise E[w log pi(a|z)], w = min(exp(A / beta), max_weight), A = Q'(s, a) - V(s)
        advantages = (q_min if cfg.advantage_q == "min" else q_mean) - v.detach()
        weights = awr_weights(advantages, cfg.beta, cfg.max_weight, variant)  # variant: exp | binary
        actor_loss = -(weights * log_prob).mean()
        stats |= {"critic_loss": critic_loss.detach(), "value_loss": value_loss.detach(),
                  "actor_loss": actor_loss.detach(), "q": out.detach().mean(), "v": v.detach().mean(),
                  "advantage": advantages.mean(), "weight": weights.mean(),
                  "weight_clipped": (advantages / cfg.beta >= math.log(cfg.max_weight)).float().mean()}
        return critic_loss + value_loss + actor_loss, stats

    def _update_once(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One fused step; the weighting (the step's variant) is ``weighting`` on demos only (the offline
        phase), ``online_weighting`` (when set) on mixed batches."""
        cfg = self.cfg
        weighting = cfg.weighting if self._offline or cfg.online_weighting is None else cfg.online_weighting
        if weighting == "uniform":
            return self.step(batch, "uniform", ("actor",), polyak=False)
        polyak = (self.num_updates + 1) % cfg.target_update_interval == 0
        return self.step(batch, weighting, None, polyak=polyak)

    # --- demonstrations ---------------------------------------------------------------------
    def load_demos(self) -> int:
        """:meth:`OffPolicyAgent.load_demos`; without demos, BC (``weighting: uniform``) and ``demo_fraction: 1``
        are refused (ConfigError naming ``algo.demos``)."""
        cfg = self.cfg
        if cfg.demos is None:  # checked here, not in validate(): a config file may leave the demos to --demos
            check(cfg.weighting != "uniform", "algo.demos", "behaviour cloning (weighting: uniform) needs "
                  "demonstrations: set algo.demos (drl train ... --demos FILE)")
            check(cfg.demo_fraction < 1.0, "algo.demos", f"demo_fraction {cfg.demo_fraction} draws every batch "
                  "from demonstrations: set algo.demos (drl train ... --demos FILE)")
        return super().load_demos()

    def _demo_extra_rows(self, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        """:meth:`OffPolicyAgent._demo_extra_rows`; also notes each demo row's position in its episode (rows of
        the episode before it), from ``episode_index`` (the demo format keeps episodes whole and in time order),
        which cuts the policy's windows at the episode's start."""
        index = data["episode_index"]
        position = torch.arange(index.numel())
        first = torch.cat([torch.ones(1, dtype=torch.bool), index[1:] != index[:-1]])
        self._demo_since_start = (position - torch.where(first, position, 0).cummax(0).values).to(self.device)
        return super()._demo_extra_rows(data)

    def gather_transitions(self, replay: ReplayBuffer, steps: torch.Tensor, envs: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """:meth:`OffPolicyAgent.gather_transitions`; with memory, the policy's view of each transition read from
        the window of its last steps (:meth:`ReplayBuffer.window`, cut at the episode's start; demos: at their
        ``episode_index``), each step normalised, the padding zero:

        * ``history_length k > 1``: ``obs/<actor_obs>`` becomes ``[B, k D]`` (oldest first), and with symmetric
          critics ``next_obs/<actor_obs>`` the window ending at the (n-step) next obs;
        * recurrent: ``actor_seq`` ``[B, L, D]`` and ``actor_resets`` ``[B, L]`` (true entering the window's first
          step and its episode's first step: the state there is zero).
        """
        batch = super().gather_transitions(replay, steps, envs)
        cfg = self.cfg
        length = cfg.sequence_length if cfg.recurrent else cfg.history_length
        if not cfg.recurrent and length == 1:
            return batch
        group, demos = cfg.actor_obs, replay is self.demo_buffer
        rows, valid = replay.window(steps, envs, length, self._demo_since_start[steps] if demos else None)
        window = self._window(replay, f"obs/{group}", rows, envs, valid)  # [B, L, D]
        if cfg.recurrent:
            batch["actor_seq"] = window
            batch["actor_resets"] = torch.cat([torch.ones_like(valid[:, :1]), ~valid[:, :-1]], dim=1)
            return batch
        batch[f"obs/{group}"] = window.flatten(1)
        if cfg.critic_obs == group:  # V(s') reads the window ending at next_obs[last]: obs rows last-k+2 .. last
            last = self.td_rows(replay, steps, envs)[2]
            rows, valid = replay.window(last, envs, length, self._demo_since_start[last] if demos else None)
            older = self._window(replay, f"obs/{group}", rows[:, 1:], envs, valid[:, 1:])
            batch[f"next_obs/{group}"] = torch.cat([older, batch[f"next_obs/{group}"].unsqueeze(1)], 1).flatten(1)
        return batch

    def _window(self, replay: ReplayBuffer, name: str, rows: torch.Tensor, envs: torch.Tensor, valid: torch.Tensor
                ) -> torch.Tensor:
        """``replay.data[name]`` at ``rows [B, L]`` of ``envs [B]``, normalised, 0 where not valid: ``[B, L, D]``."""
        x = replay.data[name][rows, envs.unsqueeze(1)]
        if self.cfg.normalize_obs:
            x = self._normalized(name.split("/", 1)[1], x.flatten(0, 1)).view_as(x)
        return x * valid.unsqueeze(-1)

    def state_dict(self) -> dict[str, Any]:
        """:meth:`OffPolicyAgent.state_dict`, plus ``memory`` (per training env) with a history or recurrent policy."""
        state = super().state_dict()
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])
