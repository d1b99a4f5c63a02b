"""The drl vs Stable-Baselines3 benchmark harness runs end to end and writes a complete report.

Runs ``python -m benchmarks.run --suite tiny`` (seconds) into a temporary folder and checks the
structure of ``results.json``, ``report.md`` and the plots. Speed is never asserted.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytest.importorskip("stable_baselines3")
pytest.importorskip("mujoco")

from benchmarks.harness.analysis import final_train_return  # noqa: E402
from benchmarks.harness.report import PLOTS  # noqa: E402
from benchmarks.harness.sides import AnnealedLR  # noqa: E402
from benchmarks.run import main, no_agent  # noqa: E402
from drl.registry import AGENTS  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OFFPOLICY_ROWS = ("sac-halfcheetah", "td3-halfcheetah", "sac-pendulum", "td3-pendulum")
SECTIONS = ["## Setup", "## 1. Training throughput", "## 2. Return at equal env steps",
            "## 3. Wall-clock to solve CartPole", "## 4. Off-policy: SAC / TD3", "## Plots", "## Hyperparameters",
            "## Notes"]
TABLE_HEADERS = [
    "| row | seed | drl steps/s | SB3 steps/s | drl / SB3 |",
    "| row | env steps | seeds | drl training return | SB3 training return | drl final eval | SB3 final eval |",
    "| run | device | num_envs | step budget | solved | median time to solve (s) | median env steps | per seed | "
    "SB3 / this |",
    "| row | seed | drl steps/s | SB3 steps/s | drl / SB3 | target |",
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
    for row in ("halfcheetah-1env", "halfcheetah-8env", "halfcheetah-1env-norm", *OFFPOLICY_ROWS):
        steps = {r["lib"]: r["curve"]["step"] for r in runs if r["row"] == row}
        assert steps.get("drl") == steps.get("sb3")


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
    for suite in (SUITES[name] for name in ("tiny", "quick", "full")):  # the suites with PPO rows
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
    assert set(comps) == {"throughput", "return", "cartpole_solve", "off_policy", "batched"}
    assert comps["batched"] == []  # the drl vs rsl_rl rows live in the rslrl suites (tests/test_rslrl_side.py)

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

    offpolicy = {c["row"]: c for c in comps["off_policy"]}
    assert set(offpolicy) == set(OFFPOLICY_ROWS)
    for c in offpolicy.values():
        assert c["status"] == ("ok" if c["agent"] in AGENTS else no_agent(c["agent"]))
        if c["status"] == "ok":
            assert len(c["throughput"]["per_seed"]) == 1 and _positive(c["throughput"]["median_ratio"])


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
        assert no_agent("sac") in report


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
    assert [int(row[0]) for row in rows] == [1, 3] and all(len(row) == 6 for row in rows)
    off, on = (int(n) for n in rows[0][4].split("/"))
    assert off > 0 and on == off  # numba on the CPU: the normalisers add no torch op to a step


# --- SAC / TD3 rows (issue 9) ---------------------------------------------------------------
@dataclass
class FakeOffPolicyConfig:
    """Fields named as the harness's map expects, none at SB3's default, so every mapped value shows."""

    learning_rate: float = 1.0
    buffer_size: int = 7
    learning_starts: int = 7
    batch_size: int = 7
    tau: float = 0.5
    gamma: float = 0.5
    updates_per_step: float = 4.0
    n_step: int = 3
    actor_hidden: list[int] = field(default_factory=lambda: [7])
    critic_hidden: list[int] = field(default_factory=lambda: [7])
    activation: str = "tanh"
    num_critics: int = 5
    init_temperature: float = 0.5
    policy_delay: int = 7
    target_policy_noise: float = 0.0
    target_noise_clip: float = 0.0
    exploration_noise: float = 0.0
    num_steps: int = 7
    save_replay: bool = True

    def validate(self, prefix: str, cfg) -> None:
        pass


@pytest.fixture
def fake_offpolicy_agents(monkeypatch):
    """'sac' and 'td3' in drl's registry with :class:`FakeOffPolicyConfig` (config only: nothing trains)."""
    from drl.registry import AgentSpec

    for agent in ("sac", "td3"):
        monkeypatch.setitem(AGENTS, agent, AgentSpec(object, FakeOffPolicyConfig, object, "fake"))


def _quick_row(name: str):
    from benchmarks.harness.suites import SUITES

    return next(r for r in SUITES["quick"].rows if r.name == name)


