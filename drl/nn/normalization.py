"""Running statistics for observation normalisation and reward scaling.

Both run once per env step, so they are built to cost little there:

* on the CPU with numba, a step is one compiled call (:mod:`drl.nn.kernels`) that updates the
  float64 statistics in place and writes the float32 result; with one env its values are bitwise
  those of the definition below, with several equal to float64 rounding (tested);
* elsewhere (a GPU, no numba) a step is a handful of in-place torch ops and no host sync: the batch
  moments in one ``var_mean`` (float64), the merge in four in-place ops with the sample count kept on
  the host (a float known without reading the device), the float32 mean and std cached until the
  statistics change; an update + normalise is 14 ops (13 kernels on CUDA), a normalise with unchanged
  statistics 3;
* on CUDA, with ``compile_cuda`` (PPO sets it when ``algo.compile`` holds), the update + normalise is
  one ``torch.compile``d graph (a few fused kernels, the count updated on the device too), which also
  hands back the rounded mean and std for the normalisations that follow; if compiling fails it warns
  once and the eager ops above run instead.

The definition (Chan et al.'s parallel update of a mean and variance with a batch of ``B``)::

    delta = batch_mean - mean
    total = count + B
    mean  = mean + delta * B / total
    var   = (var * count + batch_var * B + delta**2 * count * B / total) / total
    count = total

in float64, from ``mean = 0, var = 1, count = 1e-4``; ``normalize(x) = clamp((x - mean) / sqrt(var +
eps), -clip, clip)`` with the mean and std rounded to ``x``'s dtype first. The torch path computes the
merge as ``mean += delta * B/total``, ``var = var * count/total + (batch_var + delta**2 * count/total) *
B/total`` (a ``lerp`` once ``B/total < 1/2``): the same values to float64 rounding (tested).

Under torchrun (:mod:`drl.distributed`) a :class:`RunningMeanStd` merges the ranks' statistics in one of two
ways (``rank_merge``): ``"update"`` merges every batch's moments across the ranks before folding it in (one
collective per update: every rank always holds all ranks' statistics); ``"boundary"`` (the observation
normalisers of PPO, SAC and TD3) lets each rank fold in only its own batches, on the fast path, and merges
once per iteration in :func:`merge_ranks`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from drl import distributed
from drl.nn import kernels

__all__ = ["RunningMeanStd", "RewardScaler", "merge_ranks"]

# On the CPU the kernels take every batch: measured at 17 features, one thread, update + two
# normalisations cost 16 us (torch: 133) at 1 row, 160 (1,113) at 4,096 and 675 (5,213; with two
# threads 9,690) at 32,768: one pass over the rows beats torch's strided column reductions.
_KERNELS = kernels.numba is not None


# where the compiled path may run (a test adds "cpu", where inductor builds C++ kernels)
_COMPILE_DEVICES: tuple[str, ...] = ("cuda",)


class _Compiled:
    """The process's compiled graph: built on first use, dropped for good if compiling fails."""

    update_normalize: Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
    failed = False  # a compile failed: eager from then on
    checked = False  # a first call succeeded: later calls run unguarded
    triton: bool | None = None  # whether inductor can build CUDA kernels (looked up once)


def _compilable(x: torch.Tensor) -> bool:
    """Whether ``x`` may take the compiled path: a floating tensor on a device in ``_COMPILE_DEVICES`` where
    inductor can build kernels (Triton on CUDA), a single process (across ranks the moments merge eagerly)."""
    device = x.device.type
    if _Compiled.failed or device not in _COMPILE_DEVICES or not x.is_floating_point() or distributed.active():
        return False
    if device == "cuda":
        if _Compiled.triton is None:
            from torch.utils._triton import has_triton
            _Compiled.triton = has_triton()
        return _Compiled.triton
    return True


