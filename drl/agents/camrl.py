"""CAMRL (Huang et al. 2023, "Curriculum-based Asymmetric Multi-task Reinforcement Learning") on PPO learners.

One learner per task, all ``T`` stored on a task axis (:class:`drl.nn.batched.BatchedActorCritic`) and
trained in one batched PPO update (the per-task losses are summed: each learner's gradient is its own
loss's; gradients are clipped per learner and Adam is per coordinate, so this is ``T`` separate PPOs).
Each update first chooses a mode:

* single-task: every learner does its PPO epochs on its own task's data;
* asymmetric multi-task (with probability ``I``, :func:`camrl_math.mode_indicator`; never in the first
  ``warmup_updates``): the curriculum picks, again and again, the remaining task with the smallest
  composite loss ``J_t`` and optimises its row ``b_t`` of the transfer matrix ``B`` (identity at the start;
  ``B[t, s]``: how much task ``t`` teaches task ``s``) by Frank-Wolfe under ``b >= 0`` and a norm ball,
  the diagonal fixed at 1. Then every learner trains with

      (1 + mu sum_{j != t} B[t, j]) L_t(w_t) + c (sigma_0^2 / sigma_1^2) ||w_t - sum_{j before t} B[j, t] sg(w_j)||^2

  (the actor's weights pulled toward the B-weighted combination of the weights of the tasks before it in
  the order; ``sg``: no gradient; no pull for the first task). This is the ``w_t``-step of the alternating
  optimisation of ``J_t`` below (its terms that depend on ``w_t``: term0's ``L_t(w_t)`` and the weight
  regression, divided through by term0's weight ``1 / sigma_0^2``), so ``sigma_0, sigma_1`` are ``J_t``'s own
  running stds of term0 and term1, the ones the curriculum just used for ``b_t`` (the released code's ``lossw``
  reads the same ``terms_history`` as its ``losst``/``lossb``); ``c`` is the released code's ``/ 10``.

The composite loss of task ``t``'s row ``b`` (``l``: the tasks' losses of the last update, ``W [T, P]``:
the actors' flat weights, ``R``: the tasks not yet ordered, besides ``t``; ``pi``: the order so far)::

    term0 = (1 + mu sum_{j != t} b_j) l_t - mu sum_{j != t} b_j l_j
    term1 = sum_{s in R} ||W_s - sum_{j in pi} B[j, s] W_j - b_s W_t||^2
    term2 = ||ranks(l, t first) - rank(b)||^2           (rank of the losses: teach the struggling tasks)
    term3 = ||ranks(cos(W_t^last, W_j^last), t first) - rank(b)||^2   (rank of last-layer cosine similarity)
    J_t   = sum_k term_k / sigma_k^2 + log prod_k sigma_k  (uncertainty weighting, running stds)

``rank`` is the differentiable ranking :func:`camrl_math.soft_ranks`. The paper's optional prior ranking
term is left out (no priors are given). One deliberate difference from the released code: it trains the
tasks one after another in the order (each pulled toward the already-updated earlier tasks); here all
learners train in one batched pass, each pulled toward the earlier tasks' *current* weights (detached).

Baselines are config switches (``mode``): ``independent`` (never asymmetric), ``always_asymmetric``
(CAMRL without the mode switch), ``shared`` (one network reading the one-hot task too: MT-PPO).
SAC as base learner is not built (``base_learner: ppo`` only).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from drl.agents import camrl_math as cm
from drl.agents.camrl_config import MODES, CAMRLConfig
from drl.agents.camrl_log import TransferLog
from drl.nn import RewardScaler, RunningMeanStd
from drl.nn.batched import BatchedActorCritic, TaskRouter
from drl.nn.deploy import DeployedActor, FrozenNormalizer
from drl.nn.mlp import flat_dim, group_space
from drl.optim import TrainStep
from drl.returns import gae
from drl.storage import Field, RolloutBuffer

__all__ = ["CAMRLConfig", "CAMRL", "MODES"]

NUM_TERMS = 4  # term0..term3 of the composite loss


class _PerLearnerStep(TrainStep):
    """:class:`TrainStep` whose gradient clipping is per learner (every parameter has the learner axis first)."""

    def _clip(self, gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = self.params.views(gradient)
        num = views[0].shape[0]
        norm = sum(v.reshape(num, -1).square().sum(1) for v in views).sqrt()  # [K]
        scale = torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0)
        clipped = [v * scale.view(-1, *[1] * (v.dim() - 1)) for v in views]
        return torch.cat([v.reshape(-1) for v in clipped]), norm.mean()


class CAMRL:
    """CAMRL agent (and its baselines, ``cfg.mode``) on a multi-task env (obs groups incl. the one-hot ``task``).

    Args: as :class:`drl.agents.ppo.PPO`. Raises ValueError when the env has no one-hot task group or
    ``minibatch_size`` is not a multiple of the number of learners.
    """

    config_class = CAMRLConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: CAMRLConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        self.cfg, self.device, self.num_envs, self.generator = cfg, device, num_envs, generator
        if not isinstance(observation_space, gym.spaces.Dict) or cfg.task_obs not in observation_space.spaces:
            raise ValueError(f"CAMRL needs a multi-task env whose obs has a one-hot '{cfg.task_obs}' group (e.g. "
                             f"drl/MT-CartPole-v0, metaworld:MT10); got {observation_space}")
        self.num_tasks = T = flat_dim(observation_space[cfg.task_obs].shape)
        self.shared = cfg.mode == "shared"
        self.num_learners = K = 1 if self.shared else T
        if cfg.minibatch_size % K:
            raise ValueError(f"algo.minibatch_size ({cfg.minibatch_size}) must be a multiple of the number of tasks "
                             f"({K}): each minibatch holds the same number of samples of every task")
        self.groups = sorted({cfg.actor_obs, cfg.critic_obs})
        dims = {g: flat_dim(group_space(observation_space, g, role, "CAMRL").shape)
                for g, role in ((cfg.actor_obs, "actor"), (cfg.critic_obs, "critic"))}
        extra = T if self.shared else 0  # the shared network also reads the one-hot task
        self.model = BatchedActorCritic(K, dims[cfg.actor_obs] + extra, dims[cfg.critic_obs] + extra, action_space,
                                        cfg).to(device)
        self.train_step = _PerLearnerStep(self.model, self._minibatch_loss, cfg.learning_rate, cfg.max_grad_norm,
                                          eps=1e-5)
        self.obs_normalizers = nn.ModuleDict({g: RunningMeanStd((dims[g],)) for g in self.groups}).to(device)
        self.dims = dims
        self.reward_scalers = nn.ModuleList(  # one per learner, over its envs
            [RewardScaler(max(num_envs // K, 1), cfg.gamma) for _ in range(K)]).to(device)
        discrete = isinstance(action_space, gym.spaces.Discrete)
        self.action_field = Field((), torch.int64) if discrete else Field((flat_dim(action_space.shape),))
        self._routers: dict[int, TaskRouter] = {}  # any batch, compared per call (per batch size)
        self._rollout_routers: dict[int, TaskRouter] = {}  # the training env's, built once (per env count)
        # CAMRL state: B, the order, the loss history (a ring), the term statistics, the update count
        self.B = torch.eye(T, dtype=torch.float32)
        self.order = torch.arange(T)
        self.loss_history = torch.zeros(cfg.history, T, dtype=torch.float64)
        self.history_count = torch.zeros((), dtype=torch.int64)
        self.updates = torch.zeros((), dtype=torch.int64)
        self.term_weights = cm.UncertaintyWeights(NUM_TERMS)
        # read by the loss of the current update (set per update)
        self._scale = torch.ones(K, device=device)  # (1 + mu sum_j B[t, j]) per learner
        self._teachers = torch.zeros(K, K, device=device)  # A[j, t] = B[j, t] for j before t, else 0
        self._pull = torch.zeros((), device=device)  # c sigma_0^2 / sigma_1^2, 0 in single-task updates
        self.transfer_log: TransferLog | None = None  # set by attach_run_dir

    # --- the run folder (B and the order are logged there) ------------------------------------
    def attach_run_dir(self, run_dir: Path) -> None:
        """Called by the runner: ``<run_dir>/camrl/transfer.csv`` and ``transfer.png`` log B and the order."""
        self.transfer_log = TransferLog(Path(run_dir) / "camrl", self.num_tasks)

    @property
    def metric_columns(self) -> list[str]:
        return ["camrl/indicator", "camrl/asymmetric", "camrl/transfer_pull", "transfer_loss", "camrl/pull_weighted",
                "camrl/pull_grad_norm", "grad_norm",
                *[f"camrl/task_loss_{t}" for t in range(self.num_tasks)]]

    # --- rollout side --------------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        fields = {f"obs/{g}": Field((self.dims[g],)) for g in self.groups}
        fields[f"final_obs/{self.cfg.critic_obs}"] = Field((self.dims[self.cfg.critic_obs],))
        return fields | {"actions": self.action_field, "log_probs": Field(()), "rewards": Field(()),
                         "terminated": Field((), torch.bool), "truncated": Field((), torch.bool),
                         "task_id": Field((), torch.int64)}

    def _router(self, ids: torch.Tensor) -> TaskRouter:
        """The env <-> learner layout for ``ids [N]`` of any batch (evaluation, the export check): cached per
        batch size and compared with the cached ids (one host sync), rebuilt when a batch of that size holds
        other ids (e.g. the export check's one-task batches)."""
        ids = ids if not self.shared else torch.zeros_like(ids)
        router = self._routers.get(ids.numel())
        if router is None or not torch.equal(router.ids, ids):
            router = self._routers[ids.numel()] = TaskRouter(ids, self.num_learners)
        return router

    def _rollout_router(self, ids: torch.Tensor) -> TaskRouter:
        """The layout of the training env's ``ids [N]``, built (one host sync) from its first batch and then
        reused as it is: the multi-task contract fixes each copy's task, so a rollout step compares nothing
        (no data-dependent host sync per step). :meth:`update` checks the whole rollout's ids against it once."""
        router = self._rollout_routers.get(ids.numel())
        if router is None:
            router = self._rollout_routers[ids.numel()] = TaskRouter(
                ids if not self.shared else torch.zeros_like(ids), self.num_learners)
        return router

    def _inputs(self, x: torch.Tensor, task_id: torch.Tensor) -> torch.Tensor:
        """A network's input ``[..., D]``: the obs group, plus the one-hot task for the shared network."""
        if not self.shared:
            return x
        return torch.cat([x, nn.functional.one_hot(task_id, self.num_tasks).to(x.dtype)], -1)

    @torch.inference_mode()
    def act(self, obs: dict[str, torch.Tensor], deterministic: bool = False, update_stats: bool = True
            ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Actions for ``obs`` ``[N, ...]``: env ``i`` is acted on by learner ``task_id[i]`` (one batched call).

        A training step (``update_stats=True``: the runner's rollout of the run's env, whose copies keep their
        tasks) routes by the layout of the env's first batch without reading the ids back (no host sync per
        step; :meth:`update` raises ValueError if a rollout's ids differ from it). Other calls (evaluation, the
        export check: ``update_stats=False``) may pass any task layout; each is compared with the cached one."""
        task_id = obs[self.cfg.task_obs].argmax(-1)
        groups = {g: obs[g].flatten(1) for g in self.groups}
        if self.cfg.normalize_obs:
            groups = {g: self.obs_normalizers[g].update_normalize(x, update_stats) for g, x in groups.items()}
        x = self._inputs(groups[self.cfg.actor_obs], task_id)
        router = self._rollout_router(task_id) if update_stats else self._router(task_id)
        if router.even:
            action, log_prob = self.model.act(router.to_learners(x), deterministic)
            action, log_prob = router.to_envs(action), router.to_envs(log_prob)
        else:  # every learner on every env, then each env's own learner's output
            action, log_prob = self.model.act(x.expand(self.num_learners, *x.shape), deterministic)
            action, log_prob = router.pick(action), router.pick(log_prob)
        record = {f"obs/{g}": v for g, v in groups.items()}
        record |= {"actions": action, "log_probs": log_prob, "task_id": task_id}
        return self.model.env_action(action), record

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        key = self.cfg.critic_obs
        final = final_obs[key].flatten(1)
        if self.cfg.normalize_obs:
            final = self.obs_normalizers[key].normalize(final)
        record[f"final_obs/{key}"] = final
        return record | {"rewards": reward, "terminated": terminated, "truncated": truncated}

    # --- learning side -------------------------------------------------------------------------
    def update(self, storage: RolloutBuffer, progress: float = 0.0) -> dict[str, float]:
        """Choose the mode, (asymmetric) order the tasks and solve B, then the batched PPO epochs."""
        cfg, K = self.cfg, self.num_learners
        lr = cfg.learning_rate * (1.0 - progress) if cfg.anneal_lr else cfg.learning_rate
        self.train_step.set_learning_rate(lr)
        indicator, asymmetric = self._choose_mode()
        if asymmetric:
            self._curriculum()
        self._set_transfer(asymmetric)
        ids = storage["task_id"]  # [S, N]
        router = self._rollout_router(ids[0])
        if not self.shared and not torch.equal(ids, router.ids.expand_as(ids)):  # one check per rollout
            raise ValueError("CAMRL's rollout holds task ids other than those of the env's first batch: the "
                             "multi-task contract fixes each env copy's task (env.task_ids)")
        if not router.even:
            raise ValueError("CAMRL trains on equal numbers of envs per task; env.num_envs must be a multiple of "
                             "the number of tasks")

        def learners(x: torch.Tensor) -> torch.Tensor:  # [S, N, ...] -> [K, N/K * S, ...]
            y = router.to_learners(x.transpose(0, 1))
            return y.reshape(K, -1, *x.shape[2:])

        def envs(x: torch.Tensor) -> torch.Tensor:  # [K, N/K * S] -> [S, N]
            return router.to_envs(x.reshape(K, router.per_learner, -1)).transpose(0, 1)

        rewards = storage["rewards"]
        if cfg.normalize_reward:  # each learner's scaler on its own envs' rollout, [K, S, N/K]
            def by_learner(x: torch.Tensor) -> torch.Tensor:
                return router.to_learners(x.T).transpose(1, 2)

            parts = [by_learner(storage[k]) for k in ("rewards", "terminated", "truncated")]
            scaled = torch.stack([scaler.scale_rollout(*(p[k].contiguous() for p in parts))
                                  for k, scaler in enumerate(self.reward_scalers)])
            rewards = router.to_envs(scaled.transpose(1, 2)).T
        critic_key, task_ids = f"obs/{cfg.critic_obs}", storage["task_id"]
        with torch.no_grad():
            values = envs(self.model.value(learners(self._inputs(storage[critic_key], task_ids))))
            next_values = envs(self.model.value(learners(self._inputs(storage[f"final_obs/{cfg.critic_obs}"],
                                                                      task_ids))))
        advantages, returns = gae(rewards, values, next_values, storage["terminated"],
                                  storage["truncated"], cfg.gamma, cfg.gae_lambda)
        batch = {name: learners(storage[name]) for name in
                 dict.fromkeys([f"obs/{cfg.actor_obs}", critic_key, "actions", "log_probs", "task_id"])}
        batch |= {"values": learners(values), "advantages": learners(advantages), "returns": learners(returns)}
        samples = batch["values"].shape[1]
        per_minibatch = cfg.minibatch_size // K
        stats: dict[str, list[torch.Tensor]] = {}
        for _ in range(cfg.num_epochs):
            order = torch.rand(K, samples, generator=self.generator).argsort(1).to(self.device)
            shuffled = {k: v.gather(1, order.view(K, -1, *[1] * (v.dim() - 2)).expand_as(v)) for k, v in batch.items()}
            for start in range(0, samples, per_minibatch):
                losses = self.train_step({k: v[:, start:start + per_minibatch] for k, v in shuffled.items()})
                for k, v in losses.items():
                    stats.setdefault(k, []).append(v)
        task_loss = torch.stack(stats.pop("task_loss")).mean(0).double().cpu()  # [K]
        if not self.shared:
            self._record_losses(task_loss)
        self.updates += 1
        metrics = {k: torch.stack(v).mean().item() for k, v in stats.items()}
        metrics |= {"learning_rate": lr, "camrl/indicator": indicator, "camrl/asymmetric": float(asymmetric),
                    "camrl/transfer_pull": float(self._pull)}
        if not self.shared:
            metrics |= {f"camrl/task_loss_{t}": float(task_loss[t]) for t in range(self.num_tasks)}
        if not self.model.discrete:
            metrics["action_std"] = self.model.log_std.clamp(-20.0, 2.0).exp().mean().item()
        var_returns = returns.var()
        metrics["explained_variance"] = (1.0 - (returns - values).var() / var_returns).item() if var_returns > 0 \
            else math.nan
        return metrics

    def _minibatch_loss(self, mb: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-learner PPO loss ``[K]`` (clipped surrogate + value loss - entropy bonus), scaled, plus the pull."""
        cfg = self.cfg
        actor_in = self._inputs(mb[f"obs/{cfg.actor_obs}"], mb["task_id"])
        log_prob, entropy = self.model.evaluate(actor_in, mb["actions"])
        log_ratio = log_prob - mb["log_probs"]
        ratio = log_ratio.exp()
        adv = mb["advantages"]
        if cfg.normalize_advantages and adv.shape[1] > 1:
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        policy_loss = -torch.min(adv * ratio, adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean(1)
        new_values = self.model.value(self._inputs(mb[f"obs/{cfg.critic_obs}"], mb["task_id"]))
        value_loss = (new_values - mb["returns"]).square().mean(1)
        ent = entropy.mean(1)
        task_loss = policy_loss + cfg.vf_coef * value_loss - cfg.ent_coef * ent  # [K]
        # the weight pull: ||w_t - sum_j A[j, t] sg(w_j)||^2 over the actor's parameters (A: earlier tasks only)
        pull = torch.zeros_like(task_loss)
        if not self.shared:
            for p in self.model.actor_parameters():
                w = p.reshape(p.shape[0], -1)
                target = self._teachers.T @ w.detach()  # [K, P]: row t = sum_j A[j, t] w_j
                pull = pull + (w - target).square().sum(1)
            pull = pull * (self._teachers.sum(0) > 0)  # the first task in the order has no teacher
        loss = (self._scale * task_loss + self._pull * pull).sum()
        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()
            clip_fraction = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
            # the pull's size beside the RL loss, over the taught learners: what it adds to a learner's loss, and
            # its gradient's norm on that learner's actor (2 x weight x ||w_t - target||)
            taught = (self._teachers.sum(0) > 0).to(pull.dtype)
            count = taught.sum().clamp(min=1.0)
            pull_weighted = (self._pull * pull * taught).sum() / count
            pull_grad_norm = (2.0 * self._pull * pull.sqrt() * taught).sum() / count
        return {"loss": loss, "policy_loss": policy_loss.mean().detach(), "value_loss": value_loss.mean().detach(),
                "entropy": ent.mean().detach(), "approx_kl": approx_kl, "clip_fraction": clip_fraction,
                "transfer_loss": pull.mean().detach(), "camrl/pull_weighted": pull_weighted,
                "camrl/pull_grad_norm": pull_grad_norm, "task_loss": task_loss.detach()}

    # --- CAMRL: mode, curriculum, transfer matrix ------------------------------------------------
    def _history(self) -> torch.Tensor:
        """``[H, T]``: the recorded task losses, oldest first."""
        n, cap = int(self.history_count), self.cfg.history
        if n <= cap:
            return self.loss_history[:n]
        return torch.roll(self.loss_history, -(n % cap), 0)

    def _record_losses(self, task_loss: torch.Tensor) -> None:
        self.loss_history[int(self.history_count) % self.cfg.history] = task_loss
        self.history_count += 1

    def _choose_mode(self) -> tuple[float, bool]:
        """``(I, asymmetric)``: the indicator (nan when not consulted) and this update's mode."""
        mode = self.cfg.mode
        if mode in ("independent", "shared"):
            return math.nan, False
        if mode == "always_asymmetric":
            return 1.0, True
        if int(self.updates) < self.cfg.warmup_updates or int(self.history_count) == 0:
            return math.nan, False
        indicator, _ = cm.mode_indicator(self._history(), int(self.updates), self.cfg.time_scale,
                                         self.cfg.loss_scale)
        return indicator, bool(torch.rand((), generator=self.generator) < indicator)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W [T, P], last [T, Q])``: each actor's flat weights and its output layer's weights (CPU, detached)."""
        params = self.model.actor_parameters()
        flat = torch.cat([p.detach().reshape(p.shape[0], -1) for p in params], 1).float().cpu()
        return flat, self.model.action_out.weight.detach().reshape(self.num_tasks, -1).float().cpu()

    def _composite_terms(self, t: int, b: torch.Tensor, placed: list[int], remaining: list[int],
                         W: torch.Tensor, losses: torch.Tensor, sim_ranks: torch.Tensor,
                         loss_ranks: torch.Tensor) -> torch.Tensor:
        """``[4]``: term0..term3 of ``J_t`` for row ``b [T]`` (``b_t = 1``); see the module docstring."""
        mu = self.cfg.mu
        others = torch.arange(self.num_tasks) != t
        term0 = (1 + mu * b[others].sum()) * losses[t] - mu * (b[others] * losses[others]).sum()
        rest = [s for s in remaining if s != t]
        if rest:
            prediction = self.B[placed][:, rest].T @ W[placed] + b[rest, None] * W[t]  # [|R|, P]
            term1 = (W[rest] - prediction).square().sum()
        else:
            term1 = torch.zeros(())
        ranks = cm.soft_ranks(b, sharpness=self.cfg.rank_sharpness)
        term2 = (loss_ranks[t] - ranks).square().sum()
        term3 = (sim_ranks[t] - ranks).square().sum()
        return torch.stack([term0, term1, term2, term3])

    def _curriculum(self) -> None:
        """Order the tasks (smallest composite loss first) and solve each one's row of B by Frank-Wolfe."""
        T, cfg = self.num_tasks, self.cfg
        W, last = self._weights()
        losses = self._history()[-1].float() if int(self.history_count) else torch.zeros(T)
        cos = nn.functional.cosine_similarity(last.unsqueeze(1), last.unsqueeze(0), dim=-1)  # [T, T]
        eye = torch.eye(T, dtype=torch.bool)
        # row t: the hard ranks of the losses and of the similarities, with t itself placed first
        loss_ranks = torch.stack([cm.descending_ranks(torch.where(eye[t], losses.max() + 1, losses)) for t in range(T)])
        sim_ranks = torch.stack([cm.descending_ranks(torch.where(eye[t], cos[t].max() + 1, cos[t])) for t in range(T)])
        placed: list[int] = []
        remaining = list(range(T))
        old_B, old_order = self.B.clone(), self.order.clone()
        for _ in range(T):
            scores = []
            for t in remaining:
                terms = self._composite_terms(t, self.B[t], placed, remaining, W, losses, sim_ranks, loss_ranks)
                self.term_weights.record(terms)
                scores.append(float(self.term_weights.combine(terms)))
            t = remaining[min(range(len(remaining)), key=scores.__getitem__)]
            off = torch.arange(T) != t

            def objective(x: torch.Tensor, t: int = t, off: torch.Tensor = off) -> torch.Tensor:
                b = torch.ones(T).masked_scatter(off, x)  # the row with b_t = 1
                return self.term_weights.combine(
                    self._composite_terms(t, b, placed, remaining, W, losses, sim_ranks, loss_ranks))

            row, _ = cm.frank_wolfe(objective, self.B[t][off], cfg.b_radius, cfg.b_norm, cfg.fw_iterations)
            self.B[t, off] = row.float()
            placed.append(t)
            remaining.remove(t)
        self.order = torch.tensor(placed)
        if not (torch.equal(old_order, self.order) and torch.equal(old_B, self.B)):
            self._log_transfer()

    def _set_transfer(self, asymmetric: bool) -> None:
        """What the loss reads this update: per-task scale, teacher matrix A and the pull's weight."""
        if not asymmetric or self.shared:
            self._scale.fill_(1.0)
            self._teachers.zero_()
            self._pull.zero_()
            return
        T = self.num_tasks
        position = torch.empty(T, dtype=torch.long)
        position[self.order] = torch.arange(T)
        earlier = position.unsqueeze(1) < position.unsqueeze(0)  # [j, t]: j comes before t
        off = ~torch.eye(T, dtype=torch.bool)
        self._teachers.copy_(torch.where(earlier & off, self.B, 0.0))
        self._scale.copy_(1 + self.cfg.mu * (self.B * off).sum(1))
        sigma = self.term_weights.sigma()  # J_t's running stds; the curriculum has just recorded T(T+1)/2 values
        self._pull.fill_(self.cfg.transfer_coef * float(sigma[0] ** 2 / sigma[1] ** 2))

    def _log_transfer(self) -> None:
        """Append B and the order to ``camrl/transfer.csv`` and redraw ``camrl/transfer.png`` (when attached)."""
        if self.transfer_log is not None:
            self.transfer_log.write(int(self.updates), self.B, self.order, self.cfg.heatmap_every)

    # --- persistence -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.train_step.adam.state_dict(),
                "obs_normalizers": self.obs_normalizers.state_dict(),
                "reward_scalers": self.reward_scalers.state_dict(), "B": self.B.clone(), "order": self.order.clone(),
                "loss_history": self.loss_history.clone(), "history_count": self.history_count.clone(),
                "updates": self.updates.clone(), "term_weights": self.term_weights.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.obs_normalizers.load_state_dict(state["obs_normalizers"])
        self.reward_scalers.load_state_dict(state["reward_scalers"])
        for name in ("B", "order", "loss_history", "history_count", "updates"):
            getattr(self, name).copy_(state[name])
        self.term_weights.load_state_dict(state["term_weights"])  # (older checkpoints' "train_terms": unused now)

    def on_env_reset(self) -> None:
        """Every env was reset outside a rollout: the reward scalers' running returns restart at 0."""
        for scaler in self.reward_scalers:
            scaler.returns.zero_()

    @property
    def policy(self) -> nn.Module:
        return self.model

    def export_actors(self) -> dict[str, DeployedActor]:
        """The deterministic actor(s) as traceable modules (what ``act(obs, deterministic=True,
        update_stats=False)`` returns: the frozen ``actor_obs`` normaliser, the mean clipped to the bounds, or
        the argmax ``[N]`` int64 for a Discrete space).

        One learner per task (camrl, independent, always_asymmetric): one plain MLP actor per task, keyed
        ``task<t>``, reading ``obs`` = the raw ``actor_obs`` group only (a robot running task ``t`` loads its
        file). Shared (mt-ppo): one actor, keyed ``""`` (one file, no suffix), with two inputs: ``obs`` and the
        ``task_obs`` group ``[N, T]`` (the one-hot; its argmax picks the task, as in ``act``).
        """
        cfg, T = self.cfg, self.num_tasks
        rms = self.obs_normalizers[cfg.actor_obs] if cfg.normalize_obs else None
        dim = self.dims[cfg.actor_obs]
        if self.shared:
            actor = _TaskActor(self.model, 0, T)
            return {"": DeployedActor(FrozenNormalizer(rms), actor, dim, cfg.actor_obs,
                                            extra_groups=(cfg.task_obs,), metadata={"num_tasks": str(T)})}
        return {f"task{t}": DeployedActor(FrozenNormalizer(rms), _TaskActor(self.model, t), dim, cfg.actor_obs,
                                          fixed_obs={cfg.task_obs: nn.functional.one_hot(torch.tensor(t), T).float()},
                                          metadata={"task_index": str(t), "num_tasks": str(T)})
                for t in range(T)}


class _TaskActor(nn.Module):
    """Learner ``k``'s deterministic actor alone (a plain MLP, :meth:`BatchedActorCritic.learner_actor`):
    normalised obs ``[N, D]`` (with ``num_tasks``: then the task group ``[N, T]``, whose argmax's one-hot is
    appended to the obs, as :meth:`CAMRL._inputs` does) -> the argmax ``[N]`` (Discrete) or the mean clipped
    to the bounds ``[N, A]``."""

    def __init__(self, model: BatchedActorCritic, k: int, num_tasks: int | None = None):
        super().__init__()
        self.mlp = model.learner_actor(k)
        self.discrete = model.discrete
        if not self.discrete:
            self.register_buffer("low", model.low.clone())
            self.register_buffer("high", model.high.clone())
        self.conditioned = num_tasks is not None
        if self.conditioned:
            self.register_buffer("one_hots", torch.eye(int(num_tasks)))

    def forward(self, x: torch.Tensor, *task: torch.Tensor) -> torch.Tensor:
        if self.conditioned:
            x = torch.cat([x, self.one_hots[task[0].argmax(-1)]], -1)
        out = self.mlp(x)
        return out.argmax(-1) if self.discrete else torch.clamp(out, self.low, self.high)

