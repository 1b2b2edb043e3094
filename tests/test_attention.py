"""Triton flash attention against the reference and SDPA: forward, backward, cache shapes, errors, registration."""

import functools
import itertools
import warnings
from types import SimpleNamespace

import pytest
import torch
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels.ops.attention import reference

BATCH_HEADS = [(1, 1), (2, 3), (1, 3), (2, 1)]
# Every T x D x causal x dtype combination, with (B, H) cycling through all four pairs.
CPU_CASES = [(*BATCH_HEADS[i % 4], t, d, causal, dtype) for i, (t, d, causal, dtype) in enumerate(
    itertools.product([1, 17, 64, 129], [16, 32, 64], [True, False], [torch.float32, torch.float16]))]
GPU_CASES = [(b, h, t, d, causal, dtype) for (b, h, t), d, causal, dtype in itertools.product(
    [(2, 3, 1), (2, 3, 17), (4, 12, 256), (2, 12, 1000), (1, 12, 2048), (1, 4, 4096), (64, 6, 256)],
    [16, 32, 64, 128], [True, False], [torch.bfloat16, torch.float16])] + [
    (b, h, t, d, True, torch.bfloat16) for (b, h, t), d in itertools.product([(2, 3, 17), (2, 16, 2048)], [80, 96])]


# The GPU cases run each kernel's default configuration (autotuning all of them would take the GPU
# check's whole test budget); every configuration the autotuner is offered is checked below.
untuned_attention = functools.partial(gpt_kernels.attention, autotune=False)


def make_qkv(b, h, t_q, t_k, d, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
               for shape in ((b, h, t_q, d), (b, h, t_k, d), (b, h, t_k, d)))
    do = torch.randn((b, h, t_q, d), generator=gen).to(device=device, dtype=dtype)
    return q, k, v, do


def forward_backward(fn, q, k, v, do):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    o = fn(q, k, v)
    return (o, *torch.autograd.grad(o, (q, k, v), do))


def check_parity(b, h, t_q, t_k, d, causal, dtype, device, scale=None, attention=gpt_kernels.attention, window=None):
    q, k, v, do = make_qkv(b, h, t_q, t_k, d, dtype, device)
    banded = {} if window is None else {"window": window}  # the variants and configured kernels are dense only
    ours = forward_backward(lambda q, k, v: attention(q, k, v, causal=causal, scale=scale, **banded), q, k, v, do)
    sdpa = forward_backward(lambda q, k, v: gpt_kernels.attention(q, k, v, causal=causal, scale=scale, window=window,
                                                                  backend="torch"), q, k, v, do)
    truth = forward_backward(lambda q, k, v: reference.attention(q, k, v, causal, scale, 0.0, window),
                             q.double(), k.double(), v.double(), do.double())
    for name, out, base, ref in zip(("o", "dq", "dk", "dv"), ours, sdpa, truth):
        assert out.dtype == dtype
        assert_close_to_reference(f"{name} B{b} H{h} Tq{t_q} Tk{t_k} D{d} causal={causal} window={window} {dtype}",
                                  out, base, ref)


@pytest.mark.parametrize("b, h, t, d, causal, dtype", CPU_CASES)
def test_parity_cpu(b, h, t, d, causal, dtype):
    check_parity(b, h, t, t, d, causal, dtype, "cpu")


