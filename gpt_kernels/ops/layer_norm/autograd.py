"""Fake implementations and autograd shared by the Triton (gpt_triton::) and C++ (gpt_ext::) layer norms.

Both register ops with the same schemas:
    layer_norm_fwd(x, weight, bias, eps) -> (y, mean, rstd)
    layer_norm_bwd(dy, x, weight, rstd, ds?) -> (dx, dweight, dbias)   (ds, when given, is added to dx)
"""

from __future__ import annotations

import torch


def layer_norm_fwd_fake(x, weight, bias, eps):
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    stats = x.new_empty(rows, dtype=torch.float32)
    return torch.empty_like(x, memory_format=torch.contiguous_format), stats, stats.clone()


def layer_norm_bwd_fake(dy, x, weight, rstd, ds):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight), torch.empty_like(weight)


def register_layer_norm_autograd(fwd_op: str, bwd_op) -> None:
    """Make fwd_op differentiable through bwd_op (an OpOverloadPacket with the bwd schema above)."""

    def setup_context(ctx, inputs, output):
        x, weight, bias, _ = inputs
        ctx.save_for_backward(x, weight, output[2])
        ctx.has_bias = bias is not None

    def backward(ctx, dy, _dmean, _drstd):
        x, weight, rstd = ctx.saved_tensors
        dx, dweight, dbias = bwd_op(dy, x, weight, rstd, None)
        return dx, dweight, dbias if ctx.has_bias else None, None

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)
