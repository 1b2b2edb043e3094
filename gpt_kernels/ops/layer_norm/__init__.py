"""LayerNorm over the last dimension: backends torch, reference, triton, ext.

    reference.py  the reference          triton.py  Triton kernels, torch.ops.gpt_triton.layer_norm_*
    autograd.py   fakes and autograd shared by the Triton and extension ops
    ext.py        the extension's ops (csrc/cpu/layer_norm.cpp, csrc/cuda/layer_norm.cu)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import ext as _ext
from ... import registry, runtime
from .. import fuzzing
from . import ext, reference


def torch_layer_norm(x, weight, bias=None, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


def fuzz_inputs(g: torch.Generator, dtype: torch.dtype, device: str) -> tuple[tuple, dict]:
    """Rows of 1 to 300 columns (5000 on a GPU), large magnitudes and offsets, strided, with or without a bias."""
    rows = fuzzing.choice(g, [(fuzzing.integer(g, 1, 64),), (fuzzing.integer(g, 1, 4), fuzzing.integer(g, 1, 9))])
    width = fuzzing.integer(g, 1, 300 if device == "cpu" else 5000)
    scale, offset = fuzzing.choice(g, [1e-2, 1.0, 30.0]), fuzzing.choice(g, [0.0, 5.0, -100.0])
    x = fuzzing.laid_out(fuzzing.values(g, (*rows, width), dtype, device, scale, offset), fuzzing.choice(g, fuzzing.LAYOUTS))
    weight = fuzzing.values(g, (width,), dtype, device, 0.5, 1.0)
    bias = fuzzing.values(g, (width,), dtype, device) if fuzzing.choice(g, [True, False]) else None
    return (x, weight, bias), {}


if runtime.HAS_TRITON:
    from ..rows import SUPPORTED_DTYPES
    from .triton import layer_norm as triton_layer_norm
    from .triton import triton_launches
else:
    triton_layer_norm = runtime.needs_triton
    triton_launches, SUPPORTED_DTYPES = None, ()

registry.register("layer_norm", "torch", torch_layer_norm, "F.layer_norm")
registry.register("layer_norm", "reference", reference.layer_norm, "F.layer_norm in fp32, cast back")
registry.register("layer_norm", "triton", triton_layer_norm, "fused Triton forward and backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)
registry.register("layer_norm", "ext", ext.layer_norm, "C++/CUDA extension kernels", unavailable=_ext.unavailable)

registry.declare(registry.Op(
    "layer_norm",
    shapes=registry.Shapes(gpu=((16384, 768), (16384, 1024), (8192, 4096), (65536, 768)),
                           quick=((16384, 768), (8192, 4096)), cpu=((64, 128),)),
    model_shapes=((8192, 768),),  # GPT-2 124M, 8 sequences of 1024 tokens
    bench_share=25,
    sample_inputs=lambda g: ((torch.randn(6, 16, generator=g), torch.rand(16, generator=g), torch.randn(16, generator=g)), {}),
    fuzz_inputs=fuzz_inputs,
    cuda_kernels=("layer_norm_fwd", "layer_norm_bwd"),
    triton_launches=triton_launches,
    triton_dtypes=SUPPORTED_DTYPES,
    memory_bound=True,
    # forward: read x, write y; backward: read x and dy, write dx (the statistics and parameters are small)
    cost=lambda shape, size: {"forward": (2 * shape[0] * shape[1] * size, 8 * shape[0] * shape[1]),
                              "backward": (3 * shape[0] * shape[1] * size, 14 * shape[0] * shape[1])},
    # the forward holds whole rows (no loop); the backward steps over BLOCK_M rows, then sums the partials
    loop_elements={"_layer_norm_bwd_kernel": ("row element", lambda c: c["BLOCK_M"] * c["BLOCK_N"]),
                   "_column_sum_kernel": ("partial", lambda c: c["BLOCK_P"] * c["BLOCK_N"])},
))


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5,
               *, backend: str = "triton") -> torch.Tensor:
    """LayerNorm over the last dimension of x (..., C) with weight (C,) and optional bias (C,)."""
    return registry.backend("layer_norm", backend).fn(x, weight, bias, eps)
