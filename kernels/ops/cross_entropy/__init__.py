"""Cross-entropy of logits (N, V) against int64 targets (N,): backends torch, reference, ext.

    reference.py  the reference      ext.py  the extension's fused kernels (csrc/*/cross_entropy.*)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import checks, registry
from ... import ext as _ext
from . import ext, reference

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def torch_cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    checks.check_cross_entropy_args(logits, targets, reduction, CHECKED_DTYPES)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)


registry.register("cross_entropy", "torch", torch_cross_entropy, "F.cross_entropy")
registry.register("cross_entropy", "reference", reference.cross_entropy, "F.cross_entropy on fp32 logits")
registry.register("cross_entropy", "ext", ext.cross_entropy, "fused C++/CUDA kernel, one pass per row",
                  unavailable=_ext.unavailable)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100, reduction: str = "mean",
                  backend: str = "ext") -> torch.Tensor:
    """Cross-entropy of logits (N, V) against int64 targets (N,)."""
    return registry.backend("cross_entropy", backend).fn(logits, targets, ignore_index, reduction)
