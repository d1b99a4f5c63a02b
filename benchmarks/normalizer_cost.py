"""What observation normalisation and reward scaling cost PPO per env step, in microseconds.

    python -m benchmarks.normalizer_cost [--num-envs 1 4096] [--device cpu|cuda] [--obs-dim 17]
                                         [--torch-path] [--compile]

For each ``num_envs`` it times PPO's per-step calls (``act`` + ``record_outcome``) with
``normalize_obs`` and ``normalize_reward`` on and off, interleaved, and prints the difference per
env step: the normalisers' cost. The reward scaling that PPO does once per rollout (in ``update``)
is timed separately and spread over the rollout's steps. The policy is SB3's default (64x64 tanh)
on HalfCheetah-v5's shapes (17 observations, 6 actions); no env is stepped. It also counts the ops
one step launches with the normalisers off and on (:func:`ops_per_step`: CUDA kernels on a GPU).

``--torch-path`` times the torch ops a GPU runs on the CPU (no numba kernels, no numba actor);
``--compile`` sets ``algo.compile: true``, so on CUDA the obs normaliser runs as compiled graphs
(:class:`drl.nn.RunningMeanStd`'s ``compile_cuda``; with ``--torch-path`` on the CPU too, through
inductor's C++ backend, to show the call overhead).

Each figure is the minimum over ``--repeats`` timed blocks (the least disturbed one, on a shared
machine); the medians are printed beside them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import drl.nn.normalization as normalization
from drl.agents.ppo import PPO, PPOConfig

_OPTIONS: dict[str, bool] = {"torch_path": False, "compile": False}


def _agent(num_envs: int, normalize: bool, obs_dim: int, device: torch.device) -> PPO:
    cfg = PPOConfig(normalize_obs=normalize, normalize_reward=normalize, compile=_OPTIONS["compile"],
                    numba_actor=False if _OPTIONS["torch_path"] else "auto")
    space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,))
    return PPO(space, gym.spaces.Box(-1, 1, (6,)), cfg, num_envs, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ops that move no data (views, allocations) and conversions whose copy is counted by itself
_FREE = {"empty", "empty_strided", "empty_like", "as_strided", "view", "_unsafe_view", "reshape", "_reshape_alias",
         "detach", "detach_", "alias", "resolve_conj", "resolve_neg", "lift_fresh", "expand", "t", "transpose",
         "unsqueeze", "squeeze", "select", "slice", "unbind", "result_type", "to", "_to_copy"}


def ops_per_step(step: Callable[[], object], device: torch.device) -> int:
    """What one call of ``step`` launches: CUDA kernels (and copies/memsets) on a GPU; on the CPU the aten
    ops that compute (profiled ops calling no other such op), one per kernel a GPU would launch (an op that
    converts its result to another dtype counts once here; on the CPU it is two)."""
    step()
    _sync(device)
    activity = torch.profiler.ProfilerActivity
    with torch.profiler.profile(activities=[activity.CUDA if device.type == "cuda" else activity.CPU]) as prof:
        step()
        _sync(device)
    if device.type == "cuda":
        return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)

    def computes(e: torch.autograd.profiler_util.FunctionEvent) -> bool:
        return e.name.startswith("aten::") and e.name[6:] not in _FREE

    return sum(1 for e in prof.events() if computes(e) and not any(computes(c) for c in e.cpu_children))


def step_costs(num_envs: int, obs_dim: int, device: torch.device, repeats: int, steps: int) -> dict[str, float]:
    """Microseconds per env step (min and median over blocks): on, off, and the reward scaling per rollout."""
    agents = {flag: _agent(num_envs, flag, obs_dim, device) for flag in (False, True)}
    obs = torch.randn(num_envs, obs_dim, device=device) * 3 + 1
    reward = torch.randn(num_envs, device=device)
    done = torch.zeros(num_envs, dtype=torch.bool, device=device)

    def step(agent: PPO) -> None:
        _, record = agent.act(obs)
        agent.record_outcome(record, reward, done, done, obs)

    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for flag, agent in agents.items():
            for _ in range(10):
                step(agent)
            _sync(device)
            start = time.perf_counter()
            for _ in range(steps):
                step(agent)
            _sync(device)
            times[flag].append((time.perf_counter() - start) / steps * 1e6)
    out = {"off_min": min(times[False]), "on_min": min(times[True]),
           "off_median": statistics.median(times[False]), "on_median": statistics.median(times[True])}
    out["ops_off"], out["ops_on"] = (ops_per_step(lambda agent=agent: step(agent), device) for agent in agents.values())
    scaler = agents[True].reward_scaler
    if hasattr(scaler, "scale_rollout"):  # once per rollout, in update()
        rollout = 256
        rewards = torch.randn(rollout, num_envs, device=device)
        ends = torch.rand(rollout, num_envs, device=device) < 0.001
        scaler.scale_rollout(rewards, ends, ends)
        per_step = []
        for _ in range(repeats):
            _sync(device)
            start = time.perf_counter()
            scaler.scale_rollout(rewards, ends, ends)
            _sync(device)
            per_step.append((time.perf_counter() - start) / rollout * 1e6)
        out["rollout_scaling_min"], out["rollout_scaling_median"] = min(per_step), statistics.median(per_step)
    else:
        out["rollout_scaling_min"] = out["rollout_scaling_median"] = 0.0  # scaled per step, inside record_outcome
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.normalizer_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 4096])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--torch-path", action="store_true", help="no numba kernels or numba actor (a GPU's ops)")
    parser.add_argument("--compile", action="store_true", help="algo.compile: true (compiled normaliser on CUDA)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(1)
    _OPTIONS.update(torch_path=args.torch_path, compile=args.compile)
    if args.torch_path:
        normalization._KERNELS = False
        if args.compile and device.type == "cpu":
            normalization._COMPILE_DEVICES = ("cpu", "cuda")
    path = ", torch path" if args.torch_path else ""
    print(f"device {device}, obs dim {args.obs_dim}, 1 torch thread{path}, compile {args.compile}; microseconds "
          f"per env step (all envs together), min / median over {args.repeats} blocks")
    print(f"{'num_envs':>8} | {'off':>17} | {'on':>17} | {'normalisers':>17} | {'ops/step off / on':>17} | of which "
          "reward scaling per rollout")
    for num_envs in args.num_envs:
        steps = max(20, min(2000, 2_000_000 // (num_envs * args.obs_dim)))
        c = step_costs(num_envs, args.obs_dim, device, args.repeats, steps)
        cost_min = c["on_min"] - c["off_min"] + c["rollout_scaling_min"]
        cost_median = c["on_median"] - c["off_median"] + c["rollout_scaling_median"]
        print(f"{num_envs:>8} | {c['off_min']:>7.1f} / {c['off_median']:>7.1f} | {c['on_min']:>7.1f} / "
              f"{c['on_median']:>7.1f} | {cost_min:>7.1f} / {cost_median:>7.1f} | "
              f"{c['ops_off']:>7d} / {c['ops_on']:>7d} | "
              f"{c['rollout_scaling_min']:.2f} / {c['rollout_scaling_median']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
