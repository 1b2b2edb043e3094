"""The language-model head + loss in one chunked op (Triton; the interpreter on a CPU) against the reference."""

import pytest
import torch
import torch.nn.functional as F
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels.ops.linear_cross_entropy import reference
from gpt_kernels.ops.linear_cross_entropy import triton as fused


def make(n, c, v, dtype, device, ignore_every=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, c, generator=gen).to(device, dtype)
    weight = (torch.randn(v, c, generator=gen) * c ** -0.5).to(device, dtype)
    targets = torch.randint(v, (n,), generator=gen)
    if ignore_every:  # rows 1, 1 + k, ...: never row 0
        targets[1::ignore_every] = -100
    return h, weight, targets.to(device)


def loss_and_grads(fn, h, weight, targets, reduction="mean"):
    h, weight = h.detach().requires_grad_(), weight.detach().requires_grad_()
    loss = fn(h, weight, targets, reduction)
    dh, dweight = torch.autograd.grad(loss * 0.75, (h, weight))  # an incoming gradient other than 1
    return loss, dh, dweight


def triton_fn(h, weight, targets, reduction):
    return gpt_kernels.linear_cross_entropy(h, weight, targets, reduction=reduction, backend="triton")


SMALL_CHUNKS = 64 * 600 * 4  # chunks of 64 rows at these vocabularies: every case crosses several


class _SmallChunks(torch.autograd.Function):
    """The op's forward launcher on small chunks, its gradients handed back as the op hands them."""

    @staticmethod
    def forward(ctx, h, weight, targets, reduction):
        loss, dh, dweight = fused.linear_cross_entropy_forward(h, weight, targets, -100, reduction, h.dtype,
                                                               with_grad=True, chunk_bytes=SMALL_CHUNKS)
        ctx.save_for_backward(dh, dweight)
        return loss

    @staticmethod
    def backward(ctx, grad):
        dh, dweight = ctx.saved_tensors
        return grad * dh, grad * dweight, None, None


def small_chunks_fn(h, weight, targets, reduction):
    return _SmallChunks.apply(h, weight, targets, reduction)


def check_parity(n, c, v, dtype, device, reduction="mean", ignore_every=7, fn=triton_fn):
    h, weight, targets = make(n, c, v, dtype, device, ignore_every)
    ours = loss_and_grads(fn, h, weight, targets, reduction)
    same_dtype = loss_and_grads(
        lambda h, w, t, r: F.cross_entropy(F.linear(h, w), t, reduction=r), h, weight, targets, reduction)
    truth = loss_and_grads(lambda h, w, t, r: reference.linear_cross_entropy(h, w, t, reduction=r),
                           h.double(), weight.double(), targets, reduction)
    assert ours[0].dtype == torch.float32 and ours[1].dtype == dtype and ours[2].dtype == dtype
    for name, got, pytorch, want in zip(("loss", "dh", "dweight"), ours, same_dtype, truth):
        assert_close_to_reference(f"{name} N{n} C{c} V{v} {dtype} {reduction}", got, pytorch, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])  # bf16 under the interpreter: on the GPU
@pytest.mark.parametrize("n, c, v", [(1, 8, 7), (200, 32, 600), (130, 16, 4500)])
def test_parity_cpu(n, c, v, dtype):
    assert fused.chunk_rows(n, v, 4, SMALL_CHUNKS) < n or n == 1
    check_parity(n, c, v, dtype, "cpu", fn=small_chunks_fn)
    check_parity(n, c, v, dtype, "cpu")  # the op itself, in one chunk


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reductions(reduction):
    check_parity(150, 16, 300, torch.float32, "cpu", reduction=reduction, ignore_every=3, fn=small_chunks_fn)
    check_parity(150, 16, 300, torch.float32, "cpu", reduction=reduction, ignore_every=3)


def test_same_loss_without_gradients():
    h, weight, targets = make(40, 16, 100, torch.float32, "cpu", ignore_every=5)
    with torch.no_grad():
        no_grad = triton_fn(h, weight, targets, "mean")
    torch.testing.assert_close(no_grad, reference.linear_cross_entropy(h, weight, targets))


def test_autocast_runs_the_matmuls_in_its_dtype():
    """Under autocast, fp32 h and weight give what F.linear + F.cross_entropy give: GEMMs in the
    autocast dtype, gradients back in fp32."""
    h, weight, targets = make(48, 16, 200, torch.float32, "cpu", ignore_every=5)
    with torch.autocast("cpu", dtype=torch.float16):
        ours = loss_and_grads(triton_fn, h, weight, targets)
        pytorch = loss_and_grads(lambda h, w, t, r: F.cross_entropy(F.linear(h, w).float(), t, reduction=r),
                                 h, weight, targets)
    truth = loss_and_grads(lambda h, w, t, r: reference.linear_cross_entropy(h, w, t, reduction=r),
                           h.half().double(), weight.half().double(), targets)
    assert ours[1].dtype == torch.float32 and ours[2].dtype == torch.float32
    for name, got, same, want in zip(("loss", "dh", "dweight"), ours, pytorch, truth):
        assert_close_to_reference(f"autocast {name}", got, same, want, atol=1e-3)


def test_all_ignored_batch_is_zero_not_nan():
    h, weight, _ = make(6, 8, 30, torch.float32, "cpu")
    loss, dh, dweight = loss_and_grads(triton_fn, h, weight, torch.full((6,), -100))
    assert loss.item() == 0.0 and not dh.any() and not dweight.any()


