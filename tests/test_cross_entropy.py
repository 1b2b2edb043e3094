"""Fused cross-entropy (the extension's CPU kernels; CUDA under the gpu marker) against the reference."""

import pytest
import torch
import torch.nn.functional as F

import kernels
from kernels.ops.cross_entropy import reference
from tolerance import assert_close_to_reference

CASES = [(n, v) for n in (1, 3, 1000) for v in (1, 7, 65, 50257)]
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


def check_parity(n, v, dtype, device, reduction="mean", **make_kwargs):
    logits, targets = make(n, v, dtype, device, **make_kwargs)
    ours = loss_and_grad(lambda l, t, r: kernels.cross_entropy(l, t, reduction=r, backend="ext"), logits, targets,
                         reduction)
    same_dtype = loss_and_grad(lambda l, t, r: F.cross_entropy(l, t, reduction=r), logits, targets, reduction)
    truth = loss_and_grad(lambda l, t, r: reference.cross_entropy(l, t, reduction=r), logits.double(), targets,
                          reduction)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == dtype
    assert_close_to_reference(f"loss N{n} V{v} {dtype}", ours[0], same_dtype[0], truth[0])
    assert_close_to_reference(f"dlogits N{n} V{v} {dtype}", ours[1], same_dtype[1], truth[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, v", CASES)
def test_parity_cpu(n, v, dtype):
    check_parity(n, v, dtype, "cpu", ignore_every=7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ignored_rows_and_reductions(reduction):
    check_parity(300, 65, torch.float32, "cpu", reduction=reduction, ignore_every=3)


def test_all_ignored_batch_is_zero_not_nan():
    """By design: the mean over no targets is 0 with zero gradients (PyTorch's is NaN), so a
    batch of padding cannot poison the weights."""
    logits, _ = make(4, 65, torch.float32, "cpu")
    targets = torch.full((4,), -100)
    loss, grad = loss_and_grad(lambda l, t, r: kernels.cross_entropy(l, t, reduction=r, backend="ext"),
                               logits, targets)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("shift", [1e4, -1e4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_extreme_logits_do_not_overflow(shift, dtype):
    logits, targets = make(64, 1000, dtype, "cpu", scale=100.0, shift=shift)
    loss, grad = loss_and_grad(lambda l, t, r: kernels.cross_entropy(l, t, reduction=r, backend="ext"),
                               logits, targets)
    truth = loss_and_grad(lambda l, t, r: reference.cross_entropy(l, t, reduction=r), logits.double(), targets)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss.double(), truth[0], atol=1e-3 * abs(shift), rtol=1e-2)


def test_custom_ignore_index():
    logits, targets = make(10, 7, torch.float32, "cpu")
    targets[2] = -1
    ours = kernels.cross_entropy(logits, targets, ignore_index=-1, backend="ext")
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets, ignore_index=-1))


@pytest.mark.parametrize("make_args, error, message", [
    (lambda: (torch.randn(3, 5), torch.tensor([0, 5, 1])), RuntimeError, r"target 5 at row 1 is outside \[0, 5\)"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1, 1], dtype=torch.int32)), TypeError, "expected torch.int64"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1])), ValueError, r"expected \(3,\)"),
    (lambda: (torch.randn(3, 5, 2), torch.tensor([0, 1, 1])), ValueError, r"expected \(N, V\)"),
    (lambda: (torch.randn(3, 5).to(torch.float64), torch.tensor([0, 1, 1])), TypeError, "logits has dtype"),
    (lambda: (torch.randn(3, 5), torch.tensor([0, 1, 1], device="meta")), ValueError, "targets is on meta"),
])
def test_errors(make_args, error, message):
    logits, targets = make_args()
    with pytest.raises(error, match=message):
        kernels.cross_entropy(logits, targets, backend="ext")


def test_bad_reduction():
    with pytest.raises(ValueError, match="reduction 'avg'"):
        kernels.cross_entropy(torch.randn(2, 3), torch.tensor([0, 1]), reduction="avg", backend="ext")


def test_opcheck():
    logits, targets = make(17, 33, torch.float32, "cpu", ignore_every=4)
    torch.library.opcheck(torch.ops.gpt_ext.cross_entropy_fwd, (logits.requires_grad_(), targets, -100))
    loss, stats = torch.ops.gpt_ext.cross_entropy_fwd(logits.detach(), targets, -100)
    torch.library.opcheck(torch.ops.gpt_ext.cross_entropy_bwd, (torch.rand(17), logits.detach(), targets, stats, -100))


def test_compile_fullgraph_has_no_graph_breaks():
    torch._dynamo.reset()
    logits, targets = make(32, 65, torch.float32, "cpu", ignore_every=5)
    fn = lambda l, t, r: kernels.cross_entropy(l * 2, t, reduction=r, backend="ext")  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, c in zip(loss_and_grad(compiled, logits, targets), loss_and_grad(fn, logits, targets)):
        torch.testing.assert_close(a, c)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, v", CASES + [(8192, 50257)])
def test_parity_gpu(n, v, dtype):
    check_parity(n, v, dtype, "cuda", ignore_every=7)


@pytest.mark.gpu
def test_all_ignored_and_extremes_gpu():
    logits, _ = make(4, 50257, torch.bfloat16, "cuda", scale=100.0, shift=1e4)
    loss = kernels.cross_entropy(logits, torch.full((4,), -100, device="cuda"), backend="ext")
    assert loss.item() == 0.0
    targets = torch.randint(50257, (4,), device="cuda")
    loss, grad = loss_and_grad(lambda l, t, r: kernels.cross_entropy(l, t, reduction=r, backend="ext"),
                               logits, targets)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
