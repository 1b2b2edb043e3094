"""The reference LayerNorm: PyTorch's, computed in fp32 (fp64 stays fp64), returned in x's dtype."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _upcast(t: torch.Tensor | None) -> torch.Tensor | None:
    return t if t is None or t.dtype == torch.float64 else t.float()


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    y = F.layer_norm(_upcast(x), (x.shape[-1],), _upcast(weight), _upcast(bias), eps)
    return y.to(x.dtype)
