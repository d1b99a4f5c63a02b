"""The on-policy loop: collect -> update -> log -> checkpoint -> evaluate.

The runner knows nothing about the algorithm. It asks the agent for

* ``storage_fields()``: the fields of one rollout step;
* ``act(obs) -> (env_action, record)`` and ``record_outcome(record, reward, terminated,
  truncated, final_obs) -> record``: one step's stored data;
* ``update(storage, progress) -> metrics``; ``state_dict()`` / ``load_state_dict()``.

Everything on the per-step path stays on the env's device: episode statistics are accumulated
with masked tensor ops and read back once per iteration.
"""

from __future__ import annotations

import json
import math
import random
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drl.checkpoint import load_agent_state, load_run_checkpoint, rng_state, save_checkpoint, set_rng_state
from drl.config import TrainConfig, dump_yaml, to_dict
from drl.logging import RunLogger, Stopwatch
from drl.resources import check_env_fits, check_storage_fits
from drl.storage import RolloutBuffer
from envs import make_vec_env
from envs.core import resolve_device

__all__ = ["OnPolicyRunner", "EpisodeTracker", "evaluate_policy", "seed_everything"]

EVAL_SEED_OFFSET = 1_000_003  # eval envs get their own seed stream, fixed per run


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpisodeTracker:
    """Episode returns/lengths from a whole rollout at once, carried across rollouts.

    The runner writes each step's env reward and done flag into ``[T, N]`` tensors (two copies per
    step) and calls :meth:`update` once per rollout: the per-step path stays free of bookkeeping.
    """

    def __init__(self, num_envs: int, device: torch.device):
        self.carry_return = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.carry_length = torch.zeros(num_envs, dtype=torch.int64, device=device)

    def update(self, rewards: torch.Tensor, done: torch.Tensor) -> tuple[float, float, int]:
        """Mean return, mean length and number of the episodes that ended in this rollout.

        Args:
            rewards: ``[T, N]`` env rewards.
            done: ``[T, N]`` bool, the episode ended at step t (terminated or truncated).
        """
        num_steps = rewards.shape[0]
        cumulative = rewards.to(torch.float64).cumsum(0)  # C[t] = r_0 + ... + r_t
        step = torch.arange(num_steps, device=rewards.device).unsqueeze(1).expand_as(done)
        last_end = torch.where(done, step, -1).cummax(0).values  # last episode end at or before t
        prev_end = torch.cat([torch.full_like(last_end[:1], -1), last_end[:-1]])  # strictly before t
        started_here = prev_end >= 0  # the episode ending at t began inside this rollout
        before = torch.gather(cumulative, 0, prev_end.clamp(min=0))
        returns = torch.where(started_here, cumulative - before, cumulative + self.carry_return)
        lengths = torch.where(started_here, step - prev_end, step + 1 + self.carry_length)
        count = int(done.sum().item())
        # carry the unfinished episodes into the next rollout
        final_end = last_end[-1]
        tail = cumulative[-1] - torch.gather(cumulative, 0, final_end.clamp(min=0).unsqueeze(0)).squeeze(0)
        self.carry_return = torch.where(final_end >= 0, tail, self.carry_return + cumulative[-1])
        self.carry_length = torch.where(final_end >= 0, num_steps - 1 - final_end, self.carry_length + num_steps)
        if count == 0:
            return float("nan"), float("nan"), 0
        return returns[done].mean().item(), lengths[done].double().mean().item(), count


