"""``python -m benchmarks.faults``: its checks catch each kind of damage; a one-trial run works end to end."""

from __future__ import annotations

import json

import pytest

from benchmarks.faults import (
    Kill,
    Trial,
    _exit_problem,
    bitwise_equal,
    check_run,
    final_parameters,
    main,
    metrics_steps,
    write_report,
)
from drl import api

TINY = {"total_steps": 256, "progress": False, "device": "cpu", "eval_interval": 128, "eval_episodes": 2,
        "checkpoint_interval": 128, "torch_threads": 1, "env": {"num_envs": 4, "num_eval_envs": 2},
        "algo": {"num_steps": 16, "minibatch_size": 32, "num_epochs": 1}}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir, _ = api.train(api.load_config("ppo", "drl/CartPole-v0", overrides=TINY),
                           tmp_path_factory.mktemp("faults") / "run")
    steps, eval_steps = metrics_steps(run_dir)
    return run_dir, {"steps": steps, "eval_steps": eval_steps, "total_steps": 256}


def test_check_run_accepts_a_complete_run(finished_run):
    run_dir, reference = finished_run
    assert reference["steps"] == [64, 128, 192, 256] and reference["eval_steps"] == [128, 256]
    assert check_run(run_dir, reference) == []
    assert bitwise_equal(run_dir, final_parameters(run_dir))


def test_check_run_names_each_kind_of_damage(finished_run, tmp_path):
    import shutil

    import torch

    run_dir = tmp_path / "run"
    shutil.copytree(finished_run[0], run_dir)
    reference = finished_run[1]
    with (run_dir / "metrics.csv").open("a") as f:
        f.write("192" + "," * 18 + "\n")  # a duplicated, out-of-order row
    (run_dir / "checkpoints" / "latest.pt.x.tmp").write_bytes(b"")
    (run_dir / "checkpoints" / "best.pt").write_bytes(b"torn")
    (run_dir / "curve.png").unlink()
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "interrupted": True}))
    problems = check_run(run_dir, reference)
    assert problems[0] == "metrics.csv repeats global_step [192]"
    assert problems[1] == "metrics.csv global_step not strictly increasing"
    assert problems[2] == "metrics.csv steps differ from the reference (5 rows vs 4)"
    assert problems[3] == "temp files left: ['checkpoints/latest.pt.x.tmp']"
    assert problems[4].startswith("best.pt: ") and "not a loadable drl checkpoint" in problems[4]
    assert problems[5] == "summary.json: steps 256, interrupted True"
    assert problems[6] == "no curve.png"
    assert len(problems) == 7
    other = {k: v + 1 for k, v in final_parameters(finished_run[0]).items()}
    assert not bitwise_equal(finished_run[0], other)
    assert not bitwise_equal(run_dir, {k: torch.zeros(1) for k in other})


def test_exit_problem_rules(finished_run):
    run_dir = finished_run[0]
    assert _exit_problem(Kill("SIGINT", "training", sent=True, exit_code=130), run_dir, "") is None
    assert _exit_problem(Kill("SIGKILL", "training", sent=True, exit_code=-9), run_dir, "") is None
    assert _exit_problem(Kill("SIGTERM", "training", sent=True, exit_code=0), run_dir, "") is None  # run complete
    assert _exit_problem(Kill("SIGTERM", "start-up", sent=True, exit_code=-15), run_dir, "") == \
        "exit -15, expected 143; stderr: "
    assert _exit_problem(Kill("SIGINT", "start-up", sent=True, exit_code=130), run_dir,
                         "Traceback (most recent call last):") == "a traceback: Traceback (most recent call last):"


def test_report_counts(tmp_path):
    trials = [Trial(0, "drl/CartPole-v0", [Kill("SIGKILL", "training", 0.5, True, -9, 1920)], 1, True, False),
              Trial(1, "drl/CartPole-v0", [Kill("SIGINT", "checkpoint-write", None, True, 130)], 1, True, True),
              Trial(2, "drl/Pendulum-v0", [Kill("SIGTERM", "start-up", 1.0, True, 143)], 0, False, False,
                    ["no curve.png"])]
    refs = {"drl/CartPole-v0": {"total_steps": 3840, "train_s": 3.0, "process_s": 9.0}}
    data = write_report(tmp_path, trials, refs, "python -m benchmarks.faults", 0)
    assert data["counts"] == {"trials": 3, "consistent": 2, "bitwise_equal": 1, "resumed_mid_run": 1,
                              "bitwise_equal_resumed_mid_run": 0, "kills": 3, "resumes": 2}
    assert json.loads((tmp_path / "results.json").read_text())["counts"] == data["counts"]
    report = (tmp_path / "report.md").read_text()
    assert "**2 of 3 trials consistent; 1 of 3 bitwise equal**" in report
    assert "| 0 | drl/CartPole-v0 | SIGKILL at training: -9, 1920 | 1 | yes | no | - |" in report
    assert "| 2 | drl/Pendulum-v0 | SIGTERM at start-up: 143, 0 | 0 | NO | no | no curve.png |" in report
    assert "1 trials resumed from a checkpoint part-way through the run" in report


@pytest.mark.slow
def test_one_trial_end_to_end(tmp_path):
    """Real subprocesses: a reference run, one killed-and-resumed run (about a minute on 2 cores)."""
    code = main(["--trials", "1", "--envs", "drl/CartPole-v0", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["counts"]["trials"] == 1 and code == (0 if data["counts"]["consistent"] == 1 else 1)
    assert data["counts"]["consistent"] == 1, data["trials"]
