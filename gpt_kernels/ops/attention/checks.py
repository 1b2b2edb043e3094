"""attention's argument checks, shared by every backend: a wrong device, dtype or shape fails with a clear message."""

from __future__ import annotations

import math

from ...checks import check_same_device_and_dtype, dtype_names


def check_window(window, causal: bool) -> None:
    """A band's width: None (dense) or a whole number of keys >= 1, with causal attention."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"attention: window must be an int (the band's width in keys) or None, got {window!r}")
    if window < 1:
        raise ValueError(f"attention: window must be >= 1 (query i sees keys i-window+1 .. i) or None for dense, "
                         f"got {window}")
    if not causal:
        raise ValueError("attention: window (banded attention) needs causal=True: the band ends at each query")


def band_width(window: int | None, t_k: int) -> int:
    """The kernels' WINDOW: 0 (dense) for None or a band at least as wide as the keys (then it leaves out
    no key: query and key are at most Tk - 1 apart), else the width."""
    return 0 if window is None or window >= t_k else window


def check_attention_args(q, k, v, causal: bool, dtypes, head_dims, scale: float | None = None,
                         dropout_p: float = 0.0, window: int | None = None) -> None:
    check_window(window, causal)
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"attention: scale must be a finite number, got {scale}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"attention: dropout_p must be in [0, 1), got {dropout_p}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"attention: {name} has shape {tuple(t.shape)}; expected 4 dimensions (B, H, T, D)")
    if q.dtype not in dtypes:
        raise TypeError(f"attention: q has dtype {q.dtype}; expected one of {dtype_names(dtypes)}")
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
