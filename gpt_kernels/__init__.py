"""The project's kernels: one package per op under gpt_kernels/ops/, one registry of backends.

    gpt_kernels.layer_norm(x, weight, bias=None, eps=1e-5, *, backend="triton")
    gpt_kernels.add_layer_norm(x, residual, weight, bias=None, eps=1e-5, *, backend="triton") -> (y, x + residual)
    gpt_kernels.attention(q, k, v, *, causal=True, scale=None, dropout_p=0.0, window=None, backend="triton",
                          autotune=True)
    gpt_kernels.cross_entropy(logits, targets, *, ignore_index=-100, reduction="mean", backend="ext")
    gpt_kernels.linear_cross_entropy(h, weight, targets, *, ignore_index=-100, reduction="mean", backend="triton")
    gpt_kernels.resolve("auto", device)  -> the implementation of every op, decided once (see registry.py)

Backends: torch (PyTorch's op), reference (gpt_kernels/ops/<op>/reference.py), triton, ext (the
C++/CUDA extension). Importing this package never initialises CUDA; on a machine without an
NVIDIA driver it selects the Triton interpreter (gpt_kernels/runtime.py).
"""

from __future__ import annotations

import importlib
import pkgutil

from . import ext, ops, registry, runtime
from .registry import Kernels, resolve

# Every package under gpt_kernels/ops/ is an op: importing it registers its backends and declares it,
# and its public function, named as the op, becomes gpt_kernels.<op>. Ops are imported in name order,
# and one that another builds on registers first (layer_norm before add_layer_norm): that is the
# order of specs and reports.
for _op in sorted(module.name for module in pkgutil.iter_modules(ops.__path__) if module.ispkg):
    globals()[_op] = getattr(importlib.import_module(f"{__name__}.ops.{_op}"), _op)
del _op

INTERPRETER = runtime.INTERPRETER


def cuda_extension_available() -> bool:
    """Whether the C++/CUDA extension (gpt_kernels._C) was built; see setup.py."""
    return ext.available()


__all__ = [*registry.OPS, "resolve", "Kernels", "registry", "INTERPRETER", "cuda_extension_available"]
