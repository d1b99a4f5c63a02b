"""One training run on each side, drl and Stable-Baselines3, recorded and timed the same way.

What the clock covers, on both sides: from just before the first ``env.reset`` of training to the
end of the last update, in one process with ``torch.set_num_threads(1)``.

* Excluded on both sides: building the envs and the model, replay buffer included (drl: the
  runner's constructor; SB3: ``make_vec_env`` + ``PPO(...)`` / ``SAC(...)`` / ``TD3(...)``), every
  evaluation (drl's ``eval_s``; SB3: evaluations run inside the callback are timed and subtracted),
  the final deterministic evaluation, and the harness's own bookkeeping in the SB3 callback.
* Included on both sides: each library's own per-iteration logging (drl: ``metrics.csv`` and
  TensorBoard; SB3: its logger), episode statistics (drl: its on-device tracker; SB3: ``Monitor``).

drl's curve is read from its ``metrics.csv`` (``wall_s - eval_s`` is the training time); SB3's is
recorded by :class:`Recorder` after every update, at the same env steps as drl's rows.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import math
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from benchmarks.harness.suites import (
    SOLVE_THRESHOLD,
    TORCH_CARTPOLE,
    Row,
    Variant,
    sb3_offpolicy_defaults,
    sb3_ppo_defaults,
)
from drl.api import config_path_for, load_agent, load_config, train
from drl.config import TrainConfig, merge, to_dict
from drl.registry import AGENTS, resolve_config
from drl.runners.on_policy import EVAL_SEED_OFFSET

__all__ = ["drl_config", "run_drl", "run_sb3", "sb3_ppo_kwargs", "sb3_offpolicy_kwargs", "drl_offpolicy_overrides",
           "evaluate_actor", "EVAL_ENV_OF", "OFFPOLICY_FIELDS", "OFFPOLICY_SAME_BY_CONTRACT"]

EVAL_ENV_OF = {"drl/CartPole-v0": "CartPole-v1", "drl/Pendulum-v0": "Pendulum-v1"}  # same dynamics, gymnasium's code
Actor = Callable[[Any], Any]


# --- shared ---------------------------------------------------------------------------------
def drl_config(row: Row, variant: Variant, seed: int) -> TrainConfig:
    """The resolved drl config of one run; the SB3 side maps the same config onto its arguments."""
    common: dict[str, Any] = {"seed": seed, "device": variant.device, "torch_threads": 1, "progress": False,
                              "checkpoint_interval": 0, "eval_interval": row.eval_interval,
                              "env": {"vectorization": "sync"}}
    if row.eval_interval:
        common["eval_episodes"] = 10
    else:  # drl's runner still evaluates once at the end (untimed); the harness's final evaluation is used
        common["eval_episodes"] = 1
        common["env"]["num_eval_envs"] = 1
    if row.kind == "offpolicy":  # drl's defaults (no tuned file) + SB3's defaults mapped onto drl's fields
        algo, _, _ = drl_offpolicy_overrides(row.agent, sb3_offpolicy_defaults(row.agent))
        algo |= {"num_steps": max(row.log_every // (row.num_envs or 1), 1), "save_replay": False, **row.algo}
        raw = merge({"agent": row.agent, "env": {"id": variant.env_id, "num_envs": row.num_envs or 1},
                     "total_steps": row.total_steps, "algo": algo}, common)
        cfg = resolve_config(merge(raw, variant.overrides))
        cfg.source = f"drl's {row.agent} defaults + SB3's default {row.agent.upper()} hyperparameters (benchmarks)"
        return cfg
    if variant.recipe == "torch-cartpole":
        raw = merge({} if config_path_for("ppo", variant.env_id).is_file() else TORCH_CARTPOLE, common)
    else:
        # "explicit": the row's algo sets every value (on top of the env's tuned file, which it all overrides)
        raw = sb3_ppo_defaults() if row.hparams == "sb3-defaults" else {}
        shared: dict[str, Any] = {"algo": dict(row.algo)}
        if row.total_steps:
            shared["total_steps"] = row.total_steps
        if row.num_envs:
            shared["env"] = {"num_envs": row.num_envs}
        raw = merge(merge(raw, shared), common)
    return load_config(row.agent, variant.env_id, overrides=merge(raw, variant.overrides))


def evaluate_actor(act: Actor, env_id: str, episodes: int, seed: int, env_kwargs: dict | None = None) -> list[float]:
    """Returns of ``episodes`` deterministic episodes in one gymnasium env; episode i resets with ``seed + i``."""
    env = gym.make(EVAL_ENV_OF.get(env_id, env_id), **(env_kwargs or {}))
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def _as_env_action(action: np.ndarray) -> Any:
    action = np.asarray(action)
    return action.item() if action.ndim == 0 else action


def _summary(returns: list[float]) -> dict[str, Any]:
    return {"episodes": len(returns), "mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "returns": [float(r) for r in returns]}


def _finish(run: dict[str, Any], threshold: float = SOLVE_THRESHOLD) -> dict[str, Any]:
    """Add steps, training seconds, steps/s and the first solving evaluation to a run record."""
    curve = run["curve"]
    run["steps"] = curve["step"][-1] if curve["step"] else 0
    run["train_s"] = curve["train_s"][-1] if curve["train_s"] else float("nan")
    run["sps"] = run["steps"] / run["train_s"] if run["train_s"] and run["train_s"] > 0 else float("nan")
    run["solve"] = None
    for step, seconds, value in zip(curve["step"], curve["train_s"], curve["eval_return"], strict=True):
        if value is not None and not math.isnan(value) and value >= threshold:
            run["solve"] = {"step": step, "train_s": seconds, "eval_return": value}
            break
    return run


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _base_record(row: Row, variant: Variant, seed: int, cfg: TrainConfig) -> dict[str, Any]:
    return {"row": row.name, "variant": variant.label, "lib": variant.lib, "env_id": variant.env_id,
            "device": variant.device, "seed": seed, "num_envs": cfg.env.num_envs, "total_steps": cfg.total_steps}


# --- drl ------------------------------------------------------------------------------------
def _float(cell: str) -> float:
    return float(cell) if cell not in ("", None) else float("nan")


def read_drl_curve(run_dir: Path) -> dict[str, list[float]]:
    """``metrics.csv`` -> curve (training seconds = ``wall_s - eval_s``)."""
    curve: dict[str, list[float]] = {"step": [], "train_s": [], "return": [], "episodes": [], "eval_return": []}
    with (run_dir / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            curve["step"].append(int(float(row["global_step"])))
            curve["train_s"].append(_float(row["wall_s"]) - (_float(row["eval_s"]) if row.get("eval_s") else 0.0))
            # the mean of the episodes that ended in this iteration (episode_return is a rolling window)
            curve["return"].append(_float(row.get("iter_episode_return", row["episode_return"])))
            curve["episodes"].append(int(_float(row["episodes"])) if row.get("episodes") else 0)
            curve["eval_return"].append(_float(row["eval_return"]))
    return curve


def drl_actor(agent: Any) -> Actor:
    def act(obs: Any) -> Any:
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=agent.device).unsqueeze(0)
        action, _ = agent.act(obs_t, deterministic=True, update_stats=False)
        return _as_env_action(action[0].cpu().numpy())

    return act


def train_drl(row: Row, variant: Variant, seed: int, work_dir: Path, device: str = "cpu"
              ) -> tuple[Any, Any, dict[str, Any]]:
    """``drl.api.train`` of the row's config on one torch thread after a garbage collection: ``(config, the
    last policy loaded on device, the run's record with its curve)``."""
    cfg = drl_config(row, variant, seed)
    run_dir = work_dir / f"{row.name}-{_slug(variant.label)}-s{seed}"
    torch.set_num_threads(1)
    gc.collect()
    train(cfg, run_dir)
    record = _base_record(row, variant, seed, cfg)
    record["curve"] = read_drl_curve(run_dir)
    agent, _ = load_agent(run_dir, "latest", device=device)
    return cfg, agent, record


