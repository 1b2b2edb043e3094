"""Measured alternatives to the default Triton attention (triton.py), kept apart from it until a GPU
run decides between them (then the loser is deleted). The model never reaches them; the benchmarks
do, as providers triton-tma and triton-paired (bench/bench_attention.py), and so does tools/sweep.py.

    attention_forward_tma      the forward with q, k, v and o moved by Hopper's tensor-memory engine
                               (device-side descriptors), where the GPU has one and every stride is a
                               multiple of 16 bytes; the default forward otherwise
    attention_backward_paired  the Triton tutorial's single backward kernel: program i computes dK/dV
                               of key block i, then dQ of query block i
    attention(q, k, v, causal, scale, dropout_p, variant="tma" | "paired")
                               forward and backward with one of them (eager autograd)
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from ... import runtime
from .triton import (
    AUTOTUNE_KEY,
    FORWARD_PRUNING,
    FP32_TILES,
    FWD_CONFIGS,
    _causal_ranges,
    _configs,
    _dkdv_tile,
    _dq_tile,
    _gpu_limits,
    _input_heads,
    _launch,
    _prune,
    _shape_args,
    _softmax_step,
    _strides,
    attention_backward,
    attention_forward,
    backward_preprocess,
)
from .triton import triton_launches as default_launches

# The paired backward (a variant): BLOCK_N keys (dK/dV) and queries (dQ) per program, BLOCK_M of
# the other per step. The tutorial's 128 keys on Hopper spilled at head dim 64 (7-470 local
# stores, python -m tools.compiled): at most 64.
PAIRED_BWD_CONFIGS = _configs([(32, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (16, 64, 4, 2)] + FP32_TILES)
PAIRED_PRUNING = {"early_config_prune": functools.partial(_prune, program_tile="BLOCK_N")}


@triton.jit
def _attention_fwd_tma_tiles(acc, l_i, m_i, q, k_desc, v_desc, b, h, offs_m, offs_n, start, end, qk_scale, offset,
                             T_K, seed, bh, T_Q, dropout_p,
                             MASK: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                             PRECISION: tl.constexpr, DROPOUT: tl.constexpr):
    """The key tiles [start, end), loaded by the tensor-memory engine (rows past T_K come back zero)."""
    for start_n in range(start, end, BLOCK_N):
        k = k_desc.load([b, h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        v = v_desc.load([b, h, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
        acc, l_i, m_i = _softmax_step(acc, l_i, m_i, q, tl.trans(k), v, offs_m, start_n + offs_n, qk_scale, offset,
                                      T_K, seed, bh, T_Q, dropout_p, MASK, CAUSAL, PRECISION, DROPOUT, 0)
    return acc, l_i, m_i


@triton.autotune(configs=FWD_CONFIGS, key=AUTOTUNE_KEY, prune_configs_by=FORWARD_PRUNING,
                 cache_results=True)
@triton.jit
def _attention_fwd_tma_kernel(
    Q, K, V, O, LSE, SEED, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr,  # as _attention_fwd_kernel
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,  # multiples of 16 bytes (checked)
    B, H, T_Q, T_K, Q_BUCKET, K_BUCKET,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The forward with q, k, v and o moved by Hopper's tensor-memory engine: 4-D descriptors over
    the (B, H, T, D) views, made on the device (no host descriptor per launch)."""
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    q_desc = tl.make_tensor_descriptor(Q, shape=[B, H, T_Q, HEAD_DIM], strides=[stride_qb, stride_qh, stride_qt, 1],
                                       block_shape=[1, 1, BLOCK_M, HEAD_DIM])
    k_desc = tl.make_tensor_descriptor(K, shape=[B, H, T_K, HEAD_DIM], strides=[stride_kb, stride_kh, stride_kt, 1],
                                       block_shape=[1, 1, BLOCK_N, HEAD_DIM])
    v_desc = tl.make_tensor_descriptor(V, shape=[B, H, T_K, HEAD_DIM], strides=[stride_vb, stride_vh, stride_vt, 1],
                                       block_shape=[1, 1, BLOCK_N, HEAD_DIM])
    o_desc = tl.make_tensor_descriptor(O, shape=[B, H, T_Q, HEAD_DIM], strides=[stride_ob, stride_oh, stride_ot, 1],
                                       block_shape=[1, 1, BLOCK_M, HEAD_DIM])
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    q = q_desc.load([b, h, start_m, 0]).reshape(BLOCK_M, HEAD_DIM)
    qk_scale = SM_SCALE * 1.4426950408889634
    offset = T_K - T_Q
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    seed = tl.load(SEED) if DROPOUT else 0
    full_end, end = _causal_ranges(start_m, offset, T_K, CAUSAL, BLOCK_M, BLOCK_N)
    acc, l_i, m_i = _attention_fwd_tma_tiles(acc, l_i, m_i, q, k_desc, v_desc, b, h, offs_m, offs_n, 0, full_end,
                                             qk_scale, offset, T_K, seed, bh, T_Q, DROPOUT_P,
                                             False, CAUSAL, BLOCK_N, HEAD_DIM, PRECISION, DROPOUT)
    acc, l_i, m_i = _attention_fwd_tma_tiles(acc, l_i, m_i, q, k_desc, v_desc, b, h, offs_m, offs_n, full_end, end,
                                             qk_scale, offset, T_K, seed, bh, T_Q, DROPOUT_P,
                                             True, CAUSAL, BLOCK_N, HEAD_DIM, PRECISION, DROPOUT)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o = (acc / l_safe[:, None]).to(O.dtype.element_ty)
    o_desc.store([b, h, start_m, 0], o.reshape(1, 1, BLOCK_M, HEAD_DIM))  # rows past T_Q are not written
    tl.store(LSE + bh * T_Q + offs_m, m_i + tl.log2(l_safe), mask=offs_m < T_Q)