@pytest.mark.parametrize("d", [8, 24, 40, 80, 96])
@pytest.mark.parametrize("causal, window", [(True, None), (False, None), (True, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_padded_head_dims_cpu(d, causal, window, dtype):
    """Head dims the kernels are not compiled for (GPT-3 Large's 96, 2.7B's 80) run on zero-padded heads:
    every output and gradient to the rule, of the true head dim, at its default scale."""
    check_parity(2, 3, 37, 37, d, causal, dtype, "cpu", window=window)


def test_padded_heads_scale_by_the_true_head_dim():
    q, k, v, _ = make_qkv(1, 2, 16, 16, 80, torch.float32, "cpu")
    explicit = gpt_kernels.attention(q, k, v, scale=80 ** -0.5)
    torch.testing.assert_close(gpt_kernels.attention(q, k, v), explicit, rtol=0, atol=0)
    assert not torch.allclose(gpt_kernels.attention(q, k, v, scale=128 ** -0.5), explicit)


@pytest.mark.parametrize("t_q, t_k", [(1, 40), (3, 40), (17, 129), (64, 65)])
@pytest.mark.parametrize("causal", [True, False])
def test_queries_continuing_a_kv_cache(t_q, t_k, causal):
    check_parity(1, 2, t_q, t_k, 32, causal, torch.float32, "cpu")


def test_custom_scale_and_strided_inputs():
    check_parity(1, 2, 33, 33, 16, True, torch.float32, "cpu", scale=0.3)
    qkv = torch.randn(2, 19, 3 * 2 * 32)  # the model's fused projection: (B, T, 3 * H * D)
    q, k, v = (t.view(2, 19, 2, 32).transpose(1, 2) for t in qkv.split(64, dim=2))  # strided (B, H, T, D)
    assert not q.is_contiguous()
    torch.testing.assert_close(gpt_kernels.attention(q, k, v), reference.attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_sdpa_backend_aligns_cache_queries_bottom_right():
    q, k, v, _ = make_qkv(1, 2, 3, 10, 16, torch.float32, "cpu")
    torch.testing.assert_close(gpt_kernels.attention(q, k, v, backend="torch"), reference.attention(q, k, v))


def test_backward_is_deterministic():
    q, k, v, do = make_qkv(2, 2, 100, 100, 32, torch.float32, "cpu")
    first = forward_backward(gpt_kernels.attention, q, k, v, do)
    second = forward_backward(gpt_kernels.attention, q, k, v, do)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


def test_no_t_by_t_tensor_is_saved_for_backward():
    q, k, v, _ = make_qkv(1, 1, 256, 256, 16, torch.float32, "cpu")
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        gpt_kernels.attention(*(t.requires_grad_() for t in (q, k, v)))
    assert saved and max(saved) == 256 * 16  # q, k, v, o and the (256,) logsumexp; never 256 x 256


@pytest.mark.parametrize("make, error, message", [
    (lambda: make_qkv(1, 1, 8, 8, 100, torch.float32, "cpu")[:3], ValueError, "head dim 100 is not supported"),
    (lambda: make_qkv(1, 1, 8, 8, 136, torch.float32, "cpu")[:3], ValueError, "head dim 136 is not supported"),
    (lambda: make_qkv(1, 1, 8, 8, 16, torch.float64, "cpu")[:3], TypeError, "q has dtype torch.float64"),
    (lambda: (torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16, dtype=torch.float16), torch.randn(1, 1, 8, 16)),
     ValueError, "k is torch.float16 but q is torch.float32"),
    (lambda: (torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16, device="meta"), torch.randn(1, 1, 8, 16)),
     ValueError, "k is on meta but q is on cpu"),
    (lambda: (torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16), torch.randn(1, 1, 9, 16)),
     ValueError, "k has shape .* but v has"),
    (lambda: (torch.randn(1, 2, 8, 16), torch.randn(1, 1, 8, 16), torch.randn(1, 1, 8, 16)),
     ValueError, "must agree in B, H and D"),
    (lambda: (torch.randn(8, 16), torch.randn(8, 16), torch.randn(8, 16)), ValueError, "expected 4 dimensions"),
    (lambda: make_qkv(1, 1, 9, 8, 16, torch.float32, "cpu")[:3], ValueError, "causal attention needs Tq <= Tk"),
])
def test_errors(make, error, message):
    with pytest.raises(error, match=message):
        gpt_kernels.attention(*make())


def test_bad_scale_and_empty_batch():
    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="scale must be a finite number, got nan"):
        gpt_kernels.attention(q, q, q, scale=float("nan"))
    empty = torch.randn(0, 2, 5, 16, requires_grad=True)
    out = gpt_kernels.attention(empty, empty, empty)
    out.sum().backward()
    assert out.shape == (0, 2, 5, 16) and empty.grad.shape == empty.shape


def test_opcheck():
    q, k, v, do = make_qkv(1, 2, 20, 20, 16, torch.float32, "cpu")
    seed = torch.tensor([1234])
    for causal, dropout_p, dropout_seed, window in ((True, 0.0, None, 0), (False, 0.0, None, 0), (True, 0.25, seed, 0),
                                                    (True, 0.0, None, 7), (True, 0.25, seed, 7)):
        args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), causal, 0.25, dropout_p, dropout_seed, True,
                window)
        torch.library.opcheck(torch.ops.gpt_triton.attention_fwd, args)
        o, lse = torch.ops.gpt_triton.attention_fwd(q.detach(), k.detach(), v.detach(), causal, 0.25, dropout_p,
                                                    dropout_seed, True, window)
        torch.library.opcheck(torch.ops.gpt_triton.attention_bwd, (do, q.detach(), k.detach(), v.detach(), o, lse,
                                                                   causal, 0.25, dropout_p, dropout_seed, True, window))


