"""The one place that knows the backends: per op, each backend's name and implementation.

Op keys and backend names are one vocabulary, used alike on the command line (`--kernels`),
in checkpoints, in the benchmarks (a provider is a backend name, or `<backend>-<variant>` for a
variant of it, e.g. `torch-compiled`) and in the reports:

    torch      PyTorch's own op (F.layer_norm, F.scaled_dot_product_attention, F.cross_entropy)
    reference  the pure-PyTorch reference of gpt_kernels/ops/<op>/reference.py (fp32 or better)
    triton     this project's Triton kernel
    ext        this project's C++/CUDA extension (gpt_kernels._C): CPU and CUDA kernels alike

resolve(spec, device) turns a `--kernels` value into concrete implementations once, before a
model is built; the model holds the functions it was given and never re-dispatches.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

AUTO_TABLE = Path(__file__).with_name("auto_backends.json")  # another may be named (--auto_table)
OURS = ("triton", "ext")  # the project's kernels; the other backends are PyTorch's


@dataclass(frozen=True)
class Backend:
    op: str
    name: str
    fn: Callable
    summary: str  # one line: what runs
    # Why this backend cannot run on a device here (None when it can). Asked once, by resolve().
    unavailable: Callable[[torch.device], str | None] = lambda device: None
    # A note worth printing when it is chosen for a device (e.g. the Triton interpreter on a CPU).
    note: Callable[[torch.device], str | None] = lambda device: None


BACKENDS: dict[str, dict[str, Backend]] = {}  # op -> backend name -> Backend, in registration order


@dataclass(frozen=True)
class Shapes:
    """An op's benchmark shapes: all of them on a GPU, a telling few for the one-call GPU check, a
    smoke case on a CPU."""
    gpu: tuple[tuple[int, ...], ...]
    quick: tuple[tuple[int, ...], ...]
    cpu: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Op:
    """What everything that lists ops reads, declared once in the op's package: the benchmarks, the
    GPU check, CI's extension check and the compiled-code view (python -m tools.compiled)."""
    name: str
    shapes: Shapes
    model_shapes: tuple[tuple[int, ...], ...]  # GPT-2 124M's shapes, where the compiled-code checks apply
    # Its share of the one-call GPU check's benchmark stage, in the stage's seconds as the shares stand: the
    # stage is split in proportion (tools/gpu_check.py), so a new op's share takes from every other's, and
    # python -m tools.rehearsal says whether each file's compilations still fit.
    bench_share: int
    # A small case of its inputs on the CPU, (args, kwargs) of gpt_kernels.<op> from a seeded generator: every
    # backend is checked against the reference on it, forward and backward (tests/test_ops.py, test_export.py).
    sample_inputs: Callable[[torch.Generator], tuple[tuple, dict]] | None = None
    # A random case (args, kwargs) in a dtype on a device ("cpu": small enough for the Triton interpreter;
    # "cuda": larger), from a seeded generator: shapes, strides, magnitudes and options drawn from it.
    # tests/test_fuzz.py holds every backend of ours to the tolerance rule on them (gpt_kernels/ops/fuzzing.py).
    fuzz_inputs: Callable[[torch.Generator, torch.dtype, str], tuple[tuple, dict]] | None = None
    cuda_kernels: tuple[str, ...] = ()  # gpt_ext ops that must have CUDA kernels in a CUDA build
    # (shape, dtype) -> None: every Triton launcher of the op at that shape, on CPU tensors (the
    # compiled-code view records the launches instead of running them); None without Triton kernels.
    triton_launches: Callable[[tuple[int, ...], torch.dtype], None] | None = None
    triton_dtypes: tuple[torch.dtype, ...] = ()
    variant_launches: Callable[[tuple[int, ...], torch.dtype], None] | None = None  # measured alternatives (not in --quick)
    memory_bound: bool = False  # its kernels' bulk loads and stores must be 16 bytes wide
    # (shape, element size) -> {what: (bytes, flops)}: the least traffic and work of each pass, for
    # the lower-bound times of the compiled-code view.
    cost: Callable[[tuple[int, ...], int], dict[str, tuple[int, float]]] | None = None
    # Triton kernel -> (what its inner loop steps over, its constexprs -> how many of them one program covers
    # a step): the compiled-code view's instructions per element (python -m tools.compiled).
    loop_elements: dict[str, tuple[str, Callable[[dict], int]]] = field(default_factory=dict)
    # Larger models' shapes where the kernels compile differently (GPT-3 XL's head dim 128 in attention): the
    # compiled-code checks cover them too; GPT-2 124M's plans (tools/rehearsal.py) do not.
    other_model_shapes: tuple[tuple[int, ...], ...] = ()


OPS: dict[str, Op] = {}  # op -> its declaration, in the order of the backends


def declare(op: Op) -> Op:
    OPS[op.name] = op
    return op


def main_output(out):
    """An op's main output, the one its sample inputs' checks compare: add_layer_norm returns (y, x + residual)."""
    return out[0] if isinstance(out, tuple) else out


