"""The C++/CUDA extension gpt_kernels._C (csrc/, built by setup.py): loading it, and whether it can run.

Its ops live in the torch.ops.gpt_ext namespace, with CPU kernels always and CUDA kernels when
built against a CUDA torch with nvcc. Each op's fakes and autograd are registered in
gpt_kernels/ops/<op>/ext.py. The package imports without the extension; choosing backend 'ext' then
raises an error that says how to build it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

try:
    from . import _C  # noqa: F401  (loading it registers the ops)

    LOAD_ERROR: Exception | None = None
except ImportError as err:
    LOAD_ERROR = err

BUILD_HINT = ("build it with `pip install -e .` (CUDA kernels need a CUDA build of torch and the CUDA toolkit; "
              "set CUDA_HOME to the toolkit if it is not found)")


_BUILD_INFO_PATH = Path(__file__).with_name("_build_info.json")
# What setup.py built and why (absent when it built nothing, e.g. without torch at install time).
BUILD_INFO: dict = json.loads(_BUILD_INFO_PATH.read_text()) if _BUILD_INFO_PATH.exists() else {}


def available() -> bool:
    return LOAD_ERROR is None


# Decided once, when this module loads (a dispatcher query, not a CUDA call): the per-call check
# below then reads two constants, which torch.compile folds away instead of breaking the graph on.
HAS_CUDA_KERNELS = available() and torch._C._dispatch_has_kernel_for_dispatch_key("gpt_ext::layer_norm_fwd", "CUDA")


def unavailable(device: torch.device) -> str | None:
    """Why the extension cannot run on device (None when it can)."""
    if LOAD_ERROR is not None:
        return f"the C++/CUDA extension gpt_kernels._C is not built ({LOAD_ERROR}); {BUILD_HINT}"
    if device.type == "cuda" and not HAS_CUDA_KERNELS:
        why = f" ({BUILD_INFO['summary']})" if "summary" in BUILD_INFO else ""
        return f"the extension gpt_kernels._C was built without CUDA kernels{why}, so it cannot run on {device}; re-{BUILD_HINT}"
    if device.type not in ("cpu", "cuda"):
        return f"the extension has CPU and CUDA kernels only, not {device.type}"
    return None


def require(device: torch.device) -> None:
    why = unavailable(device)
    if why is not None:
        raise RuntimeError(f"backend 'ext': {why}")