def test_autotune_off_launches_the_default_configuration_with_the_same_results():
    q, k, v, do = make_qkv(1, 2, 40, 40, 16, torch.float32, "cpu")
    for a, b in zip(forward_backward(untuned_attention, q, k, v, do), forward_backward(gpt_kernels.attention, q, k, v, do)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="autotune=False applies to backend 'triton', not 'torch'"):
        gpt_kernels.attention(q, k, v, backend="torch", autotune=False)


@pytest.mark.parametrize("window, d", [(None, 16), (5, 16), (None, 40)])  # 40: a zero-padded head dim
def test_compile_fullgraph_has_no_graph_breaks(window, d):
    torch._dynamo.reset()
    q, k, v, do = make_qkv(2, 2, 24, 24, d, torch.float32, "cpu")
    fn = lambda q, k, v: gpt_kernels.attention(q, k, v, window=window).sum(dim=-1, keepdim=True) * v  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, c in zip(forward_backward(compiled, q, k, v, do), forward_backward(fn, q, k, v, do)):
        torch.testing.assert_close(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("b, h, t, d, causal, dtype", GPU_CASES)
def test_parity_gpu(b, h, t, d, causal, dtype):
    check_parity(b, h, t, t, d, causal, dtype, "cuda", attention=untuned_attention)


class _Configured(torch.autograd.Function):
    """The Triton forward and backward in given configurations (None: the kernel's default)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, fwd, dkdv, dq):
        from gpt_kernels.ops.attention import triton as attention_triton

        scale = q.shape[-1] ** -0.5
        o, lse = attention_triton.attention_forward(q, k, v, causal, scale, autotune=False, config=fwd)
        ctx.save_for_backward(q, k, v, o, lse)
        ctx.causal, ctx.scale, ctx.configs = causal, scale, (dkdv, dq)
        return o

    @staticmethod
    def backward(ctx, do):
        from gpt_kernels.ops.attention import triton as attention_triton

        dkdv, dq = ctx.configs
        grads = attention_triton.attention_backward(do, *ctx.saved_tensors, ctx.causal, ctx.scale, autotune=False,
                                                    dkdv_config=dkdv, dq_config=dq)
        return (*grads, None, None, None, None)


def configured(q, k, v, causal, scale, configs):
    return _Configured.apply(q, k, v, causal, *configs)


def offered_configs(kernel, q, causal, dropout_p=0.0):
    from gpt_kernels.ops.attention import triton as attention_triton

    shape_args = attention_triton._shape_args(q, q, causal, dropout_p)
    return kernel.early_config_prune(kernel.configs, {"Q": q}, **shape_args)


@pytest.mark.gpu
@pytest.mark.parametrize("kernel_name", ["_attention_fwd_kernel", "_attention_bwd_dkdv_kernel", "_attention_bwd_dq_kernel"])
@pytest.mark.parametrize("b, h, t, d", [(2, 12, 1000, 64), (1, 6, 777, 128)])
def test_every_offered_configuration_gpu(kernel_name, b, h, t, d):
    """Each configuration the kernel's pruning offers the autotuner, the others at their defaults."""
    from gpt_kernels.ops.attention import triton as attention_triton

    kernel = getattr(attention_triton, kernel_name)
    slot = {"_attention_fwd_kernel": 0, "_attention_bwd_dkdv_kernel": 1, "_attention_bwd_dq_kernel": 2}[kernel_name]
    probe = torch.empty(b, h, t, d, dtype=torch.bfloat16, device="cuda")
    for config in offered_configs(kernel, probe, True):
        configs = [None, None, None]
        configs[slot] = config
        check_parity(b, h, t, t, d, True, torch.bfloat16, "cuda", attention=functools.partial(configured, configs=configs))


# Variants of the Triton kernels (gpt_kernels/ops/attention/variants.py), each held to the same parity
# as the default: the forward through tensor descriptors, the one-kernel backward.
VARIANTS = ["tma", "paired"]
VARIANT_CPU_CASES = [(2, 3, 37, 37, 16, True, torch.float32), (1, 2, 70, 70, 32, False, torch.float16),
                     (1, 2, 20, 45, 32, True, torch.float32), (2, 1, 45, 20, 16, False, torch.float32),
                     (2, 1, 33, 33, 64, False, torch.float32), (1, 1, 1, 17, 64, True, torch.float16)]


def variant_attention(variant, autotune=True):
    from gpt_kernels.ops.attention import variants

    return lambda q, k, v, causal=True, scale=None, dropout_p=0.0: variants.attention(
        q, k, v, causal, scale, dropout_p, variant=variant, autotune=autotune)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b, h, t_q, t_k, d, causal, dtype", VARIANT_CPU_CASES)
def test_variant_parity_cpu(variant, b, h, t_q, t_k, d, causal, dtype):
    check_parity(b, h, t_q, t_k, d, causal, dtype, "cpu", attention=variant_attention(variant))


# A subset of GPU_CASES (the GPU check's test stage has a time budget): GPT-2's and longer
# sequences, an odd length, both head dims the targets name, both masks.
VARIANT_GPU_CASES = [(b, h, t, d, causal, torch.bfloat16) for (b, h, t), d, causal in itertools.product(
    [(2, 3, 17), (2, 12, 1000), (1, 12, 2048)], [64, 128], [True, False])] + [(4, 12, 256, 64, True, torch.float16)]


@pytest.mark.gpu
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("b, h, t, d, causal, dtype", VARIANT_GPU_CASES)
def test_variant_parity_gpu(variant, b, h, t, d, causal, dtype):
    check_parity(b, h, t, t, d, causal, dtype, "cuda", attention=variant_attention(variant, autotune=False))


def test_unknown_variant_is_named():
    from gpt_kernels.ops.attention import variants

    q = torch.randn(1, 1, 4, 16)
    with pytest.raises(ValueError, match="unknown attention variant 'fast'; expected one of \\['tma', 'paired'\\]"):
        variants.attention(q, q, q, variant="fast")


def test_tma_forward_takes_the_model_layout_and_falls_back_on_unaligned_strides_and_fp32(monkeypatch):
    from gpt_kernels.ops.attention import variants

    qkv = torch.randn(2, 19, 3 * 2 * 32).half()  # (B, T, 3 * H * D): q, k, v are strided views, 16-byte aligned
    q, k, v = (t.view(2, 19, 2, 32).transpose(1, 2) for t in qkv.split(64, dim=2))
    assert variants._tma_usable(q, k, v) and not variants._tma_usable(*(t.float() for t in (q, k, v)))
    unaligned = torch.randn(2 * 2 * 19 * 32 + 1).half()[1:].view(2, 2, 19, 32)  # starts 2 bytes into its storage
    assert not variants._tma_usable(unaligned, k, v)
    launched, launch = [], variants._launch
    monkeypatch.setattr(variants, "_launch", lambda kernel, *args: launched.append(kernel) or launch(kernel, *args))
    tma = variant_attention("tma")
    for q_ in (q, unaligned, q.float()):
        k_, v_ = (k.float(), v.float()) if q_.dtype == torch.float32 else (k, v)
        truth = reference.attention(q_.double(), k_.double(), v_.double(), True)
        torch.testing.assert_close(tma(q_, k_, v_).double(), truth, atol=2e-3, rtol=2e-3)
    # aligned fp16 views: descriptors; the unaligned start and fp32: the default forward (from triton.py)
    assert launched == [variants._attention_fwd_tma_kernel]


def test_paired_backward_is_deterministic_and_regenerates_dropout():
    q, k, v, do = make_qkv(1, 2, 40, 40, 16, torch.float32, "cpu")
    paired = variant_attention("paired")

    def run(attention):
        return forward_backward(lambda q, k, v: attention(q, k, v, dropout_p=0.2), q, k, v, do)

    torch.manual_seed(5)
    first = run(paired)
    torch.manual_seed(5)
    second = run(paired)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    torch.manual_seed(5)  # the default split kernels regenerate the same mask
    for a, b in zip(first, run(lambda q, k, v, dropout_p: gpt_kernels.attention(q, k, v, dropout_p=dropout_p))):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("t_q, t_k", [(1, 1024), (4, 1024), (100, 2048)])
def test_kv_cache_queries_gpu(t_q, t_k):
    check_parity(2, 12, t_q, t_k, 64, True, torch.bfloat16, "cuda", attention=untuned_attention)


@pytest.mark.gpu
def test_compile_fullgraph_gpu():
    """Bitwise: both sides launch each kernel's default configuration (two autotuners, eager's and Inductor's,
    may choose different tiles, whose accumulation orders differ)."""
    torch._dynamo.reset()
    q, k, v, do = make_qkv(4, 12, 1024, 1024, 64, torch.bfloat16, "cuda")
    compiled = torch.compile(untuned_attention, fullgraph=True)
    for a, c in zip(forward_backward(compiled, q, k, v, do), forward_backward(untuned_attention, q, k, v, do)):
        assert torch.equal(a, c)


def attention_with_mask(q, k, v, keep, dropout_p, causal, window=None):
    """The reference attention with a given dropout mask applied to its probabilities."""
    scale = q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-2, -1)) * scale
    if causal:
        scores = scores.masked_fill(~reference.causal_mask(q.shape[-2], k.shape[-2], q.device, window), float("-inf"))
    return (torch.softmax(scores, dim=-1) * keep / (1 - dropout_p)) @ v


