"""The project's own tools, apart from the benchmarks (bench/): the one-shot GPU check (gpu_check), the
compiled-code view (compiled), the rehearsal of the GPU path (rehearsal) and the tile sweep (sweep).
Run from the repository root: python -m tools.<name>."""
