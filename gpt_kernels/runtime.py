"""Where Triton runs: the bottom module that every Triton kernel file imports first.

On a machine without an NVIDIA driver, importing it selects the Triton interpreter
(TRITON_INTERPRET=1), so the kernels run (slowly) on the CPU, whether or not something imported
triton before. It
never initialises CUDA: the test is a file check, so importing stays fork-safe and fast.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import torch


def nvidia_driver_present() -> bool:
    return torch.version.cuda is not None and (
        os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl"))


def interpret_triton_imported_before() -> None:
    """Triton imported before this module (by transformers, say) built its own library of jit functions
    (tl.sum, tl.max, tl.math...) for a GPU, and an interpreted kernel cannot call those: rebuild each
    as an interpreted function, in every triton module that holds it."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    interpreted: dict[int, InterpretedFunction] = {}
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "triton" or name.startswith("triton.")):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, JITFunction):
                setattr(module, attr, interpreted.setdefault(id(value), InterpretedFunction(value.fn)))


if "TRITON_INTERPRET" not in os.environ and not nvidia_driver_present():
    os.environ["TRITON_INTERPRET"] = "1"
    if "triton" in sys.modules:  # triton reads the switch when it defines its jit functions
        interpret_triton_imported_before()

INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
HAS_TRITON = importlib.util.find_spec("triton") is not None
# wrap_triton hands interpreted kernels back to the interpreter from torch 2.13 on; before, it rejects them
INTERPRETER_MIN_TORCH = (2, 13)


def triton_unavailable(device) -> str | None:
    """Why a Triton backend cannot run on device (None when it can); asked once by gpt_kernels.resolve."""
    if not HAS_TRITON:
        return "it needs the triton package, which is not installed: pip install triton"
    if device.type == "cpu" and torch_version() < INTERPRETER_MIN_TORCH:
        return (f"on a CPU it runs Triton's interpreter, which needs torch >= "
                f"{'.'.join(map(str, INTERPRETER_MIN_TORCH))} (this is {torch.__version__})")
    return None if device.type in ("cpu", "cuda") else f"Triton runs on CUDA GPUs (or interpreted on a CPU), not {device.type}"


def torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int(minor)


def triton_note(device) -> str | None:
    if device.type == "cpu":
        return ("backend 'triton' on a CPU runs the Triton interpreter, which is slow (seconds per call at "
                "training sizes): meant for tests; on a CPU train with --kernels torch")
    return None


def unit_last_stride(t):
    """t with contiguous last dimension (the layout every Triton launcher here needs; other strides
    are passed to the kernels): t itself where it has one, a copy otherwise."""
    return t if t.stride(-1) == 1 else t.contiguous()


def eager_launches():
    """A context in which wrap_triton launches kernels directly, as a triton_op's own eager call does. Outside
    one (an autograd.Function, an opaque custom_op, a benchmark loop) wrap_triton goes through torch's
    higher-order op: about 300 us of host time a call, a side-table entry that is never freed, and under
    torch 2.11 a new autotuner built per call, which re-tunes every call."""
    from torch._library.triton import set_wrap_triton_enabled

    return set_wrap_triton_enabled(False)


def needs_triton(*args, **kwargs):
    """Stands in for a Triton backend where triton is not installed."""
    raise RuntimeError("backend 'triton' needs the triton package, which is not installed: pip install triton")


def triton_custom_op(name: str, fake=None):
    """Register a function of Triton launches as an op, for a GPU as torch.library.triton_op:
    torch.compile traces into it and Inductor launches the kernels from its own generated code (no
    opaque call, no per-call Python dispatch in the compiled step; the function doubles as its fake).
    Under the interpreter the kernels cannot run on the fake and functional tensors that tracing
    passes them, so there it is an opaque custom_op with the given fake. The kernels are launched
    through torch.library.wrap_triton in both cases."""
    import torch

    def register(fn):
        if not INTERPRETER:
            return torch.library.triton_op(name, fn, mutates_args=())
        op = torch.library.custom_op(name, fn, mutates_args=())
        op.register_fake(fake)
        return op

    return register
