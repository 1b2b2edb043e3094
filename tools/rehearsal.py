"""The GPU path rehearsed on a CPU: `python -m tools.rehearsal [--check] [--json FILE]`.

The Triton kernels are imported as on a GPU (no interpreter) and Triton is told that an H100 is present
(tools.compiled's stand-in driver); nothing is compiled or run: a kernel launch is recorded and returns,
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
  op declares, with TIMING_S left for the timed rounds;
- torch.compile as training runs it: every custom op the Triton backend called above (forward and
  backward) is compiled by Inductor for a CUDA target (fake CUDA tensors; torch told that an H100 is
  present) and its generated code run CALLS times with launches recorded. Each kernel runs under compile
  only configurations its eager launch uses or tunes (the launch options reach the compiled graph), the
  compiled graph tunes in its first call only, and nothing is recompiled after it. This needs torch's CUDA
  build (as the GPU machine has; CI's steps 2 and 3): a CPU-only torch refuses even views of fake CUDA
  tensors, and there the compiled part is reported as not rehearsed.
Not rehearsed: a whole model's compiled backward (autograd's engine needs a CUDA driver for CUDA tensors,
even fake ones); each op's backward is compiled as its own graph instead.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from bench.common import BANDED_WINDOW_IN_QUICK, VARIANTS_AUTOTUNE_IN_QUICK

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
        self.typed: dict[str, dict] = {}  # kernel -> its arguments' types as a compiled graph passes them
        self.compile_errors: dict[str, str | None] = {}  # kernel -> why a compiled graph's copy does not compile

    def compiled(self, name: str, described: tuple, signature: tuple) -> None:
        self.compilations.add((name, *described, signature))

    def snapshot(self) -> tuple[collections.Counter, collections.Counter]:
        return collections.Counter(self.benchmarked), collections.Counter(self.autotuners)


def with_options(configuration: str, jit_fn, launch: dict) -> str:
    """configuration with the launch options besides warps and stages (maxnreg, enable_fp_fusion, ...) that
    differ from Triton's defaults: options a compiled graph may drop."""
    defaults = {"num_ctas": 1, "maxnreg": None}
    names = {p.name for p in jit_fn.params} | {"num_warps", "num_stages", "grid", "warmup"}
    options = {k: v for k, v in launch.items() if k not in names and defaults.get(k, object()) != v}
    return " ".join([configuration, *(f"{k}={v}" for k, v in sorted(options.items()))])


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

    from tools.compiled import StandInDriver, _describe

    jit_run, bench, init = JITFunction.run, Autotuner._bench, Autotuner.__init__

    def launch(self, *args, grid, warmup, **kwargs):
        name = self.fn.__name__
        recorder.launches[name] += 1
        constants, config, _ = _describe(self, args, kwargs)
        recorder.compiled(name, (constants, with_options(config, self, kwargs)), signature(args, kwargs))
        return None

    def benchmark(self, *args, config, **meta):
        name = self.fn.__name__
        recorder.benchmarked[name] += 1
        full = {**dict(zip(self.arg_names, args)), **meta, **config.all_kwargs()}
        constants, described, _ = _describe(self.fn, (), full)
        options = {k: v for k, v in full.items() if k not in self.arg_names}
        recorder.compiled(name, (constants, with_options(described, self.fn, options)), signature(args, meta))
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


# What Inductor reads of the GPU it generates code for: an H100 SXM's properties.
H100 = {"name": "NVIDIA H100 80GB HBM3 (stand-in)", "major": 9, "minor": 0, "multi_processor_count": 132,
        "total_memory": 80 * 2**30, "L2_cache_size": 50 * 2**20, "max_threads_per_multi_processor": 2048,
        "max_threads_per_block": 1024, "regs_per_multiprocessor": 65536, "warp_size": 32,
        "shared_memory_per_block_optin": 232448, "shared_memory_per_multiprocessor": 233472,
        "shared_memory_per_block": 49152, "gcnArchName": "", "is_integrated": False}


class _Launcher:
    """Stands in for a compiled configuration of Inductor's: a launch is counted and returns."""

    def __init__(self, recorder: Recorder, name: str, config):
        self.recorder, self.name, self.config = recorder, name, config
        self.n_regs = self.n_spills = self.shared = 0
        self.store_cubin, self.cache_hash = False, None

    def __call__(self, *args, stream=None, **kwargs):
        self.recorder.launches[self.name] += 1


