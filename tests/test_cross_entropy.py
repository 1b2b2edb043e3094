"""Fused cross-entropy, Triton (the interpreter on a CPU) and the extension (its CPU kernels; CUDA under
the gpu marker), against the reference."""

import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels.ops.cross_entropy import reference

CASES = [(n, v) for n in (1, 3, 1000) for v in (1, 7, 65, 50257)]
# The interpreter runs one program per row in Python: fewer rows, and a vocabulary of several blocks.
INTERPRETER_CASES = [(n, v) for n in (1, 3, 40) for v in (1, 7, 65, 9000)]
BACKENDS = ["triton", "ext"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make(n, v, dtype, device, scale=3.0, shift=0.0, ignore_every=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, v, generator=gen) * scale + shift).to(device=device, dtype=dtype)
    targets = torch.randint(v, (n,), generator=gen)
    if ignore_every:  # rows 1, 1 + k, ...: never row 0, so every case keeps a row to compare
        targets[1::ignore_every] = -100
    return logits, targets.to(device)


def loss_and_grad(fn, logits, targets, reduction="mean"):
    logits = logits.detach().requires_grad_()
    loss = fn(logits, targets, reduction)
    grad_out = torch.linspace(0.5, 1.5, loss.numel(), device=loss.device).view(loss.shape).to(loss.dtype)
    (grad,) = torch.autograd.grad(loss, logits, grad_out)
    return loss, grad


def ours(backend):
    return lambda logits, targets, reduction: gpt_kernels.cross_entropy(logits, targets, reduction=reduction,
                                                                    backend=backend)


def check_parity(backend, n, v, dtype, device, reduction="mean", **make_kwargs):
    logits, targets = make(n, v, dtype, device, **make_kwargs)
    ours_out = loss_and_grad(ours(backend), logits, targets, reduction)
    same_dtype = loss_and_grad(lambda z, t, r: F.cross_entropy(z, t, reduction=r), logits, targets, reduction)
    truth = loss_and_grad(lambda z, t, r: reference.cross_entropy(z, t, reduction=r), logits.double(), targets,
                          reduction)
    assert ours_out[0].dtype == torch.float32 and ours_out[1].dtype == dtype
    assert_close_to_reference(f"{backend} loss N{n} V{v} {dtype}", ours_out[0], same_dtype[0], truth[0])
    assert_close_to_reference(f"{backend} dlogits N{n} V{v} {dtype}", ours_out[1], same_dtype[1], truth[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, v", CASES)
def test_parity_cpu(n, v, dtype):
    check_parity("ext", n, v, dtype, "cpu", ignore_every=7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])  # bf16 under the interpreter: on the GPU
@pytest.mark.parametrize("n, v", INTERPRETER_CASES)
def test_parity_triton_cpu(n, v, dtype):
    check_parity("triton", n, v, dtype, "cpu", ignore_every=7)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_rows_and_reductions(backend, reduction):
    check_parity(backend, 30, 65, torch.float32, "cpu", reduction=reduction, ignore_every=3)


def test_strided_rows():
    logits, targets = make(12, 65, torch.float32, "cpu")
    wide = torch.zeros(12, 80)
    wide[:, :65] = logits
    strided = wide[:, :65]  # rows 80 apart, columns contiguous: no copy needed
    for backend in BACKENDS:
        got = loss_and_grad(ours(backend), strided, targets)
        want = loss_and_grad(lambda z, t, r: reference.cross_entropy(z, t, reduction=r), logits, targets)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])


