"""The project's one tolerance rule (after flash-attention's tests).

A kernel's error against a high-precision reference may be at most twice PyTorch's own error
in the same dtype, plus a small atol: err(kernel) <= 2 * err(torch, same dtype) + atol.
The atol is per dtype for values of order one and grows with the reference's largest magnitude
(an absolute 1e-5 is below one fp32 ulp of a value of 200), so it stays small relative to the data.
"""

from __future__ import annotations

import torch

ATOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 1e-2}


def assert_close_to_reference(name: str, out: torch.Tensor, torch_out: torch.Tensor, truth: torch.Tensor,
                              atol: float | None = None) -> None:
    truth = truth.double()
    if atol is None:
        atol = ATOL[out.dtype] * max(1.0, truth.abs().max().item() if truth.numel() else 0.0)
    err = (out.double() - truth).abs().max().item() if out.numel() else 0.0
    torch_err = (torch_out.double() - truth).abs().max().item() if out.numel() else 0.0
    assert out.shape == truth.shape, f"{name}: shape {tuple(out.shape)}, expected {tuple(truth.shape)}"
    assert err <= 2 * torch_err + atol, (
        f"{name}: max error {err:.3g} exceeds 2 x PyTorch's own {torch_err:.3g} + atol {atol:g}")
