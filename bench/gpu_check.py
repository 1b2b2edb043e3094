"""The one-shot GPU check: install, GPU tests, kernel benchmarks, throughput, a training run, a report.

    python3 bench/gpu_check.py --out "$OUT" --commit <sha>          # on the device, from the repo root
    python3 bench/gpu_check.py --out /tmp/check --dry-run           # the same logic on a CPU, tiny shapes
    python3 bench/gpu_check.py --out "$OUT" --stages bench,report   # rerun just some stages

Each stage runs as a subprocess with its own time budget; a failing or timed-out stage is
recorded and the next one runs. The report (report.md, report.json, charts, auto_backends.json
for kernels/auto_backends.json) is written under --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("install", "tests", "bench", "throughput", "train", "report")
# One device call may run 600 s: the stages together stay well inside it.
BUDGETS_S = {"install": 120, "tests": 150, "bench": 110, "throughput": 80, "train": 90}
# shakespeare-char on a 60 s budget: compiling costs a fresh machine ~40 s of it, and a 3000-iteration
# cosine schedule (nanoGPT's is 5000) decays within the iterations the budget allows.
TRAIN_ARGS = ["--preset", "shakespeare-char", "--compile", "false", "--max_iters", "3000", "--lr_decay_iters", "3000",
              "--eval_interval", "250", "--eval_iters", "40"]
BENCH_FILES = ["bench/bench_layer_norm.py", "bench/bench_attention.py", "bench/bench_cross_entropy.py"]
TARGET_VAL_LOSS = 1.47


def shakespeare_path() -> str:
    for candidate in (os.environ.get("GPT_SHAKESPEARE"), ROOT / "data/tinyshakespeare/input.txt",
                      ROOT.parent / "shared/data/tinyshakespeare/input.txt"):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    return ""  # gpt.train downloads it (needs the internet)


def device_arch() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def stage_commands(stage: str, out: Path, dry_run: bool, train_args: list[str] = TRAIN_ARGS) -> tuple[list[list[str]], dict]:
    """The commands of a stage and extra environment variables."""
    py = sys.executable
    if stage == "install":
        if dry_run:  # the CPU already has the package; check that it imports with its extension
            return [[py, "-c", "import kernels; assert kernels.cuda_extension_available(); print('installed')"]], {}
        return [[py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."]], {
            "GPT_CUDA_ARCHS": device_arch(), "MAX_JOBS": str(os.cpu_count() or 4)}
    if stage == "tests":
        # One fixed attention configuration: autotuning every test shape would take the whole budget;
        # the bench stage autotunes and checks its outputs against the reference before timing.
        return [[py, "-m", "pytest", "-m", "gpu", "-q", f"--junitxml={out}/gpu_tests.xml", "tests"]], {
            "GPT_TRITON_AUTOTUNE": "0"}
    if stage == "bench":
        return [[py, "-m", "pytest", *BENCH_FILES, "-q", "--benchmark-enable", f"--benchmark-json={out}/kernels.json",
                 "--benchmark-columns=median,iqr,rounds"]], {"GPT_BENCH_QUICK": "1"}
    if stage == "throughput":
        extra = ["--tiny", "--warmup", "1", "--steps", "2", "--presets", "shakespeare-char",
                 "--providers", "torch eager"] if dry_run else ["--warmup", "10", "--steps", "20"]
        return [[py, "bench/train_throughput.py", "--json", f"{out}/throughput.json", *extra]], {}
    if stage == "train":
        text = shakespeare_path()
        common = ["--out_dir", f"{out}/train", "--progress", "false", "--target_val_loss", str(TARGET_VAL_LOSS)]
        common += ["--input", text] if text else []
        if dry_run:
            return [[py, "-m", "gpt.train", "--preset", "shakespeare-char-cpu", "--max_iters", "20",
                     "--eval_interval", "10", "--max_seconds", "30", *common]], {}
        return [[py, "-m", "gpt.train", *train_args, "--max_seconds", "60", *common]], {}
    raise ValueError(stage)


def run_stage(stage: str, out: Path, dry_run: bool, budget: float, train_args: list[str] = TRAIN_ARGS) -> dict:
    commands, env = stage_commands(stage, out, dry_run, train_args)
    log_path = out / f"{stage}.log"
    start = time.perf_counter()
    status = "ok"
    with open(log_path, "w") as log:
        for command in commands:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            remaining = budget - (time.perf_counter() - start)
            try:
                result = subprocess.run(command, cwd=ROOT, env=os.environ | env, stdout=log, stderr=subprocess.STDOUT,
                                        timeout=max(1.0, remaining))
            except subprocess.TimeoutExpired:
                status = f"timed out after {budget:.0f} s"
                break
            if result.returncode != 0:
                status = f"failed (exit {result.returncode})"
                break
    seconds = time.perf_counter() - start
    print(f"[gpu_check] {stage}: {status} in {seconds:.0f} s (log: {log_path})", flush=True)
    return {"status": status, "seconds": seconds, "log": log_path.name}


# ----------------------------------------------------------------------------- report

def test_summary(out: Path) -> dict:
    path = out / "gpu_tests.xml"
    if not path.exists():
        return {}
    suite = ElementTree.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failures = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
                if case.find("failure") is not None or case.find("error") is not None]
    total, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
    failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    return {"total": total, "passed": total - skipped - failed, "failed": failed, "skipped": skipped,
            "failing_tests": failures[:50]}


def kernel_rows(out: Path) -> list[dict]:
    path = out / "kernels.json"
    if not path.exists():
        return []
    rows = []
    for bench in json.loads(path.read_text())["benchmarks"]:
        info = bench.get("extra_info", {})
        rows.append({"group": bench["group"], "provider": info.get("provider", bench["name"]),
                     "median_ms": 1e3 * bench["stats"]["median"], "GB/s": info.get("GB/s"),
                     "TFLOP/s": info.get("TFLOP/s"), "peak_memory_MiB": info.get("peak_memory_MiB")})
    return rows


def kernel_tables(rows: list[dict]) -> list[str]:
    lines = []
    for group in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == group]
        baselines = [r["median_ms"] for r in members if r["provider"] not in ("triton", "cuda")]
        best = min(baselines) if baselines else None
        lines += [f"**{group}**", "", "| provider | median ms | GB/s | TFLOP/s | peak MiB | speed-up vs best baseline |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in sorted(members, key=lambda r: r["median_ms"]):
            fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
            ratio = f"{best / r['median_ms']:.2f}x" if best else "-"
            lines.append(f"| {r['provider']} | {r['median_ms']:.3f} | {fmt(r['GB/s'], ',.0f')} | "
                         f"{fmt(r['TFLOP/s'], '.1f')} | {fmt(r['peak_memory_MiB'], ',.0f')} | {ratio} |")
        lines.append("")
    return lines


def auto_backends(rows: list[dict], gpu: str) -> dict:
    """The fastest model backend per op, from the forward+backward benchmarks (largest quick shape)."""
    def fastest(prefix: str, mapping: dict[str, str]) -> str | None:
        groups = [g for g in dict.fromkeys(r["group"] for r in rows) if g.startswith(prefix)
                  and "forward+backward" in g]
        if not groups:
            return None
        members = [r for r in rows if r["group"] == groups[0] and r["provider"] in mapping]
        return mapping[min(members, key=lambda r: r["median_ms"])["provider"]] if members else None

    choice = {
        "ln": fastest("layer_norm", {"triton": "triton", "cuda": "cuda", "torch": "torch", "torch.compile": "torch"}),
        "attn": fastest("attention", {"triton": "triton", "sdpa-flash": "sdpa", "sdpa-efficient": "sdpa",
                                      "sdpa-cudnn": "sdpa"}),
        "loss": fastest("cross_entropy", {"cuda": "cuda", "torch": "torch", "torch.compile": "torch"}),
    }
    choice = {op: backend for op, backend in choice.items() if backend}
    return {gpu: choice} if choice else {}


def training_curve(out: Path) -> list[dict]:
    path = out / "train" / "metrics.jsonl"
    if not path.exists():
        return []
    return [r for r in map(json.loads, path.read_text().splitlines()) if "val_loss" in r]


def charts(out: Path, rows: list[dict], curve: list[dict]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    groups = list(dict.fromkeys(r["group"] for r in rows))
    if groups:
        fig, axes = plt.subplots(len(groups), 1, figsize=(8, 1.6 * len(groups) + 1), squeeze=False)
        for ax, group in zip(axes[:, 0], groups):
            members = [r for r in rows if r["group"] == group]
            metric = "TFLOP/s" if members[0]["TFLOP/s"] else "GB/s" if members[0]["GB/s"] else None
            values = [r[metric] if metric else 1.0 / r["median_ms"] for r in members]
            ax.barh([r["provider"] for r in members], values,
                    color=["tab:orange" if r["provider"] in ("triton", "cuda") else "tab:gray" for r in members])
            ax.set_title(group, fontsize=8)
            ax.set_xlabel(metric or "1 / ms", fontsize=7)
            ax.tick_params(labelsize=7)
        fig.tight_layout()
        fig.savefig(out / "kernels.png", dpi=110)
        plt.close(fig)
        written.append("kernels.png")
    if curve:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["elapsed_s"] for r in curve], [r["val_loss"] for r in curve], "o-", label="val loss")
        ax.axhline(TARGET_VAL_LOSS, color="tab:red", linestyle="--", label=f"target {TARGET_VAL_LOSS}")
        ax.set_xlabel("wall time (s, compilation included)")
        ax.set_ylabel("val loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "val_loss.png", dpi=110)
        plt.close(fig)
        written.append("val_loss.png")
    return written


def write_report(out: Path, stages: dict, commit: str, dry_run: bool) -> dict:
    import torch
    import triton

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run)"
    rows = kernel_rows(out)
    throughput = json.loads((out / "throughput.json").read_text()) if (out / "throughput.json").exists() else []
    curve = training_curve(out)
    report = {
        "gpu": gpu, "commit": commit, "date": datetime.date.today().isoformat(), "dry_run": dry_run,
        "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "stages": stages, "tests": test_summary(out), "kernels": rows,
        "throughput": throughput, "training": {"target_val_loss": TARGET_VAL_LOSS, "curve": curve,
                                               "reached": any(r["val_loss"] <= TARGET_VAL_LOSS for r in curve)},
        "auto_backends": auto_backends(rows, gpu) if rows and not dry_run else {},
    }
    report["charts"] = charts(out, rows, curve)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    if report["auto_backends"]:
        (out / "auto_backends.json").write_text(json.dumps(report["auto_backends"], indent=2))

    lines = [f"# GPU check: {gpu}", "",
             f"commit {commit} | {report['date']} | torch {report['torch']} (CUDA {report['cuda']}) | "
             f"triton {report['triton']} | python {report['python']}" + (" | DRY RUN on a CPU" if dry_run else ""),
             "", "## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
    lines += [f"| {name} | {s['status']} | {s['seconds']:.0f} |" for name, s in stages.items()]
    tests = report["tests"]
    if tests:
        lines += ["", "## GPU tests", "", f"{tests['passed']} passed, {tests['failed']} failed, "
                  f"{tests['skipped']} skipped of {tests['total']}"]
        lines += [f"- FAILED {name}" for name in tests["failing_tests"]]
    if rows:
        lines += ["", "## Kernels", ""] + kernel_tables(rows)
    if throughput:
        sys.path.insert(0, str(ROOT / "bench"))
        from train_throughput import table

        lines += ["", "## Training throughput", "", table(throughput)]
    if curve:
        lines += ["", f"## shakespeare-char: val loss against wall time (target {TARGET_VAL_LOSS})", "",
                  "| iter | seconds | val loss |", "|---:|---:|---:|"]
        lines += [f"| {r['iter']} | {r['elapsed_s']:.1f} | {r['val_loss']:.4f} |" for r in curve]
        lines += ["", f"target reached: {report['training']['reached']}"]
    lines += [""] + [f"![{name}]({name})" for name in report["charts"]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for logs and the report")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    parser.add_argument("--commit", default=os.environ.get("GPT_COMMIT", "unknown"))
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: the same stages with tiny shapes")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every stage's time budget")
    parser.add_argument("--train-args", default=" ".join(TRAIN_ARGS),
                        help="gpt.train flags of the train stage (it always adds --max_seconds 60 and the target)")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STAGES))
    if unknown:
        parser.error(f"unknown stages {unknown}; expected a subset of {list(STAGES)}")
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run on a GPU, or pass --dry-run")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "report.json").read_text())["stages"] if (out / "report.json").exists() else {}
    stages = dict(previous)
    for stage in chosen:
        if stage != "report":
            stages[stage] = run_stage(stage, out, args.dry_run, BUDGETS_S[stage] * args.budget_scale,
                                      args.train_args.split())
    report = write_report(out, stages, args.commit, args.dry_run)
    print((out / "report.md").read_text())
    return 0 if all(s["status"] == "ok" for s in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
