"""``report.md`` and the PNG plots, written from ``results.json``'s content only."""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.harness.analysis import finite
from benchmarks.harness.suites import SOLVE_THRESHOLD
from drl.runners.on_policy import EVAL_SEED_OFFSET

__all__ = ["write_report", "write_plots", "PLOTS", "number", "header_lines", "machine_line", "study_header",
           "configs_and_notes", "close_report", "write_lines", "pyplot", "one_plot", "save_figure", "seed_band",
           "mean_std", "wrapped_config_line"]

NONE = "_No row of this kind in this run._"
PLOTS = {"returns_vs_steps": "returns_vs_steps.png", "returns_vs_wall": "returns_vs_wall.png",
         "steps_per_second": "steps_per_second.png"}


def _n(x: Any, digits: int = 0) -> str:
    """Number for a table: thousands separators, '-' for missing."""
    if not finite(x):
        return "-"
    return f"{x:,.{digits}f}"


def _x(ratio: Any) -> str:
    return f"{ratio:.2f}x" if finite(ratio) else "-"


def _ms(stats: dict[str, Any], digits: int = 1) -> str:
    """mean ± std (min .. max) over seeds."""
    if not stats or stats.get("n", 0) == 0:
        return "-"
    if stats["n"] == 1:
        return _n(stats["mean"], digits)
    return f"{_n(stats['mean'], digits)} ± {_n(stats['std'], digits)} ({_n(stats['min'], digits)} .. " \
           f"{_n(stats['max'], digits)})"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return lines


# --- pieces of the single-study scripts' reports (pendulum_solve, masked_velocity, aacd, active_search) --
def number(x: Any, digits: int = 0) -> str:
    """Number with thousands separators, '-' for anything not a finite number."""
    return f"{x:,.{digits}f}" if isinstance(x, (int, float)) and math.isfinite(x) else "-"


def header_lines(title: str, meta: dict[str, Any]) -> list[str]:
    """The title and the "Generated ... by ..." line of a report."""
    return [f"# {title}", "", f"Generated {meta['date']} by `{meta['command']}`. Every number below comes from "
            "this run's `results.json`.", ""]


def machine_line(meta: dict[str, Any], software: tuple[str, ...] = ("torch",), extra: tuple[str, ...] = (
        "one torch thread",), gpu: bool = True, load: bool = True) -> str:
    """``Machine: CPU, cores[, GPU]; versions; extra...[; load average]; the whole benchmark took N s.``"""
    m, v = meta["machine"], meta["versions"]
    machine = f"{m['cpu']}, {m['usable_cores']} usable cores" + (
        f", GPU: {', '.join(m['gpu'] or []) or 'none'}" if gpu else "")
    parts = [machine, ", ".join(f"{name.replace('_', '-')} {v.get(name)}" for name in software), *extra]
    if load:
        parts.append(f"load average at start / end {meta['load_start']} / {meta['load_end']}")
    return "Machine: " + "; ".join(parts + [f"the whole benchmark took {number(meta.get('elapsed_s'))} s."])


def study_header(title: str, meta: dict[str, Any]) -> list[str]:
    """:func:`header_lines`, then the machine line of a study run on one torch thread on ``meta["device"]``."""
    return [*header_lines(title, meta), machine_line(meta, extra=("one torch thread", f"device {meta['device']}")), ""]


def _variant_config(run: dict[str, Any]) -> str:
    return f"- `{run['variant']}`: `{json.dumps(run['config'], default=str)}`"


def _failed(run: dict[str, Any]) -> str:
    return f"- {run['variant']} seed {run['seed']} failed: `{run['error']}`"


def configs_and_notes(runs: list[dict[str, Any]], key: str = "variant",
                      config_line: Callable[[dict], str] = _variant_config,
                      failed_line: Callable[[dict], str] = _failed) -> list[str]:
    """``## Configs`` (one line per ``run[key]``, from its first run with a config) and ``## Notes`` (the failed
    runs, or "- none")."""
    lines = ["## Configs", ""]
    seen = set()
    for r in runs:
        if "config" in r and r[key] not in seen:
            seen.add(r[key])
            lines.append(config_line(r))
    return lines + ["", "## Notes", ""] + ([failed_line(r) for r in runs if "error" in r] or ["- none"])


