"""LayerNorm in the C++/CUDA extension (csrc/cpu/layer_norm.cpp, csrc/cuda/layer_norm.cu): fakes, autograd, entry."""

from __future__ import annotations

import torch

from ... import ext
from . import autograd, checks

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

if ext.available():
    torch.library.register_fake("gpt_ext::layer_norm_fwd", autograd.layer_norm_fwd_fake)
    torch.library.register_fake("gpt_ext::layer_norm_bwd", autograd.layer_norm_bwd_fake)
    autograd.register_layer_norm_autograd("gpt_ext::layer_norm_fwd", torch.ops.gpt_ext.layer_norm_bwd)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
               eps: float = 1e-5) -> torch.Tensor:
    checks.check_layer_norm_args(x, weight, bias, SUPPORTED_DTYPES, max_width=1 << 31, eps=eps)
    ext.require(x.device)
    return torch.ops.gpt_ext.layer_norm_fwd(x, weight, bias, eps)[0]
