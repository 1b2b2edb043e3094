"""Argument checks shared by every backend: wrong devices, dtypes and shapes fail with a clear message."""

from __future__ import annotations

import torch


def _dtype_names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_same_device_and_dtype(op: str, **tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    first_name, first = next(iter(present.items()))
    for name, t in present.items():
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                             "expected all tensors on one device")
        if t.dtype != first.dtype:
            raise ValueError(f"{op}: {name} is {t.dtype} but {first_name} is {first.dtype}; expected one dtype")


def check_layer_norm_args(x, weight, bias, dtypes, max_width: int) -> None:
    if x.dtype not in dtypes:
        raise TypeError(f"layer_norm: x has dtype {x.dtype}; expected one of {_dtype_names(dtypes)}")
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