@pytest.mark.parametrize("make_args, error, message", [
    (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 9, 1])), RuntimeError, r"target 9 at row 1"),
    (lambda: (torch.randn(3, 4), torch.randn(5, 3), torch.tensor([0, 1, 1])), ValueError, r"expected \(V, 4\)"),
    (lambda: (torch.randn(3, 4, 1), torch.randn(5, 4), torch.tensor([0, 1, 1])), ValueError, r"expected \(N, C\)"),
    (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1])), ValueError, r"expected \(3,\)"),
    (lambda: (torch.randn(3, 4), torch.randn(5, 4).half(), torch.tensor([0, 1, 1])), ValueError, "expected one dtype"),
    (lambda: (torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 1.0])), TypeError, "expected torch.int64"),
])
def test_errors(make_args, error, message):
    with pytest.raises(error, match=message):
        triton_fn(*make_args(), "mean")


def test_per_row_losses_are_refused_clearly():
    with pytest.raises(ValueError, match="reduction 'none'.*use cross_entropy"):
        triton_fn(torch.randn(3, 4), torch.randn(5, 4), torch.tensor([0, 1, 1]), "none")


def test_opcheck():
    h, weight, targets = make(20, 8, 33, torch.float32, "cpu", ignore_every=4)
    args = (h.requires_grad_(), weight.requires_grad_(), targets, -100, "mean", torch.float32, True)
    torch.library.opcheck(torch.ops.gpt_triton.linear_cross_entropy_fwd, args)


def test_compile_fullgraph_has_no_graph_breaks():
    torch._dynamo.reset()
    h, weight, targets = make(24, 8, 65, torch.float32, "cpu", ignore_every=5)
    fn = lambda h, w, t, r: triton_fn(h * 2, w, t, r)  # noqa: E731
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    for a, b in zip(loss_and_grads(compiled, h, weight, targets), loss_and_grads(fn, h, weight, targets)):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n, c, v", [(1, 64, 65), (1000, 128, 5000), (8192, 768, 50257)])
def test_parity_gpu(n, c, v, dtype):
    check_parity(n, c, v, dtype, "cuda")


@pytest.mark.gpu
def test_never_holds_the_logits_gpu():
    """GPT-2's head at 8192 tokens under bf16 autocast: the peak above the inputs stays under the
    size of the bf16 logits (823 MB), which the unfused pair holds at least twice."""
    h, weight, targets = make(8192, 768, 50257, torch.float32, "cuda")
    h.requires_grad_(), weight.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = triton_fn(h, weight, targets, "mean")
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    assert peak < 8192 * 50257 * 2, f"peak {peak / 2**20:.0f} MiB above the inputs"


def test_its_chunks_launch_directly_not_through_torchs_higher_order_op(monkeypatch):
    """An opaque custom_op's body runs eagerly even under compile: its chunks' loss-kernel launches turn
    wrap_triton's higher-order op off (about 300 us and a leaked side-table entry per launch otherwise)."""
    from torch._library.triton import is_wrap_triton_enabled

    from gpt_kernels.ops.cross_entropy import triton as cross_entropy_triton

    enabled, original = [], cross_entropy_triton.wrap_triton
    monkeypatch.setattr(cross_entropy_triton, "wrap_triton", lambda kernel: enabled.append(is_wrap_triton_enabled())
                        or original(kernel))
    h, weight = torch.randn(40, 16, requires_grad=True), torch.randn(65, 16, requires_grad=True)
    gpt_kernels.linear_cross_entropy(h, weight, torch.randint(65, (40,)), backend="triton").backward()
    assert enabled and not any(enabled), enabled


def test_fp16_gradients_survive_until_a_grad_scaler_scales_them(monkeypatch):
    """The gradient is computed in the forward, before a GradScaler's scale reaches it: in fp16, (softmax -
    onehot) / count flushes to zero wherever softmax / count < 6e-8, which is every entry of an untrained
    4096-token vocabulary over 8192 tokens (GPT-2's 50257 over 12,288 alike). The loss kernel is stood in for
    by the same arithmetic in PyTorch (its own tests hold it to the reference), so the shape is the real one."""
    def loss_kernel(logits, targets, ignore_index, grad=None, grad_scale=None):
        lse = logits.float().logsumexp(-1)
        if grad is not None:  # the kernel's sweep: (softmax - onehot) * grad_scale in the logits' dtype
            onehot = F.one_hot(targets, logits.shape[1])
            grad.copy_((logits.float().softmax(-1) - onehot) * grad_scale)
        return lse - logits.float().gather(1, targets[:, None]).squeeze(1), lse

    monkeypatch.setattr(fused, "cross_entropy_forward", loss_kernel)
    torch.manual_seed(0)
    n, c, v, loss_scale = 8192, 32, 4096, 65536.0
    h, w, targets = torch.randn(n, c) * 0.1, torch.randn(v, c) * 0.1, torch.randint(v, (n,))

    def scaled_gradients(fn, dtype):
        hs, ws = h.to(dtype).requires_grad_(), w.to(dtype).requires_grad_()
        (fn(hs, ws) * loss_scale).backward()
        return hs.grad, ws.grad

    ours = scaled_gradients(lambda h, w: gpt_kernels.linear_cross_entropy(h, w, targets, backend="triton"),
                            torch.float16)
    theirs = scaled_gradients(lambda h, w: F.cross_entropy((h @ w.t()).float(), targets), torch.float16)
    truth = scaled_gradients(lambda h, w: F.cross_entropy(h @ w.t(), targets), torch.float64)
    assert ours[0].dtype == ours[1].dtype == torch.float16
    for name, a, b, t in zip(("dh", "dweight"), ours, theirs, truth):
        assert_close_to_reference(f"fp16 {name} under a loss scale", a, b, t)
