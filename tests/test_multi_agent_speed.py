"""benchmarks/multi_agent_speed.py plumbing: a tiny run of the CPU pair writes results, report and plot."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("gymnasium_robotics")
pytest.importorskip("mujoco")

from benchmarks import multi_agent_speed  # noqa: E402


def test_tiny_cpu_pair_writes_rates_ratio_report_and_plot(tmp_path) -> None:
    out = tmp_path / "out"
    code = multi_agent_speed.main(["--num-envs", "2", "--steps", "5", "--budget-s", "0.05",
                                   "--only", "mamujoco", "gymnasium", "--out", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    runs = {r["variant"]: r for r in results["runs"]}
    assert set(runs) == {"mamujoco", "gymnasium"} and all("error" not in r for r in runs.values())
    assert runs["mamujoco"]["agents"] == 2 and runs["gymnasium"]["agents"] == 1
    assert all(r["steps_per_s"] > 0 and r["num_envs"] == 2 for r in runs.values())
    [row] = results["summary"]
    assert row["ratio"] == pytest.approx(runs["mamujoco"]["steps_per_s"] / runs["gymnasium"]["steps_per_s"])
    report = (out / "report.md").read_text()
    assert "`mamujoco:HalfCheetah-2x3`" in report and f"{row['ratio']:.2f}" in report
    assert (out / "speed.png").read_bytes()[:4] == b"\x89PNG"


def test_dry_run_lists_the_plan_and_bad_args_are_refused(capsys) -> None:
    assert multi_agent_speed.main(["--dry-run", "--num-envs", "3", "--warp-num-envs", "5", "--device", "cpu"]) == 0
    plan = capsys.readouterr().out
    assert "drl/HalfCheetah-2x3-v0" in plan and "num_envs 5" in plan and "num_envs 3" in plan
    with pytest.raises(SystemExit):
        multi_agent_speed.main(["--only", "nothing", "--dry-run"])


@pytest.mark.slow
def test_tiny_mjwarp_pair_on_cpu(tmp_path) -> None:
    pytest.importorskip("mujoco_warp")
    out = tmp_path / "out"
    assert multi_agent_speed.main(["--warp-num-envs", "3", "--device", "cpu", "--steps", "5", "--budget-s", "0.05",
                                   "--only", "mjwarp-2x3", "mjwarp", "--out", str(out)]) == 0
    [row] = json.loads((out / "results.json").read_text())["summary"]
    assert row["pair"] == "mujoco-warp" and row["num_envs"] == 3 and row["ratio"] > 0