def write_lines(lines: list[str], out: Path) -> Path:
    """``out/report.md``: the lines, one each."""
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def close_report(lines: list[str], runs: list[dict[str, Any]], out: Path, image: tuple[str, str],
                 **tail: Any) -> Path:
    """``out/report.md``: ``lines``, the plot (``image``: alt text, file), then :func:`configs_and_notes`'s
    sections (``tail``: its keywords)."""
    alt, file = image
    return write_lines(lines + ["", f"![{alt}]({file})", ""] + configs_and_notes(runs, **tail), out)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def one_plot() -> tuple[Any, Any]:
    """``(figure, axes)``: one 8 x 4.5 in plot."""
    return pyplot().subplots(figsize=(8, 4.5))


def save_figure(fig: Any, path: Path, axes: Any = (), legend: int = 7) -> Path:
    """Each of ``axes`` gridded with a legend (font size ``legend``); tight layout, saved at 100 dpi, closed."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def wrapped_config_line(name: str, config: dict[str, Any]) -> str:
    """The report's line of one run's config with wrappers: ``- name: `file`, total_steps ..., wrappers `...```."""
    return (f"- {name}: `{config['file']}`, total_steps {config['total_steps']:,}, num_envs "
            f"{config['num_envs']}, eval_interval {config['eval_interval']:,}, wrappers `{config['wrappers']}`")


def seed_band(ax: Any, curves: list[list[dict[str, Any]]], key: str, color: str, label: str, **style: Any) -> None:
    """On ``ax``: the mean over seeds of ``curves`` (per seed a list of points ``{"step", key}``, all cut to the
    shortest) as a line labelled ``label``, and their min-max band."""
    import torch

    length = min(len(c) for c in curves)
    steps = [p["step"] for p in curves[0][:length]]
    values = torch.tensor([[p[key] for p in c[:length]] for c in curves])
    ax.plot(steps, values.mean(0).tolist(), color=color, label=label, **style)
    ax.fill_between(steps, values.min(0).values.tolist(), values.max(0).values.tolist(), color=color, alpha=0.15)


def mean_std(values: list[float | None]) -> dict[str, float | None]:
    """``{"mean", "std"}`` (population std) of the values that are not None; both None when there are none."""
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


def eval_curves_plot(results: dict[str, Any], path: Path, label: str, thresholds: dict[str, float],
                     eval_episodes: int) -> Path:
    """One panel per env of ``results["summary"]``: per variant (``summary[i][label]`` in the legend) the eval
    return vs env steps of its runs (``runs[j]["points"]``, equal budgets so equal evaluation steps), mean
    line and min-max band over seeds, and the env's finite threshold as a dashed line; saved to ``path``."""
    plt = pyplot()
    envs = list(dict.fromkeys(s["env"] for s in results["summary"]))
    fig, axes = plt.subplots(1, len(envs), figsize=(6 * len(envs), 4.2), squeeze=False)
    for ax, env_id in zip(axes[0], envs, strict=True):
        for i, s in enumerate(s for s in results["summary"] if s["env"] == env_id):
            curves = [r["points"] for r in results["runs"]
                      if r["env"] == env_id and r["variant"] == s["variant"] and "error" not in r and r["points"]]
            if not curves:
                continue
            seed_band(ax, curves, "eval_return", f"C{i}", f"{s[label]} ({len(curves)})", marker=".")
        if math.isfinite(thresholds.get(env_id, math.nan)):
            ax.axhline(thresholds[env_id], color="grey", linestyle="--", linewidth=1)
        ax.set_title(env_id, fontsize=10)
        ax.set_xlabel("env steps")
        ax.set_ylabel(f"eval return ({eval_episodes} episodes): mean, min-max over seeds")
    return save_figure(fig, path, axes=axes[0])