@pytest.mark.parametrize("causal", [True, False])
def test_dropout_matches_the_reference_with_the_kernels_own_mask(causal):
    """The forward's mask, read back through v = I, explains its output, and the backward
    regenerates that same mask: every gradient matches the masked reference."""
    b, h, t, d, p = 2, 2, 48, 64, 0.3
    q, k, v, do = make_qkv(b, h, t, t, d, torch.float32, "cpu")
    identity = torch.eye(t, d).expand(b, h, t, d)
    torch.manual_seed(7)
    probs_kept = gpt_kernels.attention(q, k, identity, causal=causal, dropout_p=p)[..., :t]  # P * keep / (1 - p)
    probs = gpt_kernels.attention(q, k, identity, causal=causal)[..., :t]
    keep = probs_kept != 0
    visible = probs > 0
    assert 0.65 < keep[visible].float().mean().item() < 0.75  # about 1 - p of the probabilities survive
    torch.manual_seed(7)  # the same seed: the same mask
    ours = forward_backward(lambda q, k, v: gpt_kernels.attention(q, k, v, causal=causal, dropout_p=p), q, k, v, do)
    truth = forward_backward(lambda q, k, v: attention_with_mask(q, k, v, keep.double(), p, causal),
                             q.double(), k.double(), v.double(), do.double())
    for name, out, ref in zip(("o", "dq", "dk", "dv"), ours, truth):
        torch.testing.assert_close(out, ref.float(), atol=1e-5, rtol=1e-4, msg=name)
    torch.manual_seed(8)
    assert not torch.equal(gpt_kernels.attention(q, k, identity, causal=causal, dropout_p=p)[..., :t], probs_kept)


