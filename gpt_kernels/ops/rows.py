"""Triton pieces of the row-wise normalisations (LayerNorm, residual add + LayerNorm): a whole row in
registers, rows centred from their first element, the launch rule for a width, and rows as (M, N).

Each op's kernels call these; their launchers take another Launch, so tools/sweep.py can time it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .. import runtime

MAX_WIDTH = 65536
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def centre_rows(x, x0, mask, N):
    """x - mean(x) per row as (x - x0) - mean(x - x0), and mean(x - x0); zero outside mask. x0 (BLOCK_M,) is
    each row's first element, which the caller loads on its own: picking it out of x took a block reduction
    (python -m tools.compiled counts them)."""
    shifted = tl.where(mask, x - x0[:, None], 0.0)
    shifted_mean = tl.sum(shifted, axis=1) / N
    return tl.where(mask, shifted - shifted_mean[:, None], 0.0), shifted_mean


@triton.jit
def _add_pair(a, b, c, d):
    return a + c, b + d


@triton.jit
def sum_pair(a, b, axis: tl.constexpr):
    """(sum(a), sum(b)) along axis in one reduction: one set of barriers for both."""
    return tl.reduce((a, b), axis, _add_pair)


@triton.jit
def normalize_rows(x, x0, Y, W, B, Mean, Rstd, rows, cols, row_ok, mask, stride_y, N, eps, HAS_BIAS: tl.constexpr):
    """LayerNorm of the fp32 rows x (first elements x0): stores y, mean and rstd."""
    centered, shifted_mean = centre_rows(x, x0, mask, N)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1) / N + eps)
    w = tl.load(W + cols, mask=cols < N, other=0.0).to(tl.float32)
    y = centered * rstd[:, None] * w[None, :]
    if HAS_BIAS:
        y += tl.load(B + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + rows[:, None] * stride_y + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(Mean + rows, x0 + shifted_mean, mask=row_ok)
    tl.store(Rstd + rows, rstd, mask=row_ok)


@triton.jit
def product_rounded_alone(a, b, ON_GPU: tl.constexpr):
    """a * b (fp32) rounded on its own, never fused into a following add. Launch options cannot promise that:
    Inductor builds the kernels of a compiled graph with FMA contraction on, whatever the eager launch asked
    for. PTX never contracts a mul with a rounding modifier, so on the GPU the product is mul.rn; the
    interpreter fuses nothing and runs no PTX."""
    if ON_GPU:
        return tl.inline_asm_elementwise("mul.rn.f32 $0, $1, $2;", "=f,f,f", [a, b], dtype=tl.float32,
                                         is_pure=True, pack=1)
    else:
        return a * b


@dataclass(frozen=True)
class Launch:
    block_m: int  # rows per tile
    num_warps: int
    programs: int = 0  # backward only: programs that split the rows (0: enough to fill the GPU)


def row_launch(kernel: str, n: int) -> tuple[Launch, int]:
    """The launch for width n and BLOCK_N (whole rows in registers).

    Forward: several narrow rows per program. Backward: one row per step at widths from 1024 up (a
    whole-tile of rows kept 200+ registers live per thread: 12.5% occupancy), spread so each thread
    holds 8 columns (16-byte bf16 accesses). No register cap (maxnreg): Inductor does not pass it to the
    kernels of a compiled graph, and under Triton 3.6, the GPU's, the capped launch spilled."""
    block_n = triton.next_power_of_2(n)
    if kernel == "backward":
        rule = Launch(block_m=max(1, 1024 // block_n), num_warps=min(32, max(4, block_n // 256)))
    else:
        rule = Launch(block_m=max(1, min(16, 4096 // block_n)),
                      num_warps=16 if block_n >= 8192 else 8 if block_n >= 2048 else 4)
    return rule, block_n


def rows_of(t: torch.Tensor, n: int) -> torch.Tensor:
    """t as (rows, n) with unit column stride: a view where possible, a copy otherwise."""
    return runtime.unit_last_stride(t.reshape(-1, n))
