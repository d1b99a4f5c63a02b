"""rsl_rl as a benchmark peer on drl's torch-batched envs: the ``VecEnv`` adapter and one timed run per side.

rsl_rl (``rsl-rl-lib``, Isaac Lab's default PPO) trains on thousands of batched envs, the regime drl's
``drl/...`` envs exist for. :class:`RslRlVecEnv` exposes a drl torch vector env through rsl_rl's
``VecEnv`` interface; :func:`run_rslrl` trains rsl_rl's ``OnPolicyRunner`` with the row's drl PPO
config mapped onto rsl_rl's names (:func:`rslrl_train_cfg`), and :func:`run_drl_batched` trains drl on
the same row. Both are timed as :mod:`benchmarks.harness.sides` times drl and SB3, and both policies
are evaluated by the same batched code (:func:`evaluate_batched`, untimed).

Time limits, each library's own way:

* drl: the env reports ``truncated`` separately from ``terminated``; drl's PPO bootstraps a truncated
  step with ``V(final_obs)``, the value of the true last observation (``info["final_obs"]``).
* rsl_rl: the adapter sets ``extras["time_outs"] = truncated & ~terminated`` and reports
  ``dones = terminated | truncated``; rsl_rl adds ``gamma * V(s_t)`` (the value of the observation the
  action was taken in, computed at acting time) to the reward of a timed-out step, Isaac Lab's
  convention, and never sees the true last observation.

Action distributions: rsl_rl 5.5.1 ships Gaussian, heteroscedastic Gaussian and Beta distributions
only, so it cannot train on a discrete action space (``drl/CartPole-v0``); :class:`RslRlVecEnv`
refuses one with a ValueError.
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from benchmarks.harness.suites import Row, Variant
from drl.config import TrainConfig, to_dict
from drl.runners.on_policy import EVAL_SEED_OFFSET  # evaluation resets with seed + this, on both sides

__all__ = ["RslRlVecEnv", "rslrl_train_cfg", "rslrl_view", "run_rslrl", "run_drl_batched", "evaluate_batched"]

BatchActor = Callable[[Any], torch.Tensor]  # obs [N, ...] (tensor or dict of groups) -> actions [N, A]


def _vec_env_base() -> type:
    from rsl_rl.env import VecEnv

    return VecEnv


def _obs_groups(obs: torch.Tensor | dict[str, torch.Tensor], num_envs: int) -> Any:
    """A drl obs (``[N, D]`` or a dict of groups) -> rsl_rl's TensorDict of groups (a plain tensor is ``"policy"``)."""
    from tensordict import TensorDict

    groups = dict(obs) if isinstance(obs, dict) else {"policy": obs}
    return TensorDict(groups, batch_size=[num_envs], device=next(iter(groups.values())).device)


class RslRlVecEnv:
    """A drl torch vector env behind rsl_rl's ``rsl_rl.env.VecEnv`` interface (registered as its virtual subclass).

    Args:
        env: a drl torch-batched env (``envs.make_vec_env("drl/...")``) with a Box action space.
        seed: the seed of the first reset (done lazily by the first :meth:`get_observations`, which
            rsl_rl's ``OnPolicyRunner`` calls in its constructor).

    Step semantics (:meth:`step`): ``obs`` is a TensorDict of groups ``[N, D]`` (SAME_STEP autoreset:
    at a done step it is already the next episode's first obs), ``rewards [N]`` float32 (the env's
    reward), ``dones [N]`` long (``terminated | truncated``), ``extras["time_outs"] [N]`` bool
    (``truncated & ~terminated``). Alongside, the adapter sums the returns of finished episodes on the
    env's device (no host sync; ``info["env_reward"]`` when the env reports one):
    :meth:`pop_episode_stats` reads and clears them (the harness's curve).

    Raises:
        ValueError: a non-Box action space (rsl_rl has no discrete distribution).
    """

    def __init__(self, env: gym.vector.VectorEnv, seed: int):
        space = env.single_action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"rsl_rl has no distribution for a {type(space).__name__} action space (rsl-rl-lib "
                             "5.5.1: Gaussian, heteroscedastic Gaussian, Beta); use an env with Box actions")
        self.env = env
        self.num_envs: int = env.num_envs
        self.num_actions: int = int(np.prod(space.shape))
        self.device: torch.device = torch.device(env.device)
        self.max_episode_length: int = int(getattr(env, "max_episode_steps", 0) or 0)
        self.cfg: dict[str, Any] = {"env_id": env.spec.id if env.spec is not None else type(env).__name__,
                                    "num_envs": self.num_envs}
        self._seed = seed
        self._obs: Any = None
        self._returns = torch.zeros(self.num_envs, device=self.device)
        self._finished_sum = torch.zeros((), device=self.device)
        self._finished_count = torch.zeros((), device=self.device, dtype=torch.long)

    @property
    def episode_length_buf(self) -> torch.Tensor:
        """Steps taken in each env's current episode ``[N]`` (rsl_rl reads it for random initial lengths)."""
        steps = getattr(self.env, "episode_steps", None)
        return steps if isinstance(steps, torch.Tensor) else torch.zeros(self.num_envs, dtype=torch.long)

    @episode_length_buf.setter
    def episode_length_buf(self, value: torch.Tensor) -> None:
        raise NotImplementedError("drl envs do not take random initial episode lengths (init_at_random_ep_len)")

    def get_observations(self) -> Any:
        """The current obs as a TensorDict of groups; the first call resets the env with ``seed``."""
        if self._obs is None:
            obs, _ = self.env.reset(seed=self._seed)
            self._obs = _obs_groups(obs, self.num_envs)
        return self._obs

    def step(self, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor, dict[str, Any]]:
        """One env step: ``actions [N, A]`` -> ``(obs, rewards [N], dones [N], extras)``; see the class docstring."""
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        self._returns += info.get("env_reward", reward)
        self._finished_sum += (self._returns * done).sum()
        self._finished_count += done.sum()
        self._returns.masked_fill_(done, 0.0)
        self._obs = _obs_groups(obs, self.num_envs)
        return self._obs, reward, done.long(), {"time_outs": truncated & ~terminated}

    def pop_episode_stats(self) -> tuple[float, int]:
        """``(mean return, count)`` of the episodes finished since the last call (NaN, 0 when none); syncs."""
        count = int(self._finished_count.item())
        mean = float(self._finished_sum.item()) / count if count else math.nan
        self._finished_sum.zero_()
        self._finished_count.zero_()
        return mean, count

    def close(self) -> None:
        self.env.close()


