"""What SAC and TD3 share: the config fields, replay plumbing and the fused update step.

The math of each agent lives in its own file (:mod:`drl.agents.sac`, :mod:`drl.agents.td3`); this
module holds only what both need and would otherwise copy:

* :class:`OffPolicyConfig`: the fields the off-policy runner reads (``buffer_size``,
  ``learning_starts``, ``updates_per_step``, ``num_steps``, ``save_replay``) and the options both
  agents have (Q ensemble with a REDQ target subset, LayerNorm, a categorical critic, a privileged
  critic reading another obs group, observation normalisation, compilation);
* :class:`FusedUpdate`: every loss of one update (critic, actor, temperature) summed into ONE scalar
  over ONE flat parameter vector, one Adam per parameter group on slices of it, and the Polyak
  average of the target network as one ``lerp_`` on a flat target vector, run eagerly or as one
  ``torch.compile``d graph;
* :class:`OffPolicyAgent`: obs-group picking, storage fields, warm-up actions, transition records,
  (n-step) batch sampling, the update loop, state dicts.

Speed (``python -m benchmarks.sac_floor``, one CPU core, SB3's SAC sizes on HalfCheetah): a plain
eager torch loop of the update takes ~11.9 ms, this update ~10.4 ms eagerly, ~8.7 ms compiled and
~5.3 ms compiled with ``amp`` (bfloat16 matmuls). The gain comes from the update itself: the K heads
as one batched matmul (thin layers as per-head matmuls), the actor loss reading the critic detached
(no critic weight gradients computed for it), one backward pass for all losses, flat Adam, one
``lerp_`` for the targets, one compiled graph. TD3 at SB3's sizes ([400, 300], ``--agent td3``; a critic
update, plus every second update the actor's): plain eager ~9.6 ms, this update ~9.7 ms eagerly, ~8.9 ms
compiled, ~3.6 ms compiled with ``amp``. In float32 both TD3 updates are bound by the matmuls (about 0.7
GFLOP per update, already without critic weight gradients in the actor step, at the ~90 GFLOP/s that MKL's
float32 kernels give on this AMD CPU); see :mod:`drl.nn.onednn` for an opt-in faster float32 kernel.

Actions are stored in the replay buffer normalised to ``[-1, 1]^A`` (what the critic reads, as in
Stable-Baselines3); the env receives ``center + scale * a`` with ``center = (high + low) / 2`` and
``scale = (high - low) / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import gymnasium as gym
import torch
from torch import nn

from drl.config import MAX_STEPS, TrainConfig, check, check_range
from drl.nn import RunningMeanStd
from drl.nn.deploy import CallActor, DeployedActor, FrozenNormalizer
from drl.nn.mlp import flat_dim, group_space
from drl.nn.normalization import merge_ranks
from drl.optim import FusedUpdate, Losses, compiler_available
from drl.returns import n_step_replay
from drl.storage import Field, ReplayBuffer
from drl.storage.demos import load_checked_demos
from drl.storage.replay import MixedSampler

__all__ = ["OffPolicyConfig", "OffPolicyAgent", "FusedUpdate", "COMPILE_AUTO_MIN_UPDATES", "box_action_space",
           "scalar_parameter"]

# A cold torch.compile of a SAC step takes ~13-19 s on a CPU core (a few seconds once torch's cache
# holds it) and saves ~1.7 ms per update at SB3's sizes (10.4 -> 8.7 ms, benchmarks/sac_floor.py):
# it pays from about 10k updates on; "auto" compiles from twice that.
COMPILE_AUTO_MIN_UPDATES = 20_000
MAX_WIDTH = 65_536
MAX_HIDDEN_WEIGHTS = 2**27
MAX_HEADS = 1024
MAX_ATOMS = 100_000
MAX_N_STEP = 10_000
MAX_UPDATES_PER_STEP = 10_000.0

@dataclass
class OffPolicyConfig:
    """Fields shared by SAC and TD3 (defaults: Stable-Baselines3's)."""

    # --- read by the off-policy runner ---
    buffer_size: int = 1_000_000  # transitions held in all (all envs together)
    learning_starts: int = 100  # env steps (all envs) of uniform-random actions before any update
    updates_per_step: float = 1.0  # gradient steps per vectorised env step; < 1: one every 1/x steps
    num_steps: int = 1000  # vectorised steps per iteration (one metrics row)
    save_replay: bool = True  # write the replay buffer with checkpoints
    # --- the learner ---
    gamma: float = 0.99
    tau: float = 0.005  # Polyak rate of the target networks
    batch_size: int = 256
    n_step: int = 1  # n-step TD targets (drl.returns.n_step_replay); 1: the usual one-step target
    # true: a truncated step (time limit) bootstraps from Q(final obs) (Pardo et al. 2018; SB3's
    # handle_timeout_termination=True). false: it ends the target like a terminated one, a biased workaround
    # where the time limit is part of the task but the obs carry no time (Pardo et al. put time in the obs):
    # under a sparse success reward failed episodes then anchor Q at 0, not only through the discount
    bootstrap_truncated: bool = True
    learning_rate: float = 3e-4
    actor_learning_rate: float | None = None  # null: learning_rate
    critic_learning_rate: float | None = None  # null: learning_rate
    actor_hidden: list[int] = field(default_factory=lambda: [256, 256])
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256])
    activation: Literal["relu", "tanh", "elu", "silu"] = "relu"
    layer_norm: bool = False  # LayerNorm on the hidden layers of actor and critic
    num_q: int = 2  # K critic heads, one batched network
    num_q_target_pair: int = 2  # the target is the min over this many heads drawn at random (REDQ's M)
    critic_type: Literal["mse", "categorical"] = "mse"  # categorical: C51 critic as in FastTD3
    num_atoms: int = 101
    v_min: float = -250.0
    v_max: float = 250.0
    actor_obs: str = "policy"  # obs group the actor reads (when the env returns groups)
    critic_obs: str = "policy"  # obs group the critic reads: "critic" for a privileged critic
    normalize_obs: bool = False
    max_grad_norm: float | None = None  # clip the global gradient norm of an update (all losses); null: none (SB3)
    # bfloat16 autocast of the update (matmuls in bfloat16 with float32 accumulation, as FastTD3's
    # amp); parameters, Adam and the acting policy stay float32
    amp: bool = False
    # one torch.compile'd graph per update (losses, gradient, Adam, Polyak); "auto": for runs long
    # enough to repay the compile time (COMPILE_AUTO_MIN_UPDATES) where a C++ compiler exists
    compile: bool | Literal["auto"] = "auto"

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check_range(self.buffer_size, key("buffer_size"), 1, MAX_STEPS)
        check_range(self.learning_starts, key("learning_starts"), 0, MAX_STEPS)
        check_range(self.updates_per_step, key("updates_per_step"), 0.0, MAX_UPDATES_PER_STEP, low_open=True,
                    what="gradient steps per vectorised env step")
        check_range(self.num_steps, key("num_steps"), 1, MAX_STEPS)
        check_range(self.gamma, key("gamma"), 0.0, 1.0)
        check_range(self.tau, key("tau"), 0.0, 1.0, low_open=True, what="1 copies the online networks")
        check_range(self.batch_size, key("batch_size"), 1, 2**31 - 1)
        check_range(self.n_step, key("n_step"), 1, MAX_N_STEP)
        for name in ("learning_rate", "actor_learning_rate", "critic_learning_rate"):
            value = getattr(self, name)
            check(value is None or value > 0, key(name), f"must be > 0{' or null' if name != 'learning_rate' else ''}"
                  f", got {value}")
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            check(all(1 <= w <= MAX_WIDTH for w in widths), key(name),
                  f"widths must be in [1, {MAX_WIDTH}], got {widths}")
            weights = sum(a * b for a, b in zip(widths, widths[1:], strict=False)) * (
                self.num_q if name == "critic_hidden" else 1)
            check(weights <= MAX_HIDDEN_WEIGHTS, key(name), f"the hidden layers hold {weights:,} weights; at most "
                  f"{MAX_HIDDEN_WEIGHTS:,} are allowed, got {widths}")
        check_range(self.num_q, key("num_q"), 1, MAX_HEADS)
        check_range(self.num_q_target_pair, key("num_q_target_pair"), 1, self.num_q,
                    what=f"heads in the target's min, at most num_q = {self.num_q}")
        check(self.max_grad_norm is None or self.max_grad_norm > 0, key("max_grad_norm"),
              f"must be > 0 or null, got {self.max_grad_norm}")
        check_range(self.num_atoms, key("num_atoms"), 2, MAX_ATOMS)
        check(self.v_min < self.v_max, key("v_max"), f"must be > v_min = {self.v_min}, got {self.v_max}")
        for name in ("actor_obs", "critic_obs"):
            group = getattr(self, name)
            check(group.isidentifier() and not hasattr(nn.Module(), group), key(name),
                  f"must be an obs group name (letters, digits, _; not a torch Module attribute), got {group!r}")

    def lr(self, group: str) -> float:
        """The learning rate of parameter group ``actor`` or ``critic``."""
        own = getattr(self, f"{group}_learning_rate")
        return self.learning_rate if own is None else own


