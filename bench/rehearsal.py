"""The GPU path rehearsed on a CPU: `python -m bench.rehearsal [--check] [--json FILE]`.

The Triton kernels are imported as on a GPU (no interpreter) and Triton is told that an H100 is present
(bench.compiled's stand-in driver); nothing is compiled or run: a kernel launch is recorded and returns,
and an autotuner's benchmark of a configuration is counted and returns a fixed time. The real launchers,
pruning rules, autotuners and torch's triton_op / wrap_triton paths run at the GPU check's shapes, with
the torch and Triton installed here (CI: the newest; `.venv-gpu-software`: the lent GPUs' torch 2.11 and
Triton 3.6). It reports, and with --check asserts:
- each autotuner tunes once per key: over three calls of every op's Triton backend (its triton_op), of
  each attention variant and of linear_cross_entropy, configurations are benchmarked in the first call
  only and no autotuner is built after it (torch 2.11's higher-order-op path built one per call); and
  decoding (one query against a growing cache) tunes nothing;
- the benchmark stage's plan: the distinct compilations each quick benchmark file needs (every
  configuration an autotuner benchmarks, every launch), at COMPILE_S seconds each, within the budget its
  op declares, with TIMING_S left for the timed rounds.
Not rehearsed here: the code Inductor generates for a compiled graph (it needs CUDA tensors); that
launches rely on no option a compiled graph drops is tests/test_model_parity.py's check.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

from bench.common import VARIANTS_AUTOTUNE_IN_QUICK

# Triton compiles serially inside an autotuner: 0.8-1.6 s a configuration on the H100 machine (the
# GPU-path review of 2026-12-06), 0.85 s here; the budget is planned with the slow end.
COMPILE_S = 1.6
# What a quick benchmark file spends besides compiling: pytest's start, the timed rounds of every case.
TIMING_S = 15.0
CALLS = 3  # each op called this many times: the autotuners must tune in the first call only


class Recorder:
    """Counts per kernel: launches, configurations benchmarked, autotuners built, distinct compilations."""

    def __init__(self):
        self.benchmarked = collections.Counter()
        self.autotuners = collections.Counter()
        self.launches = collections.Counter()
        self.compilations: set[tuple] = set()

    def compiled(self, name: str, described: tuple, signature: tuple) -> None:
        self.compilations.add((name, *described, signature))

    def snapshot(self) -> tuple[collections.Counter, collections.Counter]:
        return collections.Counter(self.benchmarked), collections.Counter(self.autotuners)


def signature(args: tuple, kwargs: dict) -> tuple:
    """Besides its constexprs and configuration, what a compilation differs by here: its tensors' dtypes."""
    import torch

    return tuple(str(v.dtype) for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor))


@contextlib.contextmanager
def rehearsing(recorder: Recorder):
    """Triton as on an H100 that runs nothing: launches recorded, benchmarks counted."""
    from triton.runtime import driver
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    from bench.compiled import StandInDriver, _describe

    jit_run, bench, init = JITFunction.run, Autotuner._bench, Autotuner.__init__

    def launch(self, *args, grid, warmup, **kwargs):
        name = self.fn.__name__
        recorder.launches[name] += 1
        constants, config, _ = _describe(self, args, kwargs)
        recorder.compiled(name, (constants, config), signature(args, kwargs))
        return None

    def benchmark(self, *args, config, **meta):
        name = self.fn.__name__
        recorder.benchmarked[name] += 1
        full = {**dict(zip(self.arg_names, args)), **meta, **config.all_kwargs()}
        constants, described, _ = _describe(self.fn, (), full)
        recorder.compiled(name, (constants, described), signature(args, meta))
        return [1.0, 1.0, 1.0]

    def build(self, fn, *args, **kwargs):
        recorder.autotuners[fn.__name__] += 1
        init(self, fn, *args, **kwargs)

    previous = driver._active
    driver.set_active(StandInDriver(90))
    JITFunction.run, Autotuner._bench, Autotuner.__init__ = launch, benchmark, build
    try:
        yield
    finally:
        JITFunction.run, Autotuner._bench, Autotuner.__init__ = jit_run, bench, init
        driver._active = previous


def op_calls(op: str, shape: tuple, dtype):
    """(name, call) pairs that run op's Triton paths at shape once each: the op (forward and backward) and,
    for attention, each variant."""
    import torch

    import gpt_kernels
    from gpt_kernels.ops.attention import variants

    def grad(*tensors):
        return [t.requires_grad_() for t in tensors]

    if op in ("layer_norm", "add_layer_norm"):
        m, n = shape
        x, w, b = grad(torch.randn(m, n, dtype=dtype), torch.ones(n, dtype=dtype), torch.zeros(n, dtype=dtype))
        if op == "layer_norm":
            return [("triton", lambda: gpt_kernels.layer_norm(x, w, b, backend="triton").sum().backward())]
        r = grad(torch.randn(m, n, dtype=dtype))[0]
        return [("triton", lambda: sum(t.sum() for t in gpt_kernels.add_layer_norm(x, r, w, b, backend="triton"))
                 .backward())]
    if op == "attention":
        q, k, v = grad(*(torch.randn(shape, dtype=dtype) for _ in range(3)))
        calls = [("triton", lambda: gpt_kernels.attention(q, k, v, causal=True).sum().backward())]
        cache_k, cache_v = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
        one_query = torch.randn(*shape[:2], 1, shape[3], dtype=dtype)

        def decode():  # a generation's steps: one query against a cache that grows past powers of two
            with torch.no_grad():
                for length in (1, 2, 3, 5, 9, 17, 33, 65, 129, 257, 513, 1025):
                    gpt_kernels.attention(one_query, cache_k[:, :, :length], cache_v[:, :, :length])
        calls.append(("triton-decode", decode))
        for variant in variants.VARIANTS:  # as bench_attention.py's quick run calls them
            calls.append((f"triton-{variant}", lambda variant=variant: variants.attention(
                q, k, v, True, variant=variant, autotune=VARIANTS_AUTOTUNE_IN_QUICK).sum().backward()))
        return calls
    if op == "cross_entropy":
        n, v = shape
        logits = grad(torch.randn(n, v, dtype=dtype))[0]
        targets = torch.randint(v, (n,))
        return [("triton", lambda: gpt_kernels.cross_entropy(logits, targets, backend="triton").backward())]
    if op == "linear_cross_entropy":
        n, c, v = shape
        h, weight = grad(torch.randn(n, c, dtype=dtype), torch.randn(v, c, dtype=dtype))
        targets = torch.randint(v, (n,))
        return [("triton", lambda: gpt_kernels.linear_cross_entropy(h, weight, targets, backend="triton").backward())]
    raise ValueError(f"no rehearsal of op {op!r}")


