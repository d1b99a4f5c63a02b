"""Data-parallel training on ``torch.distributed``, launched by ``torchrun`` (gloo on CPUs, NCCL on GPUs).

Every rank (process) runs the whole training loop on envs of its own; what keeps the ranks one run is
a few hooks, each a no-op in a single process:

* :func:`average_gradients_` - the optimisers (:class:`drl.optim.TrainStep`, :class:`drl.optim.FusedUpdate`)
  all-reduce their flat gradient buffer (one collective per step) and divide by the world size before
  clipping and Adam, so every rank applies the same update to the same parameters;
* :func:`drl.nn.normalization.merge_ranks` - the observation normalisers of PPO, SAC and TD3
  (:class:`drl.nn.RunningMeanStd` with ``rank_merge="boundary"``): during an iteration each rank folds in its
  own observations only (on the fast numba path); at the iteration boundary the runner calls the agent's
  ``sync_ranks()``, which all-gathers each rank's count, mean and variance since the last merge (one
  collective per iteration) and sets every rank's statistics to the exact merge (Chan et al.) of the
  statistics at the last merge with every rank's moments, in rank order: from then on every rank holds the
  statistics one process stepping all ranks' envs would hold (to float64 rounding);
* :func:`merge_moments` - other normalisers (``rank_merge="update"``: PPO's reward scaler, once per rollout,
  and the wrappers') merge each batch's count, mean and variance across ranks before folding it in (on GPUs
  each merge reads the counts back to the host: one sync per update of the statistics);
* :func:`mean_scalar` / :func:`any_rank` - decisions every rank must take alike (PPO's target-KL early
  stop, a stop signal) are taken on the rank mean / any rank;
* :func:`is_main` - rank 0 alone writes the run folder (config, metrics, checkpoints, summary) and
  evaluates; :func:`check_in_sync` compares the ranks' policies once per iteration, so an agent whose
  optimiser does not average gradients is stopped with a clear error instead of silently diverging.

Conventions (those of rsl_rl's multi-GPU runner): ``env.num_envs`` and ``algo.minibatch_size`` /
``algo.batch_size`` are **per rank**; ``total_steps``, ``global_step`` and ``learning_starts`` count the env
steps of all ranks together. Rank ``r`` seeds its envs from ``seed + r * num_envs`` (:func:`rank_seed`): with
the gymnasium rule that env copy ``i`` gets ``seed + i``, the ranks' copies get the seeds one process with
``world_size * num_envs`` copies would.

Failures. Every collective runs under the process group's timeout (``drl train --dist-timeout``, default
300 s); a collective that fails (a peer died: gloo notices at once) or times out (NCCL) raises
:class:`DistributedError` with the rank and what it was doing; torchrun then stops the other ranks and
names the rank that failed first.
"""

from __future__ import annotations

import datetime
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistributedError", "init", "shutdown", "active", "rank", "world_size", "is_main", "launched",
           "rank_seed", "rank_device", "average_gradients_", "mean_scalar", "mean_std", "any_rank", "merge_moments",
           "fold_moments", "all_gather_rows",
           "check_agree", "check_in_sync", "torchrun_command", "launch", "torchrun_main", "NullLogger",
           "DEFAULT_TIMEOUT_S"]

DEFAULT_TIMEOUT_S = 300.0
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """A collective failed or timed out: another rank died or hung (torchrun's report names it)."""


