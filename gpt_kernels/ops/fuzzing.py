"""Random inputs for the fuzz tests, drawn from a seeded torch.Generator: each op's fuzz_inputs
(registry.Op) builds its cases from these, so every op and backend is fuzzed by tests/test_fuzz.py
from the registry alone, and a failing case is its seed."""

from __future__ import annotations

import torch

LAYOUTS = ("contiguous", "transposed", "every-other")


def integer(g: torch.Generator, low: int, high: int) -> int:
    """Uniform in [low, high]."""
    return int(torch.randint(low, high + 1, (), generator=g))


def choice(g: torch.Generator, options):
    return options[integer(g, 0, len(options) - 1)]


def laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The same values as t, contiguous, with its last two dimensions stored transposed, or as every other
    column of a tensor twice as wide."""
    if layout == "contiguous":
        return t
    if layout == "transposed":
        return t.transpose(-1, -2).contiguous().transpose(-1, -2)
    wide = torch.zeros(*t.shape[:-1], 2 * t.shape[-1], dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


def values(g: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype, device: str, scale: float = 1.0,
           offset: float = 0.0) -> torch.Tensor:
    """Normal values times scale plus offset, drawn on the CPU (the same case on any device), then cast."""
    return (torch.randn(shape, generator=g) * scale + offset).to(device, dtype)


def targets(g: torch.Generator, n: int, vocab: int, device: str, ignore_every: int, ignore_index: int = -100,
            one_counted: bool = False) -> torch.Tensor:
    """n class ids below vocab, every ignore_every-th ignored (0: none); one_counted keeps the last one
    counted (a mean over no targets is 0 here, NaN in PyTorch)."""
    ids = torch.randint(vocab, (n,), generator=g)
    if ignore_every:
        ids[::ignore_every] = ignore_index
    if one_counted:
        ids[-1] = max(0, int(ids[-1]))
    return ids.to(device)