def test_dropout_in_the_model_trains_through_every_attention_backend():
    """dropout_p reaches every backend the same way; the model no longer special-cases SDPA."""
    q, k, v, do = make_qkv(1, 2, 16, 16, 16, torch.float32, "cpu")
    for backend in ("torch", "reference", "triton"):
        torch.manual_seed(0)
        out = forward_backward(lambda q, k, v, backend=backend: gpt_kernels.attention(q, k, v, dropout_p=0.5, backend=backend),
                               q, k, v, do)
        dropped = (out[0] - gpt_kernels.attention(q, k, v, backend=backend)).abs().max().item()
        assert dropped > 1e-3 and all(torch.isfinite(t).all() for t in out), backend
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\), got 1.0"):
        gpt_kernels.attention(q, k, v, dropout_p=1.0)


def check_dropout_gpu(defect=None):
    """The kernel's forward and backward with dropout against the float64 reference given the kernel's own
    mask; PyTorch's error is that same masked reference computed in bf16. defect(outputs) plants a fault."""
    b, h, t, d, p = 2, 4, 128, 128, 0.2
    q, k, v, do = make_qkv(b, h, t, t, d, torch.bfloat16, "cuda")
    identity = torch.eye(t, d, device="cuda", dtype=torch.bfloat16).expand(b, h, t, d)
    torch.manual_seed(3)
    keep = gpt_kernels.attention(q, k, identity, dropout_p=p)[..., :t] != 0
    torch.manual_seed(3)
    ours = forward_backward(lambda q, k, v: gpt_kernels.attention(q, k, v, dropout_p=p), q, k, v, do)
    if defect is not None:
        ours = defect(ours)
    pytorch = forward_backward(lambda q, k, v: attention_with_mask(q, k, v, keep.to(q.dtype), p, True), q, k, v, do)
    truth = forward_backward(lambda q, k, v: attention_with_mask(q, k, v, keep.double(), p, True),
                             q.double(), k.double(), v.double(), do.double())
    for name, out, base, ref in zip(("o", "dq", "dk", "dv"), ours, pytorch, truth):
        assert_close_to_reference(f"dropout {name}", out, base, ref)


@pytest.mark.gpu
def test_dropout_gpu():
    check_dropout_gpu()


@pytest.mark.gpu
@pytest.mark.parametrize("defect", [
    lambda outs: (outs[0] * (1 - 0.2), *outs[1:]),  # the output not rescaled by 1 / (1 - p)
    lambda outs: (*outs[:2], outs[2].flip(-2), outs[3]),  # dK rows of the wrong keys
])
def test_dropout_gpu_catches_a_planted_defect(defect):
    with pytest.raises(AssertionError, match="exceeds 2 x PyTorch's own"):
        check_dropout_gpu(defect)


