"""Causal (or full) attention softmax(q k^T * scale) v: backends torch (SDPA), reference, triton.

    reference.py  the reference      sdpa.py  PyTorch's scaled_dot_product_attention (FlexAttention for bands)
    triton.py     Triton flash attention, torch.ops.gpt_triton.attention_*

When causal and Tq < Tk (queries continuing a KV cache) every backend aligns the mask
bottom-right: query i sees keys up to i + Tk - Tq. A window w (GPT-3's locally banded layers)
narrows it to the keys i + Tk - Tq - w + 1 .. i + Tk - Tq.
"""

from __future__ import annotations

import torch

from ... import registry, runtime
from .. import fuzzing
from . import checks, reference, sdpa

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _checked(fn):
    def attention(q, k, v, causal=True, scale=None, dropout_p=0.0, window=None):
        checks.check_attention_args(q, k, v, causal, CHECKED_DTYPES, (q.shape[-1],), scale, dropout_p, window)
        return fn(q, k, v, causal, scale, dropout_p, window)
    return attention


if runtime.HAS_TRITON:
    from .triton import SUPPORTED_DTYPES, triton_launches
    from .triton import attention as triton_attention
    from .variants import triton_launches as variant_launches
else:
    triton_attention = runtime.needs_triton
    triton_launches, variant_launches, SUPPORTED_DTYPES = None, None, ()

registry.register("attention", "torch", _checked(sdpa.attention), "F.scaled_dot_product_attention")
registry.register("attention", "reference", _checked(reference.attention), "explicit softmax attention in fp32")
registry.register("attention", "triton", triton_attention, "Triton flash attention, forward and backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)


def fuzz_inputs(g: torch.Generator, dtype: torch.dtype, device: str) -> tuple[tuple, dict]:
    """1 to 80 keys (600 on a GPU), head dims compiled for and padded ones, as many queries or fewer
    (aligned to the end, as in decoding), causal or not, banded or not, strided or not; inputs scaled by up
    to 4 give scores of magnitude ~100 (softmax nearly one-hot). On the CPU, fp16 and bf16 are drawn at
    scales up to 1 only: the kernel rounds P and dS to the input dtype before their matmuls, as
    FlashAttention does on GPUs, while PyTorch's CPU SDPA keeps them in fp32, and with nearly one-hot rows
    (dQ = dS K cancels) that yardstick is stricter than any GPU kernel's; every scale runs on the GPU."""
    cpu = device == "cpu"
    t_k = fuzzing.integer(g, 1, 80 if cpu else 600)
    b, h, t_q = fuzzing.integer(g, 1, 2), fuzzing.integer(g, 1, 3), fuzzing.integer(g, 1, t_k)
    d = fuzzing.choice(g, [16, 32, 64, 24] if cpu else [16, 32, 64, 128, 80, 96])  # 24, 80, 96: zero-padded
    scale = fuzzing.choice(g, [0.1, 1.0] if cpu and dtype != torch.float32 else [0.1, 1.0, 4.0])
    transposed = fuzzing.choice(g, [True, False])

    def heads(t: int) -> torch.Tensor:  # (B, H, T, D), stored (B, T, H, D) where transposed
        stored = fuzzing.values(g, (b, t, h, d), dtype, device, scale)
        return stored.transpose(1, 2) if transposed else stored.transpose(1, 2).contiguous()

    causal = fuzzing.choice(g, [True, False])
    window = fuzzing.choice(g, [None, None, fuzzing.integer(g, 1, t_k)]) if causal else None
    return (heads(t_q), heads(t_k), heads(t_k)), {"causal": causal, "window": window}


def _cost(shape, size):
    """Causal: half the 4*B*H*T*T*D FLOPs of the full product; the backward 2.5 times the forward's.
    Bytes: q, k, v read and o written; the backward reads q, k, v, o, do and writes dq, dk, dv."""
    b, h, t, d = shape
    forward_flops = 2 * b * h * t * t * d
    return {"forward": (4 * b * h * t * d * size, forward_flops), "backward": (8 * b * h * t * d * size, 2.5 * forward_flops)}


# (B, H, T, D) at B*T = 16384 tokens: GPT-2's heads (D=64), heads of 128, and the shakespeare-char model
registry.declare(registry.Op(
    "attention",
    shapes=registry.Shapes(gpu=tuple((16384 // t, 12, t, 64) for t in (256, 1024, 2048, 4096))
                           + tuple((16384 // t, 6, t, 128) for t in (1024, 2048, 4096)) + ((64, 6, 256, 64),),
                           # quick: one shape, whose 35 autotuned configurations are compiled one after another
                           quick=((8, 12, 2048, 64),), cpu=((1, 2, 64, 16),)),
    model_shapes=((8, 12, 1024, 64),),
    other_model_shapes=((8, 16, 2048, 128),),  # GPT-3 XL's; Large's head dim 96 and 2.7B's 80 run padded to 128
    bench_share=88,  # python -m tools.rehearsal: 41 compilations x 1.6 s + 15 s of timed rounds (the band's 3 included)
    sample_inputs=lambda g: (tuple(torch.randn(1, 2, 24, 16, generator=g) for _ in range(3)), {"causal": True}),
    fuzz_inputs=fuzz_inputs,
    triton_launches=triton_launches,
    triton_dtypes=SUPPORTED_DTYPES,
    variant_launches=variant_launches,
    cost=_cost,
    loop_elements={kernel: ("score", lambda c: c["BLOCK_M"] * c["BLOCK_N"])  # a step's BLOCK_M x BLOCK_N scores
                   for kernel in ("_attention_fwd_kernel", "_attention_bwd_dkdv_kernel", "_attention_bwd_dq_kernel",
                                  "_attention_fwd_tma_kernel", "_attention_bwd_paired_kernel")},
))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True, scale: float | None = None,
              dropout_p: float = 0.0, window: int | None = None, backend: str = "triton",
              autotune: bool = True) -> torch.Tensor:
    """softmax(q k^T * scale) v for q (B, H, Tq, D) and k, v (B, H, Tk, D), with dropout_p on the
    probabilities (pass 0 outside training). window: causal attention in a band, the query at position
    i seeing keys i-window+1 .. i (None: dense; a band at least Tk wide is dense). autotune=False
    (backend triton only) launches each kernel's default configuration instead of timing the
    candidates once per shape bucket."""
    fn = registry.backend("attention", backend).fn
    if autotune:
        return fn(q, k, v, causal, scale, dropout_p, window)
    if backend != "triton":
        raise ValueError(f"autotune=False applies to backend 'triton', not {backend!r}")
    return fn(q, k, v, causal, scale, dropout_p, window, autotune=False)
