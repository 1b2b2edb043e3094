"""Builds the optional C++/CUDA extension `kernels._C` against the torch already installed.

- CUDAExtension (csrc/*.cpp, csrc/cpu/*.cpp, csrc/cuda/*.cu) when that torch is a CUDA build and
  nvcc is found, whether or not a GPU is present; otherwise a CppExtension with the CPU kernels.
- GPT_CUDA_ARCHS: target architectures, e.g. "9.0" or "8.0;9.0" (default "8.0;9.0").
  TORCH_CUDA_ARCH_LIST is honoured when GPT_CUDA_ARCHS is unset.
- GPT_SKIP_EXTENSION=1: install the pure-Python package only.
- MAX_JOBS: parallel compile jobs (torch's ninja builder reads it).
"""

import glob
import os
import shutil
import sys

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def say(message: str) -> None:
    print(f"[gpt-kernels setup] {message}", file=sys.stderr)


def find_nvcc() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    candidates = [os.path.join(CUDA_HOME, "bin", "nvcc")] if CUDA_HOME else []
    candidates.append(shutil.which("nvcc") or "")
    return next((c for c in candidates if c and os.path.exists(c)), None)


def extension_modules():
    if os.environ.get("GPT_SKIP_EXTENSION") == "1":
        say("GPT_SKIP_EXTENSION=1: skipping the C++/CUDA extension")
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        say("torch is not importable in this build environment: skipping the extension "
            "(install torch first, then reinstall this package)")
        return [], {}

    rel = lambda paths: sorted(os.path.relpath(p, ROOT) for p in paths)  # noqa: E731
    cpp_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "*.cpp")) + glob.glob(os.path.join(ROOT, "csrc", "cpu", "*.cpp")))
    cuda_sources = rel(glob.glob(os.path.join(ROOT, "csrc", "cuda", "*.cu")))
    if not cpp_sources:
        say("no C++ sources under csrc/: skipping the extension")
        return [], {}
    cxx_flags = ["-O3"]  # the C++ standard is left to torch's builder (C++20 from torch 2.14 on)
    include_dirs = [os.path.join(ROOT, "csrc")]

    nvcc = find_nvcc() if torch.version.cuda else None
    if torch.version.cuda and nvcc and cuda_sources:
        archs = os.environ.get("GPT_CUDA_ARCHS") or os.environ.get("TORCH_CUDA_ARCH_LIST") or "8.0;9.0"
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # read by torch's builder for -gencode flags
        say(f"building the CUDA extension with {nvcc} for architectures {archs}")
        ext = CUDAExtension(
            "kernels._C", cpp_sources + cuda_sources, include_dirs=include_dirs,
            define_macros=[("GPT_WITH_CUDA", "1")],
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math", "-lineinfo"]})
    else:
        why = ("torch is a CPU build" if not torch.version.cuda else
               "nvcc was not found (set CUDA_HOME)" if not nvcc else "there are no .cu sources")
        say(f"building the CPU-only extension: {why}")
        ext = CppExtension("kernels._C", cpp_sources, include_dirs=include_dirs, extra_compile_args=cxx_flags)
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


ext_modules, cmdclass = extension_modules()
setup(ext_modules=ext_modules, cmdclass=cmdclass)
