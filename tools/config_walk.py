"""Follow the trainer's configuration from the command line until the training loop starts:
`python -m tools.config_walk [gpt.train flags]`.

A stop is a function of the gpt package that receives the configuration: the argv list, a
TrainConfig, a GPTConfig or the trainer's Plan, as an argument (self included); a return is such a
function that hands a configuration back. Each is counted once, however often it is called (a
model's blocks are built in a loop). Traced in the running trainer (a real run, with --max_iters 0,
until its loop begins), so every branch the flags take is counted and no other. Prints the stops
in order, then the counts: stops, returns, files, and the visits of each file (a run of consecutive
stops in one file is one visit).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gpt
from gpt import config

PACKAGE = str(Path(gpt.__file__).parent)
LOOP = ("run", "loop")  # the trainer's loop: the walk ends where it begins


def carries_config(value, argv: list[str]) -> bool:
    kinds = (config.TrainConfig, config.GPTConfig) + tuple(
        getattr(sys.modules.get("gpt.train"), name) for name in ("Plan",) if hasattr(sys.modules.get("gpt.train"), name))
    if isinstance(value, kinds) or value is argv:
        return True
    return isinstance(value, tuple) and any(carries_config(v, argv) for v in value)


def walk(argv: list[str]) -> dict:
    from gpt import train

    stops, returns = [], []

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
            if where not in stops and any(carries_config(frame.f_locals.get(name), argv) for name in names):
                stops.append(where)
        elif event == "return" and where not in returns and carries_config(arg, argv):
            returns.append(where)

    sys.setprofile(tracer)
    try:
        train.main(argv)
    finally:
        sys.setprofile(None)
    files = [stop.split(":")[0] for stop in stops]
    visits = {}
    for i, name in enumerate(files):
        if i == 0 or files[i - 1] != name:
            visits[name] = visits.get(name, 0) + 1
    return {"stops": stops, "returns": returns, "files": visits}


def main() -> None:
    argv = [*sys.argv[1:], "--max_iters", "0", "--eval_only", "true"]
    result = walk(argv)
    for i, stop in enumerate(result["stops"], 1):
        print(f"{i:3} {stop}")
    print(f"stops {len(result['stops'])}, returns {len(result['returns'])} ({', '.join(result['returns'])}), "
          f"files {len(result['files'])}: " + ", ".join(f"{name} x{n}" for name, n in result["files"].items()))


if __name__ == "__main__":
    main()