def compile_error(autotuner, config) -> str | None:
    """Compile one of Inductor's configurations of a kernel for the stand-in H100 (Triton's compiler and
    ptxas, nothing loaded): None, or the error's first line."""
    import logging

    quiet = logging.getLogger("torch._inductor.runtime.triton_heuristics")
    level, quiet.level = quiet.level, logging.CRITICAL  # the failure is reported here, not as a logged source dump
    try:
        autotuner._precompile_config(config)
    except Exception as error:  # a configuration that does not compile is a finding, not a crash
        while error.__cause__ is not None and "CompilationError" in type(error).__name__:
            error = error.__cause__  # Triton's error quotes the source; its cause says what is wrong
        lines = [line.strip() for line in str(error).splitlines() if line.strip(" ^")]
        return f"{type(error).__name__}: {lines[-1][:300] if lines else ''}"
    finally:
        quiet.level = level
    return None


def describe_inductor_config(autotuner, config) -> tuple[str, str]:
    """(constexpr arguments, configuration) of one of Inductor's configurations, as _describe writes an eager
    launch's, so that the two compare."""
    from tools.compiled import _describe

    constants = {str(k): v for k, v in autotuner.triton_meta.get("constants", {}).items()}
    launch = {**constants, **config.all_kwargs()}
    described, configuration, _ = _describe(autotuner.fn, (), launch)
    return described, with_options(configuration, autotuner.fn, config.all_kwargs())


@contextlib.contextmanager
def compiling_for_a_stand_in_h100(recorder: Recorder):
    """torch.compile as on an H100 that runs nothing. torch is told a CUDA H100 is present where Inductor
    asks (device properties, stream, device guard, buffer allocation: fake tensors); Inductor generates its
    code for it; each of its kernels' configurations is recorded instead of compiled (this project's kernels:
    the first one compiled for real too, and their argument types kept), a benchmark of one is counted and
    returns a fixed time, and a launch is counted. Use inside rehearsing() (Triton's driver)."""
    from unittest import mock

    import torch
    import torch._subclasses.fake_tensor as fake_tensor
    from torch._dynamo.device_interface import CudaInterface
    from torch._inductor.runtime import triton_helpers
    from torch._inductor.runtime.triton_heuristics import CachingAutotuner
    from torch.utils import _triton

    properties = type("DeviceProperties", (), H100)()

    def precompile(self, *args, **kwargs):
        if self.launchers:
            return
        name = self.fn.__name__
        recorder.autotuners[name] += 1  # Inductor's autotuner for it, built when its graph is compiled
        for config in self.configs:
            recorder.compiled(name, describe_inductor_config(self, config), ())
        if self.custom_kernel:  # this project's kernel as Inductor types it: compiled for real, once
            recorder.typed[name] = dict(self.triton_meta["signature"])
            if name not in recorder.compile_errors:
                recorder.compile_errors[name] = compile_error(self, self.configs[0])
        self.launchers = [_Launcher(recorder, name, config) for config in self.configs]

    def bench(self, launcher, *args, **kwargs):
        recorder.benchmarked[launcher.name] += 1
        return 1.0

    def empty_strided(size, stride, dtype):
        return torch.empty_strided(size, stride, dtype=dtype, device="cuda")  # fake, under the fake mode

    patches = [
        (CudaInterface, "get_device_properties", staticmethod(lambda device=None: properties)),
        (CudaInterface.Worker, "get_device_properties", staticmethod(lambda device=None: properties)),
        (CudaInterface, "current_device", staticmethod(lambda: 0)),
        (CudaInterface.Worker, "current_device", staticmethod(lambda: 0)),
        (CudaInterface, "is_available", staticmethod(lambda: True)),
        (CudaInterface, "is_bf16_supported", staticmethod(lambda including_emulation=False: True)),
        (CudaInterface, "get_compute_capability", staticmethod(lambda device=None: 90)),
        (CudaInterface, "get_raw_stream", staticmethod(lambda index: 0)),
        (torch.cuda, "get_device_properties", lambda device=None: properties),
        (torch.cuda, "get_device_capability", lambda device=None: (9, 0)),
        (torch.cuda, "current_device", lambda: 0),
        (torch.cuda, "device_count", lambda: 1),
        (torch.cuda, "set_device", lambda device: None),
        (torch.cuda, "_DeviceGuard", lambda index: contextlib.nullcontext()),
        (torch._C, "_cuda_getCurrentRawStream", lambda index: 0),
        (torch._C._dynamo.guards, "_empty_strided_cuda", empty_strided),
        (fake_tensor, "init_gpu_context", lambda device: None),
        (triton_helpers, "set_driver_to_gpu", lambda: None),  # keeps the stand-in driver active
        (CachingAutotuner, "precompile", precompile),
        (CachingAutotuner, "bench", bench),
    ]
    with contextlib.ExitStack() as stack:
        cache = tempfile.mkdtemp(prefix="rehearsal-inductor-")  # Inductor's generated code, removed after
        stack.callback(shutil.rmtree, cache, True)
        for owner, name, value in patches:
            stack.enter_context(mock.patch.object(owner, name, value, create=True))
        stack.enter_context(mock.patch.dict(os.environ, {"TORCHINDUCTOR_CACHE_DIR": cache}))
        stack.enter_context(warnings.catch_warnings())  # Inductor checks its inputs' alignment: fake ones here
        warnings.filterwarnings("ignore", message="Accessing the data pointer of FakeTensor")
        stack.enter_context(torch._inductor.config.patch(
            fx_graph_cache=False, autotune_local_cache=False, compile_threads=1))  # in this process: the stand-ins reach it
        _triton.has_triton.cache_clear()  # asked again, of the stand-in
        torch._dynamo.reset()
        try:
            yield
        finally:
            torch._dynamo.reset()
            _triton.has_triton.cache_clear()


