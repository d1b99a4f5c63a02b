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


def test_offpolicy_rows_plan_a_warm_up_then_whole_timed_iterations():
    from benchmarks.torch_ppo import OFF_POLICY_ROWS, offpolicy_plan

    assert OFF_POLICY_ROWS == ["sac-pendulum", "td3-pendulum", "sac-halfcheetah", "td3-halfcheetah"]
    # 1024 envs x 50 steps = 51,200 env steps per iteration; 10,000 random steps fit in one, plus one of updates;
    # 500 timed vectorised steps = 10 iterations
    assert offpolicy_plan(1024, 50, 10_000, 500) == (12 * 51_200, 2 * 51_200)
    assert offpolicy_plan(16, 8, 128, 30) == ((1 + 1 + 4) * 128, 2 * 128)  # 30 steps round up to 4 iterations
    assert offpolicy_plan(4, 5, 0, 1) == (2 * 20, 20)  # no random steps: the warm-up is the first update iteration


def test_steady_steps_per_second_skips_the_warm_up():
    from benchmarks.torch_ppo import steady_sps

    curve = {"step": [100, 200, 300, 400], "train_s": [10.0, 12.0, 12.5, 13.0]}
    assert steady_sps(curve, 200) == (400 - 200) / (13.0 - 12.0)
    assert steady_sps(curve, 400) is None  # one row left: nothing to time


def test_offpolicy_row_runs_with_the_tuned_config_and_reports_steady_rate(tmp_path, monkeypatch):
    """With drl's SAC stood in for (a config from the tuned file's place and a run folder with a metrics.csv)."""
    from types import SimpleNamespace

    from drl.logging import CSV_COLUMNS

    seen = {}

    def load_config(agent, env_id, overrides):
        seen.setdefault("calls", []).append((agent, env_id, overrides))
        algo = SimpleNamespace(learning_starts=256, num_steps=overrides.get("algo", {}).get("num_steps", 1000))
        return SimpleNamespace(env=SimpleNamespace(num_envs=overrides.get("env", {}).get("num_envs", 2048)),
                               algo=algo, total_steps=overrides.get("total_steps", 1))

    def train(cfg, run_dir):
        run_dir.mkdir(parents=True)
        with (run_dir / "metrics.csv").open("w") as f:  # iterations of 16 envs x 8 steps = 128 env steps
            f.write(",".join(CSV_COLUMNS) + "\n")
            for i, wall in enumerate([1.0, 2.0, 9.0, 9.5, 10.0, 10.5, 11.0], 1):
                row = {"global_step": 128 * i, "wall_s": wall, "eval_s": 0.0, "episodes": 0, "episode_return": "",
                       "eval_return": -900.0 if i == 7 else ""}
                f.write(",".join(str(row.get(c, "")) for c in CSV_COLUMNS) + "\n")
        return run_dir, {"final_eval_return": -900.0}

    monkeypatch.setattr("benchmarks.torch_ppo.load_config", load_config)
    monkeypatch.setattr("benchmarks.torch_ppo.train", train)
    monkeypatch.setattr("benchmarks.torch_ppo.to_dict", lambda algo: vars(algo))
    assert main(["--device", "cpu", "--rows", "sac-pendulum", "--out", str(tmp_path)]) == 0
    (_, _, tuned), (agent, env_id, overrides) = seen["calls"]
    assert tuned == {"device": "cpu"}  # the tuned config as it is: its learning_starts (here overridden on the CPU)
    assert (agent, env_id, overrides["env"]["num_envs"], overrides["eval_interval"]) == (
        "sac", "drl/Pendulum-v0", 16, 0)
    assert overrides["algo"]["save_replay"] is False and overrides["algo"]["learning_starts"] == 128
    # CPU scale: 128 random steps (1 iteration) + 1 iteration of updates, then 32 vectorised steps = 4 iterations
    assert overrides["total_steps"] == 6 * 128
    (result,) = json.loads((tmp_path / "results.json").read_text())["results"]
    assert result["warmup_steps"] == 256 and result["steady_sps"] == (896 - 256) / (11.0 - 2.0)
    report = (tmp_path / "report.md").read_text()
    assert "| sac-pendulum | drl/Pendulum-v0 | cpu | 16 | 896 | 11.0 | 81 | 71 |" in report