def run_drl(row: Row, variant: Variant, seed: int, work_dir: Path, eval_episodes: int) -> dict[str, Any]:
    """Train with ``drl.api.train`` (no progress bar), then evaluate the last policy (untimed)."""
    cfg, agent, record = train_drl(row, variant, seed, work_dir)
    returns = evaluate_actor(drl_actor(agent), variant.env_id, eval_episodes, seed + EVAL_SEED_OFFSET, cfg.env.kwargs)
    record["final_eval"] = _summary(returns)
    record["hyperparameters"] = {k: v for k, v in to_dict(cfg).items() if k not in ("seed", "progress")}
    if row.kind == "offpolicy":  # which drl field carries each SB3 default, and which have none
        sb3 = sb3_offpolicy_defaults(row.agent)
        _, mapping, unmatched = drl_offpolicy_overrides(row.agent, sb3)
        record["hyperparameters"]["sb3_mapping"] = _readable(mapping)
        record["hyperparameters"]["sb3_unmatched"] = unmatched
        record["hyperparameters"]["sb3_by_contract"] = {k: v for k, v in OFFPOLICY_SAME_BY_CONTRACT.items() if k in sb3}
    return _finish(record)


# --- Stable-Baselines3 ----------------------------------------------------------------------
class AnnealedLR:
    """drl's ``anneal_lr`` as an SB3 schedule: ``lr * (1 - k / K)`` at update ``k`` of ``K``.

    SB3 calls the schedule with ``progress_remaining = 1 - num_timesteps / total`` after the
    rollout of update ``k`` (so ``num_timesteps = (k + 1) x batch``); drl uses ``progress = k / K``.
    """

    def __init__(self, lr: float, total_steps: int, batch: int):
        self.lr, self.total_steps, self.batch = lr, total_steps, batch
        self.updates = math.ceil(total_steps / batch)

    def __call__(self, progress_remaining: float) -> float:
        k = max(round((1.0 - progress_remaining) * self.total_steps / self.batch) - 1, 0)
        return self.lr * (1.0 - k / self.updates)

    def __repr__(self) -> str:
        return f"lr x (1 - k/K) over K={self.updates} updates (drl anneal_lr)"


