"""Causal flash attention in Triton, FlashAttention-2 style: forward and backward, no T x T memory.

_attention_fwd_kernel -> attention_forward -> torch.ops.gpt_triton.attention_fwd
_attention_bwd_preprocess_kernel, _attention_bwd_dkdv_kernel, _attention_bwd_dq_kernel
    -> attention_backward -> torch.ops.gpt_triton.attention_bwd

Forward: each program owns BLOCK_M queries of one (batch, head) and streams BLOCK_N-key tiles
through an online softmax with fp32 accumulators; tiles entirely above the causal diagonal are
never visited and tiles entirely below it skip the mask. It saves the logsumexp (base 2, in
units of scaled scores) for the backward.
Backward: delta = rowsum(dO * O); one kernel per key tile accumulates dK and dV over the
queries that see it, another per query tile accumulates dQ over its keys. Nothing is shared
between programs, so there are no atomics and gradients are deterministic.
Dropout on the attention probabilities (FlashAttention's design): a Philox draw per (head,
query, key) from a seed tensor, regenerated in the backward instead of storing a mask.

Queries continuing a KV cache (Tq < Tk) are aligned bottom-right: query i sees keys up to
i + Tk - Tq, which serves generation with the same kernel.
Banded (GPT-3's locally banded layers, a sliding window): with WINDOW = w > 0 query i sees only the
keys i + Tk - Tq - w + 1 .. i + Tk - Tq. The loops start at the band's first block, so blocks wholly
outside the band are never loaded, and only the blocks crossing either edge of the band are masked:
causal attention costs T * w instead of T^2 / 2.

Head dims: the kernels are compiled for 16, 32, 64 and 128; any other multiple of 8 up to 128 (GPT-3
Large's 96, 2.7B's 80) runs the kernel of the next one on heads padded with zero columns, which add
nothing to q.k and give zero output columns, cut off again (F.pad and a slice, so autograd and
torch.compile see ordinary ops). Its cost: the padded tiles' work (4/3 at 96, 8/5 at 80) and a copy of
q, k, v (and of o and dO in the backward); masks on the head dim inside the kernels would save the copies.

Alternatives measured beside these (the forward through TMA descriptors, the one-kernel backward)
live in variants.py until a GPU run decides.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import wrap_triton

from ... import runtime
from ...runtime import INTERPRETER
from . import checks

HEAD_DIMS = (16, 32, 64, 128)  # compiled for; other head dims are padded to the next one
PADDED_HEAD_DIMS = tuple(range(8, 129, 8))  # accepted: whole 16-byte bf16 rows up to 128
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _configs(gpu_configs, interpreter_config=(32, 32, 4, 1)):
    """Autotuning candidates as (BLOCK_M, BLOCK_N, warps, stages); on a GPU the first one its
    kernel's pruning keeps is its default, the one launched with autotuning off. The interpreter gets
    one small configuration: autotuning times every candidate and needs a GPU."""
    return [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=st)
            for m, n, w, st in ([interpreter_config] if INTERPRETER else gpu_configs)]


def _gpu_limits() -> tuple[int, int]:
    """(compute capability as 90 or 80, the most shared memory a block may ask for) of the current
    GPU, from Triton's driver (a stand-in one when tools.compiled compiles without a GPU)."""
    from triton.runtime import driver

    return _limits_of(driver.active, driver.active.get_current_device())


@functools.lru_cache
def _limits_of(active, device) -> tuple[int, int]:  # asked once per driver and device, not per launch
    return active.get_current_target().arch, active.utils.get_device_properties(device)["max_shared_mem"]


