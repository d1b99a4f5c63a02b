"""CAMRL vs its three baselines on multi-task suites, plus steps/s of the task-batched learners vs T separate ones.

    python -m benchmarks.camrl [--seeds 3] [--only minigrid mt10 cartpole] [--steps N] [--episodes 2]
                               [--minigrid-env minigrid-mt:Basic] [--metaworld-env metaworld:MT10]
                               [--cartpole-env drl/MT-CartPole-v0] [--set KEY=VALUE ...]
                               [--device cpu|cuda|auto] [--out benchmarks/results/camrl] [--dry-run]

Suites (``--only`` names), each the config ``configs/camrl/<env id, / as ->.yaml`` with its env id replaced by
the argument: ``minigrid`` (a MiniGrid task set), ``mt10`` (Meta-World MT10), ``cartpole`` (the torch-batched
CartPole variants). Methods: ``algo.mode`` = ``camrl`` (agent ``camrl``) and the baselines of agent ``mt-ppo``:
``independent`` (T single-task PPO learners), ``shared`` (MT-PPO: one network, one-hot task input) and
``always_asymmetric`` (CAMRL without the mode switch): the same config, budget (env steps), envs and seeds
otherwise. ``--set`` overrides every run's config.

Score of a trained run: its deterministic policy on ``--episodes`` episodes of every eval env copy; per task
the mean return and, when the env reports ``info["success"]``, the success rate (an episode succeeds when any
of its steps does); the headline numbers are the means over tasks. A claim "A beats B" counts only beyond
twice the standard error of the difference over seeds. The learned transfer matrix ``B`` (mean over the CAMRL
seeds) and the orders are in the report and ``transfer_<suite>.png``. Throughput: samples/s of acting and of
one training minibatch step, the task-batched learners (one call) vs T separate PPO agents (T calls), on
synthetic observations of the suite's sizes. Writes ``results.json``, ``report.md`` and ``curves.png``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import script
from benchmarks.harness.report import close_report, pyplot, save_figure, seed_band, study_header
from benchmarks.harness.report import number as _n
from benchmarks.masked_velocity import _verdict

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "camrl"
PLOT = "curves.png"
METHODS = ("camrl", "independent", "shared", "always_asymmetric")


@dataclass(frozen=True)
class Suite:
    name: str
    config: str  # file in configs/camrl
    env_arg: str  # the argument naming its env id


SUITES = [Suite("minigrid", "minigrid-mt-Basic.yaml", "minigrid_env"),
          Suite("mt10", "metaworld-MT10.yaml", "metaworld_env"),
          Suite("cartpole", "drl-MT-CartPole-v0.yaml", "cartpole_env")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.camrl", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds per suite and method (0 .. N-1)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: the configs')")
    parser.add_argument("--episodes", type=int, default=2, help="episodes per eval env copy scoring a trained run")
    parser.add_argument("--minigrid-env", default="minigrid-mt:Basic")
    parser.add_argument("--metaworld-env", default="metaworld:MT10")
    parser.add_argument("--cartpole-env", default="drl/MT-CartPole-v0")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (e.g. env.num_envs=8)")
    script.add_only(parser, [s.name for s in SUITES])
    parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    script.add_out(parser, RESULTS_DIR / "camrl")
    args = parser.parse_args(argv)
    script.check_args(parser, args, ("seeds", "steps", "episodes"), [s.name for s in SUITES])
    return args


def config(suite: Suite, method: str, seed: int, args: argparse.Namespace) -> Any:
    from drl.api import load_config
    from drl.config import merge, parse_overrides

    overrides: dict[str, Any] = {"agent": "camrl" if method == "camrl" else "mt-ppo",  # mt-ppo runs the baselines
                                 "seed": seed, "progress": False, "log_interval": -1, "checkpoint_interval": 0,
                                 "torch_threads": 1, "device": args.device,
                                 "env": {"id": getattr(args, suite.env_arg)}, "algo": {"mode": method}}
    if args.steps is not None:
        overrides |= {"total_steps": args.steps, "eval_interval": max(args.steps // 10, 1)}
    return load_config(config_file=CONFIGS / suite.config, overrides=merge(overrides, parse_overrides(args.overrides)))


def load_trained(run_dir: Path, cfg: Any, env: Any) -> Any:
    """The run's agent (its latest checkpoint), built on ``env``'s spaces (as for the run's training envs)."""
    from drl.agents.camrl import CAMRL
    from drl.checkpoint import load_run_checkpoint

    agent = CAMRL(env.single_observation_space, env.single_action_space, cfg.algo, cfg.env.num_envs, env.device)
    agent.load_state_dict(load_run_checkpoint(run_dir / "checkpoints" / "latest.pt", map_location=env.device)
                          ["agent_state"])
    return agent


@torch.no_grad()
def task_scores(run_dir: Path, cfg: Any, episodes: int, seed: int) -> dict[str, Any]:
    """``{"tasks", "return" [T], "success" [T] or None}``: the deterministic policy, ``episodes`` per eval env."""
    from drl.wrappers import make_run_env

    env = make_run_env(cfg, cfg.env.num_eval_envs, torch.device("cpu"), for_eval=True)
    agent = load_trained(run_dir, cfg, env)
    ids = env.task_ids.cpu() if hasattr(env, "task_ids") else None
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    running, succeeded = torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.bool)
    done_count = torch.zeros(n, dtype=torch.int64)
    returns: list[list[float]] = [[] for _ in range(n)]
    successes: list[list[float]] = [[] for _ in range(n)]
    has_success = False
    while bool((done_count < episodes).any()):
        action, _ = agent.act(obs, deterministic=True, update_stats=False)
        obs, reward, terminated, truncated, info = env.step(action)
        running += info.get("env_reward", reward).cpu().double()
        if "success" in info:
            has_success = True
            succeeded |= info["success"].cpu() > 0.5
        ended = (terminated | truncated).cpu()
        for i in torch.nonzero(ended & (done_count < episodes)).flatten().tolist():
            returns[i].append(float(running[i]))
            successes[i].append(float(succeeded[i]))
        done_count += ended.long()
        running[ended], succeeded[ended] = 0.0, False
    env.close()
    ids = ids if ids is not None else torch.zeros(n, dtype=torch.long)
    num_tasks = int(ids.max()) + 1
    per_task = [[r for i in range(n) if ids[i] == t for r in returns[i]] for t in range(num_tasks)]
    per_success = [[s for i in range(n) if ids[i] == t for s in successes[i]] for t in range(num_tasks)]
    return {"tasks": list(getattr(env, "task_names", [str(t) for t in range(num_tasks)])),
            "return": [statistics.fmean(r) for r in per_task],
            "success": [statistics.fmean(s) for s in per_success] if has_success else None}