@triton.autotune(configs=PAIRED_BWD_CONFIGS, key=AUTOTUNE_KEY, prune_configs_by=PAIRED_PRUNING,
                 cache_results=True)
@triton.jit
def _attention_bwd_paired_kernel(
    Q, K, V, DO, LSE, Delta, DQ, DK, DV,
    SEED, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot, stride_dqb, stride_dqh, stride_dqt,
    stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt,
    H, T_Q, T_K, Q_BUCKET, K_BUCKET,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The Triton tutorial's one backward kernel: program i computes dK/dV of key block i (BLOCK_N
    keys, BLOCK_M queries at a time), then dQ of query block i (BLOCK_N queries, BLOCK_M keys at a
    time). Under the causal mask the two loops' lengths add up to the same for every program (early
    key blocks see many queries, early query blocks few keys): balanced, one launch, no atomics."""
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    start = tl.program_id(0) * BLOCK_N
    seed = tl.load(SEED) if DROPOUT else 0
    Q_head, K_head, V_head, DO_head = _input_heads(Q, K, V, DO, bh, H, stride_qb, stride_qh, stride_kb, stride_kh,
                                                   stride_vb, stride_vh, stride_dob, stride_doh)
    if start < T_K:
        _dkdv_tile(Q_head, K_head, V_head, DO_head, LSE + bh * T_Q, Delta + bh * T_Q,
                   DK + b * stride_dkb + h * stride_dkh, DV + b * stride_dvb + h * stride_dvh,
                   stride_qt, stride_kt, stride_vt, stride_dot, stride_dkt, stride_dvt,
                   start, seed, bh, SM_SCALE, DROPOUT_P, T_Q, T_K, CAUSAL, HEAD_DIM, PRECISION, DROPOUT, BLOCK_M, BLOCK_N,
                   False, 0)
    if start < T_Q:
        _dq_tile(Q_head, K_head, V_head, DO_head, LSE + bh * T_Q, Delta + bh * T_Q, DQ + b * stride_dqb + h * stride_dqh,
                 stride_qt, stride_kt, stride_vt, stride_dot, stride_dqt,
                 start, seed, bh, SM_SCALE, DROPOUT_P, T_Q, T_K, CAUSAL, HEAD_DIM, PRECISION, DROPOUT, BLOCK_N, BLOCK_M, False, 0)


# ----------------------------------------------------------------------------- launchers

def _tma_allocator(size: int, alignment: int, stream) -> torch.Tensor:
    """Scratch for the descriptors a kernel makes on the device (Triton asks for it at launch)."""
    return torch.empty(size, dtype=torch.int8, device="cuda")


def _tma_usable(*tensors: torch.Tensor) -> bool:
    """Descriptors need 16-byte-aligned starts and strides (allocations themselves are aligned).
    16-bit inputs only: fp32's FMA tiles spilled through descriptors (16 x 16 at head dim 128: 39-56
    local stores on sm_90, python -m tools.compiled), where the default forward's do not."""
    if tensors[0].element_size() != 2:
        return False
    if not runtime.INTERPRETER and _gpu_limits()[0] < 90:  # the GPU (or the one compiled for) has no TMA engine
        return False
    return all((t.storage_offset() * t.element_size()) % 16 == 0
               and all((stride * t.element_size()) % 16 == 0 for stride in t.stride()[:-1]) for t in tensors)


