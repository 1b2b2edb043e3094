"""The README's "Adding an op" holds: a toy op added in a copy of the tree, touching only its own files (its
package under gpt_kernels/ops/ and its benchmark), is registered, tested against its reference forward and
backward, fuzzed, exported-checked, budgeted in the GPU check and benchmarked, by the project's own tests."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TOY_OP = '''
"""toy_double: y = 2 x, the smallest op with a Triton kernel (tests/test_adding_an_op.py's)."""

import torch
import triton
import triton.language as tl

from ... import registry, runtime


@triton.jit
def _double_kernel(X, Y, N, BLOCK: tl.constexpr):
    offsets = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offsets, tl.load(X + offsets, mask=offsets < N) * 2, mask=offsets < N)


def _double(x):
    x = x.contiguous()
    y = torch.empty_like(x)
    _double_kernel[(triton.cdiv(x.numel(), 256),)](x, y, x.numel(), BLOCK=256)
    return y


class _Double(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _double(x)

    @staticmethod
    def backward(ctx, dy):
        return _double(dy)


registry.register("toy_double", "torch", lambda x: x * 2, "x * 2")
registry.register("toy_double", "reference", lambda x: (x.double() * 2).to(x.dtype), "in fp64")
registry.register("toy_double", "triton", _Double.apply, "one Triton kernel", unavailable=runtime.triton_unavailable)
registry.declare(registry.Op(
    "toy_double",
    shapes=registry.Shapes(gpu=((1 << 24,),), quick=((1 << 24,),), cpu=((1000,),)),
    model_shapes=(),
    bench_share=5,
    sample_inputs=lambda g: ((torch.randn(37, generator=g),), {}),
    fuzz_inputs=lambda g, dtype, device: ((torch.randn(int(torch.randint(1, 3000, (), generator=g)), generator=g)
                                           .to(device, dtype),), {}),
))


def toy_double(x, *, backend="triton"):
    return registry.backend("toy_double", backend).fn(x)
'''

TOY_BENCHMARK = '''
import pytest
import torch
from common import DEVICE, run, shapes

import gpt_kernels


@pytest.mark.parametrize("provider", ["triton", "torch"])
@pytest.mark.parametrize("shape", shapes("toy_double"))
def test_toy_double(benchmark, shape, provider):
    x = torch.randn(shape, device=DEVICE)
    torch.testing.assert_close(gpt_kernels.toy_double(x, backend=provider), x * 2)
    run(benchmark, [lambda: gpt_kernels.toy_double(x, backend=provider)], bytes_moved=2 * x.numel() * 4)
'''

CHECKS = ["tests/test_ops.py", "tests/test_fuzz.py::test_every_op_declares_fuzz_inputs_and_has_a_backend_of_ours_fuzzed",
          "tests/test_fuzz.py::test_fuzz[toy_double-triton]",
          "tests/test_export.py::test_every_backend_works_whatever_was_imported_first",
          "tests/test_gpu_check.py::test_stage_budgets_fit_one_device_call_and_leave_a_retry",
          "bench/bench_toy_double.py"]


def test_a_toy_op_added_through_its_own_files_alone_is_tested_benchmarked_and_budgeted(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs the repository's git metadata to copy its tracked files")
    pytest.importorskip("transformers")  # test_export's check imports it
    tree = tmp_path / "tree"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    for built in [*ROOT.glob("gpt_kernels/_C*.so"), ROOT / "gpt_kernels/_build_info.json"]:  # the extension, if built
        if built.exists():
            shutil.copy2(built, tree / "gpt_kernels" / built.name)
    before = {p.relative_to(tree) for p in tree.rglob("*") if p.is_file()}
    (tree / "gpt_kernels/ops/toy_double").mkdir()
    (tree / "gpt_kernels/ops/toy_double/__init__.py").write_text(textwrap.dedent(TOY_OP))
    (tree / "bench/bench_toy_double.py").write_text(textwrap.dedent(TOY_BENCHMARK))
    added = {p.relative_to(tree) for p in tree.rglob("*") if p.is_file()} - before
    assert added == {Path("gpt_kernels/ops/toy_double/__init__.py"), Path("bench/bench_toy_double.py")}

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    where = subprocess.run([sys.executable, "-c", "import gpt_kernels; print(gpt_kernels.__file__, gpt_kernels.toy_double)"],
                           cwd=tree, capture_output=True, text=True, env=env)
    assert where.returncode == 0 and str(tree) in where.stdout, where.stdout + where.stderr
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", *CHECKS], cwd=tree, capture_output=True,
                            text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = [line for line in result.stdout.splitlines() if line.startswith("PASSED")]
    for check in ("toy_double-torch", "toy_double-reference", "toy_double-triton", "test_fuzz[toy_double-triton]",
                  "bench_toy_double.py"):
        assert any(check in line for line in passed), f"no passed check names {check}:\n" + "\n".join(passed)
