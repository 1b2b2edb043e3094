"""`python -m tools.compiled`: every kernel of the project compiled for the GPUs it targets, without
one, and what the machine code says about speed, as a report and as checks.

Triton kernels: a stand-in driver tells Triton that a GPU of the target architecture is present,
and every op's declared launches (`triton_launches` in gpt_kernels/ops/<op>/__init__.py) run at its
benchmark and model shapes on CPU tensors. Each kernel launch compiles instead of running, and an
autotuned kernel compiles every configuration of its list, marked as its own pruning rule marks
it: the configurations are the launchers' own, so the report cannot drift from the code.
CUDA kernels: csrc/cuda/*.cu through nvcc for the same architectures.
Each cubin is read with cuobjdump (registers, local memory, static shared memory) and nvdisasm (the
SASS: HGMMA, tcgen05 (UTCHMMA) or HMMA, TMA and cp.async, global access widths, local stores), the tools Triton's
NVIDIA backend ships. Occupancy follows the CUDA occupancy rules of each architecture.

    python -m tools.compiled                  # all dtypes, sm_90 and sm_80, every shape (--targets 100: B200)
    python -m tools.compiled --quick --targets 90,80 --check  # CI: bf16 at the model's shapes, then the checks

The checks (--check exits 1 naming each violation): every configuration a launcher can pick
compiles and fits in shared memory; none of them spills; every tl.dot of a bf16/fp16 kernel is a
warpgroup MMA on sm_90 (HGMMA, no HMMA) and a tcgen05 MMA on sm_100; the kernels of memory-bound ops load and store their
bulk data 16 bytes wide at the model's shapes (a third of their static access bits or more). A
CUDA kernel's occupancy is given at its __launch_bounds__, or at 256 threads where it declares none
(its block size is then the host code's: read it beside the launch). What
the code cannot tell (time, bank conflicts, pipelining) is the GPU run's to measure; the cost
model section gives each pass's lower bound.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpt-kernels" / "compiled"


@dataclass(frozen=True)
class Arch:
    """The per-SM limits of the CUDA occupancy calculator."""
    cc: int
    gpus: str
    smem_per_sm: int
    smem_per_block: int  # the most one block may ask for (opt-in)
    regs_per_sm: int = 65536
    sub_partitions: int = 4  # registers are split among the SM's 4 schedulers
    max_warps: int = 64
    max_blocks: int = 32
    reserved_smem: int = 1024  # per block, for the system
    reg_unit: int = 256  # registers are allocated per warp in these units


ARCHS = {90: Arch(90, "H100/H200", smem_per_sm=233472, smem_per_block=232448),
         80: Arch(80, "A100", smem_per_sm=167936, smem_per_block=166912),
         100: Arch(100, "B200", smem_per_sm=233472, smem_per_block=232448)}
# Lower bounds of the cost model: the best copy bandwidth and bf16 matmul rate seen on each GPU
# (../shared/PERF-ANCHORS.md), not the datasheets'.
CEILINGS = {"H100": (3.0e12, 800e12), "H200": (4.3e12, 798e12)}  # bytes/s, FLOP/s
ROLES = ("launch", "default", "kept", "pruned")  # how a launcher may pick a configuration
# launch: the launcher's own rule; default: the first of an autotune list, what runs with autotuning
# off; kept: offered to the autotuner; pruned: dropped by the kernel's own rule (reported, not checked)


@dataclass
class Compiled:
    op: str
    kernel: str
    dtype: str  # of the op's inputs in this case
    constants: str  # the constexpr arguments
    config: str  # BLOCK_* etc., warps and stages
    role: str
    target: int
    status: str = "ok"  # or the compile error
    regs: int = 0
    local_bytes: int = 0
    stl: int = 0  # local stores in the SASS: spills
    stack: int = 0
    smem: int = 0  # dynamic + static bytes per block
    hgmma: int = 0
    tcgen05: int = 0  # sm_100's MMA (UTCHMMA and kin)
    hmma: int = 0
    tma: int = 0
    cp_async: int = 0
    loads: dict[int, int] = field(default_factory=dict)  # access bits -> static instruction count
    stores: dict[int, int] = field(default_factory=dict)
    has_dot: bool = False
    warps: int = 4  # per block: a Triton configuration's, or a CUDA kernel's launch bounds
    cuda: bool = False  # a kernel of the extension (csrc/cuda), not Triton's
    max_threads: int | None = None  # a CUDA kernel's __launch_bounds__ (None: not declared)
    blocks_per_sm: int = 0
    limit: str = ""
    occupancy: float = 0.0
    memory_bound: bool = False
    variant: bool = False  # a measured alternative (gpt_kernels/ops/<op>/variants.py), checked as the default
    loops: list = field(default_factory=list)  # inner_loops(): per loop, its length and counts
    loop_unit: str = ""  # what one loop step covers (the op's loop_elements): score, logit, row element
    elements_per_thread: float = 0.0  # of them, per thread per step
    shapes: list = field(default_factory=list)  # the cases that compile to this code
    model_shape: bool = False  # one of them is a model shape
    flags: list = field(default_factory=list)

    @property
    def key(self) -> tuple:
        return (self.op, self.kernel, self.dtype, self.constants, self.config, self.target)


# ----------------------------------------------------------------------------- reading the machine code

def tool(name: str) -> str:
    """cuobjdump or nvdisasm: Triton's NVIDIA backend ships them; else the CUDA toolkit's."""
    import triton

    shipped = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    found = str(shipped) if shipped.exists() else shutil.which(name) or f"/usr/local/cuda/bin/{name}"
    if not Path(found).exists():
        raise SystemExit(f"tools.compiled: {name} not found (looked in {shipped.parent}, on PATH and /usr/local/cuda)")
    return found


INSTRUCTION = re.compile(r"\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")


def access_bits(mnemonic: str) -> int:
    parts = set(mnemonic.split(".")[1:])
    for bits, names in ((128, {"128"}), (64, {"64"}), (16, {"U16", "S16"}), (8, {"U8", "S8"})):
        if parts & names:
            return bits
    return 32


def sass_facts(sass: str) -> dict:
    """Static instruction counts of one function's SASS."""
    ops = Counter(m.group(1) for m in INSTRUCTION.finditer(sass))
    facts = dict(hgmma=0, tcgen05=0, hmma=0, tma=0, cp_async=0, stl=0, loads=Counter(), stores=Counter())
    for op, count in ops.items():
        base = op.split(".")[0]
        if base == "HGMMA":
            facts["hgmma"] += count
        elif base in ("UTCHMMA", "UTCQMMA", "UTCIMMA", "UTCOMMA"):  # Blackwell's tcgen05 MMA
            facts["tcgen05"] += count
        elif base == "HMMA":
            facts["hmma"] += count
        elif base in ("UTMALDG", "UTMASTG", "UBLKCP"):
            facts["tma"] += count
        elif base == "LDGSTS":
            facts["cp_async"] += count
        elif base == "STL":
            facts["stl"] += count
        elif base == "LDG":
            facts["loads"][access_bits(op)] += count
        elif base == "STG":
            facts["stores"][access_bits(op)] += count
    facts["loads"], facts["stores"] = dict(facts["loads"]), dict(facts["stores"])
    facts["loops"] = inner_loops(sass)
    return facts


