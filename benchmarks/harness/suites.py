"""What each suite runs: rows (one comparison setting each) made of variants (one library + env each).

A *row* fixes the env, the step budget and the hyperparameters; its *variants* are the things
compared on it (drl on a gymnasium env, SB3 on the same env, drl on its torch-batched twin, ...).
Every variant of a row runs once per seed, interleaved: variant 1 seed 0, variant 2 seed 0, ...,
variant 1 seed 1, ...

Hyperparameters come from one place per row (``hparams``):

* ``"sb3-defaults"``: Stable-Baselines3's default PPO hyperparameters, read from SB3's own
  ``PPO.__init__`` / ``ActorCriticPolicy.__init__`` signatures (see :func:`sb3_ppo_defaults`);
* ``"drl-tuned"``: drl's tuned ``configs/ppo/<env>.yaml``.

Either way the resolved drl config is the source of truth, and the SB3 side gets the same values
mapped onto SB3's argument names (:func:`benchmarks.harness.sides.sb3_ppo_kwargs`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Variant", "Row", "Suite", "SUITES", "SOLVE_THRESHOLD", "TORCH_CARTPOLE", "sb3_ppo_defaults"]

SOLVE_THRESHOLD = 475.0  # gymnasium's CartPole-v1 reward_threshold
CARTPOLE_EVAL_INTERVAL = 4096  # env steps between evaluations in the solve rows (all variants)

# drl/CartPole-v0 on many envs when configs/ppo/drl-CartPole-v0.yaml does not exist (yet): one
# iteration = 256 envs x 16 steps = 4096 env steps = one evaluation interval.
TORCH_CARTPOLE: dict[str, Any] = {
    "total_steps": 200_000,
    "env": {"num_envs": 256, "num_eval_envs": 10},
    "algo": {"num_steps": 16, "minibatch_size": 1024, "num_epochs": 5, "learning_rate": 3e-3, "anneal_lr": True,
             "gamma": 0.98, "gae_lambda": 0.8, "clip_coef": 0.2, "ent_coef": 0.0},
}


@dataclass(frozen=True)
class Variant:
    """One side of a comparison.

    Args:
        label: name in tables and legends.
        lib: ``"drl"`` or ``"sb3"``.
        env_id: the env it trains on.
        device: torch device of the learner (and of a torch-batched env).
        recipe: ``"row"`` (the row's shared hyperparameters) or ``"torch-cartpole"`` (drl/CartPole-v0's
            own tuned config, or :data:`TORCH_CARTPOLE`).
        overrides: drl config overrides applied last (e.g. a smaller budget in the tiny suite).
    """

    label: str
    lib: str
    env_id: str
    device: str = "cpu"
    recipe: str = "row"
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass
class Row:
    """One comparison setting.

    ``kind``: ``"ppo"`` (throughput and return at equal steps), ``"solve"`` (wall-clock to an
    evaluation return of :data:`SOLVE_THRESHOLD`) or ``"offpolicy"`` (SAC/TD3, when drl has them).
    """

    name: str
    title: str
    kind: str
    env_id: str
    total_steps: int
    seeds: int
    variants: list[Variant]
    hparams: str = "sb3-defaults"
    num_envs: int | None = None  # None: the config's own
    algo: dict[str, Any] = field(default_factory=dict)  # algo overrides on top of ``hparams``
    eval_interval: int = 0  # env steps between (untimed) evaluations during training; 0: none
    agent: str = "ppo"


@dataclass
class Suite:
    name: str
    description: str
    rows: list[Row]
    final_eval_episodes: int = 10  # deterministic episodes per trained policy, after training


def _pair(env_id: str) -> list[Variant]:
    return [Variant("drl", "drl", env_id), Variant("SB3", "sb3", env_id)]


def _cartpole_variants(torch_overrides: dict[str, Any] | None = None) -> list[Variant]:
    torch_overrides = torch_overrides or {}
    return [
        Variant("drl (CartPole-v1)", "drl", "CartPole-v1"),
        Variant("SB3 (CartPole-v1)", "sb3", "CartPole-v1"),
        Variant("drl (drl/CartPole-v0, cpu)", "drl", "drl/CartPole-v0", "cpu", "torch-cartpole", torch_overrides),
        Variant("drl (drl/CartPole-v0, cuda)", "drl", "drl/CartPole-v0", "cuda", "torch-cartpole", torch_overrides),
    ]


def _mujoco(env: str, num_envs: int, steps: int, seeds: int, algo: dict[str, Any] | None = None,
            normalize: bool = False) -> Row:
    """A PPO row with SB3's defaults; ``normalize``: obs and reward normalisation on both sides (drl's
    RunningMeanStd / RewardScaler, SB3's ``VecNormalize`` with its defaults), a row of its own."""
    name = f"{env.split('-')[0].lower()}-{num_envs}env"
    title = f"{env}, {num_envs} env{'s' if num_envs > 1 else ''}"
    algo = dict(algo or {})
    if normalize:
        name, title = f"{name}-norm", f"{title}, obs + reward normalisation"
        algo |= {"normalize_obs": True, "normalize_reward": True}
    return Row(name, title, "ppo", env, steps, seeds, _pair(env), "sb3-defaults", num_envs, algo)


