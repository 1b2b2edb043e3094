"""tools.rehearsal: the GPU path on a CPU passes the code as it is, and finds autotuners built again at every
call, as the attention variants' were through torch's higher-order op (where each one re-tuned), and a launch
option that a compiled graph drops, as the LayerNorm backward's enable_fp_fusion=False was."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

PLANTED = """
import contextlib, sys
import gpt_kernels.runtime
gpt_kernels.runtime.eager_launches = contextlib.nullcontext  # the variants' launches back through the HOP
from tools import rehearsal
sys.exit(rehearsal.main(["--check", "--ops", "attention"]))
"""

# Every LayerNorm launch given enable_fp_fusion=False, as the backward's was before a276231: Inductor's
# configurations cannot carry it, so the compiled graph runs a kernel with the FMAs contracted.
PLANTED_OPTION = """
import sys
import gpt_kernels.ops.layer_norm.triton as layer_norm
wrap = layer_norm.wrap_triton
class WithOption:
    def __init__(self, kernel):
        self.kernel = wrap(kernel)
    def __getitem__(self, grid):
        launch = self.kernel[grid]
        return lambda *args, **kwargs: launch(*args, **kwargs, enable_fp_fusion=False)
layer_norm.wrap_triton = WithOption
from tools import rehearsal
sys.exit(rehearsal.main(["--check", "--ops", "layer_norm"]))
"""

# The LayerNorm forward as it was before its epsilon became a constexpr: a compiled graph passes the float as
# fp64 (Triton passes fp32), and the rows' arithmetic followed it into double.
PLANTED_FP64 = """
import inspect, sys, tempfile
from pathlib import Path
import gpt_kernels.ops.layer_norm.triton as layer_norm
source = inspect.getsource(layer_norm._layer_norm_fwd_kernel.fn)
assert "EPS: tl.constexpr" in source
folder = tempfile.mkdtemp()
Path(folder, "planted_layer_norm.py").write_text(
    "import triton\\nimport triton.language as tl\\nfrom gpt_kernels.ops.rows import normalize_rows\\n\\n"
    + source.replace("EPS: tl.constexpr", "EPS"))
sys.path.insert(0, folder)
import planted_layer_norm
layer_norm._layer_norm_fwd_kernel = planted_layer_norm._layer_norm_fwd_kernel
from tools import rehearsal
sys.exit(rehearsal.main(["--check", "--ops", "layer_norm"]))
"""


def rehearse(code: str) -> subprocess.CompletedProcess:
    env = {"TRITON_INTERPRET": "0", "PATH": "/usr/bin:/bin"}  # set before gpt_kernels is imported, as main() sets it
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


def test_the_rehearsal_passes_the_code_and_catches_a_kernel_that_retunes_every_call():
    fine = rehearse("import sys; from tools import rehearsal; sys.exit(rehearsal.main(['--check', '--ops', 'attention']))")
    assert fine.returncode == 0 and "rehearsal: no problems" in fine.stdout, fine.stdout[-2000:] + fine.stderr[-2000:]
    assert "attention triton (8, 12, 2048, 64): 35, 0, 0" in fine.stdout  # tuned in the first call only
    planted = rehearse(PLANTED)
    assert planted.returncode == 1, planted.stdout[-2000:] + planted.stderr[-2000:]
    assert "NEW AUTOTUNER: attention triton-paired" in planted.stdout  # built again at every call


@pytest.mark.skipif(not torch.backends.cuda.is_built(),
                    reason="torch.compile for a CUDA target is rehearsed with torch's CUDA build (CI steps 2 and 3)")
def test_the_compiled_rehearsal_passes_the_code_and_catches_a_launch_option_a_compiled_graph_drops():
    fine = rehearse("import sys; from tools import rehearsal; sys.exit(rehearsal.main(['--check', '--ops', 'layer_norm']))")
    assert fine.returncode == 0 and "rehearsal: no problems" in fine.stdout, fine.stdout[-2000:] + fine.stderr[-2000:]
    assert "layer_norm compiled layer_norm_bwd (16384, 768): 8, 0, 0" in fine.stdout  # Inductor's kernels, once
    planted = rehearse(PLANTED_OPTION)
    assert planted.returncode == 1, planted.stdout[-2000:] + planted.stderr[-2000:]
    assert "LAUNCH OPTIONS LOST UNDER COMPILE: layer_norm _layer_norm_fwd_kernel" in planted.stdout


@pytest.mark.skipif(not torch.backends.cuda.is_built(),
                    reason="torch.compile for a CUDA target is rehearsed with torch's CUDA build (CI steps 2 and 3)")
def test_the_compiled_rehearsal_catches_a_float_argument_a_compiled_graph_passes_as_fp64():
    planted = rehearse(PLANTED_FP64)
    assert planted.returncode == 1, planted.stdout[-2000:] + planted.stderr[-2000:]
    assert "FP64 UNDER COMPILE: layer_norm _layer_norm_fwd_kernel gets EPS as fp64" in planted.stdout
