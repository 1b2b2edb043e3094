"""Argument checks shared by every backend: wrong devices, dtypes and shapes fail with a clear message."""

from __future__ import annotations

import math

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


def check_layer_norm_args(x, weight, bias, dtypes, max_width: int, eps: float = 1e-5) -> None:
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps}")
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


def check_add_layer_norm_args(x, residual, weight, bias, dtypes, max_width: int, eps: float = 1e-5) -> None:
    check_layer_norm_args(x, weight, bias, dtypes, max_width, eps)
    if residual.dtype not in dtypes:
        raise TypeError(f"add_layer_norm: residual has dtype {residual.dtype}; expected one of {_dtype_names(dtypes)}")
    if residual.shape != x.shape:
        raise ValueError(f"add_layer_norm: residual has shape {tuple(residual.shape)}; expected x's {tuple(x.shape)}")
    if residual.device != x.device:
        raise ValueError(f"add_layer_norm: residual is on {residual.device} but x is on {x.device}")


def check_attention_args(q, k, v, causal: bool, dtypes, head_dims, scale: float | None = None,
                         dropout_p: float = 0.0) -> None:
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"attention: scale must be a finite number, got {scale}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: {name} has shape {tuple(t.shape)}; expected 4 dimensions (B, H, T, D)")
    if q.dtype not in dtypes:
        raise TypeError(f"attention: q has dtype {q.dtype}; expected one of {_dtype_names(dtypes)}")
    check_same_device_and_dtype("attention", q=q, k=k, v=v)
    if k.shape != v.shape:
        raise ValueError(f"attention: k has shape {tuple(k.shape)} but v has {tuple(v.shape)}; expected equal shapes")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError(f"attention: q {tuple(q.shape)} and k {tuple(k.shape)} must agree in B, H and D")
    if q.shape[3] not in head_dims:
        raise ValueError(f"attention: head dim {q.shape[3]} is not supported; expected one of {head_dims}")
    if q.shape[2] < 1 or k.shape[2] < 1:
        raise ValueError(f"attention: sequence lengths must be >= 1, got Tq={q.shape[2]}, Tk={k.shape[2]}")
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"attention: causal attention needs Tq <= Tk (queries continue the keys), "
                         f"got Tq={q.shape[2]}, Tk={k.shape[2]}")


def check_cross_entropy_args(logits, targets, reduction: str, dtypes) -> None:
    if logits.dtype not in dtypes:
        raise TypeError(f"cross_entropy: logits has dtype {logits.dtype}; expected one of {_dtype_names(dtypes)}")
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


def check_linear_cross_entropy_args(h, weight, targets, reduction: str, dtypes) -> None:
    if h.dtype not in dtypes:
        raise TypeError(f"linear_cross_entropy: h has dtype {h.dtype}; expected one of {_dtype_names(dtypes)}")
    if weight.dtype not in dtypes:
        raise TypeError(f"linear_cross_entropy: weight has dtype {weight.dtype}; expected one of {_dtype_names(dtypes)}")
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