def test_strided_targets():
    """Targets that are every other entry of a longer tensor: the kernels read them by their stride."""
    logits, targets = make(12, 65, torch.float32, "cpu")
    spread = torch.full((24,), 7, dtype=targets.dtype)
    spread[::2] = targets
    for backend in BACKENDS:
        got = loss_and_grad(ours(backend), logits, spread[::2])
        want = loss_and_grad(lambda z, t, r: reference.cross_entropy(z, t, reduction=r), logits, targets)
        torch.testing.assert_close(got[0], want[0])
        torch.testing.assert_close(got[1], want[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("first_column", [0, 3])
def test_triton_every_target_column_at_every_row_alignment(dtype, first_column):
    """The Triton kernels split each row where 16-byte boundaries fall: the head before the first,
    the aligned body, the tail after the last. Rows of 21 start at every offset modulo 16 bytes (and
    with first_column 3, a view that starts off a boundary); the targets visit every column of each."""
    v = 21
    n = 16 * v
    logits, _ = make(n, v + first_column, dtype, "cpu")
    logits = logits[:, first_column:]
    targets = torch.arange(n) % v
    got = loss_and_grad(ours("triton"), logits, targets, "none")
    same_dtype = loss_and_grad(lambda z, t, r: F.cross_entropy(z, t, reduction=r), logits, targets, "none")
    truth = loss_and_grad(lambda z, t, r: reference.cross_entropy(z, t, reduction=r), logits.double(), targets, "none")
    assert_close_to_reference(f"loss {dtype}", got[0], same_dtype[0], truth[0])
    assert_close_to_reference(f"dlogits {dtype}", got[1], same_dtype[1], truth[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_batch_is_zero_not_nan(backend):
    """By design: the mean over no targets is 0 with zero gradients (PyTorch's is NaN), so a
    batch of padding cannot poison the weights."""
    logits, _ = make(4, 65, torch.float32, "cpu")
    targets = torch.full((4,), -100)
    loss, grad = loss_and_grad(ours(backend), logits, targets)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shift", [1e4, -1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logits_do_not_overflow(backend, shift, dtype):
    logits, targets = make(16, 1000, dtype, "cpu", scale=100.0, shift=shift)
    loss, grad = loss_and_grad(ours(backend), logits, targets)
    truth = loss_and_grad(lambda z, t, r: reference.cross_entropy(z, t, reduction=r), logits.double(), targets)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), truth[0], atol=1e-3 * abs(shift), rtol=1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_ignore_index(backend):
    logits, targets = make(10, 7, torch.float32, "cpu")
    targets[2] = -1
    got = gpt_kernels.cross_entropy(logits, targets, ignore_index=-1, backend=backend)
    torch.testing.assert_close(got, F.cross_entropy(logits, targets, ignore_index=-1))


def test_triton_kernel_gives_an_out_of_range_target_a_nan_loss(monkeypatch):
    """On a GPU the Triton kernel cannot raise: the row's loss is NaN, never a silent number."""
    from gpt_kernels.ops.cross_entropy import triton as triton_ce

    logits, targets = make(3, 5, torch.float32, "cpu")
    targets[1] = 5
    monkeypatch.setattr(triton_ce, "check_targets_on_cpu", lambda *args: None)  # what the GPU path skips
    loss, _ = triton_ce.cross_entropy_forward(logits, targets, -100)
    assert torch.isnan(loss[1]) and torch.isfinite(loss[[0, 2]]).all()


@pytest.mark.parametrize("make_args, error, message", [
    (lambda: (torch.randn(3, 5), torch.tensor([0, 5, 1])), RuntimeError, r"target 5 at row 1 is outside \[0, 5\)"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1, 1], dtype=torch.int32)), TypeError, "expected torch.int64"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1])), ValueError, r"expected \(3,\)"),
    (lambda: (torch.randn(3, 5, 2), torch.tensor([0, 1, 1])), ValueError, r"expected \(N, V\)"),
    (lambda: (torch.randn(3, 5).to(torch.float64), torch.tensor([0, 1, 1])), TypeError, "logits has dtype"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1, 1], device="meta")), ValueError, "targets is on meta"),
])
@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend, make_args, error, message):
    logits, targets = make_args()
    with pytest.raises(error, match=message):
        gpt_kernels.cross_entropy(logits, targets, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_reduction(backend):
    with pytest.raises(ValueError, match="reduction 'avg'"):
        gpt_kernels.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="avg", backend=backend)


@pytest.mark.parametrize("namespace", ["gpt_triton", "gpt_ext"])
def test_opcheck(namespace):
    ops = getattr(torch.ops, namespace)
    logits, targets = make(17, 33, torch.float32, "cpu", ignore_every=4)
    torch.library.opcheck(ops.cross_entropy_fwd, (logits.requires_grad_(), targets, -100))
    loss, stats = ops.cross_entropy_fwd(logits.detach(), targets, -100)
    torch.library.opcheck(ops.cross_entropy_bwd, (torch.rand(17), logits.detach(), targets, stats, -100))


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_has_no_graph_breaks(backend):
    torch._dynamo.reset()
    logits, targets = make(32, 65, torch.float32, "cpu", ignore_every=5)
    fn = lambda z, t, r: gpt_kernels.cross_entropy(z * 2, t, reduction=r, backend=backend)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, c in zip(loss_and_grad(compiled, logits, targets), loss_and_grad(fn, logits, targets)):
        torch.testing.assert_close(a, c)


# Every case for ext; for triton (one kernel for every V, blocks of up to 4096) the edges and GPT-2's vocabulary.
GPU_CASES = [("ext", n, v) for n, v in CASES + [(8192, 50257)]] + [
    ("triton", n, v) for n, v in [(1, 1), (3, 7), (1000, 65), (1000, 50257), (8192, 50257)]]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("backend, n, v", GPU_CASES)
def test_parity_gpu(backend, n, v, dtype):
    check_parity(backend, n, v, dtype, "cuda", ignore_every=7)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
def test_all_ignored_and_extremes_gpu(backend):
    logits, _ = make(4, 50257, torch.bfloat16, "cuda", scale=100.0, shift=1e4)
    loss = gpt_kernels.cross_entropy(logits, torch.full((4,), -100, device="cuda"), backend=backend)
    assert loss.item() == 0.0
    targets = torch.randint(50257, (4,), device="cuda")
    loss, grad = loss_and_grad(ours(backend), logits, targets)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
