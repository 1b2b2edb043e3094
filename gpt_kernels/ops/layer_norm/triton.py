"""LayerNorm in Triton: fused forward, fused backward with a deterministic weight/bias reduction.

_layer_norm_fwd_kernel -> layer_norm_forward -> torch.ops.gpt_triton.layer_norm_fwd
_layer_norm_bwd_kernel + _column_sum_kernel -> layer_norm_backward -> torch.ops.gpt_triton.layer_norm_bwd
(two launches: the rows, with per-program dweight/dbias partials, then one fixed-order sum of both)
The two ops are registered with fake implementations and autograd, so torch.compile traces them
without graph breaks. Statistics (mean, rstd) and all accumulation are fp32.

Rows are centred as (x - x0) - mean(x - x0), x0 the row's first element, in the forward and
again in the backward (from x, not from the stored mean): a nearly constant row with a large
offset keeps its precision instead of losing it to the rounding of the mean.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ... import runtime
from ..rows import (
    MAX_WIDTH,
    SUPPORTED_DTYPES,
    Launch,
    centre_rows,
    normalize_rows,
    product_rounded_alone,
    row_launch,
    rows_of,
    sum_pair,
)
from . import autograd, checks


@triton.jit
def _layer_norm_fwd_kernel(
    X, Y, W, B, Mean, Rstd,  # x (M, N) input, y (M, N) output, w/b (N,) affine, mean/rstd (M,) fp32 outputs
    stride_x, stride_y,  # row strides of x and y (columns are contiguous)
    M, N,  # rows, width
    EPS: tl.constexpr,  # variance epsilon: a constexpr, as a compiled graph would pass a float as fp64 (and
    # promote the rows' arithmetic to it) where Triton passes it as fp32 (tools.rehearsal checks it)
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,  # rows per program (several for narrow rows)
    BLOCK_N: tl.constexpr,  # next power of two >= N: a whole row in registers
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    mask = row_ok[:, None] & (cols[None, :] < N)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    x0 = tl.load(X + rows * stride_x, mask=row_ok, other=0.0).to(tl.float32)
    normalize_rows(x, x0, Y, W, B, Mean, Rstd, rows, cols, row_ok, mask, stride_y, N, EPS, HAS_BIAS)


@triton.jit
def _layer_norm_bwd_kernel(
    DY, X, W, Rstd, DX, DS,  # dy, x, dx (M, N); w (N,); rstd (M,) fp32 from the forward; ds (M, N) added to dx
    DW_partial, DB_partial,  # (programs, N) fp32: this program's share of dweight and dbias
    stride_dy, stride_x, stride_dx, stride_ds,  # row strides
    M, N, rows_per_program,  # rows, width, rows each program owns (a multiple of BLOCK_M)
    HAS_DS: tl.constexpr,  # add_layer_norm: the gradient reaching the sum s directly joins dx
    BLOCK_M: tl.constexpr,  # rows per tile
    BLOCK_N: tl.constexpr,  # next power of two >= N
    ON_GPU: tl.constexpr,  # compiled for a GPU (not the interpreter)
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    first = pid * rows_per_program
    for start in range(first, tl.minimum(first + rows_per_program, M), BLOCK_M):
        rows = start + tl.arange(0, BLOCK_M)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * stride_dy + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(Rstd + rows, mask=row_ok, other=0.0)
        x0 = tl.load(X + rows * stride_x, mask=row_ok, other=0.0).to(tl.float32)
        xhat = centre_rows(x, x0, mask, N)[0] * rstd[:, None]
        wdy = product_rounded_alone(w[None, :], dy, ON_GPU)  # rounded as in c2, so a width-1 dx is exactly 0
        # dx = rstd * (w*dy - mean(w*dy) - xhat * mean(w*dy*xhat))
        c1, c2 = sum_pair(xhat * wdy, wdy, 1)
        c1, c2 = c1 / N, c2 / N
        dx = (wdy - (xhat * c1[:, None] + c2[:, None])) * rstd[:, None]
        if HAS_DS:
            dx += tl.load(DS + rows[:, None] * stride_ds + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        tl.store(DX + rows[:, None] * stride_dx + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        dw_acc += dy * xhat
        db_acc += dy
    tl.store(DW_partial + pid * N + cols, tl.sum(dw_acc, axis=0), mask=col_ok)
    tl.store(DB_partial + pid * N + cols, tl.sum(db_acc, axis=0), mask=col_ok)


@triton.jit
def _column_sum_kernel(
    DW_partial, DB_partial, DW, DB,  # partials (P, N) fp32; dweight, dbias (N,) in the parameter dtype
    P, N,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # Both sums in one launch, each in a fixed order (no atomics): two runs give bitwise identical results.
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc_w = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    acc_b = tl.zeros((BLOCK_P, BLOCK_N), dtype=tl.float32)
    for start in range(0, P, BLOCK_P):
        rows = start + tl.arange(0, BLOCK_P)
        offsets = rows[:, None] * N + cols[None, :]
        mask = (rows[:, None] < P) & (cols[None, :] < N)
        acc_w += tl.load(DW_partial + offsets, mask=mask, other=0.0)
        acc_b += tl.load(DB_partial + offsets, mask=mask, other=0.0)
    tl.store(DW + cols, tl.sum(acc_w, axis=0).to(DW.dtype.element_ty), mask=cols < N)
    tl.store(DB + cols, tl.sum(acc_b, axis=0).to(DB.dtype.element_ty), mask=cols < N)


def _multiprocessors(x: torch.Tensor) -> int:
    """The GPU's SM count; an H100's 132 when compiling for a GPU that is not there (tools.compiled)."""
    return torch.cuda.get_device_properties(x.device).multi_processor_count if x.device.type == "cuda" else 132


def _backward_programs(x: torch.Tensor, m: int, launch: Launch) -> int:
    """Enough programs to hold every SM at 50% occupancy (32 of its 64 warps); each owns a run of rows."""
    if launch.programs:
        target = launch.programs
    elif runtime.INTERPRETER:
        target = 4  # fewer, larger programs run faster
    else:
        target = _multiprocessors(x) * max(1, 32 // launch.num_warps)
    return max(1, min(target, triton.cdiv(m, launch.block_m)))


def _column_strip(x: torch.Tensor, n: int) -> int:
    """Columns per program of the column sums: the widest strip of 32, 16 or 8 that still gives every SM
    a program, else 8 (32 bytes of a partial row, one memory sector). At width 768 that is 96 programs
    where 32-column strips made 24 (18% of an H100's SMs), each waiting on its own chain of partial rows."""
    if runtime.INTERPRETER:
        return min(triton.next_power_of_2(n), 32)
    sms = _multiprocessors(x)
    return next((strip for strip in (32, 16) if triton.cdiv(n, strip) >= sms), 8)


def layer_norm_forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float,
                       launch: Launch | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """y, mean, rstd; launch: another than the width's rule (tools/sweep.py times them so)."""
    n = x.shape[-1]
    x2 = rows_of(x, n)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    mean = torch.empty(m, dtype=torch.float32, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    if m > 0:
        rule, block_n = row_launch("forward", n)
        launch = launch or rule
        wrap_triton(_layer_norm_fwd_kernel)[(triton.cdiv(m, launch.block_m),)](
            x2, y, weight, bias if bias is not None else weight, mean, rstd,
            x2.stride(0), y.stride(0), m, n, eps,
            HAS_BIAS=bias is not None, BLOCK_M=launch.block_m, BLOCK_N=block_n, num_warps=launch.num_warps)
    return y.view(x.shape), mean, rstd


def layer_norm_backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                        ds: torch.Tensor | None = None,
                        launch: Launch | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """dx, dweight, dbias; with ds (add_layer_norm's gradient of its sum output), dx includes it;
    launch as the forward's."""
    n = x.shape[-1]
    x2, dy2 = rows_of(x, n), rows_of(dy, n)
    ds2 = None if ds is None else rows_of(ds, n)
    m = x2.shape[0]
    dx = torch.empty((m, n), dtype=x.dtype, device=x.device)
    dweight = torch.empty(n, dtype=weight.dtype, device=x.device)
    dbias = torch.empty(n, dtype=weight.dtype, device=x.device)
    rule, block_n = row_launch("backward", n)
    launch = launch or rule
    programs = _backward_programs(x2, m, launch)
    rows_per_program = triton.cdiv(triton.cdiv(max(m, 1), programs), launch.block_m) * launch.block_m
    # every program writes its whole partial rows, so only an empty batch needs them zeroed
    partial = (torch.empty if m > 0 else torch.zeros)((2, programs, n), dtype=torch.float32, device=x.device)
    dw_partial, db_partial = partial[0], partial[1]
    if m > 0:
        wrap_triton(_layer_norm_bwd_kernel)[(programs,)](
            dy2, x2, weight, rstd, dx, ds2 if ds2 is not None else dy2, dw_partial, db_partial,
            dy2.stride(0), x2.stride(0), dx.stride(0), (ds2 if ds2 is not None else dy2).stride(0), m, n,
            rows_per_program, HAS_DS=ds2 is not None, BLOCK_M=launch.block_m, BLOCK_N=block_n,
            ON_GPU=not runtime.INTERPRETER, num_warps=launch.num_warps)
    # Narrow column strips, so that many programs share the sums, and 128 partial rows a step, so that
    # each has more loads in flight: each program's serial chain of steps is what the launch waits on.
    sum_block_n = _column_strip(x2, n)
    wrap_triton(_column_sum_kernel)[(triton.cdiv(n, sum_block_n),)](
        dw_partial, db_partial, dweight, dbias, programs, n,
        BLOCK_P=min(128, triton.next_power_of_2(programs)), BLOCK_N=sum_block_n)
    return dx.view(x.shape), dweight, dbias


# ----------------------------------------------------------------------------- registration

@runtime.triton_custom_op("gpt_triton::layer_norm_fwd", fake=autograd.layer_norm_fwd_fake)
def layer_norm_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer_norm_forward(x, weight, bias, eps)


@runtime.triton_custom_op("gpt_triton::layer_norm_bwd", fake=autograd.layer_norm_bwd_fake)
def layer_norm_bwd(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, rstd: torch.Tensor,
                   ds: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer_norm_backward(dy, x, weight, rstd, ds)


autograd.register_layer_norm_autograd("gpt_triton::layer_norm_fwd", torch.ops.gpt_triton.layer_norm_bwd)


def triton_launches(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Forward and backward at (rows, width), with and without a bias (the compiled-code view)."""
    x = torch.empty(shape, dtype=dtype)
    weight = torch.empty(shape[1], dtype=dtype)
    for bias in (weight, None):
        layer_norm_forward(x, weight, bias, 1e-5)
    layer_norm_backward(x, x, weight, torch.empty(shape[0]))


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    checks.check_layer_norm_args(x, weight, bias, SUPPORTED_DTYPES, MAX_WIDTH, eps)
    return torch.ops.gpt_triton.layer_norm_fwd(x, weight, bias, eps)[0]
