"""Causal attention: triton against torch (SDPA) with each of its backends (torch-flash, torch-efficient,
torch-cudnn; torch-math on a CPU) and the compiled reference (reference-compiled). triton-tma is
the Triton forward moving its tiles with the tensor-memory engine, triton-paired the Triton
backward as one kernel (both in gpt_kernels/ops/attention/variants.py).

TFLOP/s from the standard count: forward 4*B*H*T*T*D, halved when causal; backward 2.5x forward.
GPU: pytest bench/bench_attention.py --benchmark-enable --benchmark-json out.json

Banded attention (GPT-3's local layers, test_banded_attention): triton in a band of w keys against
triton-dense (the same kernels, no band), torch (the torch backend's band: FlexAttention compiled with a
sliding-window block mask on a GPU, PyTorch's best for it; SDPA with a band mask on a CPU) and
torch-dense (SDPA, causal), at T = 2048, 4096 and 8192 (B*T = 16384) and w = 256 and 1024; TFLOP/s
count only the band's scores (a dense provider's rate is on the same count, so the rates compare
as times do). Not in the one-call GPU check's quick run yet (its stage budget).
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from common import BANDED_WINDOW_IN_QUICK, DEVICE, ON_GPU, QUICK, VARIANTS_AUTOTUNE_IN_QUICK, copies_to_exceed_l2, run, shapes
from torch.nn.attention import SDPBackend, sdpa_kernel

import gpt_kernels
from gpt_kernels.ops.attention import reference, variants

SHAPES = shapes("attention")  # (B, H, T, D)
DTYPE = torch.bfloat16 if ON_GPU else torch.float32
SDPA_BACKENDS = {"torch-flash": SDPBackend.FLASH_ATTENTION, "torch-efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "torch-cudnn": SDPBackend.CUDNN_ATTENTION}
# Variants of the Triton kernels, measured beside the default: provider -> variant of
# gpt_kernels/ops/attention/variants.py. The backward is the default's in triton-tma, the forward in triton-paired.
VARIANTS = {"triton-tma": "tma", "triton-paired": "paired"}
SAME_AS_DEFAULT = {"triton-tma": "backward", "triton-paired": "forward"}
# The quick run (the one-call GPU check) leaves out the two baselines that never lead on Hopper.
PROVIDERS = (["triton", *VARIANTS] + (list(SDPA_BACKENDS) if ON_GPU else ["torch-math"])
             + ["reference-compiled"])
if QUICK:
    PROVIDERS = [p for p in PROVIDERS if p not in ("torch-efficient", "reference-compiled")]
_compiled_naive = None


def provider_call(provider, q, k, v):
    global _compiled_naive
    if provider == "triton":
        return lambda: gpt_kernels.attention(q, k, v, causal=True)
    if provider in VARIANTS:
        autotune = VARIANTS_AUTOTUNE_IN_QUICK or not QUICK
        return lambda: variants.attention(q, k, v, True, variant=VARIANTS[provider], autotune=autotune)
    if provider == "reference-compiled":
        if _compiled_naive is None:
            _compiled_naive = torch.compile(reference.attention)
        return lambda: _compiled_naive(q, k, v, True)
    backend = SDPA_BACKENDS.get(provider, SDPBackend.MATH)

    def call():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return call


def attention_flops(b, h, t, d, mode):
    forward = 4 * b * h * t * t * d / 2  # causal
    return {"forward": forward, "backward": 2.5 * forward, "forward+backward": 3.5 * forward}[mode]


@pytest.mark.parametrize("mode", ["forward", "backward", "forward+backward"])
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-H{}-T{}-D{}".format(*s))
def test_attention(benchmark, shape, provider, mode):
    b, h, t, d = shape
    if SAME_AS_DEFAULT.get(provider) == mode:
        pytest.skip(f"{provider}'s {mode} is triton's")
    gen = torch.Generator().manual_seed(0)
    copies = copies_to_exceed_l2(5 * q_bytes(shape))  # q, k, v, o and dO (the backward reads them all)
    inputs = [[torch.randn(shape, generator=gen).to(DEVICE, DTYPE) for _ in range(4)] for _ in range(copies)]
    for q, k, v, _ in inputs:
        q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    calls = [provider_call(provider, q, k, v) for q, k, v, _ in inputs]
    try:
        outs = [call() for call in calls]
    except RuntimeError as err:  # an SDPA backend this GPU or shape does not offer
        pytest.skip(f"{provider} unavailable: {str(err).splitlines()[0]}")
    q, k, v, _ = inputs[0]
    truth = reference.attention(q.detach(), k.detach(), v.detach())
    torch.testing.assert_close(outs[0].float(), truth.float(), atol=3e-2, rtol=3e-2)
    benchmark.group = f"attention B{b} H{h} T{t} D{d} {str(DTYPE).removeprefix('torch.')} causal {mode}"
    benchmark.extra_info.update(provider=provider, B=b, H=h, T=t, D=d, mode=mode)
    if mode == "forward":
        grad_context = torch.no_grad
        timed = calls
    elif mode == "backward":
        grad_context = contextlib.nullcontext
        timed = [lambda out=out, do=do: out.backward(do, retain_graph=True) for out, (*_, do) in zip(outs, inputs)]
    else:
        grad_context = contextlib.nullcontext
        timed = [lambda call=call, do=do: call().backward(do) for call, (*_, do) in zip(calls, inputs)]
    with grad_context():
        run(benchmark, timed, flops=attention_flops(b, h, t, d, mode))


def q_bytes(shape) -> int:
    b, h, t, d = shape
    return b * h * t * d * torch.finfo(DTYPE).bits // 8


# (B, H, T, D) at B*T = 16384 tokens, and the band's widths; the quick run: bench/common.py's band
BANDED_SHAPES = ([(16384 // t, 12, t, 64) for t in (2048, 4096, 8192)] if ON_GPU else [(1, 2, 256, 16)]) if not QUICK \
    else shapes("attention")
WINDOWS = [BANDED_WINDOW_IN_QUICK] if QUICK else [256, 1024] if ON_GPU else [32]
BANDED_PROVIDERS = ["triton", "triton-dense", "torch-dense"] if QUICK else ["triton", "triton-dense", "torch", "torch-dense"]
BANDED_MODES = ["forward+backward"] if QUICK else ["forward", "forward+backward"]


def banded_call(provider, q, k, v, window):
    backend = provider.removesuffix("-dense")
    band = None if provider.endswith("-dense") else window
    tuning = {"autotune": False} if QUICK and backend == "triton" else {}  # the default configurations
    return lambda: gpt_kernels.attention(q, k, v, causal=True, window=band, backend=backend, **tuning)


def banded_flops(b, h, t, d, window, mode):
    scores = t * window - window * (window - 1) // 2  # query i sees min(i + 1, window) keys
    forward = 4 * b * h * scores * d
    return {"forward": forward, "forward+backward": 3.5 * forward}[mode]


@pytest.mark.parametrize("mode", BANDED_MODES)
@pytest.mark.parametrize("provider", BANDED_PROVIDERS)
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
@pytest.mark.parametrize("shape", BANDED_SHAPES, ids=lambda s: "B{}-H{}-T{}-D{}".format(*s))
def test_banded_attention(benchmark, shape, window, provider, mode):
    b, h, t, d = shape
    gen = torch.Generator().manual_seed(0)
    copies = copies_to_exceed_l2(5 * q_bytes(shape))
    inputs = [[torch.randn(shape, generator=gen).to(DEVICE, DTYPE) for _ in range(4)] for _ in range(copies)]
    for q, k, v, _ in inputs:
        q.requires_grad_(), k.requires_grad_(), v.requires_grad_()
    calls = [banded_call(provider, q, k, v, window) for q, k, v, _ in inputs]
    q, k, v, _ = inputs[0]
    if not provider.endswith("-dense"):
        truth = reference.attention(q.detach(), k.detach(), v.detach(), True, None, 0.0, window)
        torch.testing.assert_close(calls[0]().float(), truth.float(), atol=3e-2, rtol=3e-2)
    benchmark.group = f"banded attention B{b} H{h} T{t} D{d} w{window} {str(DTYPE).removeprefix('torch.')} {mode}"
    benchmark.extra_info.update(provider=provider, B=b, H=h, T=t, D=d, window=window, mode=mode)
    if mode == "forward":
        with torch.no_grad():
            run(benchmark, calls, flops=banded_flops(b, h, t, d, window, mode))
    else:
        timed = [lambda call=call, do=do: call().backward(do) for call, (*_, do) in zip(calls, inputs)]
        run(benchmark, timed, flops=banded_flops(b, h, t, d, window, mode))