def _register() -> None:
    with contextlib.suppress(ImportError):
        _vec_env_base().register(RslRlVecEnv)


_register()


RSLRL_ADAM_EPS = 1e-8  # rsl_rl builds torch.optim.Adam with its default eps


def rslrl_train_cfg(cfg: TrainConfig) -> dict[str, Any]:
    """drl's PPO config -> rsl_rl's ``OnPolicyRunner`` ``train_cfg`` (same values under rsl_rl's names).

    Mapped: rollout length (``num_steps_per_env``), epochs, minibatches (``num_steps * num_envs /
    minibatch_size``), fixed learning rate (``schedule: "fixed"``), gamma, lambda, clip, entropy and
    value coefficients (both losses are ``policy + vf_coef * MSE - ent_coef * entropy``), max grad norm
    (clipped on the actor's and the critic's norms apart: drl's ``clip_grad_per_network: true``),
    per-minibatch advantage normalisation, value clipping (rsl_rl's uses the policy clip), separate
    actor/critic MLPs with a state-independent Gaussian std parameterised in log space
    (``exp(log_std_init)``), no obs normalisation, bf16 autocast (``algo.autocast: bf16`` ->
    ``use_mixed_precision``; rsl_rl's covers its whole loss, drl's the network passes). What rsl_rl has no
    setting for must be its fixed choice on drl's side: Adam's eps 1e-8 (``adam_eps``), PyTorch's default
    init (``init: default``). rsl_rl keeps ``check_for_nan`` on and runs no torch.compile.

    Raises:
        ValueError: a setting rsl_rl's PPO cannot express (annealed lr, reward normalisation, target KL,
            a value clip different from the policy clip, squashed or state-dependent std, a recurrent
            policy, obs groups other than ``"policy"``, a rollout batch not split evenly into minibatches,
            a joint gradient clip, Adam's eps other than 1e-8, orthogonal init).
    """
    a, num_envs = cfg.algo, cfg.env.num_envs
    batch = a.num_steps * num_envs
    problems = [name for name, bad in (
        ("anneal_lr", a.anneal_lr), ("normalize_reward", a.normalize_reward), ("target_kl", a.target_kl is not None),
        ("clip_value", a.clip_value is not None and a.clip_value != a.clip_coef),
        ("squash_actions", a.squash_actions), ("state_dependent_std", a.state_dependent_std),
        ("rnn_type", getattr(a, "rnn_type", "none") != "none"), ("actor_obs", a.actor_obs != "policy"),
        ("critic_obs", a.critic_obs != "policy"), ("minibatch_size", batch % a.minibatch_size != 0),
        ("clip_grad_per_network", not a.clip_grad_per_network), ("adam_eps", a.adam_eps != RSLRL_ADAM_EPS),
        ("init", a.init != "default")) if bad]
    if problems:
        raise ValueError(f"algo settings with no rsl_rl PPO equivalent: {problems}")

    def model(hidden: list[int], dist: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"class_name": "MLPModel", "hidden_dims": list(hidden), "activation": a.activation,
                               "obs_normalization": bool(a.normalize_obs)}
        if dist:
            out["distribution_cfg"] = {"class_name": "GaussianDistribution", "init_std": math.exp(a.log_std_init),
                                       "std_type": "log"}
        return out

    return {
        "num_steps_per_env": a.num_steps,
        "save_interval": 10**9,  # rsl_rl still saves at iteration 0 and at the end (timed out of the clock)
        "obs_groups": {"actor": ["policy"], "critic": ["policy"]},
        "logger": "tensorboard",
        "actor": model(a.actor_hidden, True),
        "critic": model(a.critic_hidden, False),
        "algorithm": {
            "class_name": "PPO", "num_learning_epochs": a.num_epochs, "num_mini_batches": batch // a.minibatch_size,
            "clip_param": a.clip_coef, "gamma": a.gamma, "lam": a.gae_lambda, "value_loss_coef": a.vf_coef,
            "entropy_coef": a.ent_coef, "learning_rate": a.learning_rate, "max_grad_norm": a.max_grad_norm,
            "optimizer": "adam", "use_clipped_value_loss": a.clip_value is not None, "schedule": "fixed",
            "desired_kl": None, "normalize_advantage_per_mini_batch": bool(a.normalize_advantages),
            "use_mixed_precision": getattr(a, "autocast", "none") == "bf16",
        },
    }


