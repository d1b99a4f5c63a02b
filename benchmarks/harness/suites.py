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

The off-policy rows (``kind="offpolicy"``, SAC and TD3) go the other way: their hyperparameters are
SB3's own defaults for that algorithm, read from SB3's signatures and its default policy
(:func:`sb3_offpolicy_defaults`); SB3 gets them as explicit arguments, and drl gets them mapped onto
its config's fields on top of drl's defaults (never a tuned file), see
:func:`benchmarks.harness.sides.drl_offpolicy_overrides`. The one value that is not SB3's default:
TD3's exploration noise, which SB3 leaves off (``action_noise=None``); both sides get Gaussian
noise of std :data:`TD3_EXPLORATION_NOISE` (in actions scaled to [-1, 1]), as in the TD3 paper.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Variant", "Row", "Suite", "SUITES", "SOLVE_THRESHOLD", "TORCH_CARTPOLE", "TD3_EXPLORATION_NOISE",
           "AMP_LABEL",
           "OFFPOLICY_TARGET_RATIO", "BATCHED_PPO", "BATCHED_TARGET_RATIO", "sb3_ppo_defaults",
           "sb3_offpolicy_defaults"]

SOLVE_THRESHOLD = 475.0  # gymnasium's CartPole-v1 reward_threshold
CARTPOLE_EVAL_INTERVAL = 4096  # env steps between evaluations in the solve rows (all variants)
TD3_EXPLORATION_NOISE = 0.1  # std of TD3's Gaussian exploration noise on both sides (SB3's default: none)
OFFPOLICY_TARGET_RATIO = 1.5  # issue 9: drl >= 1.5x SB3's end-to-end steps/s on HalfCheetah-v5 with one env