# nvdisasm -c: labels ".L_x_1:" and instructions "/*0800*/   @!P2 BRA `(.L_x_1) ;"
SASS_LINE = re.compile(r"^(\.L_x_\d+):|^\s*/\*([0-9a-f]+)\*/\s+(@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)"
                       r"([^;]*);", re.MULTILINE)
BRANCH_TARGET = re.compile(r"`\((\.L_x_\d+)\)")
# What a loop's count reports beside its length, by mnemonic (an instruction counts where its mnemonic is
# the name or starts with it and a dot): BAR.SYNC and BAR.RED are a block's barriers, which a block-wide
# reduction costs beside its shuffles; LDG, LDGSTS (cp.async) and UTMALDG (TMA) are the load paths.
LOOP_COUNTS = ("BAR", "SHFL", "MUFU.EX2", "HGMMA", "FSEL", "ISETP", "FMUL", "FFMA", "LDG", "LDGSTS", "UTMALDG")


def inner_loops(sass: str) -> list[dict]:
    """The function's loops, in address order: each backward branch closes one (left out: a branch to itself,
    a short wait on an mbarrier, and the retry stubs placed after the function's last EXIT, which jump back
    to a wait). Per loop its length in instructions (one predicated on !PT never executes and is not
    counted) and how many of each of LOOP_COUNTS it holds."""
    labels, instructions, pending = {}, [], []
    for match in SASS_LINE.finditer(sass):
        if match.group(1):
            pending.append(match.group(1))
            continue
        address = int(match.group(2), 16)
        labels.update(dict.fromkeys(pending, address))
        pending = []
        instructions.append((address, (match.group(3) or "").strip(), match.group(4), match.group(5)))
    last_exit = max((a for a, _, m, _ in instructions if m == "EXIT"), default=None)
    loops = []
    for address, _, mnemonic, operands in instructions:
        target = BRANCH_TARGET.search(operands) if mnemonic == "BRA" else None
        if not target or labels.get(target.group(1), address + 1) > address:
            continue
        if last_exit is not None and address > last_exit:
            continue
        names = [m for a, predicate, m, _ in instructions
                 if labels[target.group(1)] <= a <= address and predicate != "@!PT"]
        if len(names) <= 2 or (len(names) < 12 and any(m.startswith("SYNCS") for m in names)):
            continue
        loops.append({"instructions": len(names)} | {
            name: sum(1 for m in names if m == name or m.startswith(name + ".")) for name in LOOP_COUNTS})
    return loops