def register(op: str, name: str, fn: Callable, summary: str, **checks) -> None:
    BACKENDS.setdefault(op, {})[name] = Backend(op, name, fn, summary, **checks)


def backend(op: str, name: str) -> Backend:
    """The registered backend, or a ValueError that lists the choices."""
    if op not in BACKENDS:
        raise ValueError(f"unknown op {op!r}; expected one of {list(BACKENDS)}")
    if name not in BACKENDS[op]:
        raise ValueError(f"unknown backend {name!r} for {op}; expected one of {list(BACKENDS[op])}")
    return BACKENDS[op][name]


def provider_backend(provider: str) -> str:
    """The backend a benchmark provider measures: `torch-compiled` -> `torch`."""
    return provider.split("-", 1)[0]


def spec_help() -> str:
    """The `--kernels` help text: the forms and every op's backend names."""
    ops = "; ".join(f"{op}: {', '.join(names)}" for op, names in BACKENDS.items())
    return ("torch, reference, triton, ext or auto (the fastest measured on this GPU; PyTorch's ops elsewhere) for "
            "every op that has it, then per-op overrides: 'attention=triton' (others torch), "
            f"'triton,cross_entropy=ext'. Backends per op: {ops}")


@dataclass(frozen=True)
class Kernels:
    """The resolved implementation of every op, and how it was chosen."""
    chosen: dict[str, Backend]
    origin: str = ""  # for auto: where the choice came from
    notes: tuple[str, ...] = ()  # worth printing before a run starts

    def __getitem__(self, op: str) -> Callable:
        return self.chosen[op].fn

    def names(self) -> dict[str, str]:
        return {op: b.name for op, b in self.chosen.items()}

    def spec(self) -> str:
        """The canonical `--kernels` value of this choice: 'layer_norm=torch,attention=triton,...'."""
        return ",".join(f"{op}={b.name}" for op, b in self.chosen.items())


def parse_spec(spec: str) -> dict[str, str]:
    """op -> backend name or "auto" for a `--kernels` value; raises ValueError naming the choices.

    A bare name applies to every op that has that backend (the others use torch); op=name entries
    then override single ops: 'triton', 'attention=triton', 'triton,cross_entropy=ext'.
    """
    chosen = {op: "torch" for op in BACKENDS}
    names = {name for backends in BACKENDS.values() for name in backends} | {"auto"}
    for item in (part.strip() for part in spec.split(",")):
        op, sep, name = (part.strip() for part in item.partition("="))
        if not sep:
            if item not in names:
                raise ValueError(f"unknown --kernels value {item!r}; expected {spec_help()}")
            chosen = {op: item if item == "auto" or item in backends else "torch" for op, backends in BACKENDS.items()}
            continue
        if op not in BACKENDS:
            raise ValueError(f"bad --kernels entry {item!r}: expected op=backend with op one of {list(BACKENDS)}")
        if name != "auto":
            backend(op, name)  # raises on an unknown name
        chosen[op] = name
    return chosen


def auto_choice(device: torch.device, table: dict | None = None,
                path: Path | str = AUTO_TABLE) -> tuple[dict[str, str], str]:
    """The fastest measured backend per op for this device's GPU (the table, else the one at path:
    gpt_kernels/auto_backends.json by default), or PyTorch's ops on a CPU or an unmeasured GPU; with a
    line saying where the choice came from."""
    torch_ops = {op: "torch" for op in BACKENDS}
    if device.type != "cuda":
        return torch_ops, "auto: PyTorch's ops on the CPU"
    path = Path(path)
    if table is None:
        if not path.is_file():
            raise ValueError(f"the table of measured backends for --kernels auto, {path}, is not a file")
        table = json.loads(path.read_text())
    source = path.name if path == AUTO_TABLE else str(path)
    gpu = torch.cuda.get_device_name(device)
    for measured_gpu, choice in table.items():
        if measured_gpu in gpu:
            return torch_ops | choice, f"auto: measured on {measured_gpu} ({source})"
    return torch_ops, f"auto: no measurements for {gpu} in {source}; PyTorch's ops"


def resolve(spec: str, device: torch.device | str = "cpu", auto_table: Path | str = AUTO_TABLE) -> Kernels:
    """The implementations a `--kernels` value names, checked to run on device, decided once; `auto`
    reads the measured table at auto_table.

    A backend that cannot run here (the extension not built, or built without CUDA kernels; no
    triton) is a ValueError that says how to fix it, raised before any model is built.
    """
    device = torch.device(device)
    names = parse_spec(spec)
    origin = ""
    if "auto" in names.values():
        measured, origin = auto_choice(device, path=auto_table)
        names = {op: measured[op] if name == "auto" else name for op, name in names.items()}
    chosen = {op: backend(op, name) for op, name in names.items()}
    problems = [f"{op}={b.name}: {why}" for op, b in chosen.items() if (why := b.unavailable(device))]
    if problems:
        raise ValueError(f"--kernels {spec!r} cannot run on {device}: " + "; ".join(problems))
    notes = tuple(dict.fromkeys(note for b in chosen.values() if (note := b.note(device))))
    return Kernels(chosen, origin, notes)