# --- hyperparameters ------------------------------------------------------------------------
def _drl_view(hp: dict[str, Any]) -> dict[str, Any]:
    algo, env = hp.get("algo") or {}, hp.get("env") or {}
    if hp.get("agent") != "ppo":  # an off-policy row: SB3's names first (the drl fields that carry them)
        mapping = hp.get("sb3_mapping") or {}
        mapped = {k: ", ".join(f"{field}={value}" for field, value in fields.items()) for k, fields in mapping.items()}
        unmatched = {k: "(no drl field)" for k in hp.get("sb3_unmatched") or []}
        contract = {k: f"(drl's default) {v}" for k, v in (hp.get("sb3_by_contract") or {}).items()}
        return {"total env steps": hp.get("total_steps"), "num_envs": env.get("num_envs"), **mapped, **unmatched,
                **contract,
                **{f"algo.{k}": v for k, v in algo.items()}, "device": hp.get("device"),
                "torch threads": hp.get("torch_threads")}
    lr = algo.get("learning_rate")
    return {
        "total env steps": hp.get("total_steps"), "num_envs": env.get("num_envs"),
        "steps per env per rollout": algo.get("num_steps"),
        "rollout batch": (algo.get("num_steps") or 0) * (env.get("num_envs") or 0),
        "minibatch size": algo.get("minibatch_size"), "epochs": algo.get("num_epochs"),
        "learning rate": f"{lr} (annealed linearly per update)" if algo.get("anneal_lr") else lr,
        "gamma": algo.get("gamma"), "GAE lambda": algo.get("gae_lambda"), "clip": algo.get("clip_coef"),
        "value clip": algo.get("clip_value"), "entropy coef": algo.get("ent_coef"), "value coef": algo.get("vf_coef"),
        "max grad norm": f"{algo.get('max_grad_norm')} (actor and critic each)" if algo.get("clip_grad_per_network")
        else algo.get("max_grad_norm"),
        "target KL": algo.get("target_kl"),
        "normalize advantages": algo.get("normalize_advantages"),
        "obs / reward normalization": f"{algo.get('normalize_obs')} / {algo.get('normalize_reward')}",
        "actor / critic": f"{algo.get('actor_hidden')} / {algo.get('critic_hidden')} {algo.get('activation')}, "
                          f"separate, {'PyTorch default' if algo.get('init') == 'default' else 'orthogonal'} init",
        "Adam eps": algo.get("adam_eps", 1e-5),
        "log std init": algo.get("log_std_init"), "device": hp.get("device"),
        "eval every (env steps)": hp.get("eval_interval") or "end only",
        "torch threads": hp.get("torch_threads"), "torch.compile": algo.get("compile", False),
    }


def _sb3_view(hp: dict[str, Any]) -> dict[str, Any]:
    if not hp.get("class", "").endswith("PPO('MlpPolicy')"):  # SAC / TD3: SB3's names, as drl's view lists them
        pk = hp.get("policy_kwargs") or {}
        view = {"total env steps": hp.get("total_timesteps"), "num_envs": hp.get("n_envs"),
                **{k: v for k, v in hp.items() if k not in ("policy_kwargs", "total_timesteps", "n_envs")},
                "net_arch": pk.get("net_arch"), "activation_fn": pk.get("activation_fn"),
                "n_critics": pk.get("n_critics")}
        if "train_freq" in hp and "gradient_steps" in hp:
            view["updates_per_step"] = f"gradient_steps {hp['gradient_steps']} / train_freq {hp['train_freq']}"
        if "action_noise" in hp:
            view["action_noise_std"] = hp["action_noise"]
        return view
    pk = hp.get("policy_kwargs") or {}
    arch = pk.get("net_arch") or {}
    norm = hp.get("VecNormalize")
    lr = hp.get("learning_rate")
    return {
        "total env steps": hp.get("total_timesteps"), "num_envs": hp.get("n_envs"),
        "steps per env per rollout": hp.get("n_steps"), "rollout batch": hp.get("n_steps", 0) * hp.get("n_envs", 0),
        "minibatch size": hp.get("batch_size"), "epochs": hp.get("n_epochs"), "learning rate": lr,
        "gamma": hp.get("gamma"), "GAE lambda": hp.get("gae_lambda"), "clip": hp.get("clip_range"),
        "value clip": hp.get("clip_range_vf"), "entropy coef": hp.get("ent_coef"), "value coef": hp.get("vf_coef"),
        "max grad norm": hp.get("max_grad_norm"), "target KL": hp.get("target_kl"),
        "normalize advantages": hp.get("normalize_advantage"),
        "obs / reward normalization": f"{bool(norm and norm['norm_obs'])} / {bool(norm and norm['norm_reward'])}"
                                      + (" (VecNormalize)" if norm else ""),
        "actor / critic": f"{arch.get('pi')} / {arch.get('vf')} {pk.get('activation_fn')}, separate, "
                          f"ortho_init={pk.get('ortho_init')}",
        "log std init": pk.get("log_std_init"), "device": hp.get("device"),
        "eval every (env steps)": hp.get("eval_interval") or "end only",
        "torch threads": 1, "vec env": hp.get("vec_env"),
    }


