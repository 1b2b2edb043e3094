"""One package per op: its reference, its Triton and extension bindings, its registration."""
