"""Residual add + LayerNorm, the pre-LN transformer's seam: (y, s) with s = x + residual in x's
dtype and y = layer_norm(s). Backends torch, reference, triton, ext.

    reference.py  the reference      triton.py  one Triton kernel forward, one backward
    autograd.py   fakes and autograd shared by the Triton and extension ops
    ext.py        the extension's op (csrc/cpu/layer_norm.cpp, csrc/cuda/layer_norm.cu)

residual may have another float dtype than x (a bf16 sublayer output joining an fp32 residual
stream under autocast); its gradient comes back in its own dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import ext as _ext
from ... import registry, runtime
from .. import fuzzing
from . import checks, ext, reference

CHECKED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def torch_add_layer_norm(x, residual, weight, bias=None, eps=1e-5):
    """PyTorch's ops, unfused: an add, then F.layer_norm (torch.compile fuses the two itself)."""
    checks.check_add_layer_norm_args(x, residual, weight, bias, CHECKED_DTYPES, max_width=1 << 31, eps=eps)
    s = x + residual.to(x.dtype)
    return F.layer_norm(s, (s.shape[-1],), weight, bias, eps), s


def fuzz_inputs(g: torch.Generator, dtype: torch.dtype, device: str) -> tuple[tuple, dict]:
    """As layer_norm's, with a residual in x's dtype or in fp32 (an fp32 stream under autocast)."""
    rows = fuzzing.choice(g, [(fuzzing.integer(g, 1, 64),), (fuzzing.integer(g, 1, 4), fuzzing.integer(g, 1, 9))])
    width = fuzzing.integer(g, 1, 300 if device == "cpu" else 5000)
    scale, offset = fuzzing.choice(g, [1e-2, 1.0, 30.0]), fuzzing.choice(g, [0.0, 5.0, -100.0])
    layout = fuzzing.choice(g, fuzzing.LAYOUTS)
    x = fuzzing.laid_out(fuzzing.values(g, (*rows, width), dtype, device, scale, offset), layout)
    residual_dtype = fuzzing.choice(g, [dtype, torch.float32])
    residual = fuzzing.laid_out(fuzzing.values(g, (*rows, width), residual_dtype, device, scale), layout)
    weight = fuzzing.values(g, (width,), dtype, device, 0.5, 1.0)
    bias = fuzzing.values(g, (width,), dtype, device) if fuzzing.choice(g, [True, False]) else None
    return (x, residual, weight, bias), {}


if runtime.HAS_TRITON:
    from ..rows import SUPPORTED_DTYPES
    from .triton import add_layer_norm as triton_add_layer_norm
    from .triton import triton_launches
else:
    triton_add_layer_norm = runtime.needs_triton
    triton_launches, SUPPORTED_DTYPES = None, ()

registry.register("add_layer_norm", "torch", torch_add_layer_norm, "x + residual, then F.layer_norm")
registry.register("add_layer_norm", "reference", reference.add_layer_norm, "the add rounded to x's dtype, LayerNorm in fp32")
registry.register("add_layer_norm", "triton", triton_add_layer_norm, "one fused Triton kernel forward, one backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)
registry.register("add_layer_norm", "ext", ext.add_layer_norm, "C++/CUDA extension kernels", unavailable=_ext.unavailable)

registry.declare(registry.Op(
    "add_layer_norm",
    shapes=registry.Shapes(gpu=((16384, 768), (16384, 1024), (8192, 4096)), quick=((16384, 768),), cpu=((64, 128),)),
    model_shapes=((8192, 768),),
    bench_share=19,
    sample_inputs=lambda g: ((torch.randn(6, 16, generator=g), torch.randn(6, 16, generator=g), torch.rand(16, generator=g),
                              torch.randn(16, generator=g)), {}),
    fuzz_inputs=fuzz_inputs,
    cuda_kernels=("add_layer_norm_fwd",),  # its backward is layer_norm_bwd with ds
    triton_launches=triton_launches,
    triton_dtypes=SUPPORTED_DTYPES,
    memory_bound=True,
    # forward: read x and the residual, write s and y; backward: read dy, x and ds, write dx
    cost=lambda shape, size: {"forward": (4 * shape[0] * shape[1] * size, 9 * shape[0] * shape[1]),
                              "backward": (4 * shape[0] * shape[1] * size, 15 * shape[0] * shape[1])},
))


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   eps: float = 1e-5, *, backend: str = "triton") -> tuple[torch.Tensor, torch.Tensor]:
    """(y, s): s = x + residual in x's dtype, y = LayerNorm of s over its last dimension."""
    return registry.backend("add_layer_norm", backend).fn(x, residual, weight, bias, eps)