def _hyperparameter_tables(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for row in results["rows"]:
        first: dict[str, dict] = {}
        for run in results["runs"]:
            if run["row"] == row["name"] and "hyperparameters" in run and run["variant"] not in first:
                first[run["variant"]] = run
        if not first:
            continue
        views = {label: {"drl": _drl_view, "sb3": _sb3_view}.get(r["lib"], dict)(r["hyperparameters"])
                 for label, r in first.items()}
        keys: list[str] = []
        for view in views.values():
            keys += [k for k in view if k not in keys]
        lines += [f"### {row['title']} (`{row['name']}`)", ""]
        lines += _table(["parameter", *views], [[k, *(_cell(v.get(k)) for v in views.values())] for k in keys])
        lines.append("")
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return str(value).replace("|", "/")


# --- sections -------------------------------------------------------------------------------
def _setup(results: dict[str, Any]) -> list[str]:
    meta, m, v = results["meta"], results["meta"]["machine"], results["meta"]["versions"]
    lines = ["## Setup", ""]
    lines += _table(["machine", ""], [
        ["CPU", m["cpu"]], ["logical cores (usable)", f"{m['logical_cores']} ({m['usable_cores']})"],
        ["RAM", f"{m['ram_gib']} GiB"], ["GPU", ", ".join(m["gpu"]) if m["gpu"] else "none"],
        ["platform", m["platform"]],
        ["load average (1/5/15 min) at start / end", f"{meta.get('load_start')} / {meta.get('load_end')}"],
    ])
    lines.append("")
    lines += _table(["software", "version"], [[k, _cell(val)] for k, val in v.items()])
    lines += ["", f"Command: `{meta['command']}`  ", f"Date: {meta['date']}  ",
              f"Suite: `{results['suite']}` ({meta['suite_description']}); seeds per row: "
              + ", ".join(f"{r['name']}={r['seeds']}" for r in results["rows"]) + "  ",
              f"Wall-clock of the whole benchmark: {_n(meta.get('elapsed_s'))} s (estimated up front: "
              f"{_n(meta.get('estimate_s'))} s)", ""]
    lines += ["**How the timing is made fair.** " + meta["timing"], ""]
    return lines


def _throughput_section(comps: dict[str, Any]) -> list[str]:
    lines = ["## 1. Training throughput (env steps per second)", "",
             "End-to-end training steps/s = env steps / training seconds (rollouts + updates + each library's own "
             "logging; evaluation excluded). Ratio > 1: drl is faster.", ""]
    if not comps["throughput"]:
        return lines + [NONE, ""]
    rows = []
    for c in comps["throughput"]:
        if c["status"] != "ok":
            rows.append([c["title"], "-", "-", "-", c["status"]])
            continue
        for p in c["per_seed"]:
            rows.append([c["title"], f"seed {p['seed']}", _n(p["drl_sps"]), _n(p["sb3_sps"]), _x(p["ratio"])])
        rows.append([f"**{c['title']}**", "**median**", f"**{_n(c['drl_median_sps'])}**",
                     f"**{_n(c['sb3_median_sps'])}**", f"**{_x(c['median_ratio'])}**"])
    lines += _table(["row", "seed", "drl steps/s", "SB3 steps/s", "drl / SB3"], rows)
    return lines + [""]


def _return_section(comps: dict[str, Any], results: dict[str, Any]) -> list[str]:
    episodes = results["meta"]["final_eval_episodes"]
    lines = ["## 2. Return at equal env steps", "",
             "Same runs as section 1. *Training return*: mean return of the training episodes that finished in the "
             "last 10% of env steps (Monitor on the SB3 side, drl's episode tracker on the drl side). *Final eval*: "
             f"the trained policy, deterministic actions, {episodes} episodes in one gymnasium env, episode i reset "
             f"with seed `{EVAL_SEED_OFFSET} + seed + i`, identical code for both (not timed). Cells: mean ± std "
             "(min .. max) over seeds.", ""]
    if not comps["return"]:
        return lines + [NONE, ""]
    rows = []
    for c in comps["return"]:
        if c["status"] != "ok":
            rows.append([c["title"], "-", "-", "-", "-", "-", c["status"]])
            continue
        d, s = c["drl"], c["sb3"]
        rows.append([c["title"], _n(c["steps"]), str(len(d["seeds"])), _ms(d["train"]), _ms(s["train"]),
                     _ms(d["eval"]), _ms(s["eval"])])
    lines += _table(["row", "env steps", "seeds", "drl training return", "SB3 training return", "drl final eval",
                     "SB3 final eval"], rows)
    return lines + [""]


def _solve_section(comps: dict[str, Any]) -> list[str]:
    lines = ["## 3. Wall-clock to solve CartPole", ""]
    if not comps["cartpole_solve"]:
        return lines + [NONE, ""]
    for c in comps["cartpole_solve"]:
        lines += [f"Solved = first evaluation (deterministic, 10 episodes) with mean return >= {c['threshold']:g}, "
                  f"evaluated every {_n(c['eval_interval'])} env steps after an update; the clock is training time "
                  "only (evaluations excluded). SB3 and drl's runner run their own evaluation loops on their own "
                  "eval envs. Ratio = median SB3 time / median time of the row (> 1: faster than SB3); it is given "
                  "only when every seed of both solved.", ""]
        if c["status"] != "ok":
            lines += [f"Row status: {c['status']}", ""]
        rows = []
        for v in c["variants"]:
            if v["status"] != "ok":
                rows.append([v["label"], v["device"], "-", "-", "-", "-", "-", "-", v["status"]])
                continue
            per_seed = ", ".join(f"s{p['seed']}: {_n(p['train_s'], 2)} s @ {_n(p['step'])}" if p["solved"]
                                 else f"s{p['seed']}: not solved" for p in v["per_seed"])
            rows.append([v["label"], v["device"], _n(v["num_envs"]), _n(v["total_steps"]),
                         f"{v['solved']}/{v['seeds']}", _n(v["median_s"], 2), _n(v["median_step"]), per_seed,
                         _x(v["sb3_over_this"])])
        lines += _table(["run", "device", "num_envs", "step budget", "solved", "median time to solve (s)",
                         "median env steps", "per seed", "SB3 / this"], rows)
        lines.append("")
    return lines


def _hp_summary(hp: dict[str, Any]) -> str:
    """One line of an SB3 off-policy run's hyperparameters (its recorded arguments)."""
    pk = hp.get("policy_kwargs") or {}
    parts = [f"{hp.get('class', '?')}", f"net_arch {pk.get('net_arch')} {pk.get('activation_fn')}",
             f"{pk.get('n_critics')} critics", f"batch {hp.get('batch_size')}", f"lr {hp.get('learning_rate')}",
             f"buffer {_n(hp.get('buffer_size'))}", f"learning_starts {hp.get('learning_starts')}",
             f"train_freq {hp.get('train_freq')} / gradient_steps {hp.get('gradient_steps')}", f"tau {hp.get('tau')}",
             f"gamma {hp.get('gamma')}"]
    for key in ("ent_coef", "target_entropy", "policy_delay", "target_policy_noise", "target_noise_clip",
                "action_noise"):
        if key in hp:
            parts.append(f"{key} {hp[key]}")
    return ", ".join(parts)


def _floor_line(floor: dict[str, Any], comp: dict[str, Any]) -> str:
    if floor.get("status") != "ok":
        return f"- Floor of the SAC update: {floor.get('status', 'floor not measured')}."
    ms = ", ".join(f"{name} {value:.2f} ms" for name, value in floor["ms_per_update"].items())
    end_to_end = ""
    if finite(comp.get("drl_ms_per_step")) and finite(comp.get("sb3_ms_per_step")):
        end_to_end = (f"; end to end on this row (median, one update per env step): drl "
                      f"{comp['drl_ms_per_step']:.2f} ms, SB3 {comp['sb3_ms_per_step']:.2f} ms per env step")
    return (f"- Floor of the SAC update (`benchmarks.sac_floor.measure({floor['num_updates']})`: the same "
            f"forward/backward/optimiser math in a tight loop, no env, no RL loop around it), per update: {ms}"
            f"{end_to_end}.")


def _offpolicy_section(comps: dict[str, Any], results: dict[str, Any]) -> list[str]:
    episodes = results["meta"]["final_eval_episodes"]
    if not comps["off_policy"]:
        return ["## 4. Off-policy: SAC / TD3", "", NONE, ""]
    lines = ["## 4. Off-policy: SAC / TD3", "",
             "SB3's default hyperparameters on both sides (read from SB3's signatures and default policy; drl gets "
             "them mapped onto its config on top of drl's defaults, see Hyperparameters), one env, same process, "
             "seeds interleaved, timed as in Setup. TD3's exploration noise is not an SB3 default (SB3 has none): "
             "both sides get Gaussian noise of std 0.1 on actions scaled to [-1, 1]. Ratio > 1: drl is faster.", ""]
    summaries = {}
    for run in results["runs"]:
        if run["lib"] == "sb3" and "hyperparameters" in run and run["row"] not in summaries:
            summaries[run["row"]] = _hp_summary(run["hyperparameters"])
    lines += [f"- `{row}`: {summary}" for row, summary in summaries.items()]
    lines += ["", "### Throughput (env steps per second)", ""]
    rows = []
    for c in comps["off_policy"]:
        if c["status"] != "ok":
            rows.append([c["title"], "-", "-", "-", "-", c["status"]])
            continue
        t = c["throughput"]
        for p in t["per_seed"]:
            rows.append([c["title"], f"seed {p['seed']}", _n(p["drl_sps"]), _n(p["sb3_sps"]), _x(p["ratio"]), ""])
        target = "-" if c["target_ratio"] is None else f"{c['target_ratio']:g}x: {c['speed_verdict'] or '-'}"
        rows.append([f"**{c['title']}**", "**median**", f"**{_n(t['drl_median_sps'])}**",
                     f"**{_n(t['sb3_median_sps'])}**", f"**{_x(t['median_ratio'])}**", target])
    lines += _table(["row", "seed", "drl steps/s", "SB3 steps/s", "drl / SB3", "target"], rows)
    lines += ["", "### Return at equal env steps", "",
              "Training return and final eval as in section 2 (final eval: deterministic, "
              f"{episodes} episodes). *Not worse beyond seed noise*: drl's mean >= SB3's mean minus twice the "
              "standard error of the difference (sample std over seeds, Welch); it needs >= 2 seeds per side.", ""]
    rows = []
    for c in comps["off_policy"]:
        if c["status"] != "ok":
            continue
        r, ev, tr = c["returns"], c["eval_not_worse"], c["train_not_worse"]
        rows.append([c["title"], _n(r["steps"]), str(len(r["drl"]["seeds"])), _ms(r["drl"]["train"]),
                     _ms(r["sb3"]["train"]), tr["verdict"], _ms(r["drl"]["eval"]), _ms(r["sb3"]["eval"]),
                     f"{_n(ev['difference'], 1)} (± {_n(ev['margin'], 1)})" if ev["margin"] is not None
                     else _n(ev["difference"], 1), ev["verdict"]])
    lines += _table(["row", "env steps", "seeds", "drl training return", "SB3 training return",
                     "training: not worse?", "drl final eval", "SB3 final eval", "eval drl - SB3 (margin)",
                     "eval: not worse?"], rows or [["-"] * 10])
    sac = sorted((c for c in comps["off_policy"] if "floor" in c), key=lambda c: c["env_id"] != "HalfCheetah-v5")
    if sac:  # next to the SAC row it matters for (HalfCheetah-v5 when it is in the suite)
        lines += ["", "### Floor", "", _floor_line(sac[0]["floor"], sac[0])]
    return lines + [""]


PEER_NAMES = {"sb3": "SB3", "rslrl": "rsl_rl"}
BATCHED_NOTES = (
    "Same process, seeds interleaved, one torch thread, on the row's device (CPU unless it says cuda; the CUDA rows "
    "run only with --device cuda or auto on a GPU). Both libraries train PPO with the same values (see "
    "Hyperparameters) on the same drl torch-batched env object type; rsl_rl sees it through "
    "`benchmarks.harness.rslrl_side.RslRlVecEnv` (obs as a TensorDict group `policy`, `dones = terminated | "
    "truncated`, `extras[\"time_outs\"] = truncated & ~terminated`). *Clock*: drl as in Setup; rsl_rl from just "
    "before `OnPolicyRunner.learn()` to its return, its two checkpoint saves and the harness's per-iteration "
    "bookkeeping subtracted, its TensorBoard logging, episode buffers, console print (to a buffer) and per-step "
    "NaN check included; building the env and the runner (whose constructor does the first reset) excluded. "
    "*Time limits*: drl bootstraps a truncated step with V(final obs); rsl_rl adds gamma x V(s_t) of the "
    "pre-step obs to a timed-out step's reward (its own convention). *rsl_rl's fixed choices, set on drl's "
    "side*: the actor's and the critic's gradient norms clipped apart (`clip_grad_per_network: true`; drl's "
    "default clips their joint norm, as SB3 does), Adam's eps 1e-8 (`adam_eps`; drl's default 1e-5), PyTorch's "
    "default init (`init: default`; drl's default orthogonal). With drl's defaults on these unnormalised "
    "Pendulum returns the critic's gradient dominates the joint norm, the clip shrinks the actor's gradient to "
    "below Adam's eps and drl's final eval stays near -1,000 (rsl_rl: about -320). *Final eval*: "
    "{episodes} deterministic episodes, one per env of a "
    "fresh batched env reset with seed `{offset} + seed`, the same code for both sides (not timed). *Training "
    "return*: episodes finished in the last 10% of env steps (n/a when none finished, e.g. HalfCheetah's "
    "1000-step episodes in a short run). drl/CartPole-v0 has no row: rsl_rl (5.5.1) has no discrete action "
    "distribution. Ratio > 1: drl is faster."
)


def _batched_section(comps: dict[str, Any], results: dict[str, Any]) -> list[str]:
    title = "## 5. Batched envs: drl vs rsl_rl (PPO, same hyperparameters)"
    if not comps.get("batched"):
        return [title, "", NONE, ""]
    episodes = results["meta"]["final_eval_episodes"]
    lines = [title, "", BATCHED_NOTES.format(episodes=episodes, offset=EVAL_SEED_OFFSET), "",
             "### Throughput (env steps per second)", ""]
    rows, returns = [], []
    for c in comps["batched"]:
        peer = PEER_NAMES.get(c["peer"], c["peer"])
        if c["status"] != "ok":
            rows.append([c["title"], "-", "-", "-", "-", c["status"]])
            continue
        for p in c["per_seed"]:
            rows.append([c["title"], f"seed {p['seed']}", _n(p["drl_sps"]), f"{_n(p['peer_sps'])} ({peer})",
                         _x(p["ratio"]), ""])
        target = "-" if c["target_ratio"] is None else f"{c['target_ratio']:g}x: {c['speed_verdict'] or '-'}"
        rows.append([f"**{c['title']}**", "**median**", f"**{_n(c['drl_median_sps'])}**",
                     f"**{_n(c['peer_median_sps'])}**", f"**{_x(c['median_ratio'])}**", target])
        ev, tr = c["eval_not_worse"], c["train_not_worse"]
        returns.append([c["title"], _n(c["steps"]), str(len(c["drl"]["seeds"])), _ms(c["drl"]["train"]),
                        _ms(c["peer_returns"]["train"]), tr["verdict"], _ms(c["drl"]["eval"]),
                        _ms(c["peer_returns"]["eval"]),
                        f"{_n(ev['difference'], 1)} (± {_n(ev['margin'], 1)})" if ev["margin"] is not None
                        else _n(ev["difference"], 1), ev["verdict"]])
    lines += _table(["row", "seed", "drl steps/s", "peer steps/s", "drl / peer", "target"], rows)
    lines += ["", "### Return at equal env steps", "",
              "*Not worse beyond seed noise*: as in section 4 (drl's mean >= the peer's minus twice the standard "
              "error of the difference; needs >= 2 seeds per side).", ""]
    lines += _table(["row", "env steps", "seeds", "drl training return", "peer training return",
                     "training: not worse?", "drl final eval", "peer final eval", "eval drl - peer (margin)",
                     "eval: not worse?"], returns or [["-"] * 10])
    return lines + [""]


def write_report(results: dict[str, Any], out: Path) -> Path:
    comps = results["comparisons"]
    libs = dict.fromkeys(v["lib"] for row in results["rows"] for v in row["variants"] if v["lib"] != "drl")
    peers = " and ".join({"sb3": "Stable-Baselines3"}.get(lib, PEER_NAMES.get(lib, lib)) for lib in libs)
    lines = header_lines(f"drl vs {peers or 'Stable-Baselines3'}: `{results['suite']}` suite", results["meta"])
    lines += _setup(results)
    only_batched = bool(comps.get("batched")) and not any(comps.get(k) for k in ("throughput", "return",
                                                                                 "cartpole_solve", "off_policy"))
    if not only_batched:  # a suite of batched rows only (rslrl) leaves out the empty SB3 sections
        lines += _throughput_section(comps)
        lines += _return_section(comps, results)
        lines += _solve_section(comps)
        lines += _offpolicy_section(comps, results)
    if comps.get("batched"):
        lines += _batched_section(comps, results)
    lines += ["## Plots", "", "Lines: mean over seeds; bands: min .. max over seeds.", ""]
    lines += [f"![{name}]({file})" for name, file in PLOTS.items()] + [""]
    lines += ["## Hyperparameters", "", "Per row, from the first seed's run (the other seeds differ only in the "
              "seed). drl's values are its resolved config; SB3's are the arguments it was given.", ""]
    lines += _hyperparameter_tables(results)
    notes = results["meta"].get("notes") or []
    errors = [r for r in results["runs"] if "error" in r]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in notes] or ["- none"]
    lines += [f"- run failed: {r['row']} / {r['variant']} / seed {r['seed']}: `{r['error']}`" for r in errors]
    return write_lines(lines, out)


