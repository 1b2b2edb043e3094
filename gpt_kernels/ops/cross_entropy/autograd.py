"""Fakes, autograd and the reduction shared by the Triton (gpt_triton::) and C++ (gpt_ext::) cross-entropies.

Both register ops with the same schemas:
    cross_entropy_fwd(logits, targets, ignore_index) -> (loss, stats)   per-row fp32 losses (N,) and
                                                                        the row statistics the backward needs
    cross_entropy_bwd(grad_loss, logits, targets, stats, ignore_index) -> dlogits   grad_loss (N,) per row
The reduction is ordinary autograd-visible PyTorch around them (reduce_losses).
"""

from __future__ import annotations

import torch


def reduce_losses(losses: torch.Tensor, targets: torch.Tensor, ignore_index: int, reduction: str) -> torch.Tensor:
    """The per-row fp32 losses reduced. "mean" divides by the number of non-ignored targets; an
    all-ignored batch gives 0 (with zero gradients) by design, where PyTorch's mean over nothing is
    NaN: a batch of padding cannot poison the weights. No host sync: the count stays a tensor."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    return losses.sum() / (targets != ignore_index).sum().clamp(min=1)


def cross_entropy_bwd_fake(grad_loss, logits, targets, stats, ignore_index):
    return torch.empty_like(logits, memory_format=torch.contiguous_format)


def register_cross_entropy_autograd(fwd_op: str, bwd_op) -> None:
    """Make fwd_op differentiable through bwd_op (an OpOverloadPacket with the bwd schema above)."""

    def setup_context(ctx, inputs, output):
        logits, targets, ignore_index = inputs
        ctx.save_for_backward(logits, targets, output[1])
        ctx.ignore_index = ignore_index

    def backward(ctx, grad_loss, _dstats):
        logits, targets, stats = ctx.saved_tensors
        return bwd_op(grad_loss, logits, targets, stats, ctx.ignore_index), None, None

    torch.library.register_autograd(fwd_op, backward, setup_context=setup_context)
