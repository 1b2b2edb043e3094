"""LayerNorm backends against the reference: forward, backward, determinism, errors, registration.

backend "triton" runs the Triton kernels (the interpreter on the CPU); backend "ext" runs the
C++ extension, whose CPU kernels are tested here on every machine and CUDA kernels under the gpu marker.
"""

import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels.ops.layer_norm import reference

ROWS = [1, 3, 7, 127, 1000]
WIDTHS = [1, 7, 64, 127, 384, 768, 1000, 4096]
# The interpreter runs a program at a time in Python: on the CPU a trimmed grid that still
# covers one row, odd counts, many rows, odd widths, narrow (several rows per program) and wide rows.
CPU_CASES = [(1, 1), (3, 7), (7, 127), (127, 64), (3, 384), (7, 1000), (1000, 768), (3, 4096)]
GPU_CASES = [(m, n) for m in ROWS for n in WIDTHS] + [(16384, 768), (16384, 1024), (8192, 4096), (4, 16384)]


def make_inputs(shape, dtype, device, bias=True, seed=0):
    gen = torch.Generator().manual_seed(seed)
    n = shape[-1]
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(device=device, dtype=dtype)
    w = (1 + 0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype)
    b = (0.1 * torch.randn(n, generator=gen)).to(device=device, dtype=dtype) if bias else None
    dy = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    return x, w, b, dy


def forward_backward(fn, x, w, b, dy):
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = fn(x, w, b)
    grads = torch.autograd.grad(y, [t for t in (x, w, b) if t is not None], dy)
    return (y, *grads)


def check_parity(shape, dtype, device, bias=True, backend="triton"):
    x, w, b, dy = make_inputs(shape, dtype, device, bias)
    ours = forward_backward(lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend), x, w, b, dy)
    torch_same_dtype = forward_backward(lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b), x, w, b, dy)
    up = lambda t: None if t is None else t.double()  # noqa: E731
    truth = forward_backward(reference.layer_norm, up(x), up(w), up(b), up(dy))
    for name, out, base, ref in zip(("y", "dx", "dweight", "dbias"), ours, torch_same_dtype, truth):
        assert out.dtype == dtype
        assert_close_to_reference(f"{name} {tuple(shape)} {dtype}", out, base, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("rows, width", CPU_CASES)
def test_triton_parity_cpu(rows, width, dtype):
    check_parity((rows, width), dtype, "cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows, width", [(m, n) for m in ROWS for n in WIDTHS])
def test_extension_parity_cpu(rows, width, dtype):
    check_parity((rows, width), dtype, "cpu", backend="ext")


@pytest.mark.parametrize("backend", ["triton", "ext"])
@pytest.mark.parametrize("shape", [(2, 5, 64), (2, 3, 4, 7)])
def test_leading_dimensions_and_no_bias(shape, backend):
    check_parity(shape, torch.float32, "cpu", bias=False, backend=backend)


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_non_contiguous_input(backend):
    x, w, b, dy = make_inputs((64, 48), torch.float32, "cpu")
    x_t = x.t()  # (48, 64) with row stride 1: normalise over a strided last dimension
    w, b, dy = w[:1].expand(64).contiguous(), b[:1].expand(64).contiguous(), dy.t()
    ours = forward_backward(lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend), x_t, w, b, dy)
    truth = forward_backward(reference.layer_norm, x_t.double(), w.double(), b.double(), dy.double())
    for out, ref in zip(ours, truth):
        torch.testing.assert_close(out, ref.float(), atol=1e-4, rtol=1e-4)


def check_width_one_is_exact(backend, device):
    """A normalised single element is 0 whatever x is: y = bias exactly and dx = 0 exactly."""
    x, w, b, dy = make_inputs((127, 1), torch.float32, device)
    y, dx, _, _ = forward_backward(lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend), x, w, b, dy)
    assert torch.equal(y, b.expand_as(y)) and torch.equal(dx, torch.zeros_like(dx))


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_width_one_is_exact(backend):
    check_width_one_is_exact(backend, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_width_one_is_exact_gpu(backend):
    check_width_one_is_exact(backend, "cuda")


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_backward_is_deterministic(backend):
    x, w, b, dy = make_inputs((1000, 768), torch.float32, "cpu")
    fn = lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend)  # noqa: E731
    first = forward_backward(fn, x, w, b, dy)
    second = forward_backward(fn, x, w, b, dy)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


@pytest.mark.parametrize("op", ["gpt_triton", "gpt_ext"])
def test_statistics_are_fp32(op):
    x, w, b, _ = make_inputs((5, 64), torch.float16, "cpu")
    y, mean, rstd = getattr(torch.ops, op).layer_norm_fwd(x, w, b, 1e-5)
    assert y.dtype == torch.float16 and mean.dtype == rstd.dtype == torch.float32
    torch.testing.assert_close(mean, x.float().mean(-1))
    torch.testing.assert_close(rstd, torch.rsqrt(x.float().var(-1, unbiased=False) + 1e-5))


