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
from . import ext, reference


def torch_layer_norm(x, weight, bias=None, eps=1e-5):
    return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)


if runtime.HAS_TRITON:
    from .triton import layer_norm as triton_layer_norm
else:
    triton_layer_norm = runtime.needs_triton

registry.register("layer_norm", "torch", torch_layer_norm, "F.layer_norm")
registry.register("layer_norm", "reference", reference.layer_norm, "F.layer_norm in fp32, cast back")
registry.register("layer_norm", "triton", triton_layer_norm, "fused Triton forward and backward",
                  unavailable=runtime.triton_unavailable, note=runtime.triton_note)
registry.register("layer_norm", "ext", ext.layer_norm, "C++/CUDA extension kernels", unavailable=_ext.unavailable)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5,
               *, backend: str = "triton") -> torch.Tensor:
    """LayerNorm over the last dimension of x (..., C) with weight (C,) and optional bias (C,)."""
    return registry.backend("layer_norm", backend).fn(x, weight, bias, eps)
