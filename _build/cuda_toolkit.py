"""Finding a CUDA toolkit that a CUDA build can use (setup.py; tested in tests/test_install.py).

Candidates in order: $CUDA_HOME (or $CUDA_PATH), the toolkit the nvcc on PATH belongs to (asked
from nvcc itself, so wrapper scripts are seen through), then the usual folders. The first with
bin/nvcc, cuda_runtime.h and libcudart wins.
"""

import glob
import os
import shutil
import subprocess

USUAL = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda")


def nvcc_toolkit() -> str | None:
    """The toolkit the nvcc on PATH belongs to: nvcc names its own bin folder in a dry run."""
    nvcc = shutil.which("nvcc")
    if not nvcc:
        return None
    try:
        dry = subprocess.run([nvcc, "--dryrun", "-v", "-x", "cu", "-c", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (dry.stdout + dry.stderr).splitlines():
        if line.startswith("#$ _HERE_="):
            return os.path.dirname(line.split("=", 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def toolkit_problem(home: str) -> str | None:
    """What a CUDA build would miss in this toolkit folder (None when it has all it needs)."""
    lib_dirs = ["lib64", "lib", os.path.join("targets", "x86_64-linux", "lib"), os.path.join("targets", "sbsa-linux", "lib")]
    include_dirs = ["include", os.path.join("targets", "x86_64-linux", "include"), os.path.join("targets", "sbsa-linux", "include")]
    if not os.path.isfile(os.path.join(home, "bin", "nvcc")):
        return f"{home} has no bin/nvcc"
    if not any(os.path.isfile(os.path.join(home, d, "cuda_runtime.h")) for d in include_dirs):
        return f"{home} has no cuda_runtime.h"
    if not any(glob.glob(os.path.join(home, d, "libcudart.so*")) for d in lib_dirs):
        return f"{home} has no libcudart.so (linking needs it)"
    return None


def find_cuda_toolkit(usual=USUAL) -> tuple[str | None, list[str]]:
    """The first complete toolkit among the candidates, and why each earlier one was passed over."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), nvcc_toolkit()]
    candidates += [path for pattern in usual for path in sorted(glob.glob(pattern), reverse=True)]
    passed_over = []
    for home in dict.fromkeys(c for c in candidates if c):
        if not os.path.isdir(home):
            continue
        problem = toolkit_problem(home)
        if problem is None:
            return home, passed_over
        passed_over.append(problem)
    return None, passed_over
