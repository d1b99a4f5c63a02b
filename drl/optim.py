"""Optimisation on one flat parameter vector: Adam, gradient clipping and the whole training step.

Small RL networks on the CPU spend most of an update in per-tensor and per-op overhead, not in
arithmetic. Here every parameter and every gradient of a module is a view into one flat tensor,
so zeroing, the global gradient norm, clipping and Adam are one op each. :class:`TrainStep` runs
``zero -> loss -> backward -> clip -> Adam`` on a minibatch either eagerly or as one
``torch.compile``d graph (forward, backward, clipping and update fused, no autograd bookkeeping
at run time), with the same math either way. :class:`FusedUpdate` is the off-policy agents' step:
every loss of one update summed over one flat vector, Adam per parameter group, Polyak targets.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad

from drl import distributed

__all__ = ["FlatParameters", "FlatAdam", "TrainStep", "FusedUpdate", "Losses", "clip_by_global_norm",
           "clip_by_group_norm", "compiler_available"]

Losses = dict[str, torch.Tensor]


class FlatParameters:
    """The parameters of ``module`` stored in one flat tensor; each parameter is a view into it.

    Gradients get the same treatment: after a backward pass every ``p.grad`` is a view into
    :attr:`grad` (autograd accumulates into an existing ``.grad`` in place). Build this after the
    module is on its device: ``module.to(...)`` would replace the views.

    Attributes:
        data: ``[P]`` all parameters, in ``module.named_parameters()`` order.
        grad: ``[P]`` their gradients.
    """

    def __init__(self, module: nn.Module):
        named = list(module.named_parameters())
        if not named:
            raise ValueError(f"{type(module).__name__} has no parameters to optimise")
        dtypes = {p.dtype for _, p in named}
        devices = {p.device for _, p in named}
        if len(dtypes) > 1 or len(devices) > 1:
            raise ValueError(f"flat parameters need one dtype and one device, got {dtypes} on {devices}")
        self.module = module
        self.names = [name for name, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        self.data = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.grad = torch.zeros_like(self.data)
        self.attach()

    def attach(self) -> None:
        """(Re)point every parameter and its ``.grad`` at its slice of the flat tensors."""
        params = dict(self.module.named_parameters())
        for name, value, gradient in zip(self.names, self.views(self.data), self.views(self.grad), strict=True):
            params[name].data = value
            params[name].grad = gradient

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """``[P] ->`` one view per parameter, shaped like it."""
        return [chunk.view(shape) for chunk, shape in zip(flat.split(self.sizes), self.shapes, strict=True)]

    def as_dict(self, flat: torch.Tensor, prefix: str = "") -> dict[str, torch.Tensor]:
        """``[P] -> {name: view}``, for :func:`torch.func.functional_call`."""
        return {prefix + name: view for name, view in zip(self.names, self.views(flat), strict=True)}

    @property
    def numel(self) -> int:
        return self.data.numel()


def adam_update(params: torch.Tensor, gradient: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                step_count: torch.Tensor, lr: torch.Tensor, beta1: float, beta2: float, eps: float) -> None:
    """One Adam step, every tensor argument but ``gradient`` and ``lr`` updated in place.

    The state tensors are arguments (not attributes read from inside): a compiled graph then
    writes its in-place updates back to them.
    """
    step_count.add_(1.0)
    exp_avg.lerp_(gradient, 1.0 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(gradient, gradient, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step_count
    bias_correction2_sqrt = (1.0 - beta2**step_count).sqrt()
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    params.sub_((lr / bias_correction1) * (exp_avg / denom))


class FlatAdam:
    """Adam (Kingma & Ba, 2015) on one flat vector: ``torch.optim.Adam``'s update (tested equal to 1e-6).

    ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``;
    ``p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.
    The step count is a tensor, so a compiled step does not recompile as it grows.
    """

    def __init__(self, numel: int, device: torch.device, dtype: torch.dtype = torch.float32,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.exp_avg = torch.zeros(numel, dtype=dtype, device=device)
        self.exp_avg_sq = torch.zeros(numel, dtype=dtype, device=device)
        # float32 like torch.optim's step tensors (a float64 0-d input loses in-place updates under
        # torch.compile); exact up to 2**24 steps, and by then the bias corrections are 1
        self.step_count = torch.zeros((), dtype=torch.float32, device=device)

    def step(self, params: torch.Tensor, gradient: torch.Tensor, lr: torch.Tensor) -> None:
        """Update ``params`` ``[P]`` in place from ``gradient`` ``[P]`` with learning rate ``lr`` (0-d)."""
        adam_update(params, gradient, self.exp_avg, self.exp_avg_sq, self.step_count, lr, self.beta1, self.beta2,
                    self.eps)

    def state_dict(self) -> dict[str, Any]:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step": self.step_count,
                "betas": (self.beta1, self.beta2), "eps": self.eps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"exp_avg", "exp_avg_sq", "step"} - set(state)
        if missing:
            raise ValueError(f"optimizer state is missing {sorted(missing)}: it was not written by drl's FlatAdam")
        if state["exp_avg"].shape != self.exp_avg.shape:
            raise ValueError(f"optimizer state holds {state['exp_avg'].numel()} parameters, "
                             f"this model has {self.exp_avg.numel()}: the network sizes differ")
        self.exp_avg.copy_(state["exp_avg"])
        self.exp_avg_sq.copy_(state["exp_avg_sq"])
        self.step_count.copy_(state["step"])


def compiler_available() -> bool:
    """Whether ``torch.compile`` can build CPU kernels here (inductor needs a C++ compiler)."""
    return any(shutil.which(cc) for cc in ("g++", "c++", "clang++"))


class _LossModule(nn.Module):
    """Wraps ``loss_fn`` so :func:`functional_call` can swap ``module``'s parameters under it."""

    def __init__(self, module: nn.Module, loss_fn: Callable[[Any], Losses]):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn

    def forward(self, minibatch: Any) -> Losses:
        return self.loss_fn(minibatch)