def test_every_suite_has_the_four_offpolicy_rows_with_sb3_defaults():
    from benchmarks.harness.suites import AMP_LABEL, OFFPOLICY_TARGET_RATIO, SUITES

    for suite in SUITES.values():
        if all(r.kind == "batched" for r in suite.rows):  # the drl vs rsl_rl suites (tests/test_rslrl_side.py)
            continue
        rows = {r.name: r for r in suite.rows if r.kind == "offpolicy"}
        assert tuple(rows) == OFFPOLICY_ROWS, suite.name
        for name, row in rows.items():
            assert row.agent == name.split("-")[0] and row.num_envs == 1 and row.hparams == "sb3-defaults"
            assert row.env_id == ("HalfCheetah-v5" if "halfcheetah" in name else "Pendulum-v1")
            assert row.target_ratio == (OFFPOLICY_TARGET_RATIO if "halfcheetah" in name else None)
            assert row.total_steps % row.log_every == 0
            if name == "td3-halfcheetah":  # a second drl side: algo.amp (bfloat16), not drl's default
                assert [(v.label, v.lib) for v in row.variants] == [("drl", "drl"), (AMP_LABEL, "drl"), ("SB3", "sb3")]
                assert row.variants[1].overrides == {"algo": {"amp": True}} and not row.variants[0].overrides
            else:
                assert [v.lib for v in row.variants] == ["drl", "sb3"]
            assert row.seeds == (1 if suite.name == "tiny" else 3)
    assert OFFPOLICY_TARGET_RATIO == 1.5


def test_sb3_offpolicy_defaults_are_sb3s_own():
    from torch import nn

    from benchmarks.harness.suites import sb3_offpolicy_defaults

    sac, td3 = sb3_offpolicy_defaults("sac"), sb3_offpolicy_defaults("td3")
    for hp in (sac, td3):
        assert (hp["batch_size"], hp["buffer_size"], hp["learning_starts"]) == (256, 1_000_000, 100)
        assert (hp["train_freq"], hp["gradient_steps"], hp["tau"], hp["gamma"]) == (1, 1, 0.005, 0.99)
        assert hp["activation_fn"] is nn.ReLU and hp["n_critics"] == 2
    assert sac["net_arch"] == [256, 256] and sac["learning_rate"] == 3e-4 and sac["ent_coef"] == "auto"
    assert td3["net_arch"] == [400, 300] and td3["learning_rate"] == 1e-3 and td3["policy_delay"] == 2
    assert (td3["target_policy_noise"], td3["target_noise_clip"], td3["action_noise_std"]) == (0.2, 0.5, 0.1)
    assert "action_noise_std" not in sac


def test_drl_side_gets_sb3_defaults_mapped_onto_its_fields(fake_offpolicy_agents):
    from benchmarks.harness.sides import drl_config, drl_offpolicy_overrides
    from benchmarks.harness.suites import sb3_offpolicy_defaults

    for name, hidden, lr in (("sac-halfcheetah", [256, 256], 3e-4), ("td3-pendulum", [400, 300], 1e-3)):
        row = _quick_row(name)
        cfg = drl_config(row, row.variants[0], seed=2)
        a = cfg.algo
        assert (cfg.agent, cfg.env.id, cfg.env.num_envs, cfg.total_steps, cfg.seed) == (
            row.agent, row.env_id, 1, 5_000, 2)
        assert (cfg.torch_threads, cfg.checkpoint_interval, cfg.eval_interval, cfg.progress) == (1, 0, 0, False)
        assert (a.learning_rate, a.buffer_size, a.learning_starts, a.batch_size) == (lr, 1_000_000, 100, 256)
        assert (a.tau, a.gamma, a.updates_per_step, a.n_step) == (0.005, 0.99, 1.0, 1)
        assert (a.actor_hidden, a.critic_hidden, a.activation, a.num_critics) == (hidden, hidden, "relu", 2)
        assert (a.num_steps, a.save_replay) == (1_000, False)  # one logged row per 1,000 env steps, like SB3's
        if row.agent == "sac":
            assert a.init_temperature == 1.0 and a.policy_delay == 7  # 'auto' starts at 1.0; TD3's keys untouched
        else:
            assert (a.policy_delay, a.target_policy_noise, a.target_noise_clip, a.exploration_noise) == (
                2, 0.2, 0.5, 0.1)
            assert a.init_temperature == 0.5
        _, mapping, unmatched = drl_offpolicy_overrides(row.agent, sb3_offpolicy_defaults(row.agent))
        assert unmatched == [] and mapping["net_arch"] == {"actor_hidden": hidden, "critic_hidden": hidden}


