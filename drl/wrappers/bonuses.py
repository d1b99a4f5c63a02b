"""Intrinsic exploration bonuses: a global one (RND, ICM), an episodic one (counts, E3B), or both combined
(Henaff et al. 2023, "A Study of Global and Episodic Bonuses for Exploration in Contextual MDPs").

One wrapper, ``bonus``, selects the parts::

    wrappers: [{name: bonus, global_bonus: rnd, episodic_bonus: e3b, combine: product, coef: 0.01}]

One wrapper rather than one per bonus because the combination needs both raw bonuses of the same step
(a product of two separately added rewards cannot be formed downstream), and one coefficient, one decay
and one ``info["intrinsic_reward"]`` then describe what was added. The parts live in
:mod:`drl.wrappers.bonus_parts`.

Per step, with ``s'`` the state reached (``info["final_obs"]`` where an episode ended)::

    g = global(s') / running_std(global)          RND / ICM error; RND divides by a running std
    e = episodic(s')   (E3B: / running_std(E3B))   count 1/sqrt(n) or 1{n=1}; E3B phi^T C^-1 phi
    b = g * e  (combine: product)  or  g + e  (combine: sum);  just g or e when the other is none
    reward' = reward + coef(t) * b;   info["intrinsic_reward"] += coef(t) * b

``coef(t)`` decays over the env steps ``t`` this wrapper has seen: ``linear`` ``coef * max(0, 1 - t /
decay_steps)``, ``exponential`` ``coef * 0.5 ** (t / decay_steps)`` (a half-life). The networks read the
obs group ``obs_group`` whitened by running statistics, clipped to [-5, 5] (RND's observation
normalisation); the statistics and the bonus stds are updated every step from that step's batch.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

import numpy as np
import torch
from gymnasium.vector import VectorEnv

from drl.nn import RunningMeanStd, kernels
from drl.nn.mlp import flat_dim
from drl.optim import TrainStep
from drl.wrappers import count_kernels
from drl.wrappers.base import TorchVectorWrapper, register_wrapper, select_group, select_group_space
from drl.wrappers.bonus_parts import COUNT_BITS, E3B, ICM, RND, ActionCoder, EpisodicCount

__all__ = ["IntrinsicBonus"]

GLOBAL = ("rnd", "icm", "none")
EPISODIC = ("count", "e3b", "none")
OBS_CLIP = 5.0


def _one_of(value: Any, name: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


@register_wrapper("bonus")
class IntrinsicBonus(TorchVectorWrapper):
    """Adds ``coef(t) * b`` to the reward, ``b`` a global bonus, an episodic one, or their product or sum.

    Args:
        env: the torch vector env.
        global_bonus: ``rnd`` | ``icm`` | ``none``.
        episodic_bonus: ``count`` | ``e3b`` | ``none``.
        combine: ``product`` (Henaff et al. 2023's default) or ``sum`` when both are set.
        coef: the bonus's weight in the reward (>= 0).
        coef_decay: ``none`` | ``linear`` | ``exponential`` over the env steps seen (``decay_steps``).
        decay_steps: env steps to zero (linear) or to half (exponential) the coefficient.
        obs_group: the obs group the bonus reads (None: the obs, or ``policy`` of grouped obs).
        normalize: divide the RND/ICM and E3B bonuses by their running std.
        hidden: hidden widths of every network (default 64-64, PPO's critic); ``embed_dim``: RND's output,
            ICM's and E3B's embedding.
        learning_rate, update_epochs, minibatch_size: the learned parts' Adam on the recorded transitions.
        ridge: E3B's lambda (``C^-1`` starts at ``I / ridge``).
        count_key: ``simhash`` (of the whitened obs, ``hash_bits`` bits) or ``grid`` (raw obs in cells of
            ``grid_cell``: one size, or one per obs dimension); ``count_mode``: ``inv_sqrt`` (1/sqrt(n)) or
            ``first_visit`` (1{n=1});
            ``count_buckets``: slots of each env's count table (collisions share a count; memory N x slots x 8 B).
        seed: seeds the networks, hashes and minibatch order (the run's seed when omitted).

    Raises:
        ValueError: one sentence naming the bad argument.
    """

    gives_reward = True

    records_transitions = True

    def __init__(self, env: VectorEnv, global_bonus: Literal["rnd", "icm", "none"] = "rnd",
                 episodic_bonus: Literal["count", "e3b", "none"] = "none",
                 combine: Literal["product", "sum"] = "product", coef: float = 0.01,
                 coef_decay: Literal["none", "linear", "exponential"] = "none", decay_steps: int = 1_000_000,
                 obs_group: str | None = None, normalize: bool = True, hidden: list[int] | None = None,
                 embed_dim: int = 32, learning_rate: float = 1e-3, update_epochs: int = 1,
                 minibatch_size: int = 1024, ridge: float = 0.1,
                 count_key: Literal["simhash", "grid"] = "simhash", hash_bits: int = 32,
                 grid_cell: float | list[float] = 1.0,
                 count_mode: Literal["inv_sqrt", "first_visit"] = "inv_sqrt", count_buckets: int = 4096,
                 seed: int = 0):
        super().__init__(env)
        _one_of(global_bonus, "global_bonus", GLOBAL)
        _one_of(episodic_bonus, "episodic_bonus", EPISODIC)
        _one_of(combine, "combine", ("product", "sum"))
        _one_of(coef_decay, "coef_decay", ("none", "linear", "exponential"))
        _one_of(count_key, "count_key", ("simhash", "grid"))
        _one_of(count_mode, "count_mode", ("inv_sqrt", "first_visit"))
        if global_bonus == "none" and episodic_bonus == "none":
            raise ValueError("global_bonus and episodic_bonus are both none: set at least one")
        hidden = [64, 64] if hidden is None else list(hidden)
        cells = list(grid_cell) if isinstance(grid_cell, (list, tuple)) else [grid_cell]
        if not all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in cells):
            raise ValueError(f"grid_cell must be a number or a list of numbers, got {grid_cell!r}")
        checks = [(coef >= 0, "coef", "must be >= 0"), (decay_steps >= 1, "decay_steps", "must be >= 1"),
                  (ridge > 0, "ridge", "must be > 0"), (learning_rate > 0, "learning_rate", "must be > 0"),
                  (update_epochs >= 0, "update_epochs", "must be >= 0"),
                  (minibatch_size >= 1, "minibatch_size", "must be >= 1"),
                  (embed_dim >= 1, "embed_dim", "must be >= 1"),
                  (all(w >= 1 for w in hidden), "hidden", "widths must be >= 1"),
                  (1 <= hash_bits <= 52, "hash_bits", "must be in [1, 52]"),
                  (min(cells) > 0, "grid_cell", "must be > 0 (one number, or one per obs dimension)"),
                  (count_buckets >= 1, "count_buckets", "must be >= 1")]
        for ok, name, rule in checks:
            if not ok:
                raise ValueError(f"{name} {rule}, got {locals()[name]!r}")
        self.global_kind, self.episodic_kind, self.combine = global_bonus, episodic_bonus, combine
        self.coef, self.coef_decay, self.decay_steps = float(coef), coef_decay, int(decay_steps)
        self.obs_group, self.normalize = obs_group, bool(normalize)
        self.update_epochs, self.minibatch_size = int(update_epochs), int(minibatch_size)
        self.env_steps = 0
        num_envs, device = self.num_envs, self.device
        self._coef = torch.tensor(self.coef, dtype=torch.float32, device=device)  # float32(coef): the step's factor
        self._coef32 = float(self._coef)  # its value, for the kernel step (no host read per step)
        obs_dim = flat_dim(select_group_space(self.single_observation_space, obs_group).shape)
        self.generator = torch.Generator().manual_seed(int(seed))
        with torch.random.fork_rng(devices=[]):  # the networks' init draws from the seed, not the run's RNG
            torch.manual_seed(int(seed))
            self.obs_stats = RunningMeanStd((obs_dim,), clip=OBS_CLIP).to(device)
            self.global_std = RunningMeanStd((1,)).to(device)
            self.episodic_std = RunningMeanStd((1,)).to(device)
            self.global_part: RND | ICM | None = None
            if global_bonus == "rnd":
                self.global_part = RND(obs_dim, hidden, embed_dim)
            elif global_bonus == "icm":
                self.global_part = ICM(obs_dim, hidden, embed_dim, ActionCoder(self.single_action_space))
            self.e3b = None
            if episodic_bonus == "e3b":
                self.e3b = E3B(obs_dim, hidden, embed_dim, ActionCoder(self.single_action_space), num_envs,
                               ridge, device)
        self.counts = None
        if episodic_bonus == "count":
            if len(cells) not in (1, obs_dim):
                raise ValueError(f"grid_cell must be one number or {obs_dim} (one per obs dimension), got {cells}")
            cell = torch.tensor(cells, dtype=torch.float32, device=device)
            self.counts = EpisodicCount(num_envs, obs_dim, int(count_buckets), count_key, hash_bits, cell,
                                        count_mode, self.generator, device)
        self.learners = [p for p in (self.global_part, self.e3b) if p is not None]
        self.whitens = bool(self.learners) or count_key == "simhash"  # a grid count alone reads the raw obs
        self.records_transitions = bool(self.learners)  # a count alone has nothing to train
        # a SimHash count alone, constant coefficient, on the CPU: the step in numba kernels (same values)
        self._fused_count = (self.counts is not None and not self.learners and count_key == "simhash"
                             and coef_decay == "none" and device.type == "cpu" and count_kernels.numba is not None)
        self._white: np.ndarray | None = None  # the whitened obs [N, D] of the kernel step (a buffer)
        self.train_steps = []
        for part in self.learners:
            part.to(device)
            self.train_steps.append(TrainStep(part.module, lambda mb, part=part: part.loss(*mb), learning_rate))

    # --- the bonus ---------------------------------------------------------------------------
    def current_coef(self) -> float:
        """``coef(t)`` at the env steps seen so far (see the module docstring)."""
        if self.coef_decay == "linear":
            return self.coef * max(0.0, 1.0 - self.env_steps / self.decay_steps)
        if self.coef_decay == "exponential":
            return self.coef * 0.5 ** (self.env_steps / self.decay_steps)
        return self.coef

    def _scaled(self, raw: torch.Tensor, stats: RunningMeanStd) -> torch.Tensor:
        """``raw [N]`` divided by the running std of all raw values so far (this batch included)."""
        if not self.normalize:
            return raw
        stats.update(raw[:, None])
        return raw / stats.std_as(raw.dtype)

    @torch.no_grad()
    def bonus(self, obs: Any, actions: torch.Tensor, next_obs: Any, done: torch.Tensor) -> torch.Tensor:
        """``b [N]`` for the transitions ``obs -> next_obs`` (true next obs) under ``actions``; updates the
        obs statistics, the bonus stds and the episodic memories (then forgets the envs with ``done``)."""
        raw_next = select_group(next_obs, self.obs_group)
        if self.whitens:
            white_next = self.obs_stats.update_normalize(raw_next if raw_next.dtype is torch.float32 else
                                                         raw_next.float())
        else:
            white_next = raw_next
        out = None
        if self.global_part is not None:
            white_obs = None if self.global_kind == "rnd" else self.obs_stats.normalize(
                select_group(obs, self.obs_group).float())
            out = self._scaled(self.global_part.bonus(white_obs, white_next, actions), self.global_std)
        if self.episodic_kind != "none":
            if self.e3b is not None:
                e = self._scaled(self.e3b.bonus(white_next, done), self.episodic_std)
            else:
                e = self.counts.bonus(self.counts.hash(white_next, raw_next), done)
            if out is not None:  # a combination: each part's mean is logged too
                self._log_mean("global", out)
                self._log_mean("episodic", e)
                out = out * e if self.combine == "product" else out + e
            else:
                out = e
        return out

    def step(self, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        obs = self._inner_obs
        next_obs, reward, terminated, truncated, info = self._inner_step(actions)
        if self._fused_count:
            fused = self._count_step_kernels(next_obs, reward, terminated, truncated, info)
            if fused is not None:
                return fused
        b = self.bonus(obs, actions, info.get("final_obs", next_obs), terminated | truncated)
        if self.coef_decay == "none" and b.dtype is torch.float32 and b.device == self._coef.device:
            intrinsic = b * self._coef  # the product with the Python float, without wrapping it each step
        else:
            intrinsic = self.current_coef() * b
        self.env_steps += self.num_envs
        self._log_mean("bonus", b)  # what was added: coef (logged by update()) x this
        info = dict(info)
        info["intrinsic_reward"] = info["intrinsic_reward"] + intrinsic if "intrinsic_reward" in info else intrinsic
        return next_obs, self._replace_reward(info, reward, reward + intrinsic), terminated, truncated, info

    def _count_step_kernels(self, next_obs: Any, reward: torch.Tensor, terminated: torch.Tensor,
                            truncated: torch.Tensor, info: dict) -> tuple | None:
        """:meth:`step` of a SimHash count alone with a constant coefficient on the CPU, in three numba calls:
        the obs statistics' kernel whitens into a buffer kept across steps, :meth:`EpisodicCount.hash` takes the
        keys (torch's float32 matmul, then the signs in a kernel), and one kernel counts and forms the
        bonus, the intrinsic reward and the new reward. The same values as the torch path, bitwise (tested);
        None (take that path) when the tensors or settings are not these."""
        counts = self.counts
        raw = select_group(info.get("final_obs", next_obs), self.obs_group)
        if not (counts.use_kernels and raw.dtype is reward.dtype is torch.float32 and raw.is_cpu and reward.is_cpu
                and terminated.dtype is truncated.dtype is torch.bool and reward.dim() == 1
                and not raw.requires_grad and not reward.requires_grad and "bonus" not in vars(counts)):
            return None
        table_views, stats_views = counts._kernel_views(), self.obs_stats.kernel_views(raw)
        if table_views is None or stats_views is None:
            return None
        num = raw.shape[0]
        white = self._white
        if white is None or white.shape != raw.shape:
            white = self._white = np.empty(tuple(raw.shape), np.float32)
        stats = self.obs_stats
        kernels.rms_update_normalize(np.ascontiguousarray(raw.numpy()), *stats_views, True, stats.epsilon, stats.clip,
                                     white)  # contiguous: one numba specialisation (see normalization._rows)
        stats.stats_changed()
        keys = counts.hash(torch.from_numpy(white), raw).numpy()
        bonus, intrinsic, new_reward = (np.empty(num, np.float32) for _ in range(3))
        count_kernels.episodic_count_reward(keys, terminated.numpy(), truncated.numpy(), reward.numpy(),
                                            self._coef32, table_views[0], table_views[1], COUNT_BITS,
                                            counts.mode == "first_visit", bonus, intrinsic, new_reward)
        intrinsic_t = torch.from_numpy(intrinsic)
        self.env_steps += num
        self._log_mean("bonus", torch.from_numpy(bonus))
        info = dict(info)
        info["intrinsic_reward"] = info["intrinsic_reward"] + intrinsic_t if "intrinsic_reward" in info else intrinsic_t
        return next_obs, self._replace_reward(info, reward, torch.from_numpy(new_reward)), terminated, truncated, info

    # --- learning ----------------------------------------------------------------------------
    def update(self, batch: dict[str, Any] | None = None) -> dict[str, float]:
        """Train RND's predictor / ICM / E3B's embedding for ``update_epochs`` epochs of shuffled minibatches
        of ``batch`` (``[T, N, ...]``; None: the recorded transitions), on obs whitened by the current
        statistics. Returns their mean losses and the current coefficient."""
        batch = self.recorded_batch() if batch is None else batch
        metrics = {"coef": self.current_coef()}
        if batch is None or not self.learners:
            return metrics
        obs = self.obs_stats.normalize(select_group(_flat(batch["obs"]), self.obs_group).float())
        next_obs = self.obs_stats.normalize(select_group(_flat(batch["next_obs"]), self.obs_group).float())
        actions = batch["actions"].flatten(0, 1)
        rows = obs.shape[0]
        sums: dict[str, list[torch.Tensor]] = {}
        for _ in range(self.update_epochs):
            order = torch.randperm(rows, generator=self.generator).to(obs.device)
            for start in range(0, rows, self.minibatch_size):
                idx = order[start:start + self.minibatch_size]
                for step in self.train_steps:
                    losses = step((obs[idx], next_obs[idx], actions[idx]))
                    for key, value in losses.items():
                        if key not in ("loss", "grad_norm"):
                            sums.setdefault(key, []).append(value)
        return metrics | {key: torch.stack(values).mean().item() for key, values in sums.items()}

    def learner_state_dict(self) -> dict[str, Any]:
        """A copy (the statistics and weights change in place as the run goes on)."""
        return copy.deepcopy({"env_steps": self.env_steps, "generator": self.generator.get_state(),
                "obs_stats": self.obs_stats.state_dict(), "global_std": self.global_std.state_dict(),
                "episodic_std": self.episodic_std.state_dict(),
                "parts": [p.state_dict() for p in self.learners],
                "optimizers": [s.adam.state_dict() for s in self.train_steps]})

    def load_learner_state_dict(self, state: dict[str, Any]) -> None:
        self.env_steps = int(state["env_steps"])
        self.generator.set_state(state["generator"])
        self.obs_stats.load_state_dict(state["obs_stats"])
        self.global_std.load_state_dict(state["global_std"])
        self.episodic_std.load_state_dict(state["episodic_std"])
        for part, part_state, step, adam in zip(self.learners, state["parts"], self.train_steps, state["optimizers"],
                                                strict=True):
            part.load_state_dict(part_state)
            step.adam.load_state_dict(adam)

    def _episode_state(self) -> dict[str, Any]:
        memory = self.e3b if self.e3b is not None else self.counts
        return {} if memory is None else memory.episode_state()

    def _load_episode_state(self, state: dict[str, Any]) -> None:
        memory = self.e3b if self.e3b is not None else self.counts
        if memory is not None:
            memory.load_episode_state(state)


def _flat(x: Any) -> Any:
    """``[T, N, ...] -> [T * N, ...]`` (each group of a dict obs)."""
    if isinstance(x, dict):
        return {k: v.flatten(0, 1) for k, v in x.items()}
    return x.flatten(0, 1)
