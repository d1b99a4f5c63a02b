"""Distributed training (drl.distributed): 2 ranks on gloo against one process on the same data, the run
folder written by rank 0 alone, resume under torchrun, and a dead rank stopping the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drl import distributed
from drl.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "distributed_worker.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int | None = None, world: int = 1, port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    if rank is not None:
        env |= {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port)}
    return env


def _ranks(mode: str, out: Path, *args: str, world: int = 2, timeout: float = 120.0, extra_env: dict | None = None
           ) -> list[subprocess.CompletedProcess]:
    """Run the worker as ``world`` ranks (as torchrun would start them); their completed processes."""
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, str(WORKER), mode, str(out), *args], cwd=ROOT,
                              env=_env(r, world, port) | (extra_env or {}), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    done = []
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(deadline - time.monotonic(), 1.0))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"the {world} ranks of '{mode}' hung for {timeout} s")
        done.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return done


def _single(mode: str, out: Path) -> None:
    proc = subprocess.run([sys.executable, str(WORKER), mode, str(out)], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def _ok(procs: list[subprocess.CompletedProcess]) -> None:
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r}: {p.stderr[-3000:]}"


def test_without_torchrun_the_hooks_are_the_one_process_math() -> None:
    assert not distributed.active() and distributed.is_main() and distributed.world_size() == 1
    assert distributed.rank_seed(7, 16) == 7
    g = torch.tensor([1.0, -2.0])
    assert distributed.average_gradients_(g) is g and g.tolist() == [1.0, -2.0]
    x = torch.tensor([1.0, 2.0, 4.0])
    mean, std = distributed.mean_std(x)
    assert mean.item() == pytest.approx(7 / 3) and std.item() == pytest.approx(x.std().item())
    assert distributed.merge_moments(3, x, x) == (3, x, x)
    assert torch.equal(distributed.all_gather_rows(x, "a test"), x[None])
    assert distributed.any_rank(True) and not distributed.any_rank(False)


def test_one_process_normaliser_is_the_definition_whatever_its_rank_merge() -> None:
    """Without other ranks ``rank_merge`` changes nothing (bitwise) and ``merge_ranks`` / ``sync_ranks`` leave
    the statistics as they are; a bad ``rank_merge`` is refused."""
    from drl.nn.normalization import RunningMeanStd, merge_ranks

    g = torch.Generator().manual_seed(3)
    a, b = RunningMeanStd((4,)), RunningMeanStd((4,), rank_merge="boundary")
    for _ in range(5):
        x = 2.0 * torch.randn(6, 4, generator=g) - 1.0
        assert torch.equal(a.update_normalize(x), b.update_normalize(x))
    before = [t.clone() for t in (b.mean, b.var, b.count)]
    merge_ranks([a, b])
    assert all(torch.equal(t, u) for t, u in zip(before, (b.mean, b.var, b.count), strict=True))
    assert all(torch.equal(t, u) for t, u in zip((a.mean, a.var, a.count), (b.mean, b.var, b.count), strict=True))
    with pytest.raises(ValueError, match="rank_merge must be 'update' or 'boundary', got 'never'"):
        RunningMeanStd((4,), rank_merge="never")


def test_moments_since_the_last_merge_are_those_of_the_rows_folded_in_since() -> None:
    """What a rank sends at a merge: after 40 rows (the base) and 3 batches of 7 more, the count, mean and
    population variance of those 21 rows (numpy's), undone from the running statistics to float64 rounding."""
    import numpy as np

    from drl.nn.normalization import RunningMeanStd

    g = torch.Generator().manual_seed(5)
    norm = RunningMeanStd((3,), rank_merge="boundary")
    norm.update(5.0 + 3.0 * torch.randn(40, 3, generator=g))
    norm._folds_locally()  # the base, as taken before a rank's first fold under torchrun
    added = [torch.randn(7, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1]) for _ in range(3)]
    for x in added:
        norm.update(x)
    n, mean, var = norm._moments_since_base()
    rows = torch.cat(added).double().numpy()
    assert n == 21.0
    np.testing.assert_allclose(mean.numpy(), rows.mean(0), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(var.numpy(), rows.var(0), rtol=1e-11)


def test_without_nproc_argv() -> None:
    from drl.cli import _without_nproc

    assert _without_nproc(["train", "ppo", "--nproc", "2", "--steps", "8"]) == ["train", "ppo", "--steps", "8"]
    assert _without_nproc(["ppo", "--nproc=4"]) == ["train", "ppo"]
    cmd = distributed.torchrun_command(3, ["train", "sac"])
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3", "-m", "drl", "train",
                       "sac"]


