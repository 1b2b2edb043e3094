"""The reference attention: explicit softmax(q k^T * scale) v in fp32 (fp64 stays fp64), in q's dtype."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _upcast(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def causal_mask(t_q: int, t_k: int, device: torch.device, window: int | None = None) -> torch.Tensor:
    """Bool (t_q, t_k) mask, True where attention is allowed.

    Aligned bottom-right: the last query sees every key, as when t_q new tokens attend to a
    KV cache of t_k - t_q earlier tokens plus themselves. With a window (a band), the query at
    position p sees only the keys p - window + 1 .. p.
    """
    q_pos = torch.arange(t_q, device=device)[:, None] + (t_k - t_q)
    k_pos = torch.arange(t_k, device=device)[None, :]
    mask = q_pos >= k_pos
    return mask if window is None else mask & (q_pos - window < k_pos)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None,
              dropout_p: float = 0.0, window: int | None = None) -> torch.Tensor:
    """q (B, H, Tq, D), k and v (B, H, Tk, D) -> (B, H, Tq, D); dropout on the probabilities; window: the
    causal band's width (None: dense)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (_upcast(q) @ _upcast(k).transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[-2], k.shape[-2], q.device, window), float("-inf"))
    probs = F.dropout(torch.softmax(scores, dim=-1), dropout_p) if dropout_p > 0 else torch.softmax(scores, dim=-1)
    return (probs @ _upcast(v)).to(q.dtype)  # (B, H, Tq, D)