def sb3_ppo_kwargs(cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """drl's PPO config -> (``stable_baselines3.PPO`` kwargs, VecNormalize kwargs or {})."""
    from torch import nn

    a = cfg.algo
    if a.state_dependent_std or a.squash_actions or a.actor_obs != "policy" or a.critic_obs != "policy":
        raise ValueError("state-dependent std, squashed actions and obs groups have no SB3 PPO equivalent")
    if a.clip_grad_per_network:
        raise ValueError("algo.clip_grad_per_network has no SB3 PPO equivalent (SB3 clips the joint gradient norm)")
    batch = a.num_steps * cfg.env.num_envs
    activation = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "silu": nn.SiLU}[a.activation]
    kwargs = {
        "n_steps": a.num_steps, "batch_size": a.minibatch_size, "n_epochs": a.num_epochs,
        "learning_rate": AnnealedLR(a.learning_rate, cfg.total_steps, batch) if a.anneal_lr else a.learning_rate,
        "gamma": a.gamma, "gae_lambda": a.gae_lambda, "clip_range": a.clip_coef, "clip_range_vf": a.clip_value,
        "normalize_advantage": a.normalize_advantages, "ent_coef": a.ent_coef, "vf_coef": a.vf_coef,
        "max_grad_norm": a.max_grad_norm,
        # SB3 stops an update at approx_kl > 1.5 x target_kl; drl at approx_kl > target_kl
        "target_kl": None if a.target_kl is None else a.target_kl / 1.5,
        "policy_kwargs": {"net_arch": {"pi": list(a.actor_hidden), "vf": list(a.critic_hidden)},
                          "activation_fn": activation, "ortho_init": a.init == "orthogonal",
                          "log_std_init": a.log_std_init, "optimizer_kwargs": {"eps": a.adam_eps}},
    }
    normalize = {}
    if a.normalize_obs or a.normalize_reward:  # drl's RunningMeanStd / RewardScaler = VecNormalize's statistics
        normalize = {"norm_obs": a.normalize_obs, "norm_reward": a.normalize_reward, "gamma": a.gamma,
                     "clip_obs": 10.0, "clip_reward": 10.0, "epsilon": 1e-8}
    return kwargs, normalize