def launched() -> bool:
    """Whether this process was started by torchrun (its environment variables are set)."""
    return all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def init(device: str | torch.device = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Join the process group torchrun set up (idempotent); False when not launched by torchrun.

    The backend is gloo, plus NCCL for CUDA tensors when ``device`` is a CUDA device (then this rank's
    current CUDA device becomes ``LOCAL_RANK``). ``timeout_s`` bounds every collective.

    Raises:
        DistributedError: the rendezvous with the other ranks failed.
    """
    if dist.is_initialized():
        return True
    if not launched() or int(os.environ["WORLD_SIZE"]) < 1:
        return False
    cuda = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as err:
        raise DistributedError(f"rank {os.environ['RANK']}: joining the {os.environ['WORLD_SIZE']} ranks at "
                               f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} failed: {err}") from err
    return True


def shutdown() -> None:
    """Leave the process group (at the end of a run; a no-op without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """More than one rank: the hooks communicate."""
    return dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or no process group): the process that writes the run folder."""
    return rank() == 0


def rank_seed(seed: int, num_envs: int) -> int:
    """This rank's seed: ``seed + rank * num_envs`` (rank 0: ``seed``)."""
    return seed + rank() * num_envs


def rank_device(device: torch.device) -> torch.device:
    """``cuda`` without an index becomes this rank's GPU (``cuda:LOCAL_RANK``, set by :func:`init`), so envs
    that pick their GPU from the device string (MuJoCo Warp) use it too; anything else is returned as it is."""
    if device.type == "cuda" and device.index is None and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn a failed collective into one :class:`DistributedError` line naming this rank and ``what``."""
    try:
        yield
    except (RuntimeError, ConnectionError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DistributedError(f"rank {rank()} of {world_size()}: {what} failed, another rank died or hung "
                               f"(torchrun's report names the rank that failed first): {first}") from err


def average_gradients_(gradient: torch.Tensor) -> torch.Tensor:
    """``gradient [P]`` replaced in place by its mean over the ranks (one all-reduce); returned."""
    if active():
        with _collective("the gradient all-reduce"):
            dist.all_reduce(gradient)
        gradient.div_(world_size())
    return gradient


def mean_scalar(x: torch.Tensor) -> torch.Tensor:
    """The rank mean of a 0-d tensor (a new tensor; ``x`` itself without other ranks)."""
    if not active():
        return x
    y = x.detach().clone()
    with _collective("a scalar all-reduce"):
        dist.all_reduce(y)
    return y.div_(world_size())


def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean and the (Bessel-corrected) std of every rank's ``x`` together: 0-d tensors in ``x``'s dtype,
    from the ranks' count, mean and variance merged exactly (:func:`merge_moments`, float64). Without other
    ranks: ``x.mean(), x.std()``. Not differentiable: for statistics of data (PPO's advantages)."""
    if not active():
        return x.mean(), x.std()
    mean, std = mean_std_rows(x.detach().reshape(1, -1))
    return mean.reshape(()), std.reshape(())


def mean_std_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mean_std` of each row of ``x [K, M]`` over every rank's row k together, in one collective: ``(mean
    [K], std [K])`` in ``x``'s dtype (e.g. the advantages of an epoch's K minibatches). Without other ranks:
    ``x.mean(1), x.std(1)``."""
    if not active():
        return x.mean(1), x.std(1)
    flat = x.detach().double()
    n, mean, var = merge_moments(flat.shape[1], flat.mean(1), flat.var(1, correction=0))
    std = (var * (n / max(n - 1.0, 1.0))).sqrt()
    return mean.to(x.dtype), std.to(x.dtype)


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` holds on any rank (e.g. a stop signal reached one of them)."""
    if not active():
        return flag
    t = torch.tensor([int(flag)])  # a CPU tensor: gloo (every backend here has it), no GPU sync
    with _collective("agreeing on a stop"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_gather_rows(x: torch.Tensor, what: str) -> torch.Tensor:
    """Every rank's ``x[*S]`` stacked in rank order: ``[world_size, *S]`` (one all-gather; ``x[None]`` without
    other ranks). ``what`` names the collective in the :class:`DistributedError` a failure raises."""
    if not active():
        return x[None]
    gathered = [torch.empty_like(x) for _ in range(world_size())]
    with _collective(what):
        dist.all_gather(gathered, x.contiguous())
    return torch.stack(gathered)


def merge_moments(count: float | torch.Tensor, mean: torch.Tensor, var: torch.Tensor
                  ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Every rank's batch moments merged into the moments of all their samples together.

    ``count`` samples with ``mean[*S]`` and population variance ``var[*S]`` on each rank, folded in rank order
    by :func:`fold_moments` (Chan, Golub & LeVeque 1979); every rank gets the same result
    (one all-gather of ``[1 + 2 prod(S)]`` float64 values). Without other ranks the inputs come back.
    """
    if not active():
        return count, mean, var
    shape = mean.shape
    mine = torch.cat([torch.tensor([float(count)], dtype=torch.float64, device=mean.device),
                      mean.reshape(-1).double(), var.reshape(-1).double()])
    gathered = [torch.empty_like(mine) for _ in range(world_size())]
    with _collective("merging statistics across ranks"):
        dist.all_gather(gathered, mine)
    size = mean.numel()
    n, m, v = fold_moments((float(part[0]), part[1:1 + size], part[1 + size:]) for part in gathered)
    return n, m.reshape(shape).to(mean.dtype), v.reshape(shape).to(var.dtype)


