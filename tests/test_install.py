"""What `pip install -e .` builds, and `python -m gpt_kernels`, which says what an install has."""

import os
import subprocess
import sys
from pathlib import Path

import cuda_toolkit  # _build/, on the tests' path (pyproject.toml)
import pytest

import gpt_kernels

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


def test_python_m_gpt_kernels_says_what_this_install_has():
    result = subprocess.run([sys.executable, "-m", "gpt_kernels"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("torch ") and "extension gpt_kernels._C: built" in out
    assert "backends that can run on cpu:" in out and "layer_norm: torch, reference, triton, ext" in out
    all_torch = ",".join(f"{op}=torch" for op in gpt_kernels.registry.OPS)
    assert f"--kernels auto: {all_torch}" in out and "add_layer_norm=torch" in all_torch


@pytest.mark.parametrize("missing", ["not built", "no CUDA kernels"])
def test_a_backend_that_cannot_run_is_refused_before_training(tmp_path, corpus, data_cache, monkeypatch, missing):
    """An extension that is missing, or has no CUDA kernels for a GPU, stops the run before its first step."""
    from gpt import plan, train
    from gpt_kernels import ext

    if missing == "not built":
        monkeypatch.setattr(ext, "LOAD_ERROR", ImportError("No module named 'gpt_kernels._C'"))
        device, message = "cpu", "the C\\+\\+/CUDA extension gpt_kernels._C is not built"
    else:
        monkeypatch.setattr(ext, "HAS_CUDA_KERNELS", False)
        monkeypatch.setattr(plan, "resolve_device_dtype", lambda cfg, rank: (__import__("torch").device("cuda"), None))
        device, message = "cuda", "built without CUDA kernels"
    with pytest.raises(SystemExit, match=f"--kernels 'ext' cannot run on {device}: layer_norm=ext: .*{message}"):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                    "--kernels", "ext", "--max_iters", "1"])
    assert not (tmp_path / "metrics.jsonl").exists()


BESIDE_TRANSFORMERS = """
import importlib.metadata, importlib.util
from pathlib import Path

import gpt, gpt_kernels, transformers
from gpt import export, train

root = Path({root!r})
# transformers 5 needs Hugging Face's `kernels`; whatever `kernels` is here, it is not ours
found = importlib.util.find_spec("kernels")
assert found is None or Path(found.origin).resolve().parent != root / "kernels", found
assert "gpt-kernels" not in importlib.metadata.packages_distributions().get("kernels", []), "we install a `kernels`"
assert root in Path(gpt_kernels.__file__).resolve().parents, gpt_kernels.__file__
work = Path({work!r})
flags = ["--data_cache", str(work / "cache"), *{tiny!r}, "--input", {corpus!r}, "--eval_interval", "1"]
train.main(["--out_dir", str(work / "run"), "--max_iters", "1", *flags])
hf_dir = export.main([str(work / "run"), str(work / "hf")])
model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir)
train.main(["--out_dir", str(work / "finetune"), "--init_from", str(hf_dir), "--max_iters", "1", *flags])
print("ok", type(model).__name__, sorted(p.name for p in (work / "finetune").iterdir()))
"""


@pytest.mark.parametrize("where", ["repository root", "another folder"])
def test_gpt_and_gpt_kernels_work_beside_transformers(tmp_path, corpus, where):
    """transformers 5 installs Hugging Face's `kernels`: our import name must not meet it. One process imports
    gpt, gpt_kernels and transformers, exports a run, loads it with from_pretrained and fine-tunes from it."""
    pytest.importorskip("transformers")
    from tiny import tiny_flags

    script = BESIDE_TRANSFORMERS.format(root=str(ROOT), work=str(tmp_path), tiny=tiny_flags(batch_size=4, eval_iters=1),
                                        corpus=str(corpus))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as a user's shell: only what pip installed
    cwd = ROOT if where == "repository root" else tmp_path
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ok GPT2LMHeadModel" in result.stdout and "best.safetensors" in result.stdout, result.stdout[-2000:]


def test_a_reinstall_reuses_the_compiled_objects():
    """`pip install -e .` keeps the extension's objects in build/objects/ (not in the editable build's temporary
    folder): with unchanged sources, the ninja file of this install has nothing left to compile."""
    import torch

    if not gpt_kernels.cuda_extension_available():
        pytest.skip("the extension is not built in this install")
    objects = ROOT / "build" / "objects" / f"{sys.implementation.cache_tag}-torch{torch.__version__}"
    assert (objects / "build.ninja").is_file(), f"no build.ninja in {objects}: objects are not kept between installs"
    ninja = Path(sys.executable).with_name("ninja")  # PyPI's, as pip's build environment has it (a test extra)
    dry_run = subprocess.run([str(ninja), "-n", "-C", str(objects)], capture_output=True, text=True, timeout=60)
    assert dry_run.returncode == 0 and "no work to do" in dry_run.stdout, dry_run.stdout + dry_run.stderr


def test_triton_on_a_cpu_with_a_torch_too_old_for_its_interpreter_is_refused(monkeypatch):
    """torch before 2.13 rejects interpreted kernels in wrap_triton: the backend says so before any step."""
    from gpt_kernels import runtime

    monkeypatch.setattr(runtime, "torch_version", lambda: (2, 11))
    with pytest.raises(ValueError, match=r"--kernels 'triton' cannot run on cpu: .*interpreter, which needs torch >= 2\.13"):
        gpt_kernels.resolve("triton", __import__("torch").device("cpu"))
    assert runtime.triton_unavailable(__import__("torch").device("cuda")) is None  # the GPU path runs on 2.11