def run(suite: Suite, method: str, seed: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from drl.checkpoint import load_run_checkpoint
    from drl.config import to_dict

    cfg = config(suite, method, seed, args)
    run_dir, summary, rows = script.train_run(cfg, work / f"{suite.name}-{method}-s{seed}")
    scores = task_scores(run_dir, cfg, args.episodes, 20_000 + seed)
    state = load_run_checkpoint(run_dir / "checkpoints" / "latest.pt")["agent_state"]
    record = {"curve": script.eval_points(rows), "tasks": scores["tasks"], "task_return": scores["return"],
              "task_success": scores["success"], "final": statistics.fmean(scores["return"]),
              "success": statistics.fmean(scores["success"]) if scores["success"] is not None else None,
              "steps": summary["steps"], "train_s": summary["wall_s"] - summary["eval_s"],
              "asymmetric_updates": sum(float(r.get("camrl/asymmetric") or 0) for r in rows),
              "config": {"file": f"configs/camrl/{suite.config}", "env": cfg.env.id, "total_steps": cfg.total_steps,
                         "num_envs": cfg.env.num_envs, "algo": to_dict(cfg.algo)}}
    if method in ("camrl", "always_asymmetric"):
        record |= {"B": state["B"].tolist(), "order": state["order"].tolist()}
    return record


def _timed(fn: Any, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def learner_throughput(suite: Suite, args: argparse.Namespace, repeats: int = 20) -> dict[str, float]:
    """Samples/s of acting on ``num_envs`` obs and of one minibatch step: the batched learners vs T PPO agents."""
    from drl.agents.camrl import CAMRL
    from drl.agents.ppo import PPO, PPOConfig
    from drl.wrappers import make_run_env

    cfg = config(suite, "independent", 0, args)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    probe = make_run_env(cfg, cfg.env.num_envs, torch.device("cpu"))
    obs_space, act_space = probe.single_observation_space, probe.single_action_space
    probe.close()
    a = cfg.algo
    T = int(obs_space[a.task_obs].shape[0])
    n, per_task = cfg.env.num_envs, cfg.env.num_envs // T
    batched = CAMRL(obs_space, act_space, a, n, device, torch.Generator().manual_seed(0))
    ppo_cfg = PPOConfig(actor_hidden=a.actor_hidden, critic_hidden=a.critic_hidden, activation=a.activation,
                        num_steps=a.num_steps, minibatch_size=a.minibatch_size // T, compile=False, numba_actor=False)
    separate = [PPO(obs_space[a.actor_obs], act_space, ppo_cfg, per_task, device) for _ in range(T)]
    obs = {k: torch.as_tensor(space.sample(), device=device).float().expand(n, *space.shape).clone()
           for k, space in obs_space.spaces.items()}
    obs[a.task_obs] = torch.nn.functional.one_hot(torch.arange(n, device=device) * T // n, T).float()
    parts = [obs[a.actor_obs][t * per_task:(t + 1) * per_task] for t in range(T)]
    act_batched = _timed(lambda: batched.act(obs), repeats, device)
    act_separate = _timed(lambda: [agent.act(x) for agent, x in zip(separate, parts, strict=True)], repeats, device)
    m = a.minibatch_size // T
    _, record = batched.act(obs)
    mb = {f"obs/{a.actor_obs}": obs[a.actor_obs][:1].expand(T, m, -1).clone(), "log_probs": torch.zeros(T, m),
          "actions": record["actions"][:1].expand(T, m, *record["actions"].shape[1:]).clone(),
          "task_id": torch.arange(T).repeat_interleave(m).view(T, m), "advantages": torch.randn(T, m),
          "returns": torch.randn(T, m), "values": torch.zeros(T, m)}
    mb = {k: v.to(device) for k, v in mb.items()}
    one = {"obs/policy": mb[f"obs/{a.actor_obs}"][0], "actions": mb["actions"][0], "log_probs": mb["log_probs"][0],
           "advantages": mb["advantages"][0], "returns": mb["returns"][0], "values": mb["values"][0]}
    step_batched = _timed(lambda: batched.train_step(mb), repeats, device)
    step_separate = _timed(lambda: [agent.train_step(one) for agent in separate], repeats, device)
    return {"tasks": T, "num_envs": n, "minibatch": m * T,
            "act_batched_sps": n / act_batched, "act_separate_sps": n / act_separate,
            "update_batched_sps": m * T / step_batched, "update_separate_sps": m * T / step_separate}


# --- summary, report, plot ------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], suites: list[str]) -> list[dict[str, Any]]:
    out = []
    for suite in suites:
        for method in METHODS:
            done = [r for r in runs if r["suite"] == suite and r["method"] == method and "error" not in r]
            finals = [r["final"] for r in done]
            successes = [r["success"] for r in done if r.get("success") is not None]
            out.append({"suite": suite, "variant": method, "seeds": len(done),
                        "errors": sum(1 for r in runs if r["suite"] == suite and r["method"] == method) - len(done),
                        "final_mean": statistics.fmean(finals) if finals else None,
                        "final_std": statistics.pstdev(finals) if finals else None,
                        "success_mean": statistics.fmean(successes) if successes else None,
                        "train_s_mean": statistics.fmean([r["train_s"] for r in done]) if done else None})
    return out


def mean_transfer(runs: list[dict[str, Any]], suite: str) -> tuple[torch.Tensor, list[list[int]], list[str]] | None:
    """The CAMRL runs' ``B`` averaged over seeds, their orders and the task names; None without such a run."""
    done = [r for r in runs if r["suite"] == suite and r["method"] == "camrl" and "error" not in r and "B" in r]
    if not done:
        return None
    return torch.tensor([r["B"] for r in done]).mean(0), [r["order"] for r in done], done[0]["tasks"]


def write_report(results: dict[str, Any], out: Path) -> Path:
    from drl.agents.camrl_log import plot_transfer

    meta, summary = results["meta"], results["summary"]
    lines = study_header("CAMRL vs independent, shared (MT-PPO) and always-asymmetric learners", meta)
    lines += [f"{meta['seeds']} seeds per suite and method, equal env steps per suite. Score: the deterministic "
              f"policy, {meta['episodes']} episodes per eval env copy; per task the mean return (and success rate "
              "when the env reports it), then the mean over tasks; mean +- std over seeds.", "",
              "## Claims (issue 16)", ""]
    for suite in dict.fromkeys(s["suite"] for s in summary):
        by = {s["variant"]: s for s in summary if s["suite"] == suite}
        best = max((m for m in METHODS[1:3] if by[m]["final_mean"] is not None), key=lambda m: by[m]["final_mean"],
                   default=None)
        vs_best = _verdict(by, "camrl", best) if best else "not judged (no baseline ran)"
        lines.append(f"- {suite}: CAMRL beats the best of independent/shared ({best}): {vs_best}; CAMRL beats "
                     f"always-asymmetric: {_verdict(by, 'camrl', 'always_asymmetric')}")
    lines += ["", "| suite | method | return (mean over tasks) | success | mean training s |", "|---|---|---|---|---|"]
    for s in summary:
        success = _n(100 * s["success_mean"], 1) + " %" if s["success_mean"] is not None else "-"
        lines.append(f"| {s['suite']} | {s['variant']} | {_n(s['final_mean'], 1)} +- {_n(s['final_std'], 1)} | "
                     f"{success} | {_n(s['train_s_mean'], 1)} |")
    for suite in dict.fromkeys(s["suite"] for s in summary):
        transfer = mean_transfer(results["runs"], suite)
        if transfer is None:
            continue
        B, orders, names = transfer
        image = f"transfer_{suite}.png"
        plot_transfer(B, torch.tensor(orders[0]), out / image, f"{suite}, mean over {len(orders)} seeds;", names)
        lines += ["", f"## Learned transfer matrix, {suite} (row: teacher, column: student; mean over seeds)", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {names[i]} | " + " | ".join(f"{v:.2f}" for v in row) + " |" for i, row in enumerate(B.tolist())]
        lines += ["", "Final orders: " + "; ".join(" ".join(names[i] for i in o) for o in orders), "",
                  f"![B, {suite}]({image})"]
    lines += ["", f"## Learner throughput (samples/s, {meta['device']}; batched: one call for the T learners)", "",
              "| suite | T | envs | act batched | act T separate | minibatch | update batched | update T separate |",
              "|---|---|---|---|---|---|---|---|"]
    for name, tp in results.get("throughput", {}).items():
        if "error" in tp:
            lines.append(f"| {name} | failed: `{tp['error']}` | | | | | | |")
            continue
        lines.append(f"| {name} | {tp['tasks']} | {tp['num_envs']} | {_n(tp['act_batched_sps'])} | "
                     f"{_n(tp['act_separate_sps'])} | {tp['minibatch']} | {_n(tp['update_batched_sps'])} | "
                     f"{_n(tp['update_separate_sps'])} |")
    return close_report(lines, results["runs"], out, ("eval return vs env steps", PLOT), key="suite",
                        config_line=lambda r: f"- {r['suite']}: `{r['config']['file']}` on `{r['config']['env']}`, "
                                              f"total_steps {r['config']['total_steps']:,}, num_envs "
                                              f"{r['config']['num_envs']}",
                        failed_line=lambda r: f"- {r['suite']} {r['method']} seed {r['seed']} failed: `{r['error']}`")


def write_plot(results: dict[str, Any], out: Path) -> Path:
    plt = pyplot()
    suites = list(dict.fromkeys(s["suite"] for s in results["summary"]))
    fig, axes = plt.subplots(1, len(suites), figsize=(6 * len(suites), 4.2), squeeze=False)
    for ax, suite in zip(axes[0], suites, strict=True):
        for i, method in enumerate(METHODS):
            curves = [r["curve"] for r in results["runs"]
                      if r["suite"] == suite and r["method"] == method and "error" not in r and r["curve"]]
            if not curves:
                continue
            seed_band(ax, curves, "eval_return", f"C{i}", f"{method} ({len(curves)} seeds)")
        ax.set_title(suite, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel("eval return (all tasks): mean, min-max over seeds")
    return save_figure(fig, out / PLOT, axes=axes[0])


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    suites = [s for s in SUITES if not args.only or s.name in args.only]
    print(f"camrl: {args.seeds} seeds, suites {[(s.name, getattr(args, s.env_arg)) for s in suites]}, budget "
          f"{'the configs' if args.steps is None else f'{args.steps:,}'} env steps, device {args.device}")
    if args.dry_run:
        return 0
    began, meta = script.start("camrl", argv, args.out, seeds=args.seeds, device=args.device,
                               episodes=args.episodes, overrides=args.overrides)
    results: dict[str, Any] = {"meta": meta, "suites": [vars(s) for s in suites], "runs": [], "throughput": {}}
    with tempfile.TemporaryDirectory(prefix="drl-camrl-") as tmp:
        for suite in suites:
            results["runs"] += script.run_grid(
                {"suite": [suite.name], "method": list(METHODS), "seed": list(range(args.seeds))},
                lambda suite, method, seed, spec=suite: run(spec, method, seed, args, Path(tmp)),
                "{suite} {method} seed {seed}", lambda r: f"return {_n(r['final'], 1)}",
                loops=("suite", "seed", "method"))
            results["throughput"][suite.name] = script.attempt(
                {}, f"{suite.name} throughput", lambda suite=suite: learner_throughput(suite, args),
                lambda r: ", ".join(f"{k} {_n(v)}" for k, v in r.items()))
    return script.finish(results, began, args.out, lambda runs: summarise(runs, [s.name for s in suites]),
                         write_report, write_plot)


if __name__ == "__main__":
    sys.exit(main())
