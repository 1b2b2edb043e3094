"""linear_cross_entropy's argument checks, shared by every backend: a wrong device, dtype or shape fails with a clear message."""

from __future__ import annotations

import torch

from ...checks import dtype_names


def check_linear_cross_entropy_args(h, weight, targets, reduction: str, dtypes) -> None:
    if h.dtype not in dtypes:
        raise TypeError(f"linear_cross_entropy: h has dtype {h.dtype}; expected one of {dtype_names(dtypes)}")
    if weight.dtype not in dtypes:
        raise TypeError(f"linear_cross_entropy: weight has dtype {weight.dtype}; expected one of {dtype_names(dtypes)}")
    if h.dim() != 2:
        raise ValueError(f"linear_cross_entropy: h has shape {tuple(h.shape)}; expected (N, C)")
    if weight.dim() != 2 or weight.shape[1] != h.shape[1] or weight.shape[0] < 1:
        raise ValueError(f"linear_cross_entropy: weight has shape {tuple(weight.shape)}; expected (V, {h.shape[1]}) "
                         "with V >= 1, the head's (vocabulary, width)")
    if targets.dtype != torch.int64:
        raise TypeError(f"linear_cross_entropy: targets has dtype {targets.dtype}; expected torch.int64")
    if targets.shape != h.shape[:1]:
        raise ValueError(f"linear_cross_entropy: targets has shape {tuple(targets.shape)}; expected ({h.shape[0]},)")
    for name, t in (("weight", weight), ("targets", targets)):
        if t.device != h.device:
            raise ValueError(f"linear_cross_entropy: {name} is on {t.device} but h is on {h.device}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"linear_cross_entropy: reduction {reduction!r}; expected 'mean' or 'sum' (the gradient "
                         "is computed in the forward, so per-row losses are not offered: use cross_entropy)")
