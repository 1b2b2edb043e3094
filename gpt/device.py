"""Device facts the trainer needs: which device and dtype, and the peak FLOP/s behind MFU (whether a
configuration fits in memory: gpt/memory.py)."""

from __future__ import annotations

import torch

from .config import TrainConfig, UsageError

# Dense bf16 tensor-core peak FLOP/s by device-name substring; first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's real bf16/fp16 peak, or None (no MFU) when it is unknown or training in fp32."""
    if device.type != "cuda" or dtype == torch.float32:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def resolve_device_dtype(cfg: TrainConfig, local_rank: int = 0) -> tuple[torch.device, torch.dtype]:
    """--device and --dtype, or the defaults: this process's GPU and bf16 where there is one, else the CPU in fp32."""
    if cfg.device:
        try:
            device = torch.device(cfg.device)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise UsageError(f"--device {cfg.device!r} is not supported; expected cpu, cuda or cuda:N")
    elif torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available on this machine")
    if cfg.dtype:
        dtype = getattr(torch, cfg.dtype)
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise UsageError("--dtype float16 needs a CUDA device; use float32 or bfloat16 on the CPU")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # Triton launches on the current device, whatever its tensors' device
    return device, dtype