def _one_and_two_ranks(mode: str, tmp_path: Path) -> tuple[dict, dict, dict]:
    """The worker's record of ``mode`` in one process, then of ranks 0 and 1 of a two-process run."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _single(mode, one)
    _ok(_ranks(mode, two))
    return tuple(torch.load(p, weights_only=True) for p in (one / "rank0.pt", two / "rank0.pt", two / "rank1.pt"))


def test_ppo_two_ranks_with_half_the_envs_make_the_one_process_update(tmp_path: Path) -> None:
    """Two rollouts of [16, 8] (normalised obs and rewards, normalised advantages, 3 epochs, clipping): ranks
    with 4 env columns each hold bitwise equal parameters after every update, equal (to float32 rounding) to one
    process's with all 8; the obs statistics are those of all 8 columns.

    Within a rollout each rank folds in only its own columns (the obs statistics merge at the rollout's end,
    ``sync_ranks``), so obs normalised at act time differ from one process's by design; the rollouts stored
    here are therefore normalised after the merge, with statistics both runs hold (see
    ``test_obs_statistics_merge_once_per_iteration`` for the act-time path)."""
    ref, r0, r1 = _one_and_two_ranks("ppo", tmp_path)
    start = None
    for update, (a, b, c) in enumerate(zip(ref["params"], r0["params"], r1["params"], strict=True)):
        assert torch.equal(b, c), f"ranks differ after update {update + 1}"
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        start = a if start is None else start
    assert not torch.equal(ref["params"][0], ref["params"][1])  # the updates moved the parameters
    for key in ("obs_mean", "obs_var", "obs_count", "return_var"):
        torch.testing.assert_close(r0[key], ref[key], rtol=1e-9, atol=1e-12)
        assert torch.equal(r0[key], r1[key])
    assert ref["obs_count"].item() == pytest.approx(2 * 16 * 8 + 1e-4)
    rows = torch.arange(3 * 8, dtype=torch.float32).reshape(3, 8).square()  # each rank held half of every row
    for r in (r0, r1, ref):
        torch.testing.assert_close(r["row_mean"], rows.mean(1), rtol=1e-6, atol=0)
        torch.testing.assert_close(r["row_std"], rows.std(1), rtol=1e-6, atol=0)
    assert ref["errors"] == []  # one process: nothing to compare
    assert r0["errors"] == r1["errors"] == [
        "the ranks disagree on the rank: [0, 1] (rank by rank)",
        "the ranks' policies differ after filling a layer with the rank: this agent's optimiser does not "
        "average its gradients across ranks (distributed training needs the agent's steps to go through "
        "drl.optim.TrainStep or FusedUpdate, as PPO, SAC and TD3 do)"]


def _fed(rollouts: range, columns: slice, start: torch.nn.Module | None = None) -> torch.Tensor:
    """``[mean..., var..., count]`` of one process's RunningMeanStd (a copy of ``start``, else a fresh one) fed the
    worker's obs ``[t, columns]`` step by step for the given rollouts (on the torch path, not the kernel)."""
    import copy

    from drl.nn import normalization
    from tests.distributed_worker import ppo_data

    norm = copy.deepcopy(start) if start is not None else normalization.RunningMeanStd((5,))
    data = ppo_data(seed=1)
    kernels, normalization._KERNELS = normalization._KERNELS, False
    try:
        for k in rollouts:
            for t in range(data[k]["obs"].shape[0]):
                norm.update(data[k]["obs"][t, columns])
    finally:
        normalization._KERNELS = kernels
    return norm