def test_an_sb3_hyperparameter_without_a_drl_field_is_reported(monkeypatch):
    from benchmarks.harness.sides import drl_offpolicy_overrides
    from benchmarks.harness.suites import sb3_offpolicy_defaults
    from drl.registry import AgentSpec

    @dataclass
    class NoTau:
        learning_rate: float = 0.0
        gamma: float = 0.0

    monkeypatch.setitem(AGENTS, "sac", AgentSpec(object, NoTau, object, "fake"))
    overrides, _, unmatched = drl_offpolicy_overrides("sac", sb3_offpolicy_defaults("sac"))
    assert overrides == {"learning_rate": 3e-4, "gamma": 0.99}
    assert "tau" in unmatched and "batch_size" in unmatched and "target_entropy" not in unmatched  # by contract


@pytest.mark.skipif("sac" not in AGENTS or "td3" not in AGENTS, reason="drl has no SAC/TD3 agent yet")
def test_real_offpolicy_configs_carry_every_sb3_default():
    from benchmarks.harness.sides import drl_offpolicy_overrides
    from benchmarks.harness.suites import sb3_offpolicy_defaults

    for agent in ("sac", "td3"):  # a name the map does not know: fix OFFPOLICY_FIELDS in harness/sides.py
        assert drl_offpolicy_overrides(agent, sb3_offpolicy_defaults(agent))[2] == [], agent


