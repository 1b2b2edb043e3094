"""What `pip install -e .` builds, and `python -m kernels`, which says what an install has."""

import os
import subprocess
import sys
from pathlib import Path

import cuda_toolkit  # _build/, on the tests' path (pyproject.toml)
import pytest

import kernels

ROOT = Path(__file__).resolve().parents[1]


def make_toolkit(home: Path, complete: bool = True) -> Path:
    (home / "bin").mkdir(parents=True)
    nvcc = home / "bin" / "nvcc"
    nvcc.write_text(f"#!/bin/sh\necho '#$ _HERE_={home}/bin' >&2\n")  # what a real nvcc says in a dry run
    nvcc.chmod(0o755)
    (home / "include").mkdir()
    (home / "include" / "cuda_runtime.h").write_text("")
    if complete:
        (home / "lib64").mkdir()
        (home / "lib64" / "libcudart.so").write_text("")
    return home


def test_the_toolkit_behind_an_nvcc_wrapper_is_found(tmp_path, monkeypatch):
    """The quick start's failure: nvcc on PATH was a wrapper script outside the toolkit."""
    toolkit = make_toolkit(tmp_path / "cuda-13.0")
    wrappers = tmp_path / "wrappers"
    wrappers.mkdir()
    (wrappers / "nvcc").write_text(f'#!/bin/sh\nexec {toolkit}/bin/nvcc "$@"\n')
    (wrappers / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert cuda_toolkit.find_cuda_toolkit(usual=()) == (str(toolkit), [])


def test_a_toolkit_that_cannot_link_is_passed_over_with_the_reason(tmp_path, monkeypatch):
    broken = make_toolkit(tmp_path / "broken", complete=False)
    good = make_toolkit(tmp_path / "cuda-12.8")
    monkeypatch.setenv("CUDA_HOME", str(broken))
    monkeypatch.setenv("PATH", "/nonexistent")
    home, passed_over = cuda_toolkit.find_cuda_toolkit(usual=(str(tmp_path / "cuda-*"),))
    assert home == str(good) and passed_over == [f"{broken} has no libcudart.so (linking needs it)"]
    monkeypatch.setenv("CUDA_HOME", str(broken))
    assert cuda_toolkit.find_cuda_toolkit(usual=())[0] is None


def test_python_m_kernels_says_what_this_install_has():
    result = subprocess.run([sys.executable, "-m", "kernels"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("torch ") and "extension kernels._C: built" in out
    assert "backends that can run on cpu:" in out and "layer_norm: torch, reference, triton, ext" in out
    all_torch = ",".join(f"{op}=torch" for op in kernels.registry.OPS)
    assert f"--kernels auto: {all_torch}" in out and "add_layer_norm=torch" in all_torch


@pytest.mark.parametrize("missing", ["not built", "no CUDA kernels"])
def test_a_backend_that_cannot_run_is_refused_before_training(tmp_path, corpus, data_cache, monkeypatch, missing):
    """An extension that is missing, or has no CUDA kernels for a GPU, stops the run before its first step."""
    from gpt import train
    from kernels import ext

    if missing == "not built":
        monkeypatch.setattr(ext, "LOAD_ERROR", ImportError("No module named 'kernels._C'"))
        device, message = "cpu", "the C\\+\\+/CUDA extension kernels._C is not built"
    else:
        monkeypatch.setattr(ext, "HAS_CUDA_KERNELS", False)
        monkeypatch.setattr(train, "resolve_device_dtype", lambda cfg, world: (__import__("torch").device("cuda"), None))
        device, message = "cuda", "built without CUDA kernels"
    with pytest.raises(SystemExit, match=f"--kernels 'ext' cannot run on {device}: layer_norm=ext: .*{message}"):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                    "--kernels", "ext", "--max_iters", "1"])
    assert not (tmp_path / "metrics.jsonl").exists()


def test_another_kernels_package_first_on_the_path_is_named(tmp_path):
    """PyPI's `kernels` (Hugging Face's kernel hub) has our import name: gpt says so in one line."""
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    env = os.environ | {"PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", "import gpt"], capture_output=True, text=True, timeout=120,
                            env=env, cwd=tmp_path)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: `import kernels` found ") and str(tmp_path / "kernels") in last
    assert "gpt-kernels" in last and "pip uninstall kernels" in last
