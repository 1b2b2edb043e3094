"""Cross-entropy in Triton: one program per row, the vocabulary streamed in blocks.

_cross_entropy_fwd_kernel -> cross_entropy_forward -> torch.ops.gpt_triton.cross_entropy_fwd
_cross_entropy_bwd_kernel -> cross_entropy_backward -> torch.ops.gpt_triton.cross_entropy_bwd

Forward: an online logsumexp over the row (one read of the logits), the loss
log_sum - (x[target] - max), and the row's max and log_sum saved apart, as the extension's kernels
do: summed into one logsumexp they would lose the low bits of a large one (fp32 logits near 1e4:
softmax off by 3e-4, which tests/test_fuzz.py found). Backward: one read of the logits, one write of
(softmax - onehot) * grad_loss, softmax = exp2((x - max) * log2(e) - log_sum * log2(e)).
Three passes over the logits in all, the fewest for a standalone loss: a forward that also wrote
the gradient would need a backward pass scaling it by the incoming gradient (four passes).

The forward's WRITE_GRAD variant is that one-sweep design, used where the scale is known in the
forward: gpt_kernels.linear_cross_entropy writes each chunk's gradient over its logits and scales
only the small dh, dweight in its backward (gpt_kernels/ops/linear_cross_entropy/triton.py).

A target outside [0, V) that is not ignore_index gives that row a NaN loss on the GPU (a
data-dependent check would stop the host for every call); on the CPU it is an error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from ... import runtime
from . import autograd, checks

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@triton.jit
def _row_edges(row_start, V, ALIGN: tl.constexpr):
    """(head, body_end) of a row starting row_start elements past a 16-byte-aligned base: its
    columns [0, head) lie before its first 16-byte boundary and [body_end, V) after its last, so
    [head, body_end) starts aligned and spans whole 16-byte groups (ALIGN elements each). A row of
    50257 bf16 logits starts aligned in one row out of eight; this way every row's body loads and
    stores 16 bytes at a time."""
    head = tl.minimum((ALIGN - row_start % ALIGN) % ALIGN, V)
    return head, head + (V - head) // ALIGN * ALIGN


@triton.jit
def _edge_columns(head, body_end, V, ALIGN: tl.constexpr):
    """The at most 2 * (ALIGN - 1) columns outside the body, as one small block and its mask."""
    edge = tl.arange(0, 2 * ALIGN)
    cols = tl.where(edge < ALIGN, edge, body_end + edge - ALIGN)
    return cols, tl.where(edge < ALIGN, edge < head, cols < V)


@triton.jit
def _row_max_and_log_sum(Logits, row_start, V, BLOCK_V: tl.constexpr, ALIGN: tl.constexpr):
    """The row's max and log(sum(exp(x - max))) in fp32, the row read once: its edges, then its aligned
    body in BLOCK_V blocks, two block reductions a step (max, sum). The row starts row_start elements
    past the aligned Logits."""
    head, body_end = _row_edges(row_start, V, ALIGN)
    cols, ok = _edge_columns(head, body_end, V, ALIGN)
    edge = tl.load(Logits + row_start + cols, mask=ok, other=-float("inf")).to(tl.float32)
    running_max = tl.max(edge, axis=0)
    running_sum = tl.sum(tl.exp(edge - tl.where(running_max == -float("inf"), 0.0, running_max)), axis=0)
    Body = Logits + tl.multiple_of(row_start + head, ALIGN)  # told to the compiler: 16-byte accesses
    body_len = tl.multiple_of(body_end - head, ALIGN)
    offs = tl.arange(0, BLOCK_V)
    for start in range(0, body_len, BLOCK_V):
        mask = start + offs < body_len
        x = tl.load(Body + start + offs, mask=mask, other=-float("inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(x, axis=0))
        running_sum = running_sum * tl.exp(running_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        running_max = new_max
    return running_max, tl.log(running_sum)


@triton.jit
def _store_softmax_grad(Logits, Grad, row_start, grad_row_start, target, row_max, log_sum, scale, V,
                        BLOCK_V: tl.constexpr, ALIGN: tl.constexpr, SAME_ROWS: tl.constexpr):
    """grad = (softmax(row) - onehot(target)) * scale, in grad's dtype, edges then the aligned body
    (as _row_logsumexp); Grad may be Logits. The launcher gives grad the logits' row stride where it
    can (SAME_ROWS: grad_row_start == row_start): then the body's stores are 16 bytes wide too."""
    head, body_end = _row_edges(row_start, V, ALIGN)
    cols, ok = _edge_columns(head, body_end, V, ALIGN)
    log2e = 1.4426950408889634
    shift = log_sum * log2e  # p = exp2((x - max) * log2(e) - shift): x - max exact, one FMA, one MUFU.EX2
    edge = tl.load(Logits + row_start + cols, mask=ok, other=-float("inf")).to(tl.float32)
    edge_p = tl.math.exp2((edge - row_max) * log2e - shift)
    edge_grad = tl.where(cols == target, edge_p - 1.0, edge_p) * scale
    tl.store(Grad + grad_row_start + cols, edge_grad.to(Grad.dtype.element_ty), mask=ok)
    Body = Logits + tl.multiple_of(row_start + head, ALIGN)
    if SAME_ROWS:
        GradBody = Grad + tl.multiple_of(row_start + head, ALIGN)
    else:
        GradBody = Grad + grad_row_start + head
    body_len = tl.multiple_of(body_end - head, ALIGN)
    offs = tl.arange(0, BLOCK_V)
    for start in range(0, body_len, BLOCK_V):
        mask = start + offs < body_len
        x = tl.load(Body + start + offs, mask=mask, other=-float("inf")).to(tl.float32)
        p = tl.math.exp2((x - row_max) * log2e - shift)
        grad = tl.where(head + start + offs == target, p - 1.0, p) * scale
        tl.store(GradBody + start + offs, grad.to(Grad.dtype.element_ty), mask=mask)