# --- plots ----------------------------------------------------------------------------------
def _aggregate(runs: list[dict], x_key: str, y_key: str) -> tuple[np.ndarray, ...]:
    """Mean / min / max of ``y_key`` over seeds at each logged step; x averaged over seeds."""
    by_step: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        c = run["curve"]
        for step, x, y in zip(c["step"], c[x_key], c[y_key], strict=True):
            if finite(y) and finite(x):
                by_step[step].append((x, y))
    steps = sorted(by_step)
    xs = np.array([np.mean([p[0] for p in by_step[s]]) for s in steps])
    ys = [np.array([p[1] for p in by_step[s]]) for s in steps]
    return (xs, np.array([y.mean() for y in ys]), np.array([y.min() for y in ys]), np.array([y.max() for y in ys]))


def _plotted_rows(results: dict[str, Any]) -> list[dict]:
    ran = {run["row"] for run in results["runs"] if "error" not in run}
    return [r for r in results["rows"] if r["name"] in ran]


def _colors(rows: list[dict]) -> dict[str, str]:
    """One colour per variant label: SB3 always orange, drl variants the other colours in order."""
    colors: dict[str, str] = {}
    palette = iter(["C0", "C2", "C4", "C5", "C6", "C7", "C8", "C9", "C3"])
    for row in rows:
        for v in row["variants"]:
            if v["label"] not in colors:
                colors[v["label"]] = "C1" if v["lib"] == "sb3" else next(palette, "C0")
    # a drl variant on the gymnasium env shares the plain "drl" colour
    for label in colors:
        if label.startswith("drl (") and "drl/" not in label and "drl" in colors:
            colors[label] = colors["drl"]
    return colors


