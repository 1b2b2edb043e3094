"""The reference residual add + LayerNorm: s = x + residual rounded to x's dtype, y = LayerNorm(s) in fp32."""

from __future__ import annotations

import torch

from ..layer_norm.reference import layer_norm


def add_layer_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                   eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    s = (x + residual.to(x.dtype)) if x.dtype == torch.float64 else (x.float() + residual.float()).to(x.dtype)
    return layer_norm(s, weight, bias, eps), s