def test_autotune_candidates_that_cannot_pay_off_are_pruned_before_benchmarking(monkeypatch):
    """The rules tools.compiled's sm_90 and sm_80 facts gave: no mma.sync-sized own tile on sm_90, no
    spilling tile, no tile over the shared-memory limit (checked in CI on the compiled code itself)."""
    import triton

    from gpt_kernels.ops.attention import triton as attention_triton

    monkeypatch.setattr(attention_triton, "INTERPRETER", False)  # the GPU's rules (the interpreter keeps its one)
    gpu = {"arch": 90}
    monkeypatch.setattr(attention_triton, "_gpu_limits", lambda: (gpu["arch"], 227 * 1024))  # an H100's block limit
    configs = [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=3)
               for m, n, w in [(64, 64, 8), (128, 128, 8), (64, 64, 4), (128, 64, 4), (32, 64, 4), (128, 128, 4),
                               (64, 32, 4), (32, 32, 4), (16, 16, 4)]]
    bf16, fp32 = torch.empty(1, dtype=torch.bfloat16), torch.empty(1)

    def kept(q, head_dim, dropout=False, **rule):
        precision = attention_triton._precision(q.dtype)
        chosen = attention_triton._prune(configs, {"Q": q}, HEAD_DIM=head_dim, DROPOUT=dropout, PRECISION=precision,
                                         **rule)
        return [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps) for c in chosen]

    forward = dict(program_tile="BLOCK_M", forward=True)
    # sm_90: warpgroup tiles of 64 rows (128 for 8 warps), at most 128 fp32 values a thread
    assert kept(bf16, 64, **forward) == [(128, 128, 8), (64, 64, 4), (128, 64, 4), (64, 32, 4)]
    assert kept(bf16, 64, dropout=True, **forward) == [(64, 32, 4)]
    # dK/dV owns BLOCK_N keys: 32 queries a step at head dim 128, 64 spill
    assert kept(bf16, 128, program_tile="BLOCK_N") == [(32, 64, 4)]
    # with dropout, at most 2048 scores a step with 4 warps (64 x 64 spilled under Triton 3.6)
    assert kept(bf16, 64, program_tile="BLOCK_N") == [(64, 64, 4), (32, 64, 4)]
    assert kept(bf16, 64, dropout=True, program_tile="BLOCK_N") == [(32, 64, 4)]
    # sm_80: mma.sync everywhere, half the register budget: 64 x 64 fits with 4 warps, 128 x 64 does not;
    # 64 x 32 in 3 stages spills one register; tiles of 8 warps and 16 rows are offered too
    gpu["arch"] = 80
    assert kept(bf16, 64, **forward) == [(64, 64, 8), (64, 64, 4), (32, 64, 4), (32, 32, 4), (16, 16, 4)]
    assert kept(bf16, 64, program_tile="BLOCK_N") == [(32, 64, 4), (32, 32, 4), (16, 16, 4)]  # BLOCK_M x 64 <= 2048
    assert kept(bf16, 64, program_tile="BLOCK_M") == [(64, 32, 4), (32, 32, 4), (16, 16, 4)]  # dQ: BLOCK_N x 64 <= 2048
    # fp32 (FMA dots, either GPU): at most 32 x 32, BLOCK_M x BLOCK_N x HEAD_DIM at most 2^15
    for gpu["arch"] in (90, 80):
        assert kept(fp32, 64, **forward) == [(16, 16, 4)] and kept(fp32, 32, **forward) == [(32, 32, 4), (16, 16, 4)]
    gpu["arch"] = 90
    # dK and dV of 128 keys at head dim 128 are 256 fp32 values a thread with 4 warps: spilled
    configs[:] = [triton.Config(dict(BLOCK_M=32, BLOCK_N=n), num_warps=4, num_stages=2) for n in (128, 64)]
    assert kept(bf16, 128, program_tile="BLOCK_N") == [(32, 64, 4)]
    # with dropout at head dim 128, dK/dV fits its registers with 16 queries a step, 2 stages
    configs[:] = [triton.Config(dict(BLOCK_M=m, BLOCK_N=64), num_warps=4, num_stages=st) for m, st in
                  [(32, 2), (16, 3), (16, 2)]]
    assert kept(bf16, 128, dropout=True, program_tile="BLOCK_N") == [(16, 64, 4)]
    # nothing fits: the last, the smallest tile of the lists
    assert kept(fp32, 128, dropout=True, program_tile="BLOCK_N") == [(16, 64, 4)]
    configs[:] = [triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=w, num_stages=3)
                  for m, n, w in [(128, 128, 8), (64, 64, 4)]]
    autotuned = SimpleNamespace(configs=configs, early_config_prune=functools.partial(attention_triton._prune, **forward))
    default = attention_triton.default_config(autotuned, bf16, dict(HEAD_DIM=64, DROPOUT=False, PRECISION="tf32"))
    assert default is configs[0]  # autotune=False launches the first kept one


