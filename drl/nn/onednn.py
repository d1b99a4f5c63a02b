"""A float32 linear map through oneDNN on the CPU, for training on CPUs where ATen's BLAS is slow.

ATen computes a float32 ``addmm`` / ``bmm`` on x86 with Intel MKL, which runs its AVX2 kernels on
non-Intel CPUs; oneDNN (bundled with torch as ``mkldnn``) picks its kernels by instruction set. On an
AVX-512 AMD EPYC core (one thread) a ``[256, 400] x [400, 300]`` float32 product runs at ~90 GFLOP/s
through MKL and ~120-250 GFLOP/s through oneDNN, in full float32 (no reduced-precision math mode;
results differ from MKL's by summation order only, ~1e-7 relative). The off-policy updates at SB3's
sizes are bounded by these products (``python -m benchmarks.sac_floor --agent td3``).

:func:`linear` is a ``torch.library`` op inside an autograd.Function whose backward is made of the same
op, so it works eagerly and under :func:`torch.func.grad`. It is opt-in (:data:`ENABLED`, default off):

* a compiled step cannot use it (inside a compiled ``torch.func.grad`` the op is not differentiated through
  its Function's backward), so :func:`drl.nn.critics.batched_linear` takes it only eagerly, and compiled
  steps keep ATen's ops; measured eagerly at TD3's SB3 sizes on a loaded 2-core EPYC, the eager oneDNN
  update was about as fast as the compiled ATen one (``python -m benchmarks.sac_floor --agent td3``);
* oneDNN's per-call overhead makes thin layers slower (``batched_linear`` keeps ``addmm`` for layers of 32 or
  fewer in or out) and small networks slower too (TD3 with [64, 64] layers on Pendulum ran 2-3x slower, measured
  on a loaded machine).

Inference (no gradient: acting, export, tracing) always keeps ATen's ops.
"""

from __future__ import annotations

import torch

__all__ = ["ENABLED", "linear", "available"]


# the op itself has no autograd formula (the autograd.Function below is its gradient), so it is defined with
# torch.library.Library rather than torch.library.custom_op, whose autograd wrapper functorch's grad refuses
_LIB = torch.library.Library("drl", "FRAGMENT")
_LIB.define("onednn_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor")


def _onednn_linear_cpu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight.t(), bias, "none", [], "")


_LIB.impl("onednn_linear", _onednn_linear_cpu, "CPU")


@torch.library.register_fake("drl::onednn_linear", lib=_LIB)
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[1]))


_onednn_linear = torch.ops.drl.onednn_linear


class _Linear(torch.autograd.Function):
    """``x @ weight + bias`` with both passes made of :func:`_onednn_linear` (an autograd.Function, not the op's
    own ``register_autograd``, so that :func:`torch.func.grad` can differentiate it; its backward is itself)."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 - autograd's signature
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        # through the Function again (differentiable: functorch's grad runs backward on tracked tensors)
        grad_x = _Linear.apply(grad, weight.t(), None) if ctx.needs_input_grad[0] else None  # [B, out] x [out, in]
        grad_weight = _Linear.apply(x.t(), grad, None) if ctx.needs_input_grad[1] else None  # [in, B] x [B, out]
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x[B, in] @ weight[in, out] + bias[out]`` -> ``[B, out]`` through oneDNN (float32 CPU tensors, any strides)."""
    return _Linear.apply(x, weight, bias)


def available() -> bool:
    """Whether torch has oneDNN's linear kernel here (and it runs)."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        x = torch.ones(2, 3)
        return bool(torch.allclose(linear(x, torch.ones(3, 4), torch.zeros(4)), torch.full((2, 4), 3.0)))
    except Exception:  # noqa: BLE001 - an op that does not run here: ATen's path
        return False


#: opt-in (see the module docstring): set True to route eager float32 CPU training matmuls through oneDNN
ENABLED: bool = False