def _prune(configs, named_args, *, program_tile: str, forward: bool = False, **kwargs):
    """The candidates worth offering, as the compiled code decides (python -m tools.compiled; the
    rules keep each kernel's registers without spills, checked in CI):
    - bf16/fp16 on sm_90: the program's own tile (BLOCK_M queries in the forward and dQ, BLOCK_N
      keys in dK/dV) is the row count of its dots: under 64 rows they compile to mma.sync, not
      warpgroup MMA; 8 warps (two warpgroups) only for 128 rows. Registers: in the forward at most
      128 fp32 values a thread of the accumulator (BLOCK_M x HEAD_DIM) and the scores (BLOCK_M x
      BLOCK_N) together, and 64 scores a thread (BLOCK_M x BLOCK_N with 4 warps) under 4 stages and
      not banded (a third loop); banded at head dim 128 at most 64 keys a step; with dropout (its Philox draws hold
      registers) at most 32 keys a step, BLOCK_M * BLOCK_N * HEAD_DIM under 2^18 with 4 warps, under 4
      stages at head dim 128. In dK/dV BLOCK_M * HEAD_DIM at most 4096, the dK and dV accumulators
      (2 x BLOCK_N x HEAD_DIM) within 128 fp32 values a thread, and with dropout at most 2048 scores a
      step (BLOCK_M x BLOCK_N) with 4 warps (64 x 64 spilled under Triton 3.6) and at head dim 128 at
      most 16 queries a step in 2 stages; in dQ with dropout at head dim 128 the same 2048 scores (64 x 64
      with 4 warps spilled 2-3 stores under Triton 3.8).
    - bf16/fp16 on sm_80 (mma.sync everywhere, its accumulators in each warp's registers): half
      the sm_90 budgets: 64 fp32 values a thread in the forward, BLOCK_M * HEAD_DIM at most 2048
      in dK/dV and BLOCK_N * HEAD_DIM in dQ; 64 x 32 tiles of 4 warps not in 3 stages (one spill), nor
      in 4 when banded (2 local stores under Triton 3.8).
    - fp32 (full-precision products: FMA, no tensor cores): tiles of at most 32 x 32 with
      BLOCK_M * BLOCK_N * HEAD_DIM at most 2^15.
    - shared memory within the GPU's limit (the forward: a Q tile and `stages` K and V tiles).
    The first kept one is the kernel's default (launched with autotune=False)."""
    args = {**named_args, **kwargs}  # where Triton puts the constexprs differs across versions
    head_dim, dropout, element = args["HEAD_DIM"], args["DROPOUT"], args["Q"].element_size()
    banded = args.get("WINDOW", 0) > 0  # a third masked loop in the forward: more registers
    if INTERPRETER:
        return configs
    arch, smem_limit = _gpu_limits()
    fma = args["PRECISION"] == "ieee"
    hopper = arch >= 90

    def fits_registers(m, n, warps, stages, own):
        if fma:
            return m <= 32 and n <= 32 and m * n * head_dim <= 1 << 15
        if m < 16 or n < 16:  # not in the lists: the smallest tile of a 16-bit dot
            return False
        if hopper and (own < 64 or (warps == 8 and own < 128)):
            return False
        budget = 1 if hopper else 2  # sm_80 halves each register budget
        if forward:
            if m * (head_dim + n) * budget > 128 * 32 * warps:
                return False
            if not hopper and (m, n, warps) == (64, 32, 4) and (stages == 3 or (banded and stages == 4)):
                return False
            if warps == 4 and m * n >= 8192 and (stages >= 4 or banded):  # 64 scores a thread
                return False
            if hopper and banded and head_dim >= 128 and n >= 128:
                return False
            return not dropout or (n <= 32 and not (warps == 4 and m * n * head_dim >= 1 << 18)
                                   and not (head_dim >= 128 and stages >= 4))
        if program_tile == "BLOCK_N":  # dK/dV (and the paired variant's first half)
            return (m * head_dim * budget <= 4096 and 2 * n * head_dim * budget <= 128 * 32 * warps
                    and not (dropout and warps == 4 and m * n > 2048)
                    and not (dropout and head_dim >= 128 and (m > 16 or stages > 2)))
        if dropout and head_dim >= 128 and warps == 4 and m * n > 2048:  # dQ
            return False
        return hopper or n * head_dim <= 2048

    def worth_offering(c):
        m, n, warps, stages = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages
        if forward and (stages * 2 * n + m) * head_dim * element + 1024 > smem_limit:
            return False
        return fits_registers(m, n, warps, stages, c.kwargs[program_tile])

    return [c for c in configs if worth_offering(c)] or configs[-1:]  # the last: the smallest tile


# fp32's tiles (FMA dots), last in every list: on sm_90 a 16-bit dot prunes them (mma.sync)
FP32_TILES = [(32, 16, 4, 2), (16, 32, 4, 2), (16, 16, 4, 2)]
# The Triton tutorial's forward space on Hopper, pruned above; (64, 64) and (64, 32) first, the
# defaults without and with dropout.
FWD_CONFIGS = _configs([(64, 64, 4, 2), (64, 32, 4, 2)] + [(m, n, w, st) for m in (64, 128) for n in (32, 64, 128)
                                                         for w in (4, 8) for st in (2, 3, 4)
                                                         if (m, n, w, st) not in ((64, 64, 4, 2), (64, 32, 4, 2))]
                       + FP32_TILES)
FORWARD_PRUNING = {"early_config_prune": functools.partial(_prune, program_tile="BLOCK_M", forward=True)}
# dK/dV: programs own BLOCK_N keys; dQ: programs own BLOCK_M queries
DKDV_CONFIGS = _configs([(32, 64, 4, 3), (32, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 3), (32, 128, 8, 2),
                         (64, 128, 8, 2), (16, 64, 4, 2)] + FP32_TILES)
DQ_CONFIGS = _configs([(64, 32, 4, 3), (64, 32, 4, 2), (64, 64, 4, 2), (64, 64, 4, 3), (128, 32, 8, 2),
                       (128, 64, 8, 2)] + FP32_TILES)
DKDV_PRUNING = {"early_config_prune": functools.partial(_prune, program_tile="BLOCK_N")}
DQ_PRUNING = {"early_config_prune": functools.partial(_prune, program_tile="BLOCK_M")}
AUTOTUNE_KEY = ["Q_BUCKET", "K_BUCKET", "HEAD_DIM", "CAUSAL"]
BANDED_AUTOTUNE_KEY = [*AUTOTUNE_KEY, "WINDOW"]  # a band changes each program's work: its own tunings
MIN_TUNED_QUERIES = 16  # the smallest tile's rows: fewer queries (decoding) launch the default configuration


@triton.jit
def _dropout_keep(seed, bh, queries, keys, T_Q, T_K, dropout_p):
    """Whether attention probability (query, key) of head bh survives dropout: a Philox draw per
    element, so the backward regenerates exactly the forward's mask from the same seed."""
    return tl.rand(seed, (bh * T_Q + queries).to(tl.int64) * T_K + keys) >= dropout_p


@triton.jit
def _visible(positions, keys, CAUSAL: tl.constexpr, WINDOW: tl.constexpr):
    """Whether the queries at `positions` see `keys` (broadcasting shapes): at or before them (CAUSAL) and, in
    a band (WINDOW > 0), fewer than WINDOW before them. Each loop asks only for the edges its blocks cross."""
    if CAUSAL:
        visible = positions >= keys
        if WINDOW > 0:
            visible = visible & (positions - WINDOW < keys)
    else:
        visible = positions - WINDOW < keys
    return visible