# SB3 hyperparameter -> the drl off-policy config field(s) that carry it (every one of them that exists
# on the agent's config class is set). ``updates_per_step`` is SB3's gradient_steps / train_freq.
OFFPOLICY_FIELDS: dict[str, tuple[str, ...]] = {
    "learning_rate": ("learning_rate", "actor_learning_rate", "critic_learning_rate", "temperature_learning_rate",
                      "alpha_learning_rate", "actor_lr", "critic_lr", "alpha_lr"),
    "buffer_size": ("buffer_size",),
    "learning_starts": ("learning_starts",),
    "batch_size": ("batch_size",),
    "tau": ("tau",),
    "gamma": ("gamma",),
    "updates_per_step": ("updates_per_step",),
    "n_steps": ("n_step", "n_steps", "nstep"),
    "net_arch": ("actor_hidden", "critic_hidden"),
    "activation_fn": ("activation",),
    "n_critics": ("num_critics", "num_q", "num_qs", "ensemble_size", "num_q_heads"),
    "ent_coef": ("ent_coef_init", "init_temperature", "initial_temperature", "init_alpha", "initial_alpha"),
    "policy_delay": ("policy_delay", "actor_delay", "policy_frequency"),
    "target_policy_noise": ("target_policy_noise", "policy_noise", "target_noise"),
    "target_noise_clip": ("target_noise_clip", "noise_clip"),
    "action_noise_std": ("exploration_noise", "action_noise", "exploration_std", "exploration_noise_std"),
}
# SB3 hyperparameters whose default drl matches by the issue-9 contract, with no drl value to set.
OFFPOLICY_SAME_BY_CONTRACT = {
    "target_entropy": "'auto' = -|A| (drl's default target entropy)",
    "target_update_interval": "1: Polyak-average the targets after every gradient step (drl does)",
}


def _drl_value(key: str, value: Any) -> Any:
    """An SB3 value in drl's form (``ent_coef`` 'auto' / 'auto_0.1' -> the initial temperature 1.0 / 0.1)."""
    if key == "activation_fn":
        return value.__name__.lower()
    if key == "net_arch":
        return list(value)
    if key == "ent_coef" and isinstance(value, str):
        return float(value.split("_", 1)[1]) if "_" in value else 1.0
    return value


def drl_offpolicy_overrides(agent: str, hparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict], list[str]]:
    """SB3 hyperparameters (:func:`~benchmarks.harness.suites.sb3_offpolicy_defaults`) -> drl ``algo`` overrides.

    Returns ``(algo overrides, {sb3 key: {drl field: value}}, unmatched sb3 keys)``: every field of
    :data:`OFFPOLICY_FIELDS` that exists on ``drl.registry.AGENTS[agent].config_class`` is set; an SB3
    key with none of its fields there (and not in :data:`OFFPOLICY_SAME_BY_CONTRACT`) is unmatched,
    and the report lists it. An unregistered agent maps nothing (everything unmatched).
    """
    spec = AGENTS.get(agent)
    names = {f.name for f in dataclasses.fields(spec.config_class)} if spec is not None else set()
    sb3 = dict(hparams)
    train_freq = sb3.pop("train_freq", 1)
    train_freq = train_freq[0] if isinstance(train_freq, tuple) else train_freq
    sb3["updates_per_step"] = sb3.pop("gradient_steps", 1) / train_freq
    overrides: dict[str, Any] = {}
    mapping: dict[str, dict[str, Any]] = {}
    unmatched = []
    for key, value in sb3.items():
        fields = [name for name in OFFPOLICY_FIELDS.get(key, ()) if name in names]
        if fields:
            mapping[key] = {name: _drl_value(key, value) for name in fields}
            overrides |= mapping[key]
        elif key not in OFFPOLICY_SAME_BY_CONTRACT:
            unmatched.append(key)
    return overrides, mapping, unmatched


