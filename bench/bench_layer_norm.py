"""LayerNorm: triton and ext against torch (eager) and torch-compiled, forward / backward / both.

GB/s counts the bytes a fused kernel must move: forward reads x and writes y
(2 x rows x width x element bytes); backward reads x and dy and writes dx (3x).
GPU: pytest bench/bench_layer_norm.py --benchmark-enable --benchmark-json out.json
"""

import pytest
import torch
import torch.nn.functional as F
from common import DEVICE, ON_GPU, copies_to_exceed_l2, run, shapes

import gpt_kernels
from gpt_kernels.ops.layer_norm import reference

SHAPES = shapes("layer_norm")
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
PROVIDERS = ["triton", "torch", "torch-compiled"] + (["ext"] if gpt_kernels.cuda_extension_available() else [])
_compiled_layer_norm = None


def provider_fn(provider):
    global _compiled_layer_norm
    if provider == "torch":
        return lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b)
    if provider == "torch-compiled":
        if _compiled_layer_norm is None:
            _compiled_layer_norm = torch.compile(lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b))
        return _compiled_layer_norm
    return lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=provider)


def make(shape, copies):
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(shape[1], generator=gen).to(DEVICE, DTYPE).requires_grad_()
    b = torch.randn(shape[1], generator=gen).to(DEVICE, DTYPE).requires_grad_()
    xs = [torch.randn(shape, generator=gen).to(DEVICE, DTYPE).requires_grad_() for _ in range(copies)]
    dy = torch.randn(shape, generator=gen).to(DEVICE, DTYPE)
    return xs, w, b, dy


@pytest.mark.parametrize("mode", ["forward", "backward", "forward+backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_layer_norm(benchmark, shape, provider, mode):
    rows, width = shape
    element = torch.finfo(DTYPE).bits // 8
    fn = provider_fn(provider)
    xs, w, b, dy = make(shape, copies_to_exceed_l2(3 * rows * width * element))
    # validate against the reference before timing
    truth = reference.layer_norm(xs[0].detach().float(), w.detach().float(), b.detach().float())
    torch.testing.assert_close(fn(xs[0], w, b).float(), truth, atol=5e-2, rtol=5e-2)
    benchmark.group = f"layer_norm {rows}x{width} {str(DTYPE).removeprefix('torch.')} {mode}"
    benchmark.extra_info.update(provider=provider, rows=rows, width=width, mode=mode)
    if mode == "forward":
        calls = [lambda x=x: fn(x, w, b) for x in xs]
        moved = 2 * rows * width * element
    elif mode == "backward":
        ys = [fn(x, w, b) for x in xs]
        calls = [lambda y=y: y.backward(dy, retain_graph=True) for y in ys]
        moved = 3 * rows * width * element
    else:
        calls = [lambda x=x: fn(x, w, b).backward(dy) for x in xs]
        moved = 5 * rows * width * element
    run(benchmark, calls, bytes_moved=moved)