def _fused_update_normalize(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor,
                            epsilon: float, clip: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:meth:`RunningMeanStd.update_normalize`'s arithmetic as one graph (what gets compiled).

    ``x[B, D]``; ``mean``, ``var`` ``[D]`` and ``count[1]``, float64 views of the buffers (inductor drops
    writes to 0-d inputs), updated in place. Returns ``(normalised x [B, D], mean [D], std [D])``, the last
    two rounded to ``x``'s dtype (kept for later normalisations with these statistics).

    The quotient of the rounded values is taken in float64 and rounded back: float32 division in Triton is
    not correctly rounded, float64 division is, and a float64 quotient of two float32 values rounded to
    float32 is the correctly rounded float32 quotient (53 >= 2 * 24 + 2), so the result has the eager bits.
    """
    batch_var, batch_mean = torch.var_mean(x.to(torch.float64), 0, correction=0)
    total = count + x.shape[0]
    weight = (x.shape[0] / total)[0]
    keep = (count / total)[0]
    delta = batch_mean - mean
    mean.add_(delta * weight)
    var.mul_(keep).add_((batch_var + delta * delta * keep) * weight)
    count.copy_(total)
    dtype = x.dtype
    mean_x, std_x = mean.to(dtype), torch.sqrt(var + epsilon).to(dtype)
    out = ((x - mean_x).double() / std_x.double()).to(dtype).clamp(-clip, clip)
    return out, mean_x, std_x


def _version(t: torch.Tensor) -> int | None:
    """``t``'s in-place modification counter; None for inference tensors, which keep none."""
    try:
        return t._version
    except RuntimeError:
        return None


class _Cached:
    """A value derived from some tensors, valid while they are the same objects, unmodified in place."""

    __slots__ = ("tensors", "versions", "value")

    def __init__(self, tensors: tuple[torch.Tensor, ...], value: Any):
        self.tensors = tensors
        self.versions = tuple(_version(t) for t in tensors)
        self.value = value

    def valid_for(self, tensors: tuple[torch.Tensor, ...]) -> bool:
        if any(a is not b for a, b in zip(self.tensors, tensors, strict=True)):
            return False
        versions = tuple(_version(t) for t in tensors)
        return None not in versions and versions == self.versions


class _Caches:
    """What a normaliser derives from its buffers (a plain object: nn.Module attribute access is slow)."""

    __slots__ = ("views", "count", "scale", "flat", "base")

    def __init__(self) -> None:
        self.views: tuple | None = None  # (mean, var, count tensors, shape, (mean, var, count) numpy views)
        self.flat: tuple | None = None  # (mean, var, count tensors, their views [D], [D], [1])
        self.count: _Cached | None = None  # count as a Python float
        self.scale: dict[tuple[str, torch.dtype], _Cached] = {}  # mean / std in a dtype, for normalize
        # rank_merge "boundary" under torchrun: (count, mean, var) as of the last merge of the ranks (the
        # statistics every rank shares); None: not taken yet (taken before this rank's first fold)
        self.base: tuple[float, torch.Tensor, torch.Tensor] | None = None


class RunningMeanStd(nn.Module):
    """Running mean / variance over the batch axis (Chan et al. parallel update, float64).

    Buffers ``mean[*shape]``, ``var[*shape]`` and ``count[]`` are saved with the module's state
    dict, so a checkpoint restores the statistics.

    Across ranks (torchrun; in one process both modes are the definition above, bitwise):

    * ``rank_merge="update"``: :meth:`update` first merges the batch's count, mean and variance with the other
      ranks' batches (:func:`drl.distributed.merge_moments`, one collective per update), so every rank folds
      in all ranks' batches and holds identical statistics at every step;
    * ``rank_merge="boundary"``: between two merges each rank folds in only its own batches (the numba kernels
      take them, as in one process), so within an iteration the ranks' statistics differ; at the iteration
      boundary every rank calls :func:`merge_ranks`, which sets every rank's statistics to
      ``merge(statistics at the last merge, rank 0's moments since then, rank 1's, ...)`` (Chan et al.'s
      merge, ranks in order). After it every rank holds identical statistics, equal to float64 rounding to
      those of one process that folded in every rank's batches.

    Args:
        shape: per-sample shape (e.g. ``(obs_dim,)``).
        clip: normalised values are clipped to ``[-clip, clip]``.
        epsilon: added to the variance before the square root.
        rank_merge: ``"update"`` or ``"boundary"``, see above.
        compile_cuda: on CUDA, run :meth:`update_normalize` of floating batches as one ``torch.compile``d
            graph (a few fused kernels instead of 13; :meth:`normalize` then reuses the rounded mean and std
            it returns: 3 ops). The first call compiles (seconds), so it pays off in long runs only. If
            compiling fails it warns once and stays eager.

    Raises:
        ValueError: ``rank_merge`` is neither.
    """

    def __init__(self, shape: tuple[int, ...], clip: float = 10.0, epsilon: float = 1e-8,
                 rank_merge: Literal["update", "boundary"] = "update", compile_cuda: bool = False):
        super().__init__()
        if rank_merge not in ("update", "boundary"):
            raise ValueError(f"rank_merge must be 'update' or 'boundary', got {rank_merge!r}")
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))
        self.clip = clip
        self.epsilon = epsilon
        self.rank_merge = rank_merge
        self.compile_cuda = compile_cuda
        self._caches = _Caches()
        self._caches.count = _Cached((self.count,), 1e-4)

    # --- caches (never saved; a copy keeps the merge base) --------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # deepcopy / pickle: the copy builds its own caches
        state["_caches"] = _Caches()
        base = self._caches.base
        if base is not None:
            state["_caches"].base = (base[0], base[1].clone(), base[2].clone())
        return state

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> RunningMeanStd:
        base = self._caches.base
        count = self._buffers["count"]
        known = self._caches.count
        known = known.value if known is not None and known.valid_for((count,)) else None
        self._caches = _Caches()  # .to(), .double() ...: new buffers
        self._caches.base = base  # moved to the buffers' device when the ranks merge
        out = super()._apply(fn, *args, **kwargs)
        moved = self._buffers["count"]
        if known is not None and count.dtype is moved.dtype is torch.float64:  # the same value: still known
            self._caches.count = _Cached((moved,), known)
        return out

    def stats_changed(self) -> None:
        """Call after writing the statistics through :meth:`numpy_views` (as the kernels do): no version
        counter sees such writes, so what was derived from the buffers is dropped."""
        caches = self._caches
        caches.count = None
        caches.scale = {}

    def numpy_views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(mean[D], var[D], count[1])``, float64 numpy views of the buffers (D = prod(shape)); None
        unless they are on the CPU."""
        buffers = self._buffers
        mean, var, count = buffers["mean"], buffers["var"], buffers["count"]
        views = self._caches.views
        if views is None or views[0] is not mean or views[1] is not var or views[2] is not count:
            arrays = None
            if mean.is_cpu and var.is_cpu and count.is_cpu:
                arrays = tuple(t.detach().reshape(-1).numpy() for t in (mean, var, count))
            views = self._caches.views = (mean, var, count, mean.shape, arrays)
        return views[4]

    def kernel_views(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """:meth:`numpy_views` if ``x[B, *shape]`` takes the numba kernel (CPU, float32, B >= 1, numba
        installed; under torchrun only with ``rank_merge="boundary"``: with ``"update"`` the statistics merge
        in :meth:`update`), else None. A caller that folds ``x`` in through the views must call
        :meth:`stats_changed` afterwards."""
        if not (_KERNELS and x.is_cpu and x.dtype is torch.float32):
            return None
        if distributed.active() and not self._folds_locally():
            return None
        shape = x.shape
        if not shape or shape[0] < 1:
            return None
        arrays = self.numpy_views()
        return arrays if arrays is not None and shape[1:] == self._caches.views[3] else None

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        loaded = state_dict.get(prefix + "count")
        count = self._buffers["count"]
        if isinstance(loaded, torch.Tensor) and loaded.shape == count.shape:  # read now, not on the next step
            self._caches.count = _Cached((count,), float(loaded))
        self._caches.base = None  # loaded statistics (every rank loads the same): the next base

    def _host_count(self) -> float:
        """The count as a Python float: kept beside the buffer by every update, so a step reads no device
        value (``.item()`` only after the buffer was written some other way, e.g. ``count.fill_``)."""
        count = self._buffers["count"]
        cache = self._caches.count
        if cache is None or not cache.valid_for((count,)):
            cache = self._caches.count = _Cached((count,), count.item())
        return cache.value

    # --- the ranks (torchrun) --------------------------------------------------------------------
    def _folds_locally(self) -> bool:
        """Under torchrun: whether this rank folds its batches in on its own (``rank_merge="boundary"``); then
        the statistics as of the last merge are kept first, as the base :func:`merge_ranks` merges into."""
        if self.rank_merge != "boundary":
            return False
        if self._caches.base is None:
            buffers = self._buffers
            self._caches.base = (self._host_count(), buffers["mean"].detach().clone(),
                                 buffers["var"].detach().clone())
        return True

    def _moments_since_base(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """``(n, mean[*shape], var[*shape])``: the count and population moments of the rows this rank folded in
        since the base (float64; ``(0, 0, 0)`` for none), undoing Chan's merge of the base with them:
        ``n = count - n0``, ``mean_b = mean0 + (mean - mean0) count / n``,
        ``var_b = (count var - n0 var0 - (mean_b - mean0)^2 n0 n / count) / n``."""
        mean, var = self._buffers["mean"].detach(), self._buffers["var"].detach()
        base = self._caches.base
        if base is None:  # nothing folded in since the last merge (or the load)
            return 0.0, torch.zeros_like(mean), torch.zeros_like(var)
        n0, mean0, var0 = base[0], base[1].to(mean.device), base[2].to(var.device)
        count = self._host_count()
        n = float(round(count - n0))  # whole rows: exact whatever the count's fractional start
        if n <= 0:
            return 0.0, torch.zeros_like(mean), torch.zeros_like(var)
        delta = (mean - mean0).mul_(count / n)
        batch_mean = mean0 + delta
        batch_var = (var * count - var0 * n0 - delta.square() * (n0 * n / count)) / n
        return n, batch_mean, batch_var

    @torch.no_grad()
    def _set_merged(self, parts: Iterable[tuple[float, torch.Tensor, torch.Tensor]]) -> None:
        """Set the statistics to ``merge(base, *parts)`` (Chan et al., in the order given) and make them the new
        base. ``parts``: ``(n, mean, var)`` of every rank in rank order, float64 on the buffers' device."""
        mean_t, var_t, count_t = self._buffers["mean"], self._buffers["var"], self._buffers["count"]
        base = self._caches.base
        if base is None:
            base = (self._host_count(), mean_t.detach().clone(), var_t.detach().clone())
        else:
            base = (base[0], base[1].to(mean_t.device), base[2].to(var_t.device))
        n, mean, var = distributed.fold_moments(itertools.chain([base], parts))
        mean_t.copy_(mean.reshape(mean_t.shape))
        var_t.copy_(var.reshape(var_t.shape))
        count_t.fill_(n)
        self.stats_changed()
        self._caches.count = _Cached((count_t,), n)
        self._caches.base = (n, mean_t.detach().clone(), var_t.detach().clone())

    # --- the statistics -------------------------------------------------------------------------
    def update(self, batch: torch.Tensor) -> None:
        """Fold ``batch[B, *shape]`` into the statistics. Under torchrun with ``rank_merge="update"`` the batch's
        moments are first merged with the other ranks' batches (:func:`drl.distributed.merge_moments`), so every
        rank folds in all of them; with ``"boundary"`` this rank folds in its own (see :func:`merge_ranks`)."""
        views = self.kernel_views(batch)
        if views is not None:
            kernels.rms_update(_rows(batch), *views)
            self.stats_changed()
            return
        with torch.no_grad():
            buffers = self._buffers
            mean, var, count = buffers["mean"], buffers["var"], buffers["count"]
            batch_var, batch_mean = torch.var_mean(batch.to(torch.float64), 0, correction=0)  # 2 ops
            n = batch.shape[0]
            if not (distributed.active() and self._folds_locally()):
                n, batch_mean, batch_var = distributed.merge_moments(n, batch_mean, batch_var)
            old_count = self._host_count()
            total = old_count + n
            weight = n / total
            delta = batch_mean.sub_(mean)
            mean.add_(delta, alpha=weight)
            # var * count/total + (batch_var + delta^2 count/total) * B/total: the definition, rearranged
            keep = old_count / total
            target = batch_var.addcmul_(delta, delta, value=keep)
            if weight < 0.5:  # lerp's formula there is var + weight * (target - var): no cancellation
                var.lerp_(target, weight)
            else:  # (the first batches): lerp would form 1 - weight, which loses digits when count << B
                var.mul_(keep).add_(target, alpha=weight)
            count.fill_(total)
            self._caches.count = _Cached((count,), total)

    def _mean_as(self, dtype: torch.dtype) -> torch.Tensor:
        """``mean`` in ``dtype``, made once per change of the statistics."""
        mean = self._buffers["mean"]
        cache = self._caches.scale.get(("mean", dtype))
        if cache is None or not cache.valid_for((mean,)):
            cache = self._caches.scale[("mean", dtype)] = _Cached((mean,), mean.to(dtype))
        return cache.value

    def std_as(self, dtype: torch.dtype) -> torch.Tensor:
        """``sqrt(var + eps)`` in ``dtype`` (rounded from float64), made once per change of the statistics."""
        var = self._buffers["var"]
        cache = self._caches.scale.get(("std", dtype))
        if cache is None or not cache.valid_for((var,)):
            with torch.no_grad():  # the float64 root rounded as it is stored: one kernel on CUDA (two on the CPU)
                std = var.add(self.epsilon)
                std = torch.sqrt(std, out=torch.empty_like(std, dtype=dtype)) if dtype.is_floating_point else \
                    std.sqrt_().to(dtype)
            cache = self._caches.scale[("std", dtype)] = _Cached((var,), std)
        return cache.value

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)`` clipped, in ``x``'s dtype: ``x[B, *shape] -> [B, *shape]``."""
        return self.update_normalize(x, update=False)

    def update_normalize(self, x: torch.Tensor, update: bool = True) -> torch.Tensor:
        """:meth:`update` with ``x[B, *shape]`` (if ``update``), then :meth:`normalize` it; a new tensor."""
        views = self.kernel_views(x)
        if views is not None:
            source = np.ascontiguousarray((x.detach() if x.requires_grad else x).numpy())
            out = np.empty(source.shape, np.float32)
            if source.ndim == 2:
                kernels.rms_update_normalize(source, *views, update, self.epsilon, self.clip, out)
            else:
                kernels.rms_update_normalize(_rows(source), *views, update, self.epsilon, self.clip, _rows(out))
            if update:
                self.stats_changed()
            return torch.from_numpy(out)
        if update and self.compile_cuda and _compilable(x):
            out = self._compiled_update_normalize(x)
            if out is not None:
                return out
        if update:
            self.update(x)
        with torch.no_grad():
            if not x.is_floating_point():
                mean, std = self.mean.to(x.dtype), torch.sqrt(self.var + self.epsilon).to(x.dtype)
                return torch.clamp((x - mean) / std, -self.clip, self.clip)
            return torch.sub(x, self._mean_as(x.dtype)).div_(self.std_as(x.dtype)).clamp_(-self.clip, self.clip)

    def _compiled_update_normalize(self, x: torch.Tensor) -> torch.Tensor | None:
        """:meth:`update_normalize` through the compiled graph; None (and eager from then on) if compiling fails."""
        buffers, caches = self._buffers, self._caches
        mean, var, count = buffers["mean"], buffers["var"], buffers["count"]
        flat = caches.flat
        if flat is None or flat[0] is not mean or flat[1] is not var or flat[2] is not count:
            flat = caches.flat = (mean, var, count, mean.view(-1), var.view(-1), count.view(1))
        old_count = self._host_count()
        rows = x if x.dim() == 2 else x.reshape(x.shape[0], -1)
        fn = _Compiled.update_normalize
        if fn is None:
            fn = _Compiled.update_normalize = torch.compile(_fused_update_normalize)
        with contextlib.nullcontext() if not torch.is_grad_enabled() else torch.no_grad():
            if _Compiled.checked:
                out, mean_x, std_x = fn(rows, flat[3], flat[4], flat[5], self.epsilon, self.clip)
            else:  # the first call compiles; a failure there leaves the statistics as they were
                saved = [t.clone() for t in (mean, var, count)]
                try:
                    out, mean_x, std_x = fn(rows, flat[3], flat[4], flat[5], self.epsilon, self.clip)
                except Exception as err:  # noqa: BLE001 - any compiler failure: the eager ops are always valid
                    for t, before in zip((mean, var, count), saved, strict=True):
                        t.copy_(before)
                    _Compiled.failed = True
                    warnings.warn(f"torch.compile of the observation normaliser failed ({type(err).__name__}: "
                                  f"{err}); continuing eagerly", stacklevel=3)
                    return None
                _Compiled.checked = True
        # the buffers changed inside the graph (whether or not their version counters saw it): what was
        # derived from them is replaced by what the graph derived
        caches.count = _Cached((count,), old_count + x.shape[0])
        caches.scale = {("mean", x.dtype): _Cached((mean,), mean_x.view(mean.shape)),
                        ("std", x.dtype): _Cached((var,), std_x.view(var.shape))}
        return out if out.shape == x.shape else out.view(x.shape)