def _curve_plot(rows: list[dict], runs: list[dict], colors: dict[str, str], x_key: str, xlabel: str,
                path: Path) -> Path:
    import matplotlib.pyplot as plt

    cols = max(1, min(3, len(rows)))
    nrows = max(1, math.ceil(len(rows) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(5.5 * cols, 3.8 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows, strict=False):
        solve = row["kind"] == "solve"  # the solve row shows what it is judged on: the evaluation return
        y_key = "eval_return" if solve else "return"
        for v in row["variants"]:
            vr = [r for r in runs if r["row"] == row["name"] and r["variant"] == v["label"]]
            xs, mean, lo, hi = _aggregate(vr, x_key, y_key) if vr else (np.array([]),) * 4
            if len(xs):
                ax.plot(xs, mean, color=colors[v["label"]], marker="." if solve else None,
                        label=f"{v['label']} ({len(vr)} seed{'s' if len(vr) > 1 else ''})")
                ax.fill_between(xs, lo, hi, color=colors[v["label"]], alpha=0.2)
        if solve:
            ax.axhline(SOLVE_THRESHOLD, color="grey", linestyle="--", linewidth=1,
                       label=f"solved ({SOLVE_THRESHOLD:g})")
        ax.set_title(row["title"], fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("evaluation return (deterministic)" if solve else "training episode return")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(rows):]:
        ax.axis("off")
    return save_figure(fig, path)


def _sps_plot(rows: list[dict], runs: list[dict], colors: dict[str, str], path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 * len(rows) + 2), 4.4))
    in_legend: set[str] = set()
    for i, row in enumerate(rows):
        present = [v for v in row["variants"] if any(r["row"] == row["name"] and r["variant"] == v["label"]
                                                     for r in runs)]
        width = 0.8 / max(1, len(present))
        for j, v in enumerate(present):
            sps = [r["sps"] for r in runs
                   if r["row"] == row["name"] and r["variant"] == v["label"] and finite(r["sps"])]
            if not sps:
                continue
            x = i + (j - (len(present) - 1) / 2) * width
            median = float(np.median(sps))
            ax.bar(x, median, width * 0.95, color=colors[v["label"]],
                   label=None if v["label"] in in_legend else v["label"])
            in_legend.add(v["label"])
            ax.scatter([x] * len(sps), sps, color="black", s=8, zorder=3)
            ax.annotate(f"{median:,.0f}", (x, median), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), [r["title"] for r in rows], fontsize=8)
    ax.set_ylabel("training env steps / s (median; dots: seeds)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def write_plots(results: dict[str, Any], out: Path) -> list[Path]:
    """``returns_vs_steps.png``, ``returns_vs_wall.png`` and ``steps_per_second.png`` in ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    rows = _plotted_rows(results)
    runs = [r for r in results["runs"] if "error" not in r]
    colors = _colors(rows)
    return [
        _curve_plot(rows, runs, colors, "step", "env steps", out / PLOTS["returns_vs_steps"]),
        _curve_plot(rows, runs, colors, "train_s", "training wall-clock (s, evaluation excluded)",
                    out / PLOTS["returns_vs_wall"]),
        _sps_plot(rows, runs, colors, out / PLOTS["steps_per_second"]),
    ]
