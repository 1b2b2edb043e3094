"""Argument-check helpers every op's checks use (each op's own checks: gpt_kernels/ops/<op>/checks.py):
wrong devices, dtypes and shapes fail with a clear message."""

from __future__ import annotations

import torch


def dtype_names(dtypes) -> str:
    return ", ".join(str(d).removeprefix("torch.") for d in dtypes)


def check_same_device_and_dtype(op: str, **tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    first_name, first = next(iter(present.items()))
    for name, t in present.items():
        if t.device != first.device:
            raise ValueError(f"{op}: {name} is on {t.device} but {first_name} is on {first.device}; "
                             "expected all tensors on one device")
        if t.dtype != first.dtype:
            raise ValueError(f"{op}: {name} is {t.dtype} but {first_name} is {first.dtype}; expected one dtype")
