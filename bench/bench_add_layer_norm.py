"""Residual add + LayerNorm: triton and ext against torch (the add, then F.layer_norm) and torch-compiled
(which fuses the two itself), forward and forward+backward.

GB/s counts the bytes a fused kernel must move: forward reads x and residual and writes s and y
(4 x rows x width x element bytes); forward+backward adds reading dy, ds and s and writing dx and
dresidual (9x in all).
GPU: pytest bench/bench_add_layer_norm.py --benchmark-enable --benchmark-json out.json
"""

import pytest
import torch
import torch.nn.functional as F
from common import DEVICE, ON_GPU, copies_to_exceed_l2, run, shapes

import gpt_kernels
from gpt_kernels.ops.add_layer_norm import reference

SHAPES = shapes("add_layer_norm")
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
PROVIDERS = ["triton", "torch", "torch-compiled"] + (["ext"] if gpt_kernels.cuda_extension_available() else [])
_compiled = None


def unfused(x, residual, w, b):
    s = x + residual
    return F.layer_norm(s, (s.shape[-1],), w, b), s


def provider_fn(provider):
    global _compiled
    if provider == "torch":
        return unfused
    if provider == "torch-compiled":
        if _compiled is None:
            _compiled = torch.compile(unfused)
        return _compiled
    return lambda x, residual, w, b: gpt_kernels.add_layer_norm(x, residual, w, b, backend=provider)


@pytest.mark.parametrize("mode", ["forward", "forward+backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_add_layer_norm(benchmark, shape, provider, mode):
    rows, width = shape
    element = torch.finfo(DTYPE).bits // 8
    fn = provider_fn(provider)
    gen = torch.Generator().manual_seed(0)
    copies = copies_to_exceed_l2(9 * rows * width * element)
    w, b = (torch.randn(width, generator=gen).to(DEVICE, DTYPE).requires_grad_() for _ in range(2))
    pairs = [tuple(torch.randn(shape, generator=gen).to(DEVICE, DTYPE).requires_grad_() for _ in range(2))
             for _ in range(copies)]
    dy, ds = (torch.randn(shape, generator=gen).to(DEVICE, DTYPE) for _ in range(2))
    y, s = fn(*pairs[0], w, b)
    truth_y, truth_s = reference.add_layer_norm(*(t.detach().float() for t in (*pairs[0], w, b)))
    torch.testing.assert_close(y.float(), truth_y, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(s.float(), truth_s, atol=5e-2, rtol=5e-2)
    benchmark.group = f"add_layer_norm {rows}x{width} {str(DTYPE).removeprefix('torch.')} {mode}"
    benchmark.extra_info.update(provider=provider, rows=rows, width=width, mode=mode)
    if mode == "forward":
        with torch.no_grad():
            run(benchmark, [lambda p=p: fn(*p, w, b) for p in pairs], bytes_moved=4 * rows * width * element)
    else:
        def step(p):
            y, s = fn(*p, w, b)
            torch.autograd.backward((y, s), (dy, ds))
        run(benchmark, [lambda p=p: step(p) for p in pairs], bytes_moved=9 * rows * width * element)