@triton.jit
def _softmax_step(acc, l_i, m_i, q, kt, v, offs_m, keys, qk_scale, offset, T_K, seed, bh, T_Q, dropout_p,
                  MASK: tl.constexpr, CAUSAL: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
                  WINDOW: tl.constexpr):
    """One key tile (kt: HEAD_DIM x BLOCK_N, v: BLOCK_N x HEAD_DIM) through the online softmax. MASK applies the
    causal mask (CAUSAL) and the band's (WINDOW > 0), or else the key bound: causally (and a band is causal)
    a row sees no key past T_K - 1 (rows past T_Q see more, and are not stored), so one select a score.
    With DROPOUT the normaliser l_i sums every probability; only the kept ones, scaled by 1 / (1 - dropout_p),
    reach the output. The scale is folded as in the Triton tutorial: the row max of the raw scores is scaled
    once and exp2(qk * scale - m) is one FFMA a score; only masked tiles need the guard for rows that have
    seen no key yet (bench/results/anchor-level-2026-12-06.md)."""
    qk = tl.dot(q, kt, input_precision=PRECISION)  # (BLOCK_M, BLOCK_N), unscaled
    if MASK:
        if CAUSAL or WINDOW > 0:  # a band is causal too: no stored row sees a key past T_K - 1
            visible = _visible(offs_m[:, None] + offset, keys[None, :], CAUSAL, WINDOW)
        else:
            visible = (keys < T_K)[None, :]
        s = tl.where(visible, qk * qk_scale, float("-inf"))  # base-2 units
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that have seen no key yet
        p = tl.exp2(s - m_safe[:, None])
    else:
        m_new = tl.maximum(m_i, tl.max(qk, axis=1) * qk_scale)  # a row max commutes with a positive scale
        m_safe = m_new
        p = tl.exp2(qk * qk_scale - m_new[:, None])
    alpha = tl.exp2(m_i - m_safe)
    l_i = l_i * alpha + tl.sum(p, axis=1)
    if DROPOUT:
        keep = _dropout_keep(seed, bh, offs_m[:, None], keys[None, :], T_Q, T_K, dropout_p)
        p = tl.where(keep, p / (1.0 - dropout_p), 0.0)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attention_fwd_tiles(acc, l_i, m_i, q, K_tile, V_tile, stride_kt, stride_vt, offs_m, offs_n, offs_d,
                         start, end, qk_scale, offset, T_K, seed, bh, T_Q, dropout_p,
                         MASK: tl.constexpr, CAUSAL: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
                         DROPOUT: tl.constexpr, WINDOW: tl.constexpr):
    """The key tiles [start, end), loaded through pointers."""
    for start_n in range(start, end, BLOCK_N):
        keys = start_n + offs_n
        if MASK:
            k_ok = keys < T_K
            kt = tl.load(K_tile + keys[None, :] * stride_kt + offs_d[:, None], mask=k_ok[None, :], other=0.0)
            v = tl.load(V_tile + keys[:, None] * stride_vt + offs_d[None, :], mask=k_ok[:, None], other=0.0)
        else:
            kt = tl.load(K_tile + keys[None, :] * stride_kt + offs_d[:, None])
            v = tl.load(V_tile + keys[:, None] * stride_vt + offs_d[None, :])
        acc, l_i, m_i = _softmax_step(acc, l_i, m_i, q, kt, v, offs_m, keys, qk_scale, offset, T_K, seed, bh, T_Q,
                                      dropout_p, MASK, CAUSAL, PRECISION, DROPOUT, WINDOW)
    return acc, l_i, m_i