def test_variants_launch_their_kernels_directly_not_through_torchs_higher_order_op(monkeypatch):
    """Outside a triton_op, wrap_triton would wrap each launch in torch's higher-order op (under torch 2.11 a
    new autotuner per call, so every call re-tunes): the variants' forward and backward turn it off."""
    from torch._library.triton import is_wrap_triton_enabled

    from gpt_kernels.ops.attention import triton as attention_triton
    from gpt_kernels.ops.attention import variants

    enabled, original = [], attention_triton.wrap_triton
    monkeypatch.setattr(attention_triton, "wrap_triton", lambda kernel: enabled.append(is_wrap_triton_enabled())
                        or original(kernel))
    q, k, v, do = make_qkv(1, 2, 24, 24, 16, torch.float32, "cpu")
    for variant in variants.VARIANTS:
        forward_backward(functools.partial(variants.attention, variant=variant), q, k, v, do)
    assert enabled and not any(enabled), enabled


# ----------------------------------------------------------------------------- banded (GPT-3's local layers)

# Windows 1, 16, 100, T-1 and wider than T; odd lengths; every dtype the CPU runs (bf16 dots on the GPU).
BANDED_CPU_CASES = [(1, 2, t, d, window, dtype) for (t, d, window), dtype in itertools.product(
    [(129, 16, 1), (129, 16, 16), (77, 32, 100), (129, 16, 128), (64, 32, 63), (50, 16, 51)],
    [torch.float32, torch.float16])]
# Each width is a constexpr of the kernels (compiled once per width): three widths, bf16 at both head dims and
# fp16 at 64 (27 cases, about a tenth of the GPU check's test budget).
BANDED_GPU_CASES = [(b, h, t, d, window, dtype) for (b, h, t), window, (d, dtype) in itertools.product(
    [(2, 3, 17), (2, 12, 1000), (1, 12, 2048)], [1, 100, 256],
    [(64, torch.bfloat16), (128, torch.bfloat16), (64, torch.float16)])]


@pytest.mark.parametrize("b, h, t, d, window, dtype", BANDED_CPU_CASES)
def test_banded_parity_cpu(b, h, t, d, window, dtype):
    check_parity(b, h, t, t, d, True, dtype, "cpu", window=window)


@pytest.mark.parametrize("t_q, t_k, window", [(1, 40, 8), (3, 40, 1), (17, 129, 20), (64, 65, 33)])
def test_banded_queries_continuing_a_kv_cache(t_q, t_k, window):
    check_parity(1, 2, t_q, t_k, 32, True, torch.float32, "cpu", window=window)


def check_never_reads_outside_the_band(device, dtype, attention=gpt_kernels.attention):
    """64 queries continuing 448 cached tokens in a band of 100: they see keys 349..511. Keys 0..255 lie in
    tiles wholly outside the band for any tile of at most 128 keys; set to NaN there (k and v), any load of
    them reaches the output (0 x NaN is NaN in P V and dS K), so every output and gradient must be finite and
    equal to the same attention over keys 256..511 alone (bottom-right alignment keeps the positions)."""
    q, k, v, do = make_qkv(1, 2, 64, 512, 32, dtype, device)
    k[:, :, :256], v[:, :, :256] = float("nan"), float("nan")
    ours = forward_backward(lambda q, k, v: attention(q, k, v, window=100), q, k, v, do)
    inside = forward_backward(lambda q, k, v: attention(q, k, v, window=100), q, k[:, :, 256:], v[:, :, 256:], do)
    for name, out in zip(("o", "dq", "dk", "dv"), ours):
        assert torch.isfinite(out).all(), f"{name}: a NaN key outside the band was read"
    assert torch.equal(ours[2][:, :, :256], torch.zeros_like(ours[2][:, :, :256]))
    assert torch.equal(ours[3][:, :, :256], torch.zeros_like(ours[3][:, :, :256]))
    for name, out, ref in zip(("o", "dq", "dk", "dv"), ours, (*inside[:2], None, None)):
        if ref is not None:
            torch.testing.assert_close(out, ref, msg=name)
    torch.testing.assert_close(ours[2][:, :, 256:], inside[2])
    torch.testing.assert_close(ours[3][:, :, 256:], inside[3])


def test_banded_kernels_never_read_outside_the_band():
    check_never_reads_outside_the_band("cpu", torch.float32)


