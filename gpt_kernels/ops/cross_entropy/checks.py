"""cross_entropy's argument checks, shared by every backend: a wrong device, dtype or shape fails with a clear message."""

from __future__ import annotations

import torch

from ...checks import dtype_names


def check_cross_entropy_args(logits, targets, reduction: str, dtypes) -> None:
    if logits.dtype not in dtypes:
        raise TypeError(f"cross_entropy: logits has dtype {logits.dtype}; expected one of {dtype_names(dtypes)}")
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"cross_entropy: logits has shape {tuple(logits.shape)}; expected (N, V) with V >= 1")
    if targets.dtype != torch.int64:
        raise TypeError(f"cross_entropy: targets has dtype {targets.dtype}; expected torch.int64")
    if targets.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: targets has shape {tuple(targets.shape)}; expected ({logits.shape[0]},)")
    if targets.device != logits.device:
        raise ValueError(f"cross_entropy: targets is on {targets.device} but logits is on {logits.device}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction {reduction!r}; expected 'mean', 'sum' or 'none'")
