"""The public functional API of the project's kernels, each with a `backend=` choice.

backend="torch" is the reference in kernels/reference.py; "triton" the fused Triton kernels;
"cuda" the C++/CUDA extension built by `pip install -e .`. attention also offers "sdpa",
PyTorch's F.scaled_dot_product_attention.

On a machine without an NVIDIA driver, importing this package selects the Triton interpreter
(TRITON_INTERPRET=1) before any kernel is defined. It never initialises CUDA.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F


def _nvidia_driver_present() -> bool:
    # A file check, not a CUDA call: importing must not initialise CUDA (fork safety, speed).
    return torch.version.cuda is not None and (
        os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl"))


if "TRITON_INTERPRET" not in os.environ and not _nvidia_driver_present():
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"

from . import checks, extension, reference  # noqa: E402

if importlib.util.find_spec("triton") is not None:  # defines and registers the Triton ops
    from . import attention as _triton_attention
    from . import layer_norm as _triton_layer_norm
else:  # the torch backends still work
    _triton_attention = _triton_layer_norm = None


def _triton(module):
    if module is None:
        raise RuntimeError("backend 'triton' needs the triton package, which is not installed: pip install triton")
    return module


def cuda_extension_available() -> bool:
    """Whether the C++/CUDA extension (kernels._C) was built; see setup.py."""
    return extension.available()


def _unknown_backend(op: str, backend: str, choices: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown backend {backend!r} for kernels.{op}; expected one of {choices}")


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, eps: float = 1e-5,
               *, backend: str = "triton") -> torch.Tensor:
    """LayerNorm over the last dimension of x (..., C) with weight (C,) and optional bias (C,)."""
    if backend == "torch":
        return reference.layer_norm(x, weight, bias, eps)
    if backend == "triton":
        return _triton(_triton_layer_norm).layer_norm(x, weight, bias, eps)
    if backend == "cuda":
        return extension.layer_norm(x, weight, bias, eps)
    raise _unknown_backend("layer_norm", backend, ("torch", "triton", "cuda"))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True, scale: float | None = None,
              backend: str = "triton") -> torch.Tensor:
    """softmax(q k^T * scale) v for q (B, H, Tq, D) and k, v (B, H, Tk, D).

    When causal and Tq < Tk (queries that continue a KV cache) the mask is aligned bottom-right:
    query i sees keys up to i + Tk - Tq.
    """
    if backend == "triton":
        return _triton(_triton_attention).attention(q, k, v, causal, scale)
    if backend not in ("torch", "sdpa"):
        raise _unknown_backend("attention", backend, ("torch", "sdpa", "triton"))
    checks.check_attention_args(q, k, v, causal, (torch.float32, torch.float16, torch.bfloat16, torch.float64),
                                (q.shape[-1],), scale)
    if backend == "torch":
        return reference.attention(q, k, v, causal, scale)
    return sdpa_attention(q, k, v, causal=causal, scale=scale)


def sdpa_attention(q, k, v, *, causal: bool = True, scale: float | None = None) -> torch.Tensor:
    t_q, t_k = q.shape[-2], k.shape[-2]
    if not causal or t_q == 1:  # a single new query sees the whole cache
        return F.scaled_dot_product_attention(q, k, v, is_causal=False, scale=scale)
    if t_q == t_k:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    # SDPA's is_causal aligns top-left; continuing a cache needs bottom-right.
    mask = reference.causal_mask(t_q, t_k, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = -100, reduction: str = "mean",
                  backend: str = "cuda") -> torch.Tensor:
    """Cross-entropy of logits (N, V) against int64 targets (N,); "cuda" is the fused C++/CUDA kernel."""
    if backend == "cuda":
        return extension.cross_entropy(logits, targets, ignore_index, reduction)
    if backend == "torch":
        return reference.cross_entropy(logits, targets, ignore_index, reduction)
    raise _unknown_backend("cross_entropy", backend, ("torch", "cuda"))


__all__ = ["layer_norm", "attention", "cross_entropy", "reference", "INTERPRETER"]