def rslrl_view(train_cfg: dict[str, Any], iterations: int, num_envs: int, device: str) -> dict[str, Any]:
    """rsl_rl's settings under the labels of the report's drl column (rsl_rl's own name in parentheses)."""
    alg, actor, critic = train_cfg["algorithm"], train_cfg["actor"], train_cfg["critic"]
    steps = train_cfg["num_steps_per_env"]
    dist = actor["distribution_cfg"]
    return {
        "class": "rsl_rl.runners.OnPolicyRunner + rsl_rl.algorithms.PPO",
        "total env steps": iterations * steps * num_envs, "num_envs": num_envs,
        "steps per env per rollout": f"{steps} (num_steps_per_env)", "rollout batch": steps * num_envs,
        "minibatch size": f"{steps * num_envs // alg['num_mini_batches']} (num_mini_batches "
                          f"{alg['num_mini_batches']})",
        "epochs": f"{alg['num_learning_epochs']} (num_learning_epochs)",
        "learning rate": f"{alg['learning_rate']} (schedule {alg['schedule']})", "gamma": alg["gamma"],
        "GAE lambda": f"{alg['lam']} (lam)", "clip": f"{alg['clip_param']} (clip_param)",
        "value clip": "clip_param" if alg["use_clipped_value_loss"] else None,
        "entropy coef": alg["entropy_coef"], "value coef": alg["value_loss_coef"],
        "max grad norm": f"{alg['max_grad_norm']} (actor and critic each)", "target KL": alg["desired_kl"],
        "normalize advantages": "per minibatch" if alg["normalize_advantage_per_mini_batch"] else "per rollout",
        "obs / reward normalization": f"{actor['obs_normalization']} / False",
        "actor / critic": f"{actor['hidden_dims']} / {critic['hidden_dims']} {actor['activation']}, separate, "
                          "PyTorch's default init",
        "Adam eps": f"{RSLRL_ADAM_EPS} (torch.optim.Adam's default)",
        "log std init": f"{math.log(dist['init_std'])} (init_std {dist['init_std']}, std_type {dist['std_type']})",
        "device": device, "torch threads": 1, "torch.compile": train_cfg.get("torch_compile_mode"),
        "check_for_nan": train_cfg.get("check_for_nan", True), "optimizer": alg["optimizer"],
    }


def evaluate_batched(act: BatchActor, env_id: str, episodes: int, seed: int, device: str = "cpu",
                     env_kwargs: dict | None = None) -> list[float]:
    """Returns of ``episodes`` deterministic episodes, one per env of a fresh batched ``env_id`` reset with ``seed``.

    Each env's first episode counts (its reward summed until its first ``terminated | truncated``);
    ``act(obs)`` gets the whole batch ``[episodes, ...]`` and returns actions ``[episodes, A]``.
    """
    from envs import make_vec_env

    env = make_vec_env(env_id, episodes, device=device, env_kwargs=env_kwargs)
    obs, _ = env.reset(seed=seed)
    returns = torch.zeros(episodes, device=env.device)
    running = torch.ones(episodes, dtype=torch.bool, device=env.device)
    with torch.inference_mode():
        while bool(running.any()):
            obs, reward, terminated, truncated, info = env.step(act(obs))
            returns += info.get("env_reward", reward) * running
            running &= ~(terminated | truncated)
    env.close()
    return returns.cpu().tolist()