def sb3_offpolicy_kwargs(agent: str, hparams: dict[str, Any], action_dim: int) -> dict[str, Any]:
    """SB3 hyperparameters -> ``stable_baselines3.SAC`` / ``TD3`` keyword arguments (all explicit).

    ``action_noise_std`` (TD3) becomes ``NormalActionNoise(0, std)`` on every action dimension; SB3
    adds it to the action scaled to [-1, 1] and clips.
    """
    from stable_baselines3.common.noise import NormalActionNoise

    kwargs = {k: v for k, v in hparams.items() if k not in ("net_arch", "activation_fn", "n_critics",
                                                             "action_noise_std")}
    kwargs["policy_kwargs"] = {"net_arch": list(hparams["net_arch"]), "activation_fn": hparams["activation_fn"],
                               "n_critics": hparams["n_critics"]}
    if "action_noise_std" in hparams:
        std = float(hparams["action_noise_std"])
        kwargs["action_noise"] = NormalActionNoise(np.zeros(action_dim), np.full(action_dim, std))
    return kwargs


def _readable(kwargs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, dict):
            out[k] = _readable(v)
        elif isinstance(v, type):
            out[k] = v.__name__
        elif type(v).__name__ == "NormalActionNoise":
            out[k] = repr(v)
        elif callable(v):
            out[k] = repr(v)
        else:
            out[k] = v
    return out


class _RecorderBase:
    """Mixed into an SB3 ``BaseCallback`` subclass at run time (SB3 is imported lazily)."""

    def setup(self, record_every: int, eval_every: int, eval_fn: Callable[[Any], list[float]] | None) -> None:
        self.t0 = time.perf_counter()
        self.excluded = 0.0  # evaluation + harness bookkeeping, subtracted from the clock
        self.record_every, self.next_record = record_every, record_every
        self.eval_every = eval_every
        self.next_eval = eval_every if eval_every else 2**62
        self.eval_fn = eval_fn
        self.curve: dict[str, list[float]] = {"step": [], "train_s": [], "return": [], "episodes": [],
                                              "eval_return": []}
        self.seen: list[int] | None = None

    def _on_step(self) -> bool:
        return True

    def _on_rollout_start(self) -> None:  # SB3 calls this after every update (and once before the first)
        if self.model.num_timesteps >= self.next_record:
            self._record(final=False)

    def _on_training_end(self) -> None:
        if not self.curve["step"] or self.curve["step"][-1] != self.model.num_timesteps:
            self._record(final=True)

    def _record(self, final: bool) -> None:
        now = time.perf_counter()
        train_s = now - self.t0 - self.excluded
        step = self.model.num_timesteps
        per_env = self.training_env.get_attr("episode_returns")  # Monitor's list of finished-episode returns
        if self.seen is None:
            self.seen = [0] * len(per_env)
        new = [r for i, rets in enumerate(per_env) for r in rets[self.seen[i]:]]
        self.seen = [len(rets) for rets in per_env]
        eval_return = float("nan")
        if self.eval_fn is not None and (final or step >= self.next_eval):
            eval_return = float(statistics.fmean(self.eval_fn(self.model)))
            while self.next_eval <= step:
                self.next_eval += self.eval_every
        while self.next_record <= step:
            self.next_record += self.record_every
        for key, value in (("step", step), ("train_s", train_s),
                           ("return", float(np.mean(new)) if new else float("nan")), ("episodes", len(new)),
                           ("eval_return", eval_return)):
            self.curve[key].append(value)
        self.excluded += time.perf_counter() - now