@pytest.mark.parametrize("args, error, message", [
    (lambda: (torch.randn(4, 8), torch.ones(7), None), ValueError, r"weight has shape \(7,\); expected \(8,\)"),
    (lambda: (torch.randn(4, 8), torch.ones(8), torch.ones(6)), ValueError, r"bias has shape \(6,\)"),
    (lambda: (torch.ones(4, 8, dtype=torch.int32), torch.ones(8, dtype=torch.int32), None), TypeError,
     "x has dtype torch.int32; expected one of float32, float16, bfloat16"),
    (lambda: (torch.randn(4, 8), torch.ones(8, dtype=torch.float16), None), ValueError,
     "weight is torch.float16 but x is torch.float32"),
    (lambda: (torch.randn(4, 8), torch.ones(8, device="meta"), None), ValueError, "weight is on meta but x is on cpu"),
])
@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_errors(args, error, message, backend):
    x, w, b = args()
    with pytest.raises(error, match=message):
        gpt_kernels.layer_norm(x, w, b, backend=backend)


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_negative_eps_and_empty_input(backend):
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        gpt_kernels.layer_norm(torch.randn(2, 4), torch.ones(4), eps=-1.0, backend=backend)
    x, w = torch.randn(0, 8, requires_grad=True), torch.ones(8, requires_grad=True)
    gpt_kernels.layer_norm(x, w, backend=backend).sum().backward()
    assert torch.equal(w.grad, torch.zeros(8))


def test_triton_width_limit():
    with pytest.raises(ValueError, match="width 70000 exceeds this kernel's maximum of 65536"):
        gpt_kernels.layer_norm(torch.randn(2, 70000), torch.ones(70000))


def test_import_selects_the_interpreter_without_touching_cuda():
    import os
    import subprocess
    import sys

    code = "import torch, gpt_kernels; assert not torch.cuda.is_initialized(); print(gpt_kernels.INTERPRETER)"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(not gpt_kernels.runtime.nvidia_driver_present())  # interpreter iff no NVIDIA driver


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"unknown backend 'fast' for layer_norm; expected one of \['torch'"):
        gpt_kernels.layer_norm(torch.randn(2, 4), torch.ones(4), backend="fast")


@pytest.mark.parametrize("op", ["gpt_triton", "gpt_ext"])
def test_opcheck(op):
    ops = getattr(torch.ops, op)
    x, w, b, _ = make_inputs((5, 33), torch.float32, "cpu")
    for bias in (b, None):
        torch.library.opcheck(ops.layer_norm_fwd, (x.requires_grad_(), w.requires_grad_(), bias, 1e-5))
    rstd = torch.rsqrt(x.var(-1, unbiased=False) + 1e-5).detach()
    for ds in (None, torch.randn(5, 33)):
        torch.library.opcheck(ops.layer_norm_bwd, (torch.randn(5, 33), x.detach(), w.detach(), rstd, ds))


@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_compile_fullgraph_has_no_graph_breaks(backend):
    torch._dynamo.reset()
    x, w, b, dy = make_inputs((6, 40), torch.float32, "cpu")
    fn = lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend) * 2  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    ours = forward_backward(compiled, x, w, b, dy)
    eager = forward_backward(fn, x, w, b, dy)
    for a, c in zip(ours, eager):
        torch.testing.assert_close(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "ext"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows, width", GPU_CASES)
def test_parity_gpu(rows, width, dtype, backend):
    check_parity((rows, width), dtype, "cuda", backend=backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "ext"])
def test_compile_fullgraph_and_determinism_gpu(backend):
    torch._dynamo.reset()
    x, w, b, dy = make_inputs((4096, 768), torch.bfloat16, "cuda")
    fn = lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend=backend)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True)
    for a, c in zip(forward_backward(compiled, x, w, b, dy), forward_backward(fn, x, w, b, dy)):
        assert torch.equal(a, c)


def test_extension_checks_on_a_cuda_device_compile_without_graph_breaks(monkeypatch):
    """The CUDA-device branch of the extension's capability check, traced on a CPU machine.

    On a GPU the check ran inside the compiled region and broke the graph (it queried the
    dispatcher on every call); a CPU run never took that branch. Here it is taken with the
    capability as a GPU build would report it, and must trace into a single graph."""
    from gpt_kernels import ext

    monkeypatch.setattr(ext, "HAS_CUDA_KERNELS", True)
    torch._dynamo.reset()

    def check_then_scale(x):
        ext.require(torch.device("cuda"))
        return x * 2

    compiled = torch.compile(check_then_scale, fullgraph=True, backend="eager")
    assert torch.equal(compiled(torch.ones(3)), torch.full((3,), 2.0))
    monkeypatch.setattr(ext, "HAS_CUDA_KERNELS", False)
    with pytest.raises(RuntimeError, match="built without CUDA kernels .*so it cannot run on cuda"):
        ext.require(torch.device("cuda"))
    with pytest.raises(ValueError, match="layer_norm=ext: the extension gpt_kernels._C was built without CUDA kernels"):
        gpt_kernels.resolve("ext", "cuda")  # found when the kernels are chosen, before a model is built


@pytest.mark.gpu
def test_inductor_launches_the_triton_kernels_itself_gpu():
    """On a GPU the Triton ops are triton_ops: the compiled code launches the kernels, no opaque op call."""
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    x, w, b, _ = make_inputs((64, 256), torch.bfloat16, "cuda")
    compiled = torch.compile(lambda x, w, b: gpt_kernels.layer_norm(x, w, b, backend="triton") * 2)
    out, codes = run_and_get_code(compiled, x, w, b)
    code = "\n".join(codes)
    assert "_layer_norm_fwd_kernel" in code and "gpt_triton.layer_norm_fwd" not in code
    torch.testing.assert_close(out, gpt_kernels.layer_norm(x, w, b, backend="triton") * 2)
