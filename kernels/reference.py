"""One pure-PyTorch reference per op: the single source of truth for tests and benchmarks.

Each computes in at least fp32 (fp64 inputs stay fp64) and returns the input's dtype,
except cross_entropy, which returns the fp32 (or fp64) loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _upcast(t: torch.Tensor | None) -> torch.Tensor | None:
    if t is None or t.dtype == torch.float64:
        return t
    return t.float()


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    y = F.layer_norm(_upcast(x), (x.shape[-1],), _upcast(weight), _upcast(bias), eps)
    return y.to(x.dtype)


def causal_mask(t_q: int, t_k: int, device: torch.device) -> torch.Tensor:
    """Bool (t_q, t_k) mask, True where attention is allowed.

    Aligned bottom-right: the last query sees every key, as when t_q new tokens attend to a
    KV cache of t_k - t_q earlier tokens plus themselves.
    """
    q_pos = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    return q_pos >= torch.arange(t_k, device=device)[None, :]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None) -> torch.Tensor:
    """Explicit softmax(q k^T * scale) v, masked when causal; q (B, H, Tq, D), k and v (B, H, Tk, D)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (_upcast(q) @ _upcast(k).transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device), float("-inf"))
    return (torch.softmax(scores, dim=-1) @ _upcast(v)).to(q.dtype)  # (B, H, Tq, D)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100, reduction: str = "mean") -> torch.Tensor:
    """Mean (or summed, or per-row) negative log-likelihood of logits (N, V) at int64 targets (N,)."""
    return F.cross_entropy(_upcast(logits), targets, ignore_index=ignore_index, reduction=reduction)
