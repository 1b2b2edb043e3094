"""Residual add + LayerNorm in the C++/CUDA extension (csrc/cpu/layer_norm.cpp, csrc/cuda/layer_norm.cu)."""

from __future__ import annotations

import torch

from ... import ext
from ..layer_norm.ext import SUPPORTED_DTYPES
from . import autograd, checks

if ext.available():
    torch.library.register_fake("gpt_ext::add_layer_norm_fwd", autograd.add_layer_norm_fwd_fake)
    autograd.register_add_layer_norm_autograd("gpt_ext::add_layer_norm_fwd", torch.ops.gpt_ext.layer_norm_bwd)


def add_layer_norm(x, residual, weight, bias=None, eps=1e-5):
    checks.check_add_layer_norm_args(x, residual, weight, bias, SUPPORTED_DTYPES, max_width=1 << 31, eps=eps)
    ext.require(x.device)
    y, s, _, _ = torch.ops.gpt_ext.add_layer_norm_fwd(x, residual, weight, bias, eps)
    return y, s
