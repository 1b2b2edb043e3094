"""Causal (or full) attention softmax(q k^T * scale) v: backends torch (SDPA), reference, triton.

    reference.py  the reference      sdpa.py  PyTorch's scaled_dot_product_attention
    triton.py     Triton flash attention, torch.ops.gpt_triton.attention_*

When causal and Tq < Tk (queries continuing a KV cache) every backend aligns the mask
bottom-right: query i sees keys up to i + Tk - Tq.
"""

from __future__ import annotations

import torch

from ... import checks, registry, runtime
from . import reference, sdpa

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _checked(fn):
    def attention(q, k, v, causal=True, scale=None, dropout_p=0.0):
        checks.check_attention_args(q, k, v, causal, CHECKED_DTYPES, (q.shape[-1],), scale, dropout_p)
        return fn(q, k, v, causal, scale, dropout_p)
    return attention


if runtime.HAS_TRITON:
    from .triton import attention as triton_attention
else:
    triton_attention = runtime.needs_triton

registry.register("attention", "torch", _checked(sdpa.attention), "F.scaled_dot_product_attention")
registry.register("attention", "reference", _checked(reference.attention), "explicit softmax attention in fp32")
registry.register("attention", "triton", triton_attention, "Triton flash attention, forward and backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True, scale: float | None = None,
              dropout_p: float = 0.0, backend: str = "triton") -> torch.Tensor:
    """softmax(q k^T * scale) v for q (B, H, Tq, D) and k, v (B, H, Tk, D), with dropout_p on the
    probabilities (pass 0 outside training)."""
    return registry.backend("attention", backend).fn(q, k, v, causal, scale, dropout_p)
