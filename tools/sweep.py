"""Configuration sweep for the Triton kernels, in one device call, against the hardware's ceilings.

    python3 -m tools.sweep --out "$OUT"            # on the GPU: ceilings, then the grids; sweep.json + sweep.md
    python3 -m tools.sweep --out /tmp/s --dry-run  # the same logic on a CPU (interpreter, tiny shapes)

1. Ceilings: a large device-to-device copy (GB/s, read + write) and a large bf16 matmul (TFLOP/s).
2. Attention (bf16, causal, D=64, GPT-2 heads): every forward configuration (BLOCK_M, BLOCK_N,
   warps, stages) with pointer loads and with tensor descriptors (tma), every configuration of
   each split backward kernel (dK/dV, dQ) with the other fixed, and of the paired backward
   kernel; each variant's output first checked against the reference.
3. LayerNorm (bf16): rows per program and warps for the forward; rows per program, warps and
   program count for the backward.
Each configuration is passed to the kernel's launcher (attention's config, dkdv_config and
dq_config; LayerNorm's launch). The winners, with their speed against the ceilings, are what to
commit as defaults: first in gpt_kernels/ops/attention/triton.py's lists, gpt_kernels/ops/rows.py's rule.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

from gpt_kernels import runtime
from gpt_kernels.ops import rows as rows_module
from gpt_kernels.ops.attention import reference as attention_reference
from gpt_kernels.ops.attention import triton as attention_module
from gpt_kernels.ops.attention import variants as attention_variants
from gpt_kernels.ops.layer_norm import reference as layer_norm_reference
from gpt_kernels.ops.layer_norm import triton as layer_norm_module

ATTENTION_SHAPES = [(16, 12, 1024, 64), (8, 12, 2048, 64), (4, 12, 4096, 64)]
LAYER_NORM_SHAPES = [(16384, 768), (8192, 4096)]
FWD_GRID = list(itertools.product([64, 128], [32, 64, 128], [4, 8], [2, 3, 4]))
BWD_GRID = list(itertools.product([32, 64, 128], [32, 64, 128], [4, 8], [1, 2, 3]))
PAIRED_GRID = list(itertools.product([16, 32, 64], [64, 128], [4, 8], [2, 3, 5]))  # (BLOCK_M, BLOCK_N, ...)
# (op, the forward launcher)
FORWARD_VARIANTS = [("attention forward", attention_module.attention_forward),
                    ("attention forward, tma", attention_variants.attention_forward_tma)]
DRY = dict(attention=[(1, 2, 64, 16)], layer_norm=[(64, 128)], fwd=[(32, 32, 4, 1)], bwd=[(32, 32, 4, 1)],
           paired=[(32, 32, 4, 1)])


def attention_config(config) -> triton.Config:  # noqa: F821
    import triton

    m, n, warps, stages = config
    return triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_warps=warps, num_stages=stages)


def timer(dry_run: bool):
    """Median milliseconds of fn(): triton's do_bench on a GPU, one wall-clock call under the interpreter."""
    if dry_run:
        def once(fn):
            start = time.perf_counter()
            fn()
            return 1e3 * (time.perf_counter() - start)
        return once
    from triton.testing import do_bench

    return lambda fn: do_bench(fn, warmup=10, rep=40, return_mode="median")


