"""Every op the registry holds, every backend of it, on the sample inputs the op declares
(`registry.Op.sample_inputs`): forward and backward against the op's reference. The op's own
tests (tests/test_<op>.py) hold its kernels to the tolerance rule at many shapes and dtypes; these
run for any op as soon as it is declared, a new one included, from its own files alone."""

import pytest
import torch

import gpt_kernels
from gpt_kernels import registry

CASES = [(op, name) for op, backends in registry.BACKENDS.items() for name in backends]


def forward_backward(op: str, backend: str):
    args, kwargs = registry.OPS[op].sample_inputs(torch.Generator().manual_seed(0))
    args = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    out = registry.main_output(getattr(gpt_kernels, op)(*args, **kwargs, backend=backend))
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    grads = torch.autograd.grad(out, leaves, grad_out) if out.requires_grad else None
    return out, grads


def test_every_op_declares_sample_inputs_and_a_reference():
    for op in registry.BACKENDS:
        assert registry.OPS[op].sample_inputs is not None, f"{op} declares no sample_inputs"
        assert "reference" in registry.BACKENDS[op], f"{op} registers no reference backend"


@pytest.mark.parametrize("op, backend", CASES, ids=[f"{op}-{name}" for op, name in CASES])
def test_every_backend_matches_the_reference_forward_and_backward(op, backend):
    why = registry.backend(op, backend).unavailable(torch.device("cpu"))
    if why:
        pytest.skip(f"{op}={backend} cannot run here: {why}")
    out, grads = forward_backward(op, backend)
    expected, expected_grads = forward_backward(op, "reference")
    torch.testing.assert_close(out.float(), expected.float(), atol=1e-4, rtol=1e-4, msg=f"{op}={backend} forward")
    assert grads is not None, f"{op}={backend}: its output has no gradient (the reference's has)"
    for i, (grad, expected_grad) in enumerate(zip(grads, expected_grads)):
        torch.testing.assert_close(grad, expected_grad, atol=1e-4, rtol=1e-4, msg=f"{op}={backend} gradient {i}")
