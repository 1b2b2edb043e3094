"""Cross-entropy over a vocabulary: the Triton and extension kernels against torch (eager) and torch-compiled.

Forward+backward time and the peak memory allocated above the logits themselves. The torch
providers run as a training loop does, under bf16 autocast, which computes the loss in fp32.
GPU: pytest bench/bench_cross_entropy.py --benchmark-enable --benchmark-json out.json
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from common import DEVICE, ON_GPU, copies_to_exceed_l2, peak_memory_during, run, shapes

import gpt_kernels

SHAPES = shapes("cross_entropy")
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
_compiled = None


def provider_fn(provider):
    global _compiled
    autocast = torch.autocast("cuda", torch.bfloat16) if ON_GPU else contextlib.nullcontext()

    def torch_loss(logits, targets):
        with autocast:
            return F.cross_entropy(logits, targets)

    if provider in ("triton", "ext"):
        return lambda logits, targets: gpt_kernels.cross_entropy(logits, targets, backend=provider)
    if provider == "torch":
        return torch_loss
    if _compiled is None:
        _compiled = torch.compile(torch_loss)
    return _compiled


@pytest.mark.parametrize("provider", ["triton", "ext", "torch", "torch-compiled"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_cross_entropy(benchmark, shape, provider):
    rows, vocab = shape
    fn = provider_fn(provider)
    gen = torch.Generator().manual_seed(0)
    copies = copies_to_exceed_l2(3 * rows * vocab * torch.finfo(DTYPE).bits // 8)  # read twice, written once
    all_logits = [(torch.randn(shape, generator=gen) * 2).to(DEVICE, DTYPE).requires_grad_() for _ in range(copies)]
    targets = torch.randint(vocab, (rows,), generator=gen).to(DEVICE)
    truth = F.cross_entropy(all_logits[0].detach().float(), targets)
    torch.testing.assert_close(fn(all_logits[0], targets).float(), truth, atol=2e-2, rtol=2e-2)

    def step(logits):
        fn(logits, targets).backward()
        logits.grad = None

    benchmark.group = f"cross_entropy {rows}x{vocab} {str(DTYPE).removeprefix('torch.')} forward+backward"
    benchmark.extra_info.update(provider=provider, rows=rows, vocab=vocab,
                                peak_memory_MiB=peak_memory_during(lambda: step(all_logits[0])) / 2**20)
    run(benchmark, [lambda logits=logits: step(logits) for logits in all_logits])
