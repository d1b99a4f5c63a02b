"""Where a batched PPO iteration spends its time, drl vs rsl_rl, phase by phase.

    python -m benchmarks.ppo_profile [--envs drl/Pendulum-v0 drl/HalfCheetah-v0] [--num-envs 1024 4096]
                                     [--iterations 3] [--warmup 1] [--libs drl rslrl] [--device cpu]
                                     [--ops 0] [--out benchmarks/results/ppo_profile/]

Each (env, num_envs, library) trains the ``rslrl`` suite's row setting (:data:`benchmarks.harness.suites.
BATCHED_PPO`: 32-step rollouts, 5 epochs x 4 minibatches, [64, 64] tanh, one torch thread) for
``--warmup`` + ``--iterations`` iterations through each library's own runner (drl: the ``OnPolicyRunner``
of ``drl.api.train``; rsl_rl: its ``OnPolicyRunner.learn`` on :class:`benchmarks.harness.rslrl_side.
RslRlVecEnv`), with timers around the library's own calls; the warm-up iterations are not counted.

Phases (each timer counts its own time, not that of the timers nested in it, so the phases add up):

* ``env step``: the env's ``step`` (rsl_rl: the adapter's, which also wraps the obs in a TensorDict);
* ``act``: the policy's per-step call (drl: ``PPO.act``, the actor only; rsl_rl: ``PPO.act``, actor,
  critic and log-prob);
* ``storage``: the per-step writes (drl: ``record_outcome`` + ``RolloutBuffer.add``; rsl_rl:
  ``process_env_step``, timeout bootstrap included, + its logger's per-step bookkeeping);
* ``values``: drl's two batched critic passes after the rollout (rsl_rl's are in ``act``, its last one in GAE);
* ``GAE``: the advantage recursion (rsl_rl: ``compute_returns``);
* ``update: sampling``: the minibatch gathers; ``update: forward`` the losses (the remainder of the update
  for rsl_rl, which computes them inline); ``update: backward``: ``Tensor.backward`` (or the autograd
  call); ``update: optimiser``: clipping + Adam (+ zero_grad); ``update: other``: the rest of the update
  call (statistics, their host reads);
* ``loop other``: everything else in the timed iterations (the runner's own per-step and per-iteration
  work, logging).

Times are the thread's CPU time (``time.thread_time``: not the time the process waited for a core, so on a
loaded machine they are steadier than wall-clock; the wall-clock total is printed beside). Writes
``results.json`` and ``report.md`` to ``--out``; ``--ops N`` also lists each run's top N torch operators by
self CPU time (``torch.profiler``, which slows the run: its totals are not comparable with the others).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness.machine import load_average, machine_info, versions
from benchmarks.harness.suites import BATCHED_PPO, _batched

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "ppo_profile"
PHASES = ("env step", "act", "storage", "values", "GAE", "update: sampling", "update: forward",
          "update: backward", "update: optimiser", "update: other", "loop other")
HALFCHEETAH_RETURNS = {"gamma": 0.99, "gae_lambda": 0.95}  # the rslrl suite's HalfCheetah rows


class PhaseClock:
    """Exclusive CPU time per phase: a timer nested in another stops the outer one's count."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(PHASES, 0)
        self._stack: list[str] = []
        self._mark = 0.0
        self.counting = False
        self.start_cpu = self.start_wall = 0.0

    def _switch(self) -> None:
        now = time.thread_time()
        if self.counting and self._stack:
            self.cpu[self._stack[-1]] += now - self._mark
        self._mark = now

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._switch()
        self._stack.append(name)
        self.calls[name] += self.counting
        try:
            yield
        finally:
            self._switch()
            self._stack.pop()

    def wrap(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.phase(name):
                return fn(*args, **kwargs)
        return timed

    def wrap_iter(self, name: str, fn: Callable[..., Iterator]) -> Callable[..., Iterator]:
        """A generator function whose every ``next`` is timed as ``name``."""
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Iterator:
            it = iter(fn(*args, **kwargs))
            while True:
                with self.phase(name):
                    try:
                        item = next(it)
                    except StopIteration:
                        return
                yield item
        return timed

    def begin(self) -> None:
        """Start counting (after the warm-up iterations)."""
        self._switch()
        self.cpu = dict.fromkeys(PHASES, 0.0)
        self.calls = dict.fromkeys(PHASES, 0)
        self.counting = True
        self.start_cpu, self.start_wall = time.thread_time(), time.perf_counter()

    def end(self) -> dict[str, Any]:
        self._switch()
        self.counting = False
        total = time.thread_time() - self.start_cpu
        self.cpu["loop other"] += max(total - sum(self.cpu.values()), 0.0)
        return {"cpu_s": dict(self.cpu), "total_cpu_s": total, "wall_s": time.perf_counter() - self.start_wall}


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _row(env_id: str, num_envs: int, iterations: int, device: str) -> Any:
    returns = HALFCHEETAH_RETURNS if "HalfCheetah" in env_id else {}
    return _batched(env_id, num_envs, iterations, 1, device=device, **returns)


class _Iterations:
    """Calls ``clock.begin()`` once ``warmup`` iterations are done and ``clock.end()`` after the last one."""

    def __init__(self, clock: PhaseClock, warmup: int, total: int):
        self.clock, self.warmup, self.total, self.done = clock, warmup, total, 0
        self.result: dict[str, Any] | None = None

    def after_update(self) -> None:
        self.done += 1
        if self.done == self.warmup:
            self.clock.begin()
        if self.done == self.total:
            self.result = self.clock.end()


def profile_drl(env_id: str, num_envs: int, iterations: int, warmup: int, device: str, ops: int) -> dict[str, Any]:
    from benchmarks.harness.sides import drl_config
    from drl.agents import ppo as ppo_module
    from drl.registry import AGENTS
    from drl.storage import MinibatchSampler, RolloutBuffer

    total = warmup + iterations
    row = _row(env_id, num_envs, total, device)
    cfg = drl_config(row, row.variants[0], 0)
    cfg.eval_interval = 0
    clock = PhaseClock()
    marks = _Iterations(clock, warmup, total)
    spec = AGENTS[cfg.agent]
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        runner = spec.runner_class(cfg, spec.agent_class, Path(tmp) / "run")
        agent = runner.agent
        env_step = runner.env.step
        runner.env.step = clock.wrap("env step", env_step)
        agent.act = clock.wrap("act", agent.act)
        agent.record_outcome = clock.wrap("storage", agent.record_outcome)
        update = agent.update
        compute_returns = agent.compute_returns

        def timed_update(*args: Any, **kwargs: Any) -> Any:
            with clock.phase("update: other"):
                out = update(*args, **kwargs)
            marks.after_update()
            return out

        agent.update = timed_update
        agent.compute_returns = clock.wrap("values", compute_returns)
        step = agent.train_step
        step.loss_fn = clock.wrap("update: forward", step.loss_fn)
        step._clip = clock.wrap("update: optimiser", step._clip)
        step.adam.step = clock.wrap("update: optimiser", step.adam.step)
        if step.compiled:
            step._compiled = clock.wrap("update: forward", step._compiled)  # forward+backward+Adam, not split
        stack = contextlib.ExitStack()
        with stack:
            stack.enter_context(patched(RolloutBuffer, "add", clock.wrap("storage", RolloutBuffer.add)))
            stack.enter_context(patched(ppo_module, "gae", clock.wrap("GAE", ppo_module.gae)))
            stack.enter_context(patched(MinibatchSampler, "minibatches",
                                        clock.wrap_iter("update: sampling", MinibatchSampler.minibatches)))
            backward = clock.wrap("update: backward", torch.Tensor.backward)
            stack.enter_context(patched(torch.Tensor, "backward", backward))
            table = _maybe_ops(ops, runner.train)
        assert marks.result is not None
        return {**marks.result, "ops": table, "compiled_update": step.compiled,
                "numba_actor": agent.numba_actor is not None}


def profile_rslrl(env_id: str, num_envs: int, iterations: int, warmup: int, device: str, ops: int) -> dict[str, Any]:
    from rsl_rl.runners import OnPolicyRunner

    from benchmarks.harness.rslrl_side import RslRlVecEnv, rslrl_train_cfg
    from benchmarks.harness.sides import drl_config
    from envs import make_vec_env

    total = warmup + iterations
    row = _row(env_id, num_envs, total, device)
    cfg = drl_config(row, row.variants[1], 0)
    train_cfg = rslrl_train_cfg(cfg)
    torch.manual_seed(0)
    env = RslRlVecEnv(make_vec_env(env_id, num_envs, device=device, env_kwargs=cfg.env.kwargs), 0)
    clock = PhaseClock()
    marks = _Iterations(clock, warmup, total)
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp, contextlib.redirect_stdout(io.StringIO()):
        runner = OnPolicyRunner(env, train_cfg, log_dir=str(Path(tmp) / "run"), device=device)
        alg = runner.alg
        env.step = clock.wrap("env step", env.step)
        alg.act = clock.wrap("act", alg.act)
        alg.process_env_step = clock.wrap("storage", alg.process_env_step)
        runner.logger.process_env_step = clock.wrap("storage", runner.logger.process_env_step)
        alg.compute_returns = clock.wrap("GAE", alg.compute_returns)
        update = alg.update

        def timed_update(*args: Any, **kwargs: Any) -> Any:
            with clock.phase("update: forward"):  # rsl_rl computes its losses inline: the remainder
                out = update(*args, **kwargs)
            marks.after_update()
            return out

        alg.update = timed_update
        alg.storage.mini_batch_generator = clock.wrap_iter("update: sampling", alg.storage.mini_batch_generator)
        alg.optimizer.step = clock.wrap("update: optimiser", alg.optimizer.step)
        alg.optimizer.zero_grad = clock.wrap("update: optimiser", alg.optimizer.zero_grad)
        runner.save = lambda *a, **k: None  # checkpoints: not part of the profile
        stack = contextlib.ExitStack()
        with stack:
            backward = clock.wrap("update: backward", torch.Tensor.backward)
            stack.enter_context(patched(torch.Tensor, "backward", backward))
            stack.enter_context(patched(torch.nn.utils, "clip_grad_norm_",
                                        clock.wrap("update: optimiser", torch.nn.utils.clip_grad_norm_)))
            table = _maybe_ops(ops, lambda: runner.learn(num_learning_iterations=total))
    env.close()
    assert marks.result is not None
    return {**marks.result, "ops": table}


def _maybe_ops(ops: int, run: Callable[[], Any]) -> list[dict[str, Any]]:
    """Run ``run()``; with ``ops`` > 0 under ``torch.profiler``, returning its top ``ops`` operators by self CPU."""
    if ops <= 0:
        run()
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [{"op": e.key, "calls": e.count, "self_cpu_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in events[:ops]]


PROFILERS = {"drl": profile_drl, "rslrl": profile_rslrl}
NAMES = {"drl": "drl", "rslrl": "rsl_rl"}


def report(results: dict[str, Any]) -> str:
    meta = results["meta"]
    lines = ["# Batched PPO, phase by phase: drl vs rsl_rl", "",
             f"`{meta['command']}`  ", f"{meta['date']}; {meta['machine'].get('cpu', '')}; load average "
             f"{meta['load_start']} at the start, {meta.get('load_end')} at the end.", "",
             f"Setting: the `rslrl` suite's rows ({BATCHED_PPO['num_steps']}-step rollouts, "
             f"{BATCHED_PPO['num_epochs']} epochs x 4 minibatches, {BATCHED_PPO['actor_hidden']} "
             f"{BATCHED_PPO['activation']}, one torch thread, device {meta['device']}); {meta['iterations']} timed "
             f"iterations after {meta['warmup']} warm-up. Per phase: the thread's CPU time per env step (ns), "
             "and its share of the iteration; each timer counts its own time only (see the module docstring).", ""]
    for (env_id, num_envs), runs in _grouped(results["runs"]).items():
        lines += [f"## {env_id}, {num_envs:,} envs", ""]
        libs = [lib for lib in PROFILERS if lib in runs]
        head = "| phase | " + " | ".join(f"{NAMES[lib]} ns/step | share" for lib in libs) + " |"
        lines += [head, "|---|" + "---:|---:|" * len(libs)]
        steps = {lib: runs[lib]["env_steps"] for lib in libs}
        for name in PHASES:
            cells = []
            for lib in libs:
                run = runs[lib]
                if "error" in run:
                    cells.append("- | -")
                    continue
                cpu = run["cpu_s"][name]
                cells.append(f"{cpu / steps[lib] * 1e9:,.0f} | {cpu / run['total_cpu_s']:.0%}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        cells = []
        for lib in libs:
            run = runs[lib]
            cells.append("- | -" if "error" in run else
                         f"**{run['total_cpu_s'] / steps[lib] * 1e9:,.0f}** | 100%")
        lines.append("| **total (CPU)** | " + " | ".join(cells) + " |")
        sps = {lib: steps[lib] / runs[lib]["total_cpu_s"] for lib in libs if "error" not in runs[lib]}
        wall = {lib: steps[lib] / runs[lib]["wall_s"] for lib in libs if "error" not in runs[lib]}
        lines.append("")
        lines.append("; ".join(f"{NAMES[lib]}: {sps[lib]:,.0f} env steps per CPU second ({wall[lib]:,.0f} per "
                               "wall-clock second)" for lib in sps) + ".")
        if "drl" in sps and "rslrl" in sps:
            lines.append(f"drl / rsl_rl: **{sps['drl'] / sps['rslrl']:.2f}x** (CPU time).")
        for lib in libs:
            for err in [runs[lib].get("error")] if runs[lib].get("error") else []:
                lines.append(f"{NAMES[lib]} failed: {err}")
        for lib in libs:
            if runs[lib].get("ops"):
                lines += ["", f"Top operators, {NAMES[lib]} (self CPU, `torch.profiler`):", "",
                          "| op | calls | ms | share |", "|---|---:|---:|---:|"]
                lines += [f"| `{o['op']}` | {o['calls']} | {o['self_cpu_ms']:.1f} | {o['share']:.0%} |"
                          for o in runs[lib]["ops"]]
        lines.append("")
    return "\n".join(lines)


def _grouped(runs: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, dict[str, Any]]]:
    out: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for run in runs:
        out.setdefault((run["env_id"], run["num_envs"]), {})[run["lib"]] = run
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", nargs="+", default=["drl/Pendulum-v0", "drl/HalfCheetah-v0"])
    parser.add_argument("--num-envs", nargs="+", type=int, default=[1024, 4096])
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per run")
    parser.add_argument("--warmup", type=int, default=1, help="iterations before the timed ones")
    parser.add_argument("--libs", nargs="+", choices=list(PROFILERS), default=list(PROFILERS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ops", type=int, default=0, help="also list the top N torch operators (slower runs)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.iterations < 1 or args.warmup < 1 or min(args.num_envs) < 1:
        parser.error("--iterations, --warmup and --num-envs must be >= 1")
    torch.set_num_threads(1)
    argv = sys.argv[1:] if argv is None else argv
    results: dict[str, Any] = {"meta": {
        "command": "python -m benchmarks.ppo_profile " + " ".join(argv), "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_info(), "versions": versions(), "device": args.device, "iterations": args.iterations,
        "warmup": args.warmup, "load_start": load_average()}, "runs": []}
    for env_id in args.envs:
        for num_envs in args.num_envs:
            for lib in args.libs:
                run: dict[str, Any] = {"env_id": env_id, "num_envs": num_envs, "lib": lib,
                                       "env_steps": args.iterations * BATCHED_PPO["num_steps"] * num_envs}
                try:
                    run |= PROFILERS[lib](env_id, num_envs, args.iterations, args.warmup, args.device, args.ops)
                    print(f"{env_id} {num_envs} {NAMES[lib]}: {run['env_steps'] / run['total_cpu_s']:,.0f} env "
                          "steps per CPU second", flush=True)
                except Exception as err:  # noqa: BLE001 - one failed run must not lose the others
                    run["error"] = f"{type(err).__name__}: {err}"
                    print(f"{env_id} {num_envs} {NAMES[lib]}: FAILED: {run['error']}", flush=True)
                results["runs"].append(run)
    results["meta"]["load_end"] = load_average()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(results)
    (args.out / "report.md").write_text(text)
    print(text)
    return 0 if any("error" not in r for r in results["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