def merge_ranks(normalizers: Iterable[RunningMeanStd]) -> None:
    """Merge what each rank folded into ``normalizers`` on its own since their last merge (one collective).

    Every rank must call it at the same point with the same normalisers in the same order (an iteration
    boundary: the agents' ``sync_ranks``, called by the runners). For each normaliser with
    ``rank_merge="boundary"``, each rank's moments since the last merge (:meth:`RunningMeanStd._moments_since_base`:
    ``n`` rows, their mean and population variance) are all-gathered, and every rank sets its statistics to
    ``merge(statistics at the last merge, rank 0's moments, rank 1's, ...)`` with Chan et al.'s count-weighted
    merge: afterwards the ranks hold identical statistics, equal to float64 rounding to those of one process that
    folded in all their rows (a rank that folded in nothing contributes ``n = 0``). Normalisers with
    ``rank_merge="update"`` are skipped (they merge at every update). A no-op without other ranks.

    Raises:
        drl.distributed.DistributedError: the all-gather failed (another rank died or hung).
    """
    if not distributed.active():
        return
    norms = [m for m in normalizers if m.rank_merge == "boundary"]
    if not norms:
        return
    moments = [m._moments_since_base() for m in norms]
    device = norms[0]._buffers["mean"].device
    mine = torch.cat([torch.tensor([float(n) for n, _, _ in moments], dtype=torch.float64, device=device)]
                     + [torch.cat([mean.reshape(-1), var.reshape(-1)]).to(device) for _, mean, var in moments])
    gathered = distributed.all_gather_rows(mine, "merging the running observation statistics").cpu()
    counts = gathered[:, :len(norms)].tolist()  # [world][normaliser]
    offset = len(norms)
    for i, norm in enumerate(norms):
        size = norm._buffers["mean"].numel()
        rows = gathered[:, offset:offset + 2 * size].to(norm._buffers["mean"].device)
        offset += 2 * size
        norm._set_merged((counts[r][i], rows[r, :size], rows[r, size:]) for r in range(len(counts)))