RESOURCES = re.compile(r"Function (\S+):\s*\n\s*REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)")
# cuobjdump -elf: a function's attributes; its launch bounds are EIATTR_MAX_THREADS (x, y, z)
MAX_THREADS = re.compile(r"^\.nv\.info\.(\S+)$"
                         r"|EIATTR_MAX_THREADS\n\s*Format:.*\n\s*Value:\s*(0x[0-9a-f]+) (0x[0-9a-f]+) (0x[0-9a-f]+)",
                         re.MULTILINE)


def launch_bounds(elf: str) -> dict[str, int]:
    """function name -> the most threads a block may have (its __launch_bounds__), where declared."""
    bounds, function = {}, None
    for match in MAX_THREADS.finditer(elf):
        if match.group(1):
            function = match.group(1)
        elif function:
            bounds[function] = math.prod(int(v, 16) for v in match.groups()[1:])
    return bounds


def read_cubin(cubin: bytes) -> dict[str, dict]:
    """function name -> registers, stack, static shared and local bytes, and its SASS facts;
    cached by the cubin's hash, so a rerun reads nothing twice."""
    digest = hashlib.sha256(cubin).hexdigest()
    cached = CACHE / f"{digest}-v4.json"  # v4: with the inner loops (retry stubs left out)
    if cached.exists():
        return json.loads(cached.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage = subprocess.run([tool("cuobjdump"), "-res-usage", str(path)], capture_output=True, text=True,
                               check=True).stdout
        sass = subprocess.run([tool("nvdisasm"), "-c", str(path)], capture_output=True, text=True, check=True).stdout
        bounds = launch_bounds(subprocess.run([tool("cuobjdump"), "-elf", str(path)], capture_output=True, text=True,
                                              check=True).stdout)
    sections = re.split(r"\n\s*\.text\.(\S+?):\s*\n", "\n" + sass)
    text_of = {sections[i]: sections[i + 1] for i in range(1, len(sections) - 1, 2)}
    functions = {}
    for name, regs, stack, shared, local in RESOURCES.findall(usage):
        facts = sass_facts(text_of.get(name, ""))
        functions[name] = dict(regs=int(regs), stack=int(stack), static_smem=int(shared), local_bytes=int(local),
                               max_threads=bounds.get(name), **facts)
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(functions))
    return functions