def attention_forward_tma(q, k, v, causal: bool, scale: float, dropout_p: float = 0.0, seed: torch.Tensor | None = None,
                          *, autotune: bool = True, config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """As triton.attention_forward, the tiles moved by descriptors where they can be."""
    q, k, v = (runtime.unit_last_stride(t) for t in (q, k, v))
    B, H, T_Q, D = q.shape
    T_K = k.shape[2]
    o = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    if B * H == 0 or not _tma_usable(q, k, v, o):
        return attention_forward(q, k, v, causal, scale, dropout_p, seed, autotune=autotune, config=config)
    lse = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)
    if q.device.type == "cuda":
        triton.set_allocator(_tma_allocator)
    _launch(_attention_fwd_tma_kernel, lambda meta: (triton.cdiv(T_Q, meta["BLOCK_M"]), B * H),
            (q, k, v, o, lse, seed if seed is not None else lse, scale, dropout_p,
             *_strides(q), *_strides(k), *_strides(v), *_strides(o), B, H, T_Q, T_K),
            _shape_args(q, k, causal, dropout_p), q, config, autotune)
    return o, lse


def attention_backward_paired(do, q, k, v, o, lse, causal: bool, scale: float, dropout_p: float = 0.0,
                              seed: torch.Tensor | None = None, *, autotune: bool = True,
                              config: triton.Config | None = None):
    """As triton.attention_backward, in one kernel after the preprocessing."""
    if q.shape[0] * q.shape[1] == 0:
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    do, q, k, v, delta, dq, dk, dv = backward_preprocess(do, q, k, v, o, lse)
    B, H, T_Q, _ = q.shape
    T_K = k.shape[2]
    _launch(_attention_bwd_paired_kernel, lambda meta: (triton.cdiv(max(T_Q, T_K), meta["BLOCK_N"]), B * H),
            (q, k, v, do, lse, delta, dq, dk, dv, seed if seed is not None else lse, scale, dropout_p,
             *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq), *_strides(dk), *_strides(dv),
             H, T_Q, T_K), _shape_args(q, k, causal, dropout_p), q, config, autotune)
    return dq, dk, dv


# variant -> (forward, backward): each replaces one half of the default
VARIANTS = {"tma": (attention_forward_tma, attention_backward), "paired": (attention_forward, attention_backward_paired)}


class _VariantAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, dropout_p, variant, autotune):
        seed = torch.randint(0, 2**62, (1,), device=q.device) if dropout_p > 0 else None
        with runtime.eager_launches():
            o, lse = VARIANTS[variant][0](q, k, v, causal, scale, dropout_p, seed, autotune=autotune)
        ctx.save_for_backward(q, k, v, o, lse, seed)
        ctx.causal, ctx.scale, ctx.dropout_p, ctx.variant, ctx.autotune = causal, scale, dropout_p, variant, autotune
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, seed = ctx.saved_tensors
        backward = VARIANTS[ctx.variant][1]
        with runtime.eager_launches():
            dq, dk, dv = backward(do, q, k, v, o, lse, ctx.causal, ctx.scale, ctx.dropout_p, seed,
                                  autotune=ctx.autotune)
        return dq, dk, dv, None, None, None, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True, scale: float | None = None,
              dropout_p: float = 0.0, window: int | None = None, *, variant: str, autotune: bool = True) -> torch.Tensor:
    if variant not in VARIANTS:
        raise ValueError(f"unknown attention variant {variant!r}; expected one of {list(VARIANTS)}")
    if window is not None:
        raise ValueError(f"attention variant {variant!r} has no banded kernels (window={window}); the default "
                         "Triton kernels (backend 'triton') have them")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    return _VariantAttention.apply(q, k, v, causal, scale, float(dropout_p), variant, autotune)


# The two variants at (B, H, T, D), causal, without and with dropout (the compiled-code view)
triton_launches = functools.partial(default_launches, forward=attention_forward_tma, backward=attention_backward_paired,
                                    windows=(0,))
