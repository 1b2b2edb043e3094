"""Fused cross-entropy in the C++/CUDA extension (csrc/cpu/cross_entropy.cpp, csrc/cuda/cross_entropy.cu)."""

from __future__ import annotations

import torch

from ... import ext
from . import autograd, checks

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """The loss is fp32 whatever the logits' dtype; reductions as autograd.reduce_losses."""
    checks.check_cross_entropy_args(logits, targets, reduction, SUPPORTED_DTYPES)
    ext.require(logits.device)
    losses = torch.ops.gpt_ext.cross_entropy_fwd(logits, targets, ignore_index)[0]  # (N,) fp32
    return autograd.reduce_losses(losses, targets, ignore_index, reduction)


if ext.available():
    @torch.library.register_fake("gpt_ext::cross_entropy_fwd")
    def _(logits, targets, ignore_index):
        rows = logits.shape[0]  # stats: the row's running max and sum of exponentials
        return logits.new_empty(rows, dtype=torch.float32), logits.new_empty((rows, 2), dtype=torch.float32)

    torch.library.register_fake("gpt_ext::cross_entropy_bwd")(autograd.cross_entropy_bwd_fake)
    autograd.register_cross_entropy_autograd("gpt_ext::cross_entropy_fwd", torch.ops.gpt_ext.cross_entropy_bwd)
