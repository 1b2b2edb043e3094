"""Property-based parity (hypothesis) of every op and every backend of ours, from the registry: each op
declares how to draw a random case (registry.Op.fuzz_inputs: shapes, dtypes, strides, magnitudes and
offsets, options), and every output and gradient of each of our backends is held to the project's
tolerance rule against the op's reference in float64, PyTorch's own op in the same dtype the yardstick.
A new op is fuzzed as soon as it declares fuzz_inputs. The default run is bounded for CI;
`pytest -m slow tests/test_fuzz.py` runs the long campaign, and the gpu marker the GPU's (bf16 included,
larger shapes). A failure names the case's seed: `fuzz_inputs(torch.Generator().manual_seed(seed), ...)`.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt_kernels import registry

CI = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
# 20 a backend on a GPU: each new shape compiles (and autotunes) kernels inside the GPU check's test stage
GPU = settings(max_examples=20, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
FUZZED = [(op, name) for op, backends in registry.BACKENDS.items() for name in backends if name in registry.OURS]
SEEDS = st.integers(0, 2**31 - 1)


def test_every_op_declares_fuzz_inputs_and_has_a_backend_of_ours_fuzzed():
    for op in registry.BACKENDS:
        assert registry.OPS[op].fuzz_inputs is not None, f"{op} declares no fuzz_inputs"
    assert {op for op, _ in FUZZED} == set(registry.BACKENDS)


def dtypes_for(backend: str, device: str) -> list[torch.dtype]:
    """Every dtype, but bf16 under the Triton interpreter, whose bf16 arithmetic is wrong: the GPU's run has it."""
    if backend == "triton" and device == "cpu":
        return [torch.float32, torch.float16]
    return [torch.float32, torch.float16, torch.bfloat16]


def outputs_and_gradients(op: str, backend: str, args: tuple, kwargs: dict, seed: int) -> list[torch.Tensor]:
    """Every output of the op, then the gradient of every floating input, for output gradients drawn from seed."""
    leaves = [a.detach().requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
    out = getattr(gpt_kernels, op)(*leaves, **kwargs, backend=backend)
    outs = list(out) if isinstance(out, tuple) else [out]
    g = torch.Generator().manual_seed(seed)
    grad_outs = [torch.randn(o.shape, generator=g).to(o.device, o.dtype) for o in outs]
    inputs = [a for a in leaves if isinstance(a, torch.Tensor) and a.requires_grad]
    return outs + list(torch.autograd.grad(outs, inputs, grad_outs))


def describe(args: tuple, kwargs: dict) -> str:
    shown = [f"{tuple(a.shape)} {str(a.dtype).removeprefix('torch.')} strides {a.stride()}"
             if isinstance(a, torch.Tensor) else repr(a) for a in args]
    return ", ".join(shown + [f"{k}={v!r}" for k, v in kwargs.items()])


def check(op: str, backend: str, seed: int, device: str = "cpu") -> None:
    g = torch.Generator().manual_seed(seed)
    dtypes = dtypes_for(backend, device)
    dtype = dtypes[int(torch.randint(len(dtypes), (), generator=g))]
    args, kwargs = registry.OPS[op].fuzz_inputs(g, dtype, device)
    upcast = tuple(a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)
    ours = outputs_and_gradients(op, backend, args, kwargs, seed)
    same = outputs_and_gradients(op, "torch", args, kwargs, seed)
    truth = outputs_and_gradients(op, "reference", upcast, kwargs, seed)
    case = f"{backend} {op} seed {seed}: {describe(args, kwargs)}"
    for i, (o, s, t) in enumerate(zip(ours, same, truth)):
        assert_close_to_reference(f"{case}: result {i}", o, s, t)


@pytest.mark.parametrize("op, backend", FUZZED)
@CI
@given(seed=SEEDS)
def test_fuzz(op, backend, seed):
    check(op, backend, seed)


@pytest.mark.slow
@pytest.mark.parametrize("op, backend", FUZZED)
@LONG
@given(seed=SEEDS)
def test_fuzz_long(op, backend, seed):
    check(op, backend, seed)


@pytest.mark.gpu
@pytest.mark.parametrize("op, backend", FUZZED)
@GPU
@given(seed=SEEDS)
def test_fuzz_gpu(op, backend, seed):
    check(op, backend, seed, device="cuda")
