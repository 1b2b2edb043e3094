"""The one-shot GPU check's logic, on the CPU: a dry run of some stages, and the report's arithmetic."""

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

import gpt_kernels
from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_dry_run_of_the_whole_check(tmp_path, corpus):
    """tools/gpu_check.sh --dry-run, as CI runs it: every stage, the report, and at most 8 files left."""
    out = tmp_path / "out"
    env = os.environ | {"GPT_SHAKESPEARE": str(corpus), "PYTHON": sys.executable, "GPT_COMMIT": "abc123"}
    # the budgets are the GPU's; the interpreter on 2 cores runs the tiny shapes at about their size
    result = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run", str(out), "--budget-scale", "4"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["commit"] == "abc123" and report["dry_run"] is True
    assert set(report["stages"]) == {"install", "tests", "bench", "throughput", "train"}
    assert all(stage["status"] == "ok" for stage in report["stages"].values()), report["stages"]
    assert report["throughput"][0]["tok_per_s"] > 0
    assert report["throughput"][0]["kernels_resolved"].startswith("layer_norm=torch,")  # torch eager's kernels
    # every op's benchmarks, and the banded attention's (its group, "banded attention ...", stays out of auto's choice)
    assert {r["group"].split()[0] for r in report["kernels"]} == set(gpt_kernels.registry.BACKENDS) | {"banded"}
    assert [r["iter"] for r in report["training"]["curve"]] == [0, 10, 20]
    markdown = (out / "report.md").read_text()
    assert "## Training throughput" in markdown and "val loss against wall time" in markdown
    left = sorted(p.name for p in out.iterdir())
    assert len(left) <= 8 and all(p.is_file() for p in out.iterdir()), left
    with tarfile.open(out / gpu_check.ARCHIVE) as archive:
        names = archive.getnames()
    assert {"tests.log", "bench.log", "kernels-attention.json", "throughput.jsonl", "nvidia-smi.txt"} <= set(names), names


def test_a_failing_step_does_not_stop_the_others(tmp_path, monkeypatch):
    def steps(stage, out, dry_run, train_args):
        code = "raise SystemExit(3)" if stage == "tests" else "print('fine')"
        return [gpu_check.Step([sys.executable, "-c", code], 30)]

    monkeypatch.setattr(gpu_check, "stage_steps", steps)
    statuses = {stage: gpu_check.run_stage(stage, tmp_path, True)["status"] for stage in ("install", "tests", "bench")}
    assert statuses == {"install": "ok", "tests": "failed (exit 3)", "bench": "ok"}


def test_a_step_past_its_budget_is_killed_with_its_children_and_keeps_its_output(tmp_path, monkeypatch):
    """Like the throughput stage: each provider its own process and budget; one that hangs is killed
    (its child processes too) and the rows printed before stay in the log and the report."""
    child = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
    monkeypatch.setattr(gpu_check, "stage_steps", lambda *a: [
        gpu_check.Step([sys.executable, "-c", "print('row 1 measured')"], 30),
        gpu_check.Step([sys.executable, "-c", child + "print('row 2 measured', flush=True); time.sleep(60)"], 2),
        gpu_check.Step([sys.executable, "-c", "print('row 3 measured')"], 30)])
    start = time.perf_counter()
    result = gpu_check.run_stage("throughput", tmp_path, True)
    assert time.perf_counter() - start < 20
    assert result["status"] == "1 of 3 steps: timed out after 2 s"
    log = (tmp_path / "throughput.log").read_text()
    assert all(f"row {i} measured" in log for i in (1, 2, 3))
    gpu_check.write_report(tmp_path, {"throughput": result}, "abc123", dry_run=True)
    assert "row 2 measured" in (tmp_path / "report.md").read_text()  # the killed stage's tail


def test_stage_budgets_fit_one_device_call_and_leave_a_retry():
    assert sum(gpu_check.BUDGETS_S.values()) <= gpu_check.CALL_S - gpu_check.AROUND_STAGES_S  # one device call
    # a second call for the largest stage again still fits the session's device time, a fresh start each
    retry = max(gpu_check.BUDGETS_S.values())
    assert 2 * gpu_check.START_S + sum(gpu_check.BUDGETS_S.values()) + retry <= gpu_check.DEVICE_TIME_S
    assert sum(gpu_check.THROUGHPUT_BUDGETS_S.values()) == gpu_check.BUDGETS_S["throughput"]
    # the stage split by the ops' shares: within a second an op of the stage
    assert 0 <= gpu_check.BUDGETS_S["bench"] - sum(gpu_check.bench_budgets_s().values()) < len(gpu_check.bench_budgets_s())
    bench_steps = gpu_check.stage_steps("bench", Path("/tmp"), dry_run=False)
    assert [s.budget_s for s in bench_steps] == list(gpu_check.bench_budgets_s().values())
    # Triton prints each autotuner's choice, and pytest lets it through (-s), into the stage's log
    assert all(s.env.get("TRITON_PRINT_AUTOTUNING") == "1" and "-s" in s.command for s in bench_steps)
    steps = gpu_check.stage_steps("throughput", Path("/tmp"), dry_run=False)
    assert [s.budget_s for s in steps] == list(gpu_check.THROUGHPUT_BUDGETS_S.values())


