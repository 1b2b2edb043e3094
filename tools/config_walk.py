"""Follow the trainer's configuration from the command line until the training loop begins:
`python -m tools.config_walk [gpt.train flags]`.

The configuration is the argv list, the TrainConfig made from it and the trainer's Plan. A stop is a
function of the gpt package that receives one of them as an argument (self included); a return is
one that hands one back. Each is counted once, however often it is called. The model's shape
(GPTConfig), which the model's modules read as nanoGPT's do, is listed apart. Traced in a real run
(--max_iters 0, --eval_only true) up to its loop, so the stops are those the given flags take.
"""

from __future__ import annotations

import sys
from pathlib import Path

import gpt
from gpt import config
from gpt.plan import Plan

PACKAGE = str(Path(gpt.__file__).parent)
LOOP = ("run",)  # the trainer's loop: the walk ends where it begins


def kind(value, argv: list[str]) -> str | None:
    """'config' for the run's configuration, 'shape' for a GPTConfig, None for anything else."""
    if value is argv or isinstance(value, (config.TrainConfig, Plan)):
        return "config"
    if isinstance(value, config.GPTConfig):
        return "shape"
    if isinstance(value, tuple):
        kinds = {kind(v, argv) for v in value}
        return "config" if "config" in kinds else "shape" if "shape" in kinds else None
    return None


def walk(argv: list[str]) -> dict[str, list[str]]:
    from gpt import train

    seen = {"stops": [], "returns": [], "shape stops": [], "shape returns": []}
    looping = []

    def tracer(frame, event, arg):
        code = frame.f_code
        if looping or not code.co_filename.startswith(PACKAGE):
            return
        if event == "call" and code.co_filename.endswith("train.py") and code.co_name in LOOP:
            looping.append(True)
            return
        where = f"{Path(code.co_filename).name}:{code.co_qualname}"
        if event == "call":
            names = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
            kinds = {kind(frame.f_locals.get(name), argv) for name in names}
            found = "stops" if "config" in kinds else "shape stops" if "shape" in kinds else None
        else:
            found = {"config": "returns", "shape": "shape returns"}.get(kind(arg, argv)) if event == "return" else None
        if found and where not in seen[found]:
            seen[found].append(where)

    sys.setprofile(tracer)
    try:
        train.main(argv)
    finally:
        sys.setprofile(None)
    return seen


def visits(stops: list[str]) -> dict[str, int]:
    """How often the walk enters each file (consecutive stops in one file are one visit)."""
    files = [stop.split(":")[0] for stop in stops]
    counts: dict[str, int] = {}
    for i, name in enumerate(files):
        if i == 0 or files[i - 1] != name:
            counts[name] = counts.get(name, 0) + 1
    return counts


def main() -> None:
    seen = walk([*sys.argv[1:], "--max_iters", "0", "--eval_only", "true"])
    for i, stop in enumerate(seen["stops"], 1):
        print(f"{i:3} {stop}")
    files = visits(seen["stops"])
    print(f"stops {len(seen['stops'])}, returns {len(seen['returns'])} ({', '.join(seen['returns'])}); "
          f"files {len(files)}: " + ", ".join(f"{name} x{n}" for name, n in files.items()))
    print(f"the model's shape (GPTConfig): read by {len(seen['shape stops'])} functions "
          f"({', '.join(seen['shape stops'])}), made by {', '.join(seen['shape returns']) or 'none'}")


if __name__ == "__main__":
    main()
