"""CAMRL's hyperparameters (:class:`CAMRLConfig`: the PPO learners' keys and CAMRL's own, the paper's and
released code's values) and their checks; the agent is :mod:`drl.agents.camrl`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from drl.config import MAX_STEPS, TrainConfig, check, check_range

__all__ = ["CAMRLConfig", "MODES"]

MODES = ("camrl", "independent", "shared", "always_asymmetric")


@dataclass
class CAMRLConfig:
    """CAMRL and its baselines; the PPO keys mean what they mean in :class:`drl.agents.ppo.PPOConfig`."""

    mode: Literal["camrl", "independent", "shared", "always_asymmetric"] = "camrl"
    base_learner: Literal["ppo"] = "ppo"  # the per-task learner (SAC, as in the released code, is not built)
    num_steps: int = 128
    minibatch_size: int = 256  # over all tasks: each minibatch holds minibatch_size / T samples of every task
    num_epochs: int = 4
    learning_rate: float = 3e-4
    anneal_lr: bool = False
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_coef: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5  # per learner
    normalize_advantages: bool = True  # per task (shared: over the whole minibatch)
    normalize_obs: bool = False  # one running mean/std over all tasks
    normalize_reward: bool = False  # scale by the std of the discounted return, one scaler per learner
    actor_hidden: list[int] = field(default_factory=lambda: [64, 64])
    critic_hidden: list[int] = field(default_factory=lambda: [64, 64])
    activation: Literal["tanh", "relu", "elu", "silu"] = "tanh"
    log_std_init: float = 0.0
    actor_obs: str = "policy"
    critic_obs: str = "policy"
    task_obs: str = "task"  # the one-hot task group of the multi-task env
    # --- CAMRL (paper / released-code values) ---
    warmup_updates: int = 10  # single-task updates before the indicator is consulted (mode camrl)
    time_scale: float = 1000.0  # the indicator's exp(-update / time_scale) / 3
    loss_scale: float = 40.0  # the indicator's exp(-mean z-scored loss / loss_scale) / 3
    mu: float = 0.01  # weight of a task's outgoing transfer in its loss term
    b_norm: Literal["l1", "l2", "linf"] = "l1"  # the norm ball of a row of B (the released code: linf, 0.05)
    b_radius: float = 1.0
    fw_iterations: int = 10
    rank_sharpness: float = 200.0
    transfer_coef: float = 0.1  # c: the weight pull (the released code divides its regulariser by 10)
    history: int = 10_000  # updates kept in the loss history (a ring)
    heatmap_every: int = 1  # redraw camrl/transfer.png at every k-th change of B (~0.1-0.3 s each); 0: never

    def validate(self, prefix: str, train: TrainConfig) -> None:
        def key(name: str) -> str:
            return f"{prefix}.{name}"

        check_range(self.num_steps, key("num_steps"), 1, MAX_STEPS)
        batch = self.num_steps * train.env.num_envs
        check(self.minibatch_size >= 1 and batch % self.minibatch_size == 0, key("minibatch_size"),
              f"must divide the rollout batch algo.num_steps x env.num_envs = {self.num_steps} x "
              f"{train.env.num_envs} = {batch}; got {self.minibatch_size}")
        check_range(self.num_epochs, key("num_epochs"), 1, 10_000)
        check(self.learning_rate > 0, key("learning_rate"), f"must be > 0, got {self.learning_rate}")
        for name in ("gamma", "gae_lambda"):
            check_range(getattr(self, name), key(name), 0.0, 1.0)
        for name in ("clip_coef", "max_grad_norm", "time_scale", "loss_scale", "b_radius", "rank_sharpness"):
            check_range(getattr(self, name), key(name), 0.0, low_open=True)
        for name in ("ent_coef", "vf_coef", "mu", "transfer_coef"):
            check_range(getattr(self, name), key(name), 0.0, 1e12, what="a weight in the loss")
        check_range(self.log_std_init, key("log_std_init"), -20.0, 2.0, what="the log of the initial action std")
        check_range(self.warmup_updates, key("warmup_updates"), 0, MAX_STEPS)
        check_range(self.fw_iterations, key("fw_iterations"), 0, 100_000)
        check_range(self.history, key("history"), 2, 10**7)
        check_range(self.heatmap_every, key("heatmap_every"), 0, MAX_STEPS, what="0: no heatmap, the CSV only")
        for name in ("actor_hidden", "critic_hidden"):
            check(all(1 <= w <= 65_536 for w in getattr(self, name)), key(name),
                  f"widths must be in [1, 65536], got {getattr(self, name)}")
