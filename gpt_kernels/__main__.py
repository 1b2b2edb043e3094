"""`python -m gpt_kernels`: what this install has, and which backend of each op can run here."""

from __future__ import annotations

import torch

from . import ext, registry, runtime


def describe() -> str:
    lines = [f"torch {torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'})"]
    if runtime.HAS_TRITON:
        import triton

        interpreted = " (its interpreter: no NVIDIA driver here)" if runtime.INTERPRETER else ""
        lines.append(f"triton {triton.__version__}{interpreted}")
    else:
        lines.append("triton: not installed")
    if ext.available():
        kernels = "CPU and CUDA kernels" if ext.HAS_CUDA_KERNELS else "CPU kernels only"
        archs = f" for architectures {ext.BUILD_INFO['archs']}" if ext.BUILD_INFO.get("archs") else ""
        lines.append(f"extension gpt_kernels._C: built, {kernels}{archs}")
        if "summary" in ext.BUILD_INFO:
            lines.append(f"  build: {ext.BUILD_INFO['summary']}")
    else:
        lines.append(f"extension gpt_kernels._C: not built ({ext.LOAD_ERROR}); {ext.BUILD_HINT}")
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
        lines.append(f"GPU: {torch.cuda.get_device_name()} (compute capability "
                     f"{'.'.join(map(str, torch.cuda.get_device_capability()))})")
    else:
        lines.append("GPU: none")
    for device in devices:
        lines.append(f"backends that can run on {device.type}:")
        for op, backends in registry.BACKENDS.items():
            runnable = [name for name, b in backends.items() if b.unavailable(device) is None]
            lines.append(f"  {op}: {', '.join(runnable)}")
        choice = registry.resolve("auto", device)
        lines.append(f"  --kernels auto: {choice.spec()} ({choice.origin})")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe())