def fold_moments(parts: Iterable[tuple[float, torch.Tensor, torch.Tensor]]
                 ) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``(count, mean, var)`` of all the samples of ``parts`` (each ``(n, mean[*S], population var[*S])``), folded
    in the order given with Chan, Golub & LeVeque's (1979) pairwise merge: ``n = n_a + n_b``,
    ``mean = mean_a + (mean_b - mean_a) n_b / n``,
    ``var = (n_a var_a + n_b var_b + (mean_b - mean_a)^2 n_a n_b / n) / n``.
    The first part is taken as it is; a later part with ``n <= 0`` changes nothing.

    Raises:
        ValueError: ``parts`` is empty.
    """
    n, m, v = 0.0, None, None
    for n_b, m_b, v_b in parts:
        if m is None:
            n, m, v = n_b, m_b, v_b
            continue
        if n_b <= 0:
            continue
        total = n + n_b
        delta = m_b - m
        m = m + delta * (n_b / total)
        v = (v * n + v_b * n_b + delta * delta * (n * n_b / total)) / total
        n = total
    if m is None or v is None:
        raise ValueError("fold_moments needs at least one (count, mean, var) part")
    return n, m, v


def check_agree(value: int, what: str) -> None:
    """Raise :class:`DistributedError` naming ``what`` unless every rank passes the same ``value``."""
    if not active():
        return
    gathered = [torch.zeros(1, dtype=torch.int64) for _ in range(world_size())]
    with _collective(f"comparing {what}"):
        dist.all_gather(gathered, torch.tensor([int(value)], dtype=torch.int64))
    values = [int(g) for g in gathered]
    if len(set(values)) > 1:
        raise DistributedError(f"the ranks disagree on {what}: {values} (rank by rank)")


def check_in_sync(module: torch.nn.Module | None, what: str) -> None:
    """Raise :class:`DistributedError` unless every rank holds the same floating tensors in ``module``.

    Compares a fingerprint (sum and sum of squares of every floating parameter and buffer, float64): ranks
    that applied the same updates to the same start hold bitwise equal tensors, so any difference means
    an optimiser that does not average its gradients (or a rank that skipped an update).
    """
    if not active() or not isinstance(module, torch.nn.Module):
        return
    tensors = [t for t in module.state_dict().values() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not tensors:
        return
    device = tensors[0].device
    total = torch.zeros(2, dtype=torch.float64, device=device)
    for t in tensors:
        x = t.detach().to(device=device, dtype=torch.float64)
        total[0] += x.sum()
        total[1] += (x * x).sum()
    gathered = [torch.empty_like(total) for _ in range(world_size())]
    with _collective("comparing the ranks' parameters"):
        dist.all_gather(gathered, total)
    if any(not torch.equal(g, gathered[0]) for g in gathered[1:]):
        raise DistributedError(f"the ranks' policies differ after {what}: this agent's optimiser does not average "
                               "its gradients across ranks (distributed training needs the agent's steps to go "
                               "through drl.optim.TrainStep or FusedUpdate, as PPO, SAC and TD3 do)")


def torchrun_command(nproc: int, argv: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N [extra] -m drl ARGV``: one node,
    a free rendezvous port picked by torchrun."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *extra,
            "-m", "drl", *argv]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``drl ARGV`` as ``nproc`` ranks under torchrun on this machine; returns the ranks' exit status.

    torchrun runs in a session of its own (through :func:`torchrun_main`), so a Ctrl-C in the terminal
    reaches this launcher alone: SIGINT / SIGTERM are forwarded to torchrun, which passes them to the ranks
    (each stops at its next step and writes a checkpoint) and waits for them; this launcher waits too, so
    rank 0's resume line comes before the shell prompt.
    """
    command = torchrun_command(nproc, argv)
    print(f"launching: {shlex.join(command[1:])}", file=sys.stderr, flush=True)
    env: dict[str, Any] = dict(os.environ)
    for name in _TORCHRUN_VARS:  # a launcher inside a torchrun job starts a job of its own
        env.pop(name, None)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", str(_SHUTDOWN_TIMEOUT_S))  # time for the ranks' checkpoints
    proc = subprocess.Popen([sys.executable, "-m", "drl.distributed", *command[3:]], env=env, start_new_session=True)

    def forward(signum: int, _frame: Any) -> None:
        with suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


_SHUTDOWN_TIMEOUT_S = 600  # how long torchrun waits for stopped ranks (their last checkpoint) before SIGKILL


def torchrun_main(args: Sequence[str]) -> int:
    """torchrun (``torch.distributed.run``) with ``args``, for :func:`launch`: a stop signal or a failed
    rank ends it with the ranks' exit status (128 + signal for a stop) and torchrun's report of the failed
    rank, without torchrun's own Python traceback."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main

    try:
        main(list(args))
    except SignalException as err:  # torchrun passed the signal to the ranks and waited for them
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 128 - failure.exitcode  # -9: killed by SIGKILL
        if code not in (128 + signal.SIGINT, 128 + signal.SIGTERM):  # a stopped rank said why itself
            print(f"drl train: {err.name} failed:\n{err.format_msg()}", file=sys.stderr, flush=True)
        return code
    return 0


class NullLogger:
    """What ranks other than 0 log to: nothing (the run's :class:`drl.logging.RunLogger` is rank 0's)."""

    def log(self, row: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


if __name__ == "__main__":  # what `drl train --nproc N` starts (launch): torchrun ARGS
    sys.exit(torchrun_main(sys.argv[1:]))