def rehearse(shape_set: str = "quick", ops: list[str] | None = None) -> dict:
    """Every op's (or the named ops') Triton paths at its declared shapes, CALLS times each; the counts and
    the bench plan."""
    import torch
    import triton

    from gpt_kernels.registry import OPS

    recorder = Recorder()
    tuning, plan = [], []
    with rehearsing(recorder):
        for op in OPS.values():
            if ops and op.name not in ops:
                continue
            compilations_before = len(recorder.compilations)
            for shape in getattr(op.shapes, shape_set):
                for provider, call in op_calls(op.name, shape, torch.bfloat16):
                    decoding = provider.endswith("-decode")  # not a benchmark's calls: out of the bench plan
                    for n in range(CALLS):
                        benchmarked, built = recorder.snapshot()
                        planned = set(recorder.compilations) if decoding else None
                        call()
                        if decoding:
                            recorder.compilations = planned
                        new_benchmarks = recorder.benchmarked - benchmarked
                        new_autotuners = recorder.autotuners - built
                        tuning.append({"op": op.name, "shape": list(shape), "provider": provider, "call": n + 1,
                                       "benchmarked": dict(new_benchmarks), "autotuners_built": dict(new_autotuners)})
            compilations = len(recorder.compilations) - compilations_before
            plan.append({"step": f"bench/bench_{op.name}.py", "compilations": compilations,
                         "planned_s": round(compilations * COMPILE_S + TIMING_S), "budget_s": op.bench_budget_s})
    return {"torch": torch.__version__, "triton": triton.__version__, "shapes": shape_set, "compile_s": COMPILE_S,
            "timing_s": TIMING_S, "tuning": tuning, "bench_plan": plan}


def problems(result: dict) -> list[str]:
    found = []
    for row in result["tuning"]:
        where = f"{row['op']} {row['provider']} {row['shape']} call {row['call']}"
        if row["provider"].endswith("-decode") and row["benchmarked"]:
            found.append(f"DECODING TUNED: {where} benchmarked {row['benchmarked']}")
        if row["call"] > 1 and row["benchmarked"]:
            found.append(f"RETUNED: {where} benchmarked {row['benchmarked']} again")
        if row["call"] > 1 and row["autotuners_built"]:
            found.append(f"NEW AUTOTUNER: {where} built {row['autotuners_built']}")
    for step in result["bench_plan"]:
        if step["planned_s"] > step["budget_s"]:
            found.append(f"OVER BUDGET: {step['step']}: {step['compilations']} compilations x {COMPILE_S} s + "
                         f"{TIMING_S} s = {step['planned_s']} s, budget {step['budget_s']} s")
    return found


def report(result: dict) -> str:
    lines = [f"rehearsal with torch {result['torch']}, triton {result['triton']} ({result['shapes']} shapes)",
             "configurations benchmarked per call (first call, then the later ones):"]
    firsts = collections.defaultdict(dict)
    for row in result["tuning"]:
        key = (row["op"], row["provider"], tuple(row["shape"]))
        firsts[key][row["call"]] = sum(row["benchmarked"].values())
    for (op, provider, shape), calls in firsts.items():
        lines.append(f"  {op} {provider} {shape}: {', '.join(str(calls[c]) for c in sorted(calls))}")
    lines.append(f"bench stage plan ({COMPILE_S} s a compilation + {TIMING_S} s of timing per file):")
    for step in result["bench_plan"]:
        lines.append(f"  {step['step']}: {step['compilations']} compilations, {step['planned_s']} s of "
                     f"{step['budget_s']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a rehearsal finds a problem")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument("--ops", default="", help="only these ops, comma-separated (default: every op)")
    args = parser.parse_args(argv)
    if "gpt_kernels" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("bench.rehearsal must run in its own process (gpt_kernels was imported for the interpreter)")
    os.environ["TRITON_INTERPRET"] = "0"  # the GPU's code path, on a machine without one
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="rehearsal-triton-")  # no autotuning cached on disk
    result = rehearse(ops=[op for op in args.ops.split(",") if op])
    found = problems(result)
    print(report(result))
    if args.json:
        args.json.write_text(json.dumps(result | {"problems": found}, indent=1) + "\n")
    for line in found:
        print(line)
    print(f"{len(found)} problems" if found else "rehearsal: no problems")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
