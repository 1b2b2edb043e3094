"""bench.rehearsal: the GPU path on a CPU passes the code as it is, and finds autotuners built again at every
call, as the attention variants' were through torch's higher-order op (where each one re-tuned)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLANTED = """
import contextlib, sys
import gpt_kernels.runtime
gpt_kernels.runtime.eager_launches = contextlib.nullcontext  # the variants' launches back through the HOP
from bench import rehearsal
sys.exit(rehearsal.main(["--check", "--ops", "attention"]))
"""


def rehearse(code: str) -> subprocess.CompletedProcess:
    env = {"TRITON_INTERPRET": "0", "PATH": "/usr/bin:/bin"}  # set before gpt_kernels is imported, as main() sets it
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=env)


def test_the_rehearsal_passes_the_code_and_catches_a_kernel_that_retunes_every_call():
    fine = rehearse("import sys; from bench import rehearsal; sys.exit(rehearsal.main(['--check', '--ops', 'attention']))")
    assert fine.returncode == 0 and "rehearsal: no problems" in fine.stdout, fine.stdout[-2000:] + fine.stderr[-2000:]
    assert "attention triton (8, 12, 2048, 64): 37, 0, 0" in fine.stdout  # tuned in the first call only
    planted = rehearse(PLANTED)
    assert planted.returncode == 1, planted.stdout[-2000:] + planted.stderr[-2000:]
    assert "NEW AUTOTUNER: attention triton-paired" in planted.stdout  # built again at every call
