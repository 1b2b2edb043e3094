"""Cross-entropy of logits (N, V) against int64 targets (N,): backends torch, reference, triton, ext.

    reference.py  the reference      triton.py  Triton kernels, torch.ops.gpt_triton.cross_entropy_*
    autograd.py   fakes, autograd and the reduction shared by the Triton and extension ops
    ext.py        the extension's fused kernels (csrc/*/cross_entropy.*)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import ext as _ext
from ... import registry, runtime
from .. import fuzzing
from . import checks, ext, reference

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def torch_cross_entropy(logits, targets, ignore_index=-100, reduction="mean"):
    checks.check_cross_entropy_args(logits, targets, reduction, CHECKED_DTYPES)
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction=reduction)



def fuzz_inputs(g: torch.Generator, dtype: torch.dtype, device: str) -> tuple[tuple, dict]:
    """1 to 64 rows of 1 to 3000 logits (60000 on a GPU), large magnitudes and offsets, strided rows,
    ignored targets, every reduction."""
    n, vocab = fuzzing.integer(g, 1, 64), fuzzing.integer(g, 1, 3000 if device == "cpu" else 60000)
    scale, shift = fuzzing.choice(g, [1.0, 10.0, 100.0]), fuzzing.choice(g, [0.0, 1e3, -1e4])
    logits = fuzzing.values(g, (n, vocab), dtype, device, scale, shift)
    if fuzzing.choice(g, [True, False]):
        logits = fuzzing.laid_out(logits, "every-other")
    reduction = fuzzing.choice(g, ["mean", "sum", "none"])
    ids = fuzzing.targets(g, n, vocab, device, fuzzing.choice(g, [0, 2, 5]), one_counted=reduction == "mean")
    return (logits, ids), {"reduction": reduction}


if runtime.HAS_TRITON:
    from .triton import SUPPORTED_DTYPES, triton_launches
    from .triton import cross_entropy as triton_cross_entropy
else:
    triton_cross_entropy = runtime.needs_triton
    triton_launches, SUPPORTED_DTYPES = None, ()

registry.register("cross_entropy", "torch", torch_cross_entropy, "F.cross_entropy")
registry.register("cross_entropy", "reference", reference.cross_entropy, "F.cross_entropy on fp32 logits")
registry.register("cross_entropy", "triton", triton_cross_entropy,
                  "Triton: an online logsumexp forward, one gradient-writing backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)
registry.register("cross_entropy", "ext", ext.cross_entropy, "fused C++/CUDA kernel, one pass per row",
                  unavailable=_ext.unavailable)

registry.declare(registry.Op(
    "cross_entropy",
    shapes=registry.Shapes(gpu=((8192, 50257), (16384, 50257), (16384, 65)), quick=((8192, 50257), (16384, 65)),
                           cpu=((64, 65),)),
    model_shapes=((8192, 50257),),  # GPT-2's vocabulary, 8 sequences of 1024 tokens
    bench_share=22,
    sample_inputs=lambda g: ((torch.randn(6, 11, generator=g), torch.randint(11, (6,), generator=g)), {}),
    fuzz_inputs=fuzz_inputs,
    cuda_kernels=("cross_entropy_fwd", "cross_entropy_bwd"),
    triton_launches=triton_launches,
    triton_dtypes=SUPPORTED_DTYPES,
    memory_bound=True,
    # forward: read the logits; backward: read them again and write their gradient
    cost=lambda shape, size: {"forward": (shape[0] * shape[1] * size, 4 * shape[0] * shape[1]),
                              "backward": (2 * shape[0] * shape[1] * size, 4 * shape[0] * shape[1])},
    loop_elements={kernel: ("logit", lambda c: c["BLOCK_V"])  # a step's BLOCK_V columns of one row
                   for kernel in ("_cross_entropy_fwd_kernel", "_cross_entropy_bwd_kernel")},
))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100, reduction: str = "mean",
                  backend: str = "ext") -> torch.Tensor:
    """Cross-entropy of logits (N, V) against int64 targets (N,)."""
    return registry.backend("cross_entropy", backend).fn(logits, targets, ignore_index, reduction)