def _cartpole(steps: int | None, seeds: int, eval_interval: int = CARTPOLE_EVAL_INTERVAL,
              torch_overrides: dict[str, Any] | None = None) -> Row:
    row = Row("cartpole-solve", "Wall-clock to solve CartPole", "solve", "CartPole-v1", steps or 0, seeds,
              _cartpole_variants(torch_overrides), "drl-tuned", eval_interval=eval_interval)
    return row


def _offpolicy(agent: str, steps: int, seeds: int) -> Row:
    return Row(agent, f"{agent.upper()} on Pendulum-v1", "offpolicy", "Pendulum-v1", steps, seeds,
               _pair("Pendulum-v1"), "drl-tuned", agent=agent)


SUITES: dict[str, Suite] = {
    "tiny": Suite(
        "tiny",
        "smoke test of the whole pipeline in seconds (tiny rollouts; the numbers mean nothing)",
        [
            _mujoco("HalfCheetah-v5", 1, 1024, 1, {"num_steps": 512, "minibatch_size": 128, "num_epochs": 2}),
            _mujoco("HalfCheetah-v5", 8, 1024, 1, {"num_steps": 64, "minibatch_size": 128, "num_epochs": 2}),
            _mujoco("HalfCheetah-v5", 1, 1024, 1, {"num_steps": 512, "minibatch_size": 128, "num_epochs": 2},
                    normalize=True),
            _cartpole(2048, 1, eval_interval=1024, torch_overrides={"total_steps": 8192}),
            _offpolicy("sac", 500, 1),
            _offpolicy("td3", 500, 1),
        ],
        final_eval_episodes=2,
    ),
    "quick": Suite(
        "quick",
        "HalfCheetah-v5 with 1 and 8 envs at 32,768 steps (SB3 defaults; 1 env also with obs + reward "
        "normalisation), CartPole solve; 2 seeds (< 15 min)",
        [
            _mujoco("HalfCheetah-v5", 1, 32_768, 2),
            _mujoco("HalfCheetah-v5", 8, 32_768, 2),
            _mujoco("HalfCheetah-v5", 1, 32_768, 2, normalize=True),
            _cartpole(None, 2),
            _offpolicy("sac", 5_000, 1),
            _offpolicy("td3", 5_000, 1),
        ],
    ),
    "full": Suite(
        "full",
        "HalfCheetah-v5 and Hopper-v5 with 1 and 8 envs at 500k steps (SB3 defaults; HalfCheetah-v5 with 1 env "
        "also with obs + reward normalisation), Pendulum-v1 (drl's tuned config), CartPole solve; 3 seeds each "
        "(about two and a half hours on 2 shared CPU cores)",
        [
            _mujoco("HalfCheetah-v5", 1, 500_000, 3),
            _mujoco("HalfCheetah-v5", 8, 500_000, 3),
            _mujoco("HalfCheetah-v5", 1, 500_000, 3, normalize=True),
            _mujoco("Hopper-v5", 1, 500_000, 3),
            _mujoco("Hopper-v5", 8, 500_000, 3),
            Row("pendulum-8env", "Pendulum-v1, 8 envs (drl's tuned config)", "ppo", "Pendulum-v1", 0, 3,
                _pair("Pendulum-v1"), "drl-tuned"),
            _cartpole(None, 3),
            _offpolicy("sac", 20_000, 2),
            _offpolicy("td3", 20_000, 2),
        ],
    ),
}


def sb3_ppo_defaults() -> dict[str, Any]:
    """SB3's default PPO hyperparameters as drl config overrides, read from SB3's signatures."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.policies import ActorCriticPolicy

    ppo = {k: p.default for k, p in inspect.signature(PPO.__init__).parameters.items()}
    policy = {k: p.default for k, p in inspect.signature(ActorCriticPolicy.__init__).parameters.items()}
    from torch import nn

    if policy["net_arch"] is not None or policy["ortho_init"] is not True or policy["activation_fn"] is not nn.Tanh:
        raise RuntimeError("this SB3 version changed its default policy; update benchmarks/harness/suites.py")
    # SB3's MlpPolicy with net_arch=None builds separate [64, 64] tanh actor and critic MLPs.
    return {
        "env": {"kwargs": {}},
        "algo": {
            "num_steps": ppo["n_steps"], "minibatch_size": ppo["batch_size"], "num_epochs": ppo["n_epochs"],
            "learning_rate": ppo["learning_rate"], "anneal_lr": False, "gamma": ppo["gamma"],
            "gae_lambda": ppo["gae_lambda"], "clip_coef": ppo["clip_range"], "clip_value": ppo["clip_range_vf"],
            "ent_coef": ppo["ent_coef"], "vf_coef": ppo["vf_coef"], "max_grad_norm": ppo["max_grad_norm"],
            "target_kl": ppo["target_kl"], "normalize_advantages": ppo["normalize_advantage"],
            "normalize_obs": False, "normalize_reward": False, "actor_hidden": [64, 64], "critic_hidden": [64, 64],
            "activation": "tanh", "log_std_init": float(policy["log_std_init"]), "state_dependent_std": False,
            "squash_actions": False,
        },
    }
