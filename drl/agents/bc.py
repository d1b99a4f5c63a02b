"""Behaviour cloning (BC): supervised regression of demonstrated actions, no critic, no reward.

All of BC's math is in this file. The policy reads the obs group ``actor_obs`` (normalised by the
demos' own mean and variance with ``normalize_obs``) and predicts the next ``k = chunk_size`` actions
in normalised units ``[-1, 1]^A`` (``a_norm = (a - center) / scale``, ``center``/``scale`` the action
Box's midpoint and half-width): ``mu(z) = tanh(MLP(z))`` ``[k, A]``. ``k = 1`` is the plain MLP policy;
``k > 1`` is action chunking (ACT, Zhao et al. 2023).

Losses over a demo batch, with ``m_{b,j}`` = 1 where step ``t_b + j`` is still in ``t_b``'s episode (chunks
are not padded across episode ends, as ACT's masked loss):

* ``mse``: ``L = sum_{b,j} m_{b,j} ||mu_j(z_b) - a_{t_b + j}||^2 / sum_{b,j} m_{b,j}``;
* ``gaussian``: the MLP also outputs ``log sigma`` (clamped to ``[-5, 2]``) and
  ``L = -sum_{b,j} m_{b,j} log N(a_{t_b + j}; mu_j, sigma_j^2) / sum_{b,j} m_{b,j}`` (diagonal; finite at
  ``a = +-1``, see :func:`drl.agents.aawr.gaussian_log_prob`).

Acting is always the mean ``mu`` (deterministic; BC does not explore). Executing a chunk
(:class:`ChunkExecutor`, per env, restarted at episode starts):

* ``open_loop``: predict a chunk, execute its ``k`` actions in order, then predict the next one;
* ``temporal_ensemble`` (ACT): predict a chunk every step; the action at step ``t`` averages the
  predictions for ``t`` of the chunks made at ``t - j`` (``j = 0 .. k - 1``, within the episode) with
  weights ``w_j = exp(m j) / sum_i exp(m i)``. ACT writes ``w_i = exp(-m i)`` with ``i = 0`` the OLDEST
  prediction; normalised, that is the same (older predictions weigh slightly more). ``m``
  (``ensemble_decay``) is ACT's constant ``k = 0.01``.

Training runs in :class:`drl.runners.offline_to_online.OfflineToOnlineRunner`: ``offline_updates``
gradient steps on the demos (``algo.demos``, a file of :mod:`envs.tasks.demos`; rows of
``offline_log_interval`` steps, evaluation at the end), then ``total_steps`` env steps of the cloned
policy acting (its episodes are the run's training returns); ``updates_per_step > 0`` keeps cloning
the demos meanwhile (0 by default: the online phase only measures). The executor's per-env state is
not checkpointed: a resumed run restarts chunks (the envs restart their episodes too unless env state
is restored, in which case the first ``k - 1`` resumed actions may differ from an uninterrupted run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from drl.agents.aawr import LOG_STD_MAX, LOG_STD_MIN, gaussian_log_prob
from drl.agents.off_policy_base import box_action_space
from drl.config import MAX_STEPS, PATH, TrainConfig, check, check_range
from drl.nn import RunningMeanStd
from drl.nn.deploy import CallActor, DeployedActor, ExportError, FrozenNormalizer
from drl.nn.mlp import flat_dim, group_space, make_mlp
from drl.optim import TrainStep
from drl.storage import Field, ReplayBuffer
from drl.storage.demos import load_checked_demos

__all__ = ["BCConfig", "BC", "ChunkExecutor", "temporal_ensemble", "chunk_targets", "ACT_ENSEMBLE_DECAY"]

ACT_ENSEMBLE_DECAY = 0.01  # ACT's temporal-ensembling constant k (Zhao et al. 2023, official code)
MAX_CHUNK = 1024


@dataclass
class BCConfig:
    """BC hyperparameters (see the module docstring); the runner reads the first group of fields."""

    # --- read by the offline-to-online runner ---
    demos: str | None = field(default=None, metadata=PATH)  # required: a demo file (drl demos ENV --out FILE)
    offline_updates: int = 20_000  # gradient steps on the demos before the first env step
    offline_log_interval: int = 1_000  # gradient steps per metrics row (and latest.pt)
    buffer_size: int = 10_000  # online transitions kept (the runner's finiteness checks; BC never reads them)
    learning_starts: int = 0  # the cloned policy acts from the first online step (no random warm-up)
    updates_per_step: float = 0.0  # more cloning steps on the demos per vectorised online step; 0: none
    num_steps: int = 1000  # vectorised online steps per metrics row
    save_replay: bool = False
    # --- the learner ---
    batch_size: int = 256
    learning_rate: float = 1e-3
    max_grad_norm: float | None = 10.0
    hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: Literal["relu", "tanh", "elu", "silu"] = "relu"
    layer_norm: bool = False
    loss: Literal["mse", "gaussian"] = "mse"
    chunk_size: int = 1  # k: actions predicted per obs; 1: a plain MLP policy
    execution: Literal["temporal_ensemble", "open_loop"] = "temporal_ensemble"  # how chunks are executed
    ensemble_decay: float = ACT_ENSEMBLE_DECAY  # m in w_j ~ exp(m j) (j: age of the chunk)
    normalize_obs: bool = True  # normalise the policy's obs by the demos' mean and std
    actor_obs: str = "policy"

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check(self.demos is None or (isinstance(self.demos, str) and self.demos != ""), key("demos"),
              f"must be the path of a demo file (drl demos ENV --out FILE), got {self.demos!r}")
        check_range(self.offline_updates, key("offline_updates"), 0, MAX_STEPS)
        check_range(self.offline_log_interval, key("offline_log_interval"), 1, MAX_STEPS)
        check_range(self.buffer_size, key("buffer_size"), 1, MAX_STEPS)
        check_range(self.learning_starts, key("learning_starts"), 0, MAX_STEPS)
        check_range(self.updates_per_step, key("updates_per_step"), 0.0, 10_000.0)
        check_range(self.num_steps, key("num_steps"), 1, MAX_STEPS)
        check_range(self.batch_size, key("batch_size"), 1, 2**31 - 1)
        check_range(self.learning_rate, key("learning_rate"), 0.0, 1e30, low_open=True)
        check(self.max_grad_norm is None or self.max_grad_norm > 0, key("max_grad_norm"),
              f"must be > 0 or null, got {self.max_grad_norm}")
        check(all(1 <= w <= 65_536 for w in self.hidden), key("hidden"), f"widths must be in [1, 65536], got "
              f"{self.hidden}")
        check_range(self.chunk_size, key("chunk_size"), 1, MAX_CHUNK)
        check_range(self.ensemble_decay, key("ensemble_decay"), -10.0, 10.0)
        check(self.actor_obs.isidentifier(), key("actor_obs"), f"must be an obs group name, got {self.actor_obs!r}")


def chunk_targets(actions: torch.Tensor, episode_index: torch.Tensor, chunk_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """The next ``k`` demo actions of every demo step, and where they exist.

    Args:
        actions: ``[M, A]`` demo actions, episode by episode in time order (the demo file's layout).
        episode_index: ``[M]`` the episode of each step.
        chunk_size: ``k``.

    Returns:
        ``(targets [M, k, A], mask [M, k] bool)``: ``targets[t, j] = actions[t + j]`` where step ``t + j``
        is in ``t``'s episode (``mask`` True), else 0.
    """
    num_steps = actions.shape[0]
    offsets = torch.arange(chunk_size, device=actions.device)
    rows = torch.arange(num_steps, device=actions.device)[:, None] + offsets  # [M, k]
    inside = rows < num_steps
    rows = rows.clamp(max=num_steps - 1)
    mask = inside & (episode_index[rows] == episode_index[:, None])
    return actions[rows] * mask[..., None], mask


def temporal_ensemble(history: torch.Tensor, valid: torch.Tensor, decay: float) -> torch.Tensor:
    """ACT's temporal ensemble: ``sum_j v_j w_j history[:, j, j] / sum_j v_j w_j``, ``w_j = exp(decay * j)``.

    Args:
        history: ``[N, k, k, A]``: ``history[:, j]`` is the chunk predicted ``j`` steps ago, so
            ``history[:, j, j]`` is its prediction for the current step.
        valid: ``[N, k]`` bool: that chunk exists (made in the current episode); ``valid[:, 0]`` must be True.
        decay: ``m`` (ACT: 0.01; > 0 weighs older predictions more).

    Returns:
        ``[N, A]`` the executed action.
    """
    k = history.shape[1]
    now = history.diagonal(dim1=1, dim2=2).transpose(1, 2)  # [N, k, A]: now[:, j] = history[:, j, j]
    weights = torch.exp(decay * torch.arange(k, dtype=history.dtype, device=history.device)) * valid
    return (weights[..., None] * now).sum(1) / weights.sum(1, keepdim=True)


class ChunkExecutor:
    """Turns one predicted chunk ``[N, k, A]`` per step into one action ``[N, A]`` per env (module docstring).

    Args:
        num_envs: N.
        chunk_size: k.
        action_dim: A.
        execution: ``temporal_ensemble`` or ``open_loop``.
        decay: ``m`` of :func:`temporal_ensemble`.
        device: where its state lives.
    """

    def __init__(self, num_envs: int, chunk_size: int, action_dim: int, execution: str, decay: float,
                 device: torch.device | str):
        self.k, self.execution, self.decay = chunk_size, execution, decay
        self.history = torch.zeros(num_envs, chunk_size, chunk_size, action_dim, device=device)
        self.valid = torch.zeros(num_envs, chunk_size, dtype=torch.bool, device=device)
        self.plan = torch.zeros(num_envs, chunk_size, action_dim, device=device)
        self.position = torch.full((num_envs,), chunk_size, dtype=torch.int64, device=device)  # k: plan used up

    def _next(self, chunks: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The action ``[N, A]`` for ``chunks [N, k, A]`` now and the state it leaves (``k > 1``), nothing written:
        temporal ensemble ``(history, valid)`` aged by one step with ``chunks`` the newest; open loop ``(plan,
        position)`` with a new plan where the last one is used up."""
        if self.execution == "temporal_ensemble":
            history = torch.cat([chunks[:, None], self.history[:, :-1]], dim=1)  # age j -> j + 1; the oldest goes
            valid = torch.cat([torch.ones_like(self.valid[:, :1]), self.valid[:, :-1]], dim=1)
            return temporal_ensemble(history, valid, self.decay), (history, valid)
        fresh = self.position >= self.k
        plan = torch.where(fresh[:, None, None], chunks, self.plan)
        position = self.position.masked_fill(fresh, 0)
        return plan[torch.arange(plan.shape[0], device=plan.device), position], (plan, position)

    def act(self, chunks: torch.Tensor) -> torch.Tensor:
        """``chunks [N, k, A]`` predicted for the current obs -> the action ``[N, A]`` to execute now."""
        if self.k == 1:
            return chunks[:, 0]
        action, state = self._next(chunks)
        # in place: the state stays a normal tensor in inference mode
        ensemble = self.execution == "temporal_ensemble"
        for held, new in zip((self.history, self.valid) if ensemble else (self.plan, self.position), state,
                             strict=True):
            held.copy_(new)
        if not ensemble:
            self.position.add_(1)
        return action

    def peek(self, chunks: torch.Tensor) -> torch.Tensor:
        """The action ``[N, A]`` :meth:`act` would return for ``chunks [N, k, A]`` now, the state left as it is
        (e.g. what the policy will execute at a step's next obs)."""
        return chunks[:, 0] if self.k == 1 else self._next(chunks)[0]

    def end_episodes(self, done: torch.Tensor) -> None:
        """Forget the chunks of the envs whose episode ended (``done [N]`` bool): they start afresh."""
        self.valid[done] = False
        self.position[done] = self.k

    def reset(self) -> None:
        """Every env starts afresh."""
        self.valid.zero_()
        self.position.fill_(self.k)


class BC:
    """Behaviour cloning: MLP or action-chunking policy regressed on demonstrations (module docstring).

    Args: as every agent (see :class:`drl.agents.off_policy_base.OffPolicyAgent`); ``generator`` draws the
    demo batches. What the offline-to-online runner calls: :meth:`load_demos`, :meth:`offline_update`, and
    the off-policy contract (:meth:`storage_fields`, :meth:`act`, :meth:`random_act`, :meth:`record_outcome`,
    :meth:`update`, state dicts); evaluation uses :meth:`fresh_memory` (each env's chunks).

    Raises:
        TypeError: a non-Box action space.
    """

    name = "BC"
    config_class = BCConfig

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: BCConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        box = box_action_space(action_space, self.name)
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.action_space = action_space
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.grouped_obs = isinstance(observation_space, gym.spaces.Dict)
        self.obs_dim = flat_dim(group_space(observation_space, cfg.actor_obs, "actor", self.name).shape)
        self.action_dim = flat_dim(box.shape)
        low = torch.as_tensor(box.low, dtype=torch.float32).flatten().to(self.device)
        high = torch.as_tensor(box.high, dtype=torch.float32).flatten().to(self.device)
        self.action_center, self.action_scale = (high + low) / 2, (high - low) / 2
        outputs = cfg.chunk_size * self.action_dim * (2 if cfg.loss == "gaussian" else 1)
        self.net = make_mlp(self.obs_dim, cfg.hidden, outputs, cfg.activation, output_gain=0.01,
                            layer_norm=cfg.layer_norm).to(self.device)
        self.obs_normalizer = RunningMeanStd((self.obs_dim,)).to(self.device)
        self.train_step = TrainStep(self.net, self._loss, cfg.learning_rate, cfg.max_grad_norm)
        self.executor = self.new_executor(num_envs)
        self.demos: dict[str, torch.Tensor] | None = None
        self.num_updates = 0

    # --- the policy -------------------------------------------------------------------------
    def new_executor(self, num_envs: int) -> ChunkExecutor:
        """A fresh :class:`ChunkExecutor` for ``num_envs`` envs with this agent's chunk settings."""
        cfg = self.cfg
        return ChunkExecutor(num_envs, cfg.chunk_size, self.action_dim, cfg.execution, cfg.ensemble_decay,
                             self.device)

    def _actor_obs(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The raw actor group ``[N, D]`` float32."""
        x = obs[self.cfg.actor_obs] if self.grouped_obs else obs
        return (x if x.dim() == 2 else x.flatten(1)).float()

    def _distribution(self, normalized_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, D] -> (mean [B, k, A] in (-1, 1), log_std [B, k, A] or None for mse)``."""
        out = self.net(normalized_obs).view(normalized_obs.shape[0], self.cfg.chunk_size, -1)
        if self.cfg.loss == "mse":
            return torch.tanh(out), None
        mean, log_std = out.chunk(2, dim=-1)
        return torch.tanh(mean), log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def _normalized(self, x: torch.Tensor) -> torch.Tensor:
        return self.obs_normalizer.normalize(x) if self.cfg.normalize_obs else x

    @torch.inference_mode()
    def chunks(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """The predicted chunk for ``obs`` ``[N, ...]``: ``[N, k, A]`` normalised actions in ``(-1, 1)``."""
        return self._distribution(self._normalized(self._actor_obs(obs)))[0]

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """Normalised ``[N, A]`` -> the env's bounds: ``center + scale * action``."""
        return torch.addcmul(self.action_center, self.action_scale, action)

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(env_action [N, A], record)``: the executed mean action (the same with or without ``deterministic``);
        advances each env's chunk state."""
        x = self._actor_obs(obs)
        action = self.executor.act(self._distribution(self._normalized(x))[0])
        return self.env_action(action), {f"obs/{self.cfg.actor_obs}": x, "actions": action}

    random_act = act  # no random warm-up: the cloned policy acts from the first step

    def storage_fields(self) -> dict[str, Field]:
        """One online transition (kept only for the runner's checks and statistics)."""
        return {f"obs/{self.cfg.actor_obs}": Field((self.obs_dim,)), "actions": Field((self.action_dim,)),
                "rewards": Field(()), "terminated": Field((), torch.bool), "truncated": Field((), torch.bool)}

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """Complete the step's record; envs whose episode ended start a new chunk."""
        self.executor.end_episodes(terminated | truncated)
        return record | {"rewards": reward, "terminated": terminated, "truncated": truncated}

    def end_episodes(self, done: torch.Tensor) -> None:
        """Restart the chunks of the envs where ``done [N]`` (bool)."""
        self.executor.end_episodes(done)

    @contextlib.contextmanager
    def fresh_memory(self, num_envs: int) -> Iterator[Callable[[torch.Tensor], None]]:
        """Act on ``num_envs`` other envs (evaluation, video) with their own chunk state; the training
        envs' state is back on exit."""
        saved, self.executor = self.executor, self.new_executor(num_envs)
        try:
            yield self.executor.end_episodes
        finally:
            self.executor = saved

    def on_env_reset(self) -> None:
        """Every training env restarts: so do their chunks."""
        self.executor.reset()

    # --- learning ---------------------------------------------------------------------------
    def load_demos(self) -> int:
        """Load ``algo.demos``: obs, normalised actions (clamped to ``[-1, 1]``) and chunk targets; fits the
        obs normaliser on the demo obs. Returns the number of demo steps.

        Raises:
            ConfigError: naming ``algo.demos``: not set, missing, not a demo file, or not matching the env
                (obs group absent or of another size, another action size).
        """
        cfg = self.cfg
        check(cfg.demos is not None, "algo.demos", "behaviour cloning needs demonstrations: set algo.demos "
              "(drl train bc --demos FILE; record them with drl demos ENV --out FILE)")
        data, actions = load_checked_demos(cfg.demos, {cfg.actor_obs: self.obs_dim}, self.action_dim,
                                           self.action_center, self.action_scale, self.device)
        self.demo_meta = dict(data.get("meta") or {})  # checked against the run's env by the runner
        obs = data[f"obs/{cfg.actor_obs}"].flatten(1).float().to(self.device)
        targets, mask = chunk_targets(actions, data["episode_index"].to(self.device), cfg.chunk_size)
        self.demos = {"obs": obs, "targets": targets, "mask": mask}
        if cfg.normalize_obs:
            self.obs_normalizer.update(obs)
        return int(obs.shape[0])

    def _loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The masked chunk regression of the module docstring on ``batch`` ``{obs [B, D], targets [B, k, A],
        mask [B, k]}`` (obs already normalised)."""
        mean, log_std = self._distribution(batch["obs"])
        mask = batch["mask"].to(mean.dtype)
        count = mask.sum().clamp(min=1.0)
        if log_std is None:
            per_step = (mean - batch["targets"]).square().sum(-1)  # [B, k]
            loss = (mask * per_step).sum() / count
            return {"loss": loss, "mse": loss.detach()}
        log_prob = gaussian_log_prob(batch["targets"], mean, log_std)  # [B, k]
        loss = -(mask * log_prob).sum() / count
        return {"loss": loss, "log_prob": -loss.detach(), "std": log_std.detach().exp().mean(),
                "mse": ((mask * (mean - batch["targets"]).square().sum(-1)).sum() / count).detach()}

    def offline_update(self, num_updates: int) -> dict[str, torch.Tensor]:
        """``num_updates`` gradient steps on uniformly drawn demo batches; the mean of each stat (0-d tensors).
        RuntimeError before :meth:`load_demos`."""
        if self.demos is None:
            raise RuntimeError("BC.offline_update needs demonstrations: call load_demos() first")
        sums: dict[str, torch.Tensor] = {}
        for _ in range(num_updates):
            rows = torch.randint(self.demos["obs"].shape[0], (self.cfg.batch_size,), generator=self.generator,
                                 device=self.generator.device).to(self.device)
            batch = {name: value[rows] for name, value in self.demos.items()}
            batch["obs"] = self._normalized(batch["obs"])
            stats = self.train_step(batch)
            self.num_updates += 1
            for name, value in stats.items():
                sums[name] = value if name not in sums else sums[name] + value
        return {name: value / max(num_updates, 1) for name, value in sums.items()}

    def update(self, replay: ReplayBuffer, num_updates: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        """Online phase: ``num_updates`` more cloning steps on the demos (``replay`` is not read)."""
        return self.offline_update(num_updates)

    # --- persistence ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "optimizer": self.train_step.adam.state_dict(),
                "obs_normalizer": self.obs_normalizer.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])  # copies into the flat vector's views
        self.train_step.adam.load_state_dict(state["optimizer"])
        self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        self.num_updates = int(state["num_updates"])

    @property
    def policy(self) -> nn.Module:
        """The policy network (normalised obs -> chunk outputs before tanh)."""
        return self.net

    def export_actor(self) -> DeployedActor:
        """The deterministic policy as one traceable module: raw ``actor_obs`` ``[N, D]`` -> ``center + scale *
        tanh(mean)`` ``[N, A]`` (:meth:`act` with ``chunk_size`` 1).

        Raises:
            ExportError: ``chunk_size`` > 1 (the executed action depends on the chunks of earlier steps).
        """
        if self.cfg.chunk_size > 1:
            raise ExportError(f"BC with action chunks (chunk_size {self.cfg.chunk_size}) executes each env's chunks "
                              "over several steps (per-env state outside one call); export takes chunk_size 1")

        def actor(x: torch.Tensor) -> torch.Tensor:
            return self.env_action(self._distribution(x)[0][:, 0])

        rms = self.obs_normalizer if self.cfg.normalize_obs else None
        return DeployedActor(FrozenNormalizer(rms), CallActor(actor, self.net), self.obs_dim, self.cfg.actor_obs)

