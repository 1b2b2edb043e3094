"""Fused cross-entropy in the C++/CUDA extension (csrc/cpu/cross_entropy.cpp, csrc/cuda/cross_entropy.cu)."""

from __future__ import annotations

import torch

from ... import checks, ext

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """The loss is fp32 whatever the logits' dtype.

    reduction "mean" divides by the number of non-ignored targets; an all-ignored batch gives
    0 (with zero gradients) by design, where PyTorch's mean over nothing is NaN: a batch of
    padding cannot poison the weights.
    """
    checks.check_cross_entropy_args(logits, targets, reduction, SUPPORTED_DTYPES)
    ext.require(logits.device)
    losses = torch.ops.gpt_ext.cross_entropy_fwd(logits, targets, ignore_index)[0]  # (N,) fp32
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (targets != ignore_index).sum().clamp(min=1)


if ext.available():
    @torch.library.register_fake("gpt_ext::cross_entropy_fwd")
    def _(logits, targets, ignore_index):
        rows = logits.shape[0]
        return logits.new_empty(rows, dtype=torch.float32), logits.new_empty((rows, 2), dtype=torch.float32)

    @torch.library.register_fake("gpt_ext::cross_entropy_bwd")
    def _(grad_loss, logits, targets, stats, ignore_index):
        return torch.empty_like(logits, memory_format=torch.contiguous_format)

    def _setup_context(ctx, inputs, output):
        logits, targets, ignore_index = inputs
        ctx.save_for_backward(logits, targets, output[1])
        ctx.ignore_index = ignore_index

    def _backward(ctx, grad_loss, _dstats):
        logits, targets, stats = ctx.saved_tensors
        return torch.ops.gpt_ext.cross_entropy_bwd(grad_loss, logits, targets, stats, ctx.ignore_index), None, None

    torch.library.register_autograd("gpt_ext::cross_entropy_fwd", _backward, setup_context=_setup_context)
