"""The language-model head and its loss, cross_entropy(h @ weight^T, targets): backends torch, reference, triton.

    reference.py  the reference      triton.py  chunked: the (N, V) logits are never held

In the model, `torch` keeps the head and the loss two ops (the logits, then the cross_entropy
op's backend); any other backend replaces both with this op during training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import registry, runtime
from .. import fuzzing
from . import checks, reference

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def torch_linear_cross_entropy(h, weight, targets, ignore_index=-100, reduction="mean"):
    """PyTorch's ops, unfused: F.linear, then F.cross_entropy (torch.compile fuses what it can)."""
    checks.check_linear_cross_entropy_args(h, weight, targets, reduction, CHECKED_DTYPES)
    return F.cross_entropy(F.linear(h, weight), targets, ignore_index=ignore_index, reduction=reduction)



def fuzz_inputs(g: torch.Generator, dtype: torch.dtype, device: str) -> tuple[tuple, dict]:
    """1 to 48 tokens of width 1 to 64 against 1 to 300 classes (larger on a GPU), ignored targets, mean or sum."""
    cpu = device == "cpu"
    n, width = fuzzing.integer(g, 1, 48 if cpu else 2048), fuzzing.integer(g, 1, 64 if cpu else 1024)
    vocab = fuzzing.integer(g, 1, 300 if cpu else 8000)
    h = fuzzing.values(g, (n, width), dtype, device, fuzzing.choice(g, [0.1, 1.0, 4.0]))
    weight = fuzzing.laid_out(fuzzing.values(g, (vocab, width), dtype, device, width ** -0.5),
                              fuzzing.choice(g, ["contiguous", "transposed"]))
    reduction = fuzzing.choice(g, ["mean", "sum"])
    ids = fuzzing.targets(g, n, vocab, device, fuzzing.choice(g, [0, 3]), one_counted=reduction == "mean")
    return (h, weight, ids), {"reduction": reduction}


if runtime.HAS_TRITON:
    from .triton import SUPPORTED_DTYPES, triton_launches
    from .triton import linear_cross_entropy as triton_linear_cross_entropy
else:
    triton_linear_cross_entropy = runtime.needs_triton
    triton_launches, SUPPORTED_DTYPES = None, ()

registry.register("linear_cross_entropy", "torch", torch_linear_cross_entropy, "F.linear, then F.cross_entropy")
registry.register("linear_cross_entropy", "reference", reference.linear_cross_entropy,
                  "the full logits in fp32, F.cross_entropy")
registry.register("linear_cross_entropy", "triton", triton_linear_cross_entropy,
                  "chunked: per chunk a GEMM, the Triton loss writing its gradient, two GEMMs",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)

# (tokens N, width C, vocabulary V): GPT-2 124M at batch 8 and 16 of 1024 tokens; shakespeare-char
registry.declare(registry.Op(
    "linear_cross_entropy",
    shapes=registry.Shapes(gpu=((8192, 768, 50257), (16384, 768, 50257), (16384, 384, 65)),
                           quick=((8192, 768, 50257),), cpu=((64, 16, 65),)),
    model_shapes=((8192, 768, 50257),),
    bench_share=17,
    sample_inputs=lambda g: ((torch.randn(6, 16, generator=g), torch.randn(11, 16, generator=g),
                              torch.randint(11, (6,), generator=g)), {}),
    fuzz_inputs=fuzz_inputs,
    triton_launches=triton_launches,
    triton_dtypes=SUPPORTED_DTYPES,
    memory_bound=True,  # its Triton kernel is the loss; the three GEMMs per chunk are PyTorch's
    # three GEMMs of 2*N*C*V (logits, dh, dweight); h and the weight read, dh and dweight written
    cost=lambda shape, size: {"forward+backward": (2 * (shape[0] + shape[2]) * shape[1] * size,
                                                   6 * shape[0] * shape[1] * shape[2])},
))


def linear_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100,
                         reduction: str = "mean", backend: str = "triton") -> torch.Tensor:
    """The fp32 loss of cross_entropy(h @ weight^T, targets) for h (N, C), weight (V, C), int64
    targets (N,); reduction "mean" (over non-ignored targets; 0 for none) or "sum"."""
    return registry.backend("linear_cross_entropy", backend).fn(h, weight, targets, ignore_index, reduction)