def _as_stats(norm: torch.nn.Module) -> torch.Tensor:
    return torch.cat([norm.mean, norm.var, norm.count.reshape(1)])


def test_obs_statistics_merge_once_per_iteration(tmp_path: Path) -> None:
    """PPO (``act`` on the numba kernel, which now runs under torchrun too), SAC and TD3 on 2 ranks of 4 env
    columns each, 2 rollouts / iterations of 16 steps: before ``sync_ranks`` each rank's statistics are those at
    the rollout's start plus its own columns (the ranks differ); after it both ranks hold bitwise equal
    statistics, equal (relative 1e-10: float64 rounding of a few hundred folds) to one process's RunningMeanStd
    fed all 8 columns; the parameters stay bitwise equal across ranks. In one process ``sync_ranks`` changes
    nothing."""
    from drl.nn.normalization import _KERNELS

    ref, r0, r1 = _one_and_two_ranks("norm", tmp_path)
    assert r0["numba_actor"] and r0["kernel"] == _KERNELS  # the fast path is no longer off under torchrun
    tol = {"rtol": 1e-10, "atol": 1e-12}
    for name in ("ppo", "sac", "td3"):
        one, ranks = ref[name], (r0[name], r1[name])
        for k in range(2):
            everything = _fed(range(k + 1), slice(0, 8))
            assert everything.count.item() == pytest.approx(16 * 8 * (k + 1) + 1e-4)
            torch.testing.assert_close(one["after"][k], _as_stats(everything), **tol)
            assert torch.equal(one["before"][k], one["after"][k]), name  # one process: nothing to merge
            start = _fed(range(k), slice(0, 8))  # what every rank held when the rollout began
            for r, rank in enumerate(ranks):
                own = _fed(range(k, k + 1), slice(4 * r, 4 * r + 4), start)
                torch.testing.assert_close(rank["before"][k], _as_stats(own), **tol,
                                           msg=f"{name}: rank {r} before the merge of rollout {k + 1}")
                torch.testing.assert_close(rank["after"][k], _as_stats(everything), **tol,
                                           msg=f"{name}: rank {r} after the merge of rollout {k + 1}")
            assert not torch.equal(ranks[0]["before"][k], ranks[1]["before"][k])
            assert torch.equal(ranks[0]["after"][k], ranks[1]["after"][k]), f"{name}: rollout {k + 1}"
        for k, (a, b) in enumerate(zip(ranks[0]["params"], ranks[1]["params"], strict=True)):
            assert torch.equal(a, b), f"{name}: parameters differ after iteration {k + 1}"
        assert not torch.equal(ranks[0]["params"][0], ranks[0]["params"][-1])


def test_sac_and_td3_two_ranks_with_half_the_batch_make_the_one_process_update(tmp_path: Path) -> None:
    ref, r0, r1 = _one_and_two_ranks("offpolicy", tmp_path)
    for name in ("sac", "td3"):
        for update, (a, b, c) in enumerate(zip(ref[name], r0[name], r1[name], strict=True)):
            assert torch.equal(b, c), f"{name}: ranks differ after update {update + 1}"
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=f"{name}: update {update + 1}")
        assert not torch.equal(ref[name][0], ref[name][-1])


def test_a_dead_rank_stops_the_others_with_a_clear_error(tmp_path: Path) -> None:
    start = time.monotonic()
    procs = _ranks("die", tmp_path, timeout=60.0)
    assert procs[1].returncode == 3
    assert procs[0].returncode == 6, procs[0].stderr[-2000:]
    seconds, message = (tmp_path / "rank0-error.txt").read_text().split("\n", 1)
    assert "rank 0 of 2: the gradient all-reduce failed, another rank died or hung" in message
    assert float(seconds) < 30.0 and time.monotonic() - start < 60.0