def test_dry_run_lists_the_offpolicy_rows(capsys, tmp_path, monkeypatch):
    assert main(["--suite", "quick", "--dry-run", "--device", "cpu", "--out", str(tmp_path)]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    for name in OFFPOLICY_ROWS:
        agent = name.split("-")[0]
        assert "seeds=3" in lines[name] and lines[name].rstrip().endswith(
            "ok" if agent in AGENTS else no_agent(agent)), lines[name]
    from drl.registry import AgentSpec

    for agent in ("sac", "td3"):  # registered: the rows are planned (3 seeds x 2 sides each; td3-halfcheetah 3 sides)
        monkeypatch.setitem(AGENTS, agent, AgentSpec(object, FakeOffPolicyConfig, object, "fake"))
    assert main(["--suite", "quick", "--dry-run", "--device", "cpu", "--only", *OFFPOLICY_ROWS]) == 0
    out = capsys.readouterr().out
    assert "27 training runs" in out and all(f"{name}" in out for name in OFFPOLICY_ROWS)
    assert not (tmp_path / "results.json").exists()


@pytest.fixture(scope="module")
def sb3_sac_run() -> dict:
    from benchmarks.harness.sides import run_sb3
    from benchmarks.harness.suites import SUITES

    row = next(r for r in SUITES["tiny"].rows if r.name == "sac-pendulum")  # 300 steps, a row every 100
    return run_sb3(row, row.variants[1], seed=0, eval_episodes=2)


def test_sb3_sac_side_runs_a_tiny_budget_and_records_what_the_report_needs(sb3_sac_run):
    run = sb3_sac_run
    assert (run["row"], run["lib"], run["env_id"], run["num_envs"], run["total_steps"]) == (
        "sac-pendulum", "sb3", "Pendulum-v1", 1, 300)
    curve = run["curve"]
    assert curve["step"] == [100, 200, 300] and len({len(v) for v in curve.values()}) == 1
    assert curve["train_s"] == sorted(curve["train_s"]) and _positive(run["train_s"])
    assert run["steps"] == 300 and run["sps"] == pytest.approx(300 / run["train_s"])
    assert curve["episodes"] == [0, 1, 0] and math.isfinite(curve["return"][1])  # Pendulum: 200-step episodes
    assert run["final_eval"]["episodes"] == 2 and math.isfinite(run["final_eval"]["mean"])
    hp = run["hyperparameters"]
    assert hp["class"] == "stable_baselines3.SAC('MlpPolicy')" and hp["total_timesteps"] == 300
    assert (hp["batch_size"], hp["learning_starts"], hp["train_freq"], hp["gradient_steps"]) == (256, 100, 1, 1)
    assert (hp["learning_rate"], hp["ent_coef"], hp["target_entropy"]) == (3e-4, "auto", "auto")
    pk = hp["policy_kwargs"]
    assert (pk["net_arch"], pk["activation_fn"], pk["n_critics"]) == ([256, 256], "ReLU", 2)


def _results_with(runs: list[dict], rows: list[dict], floor: dict | None) -> dict:
    from benchmarks.harness.analysis import compare

    meta = {"date": "d", "command": "python -m benchmarks.run --suite tiny", "suite_description": "s",
            "machine": {"cpu": "c", "logical_cores": 2, "usable_cores": 2, "ram_gib": 1, "gpu": [], "platform": "p"},
            "versions": {"torch": "t"}, "final_eval_episodes": 2, "timing": "T", "estimate_s": 1.0, "elapsed_s": 1.0,
            "notes": []}
    return {"suite": "tiny", "meta": meta, "rows": rows, "runs": runs, "comparisons": compare(rows, runs, floor)}


def test_offpolicy_comparison_and_report_from_recorded_runs(sb3_sac_run, tmp_path):
    """An SB3 run and a synthetic drl twin twice as fast: ratio 2.00x per seed and median, the verdicts,
    the floor line (measured and not)."""
    from benchmarks.harness.report import write_report

    runs = []
    for seed, (speed, shift) in enumerate([(2.0, 0.0), (2.0, 10.0)]):
        sb3 = {**sb3_sac_run, "seed": seed, "final_eval": {**sb3_sac_run["final_eval"], "mean": -1000.0 - 10 * seed}}
        drl = {**sb3, "lib": "drl", "variant": "drl", "sps": sb3["sps"] * speed, "train_s": sb3["train_s"] / speed,
               "final_eval": {**sb3["final_eval"], "mean": -1000.0 - shift - 10 * seed},
               "hyperparameters": {"agent": "sac", "total_steps": 300, "env": {"num_envs": 1}, "algo": {"tau": 0.005},
                                   "sb3_mapping": {"tau": {"tau": 0.005}}, "sb3_unmatched": ["n_steps"]}}
        runs += [drl, sb3]
    row = {"name": "sac-pendulum", "title": "SAC, Pendulum-v1, 1 env", "kind": "offpolicy", "env_id": "Pendulum-v1",
           "agent": "sac", "status": "ok", "target_ratio": 1.5, "seeds": 2,
           "variants": [{"label": "drl", "lib": "drl"}, {"label": "SB3", "lib": "sb3"}]}
    floor = {"status": "ok", "num_updates": 100, "ms_per_update": {"drl": 6.5, "eager_torch": 10.5}}
    results = _results_with(runs, [row], floor)
    (c,) = results["comparisons"]["off_policy"]
    assert [p["ratio"] for p in c["throughput"]["per_seed"]] == pytest.approx([2.0, 2.0])
    assert c["throughput"]["median_ratio"] == pytest.approx(2.0) and c["speed_verdict"] == "met"
    assert c["drl_ms_per_step"] == pytest.approx(c["sb3_ms_per_step"] / 2)
    # final evals: drl -1000, -1020 vs SB3 -1000, -1010: difference -5, margin 2 x sqrt(200/2 + 50/2) = 22.36
    assert c["eval_not_worse"]["difference"] == pytest.approx(-5.0)
    assert c["eval_not_worse"]["margin"] == pytest.approx(2 * math.sqrt(125.0))
    assert c["eval_not_worse"]["verdict"] == "not worse"
    report = write_report(results, tmp_path).read_text()
    assert "| SAC, Pendulum-v1, 1 env | seed 1 |" in report and "**2.00x** | 1.5x: met |" in report
    assert "-5.0 (± 22.4) | not worse |" in report
    assert "drl 6.50 ms, eager_torch 10.50 ms" in report and "`benchmarks.sac_floor.measure(100)`" in report
    assert "| n_steps | (no drl field) |" in report
    assert report.count("_No row of this kind in this run._") == 3  # sections 1, 2 and 3 are empty here
    results = _results_with(runs, [row], {"status": "floor not measured (run with --floor)"})
    assert "floor not measured (run with --floor)" in write_report(results, tmp_path).read_text()


def test_second_drl_side_gets_its_own_comparison_against_the_same_sb3_runs(sb3_sac_run, tmp_path):
    """A row with two drl sides (fp32 2x and amp 3x SB3's speed): two comparisons, the second titled with its
    label and judged against no target, each reading only its own drl runs."""
    from benchmarks.harness.report import write_report

    runs = []
    for seed in range(2):
        sb3 = {**sb3_sac_run, "seed": seed}  # recorded as row sac-pendulum, named so below
        for label, speed in (("drl", 2.0), ("drl amp", 3.0)):
            runs.append({**sb3, "lib": "drl", "variant": label, "sps": sb3["sps"] * speed,
                         "train_s": sb3["train_s"] / speed})
        runs.append(sb3)
    row = {"name": "sac-pendulum", "title": "TD3, Pendulum-v1, 1 env", "kind": "offpolicy", "env_id": "Pendulum-v1",
           "agent": "td3", "status": "ok", "target_ratio": 1.5, "seeds": 2,
           "variants": [{"label": "drl", "lib": "drl"}, {"label": "drl amp", "lib": "drl"},
                        {"label": "SB3", "lib": "sb3"}]}
    results = _results_with(runs, [row], None)
    fp32, amp = results["comparisons"]["off_policy"]
    assert fp32["throughput"]["median_ratio"] == pytest.approx(2.0) and fp32["speed_verdict"] == "met"
    assert amp["throughput"]["median_ratio"] == pytest.approx(3.0) and amp["speed_verdict"] is None
    assert amp["title"] == "TD3, Pendulum-v1, 1 env (drl amp)" and len(amp["returns"]["drl"]["seeds"]) == 2
    report = write_report(results, tmp_path).read_text()
    assert "**2.00x** | 1.5x: met |" in report and "| **TD3, Pendulum-v1, 1 env (drl amp)** | **median** |" in report


def test_not_worse_beyond_seed_noise_against_hand_values():
    from benchmarks.harness.analysis import not_worse

    # means 2 vs 3, sample variances 1 and 1: margin 2 x sqrt(1/3 + 1/3) = 1.633 > 1
    assert not_worse([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == pytest.approx(
        {"difference": -1.0, "margin": 2 * math.sqrt(2 / 3), "verdict": "not worse"})
    # same gap, variances 0.01: margin 0.163 < 1
    assert not_worse([0.0, 0.1, 0.2], [1.0, 1.1, 1.2])["verdict"] == "worse"
    assert not_worse([5.0], [1.0, 2.0])["verdict"] == "n/a (needs >= 2 seeds per side)"


def test_floor_is_measured_through_sac_floor_or_says_why_not(monkeypatch):
    import sys
    import types

    from benchmarks.run import measure_floor

    monkeypatch.setitem(sys.modules, "benchmarks.sac_floor", None)  # not importable
    status = measure_floor(10)["status"]
    assert status.startswith("floor not measured: benchmarks.sac_floor is not importable")
    calls = []
    module = types.ModuleType("benchmarks.sac_floor")
    module.measure = lambda n: calls.append(n) or {"drl": 6, "eager_torch": 10.5}
    monkeypatch.setitem(sys.modules, "benchmarks.sac_floor", module)
    assert measure_floor(10) == {"status": "ok", "num_updates": 10, "ms_per_update": {"drl": 6.0, "eager_torch": 10.5}}
    assert calls == [10]

    def broken(n):
        raise RuntimeError("no agent")

    module.measure = broken
    assert measure_floor(3)["status"] == "floor not measured: benchmarks.sac_floor.measure(3) failed: " \
                                         "RuntimeError: no agent"


def test_bad_floor_count_is_one_clear_error(capsys):
    with pytest.raises(SystemExit):
        main(["--suite", "tiny", "--floor", "0"])
    assert "--floor must be >= 1 updates, got 0" in capsys.readouterr().err


# --- pendulum_solve -------------------------------------------------------------------------
def _write_metrics(path: Path, rows: list[dict]) -> Path:
    import csv

    from drl.logging import CSV_COLUMNS

    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in CSV_COLUMNS})
    return path


def test_pendulum_solve_time_from_metrics_csv_against_hand_values(tmp_path):
    from benchmarks.pendulum_solve import solve_from_metrics

    csv_path = _write_metrics(tmp_path / "metrics.csv", [
        {"global_step": 1000, "eval_return": -1200.0, "wall_s": 10.0, "eval_s": 1.0},
        {"global_step": 2000, "eval_return": "", "wall_s": 20.0, "eval_s": 1.0},  # no evaluation in this row
        {"global_step": 3000, "eval_return": -210.0, "wall_s": 32.0, "eval_s": 2.5},
        {"global_step": 4000, "eval_return": -190.0, "wall_s": 45.0, "eval_s": 4.0},
        {"global_step": 5000, "eval_return": -150.0, "wall_s": 57.0, "eval_s": 5.0},
    ])
    points, solve = solve_from_metrics(csv_path)
    assert [(p["step"], p["train_s"], p["eval_return"]) for p in points] == [
        (1000, 9.0, -1200.0), (3000, 29.5, -210.0), (4000, 41.0, -190.0), (5000, 52.0, -150.0)]
    assert solve == {"step": 4000, "train_s": 41.0, "eval_return": -190.0}
    assert solve_from_metrics(csv_path, threshold=-100.0)[1] is None
    assert solve_from_metrics(csv_path, threshold=-210.0)[1]["step"] == 3000  # >= the threshold counts


def test_pendulum_solve_summary_ratio_and_target():
    from benchmarks.pendulum_solve import summarise, target_lines

    variants = [{"name": "sb3-sac", "label": "SB3 SAC", "parallel": False, "status": "ok", "device": "cpu"},
                {"name": "drl-sac-parallel", "label": "drl SAC parallel", "parallel": True, "status": "ok",
                 "device": "cpu"},
                {"name": "drl-td3-parallel", "label": "drl TD3 parallel", "parallel": True, "status": "ok",
                 "device": "cpu"}]

    def run(name, seed, seconds):
        solve = None if seconds is None else {"step": 1000 * (seed + 1), "train_s": seconds, "eval_return": -150.0}
        return {"variant": name, "seed": seed, "solve": solve, "num_envs": 1, "device": "cpu", "budget": 1,
                "points": []}

    runs = [run("sb3-sac", s, t) for s, t in enumerate([100.0, 120.0, 110.0])]
    runs += [run("drl-sac-parallel", s, t) for s, t in enumerate([5.0, 8.0, 6.0])]
    runs += [run("drl-td3-parallel", s, t) for s, t in enumerate([5.0, None, 6.0])]
    summary = {s["name"]: s for s in summarise(runs, variants)}
    assert summary["sb3-sac"]["median_s"] == 110.0 and summary["sb3-sac"]["sb3_over_this"] == pytest.approx(1.0)
    assert summary["drl-sac-parallel"]["median_s"] == 6.0
    assert summary["drl-sac-parallel"]["sb3_over_this"] == pytest.approx(110.0 / 6.0)
    assert summary["drl-td3-parallel"]["solved"] == 2 and summary["drl-td3-parallel"]["sb3_over_this"] is None
    lines = target_lines(list(summary.values()))
    assert lines == ["- drl SAC parallel vs SB3 SAC, median wall-clock to solve: 18.3x: met",
                     "- drl TD3 parallel vs SB3 SAC, median wall-clock to solve: not judged (every seed of both "
                     "must solve)"]


def test_pendulum_solve_dry_run_and_bad_arguments(capsys):
    from benchmarks.pendulum_solve import VARIANTS
    from benchmarks.pendulum_solve import main as pendulum_solve

    assert pendulum_solve(["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert all(v.name in out for v in VARIANTS) and "3 seeds, threshold -200" in out
    with pytest.raises(SystemExit):
        pendulum_solve(["--only", "nope"])
    assert "--only: unknown variant 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pendulum_solve(["--eval-every", "0"])
    assert "--eval-every must be >= 1, got 0" in capsys.readouterr().err


def test_pendulum_solve_sb3_reference_writes_results_report_and_plot(tmp_path):
    from benchmarks.pendulum_solve import PLOT
    from benchmarks.pendulum_solve import main as pendulum_solve

    out = tmp_path / "ps"
    assert pendulum_solve(["--only", "sb3-sac", "drl-sac", "--seeds", "1", "--steps", "200", "--eval-every", "100",
                           "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    (run,) = [r for r in data["runs"] if r["variant"] == "sb3-sac"]
    assert [p["step"] for p in run["points"]] == [100, 200] and run["steps"] == 200
    assert all(math.isfinite(p["train_s"]) and math.isfinite(p["eval_return"]) for p in run["points"])
    report = (out / "report.md").read_text()
    assert "| SB3 SAC (Pendulum-v1, 1 env) | Pendulum-v1 | cpu | 1 | 200 |" in report
    assert (out / PLOT).read_bytes()[:8] == PNG_MAGIC and f"]({PLOT})" in report
    if "sac" not in AGENTS:
        assert no_agent("sac") in report


# --- README blocks --------------------------------------------------------------------------
def test_registered_readme_blocks_are_added_after_their_anchor_once_the_report_exists(tmp_path):
    from benchmarks.readme import BLOCKS, ROOT, add_registered

    text = "# x\n\n<!-- bench:full -->\nold\n<!-- /bench:full -->\n\n### Fault injection\n"
    assert add_registered(text, root=tmp_path) == text  # no report yet: no placeholder section
    for name in ("pendulum_solve",):
        (tmp_path / "benchmarks" / "results" / name).mkdir(parents=True)
        (tmp_path / "benchmarks" / "results" / name / "report.md").write_text("# r\n")
    added = add_registered(text, root=tmp_path)  # its anchor (offpolicy) is not in: after full
    assert added.index("<!-- /bench:full -->") < added.index(BLOCKS["pendulum_solve"].heading) < added.index(
        "<!-- bench:pendulum_solve -->\n<!-- /bench:pendulum_solve -->") < added.index("### Fault injection")
    (tmp_path / "benchmarks" / "results" / "offpolicy").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "offpolicy" / "report.md").write_text("# r\n")
    both = add_registered(text, root=tmp_path)
    assert both.index("<!-- /bench:full -->") < both.index("<!-- bench:offpolicy -->") < both.index(
        "<!-- bench:pendulum_solve -->") < both.index("### Fault injection")
    assert add_registered(both, root=tmp_path) == both  # once
    readme = (ROOT / "README.md").read_text()
    for block in BLOCKS.values():  # every anchor exists in the real README or is another registered block
        assert f"<!-- /bench:{block.after} -->" in readme or block.after in BLOCKS


def test_privileged_benchmark_blocks_wait_for_their_reports_then_chain(tmp_path):
    """masked_velocity, aacd and active_search (issue 10): skipped while their report is missing; a lone
    active_search report goes after the nearest block present up its chain (aacd -> masked_velocity ->
    offpolicy_quality -> pendulum_solve); with all three, they follow each other in that order."""
    from benchmarks.readme import BLOCKS, add_registered

    names = ("masked_velocity", "aacd", "active_search")
    blocks = {name: BLOCKS[name] for name in ("pendulum_solve", "offpolicy_quality", *names)}
    text = "<!-- bench:pendulum_solve -->\n<!-- /bench:pendulum_solve -->\n\n### Fault injection\n"
    assert add_registered(text, blocks, root=tmp_path) == text
    results = tmp_path / "benchmarks" / "results"
    (results / "active_search").mkdir(parents=True)
    (results / "active_search" / "report.md").write_text("# r\n")
    one = add_registered(text, blocks, root=tmp_path)
    assert one.index("<!-- /bench:pendulum_solve -->") < one.index(BLOCKS["active_search"].heading) < one.index(
        "<!-- bench:active_search -->") < one.index("### Fault injection")
    assert "bench:aacd" not in one and "bench:masked_velocity" not in one
    for name in names[:2]:
        (results / name).mkdir()
        (results / name / "report.md").write_text("# r\n")
    every = add_registered(text, blocks, root=tmp_path)
    at = [every.index(f"<!-- bench:{name} -->") for name in names]
    assert every.index("<!-- /bench:pendulum_solve -->") < at[0] < at[1] < at[2] < every.index("### Fault injection")


def test_drl_offpolicy_side_records_the_same_fields(fake_offpolicy_agents, monkeypatch, tmp_path, sb3_sac_run):
    """run_drl on an off-policy row, with drl's training stood in for (a run folder with a metrics.csv and
    an agent acting 0): the record has the SB3 side's fields, at the same env steps."""
    import numpy as np
    import torch

    from benchmarks.harness.sides import run_drl
    from benchmarks.harness.suites import SUITES

    trained = {}

    def train(cfg, run_dir):
        trained["cfg"] = cfg
        run_dir.mkdir(parents=True)
        _write_metrics(run_dir / "metrics.csv", [
            {"global_step": 100 * i, "wall_s": float(i), "eval_s": 0.25 * (i == 3), "episodes": int(i == 2),
             "iter_episode_return": -1000.0 if i == 2 else "", "eval_return": -900.0 if i == 3 else ""}
            for i in (1, 2, 3)])
        return run_dir, {}

    class Agent:
        device = torch.device("cpu")

        def act(self, obs, deterministic=False, update_stats=True):
            assert deterministic and not update_stats and obs.shape == (1, 3)
            return torch.zeros(1, 1), {}

    monkeypatch.setattr("benchmarks.harness.sides.train", train)
    monkeypatch.setattr("benchmarks.harness.sides.load_agent", lambda run_dir, which, device: (Agent(), None))
    row = next(r for r in SUITES["tiny"].rows if r.name == "sac-pendulum")
    run = run_drl(row, row.variants[0], 0, tmp_path, eval_episodes=2)
    assert trained["cfg"].algo.num_steps == 100 and trained["cfg"].total_steps == 300
    assert run["curve"]["step"] == sb3_sac_run["curve"]["step"] == [100, 200, 300]
    assert run["curve"]["train_s"] == [1.0, 2.0, 2.75] and run["sps"] == pytest.approx(300 / 2.75)
    assert run["curve"]["episodes"] == [0, 1, 0] and run["curve"]["return"][1] == -1000.0
    assert set(sb3_sac_run) <= set(run) and run["final_eval"]["episodes"] == 2
    assert np.isfinite(run["final_eval"]["mean"])
    hp = run["hyperparameters"]
    assert hp["agent"] == "sac" and hp["sb3_unmatched"] == [] and hp["sb3_mapping"]["activation_fn"] == {
        "activation": "relu"}
    assert set(hp["sb3_by_contract"]) == {"target_entropy", "target_update_interval"}


def test_pendulum_solve_drl_runs_use_the_configs_with_the_benchmarks_settings(monkeypatch, tmp_path):
    """drl's side of pendulum_solve with training stood in for: the overrides it trains with, and the solve
    read back from the run's metrics.csv."""
    from types import SimpleNamespace

    from benchmarks.pendulum_solve import VARIANTS, parse_args, run_drl

    calls = []

    def load_config(agent, env_id, overrides):
        calls.append((agent, env_id, overrides))
        env = SimpleNamespace(num_envs=overrides["env"].get("num_envs", 512))
        return SimpleNamespace(env=env, device=overrides["device"], total_steps=overrides.get("total_steps", 99_999),
                               eval_interval=overrides["eval_interval"], algo=SimpleNamespace(), source="tuned")

    def train(cfg, run_dir):
        run_dir.mkdir(parents=True)
        _write_metrics(run_dir / "metrics.csv", [
            {"global_step": 2048, "eval_return": -400.0, "wall_s": 3.0, "eval_s": 0.5},
            {"global_step": 4096, "eval_return": -180.0, "wall_s": 6.0, "eval_s": 1.0}])
        return run_dir, {"steps": 4096}

    monkeypatch.setattr("drl.api.load_config", load_config)
    monkeypatch.setattr("drl.api.train", train)
    monkeypatch.setattr("drl.config.to_dict", lambda algo: {})
    args = parse_args(["--steps", "5000", "--eval-every", "500", "--parallel-steps", "8192"])
    by_name = {v.name: v for v in VARIANTS}
    one = run_drl(by_name["drl-td3"], 1, args, tmp_path)
    parallel = run_drl(by_name["drl-sac-parallel"], 2, args, tmp_path)
    (agent, env_id, o1), (agent_p, env_id_p, op) = calls
    assert (agent, env_id, o1["device"], o1["total_steps"], o1["eval_interval"], o1["env"]["num_envs"]) == (
        "td3", "Pendulum-v1", "cpu", 5000, 500, 1)
    assert (agent_p, env_id_p, op["device"], op["total_steps"], op["eval_interval"]) == (
        "sac", "drl/Pendulum-v0", "cpu", 8192, 1)
    for o, seed in ((o1, 1), (op, 2)):
        assert (o["seed"], o["torch_threads"], o["eval_episodes"], o["checkpoint_interval"]) == (seed, 1, 10, 0)
        assert o["algo"] == {"save_replay": False} and o["env"]["num_eval_envs"] == 10
    assert "num_envs" not in op["env"]  # the parallel config's own
    assert one["solve"] == parallel["solve"] == {"step": 4096, "train_s": 5.0, "eval_return": -180.0}
    assert (parallel["num_envs"], parallel["steps"], parallel["config"]["source"]) == (512, 4096, "tuned")
