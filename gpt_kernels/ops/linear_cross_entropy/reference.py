"""The reference language-model head + loss: the full logits in fp32 (fp64 stays fp64), PyTorch's loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                         reduction: str = "mean") -> torch.Tensor:
    """cross_entropy(h @ weight^T, targets) for h (N, C), weight (V, C), int64 targets (N,)."""
    dtype = torch.float64 if torch.float64 in (h.dtype, weight.dtype) else torch.float32
    return F.cross_entropy(h.to(dtype) @ weight.to(dtype).t(), targets, ignore_index=ignore_index, reduction=reduction)
