"""The language-model head and its loss in one op that never holds the (N, V) logits.

linear_cross_entropy_forward -> torch.ops.gpt_triton.linear_cross_entropy_fwd -> (loss, dh, dweight)

The tokens are taken in chunks. Per chunk: the chunk's logits (one GEMM), then the Triton
cross-entropy kernel in its gradient-writing form (gpt_kernels/ops/cross_entropy/triton.py), which
reads each row once for its logsumexp and overwrites it with (softmax - onehot) / count in the
same sweep, then dh for the chunk's rows and the chunk's share of dweight (two GEMMs). The
gradients are therefore computed in the forward (Liger-Kernel's FusedLinearCrossEntropy, the
one-sweep loss of modded-nanogpt); the backward only scales dh and dweight by the incoming
gradient. Nothing waits for the host: the count of non-ignored targets stays a tensor.

dweight accumulates across chunks in fp32 and is returned in weight's dtype: no more rounding
than PyTorch's single (N, V) x (N, C) GEMM. The op is opaque to torch.compile on purpose: three
GEMMs and a kernel per chunk dwarf a call's host cost, and its memory is then exactly this code's.
"""

from __future__ import annotations

import torch

from ... import checks as shared_checks
from ... import runtime
from ..cross_entropy.triton import cross_entropy_forward
from . import checks

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The most bytes one chunk's logits may take (rows rounded down to a power of two, GEMM-friendly):
# GPT-2 at 50257 tokens of vocabulary gets 2048-row chunks in bf16.
CHUNK_BYTES = 256 << 20


def chunk_rows(n: int, vocab: int, element_size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    rows = max(64, chunk_bytes // (vocab * element_size))
    return max(1, min(n, 1 << (rows.bit_length() - 1)))


def linear_cross_entropy_forward(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                                 reduction: str, matmul_dtype: torch.dtype,
                                 with_grad: bool,
                                 chunk_bytes: int = CHUNK_BYTES) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, dh, dweight): dh and dweight are the gradients of the loss itself (empty without
    with_grad), in h's and weight's dtypes (fp32 for fp16 GEMMs, below). The GEMMs run in matmul_dtype
    (autocast's dtype), on chunks of rows whose logits take at most chunk_bytes.

    fp16: the gradient is computed here, before a GradScaler's scale reaches it, and (softmax - onehot) /
    count in fp16 flushes to zero wherever softmax / count < 6e-8 (most of a 50257-token vocabulary over
    GPT-2's 12,288 tokens). So with fp16 GEMMs the kernel writes softmax - onehot, the division by the count
    is applied to the GEMMs' results in fp32, and dh and dweight stay fp32 until the backward has scaled them."""
    n, vocab = h.shape[0], weight.shape[0]
    fp16 = matmul_dtype == torch.float16
    with torch.autocast(h.device.type, enabled=False):  # this code picks every dtype itself
        w = weight.to(matmul_dtype)
        hm = h.to(matmul_dtype)
        if reduction == "mean":
            scale = 1.0 / (targets != ignore_index).sum().clamp(min=1).to(torch.float32)  # 0-d, no host sync
        else:
            scale = torch.ones((), dtype=torch.float32, device=h.device)
        losses = torch.empty(n, dtype=torch.float32, device=h.device)
        dh = torch.empty(hm.shape, dtype=torch.float32 if fp16 else hm.dtype, device=h.device) if with_grad \
            else hm.new_empty(0)
        dweight = torch.zeros(weight.shape, dtype=torch.float32, device=h.device) if with_grad else w.new_empty(0)
        written_scale = torch.ones_like(scale) if fp16 else scale  # what the kernel multiplies its gradient by
        rows = chunk_rows(n, vocab, w.element_size(), chunk_bytes)
        for start in range(0, n, rows):
            chunk = slice(start, min(start + rows, n))
            logits = torch.mm(hm[chunk], w.t())  # (rows, V)
            losses[chunk] = cross_entropy_forward(logits, targets[chunk], ignore_index,
                                                  grad=logits if with_grad else None, grad_scale=written_scale)[0]
            if with_grad:  # logits now hold the chunk's dlogits
                if fp16:  # |softmax - onehot| <= 1: the GEMMs stay in fp16's range; the count divides in fp32
                    dh[chunk] = torch.mm(logits, w).float() * scale
                    dweight += torch.mm(logits.t(), hm[chunk]).float() * scale
                    continue
                torch.mm(logits, w, out=dh[chunk])
                if logits.dtype == torch.float32:
                    dweight.addmm_(logits.t(), hm[chunk])
                else:  # the chunk's GEMM rounds once to its dtype; the sum across chunks stays fp32
                    dweight += torch.mm(logits.t(), hm[chunk])
        loss = losses.sum() * scale
        if fp16 or not with_grad:
            return loss, dh, dweight
        return loss, dh.to(h.dtype), dweight.to(weight.dtype)


def triton_launches(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    """The loss kernel as one chunk of (tokens, width, vocabulary) launches it (the compiled-code
    view; the GEMMs are PyTorch's)."""
    n, _, vocab = shape
    logits = torch.empty(chunk_rows(n, vocab, dtype.itemsize), vocab, dtype=dtype)
    targets = torch.zeros(logits.shape[0], dtype=torch.int64)
    cross_entropy_forward(logits, targets, -100, grad=logits, grad_scale=torch.ones(()))


@torch.library.custom_op("gpt_triton::linear_cross_entropy_fwd", mutates_args=())
def linear_cross_entropy_fwd(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int,
                             reduction: str, matmul_dtype: torch.dtype,
                             with_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    with runtime.eager_launches():  # an opaque op: its chunks' launches run eagerly, also under compile
        return linear_cross_entropy_forward(h, weight, targets, ignore_index, reduction, matmul_dtype, with_grad)


@linear_cross_entropy_fwd.register_fake
def _(h, weight, targets, ignore_index, reduction, matmul_dtype, with_grad):
    loss = h.new_empty((), dtype=torch.float32)
    if not with_grad:
        return loss, h.new_empty(0, dtype=matmul_dtype), weight.new_empty(0, dtype=matmul_dtype)
    fp32 = matmul_dtype == torch.float16  # the gradients stay fp32 until the backward has scaled them
    return (loss, torch.empty_like(h, dtype=torch.float32 if fp32 else h.dtype),
            torch.empty_like(weight, dtype=torch.float32 if fp32 else weight.dtype))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output[1], output[2])
    ctx.dtypes = inputs[0].dtype, inputs[1].dtype


def _backward(ctx, grad_loss, _ddh, _ddweight):
    dh, dweight = ctx.saved_tensors
    h_dtype, weight_dtype = ctx.dtypes
    return (dh * grad_loss).to(h_dtype), (dweight * grad_loss).to(weight_dtype), None, None, None, None, None


linear_cross_entropy_fwd.register_autograd(_backward, setup_context=_setup_context)


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
                         reduction: str = "mean") -> torch.Tensor:
    """The fp32 loss of cross_entropy(h @ weight^T, targets). Under autocast the GEMMs run in
    autocast's dtype, as F.linear's would; otherwise h and weight must share a dtype."""
    checks.check_linear_cross_entropy_args(h, weight, targets, reduction, SUPPORTED_DTYPES)
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        matmul_dtype = torch.get_autocast_dtype(device_type)
    else:
        shared_checks.check_same_device_and_dtype("linear_cross_entropy", h=h, weight=weight)
        matmul_dtype = h.dtype
    with_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    return torch.ops.gpt_triton.linear_cross_entropy_fwd(h, weight, targets, ignore_index, reduction, matmul_dtype,
                                                         with_grad)[0]
