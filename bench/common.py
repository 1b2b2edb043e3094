"""Shared benchmark plumbing: device choice, timed calls that rotate inputs, throughput in extra_info.

Every timed call synchronises the GPU inside the measured function. Inputs are rotated
through enough copies that the working set exceeds the L2 cache, so no provider is timed on
warm-cache data. On a CPU (CI) each benchmark runs a tiny smoke case once.
"""

from __future__ import annotations

import itertools

import torch

ON_GPU = torch.cuda.is_available()
DEVICE = "cuda" if ON_GPU else "cpu"
L2_BYTES = 64 << 20  # at least the L2 of an H100 (50 MB) / H200
QUICK = False  # pytest's --quick (bench/conftest.py), the one-call GPU check: fewer shapes and rounds
# In the quick run the measured alternatives (variants) launch their default configuration: their own
# autotuning alone would compile 28 configurations more than the one-call budget allows (tools.rehearsal).
VARIANTS_AUTOTUNE_IN_QUICK = False
# The quick run's band: attention's quick shape with a band of 256 keys, forward+backward, our kernels at their
# default configuration (3 compilations; autotuned, the band's own tunings would not fit) beside the dense ones
# and SDPA (FlexAttention's compile time on a GPU is not known yet: not in the quick run).
BANDED_WINDOW_IN_QUICK = 256


def shapes(op: str) -> list:
    """The op's declared benchmark shapes for this run (gpt_kernels/ops/<op>/__init__.py): all on a GPU,
    a telling few in quick mode, a smoke case on a CPU."""
    from gpt_kernels.registry import OPS

    declared = OPS[op].shapes
    return list(declared.cpu if not ON_GPU else declared.quick if QUICK else declared.gpu)


def copies_to_exceed_l2(bytes_per_call: int) -> int:
    return max(1, min(16, -(-2 * L2_BYTES // max(1, bytes_per_call)))) if ON_GPU else 1


def sync() -> None:
    if ON_GPU:
        torch.cuda.synchronize()


def kernel_ms(fn, calls: int = 5) -> float | None:
    """GPU time per call of fn, summed over the kernels (and copies) it launches, from the profiler.
    Beside the wall-clock median it splits a slow call: where the median exceeds it, the GPU sat
    waiting for the host (Python, dispatch and launch overheads), not on the kernels."""
    if not ON_GPU:
        return None
    from torch.profiler import ProfilerActivity, profile

    sync()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        sync()
    total_us = sum(event.self_device_time_total for event in prof.key_averages())
    return total_us / calls / 1e3 if total_us > 0 else None  # None: the profiler saw no GPU activity (no CUPTI)


def run(benchmark, calls: list, *, bytes_moved: int | None = None, flops: float | None = None) -> None:
    """Time next(call)() rounds; write median milliseconds, GB/s or TFLOP/s and, for forward+backward
    groups, the GPU's own milliseconds per call (kernel_ms) into extra_info."""
    cycle = itertools.cycle(calls)

    def step():
        next(cycle)()
        sync()

    for _ in range(3 if ON_GPU else 0):
        step()
    rounds = (20 if QUICK else 50) if ON_GPU else 1
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=5 if ON_GPU else 0)
    stats = getattr(benchmark, "stats", None)
    if stats is None:  # --benchmark-disable: ran once as a smoke test
        return
    median = stats.stats.median
    benchmark.extra_info["median_ms"] = median * 1e3
    if "forward+backward" in (benchmark.group or ""):
        benchmark.extra_info["kernel_ms"] = kernel_ms(lambda: next(cycle)())
    if bytes_moved is not None:
        benchmark.extra_info["GB/s"] = bytes_moved / median / 1e9
    if flops is not None:
        benchmark.extra_info["TFLOP/s"] = flops / median / 1e12


def peak_memory_during(fn) -> int:
    """Peak bytes allocated above the current level while fn runs (GPU only; 0 on the CPU)."""
    if not ON_GPU:
        fn()
        return 0
    sync()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    sync()
    return torch.cuda.max_memory_allocated() - base