def ceilings(measure, device) -> dict:
    n_bytes = (2 << 30) if device == "cuda" else (1 << 20)
    src = torch.empty(n_bytes // 2, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    copy_ms = measure(lambda: dst.copy_(src))
    n = 8192 if device == "cuda" else 128
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    matmul_ms = measure(lambda: a @ b)
    return {"copy_GB/s": 2 * n_bytes / copy_ms / 1e6, "bf16_matmul_TFLOP/s": 2 * n**3 / matmul_ms / 1e9}


def attention_sweep(measure, device, dtype, shapes, fwd_grid, bwd_grid, paired_grid) -> list[dict]:
    rows = []
    for b, h, t, d in shapes:
        gen = torch.Generator().manual_seed(0)
        q, k, v, do = (torch.randn(b, h, t, d, generator=gen).to(device, dtype) for _ in range(4))
        scale = d ** -0.5
        truth = attention_reference.attention(q, k, v, True)
        fwd_flops = 4 * b * h * t * t * d / 2
        o, lse = attention_module.attention_forward(q, k, v, True, scale)
        for (op, forward), config in itertools.product(FORWARD_VARIANTS, fwd_grid):
            row = {"op": op, "shape": [b, h, t, d], "config": list(config)}
            run = lambda: forward(q, k, v, True, scale, config=attention_config(config))  # noqa: E731
            try:
                out, _ = run()
                row["max_error"] = (out.float() - truth.float()).abs().max().item()
                row["ok"] = row["max_error"] < 5e-2
                ms = measure(run)
                row |= {"ms": ms, "TFLOP/s": fwd_flops / ms / 1e9}
            except Exception as err:  # out of shared memory or registers: record and go on
                row |= {"ok": False, "error": f"{type(err).__name__}: {str(err)[:120]}"}
            rows.append(row)
        qd, kd, vd = (t_.detach().double().requires_grad_() for t_ in (q, k, v))
        grads = torch.autograd.grad(attention_reference.attention(qd, kd, vd, True), (qd, kd, vd), do.double())
        # The two split backward kernels are swept one at a time, the other held at the grid's first
        # entry; the paired kernel (BLOCK_N keys and queries per program) on its own.
        first = attention_config(bwd_grid[0])
        for kernel, config in ([("dK/dV", c) for c in bwd_grid] + [("dQ", c) for c in bwd_grid]
                               + [("paired", c) for c in paired_grid]):
            swept = attention_config(config)
            if kernel == "paired":
                run = lambda: attention_variants.attention_backward_paired(do, q, k, v, o, lse, True, scale,  # noqa: E731
                                                                           config=swept)
            else:
                configs = dict(dkdv_config=swept, dq_config=first) if kernel == "dK/dV" else dict(
                    dkdv_config=first, dq_config=swept)
                run = lambda: attention_module.attention_backward(do, q, k, v, o, lse, True, scale, **configs)  # noqa: E731
            row = {"op": f"attention backward, {kernel} kernel", "shape": [b, h, t, d], "config": list(config)}
            try:
                ours = run()
                row["max_error"] = max((a.double() - g).abs().max().item() for a, g in zip(ours, grads))
                row["ok"] = row["max_error"] < 1e-1
                ms = measure(run)
                row |= {"ms": ms, "TFLOP/s": 2.5 * fwd_flops / ms / 1e9}
            except Exception as err:
                row |= {"ok": False, "error": f"{type(err).__name__}: {str(err)[:120]}"}
            rows.append(row)
    return rows


def layer_norm_sweep(measure, device, dtype, shapes, dry_run: bool) -> list[dict]:
    rows = []
    for m, n in shapes:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(m, n, generator=gen).to(device, dtype)
        w, b = torch.ones(n, device=device, dtype=dtype), torch.zeros(n, device=device, dtype=dtype)
        dy = torch.randn(m, n, generator=gen).to(device, dtype)
        element = torch.finfo(dtype).bits // 8
        truth = layer_norm_reference.layer_norm(x.float(), w.float(), b.float())
        launch = rows_module.Launch
        _, _, rstd = layer_norm_module.layer_norm_forward(x, w, b, 1e-5)
        sms = torch.cuda.get_device_properties(0).multi_processor_count if device == "cuda" else 2
        for block_m, warps in itertools.product([1] if dry_run else [1, 2, 4, 8, 16], [4] if dry_run else [2, 4, 8, 16]):
            row = {"op": "layer_norm forward", "shape": [m, n], "config": [block_m, warps]}
            run = lambda: layer_norm_module.layer_norm_forward(x, w, b, 1e-5, launch(block_m, warps))  # noqa: E731
            y, _, _ = run()
            row["max_error"] = (y.float() - truth).abs().max().item()
            row["ok"] = row["max_error"] < 5e-2
            ms = measure(run)
            rows.append(row | {"ms": ms, "GB/s": 2 * m * n * element / ms / 1e6})
        for block_m, warps, per_sm in itertools.product([1] if dry_run else [1, 2, 4, 8],
                                                        [4] if dry_run else [4, 8, 16], [1] if dry_run else [1, 2, 4, 8]):
            row = {"op": "layer_norm backward", "shape": [m, n], "config": [block_m, warps, per_sm * sms]}
            reference_dx, _, _ = layer_norm_module.layer_norm_backward(dy, x, w, rstd)
            run = lambda: layer_norm_module.layer_norm_backward(  # noqa: E731
                dy, x, w, rstd, launch=launch(block_m, warps, per_sm * sms))
            dx, _, _ = run()
            row["max_error"] = (dx.float() - reference_dx.float()).abs().max().item()
            row["ok"] = row["max_error"] < 5e-2
            ms = measure(run)
            rows.append(row | {"ms": ms, "GB/s": 3 * m * n * element / ms / 1e6})
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    best = {}
    for row in rows:
        key = (row["op"], tuple(row["shape"]))
        if row.get("ok") and (key not in best or row["ms"] < best[key]["ms"]):
            best[key] = row
    return list(best.values())


def markdown(result: dict) -> str:
    c = result["ceilings"]
    lines = [f"# Kernel sweep: {result['device']}", "", f"{result['date']} | torch {result['torch']} | "
             f"triton {result['triton']} | commit {result['commit']}", "",
             f"Ceilings: copy {c['copy_GB/s']:,.0f} GB/s; bf16 matmul {c['bf16_matmul_TFLOP/s']:,.1f} TFLOP/s", "",
             "| op | shape | best config | ms | throughput | of ceiling | variants ok / tried |",
             "|---|---|---|---:|---:|---:|---:|"]
    for row in best_rows(result["rows"]):
        tried = [r for r in result["rows"] if r["op"] == row["op"] and r["shape"] == row["shape"]]
        if "TFLOP/s" in row:
            value, share = f"{row['TFLOP/s']:.1f} TFLOP/s", row["TFLOP/s"] / c["bf16_matmul_TFLOP/s"]
        else:
            value, share = f"{row['GB/s']:,.0f} GB/s", row["GB/s"] / c["copy_GB/s"]
        lines.append(f"| {row['op']} | {row['shape']} | {row['config']} | {row['ms']:.3f} | {value} | "
                     f"{100 * share:.0f}% | {sum(r.get('ok', False) for r in tried)} / {len(tried)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import datetime
    import os

    import triton

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="on a CPU: interpreter, tiny shapes, one config each")
    parser.add_argument("--only", choices=["attention", "layer_norm"], help="sweep one op")
    parser.add_argument("--commit", default=os.environ.get("GPT_COMMIT", "unknown"))
    args = parser.parse_args(argv)
    device = "cpu" if args.dry_run else "cuda"
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU, or pass --dry-run")
    dtype = torch.float32 if args.dry_run else torch.bfloat16  # the interpreter's bf16 dot is wrong
    measure = timer(args.dry_run)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)",
              "date": datetime.date.today().isoformat(), "torch": torch.__version__, "triton": triton.__version__,
              "commit": args.commit, "ceilings": ceilings(measure, device), "rows": []}
    with runtime.eager_launches():  # timed launches, not torch's higher-order op around each
        if args.only in (None, "attention"):
            result["rows"] += attention_sweep(measure, device, dtype,
                                              DRY["attention"] if args.dry_run else ATTENTION_SHAPES,
                                              DRY["fwd"] if args.dry_run else FWD_GRID,
                                              DRY["bwd"] if args.dry_run else BWD_GRID,
                                              DRY["paired"] if args.dry_run else PAIRED_GRID)
        if args.only in (None, "layer_norm"):
            result["rows"] += layer_norm_sweep(measure, device, dtype,
                                               DRY["layer_norm"] if args.dry_run else LAYER_NORM_SHAPES, args.dry_run)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    (out / "sweep.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
