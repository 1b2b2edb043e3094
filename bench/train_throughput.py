"""Training throughput: tokens/s, MFU, step time and peak memory per preset and provider.

    python bench/train_throughput.py --presets shakespeare-char gpt2-124m --jsonl throughput.jsonl

Providers: torch eager; torch + compile (nanoGPT's recipe: SDPA + torch.compile); ours + compile
(the kernels named by --ours). Synthetic tokens, so no text is needed. gpt2-124m runs T=1024
with one micro-batch per step (its preset accumulates 40; throughput per token is the same).
Each row is printed and appended to --jsonl as soon as it is measured, so a run stopped
part-way still leaves the providers it finished.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time

import torch

from gpt.config import PRESETS, TrainConfig
from gpt.train import Trainer, learning_rate, make_plan

OURS = "triton"  # "ours + compile": every op with a Triton backend (the head fused with the loss), unless --ours
PROVIDERS = {
    "torch eager": dict(kernels="torch", compile=False),
    "torch + compile": dict(kernels="torch", compile=True),
    "ours + compile": dict(kernels=OURS, compile=True),
}
TINY = dict(n_layer=1, n_head=2, n_embd=32, block_size=32, batch_size=2)  # the CPU smoke case


def preset_config(preset: str, provider: str, out_dir: str, ours: str = OURS, **overrides) -> TrainConfig:
    values = PRESETS[preset] | dict(gradient_accumulation_steps=1, synthetic_data=True, progress=False,
                                    out_dir=out_dir, dropout=0.0) | PROVIDERS[provider] | overrides
    if provider == "ours + compile":
        values["kernels"] = ours
    if preset == "gpt2-124m":
        values["tokenizer"] = "gpt2"
    return TrainConfig.from_flat(values)


def prepare_steps(cfg: TrainConfig, warmup: int):
    """A Trainer warmed up (compiled, autotuned) and a function that runs one synchronised step."""
    trainer = Trainer(make_plan(cfg))
    cuda = trainer.device.type == "cuda"
    lr = learning_rate(cfg.warmup_iters, cfg)

    def step() -> torch.Tensor:
        loss, _, _ = trainer.train_step(lr, trainer.cfg.gradient_accumulation_steps // trainer.world.world_size)
        if cuda:
            torch.cuda.synchronize()
        return loss

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    return trainer, step


def summarize(trainer: Trainer, step_times: list[float], loss: torch.Tensor) -> dict:
    cuda = trainer.device.type == "cuda"
    step_time = statistics.median(step_times)
    return {
        "tokens_per_step": trainer.cfg.tokens_per_iter, "step_ms": 1e3 * step_time,
        "step_ms_spread": [1e3 * min(step_times), 1e3 * max(step_times)],
        "tok_per_s": trainer.cfg.tokens_per_iter / step_time,
        "mfu": trainer.flops_per_token * trainer.cfg.tokens_per_iter / step_time / trainer.peak if trainer.peak else None,
        "peak_memory_GiB": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "final_loss": loss.item(), "device": torch.cuda.get_device_name() if cuda else "cpu",
        "kernels_resolved": trainer.ops.spec(),  # what --kernels (auto, a backend name) became
        "dtype": str(trainer.dtype).removeprefix("torch."),
    }


def measure(cfg: TrainConfig, warmup: int, steps: int) -> dict:
    trainer, step = prepare_steps(cfg, warmup)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    return summarize(trainer, times, loss)


def run(presets: list[str], providers: list[str], warmup: int, steps: int, tiny: bool = False, ours: str = OURS,
        compile_mode: str = "default", batch_sizes: tuple[int | None, ...] = (None,), auto_table: str = ""):
    """Yields one result row per (preset, batch size, provider), as soon as it is measured."""
    for preset, batch_size, provider in itertools.product(presets, batch_sizes, providers):
        overrides = (TINY if tiny else {}) | ({"batch_size": batch_size} if batch_size else {})
        with tempfile.TemporaryDirectory() as out_dir:
            cfg = preset_config(preset, provider, out_dir, ours, compile_mode=compile_mode, auto_table=auto_table,
                                **overrides)
            try:
                row = measure(cfg, warmup, steps)
            except Exception as err:  # one failing provider must not hide the others' numbers
                row = {"error": f"{type(err).__name__}: {err}"}
        yield {"preset": preset, "batch_size": cfg.batch_size, "provider": provider, "kernels": cfg.kernels,
               "compile_mode": compile_mode} | row
        torch._dynamo.reset()


def table(results: list[dict]) -> str:
    lines = ["| preset | batch | provider | tokens/s | vs torch+compile | MFU | step ms | peak GiB |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    baseline = {(r["preset"], r.get("batch_size")): r.get("tok_per_s") for r in results if r["provider"] == "torch + compile"}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['preset']} | {r.get('batch_size', '-')} | {r['provider']} | failed: {r['error'][:80]} | | | | |")
            continue
        base = baseline.get((r["preset"], r.get("batch_size")))
        ratio = f"{r['tok_per_s'] / base:.2f}x" if base else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        peak = f"{r['peak_memory_GiB']:.2f}" if r["peak_memory_GiB"] is not None else "-"
        lines.append(f"| {r['preset']} | {r.get('batch_size', '-')} | {r['provider']} | {r['tok_per_s']:,.0f} | "
                     f"{ratio} | {mfu} | "
                     f"{r['step_ms']:.1f} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["shakespeare-char", "gpt2-124m"], choices=sorted(PRESETS))
    parser.add_argument("--providers", nargs="+", default=list(PROVIDERS), choices=list(PROVIDERS))
    parser.add_argument("--ours", default=OURS, help=f"the --kernels of 'ours + compile' (default {OURS})")
    parser.add_argument("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
                        help="torch.compile mode of every compiled provider, the same for all")
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[None], help="default: each preset's own")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--tiny", action="store_true", help="a tiny model: a smoke test for CPUs")
    parser.add_argument("--jsonl", help="append each result row here as a JSON line")
    parser.add_argument("--auto_table", default="", help="the measured backends --ours auto reads (gpt.train's flag)")
    args = parser.parse_args(argv)
    results = []
    for row in run(args.presets, args.providers, args.warmup, args.steps, args.tiny, args.ours, args.compile_mode,
                   tuple(args.batch_sizes), args.auto_table):
        results.append(row)
        print(table([row]).splitlines()[-1], flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    print(table(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if all("error" not in r for r in main()) else 1)
