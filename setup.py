"""Builds the optional C++/CUDA extension `gpt_kernels._C` against the torch already installed.

- CUDAExtension (csrc/*.cpp, csrc/cpu/*.cpp, csrc/cuda/*.cu) when that torch is a CUDA build and
  a CUDA toolkit with what linking needs is found, whether or not a GPU is present; otherwise a
  CppExtension with the CPU kernels, and a line saying why.
- The toolkit: $CUDA_HOME (or $CUDA_PATH), then the toolkit the nvcc on PATH belongs to (asked
  from nvcc itself, so wrapper scripts are seen through), then /usr/local/cuda, /usr/local/cuda-*,
  /opt/cuda; it must have bin/nvcc, cuda_runtime.h and libcudart (_build/cuda_toolkit.py).
- GPT_CUDA_ARCHS: target architectures, e.g. "9.0" or "8.0;9.0" (default "8.0;9.0").
  TORCH_CUDA_ARCH_LIST is honoured when GPT_CUDA_ARCHS is unset.
- GPT_SKIP_EXTENSION=1: install the pure-Python package only.
- MAX_JOBS: parallel compile jobs (torch's ninja builder reads it).
- The compiled objects stay in build/objects/ between installs: a reinstall recompiles only what changed.
What was built, and why, is written to gpt_kernels/_build_info.json; `python -m gpt_kernels` prints it.
"""

import glob
import json
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))
BUILD_INFO = os.path.join(ROOT, "gpt_kernels", "_build_info.json")


def say(message: str) -> None:
    print(f"[gpt-kernels setup] {message}", file=sys.stderr)


def record(info: dict) -> None:
    with open(BUILD_INFO, "w") as f:
        json.dump(info, f, indent=2)
    say(info["summary"])


def extension_modules():
    if os.environ.get("GPT_SKIP_EXTENSION") == "1":
        say("GPT_SKIP_EXTENSION=1: skipping the C++/CUDA extension")
        return [], {}
    try:
        import torch
    except ImportError:
        say("torch is not importable in this build environment: skipping the extension "
            "(install torch first, then reinstall this package)")
        return [], {}

    rel = lambda paths: sorted(os.path.relpath(p, ROOT) for p in paths)  # noqa: E731
    cpp_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    cxx_flags = ["-O3"]  # the C++ standard is left to torch's builder (C++20 from torch 2.14 on)
    include_dirs = [os.path.join(ROOT, "csrc")]

    sys.path.insert(0, os.path.join(ROOT, "_build"))  # the in-tree backend's folder (pip puts it there too)
    from cuda_toolkit import find_cuda_toolkit

    toolkit, passed_over = find_cuda_toolkit() if torch.version.cuda else (None, [])
    if toolkit:
        os.environ["CUDA_HOME"] = toolkit  # read by torch.utils.cpp_extension when it is imported, just below
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    info = {"torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_kernels": False, "archs": None,
            "toolkit": toolkit}
    if toolkit and cuda_sources:
        archs = os.environ.get("GPT_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by torch's builder for -gencode flags
        info |= {"cuda_kernels": True, "archs": archs,
                 "summary": f"building the extension with CUDA kernels for architectures {archs} with the toolkit in {toolkit}"}
        ext = CUDAExtension(
            "gpt_kernels._C", cpp_sources + cuda_sources, include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]})
    else:
        why = ("torch is a CPU build" if not torch.version.cuda else
               "no .cu sources" if not cuda_sources else
               "no complete CUDA toolkit was found (" + ("; ".join(passed_over) or "none installed") +
               "); set CUDA_HOME to one")
        info["summary"] = f"building the extension with CPU kernels only: {why}"
        ext = CppExtension("gpt_kernels._C", cpp_sources, include_dirs=include_dirs, extra_compile_args=cxx_flags)
    record(info)

    class BuildReusingObjects(BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)):
        """Objects in build/objects/<python>-torch<version>/ rather than the temporary folder an editable install
        builds in: ninja then recompiles only what changed (sources, headers, flags) on the next install."""

        def finalize_options(self):
            super().finalize_options()
            self.build_temp = os.path.join(ROOT, "build", "objects", f"{sys.implementation.cache_tag}-torch{torch.__version__}")

    return [ext], {"build_ext": BuildReusingObjects}


ext_modules, cmdclass = extension_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
