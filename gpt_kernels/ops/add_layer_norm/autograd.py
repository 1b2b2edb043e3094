"""Fakes and autograd shared by the Triton (gpt_triton::) and C++ (gpt_ext::) add_layer_norm ops.

    add_layer_norm_fwd(x, residual, weight, bias, eps) -> (y, s, mean, rstd)
Its backward is the layer norm backward of s with the gradient reaching s directly added to dx:
    layer_norm_bwd(dy, s, weight, rstd, ds) -> (dx, dweight, dbias); dresidual is dx in residual's dtype.
"""

from __future__ import annotations

import torch


def add_layer_norm_fwd_fake(x, residual, weight, bias, eps):
    rows = x.numel() // x.shape[-1] if x.shape[-1] else 0
    stats = x.new_empty(rows, dtype=torch.float32)
    y = torch.empty_like(x, memory_format=torch.contiguous_format)
    return y, torch.empty_like(y), stats, stats.clone()


def register_add_layer_norm_autograd(fwd_op: str, layer_norm_bwd) -> None:
    def setup_context(ctx, inputs, output):
        _, residual, weight, bias, _ = inputs
        ctx.save_for_backward(output[1], weight, output[3])
        ctx.has_bias, ctx.residual_dtype = bias is not None, residual.dtype

    def backward(ctx, dy, ds, _dmean, _drstd):
        s, weight, rstd = ctx.saved_tensors
        dx, dweight, dbias = layer_norm_bwd(dy, s, weight, rstd, ds.to(s.dtype) if ds is not None else None)
        return dx, dx.to(ctx.residual_dtype), dweight, dbias if ctx.has_bias else None, None

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)
