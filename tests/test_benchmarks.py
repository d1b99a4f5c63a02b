"""The drl vs Stable-Baselines3 benchmark harness runs end to end and writes a complete report.

Runs ``python -m benchmarks.run --suite tiny`` (seconds) into a temporary folder and checks the
structure of ``results.json``, ``report.md`` and the plots. Speed is never asserted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("mujoco")

from benchmarks.harness.analysis import final_train_return  # noqa: E402
from benchmarks.harness.report import PLOTS  # noqa: E402
from benchmarks.harness.sides import AnnealedLR  # noqa: E402
from benchmarks.run import NOT_YET, main  # noqa: E402
from drl.registry import AGENTS  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SECTIONS = ["## Setup", "## 1. Training throughput", "## 2. Return at equal env steps",
            "## 3. Wall-clock to solve CartPole", "## 4. Off-policy: SAC / TD3", "## Plots", "## Hyperparameters",
            "## Notes"]
TABLE_HEADERS = [
    "| row | seed | drl steps/s | SB3 steps/s | drl / SB3 |",
    "| row | env steps | seeds | drl training return | SB3 training return | drl final eval | SB3 final eval |",
    "| run | device | num_envs | step budget | solved | median time to solve (s) | median env steps | per seed | "
    "SB3 / this |",
    "| agent | env | status | drl steps/s (median) | SB3 steps/s (median) | drl / SB3 | drl final eval | "
    "SB3 final eval |",
    "| parameter | drl | SB3 |",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    assert main(["--suite", "tiny", "--device", "cpu", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def results(tiny) -> dict:
    return json.loads((tiny / "results.json").read_text())


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_results_json_meta(results):
    assert results["suite"] == "tiny"
    meta = results["meta"]
    for key in ("command", "date", "machine", "versions", "timing", "torch_threads", "estimate_s", "elapsed_s",
                "final_eval_episodes"):
        assert key in meta, key
    assert meta["command"].startswith("python -m benchmarks.run --suite tiny")
    assert meta["torch_threads"] == 1
    for key in ("cpu", "logical_cores", "ram_gib", "gpu"):
        assert key in meta["machine"], key
    for key in ("python", "torch", "gymnasium", "mujoco", "stable_baselines3", "drl"):
        assert meta["versions"][key], key


def test_every_run_finished_with_aligned_curves(results):
    runs = results["runs"]
    assert runs and all("error" not in r for r in runs), [r.get("error") for r in runs]
    for run in runs:
        curve = run["curve"]
        assert len({len(v) for v in curve.values()}) == 1 and curve["step"], run["variant"]
        assert curve["step"][-1] == run["steps"] >= run["total_steps"]
        assert _positive(run["sps"]) and _positive(run["train_s"])
        assert run["final_eval"]["episodes"] == results["meta"]["final_eval_episodes"]
    # the two sides of a row are recorded at the same env steps
    for row in ("halfcheetah-1env", "halfcheetah-8env", "halfcheetah-1env-norm"):
        steps = {r["lib"]: r["curve"]["step"] for r in runs if r["row"] == row}
        assert steps["drl"] == steps["sb3"]


def test_sb3_gets_the_same_hyperparameters(results):
    for run_drl in (r for r in results["runs"] if r["lib"] == "drl" and r["row"].startswith("halfcheetah")):
        sb3 = next(r for r in results["runs"] if r["row"] == run_drl["row"] and r["lib"] == "sb3")
        d, s = run_drl["hyperparameters"], sb3["hyperparameters"]
        a = d["algo"]
        assert (a["num_steps"], a["minibatch_size"], a["num_epochs"]) == (s["n_steps"], s["batch_size"], s["n_epochs"])
        assert (a["learning_rate"], a["gamma"], a["gae_lambda"], a["clip_coef"]) == (
            s["learning_rate"], s["gamma"], s["gae_lambda"], s["clip_range"])
        assert (a["ent_coef"], a["vf_coef"], a["max_grad_norm"]) == (s["ent_coef"], s["vf_coef"], s["max_grad_norm"])
        assert d["env"]["num_envs"] == s["n_envs"] and d["total_steps"] == s["total_timesteps"]
        assert s["policy_kwargs"]["net_arch"] == {"pi": [64, 64], "vf": [64, 64]}
        assert s["policy_kwargs"]["activation_fn"] == "Tanh" and a["activation"] == "tanh"
        assert d["torch_threads"] == 1
        if run_drl["row"].endswith("-norm"):  # both sides normalise: drl's normalisers, SB3's VecNormalize
            assert a["normalize_obs"] and a["normalize_reward"]
            assert s["VecNormalize"] == {"norm_obs": True, "norm_reward": True, "gamma": a["gamma"], "clip_obs": 10.0,
                                         "clip_reward": 10.0, "epsilon": 1e-8}
        else:
            assert not a["normalize_obs"] and not a["normalize_reward"] and s["VecNormalize"] is None


def test_normalised_row_gives_sb3_vecnormalize_with_its_defaults():
    # "everything else SB3's defaults": each VecNormalize argument the harness passes is VecNormalize's own
    # default, and drl's normalisers are built with the same clips and epsilon
    import inspect

    from stable_baselines3.common.vec_env import VecNormalize

    from benchmarks.harness.sides import drl_config, sb3_ppo_kwargs
    from benchmarks.harness.suites import SUITES
    from drl.nn import RewardScaler, RunningMeanStd

    defaults = {k: p.default for k, p in inspect.signature(VecNormalize.__init__).parameters.items()}
    for suite in SUITES.values():
        (row,) = [r for r in suite.rows if r.name == "halfcheetah-1env-norm"]
        cfg = drl_config(row, row.variants[0], seed=0)
        assert cfg.env.num_envs == 1 and cfg.algo.normalize_obs and cfg.algo.normalize_reward
        _, normalize = sb3_ppo_kwargs(cfg)
        assert normalize == {k: defaults[k] for k in normalize}
        assert set(normalize) == {"norm_obs", "norm_reward", "gamma", "clip_obs", "clip_reward", "epsilon"}
        obs_stats, scaler = RunningMeanStd((3,)), RewardScaler(1, cfg.algo.gamma)
        assert (obs_stats.clip, obs_stats.epsilon, scaler.clip, scaler.epsilon) == (
            defaults["clip_obs"], defaults["epsilon"], defaults["clip_reward"], defaults["epsilon"])


def test_comparisons_cover_every_row(results):
    comps = results["comparisons"]
    assert set(comps) == {"throughput", "return", "cartpole_solve", "off_policy"}

    throughput = {c["row"]: c for c in comps["throughput"]}
    assert set(throughput) == {"halfcheetah-1env", "halfcheetah-8env", "halfcheetah-1env-norm"}
    for c in throughput.values():
        assert c["num_envs"] in (1, 8) and len(c["per_seed"]) == 1
        p = c["per_seed"][0]
        assert _positive(p["drl_sps"]) and _positive(p["sb3_sps"]) and _positive(p["ratio"])
        assert c["median_ratio"] == pytest.approx(p["drl_sps"] / p["sb3_sps"])

    returns = {c["row"]: c for c in comps["return"]}
    assert set(returns) == set(throughput)
    for c in returns.values():
        for side in ("drl", "sb3"):
            assert c[side]["eval"]["n"] == 1 and math.isfinite(c[side]["eval"]["mean"])

    (solve,) = comps["cartpole_solve"]
    labels = {v["label"]: v for v in solve["variants"]}
    assert set(labels) == {"drl (CartPole-v1)", "SB3 (CartPole-v1)", "drl (drl/CartPole-v0, cpu)",
                           "drl (drl/CartPole-v0, cuda)"}
    assert labels["drl (drl/CartPole-v0, cuda)"]["status"] == "skipped: --device cpu"
    for label in ("drl (CartPole-v1)", "SB3 (CartPole-v1)", "drl (drl/CartPole-v0, cpu)"):
        assert labels[label]["seeds"] == 1 and labels[label]["status"] == "ok"
    assert solve["reference"] == "SB3 (CartPole-v1)" and solve["threshold"] == 475

    offpolicy = {c["agent"]: c for c in comps["off_policy"]}
    assert set(offpolicy) == {"sac", "td3"}
    for agent, c in offpolicy.items():
        assert c["status"] == ("ok" if agent in AGENTS else NOT_YET)


def test_report_sections_tables_and_numbers(tiny, results):
    report = (tiny / "report.md").read_text()
    positions = [report.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    for header in TABLE_HEADERS:
        assert header in report, header
    assert results["meta"]["command"] in report and results["meta"]["machine"]["cpu"] in report
    assert "torch.set_num_threads(1)" in report
    for c in results["comparisons"]["throughput"]:  # the table's numbers are the run's
        p = c["per_seed"][0]
        assert f"{p['drl_sps']:,.0f} | {p['sb3_sps']:,.0f} | {p['ratio']:.2f}x" in report
    if "sac" not in AGENTS:
        assert NOT_YET in report


def test_plots_are_pngs(tiny):
    report = (tiny / "report.md").read_text()
    for file in PLOTS.values():
        data = (tiny / file).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, file
        assert f"]({file})" in report


def test_annealed_lr_matches_drl_schedule():
    """SB3 calls the schedule with progress_remaining after each rollout; drl uses lr * (1 - k/K)."""
    total, batch = 10_000, 1024  # K = 10 updates, the last one partial
    schedule = AnnealedLR(1e-3, total, batch)
    for k in range(10):
        progress_remaining = 1.0 - (k + 1) * batch / total
        assert schedule(progress_remaining) == pytest.approx(1e-3 * (1 - k / 10))
    assert schedule(1.0) == pytest.approx(1e-3)


def test_final_train_return_weights_by_episodes():
    curve = {"step": [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000],
             "return": [0.0] * 8 + [float("nan"), 10.0], "episodes": [1] * 8 + [0, 2]}
    assert final_train_return(curve) == 10.0
    curve["episodes"][-1] = 0
    curve["return"][-1] = float("nan")
    assert final_train_return(curve) == 0.0  # the window grows back to the last iteration with an episode


def test_bad_row_name_is_one_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--suite", "tiny", "--only", "nope"])
    assert exit_info.value.code == 2
    assert "unknown row 'nope' in suite 'tiny'; valid rows: ['halfcheetah-1env'" in capsys.readouterr().err


def test_dry_run_prints_plan_and_estimate(capsys, tmp_path):
    assert main(["--suite", "full", "--dry-run", "--device", "cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "estimated time" in out and "hopper-1env" in out and "cartpole-solve" in out
    assert not (tmp_path / "results.json").exists()


def test_normalizer_cost_prints_one_row_per_num_envs(capsys):
    from benchmarks.normalizer_cost import main as normalizer_cost

    assert normalizer_cost(["--num-envs", "1", "3", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split("|") for line in lines if line.strip()[:1].isdigit()]
    assert [int(row[0]) for row in rows] == [1, 3] and all(len(row) == 5 for row in rows)
