"""PPO's hyperparameters (:class:`PPOConfig`, defaults: Stable-Baselines3's PPO), their checks, and the bounds
and thresholds the agent (:mod:`drl.agents.ppo`) uses. Agents built on PPO (aac, rarl, subpo, happo, ...) extend
this config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from drl.agents import ppo_intrinsic as intrinsic
from drl.config import MAX_STEPS, TrainConfig, check, check_range

__all__ = ["PPOConfig", "COMPILE_AUTO_MIN_STEPS", "COMPILE_AUTO_MAX_CPU_MINIBATCH", "MAX_EPOCHS", "MAX_WIDTH",
           "MAX_HIDDEN_WEIGHTS", "MAX_RNN_LAYERS", "MAX_LOSS_COEF"]

# A cold compile of the step costs ~10 s on a CPU core and saves a few hundred microseconds per
# minibatch step on small networks: it pays from a few tens of thousands of steps on.
COMPILE_AUTO_MIN_STEPS = 50_000
# On the CPU, from this many rows per minibatch the eager step with oneDNN's fused layers (drl.nn.mlp.mlp_forward)
# is faster than the compiled one (measured on [64, 64] tanh: 13% at 8192 rows; the compiled step still wins at
# 4096), so "auto" does not compile there.
COMPILE_AUTO_MAX_CPU_MINIBATCH = 8192
# Natural bounds on the config (far past any published setting): epochs over one rollout, one
# layer's width, and the weights between hidden layers of one network (2**27: 0.5 GB in float32).
MAX_EPOCHS = 10_000
MAX_WIDTH = 65_536
MAX_HIDDEN_WEIGHTS = 2**27
MAX_RNN_LAYERS = 64
MAX_LOSS_COEF = 10**12  # a loss weight: far past any published setting (the float32 gradient norm overflows near 1e19)


@dataclass
class PPOConfig:
    """PPO hyperparameters (defaults: Stable-Baselines3's PPO)."""

    num_steps: int = 2048  # rollout length per env
    minibatch_size: int = 64
    num_epochs: int = 10
    learning_rate: float = 3e-4
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    clip_value: float | None = None  # clip the value update to +-this around the old value; null: off
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    # clip the actor's and the critic's gradient norms to max_grad_norm each (rsl_rl's rule) instead of their
    # joint norm (SB3's, CleanRL's). Joint clipping lets a large critic gradient (unnormalised returns) shrink
    # the actor's step to the scale of adam_eps, where Adam no longer normalises it: the actor stops learning
    clip_grad_per_network: bool = False
    adam_eps: float = 1e-5  # Adam's epsilon (SB3's and CleanRL's PPO: 1e-5; PyTorch's and rsl_rl's: 1e-8)
    target_kl: float | None = None  # stop the update's epochs once approx KL exceeds this
    normalize_advantages: bool = True
    normalize_obs: bool = False
    normalize_reward: bool = False
    actor_hidden: list[int] = field(default_factory=lambda: [64, 64])
    critic_hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "silu"] = "tanh"
    log_std_init: float = 0.0
    # weights of the MLPs and the action head: "orthogonal" (gain sqrt(2) hidden, 0.01 the action mean, 1 the
    # value; SB3's and CleanRL's), "default" (PyTorch's nn.Linear init, uniform in +-1/sqrt(fan_in); rsl_rl's)
    init: Literal["orthogonal", "default"] = "orthogonal"
    state_dependent_std: bool = False
    squash_actions: bool = False  # tanh-squash Gaussian actions into the bounds
    actor_obs: str = "policy"  # obs group the actor reads (when the env returns groups)
    critic_obs: str = "policy"  # obs group the critic reads: "critic" for a privileged critic
    # fuse each minibatch step (forward, backward, clipping, Adam) into one torch.compile'd graph (on CUDA
    # also the obs normalisers' per-step update + normalise, RunningMeanStd.compile_cuda); "auto": only for
    # runs long enough to repay the compile time (see COMPILE_AUTO_MIN_STEPS)
    compile: bool | Literal["auto"] = "auto"
    # run the update's network passes (actor, critic) under bfloat16 autocast; the losses stay float32. "none":
    # float32 throughout. An opt-in for large minibatches on hardware with fast bf16 matmuls (GPUs, AMX CPUs)
    autocast: Literal["none", "bf16"] = "none"
    # sample rollout actions with one numba kernel (CPU, MLP + Gaussian head with a free std);
    # "auto": when numba is installed and the policy is one the kernel computes
    numba_actor: bool | Literal["auto"] = "auto"
    # recurrent policy: a GRU/LSTM core in front of the actor MLP; "none": feed-forward
    rnn_type: Literal["none", "gru", "lstm"] = "none"
    rnn_hidden_size: int = 64
    rnn_num_layers: int = 1
    # a core in front of the critic too; "auto": when the critic reads the actor's obs group (a
    # privileged critic sees the full state and needs no memory)
    rnn_critic: bool | Literal["auto"] = "auto"
    seq_len: int = 16  # steps per training chunk (truncated backpropagation through time)
    # a second value head for an intrinsic bonus (RND's two streams; see drl/agents/ppo_intrinsic.py)
    intrinsic_value: bool = False
    intrinsic_gamma: float = 0.99
    intrinsic_episodic: bool = False  # false: the intrinsic stream ignores episode ends (RND)
    extrinsic_coef: float = 1.0  # advantage = extrinsic_coef * A_E + intrinsic_coef * A_I
    intrinsic_coef: float = 1.0

    @property
    def recurrent(self) -> bool:
        return self.rnn_type != "none"

    @property
    def critic_recurrent(self) -> bool:
        """The critic has its own recurrent core."""
        if not self.recurrent:
            return False
        return self.critic_obs == self.actor_obs if self.rnn_critic == "auto" else bool(self.rnn_critic)

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check_range(self.num_steps, key("num_steps"), 1, MAX_STEPS)
        batch = self.num_steps * train.env.num_envs
        check(
            self.minibatch_size >= 1 and batch % self.minibatch_size == 0,
            key("minibatch_size"),
            f"must divide the rollout batch algo.num_steps x env.num_envs = {self.num_steps} x "
            f"{train.env.num_envs} = {batch}; got {self.minibatch_size}",
        )
        check_range(self.num_epochs, key("num_epochs"), 1, MAX_EPOCHS)
        check(self.learning_rate > 0, key("learning_rate"), f"must be > 0, got {self.learning_rate}")
        check(0 <= self.gamma <= 1, key("gamma"), f"must be in [0, 1], got {self.gamma}")
        check(0 <= self.gae_lambda <= 1, key("gae_lambda"), f"must be in [0, 1], got {self.gae_lambda}")
        check(self.clip_coef > 0, key("clip_coef"), f"must be > 0, got {self.clip_coef}")
        check(self.clip_value is None or self.clip_value > 0, key("clip_value"), "must be > 0 or null")
        for name in ("ent_coef", "vf_coef"):
            check_range(getattr(self, name), key(name), 0, MAX_LOSS_COEF, what="a weight in the loss")
        check(self.max_grad_norm > 0, key("max_grad_norm"), f"must be > 0, got {self.max_grad_norm}")
        tiny = torch.finfo(torch.float32).tiny  # smaller underflows (0 / 0 on a zero gradient) or is subnormal
        check(tiny <= self.adam_eps <= 1, key("adam_eps"),
              f"must be in [{tiny:.3g} (float32's smallest normal number), 1], got {self.adam_eps}")
        check(self.target_kl is None or self.target_kl > 0, key("target_kl"), "must be > 0 or null")
        for name in ("actor_obs", "critic_obs"):  # group names key the obs normalisers (an nn.ModuleDict)
            group = getattr(self, name)
            check(group.isidentifier() and not hasattr(nn.Module(), group), key(name),
                  f"must be an obs group name (letters, digits, _; not a torch Module attribute), got {group!r}")
        check_range(self.log_std_init, key("log_std_init"), -20.0, 20.0, what="the log of the initial action std")
        for name in ("actor_hidden", "critic_hidden"):
            widths = getattr(self, name)
            check(all(1 <= w <= MAX_WIDTH for w in widths), key(name),
                  f"widths must be in [1, {MAX_WIDTH}], got {widths}")
            weights = sum(a * b for a, b in zip(widths, widths[1:], strict=False))
            check(weights <= MAX_HIDDEN_WEIGHTS, key(name), f"the hidden layers hold {weights:,} weights; at most "
                  f"{MAX_HIDDEN_WEIGHTS:,} are allowed, got {widths}")
        if self.recurrent:
            self._validate_recurrent(key)
        intrinsic.validate(self, prefix)

    def _validate_recurrent(self, key: Callable[[str], str]) -> None:
        check_range(self.rnn_hidden_size, key("rnn_hidden_size"), 1, MAX_WIDTH)
        check_range(self.rnn_num_layers, key("rnn_num_layers"), 1, MAX_RNN_LAYERS)
        check(1 <= self.seq_len and self.num_steps % self.seq_len == 0, key("seq_len"),
              f"must divide algo.num_steps = {self.num_steps}; got {self.seq_len}")
        check(self.minibatch_size % self.seq_len == 0, key("minibatch_size"),
              f"must be a multiple of algo.seq_len = {self.seq_len} (minibatches are whole chunks); "
              f"got {self.minibatch_size}")
        check(self.numba_actor is not True, key("numba_actor"),
              "the numba kernel computes feed-forward actors only; set it to auto or false with "
              f"rnn_type {self.rnn_type}")
        check(self.compile is not True, key("compile"),
              f"a recurrent policy trains eagerly; set it to auto or false with rnn_type {self.rnn_type}")