def occupancy(arch: Arch, regs: int, smem: int, warps: int) -> tuple[int, float, str]:
    """(blocks per SM, theoretical occupancy, the limiting resource(s))."""
    regs_per_warp = math.ceil(max(regs, 1) * 32 / arch.reg_unit) * arch.reg_unit
    warps_by_regs = arch.sub_partitions * ((arch.regs_per_sm // arch.sub_partitions) // regs_per_warp)
    limits = {"warps": arch.max_warps // warps, "blocks": arch.max_blocks, "regs": warps_by_regs // warps,
              "smem": arch.smem_per_sm // (math.ceil(smem / 128) * 128 + arch.reserved_smem)}
    blocks = min(limits.values())
    return blocks, blocks * warps / arch.max_warps, "+".join(k for k, v in limits.items() if v == blocks)


def fill_in(record: Compiled, facts: dict, dynamic_smem: int) -> None:
    record.regs, record.local_bytes, record.stl = facts["regs"], facts["local_bytes"], facts["stl"]
    record.stack, record.smem = facts["stack"], dynamic_smem + facts["static_smem"]
    for name in ("hgmma", "tcgen05", "hmma", "tma", "cp_async"):
        setattr(record, name, facts.get(name, 0))  # analyses cached before tcgen05 was counted: sm_90/sm_80, none
    record.loops = facts["loops"]
    record.loads = {int(k): v for k, v in facts["loads"].items()}
    record.stores = {int(k): v for k, v in facts["stores"].items()}
    record.blocks_per_sm, record.occupancy, record.limit = occupancy(ARCHS[record.target], record.regs, record.smem,
                                                                     record.warps)


# ----------------------------------------------------------------------------- Triton: recording launches

class StandInDriver:
    """What Triton (and a launcher) asks of the active driver to compile a launch, for a GPU that is not there."""

    def __init__(self, cc: int):
        self.cc = cc
        self.utils = self  # launchers ask utils.get_device_properties (the attention pruning's limit)

    def get_device_properties(self, device):
        return {"max_shared_mem": ARCHS[self.cc].smem_per_block, "multiprocessor_count": 132}

    def get_current_device(self):
        return self.cc  # one kernel cache per target

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget

        return GPUTarget("cuda", self.cc, 32)

    def get_active_torch_device(self):
        import torch

        return torch.device("cpu")


_ROLE = contextvars.ContextVar("role", default="launch")


def _describe(jit_fn, args, kwargs) -> tuple[str, str, int]:
    """(constexpr arguments, configuration, warps) of a launch."""
    names = [p.name for p in jit_fn.params]
    bound = dict(zip(names, args)) | {k: v for k, v in kwargs.items() if k in names}
    constexprs = {p.name: bound.get(p.name) for p in jit_fn.params if p.is_constexpr}
    tiles = {k: v for k, v in constexprs.items() if k.startswith("BLOCK")}
    other = {k: (int(v) if isinstance(v, bool) else v) for k, v in constexprs.items() if k not in tiles}
    warps, stages = kwargs.get("num_warps", 4), kwargs.get("num_stages", 3)
    config = " ".join(f"{k}={v}" for k, v in tiles.items()) + f" w{warps} s{stages}"
    return " ".join(f"{k}={v}" for k, v in other.items()), config.strip(), warps


def record_launches(launch: Callable[[], None], cc: int, op: str, dtype: str, skip_pruned: bool) -> list[Compiled]:
    """Run launch() with every Triton kernel launch compiled for compute capability cc instead of run."""
    from triton.runtime import driver
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.jit import JITFunction

    records: list[Compiled] = []
    jit_run, autotuner_run = JITFunction.run, Autotuner.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        constants, config, warps = _describe(self, args, kwargs)
        record = Compiled(op, self.fn.__name__, dtype, constants, config, _ROLE.get(), cc, warps=warps)
        records.append(record)
        try:
            kernel = jit_run(self, *args, grid=grid, warmup=True, **kwargs)
        except Exception as error:  # a configuration that does not compile is a finding, not a crash
            record.status = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            return None
        functions = read_cubin(kernel.asm["cubin"])
        fill_in(record, functions[kernel.name if kernel.name in functions else next(iter(functions))],
                kernel.metadata.shared)
        record.has_dot = "tt.dot" in kernel.asm["ttir"]
        per_step = loop_elements().get(self.fn.__name__)
        if per_step and record.loops:
            launch_args = dict(zip((p.name for p in self.params), args)) | kwargs
            record.loop_unit, record.elements_per_thread = per_step[0], per_step[1](launch_args) / (32 * warps)
        return kernel

    # torch's wrap_triton hands Triton a new autotuner holding only the configurations the kernel's
    # pruning keeps; the full list (the pruned ones reported too) is the module-level original's.
    originals = {id(value.fn): value for name, module in list(sys.modules.items())
                 if name.startswith("gpt_kernels.") and module is not None
                 for value in vars(module).values() if isinstance(value, Autotuner)}

    def every_config(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        kept = self.prune_configs(kwargs)
        original = originals.get(id(self.fn), self)
        if any(config not in original.configs for config in self.configs):  # a configuration given to the launcher
            original, kept = self, []
        for config in original.configs:
            role = ("default" if config is kept[0] else "kept") if config in kept else "pruned" if kept else "launch"
            if role == "pruned" and skip_pruned:
                continue
            token = _ROLE.set(role)
            try:
                self.fn.run(*args, **{**kwargs, **config.all_kwargs()})
            finally:
                _ROLE.reset(token)
        self.nargs = None

    previous = driver._active  # None on a machine without a GPU, where asking for the default driver fails
    driver.set_active(StandInDriver(cc))
    JITFunction.run, Autotuner.run = compile_instead, every_config
    try:
        launch()
    finally:
        JITFunction.run, Autotuner.run = jit_run, autotuner_run
        driver._active = previous
    return records


@functools.cache
def loop_elements() -> dict[str, tuple[str, Callable[[dict], int]]]:
    """Every op's loop_elements, by kernel (a kernel shared by ops, as add+LayerNorm shares the backward, once)."""
    from gpt_kernels.registry import OPS

    return {kernel: per_step for op in OPS.values() for kernel, per_step in op.loop_elements.items()}


def triton_records(quick: bool, targets, dtypes, progress=print) -> list[Compiled]:
    """Every op's launches at its shapes, dtypes and targets, one record per distinct compilation."""
    from gpt_kernels.registry import OPS

    merged: dict[tuple, Compiled] = {}
    for op in OPS.values():
        launches = [(op.name, op.triton_launches)] + ([] if quick else [(f"{op.name} (variants)", op.variant_launches)])
        models = op.model_shapes + op.other_model_shapes
        shapes = list(models) if quick else list(dict.fromkeys(models + op.shapes.gpu))
        for label, launch in ((label, launch) for label, launch in launches if launch is not None):
            for cc, dtype, shape in itertools.product(targets, op.triton_dtypes, shapes):
                name = str(dtype).removeprefix("torch.")
                if name not in dtypes:
                    continue
                started = time.time()
                found = record_launches(functools.partial(launch, shape, dtype), cc, label, name, quick)
                for record in found:
                    kept = merged.setdefault(record.key, record)
                    kept.shapes.append(list(shape))
                    kept.model_shape |= shape in models
                    kept.memory_bound = op.memory_bound
                    kept.variant = launch is op.variant_launches
                progress(f"  {label} {name} {shape} sm_{cc}: {len(found)} launches in {time.time() - started:.0f} s")
    return list(merged.values())


# ----------------------------------------------------------------------------- CUDA: the extension

def cuda_records(targets, progress=print) -> list[Compiled]:
    """csrc/cuda/*.cu compiled to cubins by nvcc as setup.py builds them; one record per kernel
    instantiation, its occupancy at its largest block (its __launch_bounds__; 256 threads where it
    declares none)."""
    import torch
    import torch.utils.cpp_extension as cpp

    if torch.version.cuda is None:
        progress("  the extension's CUDA kernels need a CUDA build of torch (its c10/cuda headers): not compiled")
        return []
    sys.path.insert(0, str(ROOT / "_build"))
    from cuda_toolkit import find_cuda_toolkit

    home, _ = find_cuda_toolkit()
    if home is None:
        progress("  no CUDA toolkit: the extension's kernels are not compiled")
        return []
    includes = [f"-I{p}" for p in (*cpp.include_paths(), str(ROOT / "csrc"))]
    records = []
    for source in sorted((ROOT / "csrc" / "cuda").glob("*.cu")):
        for cc in targets:
            started = time.time()
            found = compile_cuda(source, cc, f"{home}/bin/nvcc", ["-DTORCH_EXTENSION_NAME=_C", *includes])
            records += found
            progress(f"  {source.name} sm_{cc}: {len(found)} kernels in {time.time() - started:.0f} s")
    return records


def compile_cuda(source: Path, cc: int, nvcc: str, flags: list[str]) -> list[Compiled]:
    """One .cu file's kernels for sm_<cc>, with setup.py's optimisation flags."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "out.cubin"
        done = subprocess.run([nvcc, "-cubin", f"-arch=sm_{cc}", "-O3", "--use_fast_math", "-std=c++20", *flags,
                               str(source), "-o", str(cubin)], capture_output=True, text=True)
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
            return [Compiled(source.stem, source.name, "-", "", "", "launch", cc,
                             status=f"nvcc failed: {errors[0].strip()[:200]}")]
        functions = read_cubin(cubin.read_bytes())
    records = []
    for name, facts in functions.items():
        bound = facts.get("max_threads")
        record = Compiled(source.stem, demangle(name), "-", "",
                          f"{bound} threads" if bound else "no launch bounds: at 256 threads",
                          "launch", cc, warps=-(-bound // 32) if bound else 8, max_threads=bound, cuda=True)
        fill_in(record, facts, 0)
        records.append(record)
    return records


def demangle(name: str) -> str:
    filt = shutil.which("c++filt")
    if not filt:
        return name
    return subprocess.run([filt, name], capture_output=True, text=True).stdout.strip() or name


# ----------------------------------------------------------------------------- judging

def bulk_share_wide(accesses: dict[int, int]) -> float | None:
    """The share of a kernel's static global access bits that are 16-byte accesses; None where it
    moves too little to judge (a few scalars: a loss per row, a target). A streaming kernel's loop
    body is a few vector accesses beside a few per-row scalars, so a third is the bar."""
    bits = sum(width * count for width, count in accesses.items())
    return None if bits <= 256 else 128 * accesses.get(128, 0) / bits


def violations(records: list[Compiled]) -> list[str]:
    """What the checks find, one line each; empty when the compiled code passes."""
    found = []
    for r in records:
        where = f"{r.kernel} [{r.op} {r.dtype} {r.constants} | {r.config} | {r.role} | sm_{r.target}]"
        if r.role == "pruned":
            continue
        if r.status != "ok":
            found.append(f"COMPILE: {where}: {r.status}")
            continue
        if r.smem > ARCHS[r.target].smem_per_block:
            found.append(f"SMEM: {where}: {r.smem} bytes of shared memory, the limit is {ARCHS[r.target].smem_per_block}")
        if r.stl or r.local_bytes or r.stack:
            found.append(f"SPILL: {where}: {r.stl} local stores, a {r.stack}-byte stack frame")
        if r.has_dot and r.target == 90 and r.dtype in ("bfloat16", "float16") and (r.hmma or not r.hgmma):
            found.append(f"NO-WGMMA: {where}: {r.hgmma} HGMMA, {r.hmma} HMMA")
        if r.has_dot and r.target == 100 and r.dtype in ("bfloat16", "float16") and (r.hmma or not r.tcgen05):
            found.append(f"NO-TCGEN05: {where}: {r.tcgen05} tcgen05 MMA, {r.hmma} HMMA")
        if r.memory_bound and r.model_shape and not r.has_dot:
            for side, accesses in (("loads", r.loads), ("stores", r.stores)):
                share = bulk_share_wide(accesses)
                if share is not None and share < 1 / 3:
                    found.append(f"NARROW: {where}: {share:.0%} of its global {side} are 16 bytes wide ({accesses})")
    return found


def flag(records: list[Compiled]) -> None:
    for r in records:
        judged = Compiled(**{**asdict(r), "role": "kept"})  # flag what the checks would
        r.flags = sorted({line.split(":")[0] for line in violations([judged])})


# ----------------------------------------------------------------------------- the report

def widths(accesses: dict[int, int]) -> str:
    return " ".join(f"{count}x{bits}" for bits, count in sorted(accesses.items(), reverse=True)) or "-"


def cost_lines(dtype_size: int = 2) -> list[str]:
    from gpt_kernels.registry import OPS

    lines = ["| op | shape | pass | MB moved | GFLOP | H100 bound us | H200 bound us |", "|---|---|---|---|---|---|---|"]
    for op in OPS.values():
        if op.cost is None:
            continue
        for shape in dict.fromkeys(op.model_shapes + op.shapes.gpu):
            for what, (moved, flops) in op.cost(shape, dtype_size).items():
                bounds = [max(moved / bw, flops / peak) * 1e6 for bw, peak in CEILINGS.values()]
                lines.append(f"| {op.name} | {'x'.join(map(str, shape))} | {what} | {moved / 1e6:.1f} | {flops / 1e9:.2f} | "
                             f"{bounds[0]:.1f} | {bounds[1]:.1f} |")
    return lines


def report(records: list[Compiled], header: str) -> str:
    def findings(variants: bool) -> str:
        counts = Counter(f for r in records if r.role != "pruned" and r.variant == variants for f in r.flags)
        return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

    summary = findings(False) + (f"; in the variants': {findings(True)}"
                                 if any(r.variant for r in records) else "")
    lines = [f"# Compiled code: {header}", "",
             f"{len(records)} compilations ({sum(r.status == 'ok' for r in records)} ok). Findings in configurations a "
             f"launcher can pick: {summary}.", "",
             "Columns: regs per thread; spill = local bytes / local stores (STL) / stack bytes; smem = shared memory per "
             "block (dynamic + static); MMA = static HGMMA (warpgroup), UTC*MMA (tcgen05) and HMMA (mma.sync) counts; TMA "
             "and cp.async counts; LDG/STG = static count x access bits; blocks/SM and theoretical occupancy with the "
             "limiting resource; role: launch (the launcher's rule), default (autotuning off), kept / pruned (by the "
             "kernel's autotune pruning). Flags as the checks (python -m tools.compiled --check) name them.", "",
             "| op | kernel | dtype; constants | config | role | target | status | regs | spill | smem KB | MMA | TMA / "
             "cp.async | LDG bits | STG bits | blocks/SM (limit) | occupancy | flags | shapes |",
             "|" + "---|" * 18]
    for r in sorted(records, key=lambda r: (r.op, r.kernel, r.target, r.dtype, r.constants, ROLES.index(r.role), r.config)):
        mma = " ".join(f"{name} {n}" for name, n in (("HGMMA", r.hgmma), ("UTC*MMA", r.tcgen05), ("HMMA", r.hmma))
                       if n) or "-"
        shapes = ", ".join("x".join(map(str, s)) for s in r.shapes[:3]) + (" ..." if len(r.shapes) > 3 else "")
        lines.append(f"| {r.op} | {r.kernel} | {r.dtype}; {r.constants} | {r.config} | {r.role} | sm_{r.target} | "
                     f"{r.status if r.status == 'ok' else r.status[:80]} | {r.regs} | {r.local_bytes}/{r.stl}/{r.stack} | "
                     f"{r.smem / 1024:.1f} | {mma} | {r.tma} / {r.cp_async} | {widths(r.loads)} | {widths(r.stores)} | "
                     f"{r.blocks_per_sm} ({r.limit}) | {r.occupancy:.1%} | {' '.join(r.flags)} | {shapes} |")
    lines += ["", "## Inner loops", "",
              "Each loop of a kernel's SASS (a backward branch closes one), in address order: its instructions per warp "
              "per step, and per element (per score, logit or row element a thread covers in a step: the issue cost "
              "an anchor kernel is compared by); block barriers (BAR), shuffles (SHFL), exp2 (MUFU.EX2), warpgroup "
              "MMAs, selects (FSEL) and compares (ISETP) per step, and its loads (LDG, cp.async LDGSTS, TMA "
              "UTMALDG). Configurations a launcher can pick.", "",
              "| op | kernel | constants | config | role | target | loop | instructions | per element | BAR | SHFL | "
              "MUFU.EX2 | HGMMA | FSEL | ISETP | FMUL | FFMA | LDG / LDGSTS / UTMALDG |", "|" + "---|" * 18]
    for r in sorted(records, key=lambda r: (r.op, r.kernel, r.target, r.constants, ROLES.index(r.role), r.config)):
        if r.role == "pruned" or not r.loops:
            continue
        for i, loop in enumerate(r.loops, 1):
            per = f"{loop['instructions'] / r.elements_per_thread:.1f} a {r.loop_unit}" if r.elements_per_thread else "-"
            lines.append(f"| {r.op} | {r.kernel} | {r.constants} | {r.config} | {r.role} | sm_{r.target} | {i} of "
                         f"{len(r.loops)} | {loop['instructions']} | {per} | {loop['BAR']} | {loop['SHFL']} | "
                         f"{loop['MUFU.EX2']} | {loop['HGMMA']} | {loop['FSEL']} | {loop['ISETP']} | {loop['FMUL']} | "
                         f"{loop['FFMA']} | {loop['LDG']} / {loop['LDGSTS']} / {loop['UTMALDG']} |")
    lines += ["", "## Cost model: the least each pass must move and compute, bf16", "",
              "Lower bound = max(bytes / bandwidth, FLOPs / matmul rate) at the best rates seen on each GPU "
              f"({', '.join(f'{g}: {bw / 1e12:.1f} TB/s, {p / 1e12:.0f} TFLOP/s' for g, (bw, p) in CEILINGS.items())}); "
              "a GPU run reads its measured time against it.", "", *cost_lines()]
    return "\n".join(lines) + "\n"


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.compiled", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="bf16, sm_90, the models' shapes (GPT-2 124M's and "
                        "the ops' other_model_shapes), no pruned configurations")
    parser.add_argument("--targets", default=None, help="compute capabilities, comma-separated: 90, 80, 100 (default "
                        "90,80; quick 90)")
    parser.add_argument("--dtypes", default=None, help="default bfloat16,float16,float32 (quick: bfloat16)")
    parser.add_argument("--no-cuda", action="store_true", help="leave out the extension's CUDA kernels")
    parser.add_argument("--out", type=Path, default=None, help="folder for report.md and report.json "
                        "(default bench/results/compiled-<commit>[-quick])")
    parser.add_argument("--check", action="store_true", help="exit 1 when a check finds a violation")
    args = parser.parse_args(argv)
    targets = [int(t) for t in (args.targets or ("90" if args.quick else "90,80")).split(",")]
    unknown = [t for t in targets if t not in ARCHS]
    if unknown:
        parser.error(f"--targets {unknown}: expected compute capabilities among {sorted(ARCHS)}")
    dtypes = (args.dtypes or ("bfloat16" if args.quick else "bfloat16,float16,float32")).split(",")
    if "gpt_kernels" in sys.modules and os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("tools.compiled must run in its own process (gpt_kernels was imported for the interpreter)")
    os.environ["TRITON_INTERPRET"] = "0"  # compile for the GPU, even on a machine without one
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton's default, said aloud

    started = time.time()
    print(f"compiling for {', '.join(f'sm_{t}' for t in targets)}, {', '.join(dtypes)}")
    records = triton_records(args.quick, targets, dtypes)
    if not args.no_cuda:
        records += cuda_records(targets)
    flag(records)
    commit = git_commit()
    out = args.out or ROOT / "bench" / "results" / f"compiled-{commit}{'-quick' if args.quick else ''}"
    out.mkdir(parents=True, exist_ok=True)
    header = (f"the project at {commit}, {'quick: ' if args.quick else ''}{', '.join(dtypes)} for "
              f"{', '.join(f'sm_{t}' for t in targets)}, in {time.time() - started:.0f} s")
    (out / "report.md").write_text(report(records, header))
    (out / "report.json").write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    found = violations(records)
    print(f"{len(records)} compilations in {time.time() - started:.0f} s; report: {out / 'report.md'}")
    for line in found:
        print(line)
    print(f"{len(found)} violations" if found else "checks: no violations")
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
