"""PyTorch's F.scaled_dot_product_attention (flash, cuDNN, memory-efficient or math, as PyTorch picks)."""

from __future__ import annotations

import torch.nn.functional as F

from .reference import causal_mask


def attention(q, k, v, causal: bool = True, scale: float | None = None, dropout_p: float = 0.0):
    t_q, t_k = q.shape[-2], k.shape[-2]
    if not causal or t_q == 1:  # a single new query sees the whole cache
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=False, scale=scale)
    if t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale)
    # SDPA's is_causal aligns top-left; continuing a cache needs bottom-right.
    mask = causal_mask(t_q, t_k, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)
