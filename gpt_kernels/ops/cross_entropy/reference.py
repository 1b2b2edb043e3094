"""The reference cross-entropy: PyTorch's, on logits upcast to fp32 (fp64 stays fp64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Mean (or summed, or per-row) negative log-likelihood of logits (N, V) at int64 targets (N,)."""
    upcast = logits if logits.dtype == torch.float64 else logits.float()
    return F.cross_entropy(upcast, targets, ignore_index=ignore_index, reduction=reduction)
