"""layer_norm's argument checks, shared by every backend: a wrong device, dtype or shape fails with a clear message."""

from __future__ import annotations

from ...checks import check_same_device_and_dtype, dtype_names


def check_layer_norm_args(x, weight, bias, dtypes, max_width: int, eps: float = 1e-5) -> None:
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")
    if x.dtype not in dtypes:
        raise TypeError(f"layer_norm: x has dtype {x.dtype}; expected one of {dtype_names(dtypes)}")
    if x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(f"layer_norm: x must have a non-empty last dimension, got shape {tuple(x.shape)}")
    if weight.dim() != 1 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"layer_norm: weight has shape {tuple(weight.shape)}; expected ({x.shape[-1]},) "
                         "to match the last dimension of x")
    if bias is not None and bias.shape != weight.shape:
        raise ValueError(f"layer_norm: bias has shape {tuple(bias.shape)}; expected ({x.shape[-1]},)")
    if x.shape[-1] > max_width:
        raise ValueError(f"layer_norm: width {x.shape[-1]} exceeds this kernel's maximum of {max_width}")
    check_same_device_and_dtype("layer_norm", x=x, weight=weight, bias=bias)
