"""Residual add + LayerNorm in Triton: one kernel reads x and residual once and writes s and y.

_add_layer_norm_fwd_kernel -> add_layer_norm_forward -> torch.ops.gpt_triton.add_layer_norm_fwd
The backward is the layer norm's backward kernel with the gradient of s added to dx in the same
pass (gpt_kernels/ops/layer_norm/triton.py, HAS_DS): no separate add, forward or backward.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ... import runtime
from ..layer_norm.triton import layer_norm_backward
from ..rows import MAX_WIDTH, SUPPORTED_DTYPES, normalize_rows, row_launch, rows_of
from . import autograd, checks


@triton.jit
def _add_layer_norm_fwd_kernel(
    X, R, S, Y, W, B, Mean, Rstd,  # x, residual, s = x + residual, y (M, N); w/b (N,); mean/rstd (M,) fp32
    stride_x, stride_r, stride_s, stride_y,  # row strides (columns are contiguous)
    M, N, EPS: tl.constexpr,  # EPS a constexpr as in _layer_norm_fwd_kernel
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    row_ok = rows < M
    mask = row_ok[:, None] & (cols[None, :] < N)
    x = tl.load(X + rows[:, None] * stride_x + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    r = tl.load(R + rows[:, None] * stride_r + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    s = (x + r).to(S.dtype.element_ty)  # rounded to x's dtype, as the unfused add would be
    tl.store(S + rows[:, None] * stride_s + cols[None, :], s, mask=mask)
    x0 = tl.load(X + rows * stride_x, mask=row_ok, other=0.0).to(tl.float32)  # s's first column, as s is rounded
    r0 = tl.load(R + rows * stride_r, mask=row_ok, other=0.0).to(tl.float32)
    s0 = (x0 + r0).to(S.dtype.element_ty).to(tl.float32)
    normalize_rows(s.to(tl.float32), s0, Y, W, B, Mean, Rstd, rows, cols, row_ok, mask, stride_y, N, EPS, HAS_BIAS)


def add_layer_norm_forward(x, residual, weight, bias, eps):
    n = x.shape[-1]
    x2, r2 = rows_of(x, n), rows_of(residual, n)
    m = x2.shape[0]
    y = torch.empty((m, n), dtype=x.dtype, device=x.device)
    s = torch.empty((m, n), dtype=x.dtype, device=x.device)
    mean = torch.empty(m, dtype=torch.float32, device=x.device)
    rstd = torch.empty(m, dtype=torch.float32, device=x.device)
    if m > 0:
        launch, block_n = row_launch("forward", n)
        wrap_triton(_add_layer_norm_fwd_kernel)[(triton.cdiv(m, launch.block_m),)](
            x2, r2, s, y, weight, bias if bias is not None else weight, mean, rstd,
            x2.stride(0), r2.stride(0), s.stride(0), y.stride(0), m, n, eps,
            HAS_BIAS=bias is not None, BLOCK_M=launch.block_m, BLOCK_N=block_n, num_warps=launch.num_warps)
    return y.view(x.shape), s.view(x.shape), mean, rstd


@runtime.triton_custom_op("gpt_triton::add_layer_norm_fwd", fake=autograd.add_layer_norm_fwd_fake)
def add_layer_norm_fwd(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return add_layer_norm_forward(x, residual, weight, bias, eps)


autograd.register_add_layer_norm_autograd("gpt_triton::add_layer_norm_fwd", torch.ops.gpt_triton.layer_norm_bwd)


def triton_launches(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """The forward at (rows, width), the residual in x's dtype and in fp32 (a bf16 sublayer output
    joining an fp32 stream), and the backward with ds (the compiled-code view)."""
    x = torch.empty(shape, dtype=dtype)
    weight = torch.empty(shape[1], dtype=dtype)
    for residual_dtype in dict.fromkeys((dtype, torch.float32)):
        add_layer_norm_forward(x, torch.empty(shape, dtype=residual_dtype), weight, weight, 1e-5)
    layer_norm_backward(x, x, weight, torch.empty(shape[0]), ds=x)


def add_layer_norm(x, residual, weight, bias=None, eps=1e-5):
    checks.check_add_layer_norm_args(x, residual, weight, bias, SUPPORTED_DTYPES, MAX_WIDTH, eps)
    y, s, _, _ = torch.ops.gpt_triton.add_layer_norm_fwd(x, residual, weight, bias, eps)
    return y, s
