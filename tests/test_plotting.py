"""`drl plot`: runs grouped by (agent, env), seeds aggregated (mean, bootstrap CI, IQM), envs never overlaid."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from drl.plotting import PlotWarning, aggregate_curves, aggregate_runs, bootstrap_ci, group_runs, iqm, plot_runs


def make_run(root: Path, name: str, env: str, steps: list[int], returns: list[float], agent: str = "ppo") -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"agent: {agent}\nenv:\n  id: {env}\n")
    lines = ["global_step,episode_return,eval_return,wall_s"]
    for i, (s, r) in enumerate(zip(steps, returns, strict=True)):
        cell = "" if math.isnan(r) else repr(r)
        lines.append(f"{s},{cell},,{i + 1.0}")
    (run / "metrics.csv").write_text("\n".join(lines) + "\n")
    return run


def test_iqm_by_hand():
    assert iqm([1, 2, 3, 4]) == 2.5                # middle two
    assert iqm([100, 1, 3, 2, 4]) == 3.0           # floor(5/4) = 1 dropped each end: mean(2, 3, 4)
    assert iqm([5, 1, 9, 7, 3, 1000, -1000, 6]) == 5.25  # drop 2 each end: mean(3, 5, 6, 7)
    assert iqm([7.0]) == 7.0 and math.isnan(iqm([]))


def test_bootstrap_ci_brackets_the_mean_and_is_deterministic():
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    low, high = bootstrap_ci(values, seed=3)
    assert low < np.mean(values) < high and (low, high) == bootstrap_ci(values, seed=3)
    assert 1.0 <= low and high <= 10.0
    assert bootstrap_ci([2.0]) == (2.0, 2.0)
    same = bootstrap_ci([4.0, 4.0, 4.0])
    assert same == (4.0, 4.0)


def test_aggregate_on_common_grid_with_interpolation():
    # run A logs at 100 and 300 only, run B at 100, 200, 300; A is interpolated at 200
    agg = aggregate_curves([([100, 300], [0.0, 2.0]), ([100, 200, 300], [1.0, 1.0, 1.0])])
    assert agg.steps.tolist() == [100.0, 200.0, 300.0]
    assert agg.mean.tolist() == [0.5, 1.0, 1.5]
    assert agg.num_runs == 2


def test_aggregate_grid_is_the_range_every_run_covers():
    # the first run has no return before step 200 (empty cells), the second stops at 300
    agg = aggregate_curves([([100, 200, 300, 400], [math.nan, 2.0, 4.0, 6.0]), ([100, 200, 300], [0.0, 0.0, 0.0])])
    assert agg.steps.tolist() == [200.0, 300.0] and agg.mean.tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="share no step range"):
        aggregate_curves([([1, 2], [0.0, 0.0]), ([3, 4], [0.0, 0.0])])


def test_aggregate_runs_groups_by_agent_and_env(tmp_path):
    steps = [100, 200]
    seeds = [[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [4.0, 40.0], [100.0, 400.0]]
    dirs = [make_run(tmp_path, f"cp-s{i}", "CartPole-v1", steps, r) for i, r in enumerate(seeds)]
    dirs.append(make_run(tmp_path, "pend", "Pendulum-v1", steps, [-5.0, -6.0]))
    groups = group_runs(dirs)
    assert list(groups) == [("ppo", "CartPole-v1"), ("ppo", "Pendulum-v1")]
    aggs = aggregate_runs(dirs)
    cp = aggs[("ppo", "CartPole-v1")]
    assert cp.num_runs == 5
    assert cp.mean.tolist() == [22.0, 100.0]            # (1+2+3+4+100)/5, (10+20+30+40+400)/5
    assert cp.iqm.tolist() == [3.0, 30.0]               # middle three of five
    assert np.all(cp.ci_low <= cp.mean) and np.all(cp.mean <= cp.ci_high)
    assert aggs[("ppo", "Pendulum-v1")].mean.tolist() == [-5.0, -6.0]


def test_plot_warns_when_envs_differ_and_not_otherwise(tmp_path):
    a = make_run(tmp_path, "a", "CartPole-v1", [100, 200], [1.0, 2.0])
    b = make_run(tmp_path, "b", "CartPole-v1", [100, 200], [3.0, 4.0])
    c = make_run(tmp_path, "c", "Pendulum-v1", [100, 200], [-1.0, -2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_runs([a, b], tmp_path / "same.png").is_file()
    with pytest.warns(PlotWarning, match=r"2 different envs \(CartPole-v1, Pendulum-v1\)"):
        assert plot_runs([a, b, c], tmp_path / "mixed.png").is_file()


def test_cli_plot_prints_aggregate_and_one_warning_line(tmp_path, capsys):
    from drl.cli import main

    a = make_run(tmp_path, "a", "CartPole-v1", [100, 200], [1.0, 2.0])
    b = make_run(tmp_path, "b", "CartPole-v1", [100, 200], [3.0, 4.0])
    c = make_run(tmp_path, "c", "Acrobot-v1", [100, 200], [-1.0, -2.0])
    assert main(["plot", str(a), str(b), str(c), "--out", str(tmp_path / "p.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "drl plot: warning: the runs are of 2 different envs (CartPole-v1, Acrobot-v1): one row of plots per env"]
    assert "ppo on CartPole-v1: 2 runs, train return at step 200: mean 3.00" in captured.out
    assert "IQM 3.00" in captured.out
    assert (tmp_path / "p.png").is_file()


def test_plot_says_which_run_limits_the_aggregate_and_shows_a_one_point_mean(tmp_path):
    """Seeds are aggregated only where all have data: a run stopped early limits the range, and the
    plot says which one (a one-row run leaves a single point, drawn as a marker)."""
    full = [make_run(tmp_path, f"s{i}", "CartPole-v1", [100, 200, 300], [1.0 + i, 2.0, 3.0]) for i in range(2)]
    early = make_run(tmp_path, "early", "CartPole-v1", [100], [5.0])
    with pytest.warns(PlotWarning, match=r"ppo: seeds aggregated up to step 100, where 'early' stops \(the longest "
                                         r"run reaches 300\)"):
        out = plot_runs([*full, early], tmp_path / "p.png")
    assert out.is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_runs(full, tmp_path / "full.png").is_file()


def test_a_panel_with_nothing_to_draw_gets_no_legend_warning(tmp_path):
    """Runs that finished no episode leave the step panel empty: drl's PlotWarning says why, and
    matplotlib's "No artists with labels found to put in legend" is not leaked on top of it."""
    runs = [make_run(tmp_path, f"s{i}", "CartPole-v1", [100, 200], [math.nan, math.nan]) for i in range(2)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert plot_runs(runs, tmp_path / "p.png").is_file()
    messages = [str(w.message) for w in caught]
    assert any("training returns not aggregated" in m for m in messages), messages
    assert not any("No artists" in m for m in messages), messages
