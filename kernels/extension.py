"""The C++/CUDA extension (csrc/, built by setup.py as kernels._C): loading, fakes, autograd, public functions.

Its ops live in the torch.ops.gpt_ext namespace with CPU and (when built with CUDA) CUDA
kernels. This module registers their fake implementations and autograd, so they run under
torch.compile(fullgraph=True). The package imports without the extension; using it then
raises an error that says how to build it.
"""

from __future__ import annotations

import torch

from . import _autograd, checks

try:
    from . import _C  # noqa: F401  (loading it registers the ops)

    LOAD_ERROR: Exception | None = None
except ImportError as err:
    LOAD_ERROR = err

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BUILD_HINT = ("build it with `pip install -e .` (CUDA kernels need a CUDA build of torch and nvcc; "
              "set CUDA_HOME if nvcc is not on PATH)")


def available() -> bool:
    return LOAD_ERROR is None


# Decided once, when this module loads (a dispatcher query, not a CUDA call): the per-call check
# below then reads two constants, which torch.compile folds away instead of breaking the graph on.
HAS_CUDA_KERNELS = available() and torch._C._dispatch_has_kernel_for_dispatch_key("gpt_ext::layer_norm_fwd", "CUDA")


def _require(device: torch.device) -> None:
    if LOAD_ERROR is not None:
        raise RuntimeError(f"backend 'cuda' needs the C++/CUDA extension kernels._C, which is not built "
                           f"({LOAD_ERROR}); {BUILD_HINT}")
    if device.type == "cuda" and not HAS_CUDA_KERNELS:
        raise RuntimeError(f"the extension kernels._C was built without CUDA kernels, so it cannot run on {device}; "
                           f"re-{BUILD_HINT}")


# ----------------------------------------------------------------------------- layer norm

def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    checks.check_layer_norm_args(x, weight, bias, SUPPORTED_DTYPES, max_width=1 << 31, eps=eps)
    _require(x.device)
    return torch.ops.gpt_ext.layer_norm_fwd(x, weight, bias, eps)[0]


# ----------------------------------------------------------------------------- cross-entropy

def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """Fused cross-entropy; the loss is fp32 whatever the logits' dtype.

    reduction "mean" divides by the number of non-ignored targets; an all-ignored batch gives
    0 (with zero gradients) rather than NaN.
    """
    checks.check_cross_entropy_args(logits, targets, reduction, SUPPORTED_DTYPES)
    _require(logits.device)
    losses = torch.ops.gpt_ext.cross_entropy_fwd(logits, targets, ignore_index)[0]  # (N,) fp32
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (targets != ignore_index).sum().clamp(min=1)


if LOAD_ERROR is None:
    torch.library.register_fake("gpt_ext::layer_norm_fwd", _autograd.layer_norm_fwd_fake)
    torch.library.register_fake("gpt_ext::layer_norm_bwd", _autograd.layer_norm_bwd_fake)
    _autograd.register_layer_norm_autograd("gpt_ext::layer_norm_fwd", torch.ops.gpt_ext.layer_norm_bwd)

    @torch.library.register_fake("gpt_ext::cross_entropy_fwd")
    def _(logits, targets, ignore_index):
        rows = logits.shape[0]
        return logits.new_empty(rows, dtype=torch.float32), logits.new_empty((rows, 2), dtype=torch.float32)

    @torch.library.register_fake("gpt_ext::cross_entropy_bwd")
    def _(grad_loss, logits, targets, stats, ignore_index):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    def _cross_entropy_setup(ctx, inputs, output):
        logits, targets, ignore_index = inputs
        ctx.save_for_backward(logits, targets, output[1])
        ctx.ignore_index = ignore_index

    def _cross_entropy_backward(ctx, grad_loss, _dstats):
        logits, targets, stats = ctx.saved_tensors
        return torch.ops.gpt_ext.cross_entropy_bwd(grad_loss, logits, targets, stats, ctx.ignore_index), None, None

    torch.library.register_autograd("gpt_ext::cross_entropy_fwd", _cross_entropy_backward,
                                    setup_context=_cross_entropy_setup)