def _summary(returns: list[float]) -> dict[str, Any]:
    return {"episodes": len(returns), "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "returns": [float(r) for r in returns]}


def run_drl_batched(row: Row, variant: Variant, seed: int, work_dir: Path, eval_episodes: int) -> dict[str, Any]:
    """drl's side of a batched row: ``drl.api.train`` (timed as in ``benchmarks.harness.sides.run_drl``), then
    :func:`evaluate_batched` of the last policy (untimed)."""
    from benchmarks.harness.sides import _finish, train_drl

    cfg, agent, record = train_drl(row, variant, seed, work_dir, device=variant.device)

    def act(obs: Any) -> torch.Tensor:
        return agent.act(obs, deterministic=True, update_stats=False)[0]

    record["final_eval"] = _summary(evaluate_batched(act, variant.env_id, eval_episodes, seed + EVAL_SEED_OFFSET,
                                                     variant.device, cfg.env.kwargs))
    record["hyperparameters"] = {k: v for k, v in to_dict(cfg).items() if k not in ("seed", "progress")}
    return _finish(record)


def run_rslrl(row: Row, variant: Variant, seed: int, work_dir: Path, eval_episodes: int) -> dict[str, Any]:
    """rsl_rl's side of a batched row: ``OnPolicyRunner.learn`` with the row's drl config mapped by
    :func:`rslrl_train_cfg`, then :func:`evaluate_batched` of its deterministic policy (untimed).

    Clock: from just before ``learn()`` to its return, one torch thread. Excluded: building the env and
    the runner (whose constructor does the env's first reset: rsl_rl builds its models from an obs),
    rsl_rl's two checkpoint saves (iteration 0 and the end; timed and subtracted, as drl checkpoints
    after its clock), and the harness's curve bookkeeping after each of rsl_rl's per-iteration logs.
    Included: rsl_rl's own per-iteration logging (TensorBoard, its episode buffers, its console print,
    sent to a buffer) and its per-step NaN check, and the adapter's on-device return sums.
    """
    from rsl_rl.runners import OnPolicyRunner

    from benchmarks.harness.sides import _base_record, _finish, _slug, drl_config
    from envs import make_vec_env

    cfg = drl_config(row, variant, seed)  # the row's settings, in drl's names (the source of truth)
    train_cfg = rslrl_train_cfg(cfg)
    iterations = math.ceil(cfg.total_steps / (cfg.algo.num_steps * cfg.env.num_envs))
    run_dir = work_dir / f"{row.name}-{_slug(variant.label)}-s{seed}"
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)
    env = RslRlVecEnv(make_vec_env(variant.env_id, cfg.env.num_envs, device=variant.device,
                                   env_kwargs=cfg.env.kwargs), seed)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        runner = OnPolicyRunner(env, train_cfg, log_dir=str(run_dir), device=variant.device)
    record = _base_record(row, variant, seed, cfg)
    curve: dict[str, list[float]] = {"step": [], "train_s": [], "return": [], "episodes": [], "eval_return": []}
    clock = {"t0": 0.0, "excluded": 0.0}
    log, save = runner.logger.log, runner.save

    def timed_log(*args: Any, **kwargs: Any) -> None:
        log(*args, **kwargs)
        now = time.perf_counter()
        mean, count = env.pop_episode_stats()
        it = kwargs["it"] if "it" in kwargs else args[0]
        for key, value in (("step", (it + 1) * train_cfg["num_steps_per_env"] * env.num_envs),
                           ("train_s", now - clock["t0"] - clock["excluded"]), ("return", mean),
                           ("episodes", count), ("eval_return", math.nan)):
            curve[key].append(value)
        clock["excluded"] += time.perf_counter() - now

    def untimed_save(*args: Any, **kwargs: Any) -> None:
        now = time.perf_counter()
        save(*args, **kwargs)
        clock["excluded"] += time.perf_counter() - now

    runner.logger.log, runner.save = timed_log, untimed_save
    gc.collect()
    with contextlib.redirect_stdout(console):
        clock["t0"] = time.perf_counter()
        runner.learn(num_learning_iterations=iterations)
    record["curve"] = curve
    policy = runner.get_inference_policy(device=variant.device)

    def act(obs: Any) -> torch.Tensor:
        return policy(_obs_groups(obs, obs["policy"].shape[0] if isinstance(obs, dict) else obs.shape[0]))

    record["final_eval"] = _summary(evaluate_batched(act, variant.env_id, eval_episodes, seed + EVAL_SEED_OFFSET,
                                                     variant.device, cfg.env.kwargs))
    record["hyperparameters"] = rslrl_view(train_cfg, iterations, env.num_envs, variant.device)
    env.close()
    return _finish(record)