@triton.jit
def _cross_entropy_fwd_kernel(
    Logits, Targets, Loss, Stats,  # logits (N, V); int64 targets (N,); fp32 outputs: loss (N,), max and log_sum (N, 2)
    Grad, Scale,  # WRITE_GRAD: gradient (N, V) output (may be Logits) and the fp32 scalar multiplying it
    stride_logits, stride_grad,  # row strides (columns are contiguous)
    V, ignore_index,
    WRITE_GRAD: tl.constexpr,
    BLOCK_V: tl.constexpr,
    ALIGN: tl.constexpr,  # elements per 16 bytes
    SAME_ROWS: tl.constexpr,  # stride_grad == stride_logits
):
    row = tl.program_id(0).to(tl.int64)  # row * stride overflows int32 past 2^31 elements
    target = tl.load(Targets + row)
    ignored = target == ignore_index
    row_start = row * stride_logits
    row_max, log_sum = _row_max_and_log_sum(Logits, row_start, V, BLOCK_V, ALIGN)
    in_range = (target >= 0) & (target < V)
    # The target's logit in one load: picking it out of each block cost a third block reduction a step
    # (9 barriers and 24 shuffles a step with it, 6 and 16 without: python -m tools.compiled).
    target_logit = tl.load(Logits + row_start + target, mask=in_range, other=0.0).to(tl.float32)
    loss = tl.where(ignored, 0.0, tl.where(in_range, log_sum - (target_logit - row_max), float("nan")))
    tl.store(Loss + row, loss)
    tl.store(Stats + 2 * row, row_max)
    tl.store(Stats + 2 * row + 1, log_sum)
    if WRITE_GRAD:
        scale = tl.where(ignored, 0.0, tl.load(Scale))
        _store_softmax_grad(Logits, Grad, row_start, row * stride_grad, target, row_max, log_sum, scale, V,
                            BLOCK_V, ALIGN, SAME_ROWS)


