"""PyTorch's own attention: F.scaled_dot_product_attention (flash, cuDNN, memory-efficient or math, as
PyTorch picks); a band (window) on a GPU through FlexAttention with a sliding-window block mask, PyTorch's
best for it (its kernel skips the blocks outside the band), else SDPA with an explicit mask."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from .checks import band_width
from .reference import causal_mask

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # a torch without FlexAttention (before 2.5): bands go through SDPA with a mask
    flex_attention = None


def attention(q, k, v, causal: bool = True, scale: float | None = None, dropout_p: float = 0.0,
              window: int | None = None):
    t_q, t_k = q.shape[-2], k.shape[-2]
    window = band_width(window, t_k) or None
    if window is not None:
        if flex_attention is not None and q.is_cuda and dropout_p == 0.0:  # FlexAttention has no dropout
            return banded_flex_attention(q, k, v, scale, window)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(t_q, t_k, q.device, window),
                                              dropout_p=dropout_p, scale=scale)
    if not causal or t_q == 1:  # a single new query sees the whole cache
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=False, scale=scale)
    if t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale)
    # SDPA's is_causal aligns top-left; continuing a cache needs bottom-right.
    mask = causal_mask(t_q, t_k, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=scale)


def _band_mask_mod(window: int, offset: int):
    """FlexAttention's mask: the query at position q_idx + offset sees keys p - window + 1 .. p."""
    def mask_mod(batch, head, q_idx, kv_idx):
        position = q_idx + offset
        return (position >= kv_idx) & (position - window < kv_idx)
    return mask_mod


def _band_block_mask(t_q: int, t_k: int, window: int, device: torch.device):
    return create_block_mask(_band_mask_mod(window, t_k - t_q), None, None, t_q, t_k, device=device)


_cached_band_block_mask = functools.lru_cache(maxsize=16)(_band_block_mask)  # eager: one per shape and band


@functools.cache
def _compiled_flex_attention():
    # Outside torch.compile FlexAttention runs unfused (materialising the scores); compiled, it is the
    # fused kernel. Compiled once, lazily: no compilation at import.
    return torch.compile(flex_attention, dynamic=False)


def banded_flex_attention(q, k, v, scale: float | None, window: int):
    """Causal attention in a band of `window` keys through FlexAttention. Inside torch.compile the block
    mask is traced into the graph and FlexAttention compiled with it; eager, the block mask is cached and
    FlexAttention compiled once (on a CPU it runs unfused: the tests' path)."""
    if torch.compiler.is_compiling():
        return flex_attention(q, k, v, block_mask=_band_block_mask(q.shape[-2], k.shape[-2], window, q.device),
                              scale=scale)
    block_mask = _cached_band_block_mask(q.shape[-2], k.shape[-2], window, q.device)
    fn = _compiled_flex_attention() if q.is_cuda else flex_attention
    return fn(q, k, v, block_mask=block_mask, scale=scale)