def test_under_torchrun_a_dead_rank_ends_the_job_naming_it(tmp_path: Path) -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           str(WORKER), "die", str(tmp_path)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0 and time.monotonic() - start < 90.0
    assert "exitcode  : 3" in proc.stderr and "rank      : 1" in proc.stderr, proc.stderr[-3000:]


def _train_args(run_dir: Path, steps: int) -> list[str]:
    return ["train", "ppo", "--env", "drl/Pendulum-v0", "--num-envs", "4", "--steps", str(steps), "--set",
            "algo.num_steps=32", "--set", "algo.minibatch_size=64", "--set", "algo.normalize_obs=true", "--set",
            "eval_interval=256", "--set", "env.num_eval_envs=2", "--set", "eval_episodes=2", "--set",
            "checkpoint_interval=256", "--run-dir", str(run_dir), "--no-progress"]


def test_two_rank_run_writes_from_rank_0_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A 2-rank PPO run of 2 iterations (256 env steps each: 32 steps x 4 envs x 2 ranks; 500 rounds up to 512,
    said once, by rank 0): rank 1 never writes in the run folder and prints nothing; global_step counts both
    ranks' env steps; the run state records 2 processes, so a resume with 1 is refused before anything is
    written."""
    from drl.cli import main

    run = tmp_path / "run"
    procs = _ranks("train", tmp_path, *_train_args(run, 500), extra_env={"DRL_TEST_RECORD_SYNC": "1"})
    _ok(procs)
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["256", "512"]
    _check_synced(tmp_path, load_checkpoint(run / "checkpoints" / "latest.pt"), [256, 512])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 512 and summary["ranks"] == 2
    latest = load_checkpoint(run / "checkpoints" / "latest.pt")["runner"]
    assert latest["global_step"] == 512 and latest["nproc"] == 2
    writes = json.loads((tmp_path / "writes-rank1.json").read_text())
    assert writes and [w for w in writes if str(tmp_path) in w and "writes-rank" not in w] == []
    assert procs[1].stdout == "" and "run folder" in procs[0].stdout
    assert procs[0].stderr.count("rounded up to 512") == 1 and "rounded" not in procs[1].stderr
    before = _folder_state(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--steps", "210000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"drl train: error: '{run}' was trained with 2 processes, this resume would use 1 (the env steps "
                   f"per iteration would change): resume it with --nproc 2"]
    assert _folder_state(run) == before


def _check_synced(out: Path, checkpoint: dict, steps: list[int]) -> None:
    """The runner merged the obs statistics once per iteration: after each merge both ranks hold bitwise equal
    statistics counting every env step of both ranks so far (``steps``: global_step after each iteration) once,
    and the checkpoint holds the last merge's."""
    synced = [torch.load(out / f"synced-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(synced[0]) == len(synced[1]) == len(steps)
    for a, b, step in zip(*synced, steps, strict=True):
        assert a.keys() == b.keys() == {"policy"}
        assert torch.equal(a["policy"], b["policy"])
        assert a["policy"][-1].item() == pytest.approx(step + 1e-4, rel=1e-12)
    saved = checkpoint["agent_state"]["obs_normalizers"]
    assert torch.equal(torch.cat([saved["policy.mean"], saved["policy.var"], saved["policy.count"].reshape(1)]),
                       synced[0][-1]["policy"])


def test_two_rank_sac_run_merges_the_obs_statistics_each_iteration(tmp_path: Path) -> None:
    """SAC with ``normalize_obs`` on 2 ranks of 2 envs, iterations of 8 vectorised steps (32 env steps of both
    ranks), 96 steps: the off-policy runner merges the statistics at each iteration's end (see
    :func:`_check_synced`); the parameters are compared every iteration by the runner itself."""
    run = tmp_path / "run"
    args = ["train", "sac", "--env", "drl/Pendulum-v0", "--num-envs", "2", "--steps", "96", "--set",
            "algo.num_steps=8", "--set", "algo.learning_starts=32", "--set", "algo.batch_size=16", "--set",
            "algo.normalize_obs=true", "--set", "algo.compile=false", "--set", "eval_interval=0", "--set",
            "env.num_eval_envs=2", "--set", "eval_episodes=2", "--run-dir", str(run), "--no-progress"]
    _ok(_ranks("train", tmp_path, *args, extra_env={"DRL_TEST_RECORD_SYNC": "1"}))
    _check_synced(tmp_path, load_checkpoint(run / "checkpoints" / "latest.pt"), [32, 64, 96])


def _folder_state(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder``: (size, mtime in ns), to show that nothing was written."""
    return {str(f.relative_to(folder)): (f.stat().st_size, f.stat().st_mtime_ns) for f in folder.rglob("*")
            if f.is_file()}


def test_agents_not_made_for_nproc_are_refused_before_launching(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``train happo --nproc 2`` (HAPPO has no gradient averaging): one line naming the agent and the agents that
    have ``distributed = True`` (PPO, SAC, TD3 and their subclasses), exit 2, no run folder, torchrun not run."""
    from drl.agents.happo import HAPPO
    from drl.agents.subpo import SubPO
    from drl.cli import main
    from drl.registry import distributed_agents

    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("torchrun was started"))
    assert SubPO.distributed and not getattr(HAPPO, "distributed", False)
    supported = distributed_agents()
    assert {"ppo", "sac", "td3", "subpo"} <= set(supported) and "happo" not in supported
    run = tmp_path / "run"
    assert main(["train", "happo", "--nproc", "2", "--steps", "3200", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"drl train: error: --nproc 2: agent 'happo' is not made for distributed training (its updates "
                   f"do not average gradients across processes); agents that support --nproc: {supported}"]
    assert not run.exists()


def test_bad_input_under_nproc_is_one_line_from_the_launcher(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``--nproc`` the launcher resolves the config and does the resume checks itself: an unknown key, a
    resume with another number of processes and ``--steps`` below the done steps are one line each, exit 2,
    nothing written, torchrun never started."""
    from drl.cli import main

    monkeypatch.setattr(distributed, "launch", lambda *a: pytest.fail("torchrun was started"))
    run = tmp_path / "run"
    assert main(["train", "ppo", "--nproc", "2", "--set", "algo.foo=1", "--run-dir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("drl train: error: unknown config key 'algo.foo'"), err
    assert not run.exists()
    args = _train_args(run, 256)
    assert main(args[:args.index("--steps")] + ["--steps", "256", *args[args.index("--steps") + 2:]]) == 0
    capsys.readouterr()
    before = _folder_state(run)
    assert main(["train", "--resume", str(run), "--nproc", "3", "--steps", "512"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"drl train: error: '{run}' was trained with 1 process, this resume would use 3 (the env steps per "
        "iteration would change): resume it with no --nproc"]
    assert main(["train", "--resume", str(run), "--nproc", "1", "--steps", "128"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"drl train: error: --steps 128 is below the 256 steps '{run}' has already done; give --steps >= 256 to "
        "extend it"]
    assert _folder_state(run) == before


def test_torchrun_main_exit_codes(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """The launcher's torchrun: a stop signal -> 128 + signal, quietly; a failed rank -> its exit code with
    torchrun's report (no Python traceback); a rank stopped by SIGINT -> 130, quietly."""
    import signal

    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def raising(err: BaseException):
        def main(args: list[str]) -> None:
            raise err
        return main

    monkeypatch.setattr(torchrun, "main", raising(SignalException("got SIGINT", signal.SIGINT)))
    assert distributed.torchrun_main([]) == 130 and capsys.readouterr().err == ""
    for code, report in ((3, True), (130, False), (-9, True)):
        failure = ProcessFailure(local_rank=1, pid=123, exitcode=code, error_file="")
        monkeypatch.setattr(torchrun, "main", raising(ChildFailedError("drl", {1: failure})))
        assert distributed.torchrun_main([]) == (code if code > 0 else 137)
        err = capsys.readouterr().err
        assert ("rank      : 1" in err) is report and "Traceback" not in err


def test_a_rank_dying_in_training_stops_rank_0_with_one_error_line(tmp_path: Path) -> None:
    start = time.monotonic()
    procs = _ranks("train", tmp_path, *_train_args(tmp_path / "run", 1024), timeout=90.0,
                   extra_env={"DRL_TEST_DIE_AFTER_ITERATION": "1"})
    assert procs[1].returncode == 3
    assert procs[0].returncode == 6, procs[0].stderr[-3000:]
    last = procs[0].stderr.strip().splitlines()[-1]
    # rank 0 waited for rank 1 in the first collective after its death: the comparison of their parameters
    assert last.startswith("drl train: error: rank 0 of 2: comparing the ranks' parameters failed, another rank "
                           "died or hung (torchrun's report names the rank that failed first): "), last
    assert "Traceback" not in procs[0].stderr and time.monotonic() - start < 90.0


@pytest.mark.slow
def test_torchrun_run_resumes(tmp_path: Path) -> None:
    """``drl train --nproc 2`` (torchrun) for 2 iterations, then ``--resume --nproc 2`` to 4: the rows and
    checkpoints continue from the checkpoint, both ranks in step (compared every iteration)."""
    run = tmp_path / "run"

    def drl(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "drl", *args, "--nproc", "2"], cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]

    drl(*_train_args(run, 512))
    first = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert first["runner"]["global_step"] == 512
    drl("train", "--resume", str(run), "--steps", "1024", "--no-progress")
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["256", "512", "768", "1024"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 1024 and summary["ranks"] == 2
    resumed = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert resumed["runner"]["global_step"] == 1024
    assert not torch.equal(first["agent_state"]["model"]["actor_body.0.weight"],
                           resumed["agent_state"]["model"]["actor_body.0.weight"])


def test_stop_signals_of_several_ranks_never_abort_a_block() -> None:
    """Under torchrun a stop signal must not abort the update (or stop a rollout early) on one rank: the
    ranks would leave it at different collectives and hang; the stop is taken where they agree on it."""
    import signal

    from drl.runners.common import StopSignals, TrainingInterrupted

    ranks = StopSignals(collective=True)
    with ranks.interruptible():
        ranks.request(signal.SIGINT)
    with ranks.interruptible():
        pass
    assert ranks.requested and ranks.signum == signal.SIGINT
    alone = StopSignals()
    with pytest.raises(TrainingInterrupted), alone.interruptible():
        alone.request(signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_of_the_launcher_waits_for_the_ranks(tmp_path: Path) -> None:
    """SIGINT to ``drl train --nproc 2`` (a terminal's Ctrl-C reaches the launcher alone: torchrun runs in a
    session of its own): the launcher forwards it and waits, so the ranks' checkpoint and rank 0's resume line
    come before it exits 130, without torchrun's traceback; the run then resumes with --nproc 2."""
    import signal

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "drl", *_train_args(run, 10**7), "--nproc", "2"], cwd=ROOT,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120.0
    while not (run / "checkpoints" / "latest.pt").is_file():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "SignalException" not in stderr, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("drl train: interrupted by SIGINT at step ") and f"--resume {run}" in last, last
    summary = json.loads((run / "summary.json").read_text())
    assert summary["interrupted"] and summary["ranks"] == 2


# --- benchmarks/distributed.py --------------------------------------------------------------
def _bench_run(agent: str, nproc: int, seed: int, sps: float, final: float) -> dict:
    return {"agent": agent, "env": "drl/Pendulum-v0", "nproc": nproc, "variant": f"{agent}-p{nproc}", "seed": seed,
            "train_sps": sps, "final": final, "points": [{"step": 512, "eval_return": final - 10.0},
                                                         {"step": 1024, "eval_return": final}],
            "config": {"file": f"configs/{agent}/drl-Pendulum-v0.yaml", "steps": 1024}}


def test_distributed_benchmark_summary_report_and_plot_from_hand_runs(tmp_path: Path) -> None:
    from benchmarks.distributed import summarise, write_plot, write_report

    runs = [_bench_run("ppo", 1, 0, 1000.0, -200.0), _bench_run("ppo", 1, 1, 1200.0, -300.0),
            _bench_run("ppo", 2, 0, 1500.0, -250.0), _bench_run("ppo", 2, 1, 1700.0, -150.0),
            {"agent": "ppo", "env": "drl/Pendulum-v0", "nproc": 4, "variant": "ppo-p4", "seed": 0,
             "skipped": "4 processes need 4 GPUs", "points": []}]
    summary = summarise(runs)
    one, two, four = summary
    assert one["train_sps"] == 1100.0 and one["efficiency"] == 1.0
    assert two["train_sps"] == 1600.0 and two["efficiency"] == pytest.approx(1600.0 / 2200.0)
    assert two["final_mean"] == -200.0 and two["final_std"] == 50.0
    assert four["skipped"] == "4 processes need 4 GPUs" and four["efficiency"] is None and four["seeds"] == 0
    meta = {"date": "2026-12-01", "command": "python -m benchmarks.distributed", "seeds": 2, "device": "cpu",
            "machine": {"cpu": "x", "usable_cores": 2, "gpu": []}, "versions": {"torch": "2"}, "load_start": 1,
            "load_end": 1, "elapsed_s": 3}
    report = write_report({"meta": meta, "runs": runs, "summary": summary}, tmp_path).read_text()
    assert "| ppo | 2 | 1,600 | 0.73 | -200.0 +- 50.0 | 2 |" in report
    assert "| ppo | 4 | skipped: 4 processes need 4 GPUs |" in report
    assert write_plot({"meta": meta, "runs": runs, "summary": summary}, tmp_path).is_file()


def test_distributed_benchmark_commands_and_dry_run(capsys: pytest.CaptureFixture) -> None:
    from benchmarks.distributed import command, main, parse_args, skip_reason

    args = parse_args(["--steps", "2048"])
    cmd = command("sac", "drl/Pendulum-v0", 2, 3, args, Path("r"))
    assert cmd[1:5] == ["-m", "drl", "train", "sac"] and cmd[-2:] == ["--nproc", "2"] and "--steps" in cmd
    assert "--nproc" not in command("sac", "drl/Pendulum-v0", 1, 3, args, Path("r"))
    args = parse_args(["--set", "algo.normalize_obs=true", "--set", "seed=1"])
    cmd = command("ppo", "drl/Pendulum-v0", 2, 3, args, Path("r"))
    assert cmd[-6:] == ["--set", "algo.normalize_obs=true", "--set", "seed=1", "--nproc", "2"]
    assert skip_reason(2, "cpu") is None
    assert main(["--dry-run", "--nproc", "1", "2"]) == 0
    assert "2 processes" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_args(["--nproc", "0"])


@pytest.mark.slow
def test_distributed_benchmark_end_to_end(tmp_path: Path) -> None:
    from benchmarks.distributed import main

    assert main(["--agents", "ppo", "--nproc", "1", "2", "--seeds", "1", "--steps", "8192", "--out",
                 str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["ranks"] for r in results["runs"]] == [1, 2] and all(r["steps"] == 8192 for r in results["runs"])
    assert (tmp_path / "report.md").is_file() and (tmp_path / "curves.png").is_file()
