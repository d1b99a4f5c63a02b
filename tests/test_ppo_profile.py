"""``python -m benchmarks.ppo_profile``: the per-phase breakdown of a batched PPO iteration, drl vs rsl_rl."""

from __future__ import annotations

import json
import time

import pytest

from benchmarks.ppo_profile import PHASES, PhaseClock, main


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_phase_clock_counts_each_timer_exclusively() -> None:
    """A timer nested in another stops the outer one's count; time outside any timer is ``loop other``."""
    clock = PhaseClock()
    with clock.phase("act"):
        _spin(0.01)  # before begin(): not counted
    clock.begin()
    with clock.phase("update: other"):
        _spin(0.02)
        with clock.phase("update: backward"):
            _spin(0.03)
    _spin(0.01)
    out = clock.end()
    cpu = out["cpu_s"]
    assert cpu["act"] == 0.0 and clock.calls["update: backward"] == 1
    assert 0.02 <= cpu["update: other"] < 0.028 and 0.03 <= cpu["update: backward"] < 0.038
    assert 0.01 <= cpu["loop other"] < 0.018
    assert sum(cpu.values()) == pytest.approx(out["total_cpu_s"])


def test_ppo_profile_tiny_run(tmp_path) -> None:
    pytest.importorskip("rsl_rl")
    assert main(["--envs", "drl/Pendulum-v0", "--num-envs", "64", "--iterations", "1", "--warmup", "1",
                 "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    assert [r["lib"] for r in runs] == ["drl", "rslrl"] and not any("error" in r for r in runs)
    for run in runs:
        assert set(run["cpu_s"]) == set(PHASES) and run["env_steps"] == 32 * 64
        assert sum(run["cpu_s"].values()) == pytest.approx(run["total_cpu_s"])
        for phase in ("env step", "act", "update: forward", "update: backward", "update: optimiser"):
            assert run["cpu_s"][phase] > 0, (run["lib"], phase)
    assert runs[0]["cpu_s"]["values"] > 0 and runs[1]["cpu_s"]["values"] == 0  # rsl_rl's values are in act
    report = (tmp_path / "report.md").read_text()
    assert "## drl/Pendulum-v0, 64 envs" in report and "drl / rsl_rl:" in report
