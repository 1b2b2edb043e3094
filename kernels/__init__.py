"""The project's kernels: one package per op under kernels/ops/, one registry of backends.

    kernels.layer_norm(x, weight, bias=None, eps=1e-5, *, backend="triton")
    kernels.add_layer_norm(x, residual, weight, bias=None, eps=1e-5, *, backend="triton") -> (y, x + residual)
    kernels.attention(q, k, v, *, causal=True, scale=None, dropout_p=0.0, backend="triton")
    kernels.cross_entropy(logits, targets, *, ignore_index=-100, reduction="mean", backend="ext")
    kernels.linear_cross_entropy(h, weight, targets, *, ignore_index=-100, reduction="mean", backend="triton")
    kernels.resolve("auto", device)  -> the implementation of every op, decided once (see registry.py)

Backends: torch (PyTorch's op), reference (kernels/ops/<op>/reference.py), triton, ext (the
C++/CUDA extension). Importing this package never initialises CUDA; on a machine without an
NVIDIA driver it selects the Triton interpreter (kernels/runtime.py).
"""

from __future__ import annotations

from . import ext, registry, runtime

# Registration order is the order ops appear in specs and reports: the model's, bottom to top.
from .ops.layer_norm import layer_norm  # isort: skip
from .ops.add_layer_norm import add_layer_norm  # isort: skip
from .ops.attention import attention  # isort: skip
from .ops.cross_entropy import cross_entropy  # isort: skip
from .ops.linear_cross_entropy import linear_cross_entropy  # isort: skip
from .registry import Kernels, resolve

INTERPRETER = runtime.INTERPRETER
DISTRIBUTION = "gpt-kernels"  # PyPI's `kernels` (Hugging Face's kernel hub) has the same import name: gpt checks this


def cuda_extension_available() -> bool:
    """Whether the C++/CUDA extension (kernels._C) was built; see setup.py."""
    return ext.available()


__all__ = ["layer_norm", "add_layer_norm", "attention", "cross_entropy", "linear_cross_entropy", "resolve", "Kernels",
           "registry", "INTERPRETER", "cuda_extension_available"]
