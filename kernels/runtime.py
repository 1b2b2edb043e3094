"""Where Triton runs: the bottom module that every Triton kernel file imports first.

On a machine without an NVIDIA driver, importing it selects the Triton interpreter
(TRITON_INTERPRET=1) before triton is imported, so the kernels run (slowly) on the CPU. It
never initialises CUDA: the test is a file check, so importing stays fork-safe and fast.
"""

from __future__ import annotations

import importlib.util
import os

import torch


def nvidia_driver_present() -> bool:
    return torch.version.cuda is not None and (
        os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl"))


if "TRITON_INTERPRET" not in os.environ and not nvidia_driver_present():
    os.environ["TRITON_INTERPRET"] = "1"

INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None


def triton_unavailable(device) -> str | None:
    """Why a Triton backend cannot run on device (None when it can); asked once by kernels.resolve."""
    if not HAS_TRITON:
        return "it needs the triton package, which is not installed: pip install triton"
    return None if device.type in ("cpu", "cuda") else f"Triton runs on CUDA GPUs (or interpreted on a CPU), not {device.type}"


def triton_note(device) -> str | None:
    if device.type == "cpu":
        return ("backend 'triton' on a CPU runs the Triton interpreter, which is slow (seconds per call at "
                "training sizes): meant for tests; on a CPU train with --kernels torch")
    return None


def needs_triton(*args, **kwargs):
    """Stands in for a Triton backend where triton is not installed."""
    raise RuntimeError("backend 'triton' needs the triton package, which is not installed: pip install triton")