class CustomOpCalls:
    """Records each call of this project's Triton custom ops (gpt_triton::*) made inside it: the op and its
    arguments, to replay under torch.compile."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        calls = self.calls

        class Record(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func.namespace == "gpt_triton":
                    calls.append((func, args, kwargs or {}))
                return func(*args, **(kwargs or {}))

        self.mode = Record()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def compiled_calls(calls: list[tuple]) -> list[tuple[str, tuple, Callable[[], None]]]:
    """(name, first argument's shape, call) triples that run each recorded custom-op call compiled (fullgraph),
    on fake CUDA tensors of the recorded shapes, strides and dtypes. Use inside compiling_for_a_stand_in_h100(),
    with torch._dynamo.reset() before each one's first call: the replays share one code object, so each
    needs a cache of its own (else the next one would count as a recompile)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    pairs = []
    for func, args, kwargs in calls:
        with mode:
            on_cuda = [torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="cuda")
                       if isinstance(a, torch.Tensor) else a for a in args]
        tensors = [i for i, a in enumerate(on_cuda) if isinstance(a, torch.Tensor)]

        def replay(*given, func=func, on_cuda=on_cuda, tensors=tensors, kwargs=kwargs):
            full = list(on_cuda)
            for i, tensor in zip(tensors, given):
                full[i] = tensor
            return func(*full, **kwargs)

        compiled = torch.compile(replay, fullgraph=True, dynamic=False)

        def call(compiled=compiled, on_cuda=on_cuda, tensors=tensors):
            with mode:
                compiled(*(on_cuda[i] for i in tensors))

        shape = next(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        pairs.append((f"compiled {func.name().split('::')[1]}", shape, call))
    return pairs


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
        for window in (BANDED_WINDOW_IN_QUICK, None):  # test_banded_attention's quick run: the band, the dense
            calls.append(("triton-banded" if window else "triton-dense-untuned", lambda window=window: gpt_kernels.attention(
                q, k, v, causal=True, window=window, autotune=False).sum().backward()))
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


def run_calls(recorder: Recorder, op: str, shape: tuple, provider: str, call, tuning: list) -> None:
    """call() CALLS times, a row of tuning for each: what it benchmarked and built that the calls before it
    had not."""
    decoding = provider.endswith("-decode")  # not a benchmark's calls: out of the bench plan
    for n in range(CALLS):
        benchmarked, built = recorder.snapshot()
        planned = set(recorder.compilations) if decoding else None
        call()
        if decoding:
            recorder.compilations = planned
        tuning.append({"op": op, "shape": list(shape), "provider": provider, "call": n + 1,
                       "benchmarked": dict(recorder.benchmarked - benchmarked),
                       "autotuners_built": dict(recorder.autotuners - built)})


def rehearse(shape_set: str = "quick", ops: list[str] | None = None) -> dict:
    """Every op's (or the named ops') Triton paths at its declared shapes, eager and compiled, CALLS times
    each; the counts, the configurations compiled graphs run that eager launches do not, and the bench
    plan."""
    import torch
    import triton

    from gpt_kernels.registry import OPS
    from tools.gpu_check import bench_budgets_s

    budgets = bench_budgets_s()
    recorder = Recorder()
    tuning, plan, unmatched, untrue, compiled_configurations = [], [], [], [], {}
    with rehearsing(recorder):
        for op in OPS.values():
            if ops and op.name not in ops:
                continue
            compilations_before = len(recorder.compilations)
            eager, custom_ops = set(), CustomOpCalls()
            for shape in getattr(op.shapes, shape_set):
                for provider, call in op_calls(op.name, shape, torch.bfloat16):
                    before = set(recorder.compilations)
                    if provider == "triton":  # its custom-op calls, replayed compiled below
                        call = functools.partial(_inside, custom_ops, call)
                    run_calls(recorder, op.name, shape, provider, call, tuning)
                    if provider == "triton":
                        eager |= {c[:3] for c in recorder.compilations - before}
            compilations = len(recorder.compilations) - compilations_before
            plan.append({"step": f"bench/bench_{op.name}.py", "compilations": compilations,
                         "planned_s": round(compilations * COMPILE_S + TIMING_S),
                         "budget_s": budgets[f"bench/bench_{op.name}.py"]})

            if not torch.backends.cuda.is_built():
                continue  # fake CUDA tensors need torch's CUDA build (a CPU build refuses even their views)
            compiled = Recorder()
            distinct = list({(func, repr(_shapes(args)), repr(kwargs)): (func, args, kwargs)
                             for func, args, kwargs in custom_ops.calls}.values())
            with rehearsing(compiled), compiling_for_a_stand_in_h100(compiled):  # an opaque op launches eagerly
                for provider, shape, call in compiled_calls(distinct):
                    torch._dynamo.reset()
                    run_calls(compiled, op.name, shape, provider, call, tuning)
            compiled_configurations[op.name] = len(compiled.compilations)
            untrue += compiled_copy_problems(compiled, op.name)
            ours = {c[0] for c in eager}  # Inductor's own kernels (triton_poi_..., triton_red_...) have no eager twin
            for name, constants, configuration, _ in sorted(compiled.compilations):
                if name in ours and (name, constants, configuration) not in eager:
                    unmatched.append({"op": op.name, "kernel": name, "constants": constants,
                                      "configuration": configuration,
                                      "eager": sorted(c[2] for c in eager if c[0] == name)})
    compiled_plan = compiled_model_plan(ops) if torch.backends.cuda.is_built() else None
    return {"torch": torch.__version__, "triton": triton.__version__, "shapes": shape_set,
            "compiled_rehearsed": torch.backends.cuda.is_built(), "compiled_model_plan": compiled_plan,
            "compile_s": COMPILE_S,
            "timing_s": TIMING_S, "tuning": tuning, "bench_plan": plan,
            "compiled_configurations": compiled_configurations, "compiled_not_eager": unmatched,
            "compiled_copies": untrue}


def compiled_copy_problems(compiled: Recorder, op: str) -> list[dict]:
    """Where the copy of a kernel that a compiled graph runs differs from the eager one: a float argument
    that Inductor passes as fp64 (Triton passes a Python float as fp32: in fp64 the kernel's arithmetic is
    promoted to double, or does not compile where a loop carries an fp32 value), or a copy that does not
    compile."""
    rows = []
    for name, signature in sorted(compiled.typed.items()):
        doubles = [argument for argument, kind in signature.items() if kind == "fp64"]
        error = compiled.compile_errors.get(name)
        if doubles or error:
            rows.append({"op": op, "kernel": name, "fp64_arguments": doubles, "compile_error": error})
    return rows


def _inside(context, call) -> None:
    with context:
        call()


def compiled_model_plan(ops: list[str] | None = None) -> dict:
    """What compiling GPT-2 124M with this project's kernels adds to the throughput stage's "ours + compile":
    Inductor compiles each of a kernel's configurations one after another in one worker (its kernels in
    parallel), so the longest such chain, at COMPILE_S a configuration, comes on top of the compilation that
    "torch + compile" also pays."""
    import torch

    from gpt_kernels.registry import OPS
    from tools.gpu_check import THROUGHPUT_BUDGETS_S

    eager, compiled = Recorder(), Recorder()
    with rehearsing(eager):
        custom_ops = CustomOpCalls()
        for op in OPS.values():
            if ops and op.name not in ops:
                continue
            for shape in op.model_shapes:
                for provider, call in op_calls(op.name, shape, torch.bfloat16):
                    if provider == "triton":
                        with custom_ops:
                            call()
        with rehearsing(compiled), compiling_for_a_stand_in_h100(compiled):
            for _, _, call in compiled_calls(custom_ops.calls):
                torch._dynamo.reset()
                call()
    per_kernel = collections.Counter(c[0] for c in compiled.compilations)
    longest = max(per_kernel.items(), key=lambda item: item[1], default=("-", 0))
    baseline, budget = THROUGHPUT_BUDGETS_S["torch + compile"], THROUGHPUT_BUDGETS_S["ours + compile"]
    return {"configurations": dict(per_kernel), "longest": list(longest),
            "planned_s": round(baseline + longest[1] * COMPILE_S), "budget_s": budget,
            "step": "throughput: ours + compile (GPT-2 124M)"}


def _shapes(args) -> list:
    import torch

    return [(tuple(a.shape), tuple(a.stride()), a.dtype) if isinstance(a, torch.Tensor) else a for a in args]


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
    for row in result["compiled_not_eager"]:
        found.append(f"LAUNCH OPTIONS LOST UNDER COMPILE: {row['op']} {row['kernel']} runs "
                     f"[{row['constants']}] {row['configuration']} compiled, which its eager launches never run "
                     f"(they run or tune {len(row['eager'])}: {', '.join(row['eager'][:4])}"
                     f"{' ...' if len(row['eager']) > 4 else ''})")
    for row in result["compiled_copies"]:
        if row["fp64_arguments"]:
            found.append(f"FP64 UNDER COMPILE: {row['op']} {row['kernel']} gets {', '.join(row['fp64_arguments'])} "
                         f"as fp64 from a compiled graph (fp32 eagerly)")
        if row["compile_error"]:
            found.append(f"DOES NOT COMPILE UNDER COMPILE: {row['op']} {row['kernel']}: {row['compile_error']}")
    plan = result["compiled_model_plan"]
    if plan and plan["planned_s"] > plan["budget_s"]:
        found.append(f"OVER BUDGET: {plan['step']}: {plan['longest'][0]}'s {plan['longest'][1]} configurations x "
                     f"{COMPILE_S} s after the compilation torch + compile pays = {plan['planned_s']} s, "
                     f"budget {plan['budget_s']} s")
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
    if result["compiled_rehearsed"]:
        lines.append("configurations Inductor compiles for the compiled ops (forward and backward graphs):")
        for op, count in result["compiled_configurations"].items():
            lines.append(f"  {op}: {count}")
        plan = result["compiled_model_plan"]
        counts = sorted(plan["configurations"].items(), key=lambda item: (-item[1], item[0]))
        lines.append(f"{plan['step']}: planned {plan['planned_s']} s of {plan['budget_s']} s, the longest chain "
                     f"{plan['longest'][0]}'s; configurations compiled per kernel: "
                     + ", ".join(f"{name} {count}" for name, count in counts))
    else:
        lines.append("torch.compile not rehearsed: this torch is a CPU-only build (CI's steps 2 and 3 rehearse it)")
    lines.append(f"bench stage plan ({COMPILE_S} s a compilation + {TIMING_S} s of timing per file):")
    for step in result["bench_plan"]:
        lines.append(f"  {step['step']}: {step['compilations']} compilations, {step['planned_s']} s of "
                     f"{step['budget_s']} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a rehearsal finds a problem")
    parser.add_argument("--json", type=Path, default=None, help="write the counts here")
    parser.add_argument("--ops", default="", help="only these ops, comma-separated (default: every op)")
    args = parser.parse_args(argv)
    if "gpt_kernels" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("tools.rehearsal must run in its own process (gpt_kernels was imported for the interpreter)")
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