def _recorder() -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Recorder(_RecorderBase, BaseCallback):
        pass

    return Recorder()


def sb3_actor(model: Any, venv: Any) -> Actor:
    from stable_baselines3.common.vec_env import VecNormalize

    def act(obs: Any) -> Any:
        if isinstance(venv, VecNormalize) and venv.norm_obs:
            obs = venv.normalize_obs(obs)
        action, _ = model.predict(obs, deterministic=True)
        return _as_env_action(action)

    return act


def _sb3_offpolicy_setup(row: Row, variant: Variant) -> tuple[dict[str, Any], dict[str, Any], int]:
    """SB3's default hyperparameters for the row's agent, the kwargs from them, and the action size."""
    hparams = sb3_offpolicy_defaults(row.agent)
    probe = gym.make(variant.env_id)
    action_dim = int(np.prod(probe.action_space.shape))
    probe.close()
    return hparams, sb3_offpolicy_kwargs(row.agent, hparams, action_dim), action_dim


def run_sb3(row: Row, variant: Variant, seed: int, eval_episodes: int) -> dict[str, Any]:
    """Train ``stable_baselines3.PPO`` (the row's drl config mapped onto SB3 names) or SAC/TD3 (SB3's defaults)."""
    import stable_baselines3 as sb3
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    normalize: dict[str, Any] = {}
    if row.kind == "offpolicy":  # needs no drl agent: SB3's defaults are the row's definition
        num_envs, env_kwargs, eval_interval, eval_n = row.num_envs or 1, {}, row.eval_interval, 10
        _, kwargs, _ = _sb3_offpolicy_setup(row, variant)
        record_every = max(row.log_every, num_envs)
        record = {"row": row.name, "variant": variant.label, "lib": variant.lib, "env_id": variant.env_id,
                  "device": variant.device, "seed": seed, "num_envs": num_envs, "total_steps": row.total_steps}
        total_steps = row.total_steps
    else:
        cfg = drl_config(row, variant, seed)
        num_envs, env_kwargs, eval_interval, eval_n = cfg.env.num_envs, cfg.env.kwargs, cfg.eval_interval, \
            cfg.eval_episodes
        kwargs, normalize = sb3_ppo_kwargs(cfg)
        record_every = cfg.algo.num_steps * cfg.env.num_envs
        record = _base_record(row, variant, seed, cfg)
        total_steps = cfg.total_steps
    torch.set_num_threads(1)
    venv = make_vec_env(variant.env_id, n_envs=num_envs, seed=seed, env_kwargs=env_kwargs,
                        vec_env_cls=DummyVecEnv)  # each env wrapped in Monitor
    if normalize:
        venv = VecNormalize(venv, **normalize)
    model = getattr(sb3, row.agent.upper())("MlpPolicy", venv, seed=seed, device=variant.device, verbose=0, **kwargs)

    def evaluate(m: Any) -> list[float]:
        return evaluate_actor(sb3_actor(m, venv), variant.env_id, eval_n, seed + EVAL_SEED_OFFSET, env_kwargs)

    callback = _recorder()
    gc.collect()
    callback.setup(record_every, eval_interval, evaluate if eval_interval else None)  # starts the clock
    model.learn(total_timesteps=total_steps, callback=callback)
    record["curve"] = callback.curve
    returns = evaluate_actor(sb3_actor(model, venv), variant.env_id, eval_episodes, seed + EVAL_SEED_OFFSET,
                             env_kwargs)
    record["final_eval"] = _summary(returns)
    record["hyperparameters"] = {
        "class": f"stable_baselines3.{row.agent.upper()}('MlpPolicy')", "total_timesteps": total_steps,
        "n_envs": num_envs, "vec_env": "DummyVecEnv of Monitor(gym.make(env_id))",
        "VecNormalize": normalize or None, "device": variant.device, **_readable(kwargs),
        "eval_interval": eval_interval, "eval_episodes": eval_n if eval_interval else None,
    }
    venv.close()
    return _finish(record)