def clip_by_global_norm(gradient: torch.Tensor, max_norm: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gradient [P] scaled to a global L2 norm of at most max_norm, its norm before)``; ``None``: unscaled.

    ``torch.nn.utils.clip_grad_norm_``'s rule on one flat gradient: scale by ``min(1, max_norm / (norm + 1e-6))``.
    """
    norm = torch.linalg.vector_norm(gradient)
    if max_norm is None:
        return gradient, norm
    return gradient * torch.clamp(max_norm / (norm + 1e-6), max=1.0), norm


def clip_by_group_norm(gradient: torch.Tensor, max_norm: float,
                       masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gradient [P] with each group's L2 norm scaled to at most max_norm, the global norm before)``.

    ``masks [G, P]`` (0/1, one 1 per column) marks each group's coordinates; every group is scaled by
    :func:`clip_by_global_norm`'s rule on its own norm, as ``clip_grad_norm_`` called once per group (rsl_rl's
    PPO clips its actor and its critic so). Plain reductions, no scatter: the same bits on every run and device.
    """
    squares = (masks * gradient.square()).sum(1)  # [G]
    scale = torch.clamp(max_norm / (squares.sqrt() + 1e-6), max=1.0)
    return gradient * (scale @ masks), squares.sum().sqrt()


class TrainStep:
    """One optimiser step of ``loss_fn`` on a minibatch: gradient, global-norm clipping, Adam.

    Args:
        module: owns every parameter ``loss_fn`` trains (its parameters become flat views).
        loss_fn: ``minibatch -> {"loss": scalar, other scalars...}``; it must read parameters
            through ``module`` and must not draw random numbers (a compiled step would fix them).
        learning_rate: Adam's initial learning rate (see :meth:`set_learning_rate`).
        max_grad_norm: clip the global gradient norm to this; ``None``: no clipping.
        eps: Adam's epsilon.
        clip_groups: clip each group's gradient norm to ``max_grad_norm`` on its own instead of the
            global norm: one tuple of parameter-name prefixes per group (e.g. ``(("actor.",),
            ("critic.",))``); an empty group is allowed. ``None``: one global norm. Unused (and unchecked)
            without ``max_grad_norm``.
        row_chunk: an eager step takes the loss and its gradient on at most this many rows at a time and
            sums the gradients, each chunk's loss weighted by its share of the rows, before clipping and
            Adam: the same step up to float summation order, and faster on the CPU once a minibatch's
            activations outgrow the cache. It needs a minibatch that is a dict of tensors with rows first
            and a ``loss_fn`` whose every output is a mean over rows (the returned scalars are then the
            row-weighted means of the chunks'). ``None``: the whole minibatch at once (always when compiled).
        compile: fuse the whole step into one ``torch.compile``d graph. If compiling fails (no C++
            compiler, unsupported op) the step warns and stays eager.

    Calling it returns ``loss_fn``'s scalars, detached, plus ``grad_norm``: the global L2 norm of
    the gradient before clipping (non-finite when the loss or the gradient was, which is how a
    caller sees a diverging step without reading the flat gradient).

    Raises:
        ValueError: a parameter in no group or in two groups of ``clip_groups``.
    """

    def __init__(self, module: nn.Module, loss_fn: Callable[[Any], Losses], learning_rate: float,
                 max_grad_norm: float | None = None, eps: float = 1e-8, compile: bool = False,
                 clip_groups: Sequence[Sequence[str]] | None = None, row_chunk: int | None = None):
        if row_chunk is not None and row_chunk < 1:
            raise ValueError(f"row_chunk must be >= 1 or None, got {row_chunk}")
        self.row_chunk = row_chunk
        self.params = FlatParameters(module)
        self.loss_fn = loss_fn
        self.max_grad_norm = max_grad_norm
        self.clip_groups = None if clip_groups is None or max_grad_norm is None else tuple(map(tuple, clip_groups))
        self._group_masks = None if self.clip_groups is None else self._masks_of(self.clip_groups)
        self.adam = FlatAdam(self.params.numel, self.params.data.device, self.params.data.dtype, eps=eps)
        self.lr = torch.tensor(float(learning_rate), dtype=torch.float32, device=self.params.data.device)
        self._loss_module = _LossModule(module, loss_fn)
        self._compiled: Callable[[torch.Tensor, Any], Losses] | None = None
        compile = compile and not distributed.active()  # across ranks: eager, with the gradient all-reduce
        if compile:
            # on the CPU a C++ wrapper around the generated kernels saves ~20% of a small step
            options = {"cpp_wrapper": True} if self.params.data.device.type == "cpu" else None
            self._compiled = torch.compile(self._functional_step, dynamic=False, options=options)
        self.compiled = compile
        self._compile_checked = False

    def set_learning_rate(self, learning_rate: float) -> None:
        self.lr.fill_(learning_rate)

    def __call__(self, minibatch: Any) -> Losses:
        if self._compiled is None:
            return self._eager_step(minibatch)
        if self._compile_checked:
            return self._compiled(*self._state(), minibatch)
        try:  # the first call compiles; a failure there leaves the parameters untouched
            losses = self._compiled(*self._state(), minibatch)
        except Exception as err:  # noqa: BLE001 - any compiler failure: the eager step is always valid
            warnings.warn(f"torch.compile of the training step failed ({type(err).__name__}: {err}); "
                          "continuing eagerly", stacklevel=2)
            self._compiled = None
            self.compiled = False
            return self._eager_step(minibatch)
        self._compile_checked = True
        return losses

    def _eager_step(self, minibatch: Any) -> Losses:
        self.params.grad.zero_()
        if self.row_chunk is not None and (rows := next(iter(minibatch.values())).shape[0]) > self.row_chunk:
            losses = self._chunked_backward(minibatch, rows)
        else:
            losses = self.loss_fn(minibatch)
            losses["loss"].backward()
        with torch.no_grad():
            distributed.average_gradients_(self.params.grad)  # the rank mean (a no-op in one process)
            gradient, grad_norm = self._clip(self.params.grad)
            self.adam.step(self.params.data, gradient, self.lr)
        return {**{key: value.detach() for key, value in losses.items()}, "grad_norm": grad_norm}

    def _chunked_backward(self, minibatch: dict[str, torch.Tensor], rows: int) -> Losses:
        """Accumulate the gradient of the minibatch's mean loss chunk by chunk of ``row_chunk`` rows; returns the
        row-weighted means of the chunks' outputs (detached)."""
        totals: dict[str, torch.Tensor] = {}
        for start in range(0, rows, self.row_chunk):
            chunk = {key: x[start:start + self.row_chunk] for key, x in minibatch.items()}
            share = next(iter(chunk.values())).shape[0] / rows
            losses = self.loss_fn(chunk)
            (losses["loss"] * share).backward()
            for key, value in losses.items():
                weighted = value.detach() * share
                totals[key] = weighted if key not in totals else totals[key] + weighted
        return totals

    def _state(self) -> tuple[torch.Tensor, ...]:
        return self.params.data, self.adam.exp_avg, self.adam.exp_avg_sq, self.adam.step_count, self.lr

    def _functional_step(self, flat: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                         step_count: torch.Tensor, lr: torch.Tensor, minibatch: Any) -> Losses:
        """The step as a function of its state (what gets compiled)."""
        gradient, losses = grad(self._loss_at, has_aux=True)(flat, minibatch)
        gradient, grad_norm = self._clip(gradient)
        adam = self.adam
        adam_update(flat, gradient, exp_avg, exp_avg_sq, step_count, lr, adam.beta1, adam.beta2, adam.eps)
        return {**losses, "grad_norm": grad_norm}

    def _loss_at(self, flat: torch.Tensor, minibatch: Any) -> tuple[torch.Tensor, Losses]:
        losses = functional_call(self._loss_module, self.params.as_dict(flat, prefix="module."), (minibatch,))
        return losses["loss"], losses

    def _masks_of(self, groups: tuple[tuple[str, ...], ...]) -> torch.Tensor:
        """``[G, P]``: 1 where a flat coordinate's parameter belongs to group g of ``groups``, else 0."""
        ids = []
        for name, size in zip(self.params.names, self.params.sizes, strict=True):
            hits = [i for i, prefixes in enumerate(groups) if name.startswith(prefixes)]
            if len(hits) != 1:
                raise ValueError(f"clip_groups: parameter {name!r} is in {len(hits)} groups of {list(groups)}; "
                                 "each parameter must match the prefixes of exactly one group")
            ids.append(torch.full((size,), hits[0], dtype=torch.int64))
        ids_t = torch.cat(ids)
        masks = (ids_t == torch.arange(len(groups)).unsqueeze(1)).to(self.params.data.dtype)
        return masks.to(self.params.data.device)

    def _clip(self, gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gradient [P] scaled to a global L2 norm of at most max_grad_norm, or with each of clip_groups
        scaled so, its global norm before)``."""
        if self._group_masks is not None:
            return clip_by_group_norm(gradient, self.max_grad_norm, self._group_masks)
        return clip_by_global_norm(gradient, self.max_grad_norm)


Losses = dict[str, torch.Tensor]


# --- the fused update ---------------------------------------------------------------------------
LossFn = Callable[[dict[str, list[torch.Tensor]], dict[str, list[torch.Tensor]], dict[str, list[torch.Tensor]],
                   dict[str, torch.Tensor], str], tuple[torch.Tensor, Losses]]


class FusedUpdate:
    """One gradient step of a summed loss over one flat vector, Adam per parameter group, Polyak targets.

    Adam is per coordinate, so one gradient of ``critic_loss + actor_loss + alpha_loss`` over the
    flat vector, with each loss reading the other groups' parameters *detached*, followed by one
    Adam per group (own step count and learning rate) equals separate optimisers over separate
    losses, but with one backward pass. One difference from the sequential SB3 update remains and
    is deliberate: the actor loss reads the critic *before* this step's critic update (SB3 reads it
    after); both are valid SAC/TD3, this one lets the whole update be one graph.

    Args:
        nets: a ``ModuleDict`` of the online networks, one child per parameter group (e.g.
            ``critic``, ``actor``, ``log_alpha``); the target covers a prefix of these children.
        learning_rates: ``{child: learning rate}`` for every child.
        target: a ``ModuleDict`` of deep copies of the first children of ``nets`` (same names), or None.
        tau: Polyak rate, ``target <- (1 - tau) target + tau online``.
        loss_fn: ``(params, detached, target, batch, variant) -> (loss, stats)``; ``params``,
            ``detached`` and ``target`` map child names to parameter lists (views of the flat vectors,
            differentiable, detached, target); it must not draw random numbers (they come in ``batch``).
        amp: run ``loss_fn`` under bfloat16 autocast.
        compile: fuse each variant of the step into one ``torch.compile``d graph (falls back to eager
            with a warning when compiling fails).
        max_grad_norm: clip the global L2 norm of the whole gradient (every group's part together, as one
            ``clip_grad_norm_`` over all parameters before one optimiser step) to this; None: no clipping.
    """

    def __init__(self, nets: nn.ModuleDict, learning_rates: dict[str, float], target: nn.ModuleDict | None,
                 tau: float, loss_fn: LossFn, compile: bool = False, amp: bool = False,
                 max_grad_norm: float | None = None):
        self.nets = nets
        self.params = FlatParameters(nets)
        self.names = list(nets.keys())
        self.counts = {name: len(list(nets[name].parameters())) for name in self.names}
        self.slices: dict[str, slice] = {}
        start = 0
        for name in self.names:
            size = sum(p.numel() for p in nets[name].parameters())
            self.slices[name] = slice(start, start + size)
            start += size
        device, dtype = self.params.data.device, self.params.data.dtype
        self.adams = {name: FlatAdam(s.stop - s.start, device, dtype) for name, s in self.slices.items()}
        self.lrs = {name: torch.tensor(float(learning_rates[name]), device=device) for name in self.names}
        self.target = FlatParameters(target) if target is not None else None
        self.target_names = list(target.keys()) if target is not None else []
        if self.target_names != self.names[:len(self.target_names)]:
            raise ValueError(f"the target networks {self.target_names} must mirror the first online ones {self.names}")
        self.target_numel = self.target.numel if self.target is not None else 0
        self.tau = tau
        self.loss_fn = loss_fn
        self.amp = amp
        self.max_grad_norm = max_grad_norm
        self.compile = compile and not distributed.active()  # across ranks: eager, with the gradient all-reduce
        self._compiled: dict[tuple, Callable[..., Losses]] = {}
        for module in nets.modules():  # parameters now live in the flat vector: drop cached lists
            if hasattr(module, "refresh"):
                module.refresh()

    def split(self, flat: torch.Tensor, names: list[str] | None = None) -> dict[str, list[torch.Tensor]]:
        """``[P] -> {child: [parameter views]}`` for the children ``names`` (a prefix of the online ones)."""
        views = self.params.views(flat) if names is None else self.target.views(flat)
        out, start = {}, 0
        for name in names if names is not None else self.names:
            out[name] = views[start:start + self.counts[name]]
            start += self.counts[name]
        return out

    def _losses(self, flat: torch.Tensor, target: torch.Tensor | None, batch: dict[str, torch.Tensor],
                variant: str) -> tuple[torch.Tensor, Losses]:
        targets = self.split(target, self.target_names) if target is not None else {}
        with torch.autocast(flat.device.type, torch.bfloat16, enabled=self.amp):
            loss, stats = self.loss_fn(self.split(flat), self.split(flat.detach()), targets, batch, variant)
        return loss.float(), {name: value.float() for name, value in stats.items()}

    def _apply(self, flat: torch.Tensor, gradient: torch.Tensor, target: torch.Tensor | None,
               state: dict[str, tuple[torch.Tensor, ...]], groups: tuple[str, ...], polyak: bool) -> None:
        if self.max_grad_norm is not None:
            gradient = clip_by_global_norm(gradient, self.max_grad_norm)[0]
        for name in groups:
            part = self.slices[name]
            exp_avg, exp_avg_sq, step_count, lr = state[name]
            adam = self.adams[name]
            adam_update(flat[part], gradient[part], exp_avg, exp_avg_sq, step_count, lr, adam.beta1, adam.beta2,
                        adam.eps)
        if polyak and target is not None:
            target.lerp_(flat[:self.target_numel], self.tau)

    def _state(self) -> dict[str, tuple[torch.Tensor, ...]]:
        return {name: (a.exp_avg, a.exp_avg_sq, a.step_count, self.lrs[name]) for name, a in self.adams.items()}

    def _functional(self, flat: torch.Tensor, target: torch.Tensor | None, state: dict[str, tuple[torch.Tensor, ...]],
                    batch: dict[str, torch.Tensor], variant: str, groups: tuple[str, ...], polyak: bool) -> Losses:
        """The step as a function of its state (what gets compiled)."""
        gradient, stats = torch.func.grad(self._losses, has_aux=True)(flat, target, batch, variant)
        self._apply(flat, gradient, target, state, groups, polyak)
        return stats

    def __call__(self, batch: dict[str, torch.Tensor], variant: str = "all", groups: tuple[str, ...] | None = None,
                 polyak: bool = True) -> Losses:
        """One step: gradient of the summed loss, Adam on ``groups`` (default all), Polyak if ``polyak``.

        Groups left out keep their parameters *and* their Adam moments and step count untouched
        (TD3's delayed actor): a zero gradient would still move Adam's parameters.
        """
        groups = tuple(self.names) if groups is None else groups
        target = self.target.data if self.target is not None else None
        if self.compile:
            key = (variant, groups, polyak)
            compiled = self._compiled.get(key)
            if compiled is None:
                options = {"cpp_wrapper": True} if self.params.data.device.type == "cpu" else None
                compiled = self._compiled[key] = torch.compile(self._functional, dynamic=False, options=options)
                try:  # the first call compiles; a failure there leaves the parameters untouched
                    return compiled(self.params.data, target, self._state(), batch, variant, groups, polyak)
                except Exception as err:  # noqa: BLE001 - any compiler failure: the eager step is always valid
                    import warnings

                    warnings.warn(f"torch.compile of the update failed ({type(err).__name__}: {err}); "
                                  "continuing eagerly", stacklevel=2)
                    self.compile = False
                    return self._eager(batch, variant, groups, polyak)
            return compiled(self.params.data, target, self._state(), batch, variant, groups, polyak)
        return self._eager(batch, variant, groups, polyak)

    def _eager(self, batch: dict[str, torch.Tensor], variant: str, groups: tuple[str, ...], polyak: bool) -> Losses:
        flat = self.params.data
        leaf = flat.detach().requires_grad_(True)  # shares flat's storage
        target = self.target.data if self.target is not None else None
        loss, stats = self._losses(leaf, target, batch, variant)
        (gradient,) = torch.autograd.grad(loss, leaf)
        with torch.no_grad():
            distributed.average_gradients_(gradient)  # the rank mean (a no-op in one process)
            self._apply(flat, gradient, target, self._state(), groups, polyak)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {name: adam.state_dict() for name, adam in self.adams.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.adams) - set(state)
        if missing:
            raise ValueError(f"optimizer state is missing the groups {sorted(missing)}")
        for name, adam in self.adams.items():
            adam.load_state_dict(state[name])


# --- the agent plumbing -------------------------------------------------------------------------