def box_action_space(space: gym.Space, agent: str) -> gym.spaces.Box:
    """``space`` if it is a bounded Box, else a one-line TypeError/ValueError naming what to use."""
    if not isinstance(space, gym.spaces.Box):
        raise TypeError(f"{agent} needs a Box action space; for Discrete actions use: ppo (got {space})")
    if not (torch.isfinite(torch.as_tensor(space.low)).all() and torch.isfinite(torch.as_tensor(space.high)).all()):
        raise ValueError(f"{agent} needs finite action bounds (it squashes actions into them), got {space}")
    return space


class OffPolicyAgent:
    """Shared plumbing of SAC and TD3 (see the module docstring); subclasses add the math.

    A subclass implements ``_build(obs_dims, action_dim) -> (nets, learning_rates, target)``,
    ``_loss(params, detached, target, batch, variant) -> (loss, stats)``,
    ``_policy_action(actor_obs[N, D], deterministic) -> action[N, A] in [-1, 1]``,
    ``_draw_noise(batch)`` (adds the random tensors of one update to ``batch``) and
    ``_update_once(batch) -> stats``.

    Args:
        observation_space: the env's single observation space (Box or Dict of Box groups).
        action_space: the env's single action space (a bounded Box).
        cfg: hyperparameters.
        num_envs: envs stepped together.
        device: where networks and replay live.
        generator: the torch generator for warm-up actions, exploration noise, batches and REDQ subsets.
        total_steps: the run's env-step budget (decides ``compile: auto``); None: unknown.
    """

    name = "off-policy"
    config_class: type[OffPolicyConfig] = OffPolicyConfig
    # transition fields a subclass stores besides the usual ones (storage_fields), gathered into each batch:
    # ``extra_fields`` at the sampled row, ``extra_next_fields`` at the n-step window's last row (like next_obs)
    extra_fields: tuple[str, ...] = ()
    extra_next_fields: tuple[str, ...] = ()

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, cfg: OffPolicyConfig, num_envs: int,
                 device: torch.device, generator: torch.Generator | None = None, total_steps: int | None = None):
        box = box_action_space(action_space, self.name)
        self.cfg = cfg
        self.device = torch.device(device)
        self.num_envs = num_envs
        self.action_space = action_space
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.grouped_obs = isinstance(observation_space, gym.spaces.Dict)
        spaces = {"actor": group_space(observation_space, cfg.actor_obs, "actor", self.name),
                  "critic": group_space(observation_space, cfg.critic_obs, "critic", self.name)}
        self.groups = sorted({cfg.actor_obs, cfg.critic_obs})
        self.obs_dims = {cfg.actor_obs: flat_dim(spaces["actor"].shape),
                         cfg.critic_obs: flat_dim(spaces["critic"].shape)}
        self.action_dim = flat_dim(box.shape)
        low = torch.as_tensor(box.low, dtype=torch.float32).flatten().to(self.device)
        high = torch.as_tensor(box.high, dtype=torch.float32).flatten().to(self.device)
        self.action_center, self.action_scale = (high + low) / 2, (high - low) / 2
        # under torchrun each rank folds in its own obs during an iteration; sync_ranks merges them at its end
        self.obs_normalizers = nn.ModuleDict({g: RunningMeanStd((self.obs_dims[g],), rank_merge="boundary")
                                              for g in self.groups}).to(device)
        nets, learning_rates, target = self._build(self.obs_dims[cfg.actor_obs], self.obs_dims[cfg.critic_obs],
                                                   self.action_dim)
        nets.to(self.device)
        if target is not None:
            target.to(self.device)
        self.nets, self.target = nets, target
        self.step = FusedUpdate(nets, learning_rates, target, cfg.tau, self._loss,
                                compile=self._should_compile(num_envs, total_steps), amp=cfg.amp,
                                max_grad_norm=cfg.max_grad_norm)
        self.support = torch.linspace(cfg.v_min, cfg.v_max, cfg.num_atoms, device=self.device)
        self.num_updates = 0
        self.demo_buffer: ReplayBuffer | None = None  # demonstrations (load_demos)
        self._offline = False  # inside offline_update
        self._sampler: MixedSampler | None = None

    # --- subclass hooks -------------------------------------------------------------------------
    def _build(self, actor_dim: int, critic_dim: int, action_dim: int
               ) -> tuple[nn.ModuleDict, dict[str, float], nn.ModuleDict | None]:
        raise NotImplementedError

    def _loss(self, params: dict[str, list[torch.Tensor]], detached: dict[str, list[torch.Tensor]],
              target: dict[str, list[torch.Tensor]], batch: dict[str, torch.Tensor], variant: str
              ) -> tuple[torch.Tensor, Losses]:
        raise NotImplementedError

    def _policy_action(self, actor_obs: torch.Tensor, deterministic: bool) -> torch.Tensor:
        raise NotImplementedError

    def _draw_noise(self, batch: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _update_once(self, batch: dict[str, torch.Tensor]) -> Losses:
        raise NotImplementedError

    def _should_compile(self, num_envs: int, total_steps: int | None) -> bool:
        cfg = self.cfg
        if cfg.compile != "auto":
            return bool(cfg.compile)
        if total_steps is None or not compiler_available():
            return False
        updates = max(total_steps - cfg.learning_starts, 0) / num_envs * cfg.updates_per_step
        return updates >= COMPILE_AUTO_MIN_UPDATES

    # --- acting ---------------------------------------------------------------------------------
    def storage_fields(self) -> dict[str, Field]:
        """One transition: raw obs and true next obs of the groups read, normalised action, reward, flags."""
        fields = {f"obs/{g}": Field((self.obs_dims[g],)) for g in self.groups}
        fields |= {f"next_obs/{g}": Field((self.obs_dims[g],)) for g in self.groups}
        fields |= {"actions": Field((self.action_dim,)), "rewards": Field(()),
                   "terminated": Field((), torch.bool), "truncated": Field((), torch.bool)}
        return fields

    def _groups_of(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Pick the obs groups read and flatten each to ``[N, dim]`` float32."""
        if not self.grouped_obs:
            flat = obs if obs.dim() == 2 else obs.flatten(1)
            return dict.fromkeys(self.groups, flat.float())
        return {g: (obs[g] if obs[g].dim() == 2 else obs[g].flatten(1)).float() for g in self.groups}

    def _normalized(self, group: str, x: torch.Tensor) -> torch.Tensor:
        return self.obs_normalizers[group].normalize(x) if self.cfg.normalize_obs else x

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """Normalised ``[N, A]`` in ``[-1, 1]`` -> the env's bounds: ``center + scale * action``."""
        return torch.addcmul(self.action_center, self.action_scale, action)

    def _record(self, groups: dict[str, torch.Tensor], action: torch.Tensor, update_stats: bool) -> dict:
        if self.cfg.normalize_obs and update_stats:
            for g, x in groups.items():
                self.obs_normalizers[g].update(x)
        record = {f"obs/{g}": x for g, x in groups.items()}
        record["actions"] = action
        return record

    @torch.inference_mode()
    def act(self, obs: torch.Tensor | dict[str, torch.Tensor], deterministic: bool = False,
            update_stats: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(env_action[N, A], record)``: explore unless ``deterministic``; the actor reads only ``actor_obs``."""
        groups = self._groups_of(obs)
        actor_obs = self._normalized(self.cfg.actor_obs, groups[self.cfg.actor_obs])
        action = self._policy_action(actor_obs, deterministic)
        return self.env_action(action), self._record(groups, action, update_stats and not deterministic)

    @torch.inference_mode()
    def random_act(self, obs: torch.Tensor | dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Warm-up action for ``obs`` ``[N, ...]``: uniform in the Box bounds, drawn from the agent's generator.

        Returns ``(env_action [N, A] in the env's bounds, record)``; the record holds the action
        normalised to ``[-1, 1]`` (``"actions"`` ``[N, A]``) and the obs groups read (``"obs/<g>"`` ``[N, D_g]``).
        """
        groups = self._groups_of(obs)
        n = next(iter(groups.values())).shape[0]
        uniform = torch.rand((n, self.action_dim), generator=self.generator, device=self.generator.device)
        action = uniform.to(self.device).mul_(2.0).sub_(1.0)
        return self.env_action(action), self._record(groups, action, True)

    @torch.inference_mode()
    def record_outcome(self, record: dict[str, torch.Tensor], reward: torch.Tensor, terminated: torch.Tensor,
                       truncated: torch.Tensor, final_obs: torch.Tensor | dict[str, torch.Tensor]) -> dict:
        """Complete a step's record with ``reward`` ``[N]``, ``terminated``/``truncated`` ``[N]`` bool and the
        true next obs ``final_obs`` ``[N, ...]`` (``info["final_obs"]``: the episode's last obs where it ended);
        returns the transition the runner adds to the replay buffer (the fields of :meth:`storage_fields`)."""
        for g, x in self._groups_of(final_obs).items():
            record[f"next_obs/{g}"] = x
        record["rewards"] = reward
        record["terminated"] = terminated
        record["truncated"] = truncated
        return record

    def sync_ranks(self) -> None:
        """Under torchrun, at the end of each iteration (``algo.num_steps`` vectorised steps; the runner calls it
        on every rank at the same step, before the iteration's checkpoint): merge the obs statistics each rank
        gathered on its own since the last merge (one all-gather; :func:`drl.nn.normalization.merge_ranks`).
        Within an iteration a rank's actor and its replay batches are normalised with the statistics as of the
        iteration's start plus its own envs' obs so far (the parameters stay identical: the gradients are
        averaged); after this call every rank holds the statistics of all ranks' obs. A no-op in one process or
        without ``normalize_obs``."""
        if self.cfg.normalize_obs:
            merge_ranks(self.obs_normalizers.values())

    # --- learning -------------------------------------------------------------------------------
    def _sample_online(self, replay: ReplayBuffer) -> dict[str, torch.Tensor]:
        """A batch ``{obs/g, next_obs/g [B, D], actions [B, A], returns [B], discounts [B]}`` plus noise.

        ``returns + discounts * V(next_obs)`` is the TD target: one-step ``discounts = gamma (1 - terminated)``,
        n-step ones from :func:`drl.returns.n_step_replay` (next_obs read at the window's last row); 0 where the
        window ends at a truncated row when ``bootstrap_truncated`` is false (:meth:`td_rows`).
        """
        steps, envs = replay.sample_indices(self.cfg.batch_size, self.generator)
        return self.complete_batch(self.gather_transitions(replay, steps, envs))

    def complete_batch(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add what an update draws besides the transitions: ``heads`` ``[M]`` (REDQ: a fresh subset of
        ``num_q_target_pair`` target heads each update, when fewer than ``num_q``) and the agent's noise
        (:meth:`_draw_noise`). Returns ``batch``."""
        cfg = self.cfg
        if cfg.num_q_target_pair < cfg.num_q:
            heads = torch.randperm(cfg.num_q, generator=self.generator, device=self.generator.device)
            batch["heads"] = heads[:cfg.num_q_target_pair].to(self.device)
        self._draw_noise(batch)
        return batch

    def gather_transitions(self, replay: ReplayBuffer, steps: torch.Tensor, envs: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        """The transitions at ring rows ``steps[B]`` of envs ``envs[B]`` of ``replay``, as a batch
        ``{obs/g, next_obs/g [B, D], actions [B, A], returns [B], discounts [B]}`` (normalised obs when
        ``normalize_obs``); see :meth:`sample_batch` for ``returns`` and ``discounts``."""
        cfg = self.cfg
        batch = replay.gather(steps, envs, [f"obs/{g}" for g in self.groups] + ["actions", *self.extra_fields])
        batch["returns"], batch["discounts"], last = self.td_rows(replay, steps, envs)
        batch |= replay.gather(last, envs, [f"next_obs/{g}" for g in self.groups] + list(self.extra_next_fields))
        if cfg.normalize_obs:
            for name in list(batch):
                prefix, _, group = name.partition("/")
                if prefix in ("obs", "next_obs"):
                    batch[name] = self.obs_normalizers[group].normalize(batch[name])
        return batch

    def td_rows(self, replay: ReplayBuffer, steps: torch.Tensor, envs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(returns [B], discounts [B], last [B])`` of the transitions at ``steps[B]``, ``envs[B]``: the (n-step)
        TD target is ``returns + discounts * V(next_obs[last])`` (see :meth:`sample_batch`). Without
        ``bootstrap_truncated`` a window that ends at a truncated row gets ``discounts = 0``."""
        cfg = self.cfg
        if cfg.n_step == 1:
            rows = replay.gather(steps, envs, ["rewards", "terminated"])
            returns, discounts, last = rows["rewards"], cfg.gamma * (1.0 - rows["terminated"].float()), steps
        else:
            returns, discounts, last = n_step_replay(
                replay.data["rewards"], replay.data["terminated"], replay.data["truncated"], steps, envs,
                replay.step, len(replay), cfg.gamma, cfg.n_step)
        if not cfg.bootstrap_truncated:  # the window ends at its first ended row: a truncated last row ends it
            discounts = discounts * (1.0 - replay.gather(last, envs, ["truncated"])["truncated"].float())
        return returns, discounts, last

    def normal(self, shape: tuple[int, ...]) -> torch.Tensor:
        """Standard normal noise from the agent's generator, on the agent's device."""
        return torch.randn(shape, generator=self.generator, device=self.generator.device).to(self.device)

    def update(self, replay: ReplayBuffer, num_updates: int, progress: float = 0.0) -> dict[str, torch.Tensor]:
        """Run ``num_updates`` gradient steps on batches of ``algo.batch_size`` transitions sampled uniformly
        from ``replay`` (``[C, N, ...]`` ring) with the agent's generator; ``progress`` (in [0, 1]) is unused
        (constant learning rates, as SB3). Returns 0-d tensors: the mean of each stat over the steps that
        produced it (left on the device, not synced to the host)."""
        sums: dict[str, torch.Tensor] = {}
        counts: dict[str, int] = {}
        for _ in range(num_updates):
            stats = self._update_once(self.sample_batch(replay))
            self.num_updates += 1
            for name, value in stats.items():
                sums[name] = value if name not in sums else sums[name] + value
                counts[name] = counts.get(name, 0) + 1
        return {name: value if counts[name] == 1 else value / counts[name] for name, value in sums.items()}

    # --- demonstrations (agents whose config has ``demos`` and ``demo_fraction``: AAWR, residual) -------------
    def load_demos(self) -> int:
        """Load ``algo.demos`` (a file of :mod:`envs.tasks.demos`) into a demo :class:`ReplayBuffer` on the agent's
        device; returns its transitions (0 without demos). Demo actions become normalised ``[-1, 1]`` actions
        (``(a - center) / scale``, clamped: what the env does to them); :meth:`_demo_extra_rows` adds the
        subclass's :attr:`extra_fields`; with ``normalize_obs`` the obs statistics are updated with the demo obs.

        Raises:
            ConfigError: naming ``algo.demos`` and the file: it is missing, not a demo file, or does not match the
                env (an obs group the agent reads is absent or of another size, or the action size).
        """
        path = getattr(self.cfg, "demos", None)
        if path is None:
            return 0
        data, actions = load_checked_demos(path, {g: self.obs_dims[g] for g in self.groups}, self.action_dim,
                                           self.action_center, self.action_scale, self.device)
        self.demo_meta = dict(data.get("meta") or {})  # checked against the run's env by the runner
        rows = {f"{part}/{g}": data[f"{part}/{g}"].flatten(1).float() for part in ("obs", "next_obs")
                for g in self.groups}
        rows |= {"actions": actions, "rewards": data["rewards"].float(), "terminated": data["terminated"],
                 "truncated": data["truncated"]}
        rows |= self._demo_extra_rows(data)
        self.demo_buffer = ReplayBuffer.from_tensors({k: v.to(self.device) for k, v in rows.items()}, self.device)
        if self.cfg.normalize_obs:
            for g in self.groups:
                self.obs_normalizers[g].update(rows[f"obs/{g}"].to(self.device))
            self.sync_ranks()  # under torchrun every rank loads the demos here: merged at once
        self._sampler = None
        return int(actions.shape[0])

    def _demo_extra_rows(self, data: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The :attr:`extra_fields` and :attr:`extra_next_fields` of the demo file ``data``'s steps (``[M, ...]``)."""
        return {}

    def offline_update(self, num_updates: int) -> dict[str, torch.Tensor]:
        """``num_updates`` gradient steps on batches of demonstrations only (the offline phase); returns the
        mean of each stat over the steps (0-d tensors on the device). Raises RuntimeError without demos."""
        if self.demo_buffer is None:
            raise RuntimeError("offline_update needs demonstrations: set algo.demos and call load_demos() first")
        self._offline = True
        try:
            return self.update(self.demo_buffer, num_updates)
        finally:
            self._offline = False

    def sample_batch(self, replay: ReplayBuffer) -> dict[str, torch.Tensor]:
        """A batch of ``replay`` (:meth:`_sample_online`), with ``round(demo_fraction * B)`` rows from the demos
        (all of them while ``replay`` is empty; :class:`MixedSampler`) when demos are loaded and ``replay`` is the
        online buffer; each part's (n-step) returns are read within its own buffer."""
        cfg = self.cfg
        if self.demo_buffer is None or replay is self.demo_buffer:
            return self._sample_online(replay)
        if self._sampler is None or self._sampler.online is not replay:
            self._sampler = MixedSampler(self.demo_buffer, replay, cfg.demo_fraction)
        parts = [self.gather_transitions(buffer, steps, envs)
                 for buffer, steps, envs in self._sampler.sample_indices(cfg.batch_size, self.generator)]
        return self.complete_batch({name: torch.cat([part[name] for part in parts]) for name in parts[0]})

    # --- persistence ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "target": self.target.state_dict() if self.target is not None else None,
                "optimizer": self.step.state_dict(), "obs_normalizers": self.obs_normalizers.state_dict(),
                "num_updates": self.num_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])  # copies into the flat vector's views
        if self.target is not None:
            self.target.load_state_dict(state["target"])
        self.step.load_state_dict(state["optimizer"])
        self.obs_normalizers.load_state_dict(state["obs_normalizers"])
        self.num_updates = int(state["num_updates"])

    def on_env_reset(self) -> None:
        """Nothing per env to restart (no noise process, no running returns)."""

    @property
    def policy(self) -> nn.Module:
        """The actor network (maps normalised actor obs to actions in ``[-1, 1]``)."""
        return self.nets["actor"]

    def export_actor(self) -> DeployedActor:
        """The deterministic actor as one traceable module: the raw ``actor_obs`` group ``[N, D]`` -> the env
        action ``[N, A]`` of ``act(obs, deterministic=True, update_stats=False)`` (frozen normaliser,
        ``_policy_action(., deterministic=True)`` in ``[-1, 1]``, then ``center + scale * action``)."""
        group = self.cfg.actor_obs

        def actor(x: torch.Tensor) -> torch.Tensor:
            return self.env_action(self._policy_action(x, True))

        rms = self.obs_normalizers[group] if self.cfg.normalize_obs else None
        return DeployedActor(FrozenNormalizer(rms), CallActor(actor, self.nets["actor"]), self.obs_dims[group], group)


def scalar_parameter(value: float) -> nn.Module:
    """A module holding one 0-d parameter ``value`` (e.g. SAC's ``log_alpha``), a child of a ModuleDict."""
    module = nn.Module()
    module.value = nn.Parameter(torch.tensor(float(value)))
    return module