@triton.jit
def _band_ranges(start_m, offset, WINDOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(first key tile of the band, start of the key tiles every query row of this tile sees whole): the
    tiles between them cross the band's lower edge and are masked; the tiles before it are never loaded."""
    band_start = (tl.maximum(start_m + offset - WINDOW + 1, 0) // BLOCK_N) * BLOCK_N
    band_full = tl.cdiv(tl.maximum(start_m + BLOCK_M + offset - WINDOW, 0), BLOCK_N) * BLOCK_N
    return band_start, band_full


@triton.jit
def _causal_ranges(start_m, offset, T_K, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """(end of the key tiles every query row of this tile sees whole, end of all its keys): the
    tiles before the first bound skip the mask, the diagonal tiles up to the second apply it."""
    if CAUSAL:
        full_end = ((start_m + offset + 1) // BLOCK_N) * BLOCK_N
        end = tl.minimum(start_m + BLOCK_M + offset, T_K)
    else:
        full_end = (T_K // BLOCK_N) * BLOCK_N
        end = T_K
    return full_end, end


@triton.autotune(configs=FWD_CONFIGS, key=BANDED_AUTOTUNE_KEY, prune_configs_by=FORWARD_PRUNING,
                 cache_results=True)
@triton.jit
def _attention_fwd_kernel(
    Q, K, V, O, LSE,  # q (B, H, Tq, D), k/v (B, H, Tk, D), o (B, H, Tq, D), lse (B, H, Tq) fp32
    SEED,  # (1,) int64 dropout seed (read only with DROPOUT)
    # The softmax scale (1/sqrt(D) by default) and the probability of dropping an attention probability:
    # constexprs, because a compiled graph passes a Python float as fp64 (Triton passes it as fp32), which
    # made the scores fp64 and the kernel fail to compile under torch.compile (tools.rehearsal checks it).
    SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt,
    stride_vb, stride_vh, stride_vt, stride_ob, stride_oh, stride_ot,  # last dims are contiguous
    H, T_Q, T_K,  # heads, query and key lengths
    Q_BUCKET, K_BUCKET,  # powers of two of T_Q and T_K: the autotuning key, so lengths share tunings
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
    WINDOW: tl.constexpr,  # > 0: the band's width in keys (causal only); 0: dense
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ok = offs_m < T_Q
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=q_ok[:, None], other=0.0)
    K_tile = K + b * stride_kb + h * stride_kh
    V_tile = V + b * stride_vb + h * stride_vh
    qk_scale = SM_SCALE * 1.4426950408889634  # exp(x) = exp2(x * log2(e))
    offset = T_K - T_Q  # bottom-right alignment of the causal mask
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    seed = tl.load(SEED) if DROPOUT else 0
    full_end, end = _causal_ranges(start_m, offset, T_K, CAUSAL, BLOCK_M, BLOCK_N)
    start, diagonal_start = 0, full_end
    if WINDOW > 0:  # the tiles crossing the band's lower edge, masked; then those wholly inside it
        band_start, start = _band_ranges(start_m, offset, WINDOW, BLOCK_M, BLOCK_N)
        # a band at least a tile pair wide: those tiles all lie before every row's diagonal
        acc, l_i, m_i = _attention_fwd_tiles(acc, l_i, m_i, q, K_tile, V_tile, stride_kt, stride_vt, offs_m, offs_n,
                                             offs_d, band_start, tl.minimum(start, end), qk_scale, offset, T_K, seed,
                                             bh, T_Q, DROPOUT_P, True, WINDOW < BLOCK_M + BLOCK_N, BLOCK_N, PRECISION,
                                             DROPOUT, WINDOW)
        diagonal_start = tl.maximum(full_end, start)
    acc, l_i, m_i = _attention_fwd_tiles(acc, l_i, m_i, q, K_tile, V_tile, stride_kt, stride_vt, offs_m, offs_n,
                                         offs_d, start, full_end, qk_scale, offset, T_K, seed, bh, T_Q, DROPOUT_P,
                                         False, CAUSAL, BLOCK_N, PRECISION, DROPOUT, WINDOW)
    # the diagonal tiles start at or after the first key every row's band holds: no band mask there
    acc, l_i, m_i = _attention_fwd_tiles(acc, l_i, m_i, q, K_tile, V_tile, stride_kt, stride_vt, offs_m, offs_n,
                                         offs_d, diagonal_start, end, qk_scale, offset, T_K, seed, bh, T_Q, DROPOUT_P,
                                         True, CAUSAL, BLOCK_N, PRECISION, DROPOUT, 0)
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    o = acc / l_safe[:, None]
    tl.store(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
             o.to(O.dtype.element_ty), mask=q_ok[:, None])
    tl.store(LSE + bh * T_Q + offs_m, m_i + tl.log2(l_safe), mask=q_ok)


@triton.jit
def _attention_bwd_preprocess_kernel(
    O, DO, Delta,  # o, do (B, H, Tq, D); delta (B, H, Tq) fp32 output
    stride_ob, stride_oh, stride_ot, stride_dob, stride_doh, stride_dot,
    H, T_Q,
    HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    ok = offs_m[:, None] < T_Q
    o = tl.load(O + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :], mask=ok, other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :], mask=ok,
                 other=0.0)
    tl.store(Delta + bh * T_Q + offs_m, tl.sum(o.to(tl.float32) * do.to(tl.float32), axis=1), mask=offs_m < T_Q)


@triton.jit
def _dkdv_steps(dk, dv, k, v, Q_head, DO_head, LSE_bh, Delta_bh, stride_qt, stride_dot, offs_n, offs_d, start, end,
                seed, bh, QK_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr, offset, T_Q, T_K, MASK: tl.constexpr,
                PRECISION: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, WINDOW: tl.constexpr):
    """dK and dV of the program's keys over the query blocks [start, end); MASK applies the causal mask (the
    blocks crossing the diagonal), WINDOW > 0 the band's (the blocks crossing its edge). No select elsewhere: a query past T_Q
    loads as zeros (q, dO, lse, delta) and adds nothing to either, and a key past T_K only makes rows the
    stores leave out."""
    for start_m in range(start, end, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_ok = offs_m < T_Q
        qt = tl.load(Q_head + offs_m[None, :] * stride_qt + offs_d[:, None], mask=q_ok[None, :], other=0.0)
        do = tl.load(DO_head + offs_m[:, None] * stride_dot + offs_d[None, :], mask=q_ok[:, None], other=0.0)
        lse = tl.load(LSE_bh + offs_m, mask=q_ok, other=0.0)
        delta = tl.load(Delta_bh + offs_m, mask=q_ok, other=0.0)
        qkt = tl.dot(k, qt, input_precision=PRECISION)  # (BLOCK_N, BLOCK_M) = S^T, unscaled
        pt = tl.exp2(qkt * QK_SCALE - lse[None, :])  # P^T: the scale and the subtraction in one FMA
        if MASK or WINDOW > 0:
            pt = tl.where(_visible(offs_m[None, :] + offset, offs_n[:, None], MASK, WINDOW), pt, 0.0)
        dpt = tl.dot(v, tl.trans(do), input_precision=PRECISION)  # (dO V^T)^T: the gradient of the dropped P
        if DROPOUT:  # O = Z V with Z = P * keep / (1 - p): dV = Z^T dO, dP = dZ * keep / (1 - p)
            keep = _dropout_keep(seed, bh, offs_m[None, :], offs_n[:, None], T_Q, T_K, DROPOUT_P)
            dv += tl.dot(tl.where(keep, pt / (1.0 - DROPOUT_P), 0.0).to(do.dtype), do, input_precision=PRECISION)
            dpt = tl.where(keep, dpt / (1.0 - DROPOUT_P), 0.0)
        else:
            dv += tl.dot(pt.to(do.dtype), do, input_precision=PRECISION)
        dst = pt * (dpt - delta[None, :])  # dS^T
        dk += tl.dot(dst.to(qt.dtype), tl.trans(qt), input_precision=PRECISION)
    return dk, dv


@triton.jit
def _dkdv_tile(Q_head, K_head, V_head, DO_head, LSE_bh, Delta_bh, DK_head, DV_head,
               stride_qt, stride_kt, stride_vt, stride_dot, stride_dkt, stride_dvt,
               start_n, seed, bh, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr, T_Q, T_K,
               CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, WINDOW: tl.constexpr):
    """dK and dV of the BLOCK_N keys from start_n, over BLOCK_M queries at a time. SPLIT: the query blocks
    that cross the diagonal (or, banded, the band's upper edge) in masked loops, the ones that see every key
    of the tile in an unmasked one; the band's queries end where the last key leaves it. Else one masked
    loop (two copies of the loop hold more registers: with dropout's Philox draws, and in the paired kernel
    beside dQ's, they spilled or halved occupancy, python -m tools.compiled)."""
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k_ok = offs_n < T_K
    # Every dot in this loop has the key tile's BLOCK_N rows (scores are recomputed transposed,
    # S^T = K Q^T), as every dot of the dQ loop has the query tile's rows: one MMA shape per loop.
    # With S = Q K^T here instead, the loop mixed BLOCK_M-row and BLOCK_N-row dots, and on the
    # H100 at head dim 128 dK came out wrong in fp16/bf16 (the interpreter computed it right).
    k = tl.load(K_head + offs_n[:, None] * stride_kt + offs_d[None, :], mask=k_ok[:, None], other=0.0)
    v = tl.load(V_head + offs_n[:, None] * stride_vt + offs_d[None, :], mask=k_ok[:, None], other=0.0)
    dk = tl.zeros((BLOCK_N, HEAD_DIM), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, HEAD_DIM), dtype=tl.float32)
    qk_scale = SM_SCALE * 1.4426950408889634
    offset = T_K - T_Q
    first_m = 0
    diagonal_end = 0  # the query blocks [first_m, diagonal_end) cross the diagonal
    if CAUSAL:  # the first query that sees key start_n is start_n - offset; from the last key's on, all
        first_m = (tl.maximum(start_n - offset, 0) // BLOCK_M) * BLOCK_M
        last_key_seen = tl.maximum(start_n + BLOCK_N - 1 - offset, 0)
        diagonal_end = tl.minimum(tl.cdiv(last_key_seen, BLOCK_M) * BLOCK_M, T_Q)
    last_m = T_Q  # the query blocks [first_m, last_m) see some key of the tile
    band_edge = T_Q  # from the block holding query start_n + WINDOW - offset on, the band leaves out some key
    if WINDOW > 0:
        last_m = tl.minimum(start_n + BLOCK_N + WINDOW - 1 - offset, T_Q)
        band_edge = (tl.maximum(start_n + WINDOW - offset, 0) // BLOCK_M) * BLOCK_M
    if not SPLIT:
        diagonal_end = last_m
    elif WINDOW > 0:
        diagonal_end = tl.minimum(diagonal_end, last_m)
    # The diagonal blocks' queries are fewer than BLOCK_M + BLOCK_N past the tile's first key: a band at least
    # that wide leaves none of its keys out there.
    dk, dv = _dkdv_steps(dk, dv, k, v, Q_head, DO_head, LSE_bh, Delta_bh, stride_qt, stride_dot, offs_n, offs_d,
                         first_m, diagonal_end, seed, bh, qk_scale, DROPOUT_P, offset, T_Q, T_K, CAUSAL, PRECISION,
                         DROPOUT, BLOCK_M, WINDOW if not SPLIT or WINDOW < BLOCK_M + BLOCK_N else 0)
    if SPLIT:
        inside = tl.maximum(diagonal_end, first_m)
        inside_end = tl.minimum(band_edge, last_m)
        dk, dv = _dkdv_steps(dk, dv, k, v, Q_head, DO_head, LSE_bh, Delta_bh, stride_qt, stride_dot, offs_n, offs_d,
                             inside, inside_end, seed, bh, qk_scale, DROPOUT_P, offset, T_Q, T_K, False, PRECISION,
                             DROPOUT, BLOCK_M, 0)
        if WINDOW > 0:  # the blocks crossing the band's upper edge, all past the diagonal
            dk, dv = _dkdv_steps(dk, dv, k, v, Q_head, DO_head, LSE_bh, Delta_bh, stride_qt, stride_dot, offs_n,
                                 offs_d, tl.maximum(inside, inside_end), last_m, seed, bh, qk_scale, DROPOUT_P, offset,
                                 T_Q, T_K, False, PRECISION, DROPOUT, BLOCK_M, WINDOW)
    dk *= SM_SCALE
    tl.store(DK_head + offs_n[:, None] * stride_dkt + offs_d[None, :], dk.to(DK_head.dtype.element_ty),
             mask=k_ok[:, None])
    tl.store(DV_head + offs_n[:, None] * stride_dvt + offs_d[None, :], dv.to(DV_head.dtype.element_ty),
             mask=k_ok[:, None])


@triton.jit
def _dq_steps(dq, q, do, lse, delta, K_head, V_head, stride_kt, stride_vt, offs_m, offs_d, start, end, seed, bh,
              QK_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr, offset, T_Q, T_K, MASK: tl.constexpr,
              PRECISION: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_N: tl.constexpr, WINDOW: tl.constexpr):
    """dQ of the program's queries over the key blocks [start, end); MASK applies the causal mask (the blocks
    crossing the diagonal), WINDOW > 0 the band's (the blocks crossing its edge). No select elsewhere: a key past T_K loads
    as zeros and adds nothing, and a query past T_Q only makes rows the store leaves out."""
    for start_n in range(start, end, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ok = offs_n < T_K
        kt = tl.load(K_head + offs_n[None, :] * stride_kt + offs_d[:, None], mask=k_ok[None, :], other=0.0)
        vt = tl.load(V_head + offs_n[None, :] * stride_vt + offs_d[:, None], mask=k_ok[None, :], other=0.0)
        qk = tl.dot(q, kt, input_precision=PRECISION)
        p = tl.exp2(qk * QK_SCALE - lse[:, None])
        if MASK or WINDOW > 0:
            p = tl.where(_visible(offs_m[:, None] + offset, offs_n[None, :], MASK, WINDOW), p, 0.0)
        dp = tl.dot(do, vt, input_precision=PRECISION)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, offs_m[:, None], offs_n[None, :], T_Q, T_K, DROPOUT_P)
            dp = tl.where(keep, dp / (1.0 - DROPOUT_P), 0.0)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kt.dtype), tl.trans(kt), input_precision=PRECISION)
    return dq


@triton.jit
def _dq_tile(Q_head, K_head, V_head, DO_head, LSE_bh, Delta_bh, DQ_head,
             stride_qt, stride_kt, stride_vt, stride_dot, stride_dqt,
             start_m, seed, bh, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr, T_Q, T_K,
             CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, WINDOW: tl.constexpr):
    """dQ of the BLOCK_M queries from start_m, over BLOCK_N keys at a time, from the band's first key block
    (the forward's ranges). SPLIT: the key blocks every query of the tile sees whole in an unmasked loop, the
    ones crossing the diagonal or the band's lower edge in masked ones (as _dkdv_tile); else one masked loop."""
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    q_ok = offs_m < T_Q
    q = tl.load(Q_head + offs_m[:, None] * stride_qt + offs_d[None, :], mask=q_ok[:, None], other=0.0)
    do = tl.load(DO_head + offs_m[:, None] * stride_dot + offs_d[None, :], mask=q_ok[:, None], other=0.0)
    lse = tl.load(LSE_bh + offs_m, mask=q_ok, other=0.0)
    delta = tl.load(Delta_bh + offs_m, mask=q_ok, other=0.0)
    dq = tl.zeros((BLOCK_M, HEAD_DIM), dtype=tl.float32)
    qk_scale = SM_SCALE * 1.4426950408889634
    offset = T_K - T_Q
    full_end, end = T_K, T_K
    if CAUSAL:
        full_end, end = _causal_ranges(start_m, offset, T_K, CAUSAL, BLOCK_M, BLOCK_N)
        full_end = tl.maximum(full_end, 0)  # fewer keys than queries: the first rows see none
    band_start, start = 0, 0
    if WINDOW > 0:
        band_start, start = _band_ranges(start_m, offset, WINDOW, BLOCK_M, BLOCK_N)
    diagonal_start = full_end
    if not SPLIT:
        start, diagonal_start = band_start, band_start
    elif WINDOW > 0:  # the key blocks crossing the band's lower edge (before the diagonal in a band this wide)
        dq = _dq_steps(dq, q, do, lse, delta, K_head, V_head, stride_kt, stride_vt, offs_m, offs_d, band_start,
                       tl.minimum(start, end), seed, bh, qk_scale, DROPOUT_P, offset, T_Q, T_K,
                       WINDOW < BLOCK_M + BLOCK_N, PRECISION, DROPOUT, BLOCK_N, WINDOW)
        diagonal_start = tl.maximum(full_end, start)
    if SPLIT:
        dq = _dq_steps(dq, q, do, lse, delta, K_head, V_head, stride_kt, stride_vt, offs_m, offs_d, start, full_end,
                       seed, bh, qk_scale, DROPOUT_P, offset, T_Q, T_K, False, PRECISION, DROPOUT, BLOCK_N, 0)
    dq = _dq_steps(dq, q, do, lse, delta, K_head, V_head, stride_kt, stride_vt, offs_m, offs_d, diagonal_start, end,
                   seed, bh, qk_scale, DROPOUT_P, offset, T_Q, T_K, CAUSAL, PRECISION, DROPOUT, BLOCK_N,
                   0 if SPLIT else WINDOW)  # split: the diagonal blocks start inside every row's band
    dq *= SM_SCALE
    tl.store(DQ_head + offs_m[:, None] * stride_dqt + offs_d[None, :], dq.to(DQ_head.dtype.element_ty),
             mask=q_ok[:, None])


@triton.jit
def _input_heads(Q, K, V, DO, bh, H, stride_qb, stride_qh, stride_kb, stride_kh, stride_vb, stride_vh,
                 stride_dob, stride_doh):
    """The (batch, head) bh's rows of q, k, v and dO, as the backward kernels read them."""
    b, h = bh // H, bh % H
    return (Q + b * stride_qb + h * stride_qh, K + b * stride_kb + h * stride_kh, V + b * stride_vb + h * stride_vh,
            DO + b * stride_dob + h * stride_doh)


@triton.autotune(configs=DKDV_CONFIGS, key=BANDED_AUTOTUNE_KEY, prune_configs_by=DKDV_PRUNING,
                 cache_results=True)
@triton.jit
def _attention_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, Delta, DK, DV,  # dk/dv (B, H, Tk, D) outputs; lse/delta (B, H, Tq) fp32
    SEED, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr,  # as the forward's
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot, stride_dkb, stride_dkh, stride_dkt, stride_dvb, stride_dvh, stride_dvt,
    H, T_Q, T_K, Q_BUCKET, K_BUCKET,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
    WINDOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    Q_head, K_head, V_head, DO_head = _input_heads(Q, K, V, DO, bh, H, stride_qb, stride_qh, stride_kb, stride_kh,
                                                   stride_vb, stride_vh, stride_dob, stride_doh)
    _dkdv_tile(Q_head, K_head, V_head, DO_head, LSE + bh * T_Q, Delta + bh * T_Q,
               DK + b * stride_dkb + h * stride_dkh, DV + b * stride_dvb + h * stride_dvh,
               stride_qt, stride_kt, stride_vt, stride_dot, stride_dkt, stride_dvt,
               tl.program_id(0) * BLOCK_N, tl.load(SEED) if DROPOUT else 0, bh, SM_SCALE, DROPOUT_P, T_Q, T_K,
               CAUSAL, HEAD_DIM, PRECISION, DROPOUT, BLOCK_M, BLOCK_N, not DROPOUT, WINDOW)


@triton.autotune(configs=DQ_CONFIGS, key=BANDED_AUTOTUNE_KEY, prune_configs_by=DQ_PRUNING,
                 cache_results=True)
@triton.jit
def _attention_bwd_dq_kernel(
    Q, K, V, DO, LSE, Delta, DQ,  # dq (B, H, Tq, D) output
    SEED, SM_SCALE: tl.constexpr, DROPOUT_P: tl.constexpr,  # as the forward's
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kh, stride_kt, stride_vb, stride_vh, stride_vt,
    stride_dob, stride_doh, stride_dot, stride_dqb, stride_dqh, stride_dqt,
    H, T_Q, T_K, Q_BUCKET, K_BUCKET,
    CAUSAL: tl.constexpr, HEAD_DIM: tl.constexpr, PRECISION: tl.constexpr, DROPOUT: tl.constexpr,
    WINDOW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    bh = tl.program_id(1)
    b, h = bh // H, bh % H
    Q_head, K_head, V_head, DO_head = _input_heads(Q, K, V, DO, bh, H, stride_qb, stride_qh, stride_kb, stride_kh,
                                                   stride_vb, stride_vh, stride_dob, stride_doh)
    _dq_tile(Q_head, K_head, V_head, DO_head, LSE + bh * T_Q, Delta + bh * T_Q, DQ + b * stride_dqb + h * stride_dqh,
             stride_qt, stride_kt, stride_vt, stride_dot, stride_dqt,
             tl.program_id(0) * BLOCK_M, tl.load(SEED) if DROPOUT else 0, bh, SM_SCALE, DROPOUT_P, T_Q, T_K,
             CAUSAL, HEAD_DIM, PRECISION, DROPOUT, BLOCK_M, BLOCK_N, not DROPOUT, WINDOW)


# ----------------------------------------------------------------------------- launchers

def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


def _precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"  # fp32 inputs keep full-precision products


def _shape_args(q, k, causal, dropout_p):
    return dict(Q_BUCKET=triton.next_power_of_2(q.shape[2]), K_BUCKET=triton.next_power_of_2(k.shape[2]),
                CAUSAL=causal, HEAD_DIM=q.shape[3], PRECISION=_precision(q.dtype), DROPOUT=dropout_p > 0)


def default_config(autotuned, q: torch.Tensor, shape_args: dict) -> triton.Config:
    """The configuration a launch gets with autotuning off: the first one its kernel's pruning keeps
    (the compiled-code view's "default")."""
    return autotuned.early_config_prune(autotuned.configs, {"Q": q}, **shape_args)[0]


def _launch(autotuned, grid, args: tuple, shape_args: dict, q: torch.Tensor, config: triton.Config | None,
            autotune: bool) -> None:
    """Launch an autotuned kernel: in the given configuration (tools/sweep.py times them so), else
    the autotuner's choice (its timings cached on disk), or with autotune=False its default."""
    if config is None and not autotune:
        config = default_config(autotuned, q, shape_args)
    if config is None:
        wrap_triton(autotuned)[grid](*args, **shape_args)
    else:
        wrap_triton(autotuned.fn)[grid](*args, **shape_args, **config.kwargs, num_warps=config.num_warps,
                                        num_stages=config.num_stages)


def attention_forward(q, k, v, causal: bool, scale: float, dropout_p: float = 0.0, seed: torch.Tensor | None = None,
                      *, window: int = 0, autotune: bool = True,
                      config: triton.Config | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """o and the logsumexp; with dropout_p > 0, seed is a (1,) int64 tensor on q's device; window > 0 the
    band's width (causal), 0 dense. The
    kernel's configuration: config where given, else autotuned, or its default with autotune=False
    and for fewer queries than the smallest tile (a decoding step: timing every candidate again at each
    new power of two of the cache's length would cost more than all the steps it could speed up)."""
    q, k, v = (runtime.unit_last_stride(t) for t in (q, k, v))
    B, H, T_Q, D = q.shape
    T_K = k.shape[2]
    autotune = autotune and T_Q >= MIN_TUNED_QUERIES
    o = torch.empty((B, H, T_Q, D), dtype=q.dtype, device=q.device)
    lse = torch.empty((B, H, T_Q), dtype=torch.float32, device=q.device)
    if B * H == 0:  # an empty batch: nothing to launch
        return o, lse
    grid = lambda meta: (triton.cdiv(T_Q, meta["BLOCK_M"]), B * H)  # noqa: E731
    args = (q, k, v, o, lse, seed if seed is not None else lse, scale, dropout_p,
            *_strides(q), *_strides(k), *_strides(v), *_strides(o))
    _launch(_attention_fwd_kernel, grid, (*args, H, T_Q, T_K), {**_shape_args(q, k, causal, dropout_p), "WINDOW": window},
            q, config, autotune)
    return o, lse


def backward_preprocess(do, q, k, v, o, lse):
    """What every backward kernel starts from: do, q, k, v with unit last strides, delta =
    rowsum(dO * O) (B, H, Tq) fp32, and the empty dq, dk, dv."""
    do, q, k, v = (runtime.unit_last_stride(t) for t in (do, q, k, v))
    B, H, T_Q, D = q.shape
    delta = torch.empty_like(lse)
    block = 64
    wrap_triton(_attention_bwd_preprocess_kernel)[(triton.cdiv(T_Q, block), B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, T_Q, HEAD_DIM=D, BLOCK_M=block)
    return do, q, k, v, delta, torch.empty_like(q, memory_format=torch.contiguous_format), torch.empty(
        k.shape, dtype=k.dtype, device=k.device), torch.empty(k.shape, dtype=k.dtype, device=k.device)


def attention_backward(do, q, k, v, o, lse, causal: bool, scale: float, dropout_p: float = 0.0,
                       seed: torch.Tensor | None = None, *, window: int = 0, autotune: bool = True,
                       dkdv_config: triton.Config | None = None, dq_config: triton.Config | None = None):
    """dq, dk, dv; dropout_p, seed and window as the forward had them; the configurations as the forward's."""
    if q.shape[0] * q.shape[1] == 0:
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    do, q, k, v, delta, dq, dk, dv = backward_preprocess(do, q, k, v, o, lse)
    B, H, T_Q, _ = q.shape
    T_K = k.shape[2]
    common = (*_strides(q), *_strides(k), *_strides(v), *_strides(do))
    seed_arg = seed if seed is not None else lse
    shape_args = {**_shape_args(q, k, causal, dropout_p), "WINDOW": window}
    _launch(_attention_bwd_dkdv_kernel, lambda meta: (triton.cdiv(T_K, meta["BLOCK_N"]), B * H),
            (q, k, v, do, lse, delta, dk, dv, seed_arg, scale, dropout_p, *common, *_strides(dk), *_strides(dv),
             H, T_Q, T_K), shape_args, q, dkdv_config, autotune)
    _launch(_attention_bwd_dq_kernel, lambda meta: (triton.cdiv(T_Q, meta["BLOCK_M"]), B * H),
            (q, k, v, do, lse, delta, dq, seed_arg, scale, dropout_p, *common, *_strides(dq), H, T_Q, T_K),
            shape_args, q, dq_config, autotune)
    return dq, dk, dv


# ----------------------------------------------------------------------------- registration

def _attention_fwd_fake(q, k, v, causal, scale, dropout_p, seed, autotune, window):
    B, H, T_Q, D = q.shape
    return q.new_empty((B, H, T_Q, D)), q.new_empty((B, H, T_Q), dtype=torch.float32)


@runtime.triton_custom_op("gpt_triton::attention_fwd", fake=_attention_fwd_fake)
def attention_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, scale: float, dropout_p: float,
                  seed: torch.Tensor | None, autotune: bool, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    return attention_forward(q, k, v, causal, scale, dropout_p, seed, window=window, autotune=autotune)


def _attention_bwd_fake(do, q, k, v, o, lse, causal, scale, dropout_p, seed, autotune, window):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


@runtime.triton_custom_op("gpt_triton::attention_bwd", fake=_attention_bwd_fake)
def attention_bwd(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                  lse: torch.Tensor, causal: bool, scale: float, dropout_p: float, seed: torch.Tensor | None,
                  autotune: bool, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return attention_backward(do, q, k, v, o, lse, causal, scale, dropout_p, seed, window=window, autotune=autotune)


def _setup_context(ctx, inputs, output):
    q, k, v, causal, scale, dropout_p, seed, autotune, window = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, seed)
    ctx.causal, ctx.scale, ctx.dropout_p, ctx.autotune, ctx.window = causal, scale, dropout_p, autotune, window


def _backward(ctx, do, _dlse):
    q, k, v, o, lse, seed = ctx.saved_tensors
    dq, dk, dv = torch.ops.gpt_triton.attention_bwd(do, q, k, v, o, lse, ctx.causal, ctx.scale, ctx.dropout_p, seed,
                                                    ctx.autotune, ctx.window)
    return dq, dk, dv, None, None, None, None, None, None


attention_fwd.register_autograd(_backward, setup_context=_setup_context)


BANDED_VIEW_WINDOW = 256  # the band the compiled-code view compiles: any width gives the same loops (a constant in the masks)


def triton_launches(shape: tuple[int, int, int, int], dtype: torch.dtype, forward=attention_forward,
                    backward=attention_backward, windows=(0, BANDED_VIEW_WINDOW)) -> None:
    """Causal forward and backward at (B, H, T, D), without and with dropout, dense and banded (the
    compiled-code view); the variants' launches pass their own forward and backward, dense only."""
    q = torch.empty(shape, dtype=dtype)
    lse = torch.empty(shape[:3])
    seed = torch.zeros(1, dtype=torch.int64)
    for window in windows:
        for dropout_p in (0.0, 0.1):
            banded = {"window": window} if window else {}
            forward(q, q, q, True, 0.125, dropout_p, seed, **banded)
            backward(q, q, q, q, q, lse, True, 0.125, dropout_p, seed, **banded)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = True,
              scale: float | None = None, dropout_p: float = 0.0, window: int | None = None,
              autotune: bool = True) -> torch.Tensor:
    """autotune=False launches each kernel's default configuration instead of timing the candidates
    once per shape bucket (the GPU tests: correctness, not speed)."""
    checks.check_attention_args(q, k, v, causal, SUPPORTED_DTYPES, PADDED_HEAD_DIMS, scale, dropout_p, window)
    head_dim = q.shape[-1]
    scale = 1.0 / math.sqrt(head_dim) if scale is None else float(scale)  # the true head dim's, padded or not
    kernel_dim = next(d for d in HEAD_DIMS if d >= head_dim)
    if kernel_dim != head_dim:  # zero columns: see the module's docstring
        q, k, v = (F.pad(t, (0, kernel_dim - head_dim)) for t in (q, k, v))
    # The seed is drawn from the device's generator as a tensor: no host sync, traceable by
    # torch.compile, and reproducible under torch.manual_seed.
    seed = torch.randint(0, 2**62, (1,), device=q.device) if dropout_p > 0 else None
    o = torch.ops.gpt_triton.attention_fwd(q, k, v, causal, scale, float(dropout_p), seed, autotune,
                                           checks.band_width(window, k.shape[2]))[0]
    return o[..., :head_dim] if kernel_dim != head_dim else o