BATCHED_TARGET_RATIO = 1.5  # issue 19: drl >= 1.5x rsl_rl's end-to-end steps/s on the CPU at 1024 and 4096 envs
BATCHED_CUDA_TARGET_RATIO = 2.0  # issue 19: drl >= 2x rsl_rl's steps/s on a GPU at 4096 envs and more
# The batched rows' PPO (drl vs rsl_rl), every setting explicit (``hparams="explicit"``): the issue-19
# setting (32-step rollouts, 5 epochs x 4 minibatches, [64, 64] tanh, fixed lr, no normalisation, no
# value clipping), gamma / lambda of drl's tuned Pendulum config, and rsl_rl's fixed choices where drl has a
# setting (actor and critic gradients clipped apart, Adam's eps 1e-8, PyTorch's init): with drl's defaults
# (joint clip, eps 1e-5, orthogonal init) the critic's gradient on unnormalised Pendulum returns shrinks the
# actor's to below Adam's eps and drl's eval return stays near -1,000 where rsl_rl reaches about -320.
# ``minibatch_size`` is set per row (rollout batch / 4).
BATCHED_PPO: dict[str, Any] = {
    "num_steps": 32, "num_epochs": 5, "learning_rate": 1e-3, "anneal_lr": False, "gamma": 0.95, "gae_lambda": 0.9,
    "clip_coef": 0.2, "clip_value": None, "ent_coef": 0.0, "vf_coef": 0.5, "max_grad_norm": 0.5, "target_kl": None,
    "normalize_advantages": True, "normalize_obs": False, "normalize_reward": False, "actor_hidden": [64, 64],
    "critic_hidden": [64, 64], "activation": "tanh", "log_std_init": 0.0, "state_dependent_std": False,
    "squash_actions": False, "clip_grad_per_network": True, "adam_eps": 1e-8, "init": "default",
}
BATCHED_MINIBATCHES = 4

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
        lib: ``"drl"``, ``"sb3"`` or ``"rslrl"`` (rsl_rl, on a drl torch-batched env).
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
    evaluation return of :data:`SOLVE_THRESHOLD`) or ``"offpolicy"`` (SAC/TD3 with SB3's defaults:
    throughput and return at equal steps, run once drl's registry has the agent) or ``"batched"``
    (PPO on a drl torch-batched env, drl vs rsl_rl: throughput and return at equal steps).
    """

    name: str
    title: str
    kind: str
    env_id: str
    total_steps: int
    seeds: int
    variants: list[Variant]
    hparams: str = "sb3-defaults"  # or "drl-tuned", or "explicit" (``algo`` sets every PPO value)
    num_envs: int | None = None  # None: the config's own
    algo: dict[str, Any] = field(default_factory=dict)  # algo overrides on top of ``hparams``
    eval_interval: int = 0  # env steps between (untimed) evaluations during training; 0: none
    agent: str = "ppo"
    log_every: int = 0  # off-policy rows: env steps per logged row (drl's ``algo.num_steps`` x num_envs)
    target_ratio: float | None = None  # the drl / SB3 steps/s the row is judged against, if any


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


AMP_LABEL = "drl amp"  # the second drl side of the TD3 HalfCheetah rows: algo.amp (bfloat16 autocast) on


def _offpolicy(agent: str, env: str, steps: int, seeds: int, log_every: int = 1000) -> Row:
    """A SAC/TD3 row with SB3's default hyperparameters on both sides, one env (``--only`` name:
    ``<agent>-<env>``, e.g. ``sac-halfcheetah``); HalfCheetah-v5 rows carry the 1.5x speed target. TD3 on
    HalfCheetah-v5 has a second drl side, :data:`AMP_LABEL`: the same config with ``algo.amp: true``
    (bfloat16 matmuls; not drl's default, so the target is judged on the float32 side)."""
    short = env.split("-")[0].lower()
    target = OFFPOLICY_TARGET_RATIO if env == "HalfCheetah-v5" else None
    variants = _pair(env)
    if agent == "td3" and env == "HalfCheetah-v5":
        variants.insert(1, Variant(AMP_LABEL, "drl", env, overrides={"algo": {"amp": True}}))
    return Row(f"{agent}-{short}", f"{agent.upper()}, {env}, 1 env", "offpolicy", env, steps, seeds, variants,
               "sb3-defaults", 1, agent=agent, log_every=min(log_every, steps), target_ratio=target)


def _offpolicy_rows(halfcheetah_steps: int, pendulum_steps: int, seeds: int, log_every: int = 1000) -> list[Row]:
    return [_offpolicy(agent, env, steps, seeds, log_every) for env, steps in
            (("HalfCheetah-v5", halfcheetah_steps), ("Pendulum-v1", pendulum_steps)) for agent in ("sac", "td3")]


def _batched(env: str, num_envs: int, iterations: int, seeds: int, gamma: float | None = None,
             gae_lambda: float | None = None, device: str = "cpu") -> Row:
    """A drl vs rsl_rl PPO row on a drl torch-batched env (``--only`` name: ``<env>-<num_envs>env-rslrl``,
    ``-cuda`` appended on CUDA): :data:`BATCHED_PPO` with ``iterations`` rollouts of 32 steps on ``num_envs``
    envs, 4 minibatches. Target: :data:`BATCHED_TARGET_RATIO` on the CPU at 1024 and 4096 envs,
    :data:`BATCHED_CUDA_TARGET_RATIO` on CUDA at 4096 envs and more."""
    short = env.split("/")[-1].split("-")[0].lower()
    cuda = device.startswith("cuda")
    target = (BATCHED_CUDA_TARGET_RATIO if num_envs >= 4096 else None) if cuda else \
        (BATCHED_TARGET_RATIO if num_envs in (1024, 4096) else None)
    algo = dict(BATCHED_PPO, minibatch_size=BATCHED_PPO["num_steps"] * num_envs // BATCHED_MINIBATCHES)
    if gamma is not None:
        algo["gamma"] = gamma
    if gae_lambda is not None:
        algo["gae_lambda"] = gae_lambda
    return Row(f"{short}-{num_envs}env-rslrl{'-cuda' if cuda else ''}",
               f"{env}, {num_envs:,} envs{', cuda' if cuda else ''} (drl vs rsl_rl)", "batched", env,
               iterations * BATCHED_PPO["num_steps"] * num_envs, seeds,
               [Variant("drl", "drl", env, device), Variant("rsl_rl", "rslrl", env, device)], "explicit", num_envs,
               algo, target_ratio=target)


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
            *_offpolicy_rows(300, 300, 1, log_every=100),
        ],
        final_eval_episodes=2,
    ),
    "quick": Suite(
        "quick",
        "HalfCheetah-v5 with 1 and 8 envs at 32,768 steps (SB3 defaults; 1 env also with obs + reward "
        "normalisation), CartPole solve; 2 seeds (< 15 min); SAC and TD3 (SB3 defaults, 1 env) on HalfCheetah-v5 "
        "and Pendulum-v1 at 5,000 steps, 3 seeds (about 20 more minutes)",
        [
            _mujoco("HalfCheetah-v5", 1, 32_768, 2),
            _mujoco("HalfCheetah-v5", 8, 32_768, 2),
            _mujoco("HalfCheetah-v5", 1, 32_768, 2, normalize=True),
            _cartpole(None, 2),
            *_offpolicy_rows(5_000, 5_000, 3),
        ],
    ),
    "full": Suite(
        "full",
        "HalfCheetah-v5 and Hopper-v5 with 1 and 8 envs at 500k steps (SB3 defaults; HalfCheetah-v5 with 1 env "
        "also with obs + reward normalisation), Pendulum-v1 (drl's tuned config), CartPole solve; 3 seeds each "
        "(about two and a half hours on 2 shared CPU cores); SAC and TD3 (SB3 defaults, 1 env) on HalfCheetah-v5 "
        "at 50,000 steps and Pendulum-v1 at 20,000 steps, 3 seeds (about two more hours)",
        [
            _mujoco("HalfCheetah-v5", 1, 500_000, 3),
            _mujoco("HalfCheetah-v5", 8, 500_000, 3),
            _mujoco("HalfCheetah-v5", 1, 500_000, 3, normalize=True),
            _mujoco("Hopper-v5", 1, 500_000, 3),
            _mujoco("Hopper-v5", 8, 500_000, 3),
            Row("pendulum-8env", "Pendulum-v1, 8 envs (drl's tuned config)", "ppo", "Pendulum-v1", 0, 3,
                _pair("Pendulum-v1"), "drl-tuned"),
            _cartpole(None, 3),
            *_offpolicy_rows(50_000, 20_000, 3),
        ],
    ),
    "rslrl": Suite(
        "rslrl",
        "PPO on drl's torch-batched envs, drl vs rsl_rl (rsl-rl-lib) with the same hyperparameters, CPU, 3 seeds: "
        "drl/Pendulum-v0 with 1024 envs (64 iterations, 2.1M env steps) and 4096 envs (32 iterations, 4.2M); "
        "MuJoCo Warp drl/HalfCheetah-v0 with 1024 and 4096 envs at 262k env steps only (CPU Warp steps about 10k "
        "env steps/s here; no training episode ends within it, so its return is the final evaluation). "
        "drl/CartPole-v0 has no row: rsl_rl has no discrete action distribution. With CUDA (--device cuda or "
        "auto): also drl/Pendulum-v0 with 4096 (8.4M steps) and 65,536 envs (67M) and drl/HalfCheetah-v0 with 4096 "
        "envs (4.2M), 3 seeds",
        [
            _batched("drl/Pendulum-v0", 1024, 64, 3),
            _batched("drl/Pendulum-v0", 4096, 32, 3),
            _batched("drl/HalfCheetah-v0", 1024, 8, 3, gamma=0.99, gae_lambda=0.95),
            _batched("drl/HalfCheetah-v0", 4096, 2, 3, gamma=0.99, gae_lambda=0.95),
            _batched("drl/Pendulum-v0", 4096, 64, 3, device="cuda"),
            _batched("drl/Pendulum-v0", 65_536, 32, 3, device="cuda"),
            _batched("drl/HalfCheetah-v0", 4096, 32, 3, gamma=0.99, gae_lambda=0.95, device="cuda"),
        ],
    ),
    "rslrl-tiny": Suite(
        "rslrl-tiny",
        "smoke test of the drl vs rsl_rl rows in seconds (64 envs, 2 iterations; the numbers mean nothing)",
        [_batched("drl/Pendulum-v0", 64, 2, 1)],
        final_eval_episodes=2,
    ),
    "offpolicy": Suite(
        "offpolicy",
        "SAC and TD3 (SB3 defaults, 1 env) on HalfCheetah-v5 at 25,000 steps (long enough for drl's "
        "compile: auto) and Pendulum-v1 at 5,000 steps, 3 seeds (about an hour on one core)",
        _offpolicy_rows(25_000, 5_000, 3),
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


def warm_up_row(agent: str) -> Row:
    """The untimed warm-up of an off-policy agent: 200 steps on Pendulum-v1 (100 of them updates)."""
    return _offpolicy(agent, "Pendulum-v1", 200, 1, log_every=100)


SB3_OFFPOLICY_KEYS = ("learning_rate", "buffer_size", "learning_starts", "batch_size", "tau", "gamma", "train_freq",
                      "gradient_steps", "n_steps", "ent_coef", "target_entropy", "target_update_interval",
                      "policy_delay", "target_policy_noise", "target_noise_clip")
OFFPOLICY_EXTRA: dict[str, dict[str, Any]] = {"td3": {"action_noise_std": TD3_EXPLORATION_NOISE}}


def sb3_offpolicy_defaults(agent: str) -> dict[str, Any]:
    """SB3's default SAC/TD3 hyperparameters (``agent``: ``"sac"`` or ``"td3"``), in SB3's names.

    Read from ``SAC.__init__`` / ``TD3.__init__``'s signature (the keys of :data:`SB3_OFFPOLICY_KEYS`
    this SB3 version has) and from its default ``MlpPolicy`` built on a tiny Box space:
    ``net_arch`` (SAC: [256, 256]; TD3: [400, 300], actor and each critic alike), ``activation_fn``
    (ReLU) and ``n_critics`` (2). Plus :data:`OFFPOLICY_EXTRA` (TD3's exploration noise std, not an
    SB3 default). A non-list ``net_arch`` (a newer SB3 with separate actor/critic defaults) raises.
    """
    import stable_baselines3 as sb3
    from gymnasium.spaces import Box

    cls = getattr(sb3, agent.upper())
    signature = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    out = {k: signature[k] for k in SB3_OFFPOLICY_KEYS if k in signature}
    policy = cls.policy_aliases["MlpPolicy"](Box(-1.0, 1.0, (3,)), Box(-1.0, 1.0, (1,)), lambda _: 1e-3)
    if not isinstance(policy.net_arch, list):
        raise RuntimeError(f"this SB3 version's {agent.upper()} policy has net_arch {policy.net_arch!r}, not one "
                           "shared list; update benchmarks/harness/suites.py")
    out |= {"net_arch": list(policy.net_arch), "activation_fn": policy.activation_fn,
            "n_critics": int(policy.critic_kwargs["n_critics"])}
    return out | OFFPOLICY_EXTRA.get(agent, {})
