"""Residual add + LayerNorm: every backend against the reference, forward and both gradients,
mixed dtypes (a bf16/fp16 sublayer output joining an fp32 stream), errors, registration."""

import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels.ops.add_layer_norm import reference

BACKENDS = ["triton", "ext", "torch"]
CPU_CASES = [(1, 1), (3, 7), (7, 127), (64, 64), (5, 384), (3, 1000)]
GPU_CASES = [(1, 1), (7, 127), (1000, 768), (16384, 768), (8192, 4096)]


def make(shape, dtype, device, residual_dtype=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(device=device, dtype=dtype)
    residual = torch.randn(shape, generator=gen).to(device=device, dtype=residual_dtype or dtype)
    w = (1 + 0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype)
    dy = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    ds = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x, residual, w, b, dy, ds


def run(fn, x, residual, w, b, dy, ds):
    leaves = [t.detach().requires_grad_() for t in (x, residual, w, b)]
    y, s = fn(*leaves)
    grads = torch.autograd.grad((y, s), leaves, (dy.to(y.dtype), ds.to(s.dtype)))
    return (y, s, *grads)


def torch_unfused(x, residual, w, b):
    s = x + residual.to(x.dtype)
    return F.layer_norm(s, (s.shape[-1],), w, b), s


def check_parity(shape, dtype, device, backend, residual_dtype=None):
    x, residual, w, b, dy, ds = make(shape, dtype, device, residual_dtype)
    ours = run(lambda *a: gpt_kernels.add_layer_norm(*a, backend=backend), x, residual, w, b, dy, ds)
    same_dtype = run(torch_unfused, x, residual, w, b, dy, ds)
    up = lambda t: t.double()  # noqa: E731
    truth = run(reference.add_layer_norm, up(x), up(residual), up(w), up(b), up(dy), up(ds))
    names = ("y", "s", "dx", "dresidual", "dweight", "dbias")
    for name, out, base, ref in zip(names, ours, same_dtype, truth):
        assert out.dtype == base.dtype, f"{name}: {out.dtype}, expected {base.dtype}"
        assert_close_to_reference(f"{backend} {name} {tuple(shape)} {dtype}", out, base, ref)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows, width", CPU_CASES)
def test_parity_cpu(rows, width, dtype, backend):
    check_parity((rows, width), dtype, "cpu", backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_half_precision_sublayer_joins_an_fp32_stream(backend):
    """Under autocast the residual stream is fp32 and the sublayer output bf16: s stays fp32."""
    check_parity((9, 96), torch.float32, "cpu", backend, residual_dtype=torch.float16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_leading_dimensions_and_no_bias(backend):
    x, residual, w, _, dy, ds = make((2, 5, 48), torch.float32, "cpu")

    def grads(fn, x, residual, w):
        leaves = [t.detach().requires_grad_() for t in (x, residual, w)]
        y, s = fn(*leaves, None)
        return (y, s, *torch.autograd.grad((y, s), leaves, (dy.to(y.dtype), ds.to(s.dtype))))

    ours = grads(lambda *a: gpt_kernels.add_layer_norm(*a, backend=backend), x, residual, w)
    truth = grads(reference.add_layer_norm, x.double(), residual.double(), w.double())
    for out, ref in zip(ours, truth):
        torch.testing.assert_close(out, ref.float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_backward_is_deterministic(backend):
    x, residual, w, b, dy, ds = make((1000, 768), torch.float32, "cpu")
    fn = lambda *a: gpt_kernels.add_layer_norm(*a, backend=backend)  # noqa: E731
    for a, c in zip(run(fn, x, residual, w, b, dy, ds), run(fn, x, residual, w, b, dy, ds)):
        assert torch.equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend):
    x, w = torch.randn(4, 8), torch.ones(8)
    with pytest.raises(ValueError, match=r"residual has shape \(4, 7\); expected x's \(4, 8\)"):
        gpt_kernels.add_layer_norm(x, torch.randn(4, 7), w, backend=backend)
    with pytest.raises(TypeError, match="residual has dtype torch.int32"):
        gpt_kernels.add_layer_norm(x, torch.ones(4, 8, dtype=torch.int32), w, backend=backend)
    with pytest.raises(ValueError, match="residual is on meta but x is on cpu"):
        gpt_kernels.add_layer_norm(x, torch.randn(4, 8, device="meta"), w, backend=backend)


@pytest.mark.parametrize("op", ["gpt_triton", "gpt_ext"])
def test_opcheck(op):
    x, residual, w, b, _, _ = make((5, 33), torch.float32, "cpu")
    ops = getattr(torch.ops, op)
    for bias in (b, None):
        torch.library.opcheck(ops.add_layer_norm_fwd, (x.requires_grad_(), residual.requires_grad_(),
                                                       w.requires_grad_(), bias, 1e-5))
    _, s, _, rstd = ops.add_layer_norm_fwd(x.detach(), residual.detach(), w.detach(), b, 1e-5)
    torch.library.opcheck(ops.layer_norm_bwd, (torch.randn(5, 33), s, w.detach(), rstd, torch.randn(5, 33)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_has_no_graph_breaks(backend):
    torch._dynamo.reset()
    x, residual, w, b, dy, ds = make((6, 40), torch.float32, "cpu")
    fn = lambda *a: gpt_kernels.add_layer_norm(*a, backend=backend)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, c in zip(run(compiled, x, residual, w, b, dy, ds), run(fn, x, residual, w, b, dy, ds)):
        torch.testing.assert_close(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "ext"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows, width", GPU_CASES)
def test_parity_gpu(rows, width, dtype, backend):
    check_parity((rows, width), dtype, "cuda", backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_bf16_sublayer_into_fp32_stream_gpu(backend):
    check_parity((4096, 768), torch.float32, "cuda", backend, residual_dtype=torch.bfloat16)