def test_a_kernel_reading_outside_the_band_fails_the_nan_test():
    """The test above can fail: the reference reads every key, and the NaNs reach its output."""
    with pytest.raises(AssertionError, match="a NaN key outside the band was read"):
        check_never_reads_outside_the_band(
            "cpu", torch.float32, lambda q, k, v, window: reference.attention(q, k, v, True, None, 0.0, window))


def test_banded_dropout_matches_the_reference_with_the_kernels_own_mask():
    """As the dense dropout test: the mask read back through v = I, then every gradient against it."""
    b, h, t, d, p, window = 1, 2, 48, 64, 0.3, 9
    q, k, v, do = make_qkv(b, h, t, t, d, torch.float32, "cpu")
    identity = torch.eye(t, d).expand(b, h, t, d)
    torch.manual_seed(7)
    keep = gpt_kernels.attention(q, k, identity, dropout_p=p, window=window)[..., :t] != 0
    torch.manual_seed(7)
    ours = forward_backward(lambda q, k, v: gpt_kernels.attention(q, k, v, dropout_p=p, window=window), q, k, v, do)
    truth = forward_backward(lambda q, k, v: attention_with_mask(q, k, v, keep.double(), p, True, window),
                             q.double(), k.double(), v.double(), do.double())
    for name, out, ref in zip(("o", "dq", "dk", "dv"), ours, truth):
        torch.testing.assert_close(out, ref.float(), atol=1e-5, rtol=1e-4, msg=name)
    assert not keep[reference.causal_mask(t, t, "cpu", window).expand_as(keep).logical_not()].any()


@pytest.mark.parametrize("window, causal, error, message", [
    (0, True, ValueError, r"window must be >= 1 \(query i sees keys i-window\+1 .. i\) or None for dense, got 0"),
    (-3, True, ValueError, "window must be >= 1"),
    (2.5, True, TypeError, "window must be an int"),
    (True, True, TypeError, "window must be an int"),
    (4, False, ValueError, "window \\(banded attention\\) needs causal=True"),
])
@pytest.mark.parametrize("backend", ["triton", "torch", "reference"])
def test_bad_windows_are_refused_by_every_backend(window, causal, error, message, backend):
    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(error, match=message):
        gpt_kernels.attention(q, q, q, causal=causal, window=window, backend=backend)


@pytest.mark.parametrize("variant", VARIANTS)
def test_variants_refuse_a_band(variant):
    from gpt_kernels.ops.attention import variants

    q = torch.randn(1, 1, 8, 16)
    with pytest.raises(ValueError, match=f"attention variant '{variant}' has no banded kernels"):
        variants.attention(q, q, q, True, None, 0.0, 4, variant=variant)


def test_a_band_as_wide_as_the_keys_is_dense_bit_for_bit():
    q, k, v, do = make_qkv(1, 2, 40, 40, 16, torch.float32, "cpu")
    dense = forward_backward(gpt_kernels.attention, q, k, v, do)
    for window in (40, 1000):
        banded = functools.partial(gpt_kernels.attention, window=window)
        for a, c in zip(forward_backward(banded, q, k, v, do), dense):
            assert torch.equal(a, c)


def test_pytorchs_flexattention_band_matches_the_reference():
    """The torch backend's band on a GPU (FlexAttention's sliding-window block mask), run here unfused."""
    from gpt_kernels.ops.attention import sdpa

    if sdpa.flex_attention is None:
        pytest.skip("this torch has no FlexAttention (the torch backend uses SDPA with a band mask)")
    q, k, v, _ = make_qkv(1, 2, 37, 70, 16, torch.float32, "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "flex_attention called without torch.compile()": unfused on purpose
        out = sdpa.banded_flex_attention(q, k, v, None, 9)
    torch.testing.assert_close(out, reference.attention(q, k, v, True, None, 0.0, 9), atol=1e-5, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("b, h, t, d, window, dtype", BANDED_GPU_CASES)
def test_banded_parity_gpu(b, h, t, d, window, dtype):
    check_parity(b, h, t, t, d, True, dtype, "cuda", attention=untuned_attention, window=window)


@pytest.mark.gpu
def test_banded_kernels_never_read_outside_the_band_gpu():
    check_never_reads_outside_the_band("cuda", torch.bfloat16, untuned_attention)


@pytest.mark.gpu
def test_banded_compile_fullgraph_gpu():
    torch._dynamo.reset()
    q, k, v, do = make_qkv(4, 12, 1024, 1024, 64, torch.bfloat16, "cuda")
    banded = functools.partial(untuned_attention, window=256)
    compiled = torch.compile(banded, fullgraph=True)
    for a, c in zip(forward_backward(compiled, q, k, v, do), forward_backward(banded, q, k, v, do)):
        assert torch.equal(a, c)