ROWS = [
    {"group": "layer_norm 16384x768 bfloat16 forward+backward", "provider": p, "median_ms": ms, "GB/s": None,
     "TFLOP/s": None, "peak_memory_MiB": None, "kernel_ms": gpu_ms}
    for p, ms, gpu_ms in [("triton", 0.10, 0.05), ("ext", 0.12, None), ("torch", 0.30, None),
                          ("torch-compiled", 0.20, None)]
] + [
    {"group": "attention B16 H12 T1024 D64 bfloat16 causal forward+backward", "provider": p, "median_ms": ms,
     "GB/s": None, "TFLOP/s": 1.0, "peak_memory_MiB": None}
    for p, ms in [("triton", 2.0), ("torch-flash", 1.5), ("torch-cudnn", 1.8)]
] + [
    {"group": "cross_entropy 8192x50257 bfloat16 forward+backward", "provider": p, "median_ms": ms, "GB/s": None,
     "TFLOP/s": None, "peak_memory_MiB": 10.0}
    for p, ms in [("ext", 3.0), ("torch", 9.0), ("torch-compiled", 4.0)]
]


def test_auto_backends_pick_the_fastest_model_backend():
    assert gpu_check.auto_backends(ROWS, "NVIDIA H100 80GB HBM3") == {
        "NVIDIA H100 80GB HBM3": {"layer_norm": "triton", "attention": "torch", "cross_entropy": "ext"}}


def test_auto_backends_compare_the_gpus_own_time_not_the_host_dispatch():
    """A custom op's wall-clock median carries its Python dispatch, which compiled training never pays."""
    rows = [{"group": "layer_norm 16384x768 bfloat16 forward+backward", "provider": p, "median_ms": ms,
             "kernel_ms": gpu_ms} for p, ms, gpu_ms in [("triton", 0.30, 0.05), ("torch-compiled", 0.20, 0.08)]]
    assert gpu_check.auto_backends(rows, "H100")["H100"]["layer_norm"] == "triton"
    rows[1]["kernel_ms"] = None  # the profiler saw nothing of one provider: the medians decide
    assert gpu_check.auto_backends(rows, "H100")["H100"]["layer_norm"] == "torch"


def test_kernel_tables_give_speed_up_against_the_best_baseline():
    lines = gpu_check.kernel_tables(ROWS)
    triton_ln = next(line for line in lines if line.startswith("| triton | 0.100 | 0.050 |"))  # wall, then GPU ms
    assert triton_ln.endswith("| 2.00x |")  # against torch-compiled's 0.20 ms
    assert any(line.startswith("| torch-flash | 1.500") and line.endswith("| 1.00x |") for line in lines)


def test_unknown_stage_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--dry-run", "--stages", "tests,deploy"])
    assert "unknown stages ['deploy']" in capsys.readouterr().err


def test_sweep_dry_run(tmp_path):
    """tools/sweep.py's logic on the CPU: ceilings, one configuration per kernel, each checked and timed."""
    result = subprocess.run([sys.executable, "-m", "tools.sweep", "--out", str(tmp_path), "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    ops = {row["op"] for row in sweep["rows"]}
    assert ops == {"attention forward", "attention forward, tma", "attention backward, dK/dV kernel",
                   "attention backward, dQ kernel", "attention backward, paired kernel",
                   "layer_norm forward", "layer_norm backward"}
    assert all(row["ok"] and row["ms"] > 0 for row in sweep["rows"]), sweep["rows"]
    assert "| attention forward |" in (tmp_path / "sweep.md").read_text()


def test_without_pytest_xdist_the_gpu_tests_stop_at_once_not_serially(monkeypatch, tmp_path):
    """Serially the GPU tests cannot finish in their budget: on a GPU the check refuses to start them."""
    real_find_spec = gpu_check.importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec", lambda name, *a: None if name == "xdist"
                        else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match="need pytest-xdist .*pip install -e '.\\[bench\\]'"):
        gpu_check.stage_steps("tests", tmp_path, dry_run=False)
    assert "-n" not in gpu_check.stage_steps("tests", tmp_path, dry_run=True)[0].command  # the CPU dry run: serial
