"""A reward model learned from preferences between trajectory segments (Christiano et al. 2017).

An ensemble of ``K`` reward nets ``r_k(s, a)`` (``r_k(s)`` when ``state_only``) models the probability that
segment ``A = (s_t, a_t)_{t<L}`` is preferred to segment ``B`` by the Bradley-Terry model (Christiano et al.
2017, Eq. 1)::

    P_k[A > B] = sigmoid(R_k(A) - R_k(B)),   R_k(X) = sum_t r_k(x_t)

and each net is fitted to the labels ``p = P[A > B]`` of a :class:`PreferenceSource` by the cross-entropy
(Eq. 2; the members differ by their initialisation)::

    L_k = mean over pairs of -[p log P_k[A > B] + (1 - p) log P_k[B > A]]

Every update() cuts the transitions recorded since the last into segments of ``segment_length`` steps (one
episode each; windows that cross an episode's end are dropped) and adds them to a pool; it draws
``num_candidates`` random pairs from the pool, asks the source about the ``queries_per_update`` pairs the
ensemble disagrees on most (the std over members of ``P_k[A > B]``, Christiano et al. Sec. 2.2.4), until
``query_budget`` labels have been asked, then trains every net on all labels so far. The reward is::

    r = mean_k r_k(x) - pessimism * std_k r_k(x)        (pessimism > 0: a lower confidence bound)

times ``coef`` (``mode: replace``) or added to the env's reward (``mode: add``); the inputs are whitened by
running statistics frozen between updates. :class:`SyntheticOracle` stands in for a human: it prefers the
segment with the higher true (env) return, optionally Boltzmann-noisy or with labels flipped at random, so
the whole loop runs unattended. Another source (a person, a script) plugs in from Python by setting the
wrapper's ``source`` attribute to any object with :meth:`PreferenceSource.label`. Config::

    wrappers: [{name: preference, segment_length: 25, queries_per_update: 10, query_budget: 1400}]

A task whose reward is the same at every step of an episode (CartPole's 1 per step) gives segments inside
an episode equal returns: the oracle then labels ties (0.5) and the model learns nothing from them.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F
from gymnasium.vector import VectorEnv

from drl.nn import RunningMeanStd
from drl.nn.critics import EnsembleMLP
from drl.optim import TrainStep
from drl.wrappers.base import Obs, TorchVectorWrapper, register_wrapper, select_group
from drl.wrappers.bonus_parts import ActionCoder

__all__ = ["PreferenceReward", "PreferenceSource", "SyntheticOracle", "bradley_terry_loss", "preference_probs",
           "select_by_disagreement", "cut_segments"]

Segment = dict[str, torch.Tensor]  # "obs" [Q, L, D], "actions" [Q, L, A], "env_reward" [Q, L]


class PreferenceSource(Protocol):
    """Who labels pairs of segments."""

    def label(self, segment_a: Segment, segment_b: Segment) -> torch.Tensor:
        """``P[A > B]`` in [0, 1], ``[Q]`` for ``Q`` pairs of segments (``segment_a["obs"] [Q, L, D]``,
        ``"actions" [Q, L, A]``, ``"env_reward" [Q, L]``; the same for B); 0.5: equally good."""
        ...


class SyntheticOracle:
    """Prefers the segment with the higher true return ``sum_t env_reward``.

    Args:
        temperature: 0: a perfect teacher (1, 0, or 0.5 on a tie); > 0: a Boltzmann-rational one whose
            label is 1 with probability ``sigmoid((R_A - R_B) / temperature)``.
        flip_prob: each label is flipped (``1 - p``) with this probability (a teacher's mistakes).
        seed: seeds the noise.
    """

    def __init__(self, temperature: float = 0.0, flip_prob: float = 0.0, seed: int = 0):
        if temperature < 0:
            raise ValueError(f"oracle_temperature must be >= 0, got {temperature!r}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"oracle_flip_prob must be in [0, 1], got {flip_prob!r}")
        self.temperature, self.flip_prob = float(temperature), float(flip_prob)
        self.generator = torch.Generator().manual_seed(int(seed))

    def label(self, segment_a: Segment, segment_b: Segment) -> torch.Tensor:
        diff = (segment_a["env_reward"].sum(1) - segment_b["env_reward"].sum(1)).float().cpu()
        if self.temperature > 0:
            p = (torch.rand(diff.shape, generator=self.generator) < torch.sigmoid(diff / self.temperature)).float()
        else:
            p = (diff > 0).float() + 0.5 * (diff == 0).float()
        if self.flip_prob > 0:
            flip = torch.rand(diff.shape, generator=self.generator) < self.flip_prob
            p = torch.where(flip, 1 - p, p)
        return p.to(segment_a["env_reward"].device)


def preference_probs(returns_a: torch.Tensor, returns_b: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry ``P[A > B] = sigmoid(R(A) - R(B))``, elementwise (``[K, Q]`` for K members, Q pairs)."""
    return torch.sigmoid(returns_a - returns_b)


def bradley_terry_loss(returns_a: torch.Tensor, returns_b: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over members and pairs of ``-[p log sigmoid(R_A - R_B) + (1 - p) log sigmoid(R_B - R_A)]``
    (``returns [K, Q]``, ``labels p [Q]``), computed as ``p softplus(-d) + (1 - p) softplus(d)``."""
    d = returns_a - returns_b
    return (labels * F.softplus(-d) + (1 - labels) * F.softplus(d)).mean()


def select_by_disagreement(probs: torch.Tensor, count: int) -> torch.Tensor:
    """Indices ``[min(count, C)]`` of the candidate pairs whose ``P_k[A > B]`` (``probs [K, C]``) has the
    largest std over the K members, largest first."""
    return probs.std(0, unbiased=False).argsort(descending=True)[:count]


def cut_segments(x: torch.Tensor, done: torch.Tensor, length: int) -> torch.Tensor:
    """Non-overlapping windows ``[S, length, ...]`` of ``x [T, N, ...]`` along T (per env, from t = 0) that
    stay in one episode: a window is dropped when ``done [T, N]`` is set before its last step."""
    t = x.shape[0] // length
    if t == 0:
        return x.new_zeros((0, length, *x.shape[2:]))
    windows = x[:t * length].reshape(t, length, *x.shape[1:]).transpose(1, 2).flatten(0, 1)  # [t * N, L, ...]
    crossing = done[:t * length].reshape(t, length, -1).transpose(1, 2).flatten(0, 1)[:, :-1].any(1)
    return windows[~crossing]


@register_wrapper("preference")
class PreferenceReward(TorchVectorWrapper):
    """Replaces (or adds to) the reward an ensemble reward model trained on preferences (see the module
    docstring).

    Args:
        env: the torch vector env (Box or Discrete actions).
        num_models: K, the ensemble's size (>= 2 for disagreement; 1 selects queries at random).
        pessimism: k of ``mean - k std`` (>= 0; 0: the mean).
        segment_length: L, steps per segment.
        queries_per_update: labels asked per update(); ``num_candidates``: random pairs they are chosen from
            (>= queries_per_update); ``query_budget``: labels in all (0: no limit).
        state_only: the reward nets read observations only.
        mode: ``replace`` (reward = ``coef * r``) or ``add`` (``r_env + coef * r``); ``coef`` > 0.
        obs_group: the obs group the nets read (None: the obs, or ``policy`` of grouped obs).
        hidden: hidden widths of each net (default 64-64).
        learning_rate, epochs, minibatch_size: Adam over the labelled pairs (``epochs`` passes per update(),
            ``minibatch_size`` pairs per step).
        max_segments, max_labels: the segment pool's and the label set's sizes (oldest dropped).
        oracle_temperature, oracle_flip_prob: the :class:`SyntheticOracle`'s noise.
        seed: seeds the networks, the draws and the oracle (the run's seed when omitted).

    Raises:
        ValueError: one sentence naming the bad argument.
    """

    gives_reward = True

    records_transitions = True

    def __init__(self, env: VectorEnv, num_models: int = 3, pessimism: float = 0.0, segment_length: int = 25,
                 queries_per_update: int = 10, num_candidates: int = 100, query_budget: int = 0,
                 state_only: bool = False, mode: Literal["replace", "add"] = "replace", coef: float = 1.0,
                 obs_group: str | None = None, hidden: list[int] | None = None, learning_rate: float = 3e-4,
                 epochs: int = 4, minibatch_size: int = 64, max_segments: int = 2000, max_labels: int = 5000,
                 oracle_temperature: float = 0.0, oracle_flip_prob: float = 0.0, seed: int = 0):
        super().__init__(env)
        if mode not in ("replace", "add"):
            raise ValueError(f"mode must be 'replace' or 'add', got {mode!r}")
        hidden = [64, 64] if hidden is None else list(hidden)
        checks = [(num_models >= 1, "num_models", "must be >= 1"), (pessimism >= 0, "pessimism", "must be >= 0"),
                  (segment_length >= 1, "segment_length", "must be >= 1"),
                  (queries_per_update >= 0, "queries_per_update", "must be >= 0"),
                  (num_candidates >= max(queries_per_update, 1), "num_candidates",
                   f"must be >= max(1, queries_per_update = {queries_per_update})"),
                  (query_budget >= 0, "query_budget", "must be >= 0 (0: no limit)"), (coef > 0, "coef", "must be > 0"),
                  (learning_rate > 0, "learning_rate", "must be > 0"), (epochs >= 0, "epochs", "must be >= 0"),
                  (minibatch_size >= 1, "minibatch_size", "must be >= 1"),
                  (max_segments >= 2, "max_segments", "must be >= 2"), (max_labels >= 1, "max_labels", "must be >= 1"),
                  (all(w >= 1 for w in hidden), "hidden", "widths must be >= 1")]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}, got {locals()[name]!r}")
        self.source: PreferenceSource = SyntheticOracle(oracle_temperature, oracle_flip_prob, seed + 1)
        self.num_models, self.pessimism, self.length = int(num_models), float(pessimism), int(segment_length)
        self.queries_per_update, self.num_candidates = int(queries_per_update), int(num_candidates)
        self.query_budget = int(query_budget)
        self.state_only, self.mode, self.coef, self.obs_group = bool(state_only), mode, float(coef), obs_group
        self.epochs, self.minibatch_size = int(epochs), int(minibatch_size)
        self.max_segments, self.max_labels = int(max_segments), int(max_labels)
        self.actions = ActionCoder(self.single_action_space)
        obs_dim = select_group(_sample_obs(self.single_observation_space, obs_group), obs_group).shape[1]
        self.obs_dim = obs_dim
        in_dim = obs_dim + (0 if self.state_only else self.actions.dim)
        device = self.device
        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # the networks' init draws from the seed, not the run's RNG
            torch.manual_seed(int(seed))
            self.model = EnsembleMLP(in_dim, hidden, 1, self.num_models, activation="relu").to(device)
        self.stats = RunningMeanStd((in_dim,)).to(device)
        self.train_step = TrainStep(self.model, self._loss, learning_rate)
        self.env_rewards: deque[torch.Tensor] = deque(maxlen=self.max_record_steps)
        self.pool: dict[str, torch.Tensor] = {}  # raw segments: "x" [S, L, in], "obs", "actions", "env_reward"
        self.labels: dict[str, torch.Tensor] = {}  # "a" [P, L, in], "b" [P, L, in], "p" [P]
        self.queries = 0

    # --- the reward ----------------------------------------------------------------------------
    def features(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Raw net inputs ``[B, in]``: ``obs [B, D]`` with the encoded ``actions`` unless ``state_only``."""
        return obs.float() if self.state_only else torch.cat([obs.float(), self.actions.encode(actions)], 1)

    def member_rewards(self, x: torch.Tensor) -> torch.Tensor:
        """``r_k(x) [K, ...]`` for raw inputs ``x [..., in]`` (whitened here by the frozen statistics)."""
        lead = x.shape[:-1]
        out = self.model(self.stats.normalize(x.reshape(-1, x.shape[-1])))  # [K, B, 1]
        return out.reshape(self.num_models, *lead)

    @torch.no_grad()
    def learned_reward(self, obs: Obs, actions: torch.Tensor) -> torch.Tensor:
        """``mean_k r_k - pessimism * std_k r_k``, ``[N]``."""
        r = self.member_rewards(self.features(select_group(obs, self.obs_group), actions))
        if self.pessimism == 0 or self.num_models == 1:
            return r.mean(0)
        return r.mean(0) - self.pessimism * r.std(0, unbiased=False)

    def step(self, actions: torch.Tensor) -> tuple[Obs, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs = self._inner_obs
        next_obs, reward, terminated, truncated, info = self._inner_step(actions)
        self.env_rewards.append(info.get("env_reward", reward))  # the true reward, for the oracle
        r = self.learned_reward(obs, actions)
        self._log_mean("reward", r)
        new = self.coef * r if self.mode == "replace" else reward + self.coef * r
        return next_obs, self._replace_reward(info, reward, new.to(reward.dtype)), terminated, truncated, info

    # --- learning ------------------------------------------------------------------------------
    def _loss(self, minibatch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b, p = minibatch
        returns_a, returns_b = self.member_rewards(a).sum(-1), self.member_rewards(b).sum(-1)  # [K, Q]
        decisive = (p != 0.5).float()  # a tie's label says nothing about the order
        correct = (((returns_a > returns_b) == (p > 0.5)).float() * decisive).sum() / self.num_models
        return {"loss": bradley_terry_loss(returns_a, returns_b, p), "correct": correct, "decisive": decisive.sum()}

    def _add_segments(self, batch: dict[str, Any], rewards: torch.Tensor) -> None:
        obs = select_group(batch["obs"].flatten(0, 1) if not isinstance(batch["obs"], dict)
                           else {k: v.flatten(0, 1) for k, v in batch["obs"].items()}, self.obs_group)
        t, n = rewards.shape
        x = self.features(obs, batch["actions"].flatten(0, 1))
        self.stats.update(x)
        done = batch["terminated"] | batch["truncated"]
        new = {"x": x.reshape(t, n, -1), "obs": obs.reshape(t, n, -1),
               "actions": self.actions.encode(batch["actions"].flatten(0, 1)).reshape(t, n, -1), "env_reward": rewards}
        for key, value in new.items():
            cut = cut_segments(value, done, self.length)
            self.pool[key] = torch.cat([self.pool[key], cut])[-self.max_segments:] if key in self.pool else cut

    def _query(self) -> int:
        """Ask the source about the most disputed of ``num_candidates`` random pairs; returns how many."""
        size = self.pool["x"].shape[0] if self.pool else 0
        count = self.queries_per_update
        if self.query_budget:
            count = min(count, self.query_budget - self.queries)
        if size < 2 or count <= 0:
            return 0
        i = torch.randint(size, (self.num_candidates,), generator=self.generator)
        j = (i + torch.randint(1, size, (self.num_candidates,), generator=self.generator)) % size  # j != i
        i, j = i.to(self.device), j.to(self.device)
        with torch.no_grad():
            probs = preference_probs(self.member_rewards(self.pool["x"][i]).sum(-1),
                                     self.member_rewards(self.pool["x"][j]).sum(-1))
        pick = select_by_disagreement(probs, count)
        i, j = i[pick], j[pick]
        keys = ("obs", "actions", "env_reward")
        p = self.source.label({k: self.pool[k][i] for k in keys}, {k: self.pool[k][j] for k in keys}).float()
        new = {"a": self.pool["x"][i], "b": self.pool["x"][j], "p": p.to(self.device)}
        for key, value in new.items():
            self.labels[key] = torch.cat([self.labels[key], value])[-self.max_labels:] if key in self.labels else value
        self.queries += int(pick.numel())
        return int(pick.numel())

    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """Cut ``batch`` (``[T, N, ...]``; None: the recorded transitions, with the env rewards this wrapper
        kept; a given batch needs an ``"env_reward" [T, N]`` entry) into segments, ask for labels, and train
        the ensemble ``epochs`` times over all labels. Returns the BT loss, the labels' agreement with the
        ensemble, the queries asked now and in all."""
        if batch is None:
            batch = self.recorded_batch()
            rewards = torch.stack(list(self.env_rewards)[-batch["actions"].shape[0]:]) if batch is not None else None
            self.env_rewards.clear()
        else:
            rewards = batch["env_reward"]
        if batch is None:
            return {}
        self._add_segments(batch, rewards)
        asked = self._query()
        metrics = {"queries": float(asked), "total_queries": float(self.queries)}
        if not self.labels or self.epochs == 0:
            return metrics
        rows = self.labels["p"].shape[0]
        sums: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.epochs):
            order = torch.randperm(rows, generator=self.generator).to(self.device)
            for start in range(0, rows, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                losses = self.train_step((self.labels["a"][idx], self.labels["b"][idx], self.labels["p"][idx]))
                for key in ("loss", "correct", "decisive"):
                    sums.setdefault(key, []).append(losses[key])
        metrics["bt_loss"] = torch.stack(sums["loss"]).mean().item()
        decisive = torch.stack(sums["decisive"]).sum().item()
        if decisive > 0:  # the share of non-tie labels whose order the members (on average) get right
            metrics["label_accuracy"] = torch.stack(sums["correct"]).sum().item() / decisive
        return metrics

    def learner_state_dict(self) -> dict[str, Any]:
        """A copy of the ensemble, its optimiser, the input statistics, the segment pool and the labels."""
        return copy.deepcopy({"model": self.model.state_dict(), "optimizer": self.train_step.adam.state_dict(),
                              "stats": self.stats.state_dict(), "pool": self.pool, "labels": self.labels,
                              "queries": self.queries, "generator": self.generator.get_state(),
                              "oracle_generator": getattr(getattr(self.source, "generator", None), "get_state",
                                                          lambda: None)()})

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.stats.load_state_dict(state["stats"])
        self.pool, self.labels = copy.deepcopy(state["pool"]), copy.deepcopy(state["labels"])
        self.queries = int(state["queries"])
        self.generator.set_state(state["generator"])
        if state.get("oracle_generator") is not None and hasattr(self.source, "generator"):
            self.source.generator.set_state(state["oracle_generator"])


def _sample_obs(space: Any, group: str | None) -> Obs:
    """A zero observation ``[1, ...]`` of ``space`` (for the input width); ValueError for a missing group."""
    if hasattr(space, "spaces"):
        key = group if group is not None else "policy"
        if key not in space.spaces:
            raise ValueError(f"obs_group '{key}' is not one of the observation's groups {sorted(space.spaces)}")
        return {k: torch.zeros(1, *s.shape) for k, s in space.spaces.items()}
    if group not in (None, "policy"):
        raise ValueError(f"obs_group '{group}' asked of an observation without groups (use null or 'policy')")
    return torch.zeros(1, *space.shape)
