"""The SAC/TD3 learning-quality benchmark (``benchmarks.offpolicy_quality``) without training.

The report is built from small hand-written run folders (``metrics.csv`` / ``summary.json``) and
checked against hand values; the grid, each run's status and its ``drl train`` command are
checked without running ``drl``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from benchmarks import offpolicy_quality as opq
from benchmarks.readme import BLOCKS
from drl.runners.common import RunLock

COLUMNS = ["global_step", "iteration", "episode_return", "episode_length", "episodes", "eval_return",
           "eval_return_std", "wall_s", "eval_s", "sps", "iter_episode_return"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_run(run_dir: Path, evals: dict[int, float], last_step: int, train: float = 1000.0,
             finished: bool = True, extra: dict[int, float] | None = None) -> Path:
    """A run folder logged every 10k steps up to ``last_step``: ``evals`` {step: eval return},
    training return ``train`` (one episode per row), ``extra`` {step: training return} overriding it."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("agent: sac\n")
    with (run_dir / "metrics.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for i, step in enumerate(range(10_000, last_step + 1, 10_000), start=1):
            ret = (extra or {}).get(step, train)
            w.writerow({"global_step": step, "iteration": i, "episode_return": ret, "episode_length": 1000,
                        "episodes": 1, "eval_return": evals.get(step, ""),
                        "eval_return_std": 10.0 if step in evals else "", "wall_s": step / 100, "eval_s": 0.0,
                        "sps": 100.0, "iter_episode_return": ret})
    if finished:
        (run_dir / "summary.json").write_text(json.dumps({"steps": last_step, "total_steps": last_step,
                                                          "train_sps": 100.0, "wall_s": last_step / 100}))
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    evals = {50_000: 1000.0, 100_000: 2000.0, 150_000: 3000.0, 200_000: 3500.0, 250_000: 4000.0}
    fake_run(root / "sac-HalfCheetah-v5-s0", {**evals, 300_000: 5000.0}, 300_000, train=4000.0)
    # went on past 300k: what comes after 300k must not count
    fake_run(root / "sac-HalfCheetah-v5-s1", {**evals, 300_000: 6000.0, 350_000: 99_999.0}, 350_000, train=5000.0,
             extra={310_000: 99_999.0, 340_000: 99_999.0})
    fake_run(root / "sac-HalfCheetah-v5-s2", {50_000: 900.0, 100_000: 1900.0}, 120_000, finished=False)
    return root


REFS = [
    opq.Reference("sac", "HalfCheetah-v5", 300_000, 5000.0, 4000.0, 6000.0, "eval", "table", "HalfCheetah-v4",
                  "a table", "https://example.org/table"),
    opq.Reference("sac", "HalfCheetah-v5", 300_000, 8000.0, 7000.0, 9000.0, "train", "plot", "HalfCheetah-v2",
                  "a plot", "https://example.org/plot"),
    opq.Reference("sac", "HalfCheetah-v5", 1_000_000, 9500.0, 9400.0, 9600.0, "eval", "table", "HalfCheetah-v3",
                  "at 1M", "https://example.org/1m"),
]


def test_per_seed_values_mean_std_and_missing_runs(runs):
    specs = opq.grid(["sac"], ["HalfCheetah-v5", "Hopper-v5"], [0, 1, 2], runs)
    out = opq.summarise(specs, 300_000, REFS)
    by = {(r["env"], r["seed"]): r for r in out["runs"]}
    assert by[("HalfCheetah-v5", 0)]["eval_at_steps"]["eval_return"] == 5000.0
    assert by[("HalfCheetah-v5", 1)]["eval_at_steps"]["eval_return"] == 6000.0  # not the 350k evaluation
    assert by[("HalfCheetah-v5", 0)]["train_return"] == pytest.approx(4000.0)
    assert by[("HalfCheetah-v5", 1)]["train_return"] == pytest.approx(5000.0)  # rows past 300k left out
    assert [r["status"] for r in out["runs"]] == ["finished", "finished", "unfinished", "missing", "missing",
                                                  "missing"]
    assert by[("HalfCheetah-v5", 2)]["last_step"] == 120_000
    assert by[("HalfCheetah-v5", 2)]["eval_at_steps"] is None
    assert [e["step"] for e in by[("HalfCheetah-v5", 2)]["evals"]] == [50_000, 100_000]

    cheetah, hopper = out["groups"]
    assert cheetah["seeds_at_steps"] == [0, 1]
    assert cheetah["eval"]["mean"] == pytest.approx(5500.0)
    assert cheetah["eval"]["std"] == pytest.approx(500.0)  # population std over the two seeds
    assert cheetah["train"]["mean"] == pytest.approx(4500.0)
    verdicts = {(r["metric"], r["steps"]): r["verdict"] for r in cheetah["references"]}
    assert verdicts[("eval", 300_000)] == "within the reference band"
    assert verdicts[("train", 300_000)] == "below the reference band"
    assert verdicts[("eval", 1_000_000)].startswith("context only")
    assert hopper["seeds_at_steps"] == [] and hopper["eval"]["n"] == 0 and hopper["references"] == []


def test_verdict_against_hand_values():
    ref = REFS[0]
    assert opq.verdict(3999.0, ref) == "below the reference band"
    assert opq.verdict(4000.0, ref) == "within the reference band"
    assert opq.verdict(6000.5, ref) == "above the reference band"
    assert opq.verdict(None, ref).startswith("not judged")


def test_report_files_from_partial_runs(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(opq, "REFERENCES", REFS)
    out = tmp_path / "report"
    assert opq.main(["report", "--agents", "sac", "--runs", str(runs), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())  # strict JSON: NaN written as null
    assert results["meta"]["steps"] == 300_000 and results["meta"]["seeds"] == [0, 1, 2]
    assert str(tmp_path) not in results["meta"]["command"]  # no machine paths in a committed report
    assert len(results["runs"]) == 6
    text = (out / "report.md").read_text()
    assert "**Partial: 4 of 6 runs have not reached 300,000 steps**" in text
    assert ("| SAC | HalfCheetah-v5 | 2/3 | 5,500 ± 500 | 4,500 ± 500 | s0: 5,000, s1: 6,000, s2: - | "
            "a table table, eval: within; a plot plot, train: below |") in text
    assert "| SAC | Hopper-v5 | 0/3 | - | - | s0: -, s1: -, s2: - | no reference at this step count |" in text
    assert "| sac-HalfCheetah-v5-s2 | unfinished | 120,000 |" in text
    assert "| sac-Hopper-v5-s0 | missing |" in text
    assert "within the reference band" in text and "read off a plot (approximate)" in text
    assert "~8,000" in text  # a plot-read reference is marked approximate
    assert (out / opq.PLOT).read_bytes()[:8] == PNG_MAGIC


def test_grid_statuses_and_commands(tmp_path):
    specs = opq.grid(["sac", "td3"], ["HalfCheetah-v5", "Hopper-v5"], [0, 1, 2], tmp_path)
    assert len(specs) == 12
    assert [s.name for s in specs[:4]] == ["sac-HalfCheetah-v5-s0", "sac-HalfCheetah-v5-s1", "sac-HalfCheetah-v5-s2",
                                           "sac-Hopper-v5-s0"]
    done = fake_run(tmp_path / "sac-HalfCheetah-v5-s0", {300_000: 1.0}, 300_000)
    started = fake_run(tmp_path / "sac-HalfCheetah-v5-s1", {}, 50_000, finished=False)
    short = fake_run(tmp_path / "sac-HalfCheetah-v5-s2", {}, 50_000)  # a summary short of --steps: resume
    assert opq.run_status(done, 300_000) == "finished"
    assert opq.run_status(started, 300_000) == "started"
    assert opq.run_status(short, 300_000) == "started"
    assert opq.run_status(tmp_path / "td3-Hopper-v5-s2", 300_000) == "missing"
    lock = RunLock(started).acquire()  # a live drl process holds it: leave it alone
    try:
        assert opq.run_status(started, 300_000) == "running"
    finally:
        lock.release()

    entries = {e["run"]: e for e in opq.plan(specs, 300_000, nice=19)}
    assert entries["sac-HalfCheetah-v5-s0"]["command"] is None
    assert entries["sac-HalfCheetah-v5-s1"]["command"] == [
        "nice", "-n", "19", "drl", "train", "--resume", str(started), "--steps", "300000", "--no-progress"]
    assert entries["td3-Hopper-v5-s2"]["command"] == [
        "nice", "-n", "19", "drl", "train", "td3", "--config", "configs/td3/Hopper-v5.yaml", "--steps", "300000",
        "--seed", "2", "--set", "checkpoint_interval=10000", "--run-dir", str(tmp_path / "td3-Hopper-v5-s2"),
        "--no-progress"]
    assert opq.train_command(specs[-1], 300_000, "missing")[0] == "drl"  # no nice unless asked
    assert all(Path(e["command"][e["command"].index("--config") + 1]).is_file()
               for e in entries.values() if e["command"] and "--config" in e["command"])  # the configs exist


def test_execute_runs_jobs_in_parallel_and_records_each_command(tmp_path, monkeypatch, capsys):
    specs = opq.grid(["sac"], ["HalfCheetah-v5"], [0, 1, 2], tmp_path)
    fake_run(specs[0].run_dir, {300_000: 1.0}, 300_000)  # finished: skipped

    def command(spec, steps, status, nice=None):
        if status == "finished":
            return None
        return [sys.executable, "-c", f"import sys; print('ran {spec.name}'); sys.exit({spec.seed - 1})"]

    monkeypatch.setattr(opq, "train_command", command)
    assert opq.execute(specs, 300_000, tmp_path, jobs=2) == 1  # seed 2 exits 1
    records = [json.loads(line) for line in (tmp_path / opq.COMMANDS_LOG).read_text().splitlines()]
    assert sorted((r["run"], r["returncode"]) for r in records) == [("sac-HalfCheetah-v5-s1", 0),
                                                                    ("sac-HalfCheetah-v5-s2", 1)]
    assert "ran sac-HalfCheetah-v5-s1" in (tmp_path / "sac-HalfCheetah-v5-s1.log").read_text()
    printed = capsys.readouterr().out
    assert "sac-HalfCheetah-v5-s0" in printed and "(nothing to do)" in printed


def test_dry_run_prints_the_plan(tmp_path, capsys):
    assert opq.main(["run", "--out", str(tmp_path), "--dry-run", "--nice", "19"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and all(" missing " in line and "nice -n 19 drl train" in line for line in lines)
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_references_are_documented_and_cover_the_grid():
    for ref in opq.REFERENCES:
        assert ref.kind in ("table", "plot") and ref.metric in ("eval", "train")
        assert ref.low <= ref.value <= ref.high
        assert ref.url.startswith("https://") and ref.source and ref.env_version[-2:] in ("v2", "v3", "v4")
    for agent in opq.AGENTS:
        for env in opq.ENVS:
            at = [r for r in opq.REFERENCES if (r.agent, r.env, r.steps) == (agent, env, opq.STEPS)]
            assert at, f"no {opq.STEPS}-step reference for {agent} on {env}"


def test_readme_block_is_registered():
    block = BLOCKS["offpolicy_quality"]
    assert block.after in BLOCKS and "benchmarks.offpolicy_quality" in block.intro


def test_a_finished_run_without_an_evaluation_at_the_step_count_says_so(tmp_path):
    fake_run(tmp_path / "td3-Hopper-v5-s0", {280_000: 100.0}, 300_000)  # eval_interval that skips 300k
    (run,) = opq.summarise(opq.grid(["td3"], ["Hopper-v5"], [0], tmp_path), 300_000, [])["runs"]
    assert run["status"] == "no evaluation at steps" and run["eval_at_steps"] is None