def _rows(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """``x[B, ...]`` as a C-contiguous ``[B, D]`` numpy array (a view where the memory allows, else a copy).

    Contiguous only: numba compiles one specialisation per array layout, and a strided ("A") one may round
    differently from the contiguous one (another loop vectorisation); which of them a call runs would then
    depend on which its process compiled or loaded from numba's cache first, and bitwise resume would not
    hold."""
    if isinstance(x, torch.Tensor):
        x = (x.detach() if x.requires_grad else x).numpy()
    return np.ascontiguousarray(x if x.ndim == 2 else x.reshape(x.shape[0], -1))


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return (as SB3's VecNormalize).

    Per env, ``returns = returns * gamma + reward`` each step; the return statistics take the N
    returns as a batch; a return is reset to 0 at its episode's end (terminated or truncated).
    The buffer ``returns[N]`` and ``return_stats`` are saved with the state dict.

    Args:
        num_envs: N, the envs stepped together.
        gamma: the discount of the running returns.
        clip: scaled rewards are clipped to ``[-clip, clip]``.
        epsilon: added to the variance before the square root.
    """

    def __init__(self, num_envs: int, gamma: float, clip: float = 10.0, epsilon: float = 1e-8):
        super().__init__()
        self.return_stats = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs, dtype=torch.float64))
        self.gamma = gamma
        self.clip = clip
        self.epsilon = epsilon

    def scale(self, reward: torch.Tensor, done: torch.Tensor, update: bool = True, *,
              truncated: torch.Tensor | None = None) -> torch.Tensor:
        """``reward[N] -> reward / std(return)`` clipped, a new tensor in ``reward``'s dtype.

        ``done[N]`` (bool) ends the running returns; pass terminated as ``done`` and ``truncated[N]``
        beside it to end them at either without forming the union. ``update=False`` only scales.
        """
        stats: RunningMeanStd = self._modules["return_stats"]
        returns = self._buffers["returns"]
        if truncated is None:
            truncated = done
        views = stats.kernel_views(reward)
        if (views is not None and returns.is_cpu and done.is_cpu and truncated.is_cpu
                and done.dtype is torch.bool and truncated.dtype is torch.bool
                and returns.shape == reward.shape == done.shape == truncated.shape):
            out = np.empty(reward.shape[0], np.float32)
            kernels.scale_rewards(_contiguous(reward), _contiguous(done), _contiguous(truncated), returns.numpy(),
                                  *views, self.gamma, update, self.epsilon, self.clip, out)
            if update:
                stats.stats_changed()
            return torch.from_numpy(out)
        with torch.no_grad():
            if update:  # returns * gamma + reward, in one op
                torch.add(reward, returns, alpha=self.gamma, out=returns)
                stats.update(returns)
                returns.masked_fill_(done if truncated is done else done | truncated, 0.0)
            return torch.div(reward, stats.std_as(reward.dtype)).clamp_(-self.clip, self.clip)

    def scale_rollout(self, rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor) -> torch.Tensor:
        """:meth:`scale` (with ``update``) for each step of a rollout in turn: ``rewards[T, N] -> [T, N]``.

        The result and the state it leaves are those of T per-step calls (bitwise on the CPU, where it
        is one kernel call), so an agent may store raw rewards and scale them once the rollout is
        complete: nothing at act time needs the scaled reward.
        """
        stats: RunningMeanStd = self._modules["return_stats"]
        returns = self._buffers["returns"]
        views = None  # the kernel takes any N here: one call per rollout, not per step
        if (_KERNELS and rewards.is_cpu and rewards.dtype is torch.float32 and rewards.dim() == 2
                and not distributed.active()):  # across ranks: the torch path merges the ranks' moments
            views = stats.numpy_views()
        if (views is not None and returns.is_cpu and terminated.is_cpu and truncated.is_cpu
                and terminated.dtype is torch.bool and truncated.dtype is torch.bool
                and rewards.shape[1:] == returns.shape and rewards.shape == terminated.shape == truncated.shape):
            out = np.empty(rewards.shape, np.float32)
            kernels.scale_reward_rollout(_contiguous(rewards), _contiguous(terminated), _contiguous(truncated),
                                         returns.numpy(), *views, self.gamma, self.epsilon, self.clip, out)
            stats.stats_changed()
            return torch.from_numpy(out)
        if rewards.dim() != 2 or rewards.shape[0] == 0 or not rewards.is_floating_point():
            return torch.stack([self.scale(r, te, truncated=tr)
                                for r, te, tr in zip(rewards, terminated, truncated, strict=True)])
        return self._scale_rollout_torch(rewards, terminated | truncated)

    @torch.no_grad()
    def _scale_rollout_torch(self, rewards: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """The torch path of :meth:`scale_rollout` in about T + 14 kernels (per-step calls: 13T), for GPUs.

        The running returns of all T steps are built on the device (one op per step); their per-step
        batch moments come to the host in one transfer (the rollout's one host sync); the T statistics
        updates are the definition's float64 arithmetic on Python floats; the T stds go back in one transfer.
        """
        stats: RunningMeanStd = self._modules["return_stats"]
        returns = self._buffers["returns"]
        steps, num = rewards.shape
        keep_gamma = (~done).to(torch.float64).mul_(self.gamma)  # gamma where the episode goes on, else 0
        running = rewards.to(torch.float64, copy=True)  # row t becomes returns_t in place
        rows, keep_rows = running.unbind(0), keep_gamma.unbind(0)  # views, made once
        rows[0].add_(returns, alpha=self.gamma)
        for t in range(1, steps):  # returns_t = reward_t + returns_{t-1} * gamma (0 after an episode end)
            rows[t].addcmul_(rows[t - 1], keep_rows[t - 1])
        batch_var, batch_mean = torch.var_mean(running, 1, correction=0)
        num, batch_mean, batch_var = distributed.merge_moments(num, batch_mean, batch_var)  # [T] each, all ranks
        returns.copy_(rows[-1]).masked_fill_(done[-1], 0.0)
        mean, var, count = stats.mean.item(), stats.var.item(), stats._host_count()
        stds = []
        for m, v in zip(batch_mean.tolist(), batch_var.tolist(), strict=True):
            delta = m - mean
            total = count + num
            mean = mean + delta * num / total
            var = (var * count + v * num + delta * delta * count * num / total) / total
            count = total
            stds.append(math.sqrt(var + self.epsilon))
        stats.mean.fill_(mean)
        stats.var.fill_(var)
        stats.count.fill_(count)
        stats._caches.count = _Cached((stats.count,), count)
        std = torch.tensor(stds, dtype=torch.float64, device=rewards.device).to(rewards.dtype)
        return torch.div(rewards, std[:, None]).clamp_(-self.clip, self.clip)


def _contiguous(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy())