def evaluate_policy(agent: Any, env: Any, episodes: int, seed: int, max_steps: int = 1_000_000) -> list[float]:
    """Deterministic-action returns of ``episodes`` episodes, spread evenly over the env copies.

    Each copy runs a fixed quota of episodes, so short episodes are not over-represented.
    Observation statistics are used but not updated. ``env_reward`` in info (the env's own
    reward, kept by reward wrappers) is what is summed when present.
    """
    num_envs = env.num_envs
    quota = torch.full((num_envs,), episodes // num_envs, dtype=torch.int64)
    quota[: episodes % num_envs] += 1
    done_counts = torch.zeros(num_envs, dtype=torch.int64)
    running = torch.zeros(num_envs, dtype=torch.float64)
    returns: list[float] = []
    obs, _ = env.reset(seed=seed)
    for _ in range(max_steps):
        if bool((done_counts >= quota).all()):
            break
        action, _ = agent.act(obs, deterministic=True, update_stats=False)
        obs, reward, terminated, truncated, info = env.step(action)
        running += info.get("env_reward", reward).detach().to("cpu", torch.float64)
        done = (terminated | truncated).cpu()
        for i in torch.nonzero(done).flatten().tolist():
            if done_counts[i] < quota[i]:
                returns.append(float(running[i]))
                done_counts[i] += 1
        running[done] = 0.0
    else:
        raise RuntimeError(f"evaluation did not finish {episodes} episodes within {max_steps} steps")
    return returns


class OnPolicyRunner:
    """Owns the env, storage, agent, logging and checkpoints of one on-policy run.

    Args:
        cfg: the resolved training config.
        agent_class: the agent to build (e.g. :class:`drl.agents.ppo.PPO`).
        run_dir: the run folder (created).
        resume: continue from ``run_dir/checkpoints/latest.pt``.
    """

    def __init__(self, cfg: TrainConfig, agent_class: type, run_dir: Path, resume: bool = False):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        seed_everything(cfg.seed)
        check_env_fits(cfg.env.id, {"env.num_envs": cfg.env.num_envs, "env.num_eval_envs": cfg.env.num_eval_envs},
                       self.device, cfg.env.vectorization, cfg.env.kwargs)
        self.env = make_vec_env(cfg.env.id, cfg.env.num_envs, self.device, cfg.env.vectorization, cfg.env.kwargs)
        self.eval_env = make_vec_env(cfg.env.id, cfg.env.num_eval_envs, self.device, cfg.env.vectorization,
                                     cfg.env.kwargs)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.agent = agent_class(self.env.single_observation_space, self.env.single_action_space, cfg.algo,
                                 cfg.env.num_envs, self.device, self.generator, total_steps=cfg.total_steps)
        self.num_steps = cfg.algo.num_steps
        self.steps_per_iteration = self.num_steps * cfg.env.num_envs
        self.num_iterations = math.ceil(cfg.total_steps / self.steps_per_iteration)
        # the storage, plus the env reward (float32) and done flag (bool) kept per step for episode statistics
        check_storage_fits(self.num_steps, cfg.env.num_envs, self.agent.storage_fields(), self.device,
                           extra_bytes_per_step=5)
        self.storage = RolloutBuffer(self.num_steps, cfg.env.num_envs, self.agent.storage_fields(), self.device)
        # the folder is made only once everything above was built: a bad env or config leaves nothing behind
        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        self.state = {"global_step": 0, "iteration": 0, "wall_s": 0.0, "eval_s": 0.0, "best_eval_return": -math.inf,
                      "last_eval_return": math.nan, "next_eval_step": self._first(cfg.eval_interval),
                      "next_checkpoint_step": self._first(cfg.checkpoint_interval)}
        if resume:
            self._restore(load_run_checkpoint(self.run_dir / "checkpoints" / "latest.pt", map_location=self.device))
        else:
            dump_yaml(to_dict(cfg), self.run_dir / "config.yaml")
        self._stop_signal: int | None = None

    @staticmethod
    def _first(interval: int) -> int:
        return interval if interval > 0 else 2**62

    # --- checkpoints ----------------------------------------------------------------------
    def checkpoint_payload(self) -> dict[str, Any]:
        return {
            "agent": self.cfg.agent,
            "env": self.cfg.env.id,
            "config": to_dict(self.cfg),
            "agent_state": self.agent.state_dict(),
            "runner": dict(self.state),
            "rng": rng_state(),
            "generator": self.generator.get_state(),
        }

    def save(self, name: str = "latest.pt") -> Path:
        return save_checkpoint(self.run_dir / "checkpoints" / name, self.checkpoint_payload())

    def _restore(self, ckpt: dict[str, Any]) -> None:
        if ckpt.get("agent") != self.cfg.agent:
            raise ValueError(f"checkpoint is for agent '{ckpt.get('agent')}', this run is '{self.cfg.agent}'")
        load_agent_state(self.agent, ckpt["agent_state"], self.run_dir / "checkpoints" / "latest.pt")
        self.state.update(ckpt["runner"])
        set_rng_state(ckpt["rng"])
        self.generator.set_state(ckpt["generator"])

    # --- signals --------------------------------------------------------------------------
    def _request_stop(self, signum: int, _frame: Any) -> None:
        self._stop_signal = signum

    def _install_signal_handlers(self) -> dict[int, Any]:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, self._request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    # --- the loop -------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run to ``total_steps`` (or until SIGINT/SIGTERM); returns the summary written to disk."""
        cfg, state = self.cfg, self.state
        previous_handlers = self._install_signal_handlers()
        logger = RunLogger(self.run_dir, self.num_iterations * self.steps_per_iteration, state["global_step"],
                           progress=cfg.progress)
        clock = Stopwatch(offset=state["wall_s"])
        tracker = EpisodeTracker(cfg.env.num_envs, self.device)
        env_rewards = torch.zeros(self.num_steps, cfg.env.num_envs, device=self.device)
        episode_ends = torch.zeros(self.num_steps, cfg.env.num_envs, dtype=torch.bool, device=self.device)
        reward_rows, end_rows = env_rewards.unbind(0), episode_ends.unbind(0)  # per-step views, made once
        obs, _ = self.env.reset(seed=cfg.seed + state["iteration"])
        interrupted = False
        try:
            while state["iteration"] < self.num_iterations:
                iteration_start = clock()
                self.storage.clear()
                for t in range(self.num_steps):
                    action, record = self.agent.act(obs)
                    obs, reward, terminated, truncated, info = self.env.step(action)
                    self.storage.add(self.agent.record_outcome(record, reward, terminated, truncated,
                                                               info["final_obs"]))
                    reward_rows[t].copy_(info.get("env_reward", reward))
                    torch.logical_or(terminated, truncated, out=end_rows[t])
                    if self._stop_signal is not None:
                        break
                if self._stop_signal is not None:
                    interrupted = True  # the partial rollout is dropped: resume redoes it
                    break
                metrics = self.agent.update(self.storage, progress=state["iteration"] / self.num_iterations)
                state["iteration"] += 1
                state["global_step"] += self.steps_per_iteration
                state["wall_s"] = clock()
                episode_return, episode_length, episodes = tracker.update(env_rewards, episode_ends)
                row = {"global_step": state["global_step"], "iteration": state["iteration"],
                       "episode_return": episode_return, "episode_length": episode_length, "episodes": episodes,
                       "eval_return": math.nan, "eval_return_std": math.nan, **metrics,
                       "wall_s": state["wall_s"],
                       "sps": self.steps_per_iteration / max(state["wall_s"] - iteration_start, 1e-9)}
                last = state["iteration"] == self.num_iterations
                if state["global_step"] >= state["next_eval_step"] or last:
                    eval_start = clock()
                    row["eval_return"], row["eval_return_std"] = self._evaluate()
                    state["eval_s"] += clock() - eval_start
                    row["wall_s"] = state["wall_s"] = clock()
                    while state["next_eval_step"] <= state["global_step"]:
                        state["next_eval_step"] += cfg.eval_interval or 2**62
                row["eval_s"] = state["eval_s"]  # wall_s - eval_s is the time spent training
                logger.log(row)
                if state["global_step"] >= state["next_checkpoint_step"] and not last:  # the last one is saved below
                    self.save()
                    while state["next_checkpoint_step"] <= state["global_step"]:
                        state["next_checkpoint_step"] += cfg.checkpoint_interval or 2**62
        finally:
            state["wall_s"] = clock()
            logger.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
        self.save()
        summary = self._write_summary(interrupted)
        self.env.close()
        self.eval_env.close()
        return summary

    def _evaluate(self) -> tuple[float, float]:
        returns = evaluate_policy(self.agent, self.eval_env, self.cfg.eval_episodes,
                                  seed=self.cfg.seed + EVAL_SEED_OFFSET)
        mean, std = float(np.mean(returns)), float(np.std(returns))
        self.state["last_eval_return"] = mean
        if mean > self.state["best_eval_return"]:
            self.state["best_eval_return"] = mean
            self.save("best.pt")
        return mean, std

    def _write_summary(self, interrupted: bool) -> dict[str, Any]:
        from drl.plotting import plot_runs

        state = self.state
        summary = {
            "agent": self.cfg.agent,
            "env": self.cfg.env.id,
            "steps": state["global_step"],
            "total_steps": self.num_iterations * self.steps_per_iteration,
            "wall_s": round(state["wall_s"], 3),
            "sps": round(state["global_step"] / max(state["wall_s"], 1e-9), 1),
            "final_eval_return": None if math.isnan(state["last_eval_return"]) else state["last_eval_return"],
            "best_eval_return": None if math.isinf(state["best_eval_return"]) else state["best_eval_return"],
            "seed": self.cfg.seed,
            "device": str(self.device),
            "interrupted": interrupted,
        }
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        try:
            plot_runs([self.run_dir], self.run_dir / "curve.png")
        except ValueError:
            pass  # no finished iteration yet: nothing to plot
        return summary
