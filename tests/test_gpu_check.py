"""The one-shot GPU check's logic, on the CPU: a dry run of some stages, and the report's arithmetic."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402


def test_dry_run_of_throughput_and_training(tmp_path, shakespeare, monkeypatch):
    monkeypatch.setenv("GPT_SHAKESPEARE", str(shakespeare))
    result = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path), "--dry-run",
                             "--stages", "throughput,train,report", "--commit", "abc123"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["commit"] == "abc123" and report["dry_run"] is True
    assert set(report["stages"]) == {"throughput", "train"}
    assert all(stage["status"] == "ok" for stage in report["stages"].values())
    assert report["throughput"][0]["tok_per_s"] > 0
    assert [r["iter"] for r in report["training"]["curve"]] == [0, 10, 20]
    markdown = (tmp_path / "report.md").read_text()
    assert "## Training throughput" in markdown and "val loss against wall time" in markdown
    assert (tmp_path / "val_loss.png").stat().st_size > 1000


def test_a_failing_stage_does_not_stop_the_others(tmp_path, monkeypatch):
    def commands(stage, out, dry_run, train_args):
        code = "raise SystemExit(3)" if stage == "tests" else "print('fine')"
        return [[sys.executable, "-c", code]], {}

    monkeypatch.setattr(gpu_check, "stage_commands", commands)
    statuses = {stage: gpu_check.run_stage(stage, tmp_path, True, budget=30)["status"]
                for stage in ("install", "tests", "bench")}
    assert statuses == {"install": "ok", "tests": "failed (exit 3)", "bench": "ok"}


def test_a_stage_past_its_budget_is_stopped(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "stage_commands",
                        lambda *a: ([[sys.executable, "-c", "import time; time.sleep(30)"]], {}))
    result = gpu_check.run_stage("bench", tmp_path, True, budget=1)
    assert result["status"] == "timed out after 1 s" and result["seconds"] < 10


ROWS = [
    {"group": "layer_norm 16384x768 bfloat16 forward+backward", "provider": p, "median_ms": ms, "GB/s": None,
     "TFLOP/s": None, "peak_memory_MiB": None}
    for p, ms in [("triton", 0.10), ("cuda", 0.12), ("torch", 0.30), ("torch.compile", 0.20)]
] + [
    {"group": "attention B16 H12 T1024 D64 bfloat16 causal forward+backward", "provider": p, "median_ms": ms,
     "GB/s": None, "TFLOP/s": 1.0, "peak_memory_MiB": None}
    for p, ms in [("triton", 2.0), ("sdpa-flash", 1.5), ("sdpa-cudnn", 1.8)]
] + [
    {"group": "cross_entropy 8192x50257 bfloat16 forward+backward", "provider": p, "median_ms": ms, "GB/s": None,
     "TFLOP/s": None, "peak_memory_MiB": 10.0}
    for p, ms in [("cuda", 3.0), ("torch", 9.0), ("torch.compile", 4.0)]
]


def test_auto_backends_pick_the_fastest_model_backend():
    assert gpu_check.auto_backends(ROWS, "NVIDIA H100 80GB HBM3") == {
        "NVIDIA H100 80GB HBM3": {"ln": "triton", "attn": "sdpa", "loss": "cuda"}}


def test_kernel_tables_give_speed_up_against_the_best_baseline():
    lines = gpu_check.kernel_tables(ROWS)
    triton_ln = next(line for line in lines if line.startswith("| triton | 0.100"))
    assert triton_ln.endswith("| 2.00x |")  # against torch.compile's 0.20 ms
    assert any(line.startswith("| sdpa-flash | 1.500") and line.endswith("| 1.00x |") for line in lines)


def test_unknown_stage_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["--out", str(tmp_path), "--dry-run", "--stages", "tests,deploy"])
    assert "unknown stages ['deploy']" in capsys.readouterr().err


def test_sweep_dry_run(tmp_path):
    """bench/sweep.py's logic on the CPU: ceilings, one configuration per kernel, each checked and timed."""
    result = subprocess.run([sys.executable, "bench/sweep.py", "--out", str(tmp_path), "--dry-run"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep = json.loads((tmp_path / "sweep.json").read_text())
    ops = {row["op"] for row in sweep["rows"]}
    assert ops == {"attention forward", "attention backward, dK/dV kernel", "attention backward, dQ kernel",
                   "layer_norm forward", "layer_norm backward"}
    assert all(row["ok"] and row["ms"] > 0 for row in sweep["rows"]), sweep["rows"]
    assert "| attention forward |" in (tmp_path / "sweep.md").read_text()
