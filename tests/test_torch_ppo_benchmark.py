"""``python -m benchmarks.torch_ppo`` (the GPU-target benchmark) runs end to end at CPU scale."""

from __future__ import annotations

import json

from benchmarks.torch_ppo import ROWS, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_cpu_scale_run_writes_results_report_and_plot(tmp_path):
    assert main(["--device", "cpu", "--rows", "cartpole", "--scale", "0.05", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    (result,) = data["results"]
    assert result["row"] == "cartpole" and result["device"] == "cpu" and result["num_envs"] == ROWS[0].cpu.num_envs
    assert result["steps"] >= 16 * ROWS[0].cpu.num_envs and result["sps"] > 0
    assert result["curve"]["step"][-1] == result["steps"]
    report = (tmp_path / "report.md").read_text()
    assert "| cartpole | drl/CartPole-v0 | cpu | 1,024 |" in report
    assert "CPU scale (the targets are for a GPU)" in report
    assert (tmp_path / "return_vs_wall.png").read_bytes().startswith(PNG_MAGIC)


def test_a_row_that_cannot_run_is_a_note(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ImportError("mujoco_warp is not installed")

    monkeypatch.setattr("benchmarks.torch_ppo.train", broken)
    assert main(["--device", "cpu", "--rows", "pendulum", "--out", str(tmp_path)]) == 1  # nothing ran
    report = (tmp_path / "report.md").read_text()
    assert "pendulum (drl/Pendulum-v0) did not run: ImportError: mujoco_warp is not installed" in report