@triton.jit
def _cross_entropy_bwd_kernel(
    Logits, Targets, Stats, GradLoss, Grad,  # logits (N, V); targets (N,); stats (N, 2); grad_loss (N,) fp32; grad out
    stride_logits, stride_grad, stride_grad_loss,  # row strides; stride_grad_loss 0 for one shared value
    V, ignore_index,
    BLOCK_V: tl.constexpr,
    ALIGN: tl.constexpr,
    SAME_ROWS: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    target = tl.load(Targets + row)
    scale = tl.where(target == ignore_index, 0.0, tl.load(GradLoss + row * stride_grad_loss).to(tl.float32))
    row_start = row * stride_logits
    _store_softmax_grad(Logits, Grad, row_start, row * stride_grad, target, tl.load(Stats + 2 * row),
                        tl.load(Stats + 2 * row + 1), scale, V, BLOCK_V, ALIGN, SAME_ROWS)


@dataclass(frozen=True)
class Launch:
    block_v: int  # vocabulary columns per step of the row loop
    num_warps: int


def _launch(v: int) -> Launch:
    """One 16-byte bf16 load per thread a step at large V (8 columns x 256 threads): at 16 columns
    (4096 a step) the gradient-writing forward spilled under Triton 3.8 (python -m tools.compiled);
    one block for a small vocabulary."""
    return Launch(block_v=min(triton.next_power_of_2(v), 2048), num_warps=8 if v >= 2048 else 4)


def check_targets_on_cpu(targets: torch.Tensor, vocab: int, ignore_index: int) -> None:
    """On the CPU an out-of-range target is an error naming it, as the extension's; on the GPU
    the kernel gives its row a NaN loss instead (checking here would sync on every call)."""
    if targets.device.type != "cpu":
        return
    bad = ((targets < 0) | (targets >= vocab)) & (targets != ignore_index)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        raise RuntimeError(f"cross_entropy: target {int(targets[row])} at row {row} is outside [0, {vocab}) "
                           f"and is not ignore_index ({ignore_index})")


def cross_entropy_forward(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                          grad: torch.Tensor | None = None,
                          grad_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row losses (fp32, (N,)) and stats (fp32, (N, 2): max and log_sum). With grad (N, V) (which may
    be logits itself) and a fp32 scalar grad_scale, also writes (softmax - onehot) * grad_scale there, in
    the same sweep."""
    check_targets_on_cpu(targets, logits.shape[1], ignore_index)
    logits = runtime.unit_last_stride(logits)  # rows may stay strided
    targets = targets.contiguous()  # the kernels read the target of row i at Targets + i
    n, v = logits.shape
    loss = torch.empty(n, dtype=torch.float32, device=logits.device)
    stats = torch.empty(n, 2, dtype=torch.float32, device=logits.device)
    if n > 0:
        launch = _launch(v)
        write_grad = grad is not None
        wrap_triton(_cross_entropy_fwd_kernel)[(n,)](
            logits, targets, loss, stats, grad if write_grad else logits, grad_scale if write_grad else stats,
            logits.stride(0), grad.stride(0) if write_grad else 0, v, ignore_index,
            WRITE_GRAD=write_grad, BLOCK_V=launch.block_v, ALIGN=16 // logits.element_size(),
            SAME_ROWS=write_grad and grad.stride(0) == logits.stride(0), num_warps=launch.num_warps)
    return loss, stats


def cross_entropy_backward(grad_loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, stats: torch.Tensor,
                           ignore_index: int) -> torch.Tensor:
    """dlogits in the logits' dtype; grad_loss (N,) fp32, one value per row (stride 0 allowed)."""
    logits = runtime.unit_last_stride(logits)  # rows may stay strided
    targets = targets.contiguous()
    n, v = logits.shape
    # the logits' row stride (rows of a wider tensor's view included, not broadcast ones), so that
    # each row of both is aligned alike
    grad = torch.empty_strided((n, v), (max(logits.stride(0), v), 1), dtype=logits.dtype, device=logits.device)
    if n > 0:
        launch = _launch(v)
        wrap_triton(_cross_entropy_bwd_kernel)[(n,)](
            logits, targets, stats, grad_loss, grad, logits.stride(0), grad.stride(0), grad_loss.stride(0),
            v, ignore_index, BLOCK_V=launch.block_v, ALIGN=16 // logits.element_size(),
            SAME_ROWS=grad.stride(0) == logits.stride(0), num_warps=launch.num_warps)
    return grad


# ----------------------------------------------------------------------------- registration

def _cross_entropy_fwd_fake(logits, targets, ignore_index):
    rows = logits.shape[0]
    return logits.new_empty(rows, dtype=torch.float32), logits.new_empty(rows, 2, dtype=torch.float32)


@runtime.triton_custom_op("gpt_triton::cross_entropy_fwd", fake=_cross_entropy_fwd_fake)
def cross_entropy_fwd(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    return cross_entropy_forward(logits, targets, ignore_index)


@runtime.triton_custom_op("gpt_triton::cross_entropy_bwd", fake=autograd.cross_entropy_bwd_fake)
def cross_entropy_bwd(grad_loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, stats: torch.Tensor,
                      ignore_index: int) -> torch.Tensor:
    return cross_entropy_backward(grad_loss.float(), logits, targets, stats, ignore_index)


autograd.register_cross_entropy_autograd("gpt_triton::cross_entropy_fwd", torch.ops.gpt_triton.cross_entropy_bwd)


def triton_launches(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """Forward (plain and gradient-writing, as linear_cross_entropy calls it) and backward at
    (rows, vocabulary) (the compiled-code view)."""
    logits = torch.empty(shape, dtype=dtype)
    targets = torch.zeros(shape[0], dtype=torch.int64)
    _, stats = cross_entropy_forward(logits, targets, -100)
    cross_entropy_forward(logits, targets, -100, grad=logits, grad_scale=torch.ones(()))
    cross_entropy_backward(torch.empty(shape[0]), logits, targets, stats, -100)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                  reduction: str = "mean") -> torch.Tensor:
    """The loss is fp32 whatever the logits' dtype; reductions as autograd.reduce_losses."""
    checks.check_cross_entropy_args(logits, targets, reduction, SUPPORTED_DTYPES)
    losses = torch.ops.gpt_triton.cross_entropy_fwd(logits, targets, ignore_index)[0]  # (N,) fp32
    return autograd.reduce_losses(losses, targets, ignore_index, reduction)
