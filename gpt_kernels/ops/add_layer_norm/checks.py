"""add_layer_norm's argument checks, shared by every backend: a wrong device, dtype or shape fails with a clear message."""

from __future__ import annotations

from ...checks import dtype_names
from ..layer_norm.checks import check_layer_norm_args


def check_add_layer_norm_args(x, residual, weight, bias, dtypes, max_width: int, eps: float = 1e-5) -> None:
    check_layer_norm_args(x, weight, bias, dtypes, max_width, eps)
    if residual.dtype not in dtypes:
        raise TypeError(f"add_layer_norm: residual has dtype {residual.dtype}; expected one of {dtype_names(dtypes)}")
    if residual.shape != x.shape:
        raise ValueError(f"add_layer_norm: residual has shape {tuple(residual.shape)}; expected x's {tuple(x.shape)}")
    if residual.device != x.device:
        raise ValueError(f"add_layer_norm: residual is on {residual.device} but x is on {x.device}")
