"""The language-model head + loss: the chunked Triton op against F.linear + F.cross_entropy, eager and compiled.

Forward+backward time and the peak memory allocated above the inputs (the unfused pair holds the
(N, V) logits and their gradient; the chunked op one chunk). Every provider runs under bf16
autocast on a GPU, with fp32 h and weight as in training.
GPU: pytest bench/bench_linear_cross_entropy.py --benchmark-enable --benchmark-json out.json
"""

import contextlib

import pytest
import torch
from common import DEVICE, ON_GPU, peak_memory_during, run, shapes

import gpt_kernels
from gpt_kernels.ops.linear_cross_entropy import reference

SHAPES = shapes("linear_cross_entropy")  # (tokens N, width C, vocabulary V)
_compiled = None


def provider_fn(provider):
    global _compiled
    autocast = torch.autocast("cuda", torch.bfloat16) if ON_GPU else contextlib.nullcontext()

    def loss(backend):
        def fn(h, weight, targets):
            with autocast:
                return gpt_kernels.linear_cross_entropy(h, weight, targets, backend=backend)
        return fn

    if provider != "torch-compiled":
        return loss(provider)
    if _compiled is None:
        _compiled = torch.compile(loss("torch"))
    return _compiled


@pytest.mark.parametrize("provider", ["triton", "torch", "torch-compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_cross_entropy(benchmark, shape, provider):
    rows, width, vocab = shape
    fn = provider_fn(provider)
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(rows, width, generator=gen).to(DEVICE).requires_grad_()
    weight = (torch.randn(vocab, width, generator=gen) * 0.02).to(DEVICE).requires_grad_()
    targets = torch.randint(vocab, (rows,), generator=gen).to(DEVICE)
    truth = reference.linear_cross_entropy(h.detach(), weight.detach(), targets)
    torch.testing.assert_close(fn(h, weight, targets).float(), truth, atol=2e-2, rtol=2e-2)

    def step():
        fn(h, weight, targets).backward()
        h.grad = weight.grad = None

    benchmark.group = f"linear_cross_entropy {rows}x{width}x{vocab} bf16-autocast forward+backward"
    benchmark.extra_info.update(provider=provider, rows=rows, width=width, vocab=vocab,
                                peak_memory_MiB=peak_memory_during(step) / 2**20)
    run(benchmark, [step], flops=6 * rows * width * vocab)
