"""Whether a training configuration fits a device's memory, estimated before anything is allocated, and
what micro-batch and gradient accumulation keep its batch where it does not:

    python -m gpt.memory --gib 80                     every preset on an 80 GiB GPU
    python -m gpt.memory --preset gpt3-xl --gib 80    one, and with --activation_checkpointing

The estimate (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models"):
34*b*s*h bytes of 16-bit activations per layer and micro-batch of b sequences of s tokens, h wide, plus
5*a*s^2*b where attention materialises its scores (the reference backend; a band of w keys: a*s*w);
with activation checkpointing each layer keeps only its input (2*b*s*h) and one layer's activations are
alive again during its recomputation. Plus the logits and their gradient in fp32 (3*b*s*V*4), and
weights, gradients and AdamW's two moments in fp32 (16 bytes a parameter).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import torch

from .config import PRESETS, GPTConfig, TrainConfig
from .data import GPT2_VOCAB, SHAKESPEARE_CHARS


@dataclass(frozen=True)
class MemoryEstimate:
    fixed: int  # weights, gradients and AdamW's moments
    per_sequence: int  # activations and logits of one sequence of the micro-batch

    def total(self, batch_size: int) -> int:
        return self.fixed + batch_size * self.per_sequence

    def largest_batch(self, have: int) -> int:
        """The most sequences a micro-batch can hold within `have` bytes (0: not even one)."""
        return max(0, (have - self.fixed) // self.per_sequence)


def estimate(model: GPTConfig, vocab_size: int, dtype: torch.dtype, attention: str,
             activation_checkpointing: bool = False) -> MemoryEstimate:
    s, h, layers = model.block_size, model.n_embd, model.n_layer
    scale = torch.finfo(dtype).bits / 16
    scores = 0
    if attention == "reference":  # the only backend that holds the (T, T) scores
        scores = sum(5 * model.n_head * s * model.keys_attended(i) for i in range(layers)) / layers
    per_layer = scale * (34 * s * h + scores)
    activations = (layers * 2 * s * h * scale + per_layer) if activation_checkpointing else layers * per_layer
    norms_and_biases = (13 if model.bias else 2) * h  # a block's: 9h of Linear biases, two LayerNorms' 4h (2h)
    params = layers * (12 * h ** 2 + norms_and_biases) + (vocab_size + s) * h + (2 if model.bias else 1) * h
    return MemoryEstimate(fixed=16 * params, per_sequence=int(activations + 3 * s * vocab_size * 4))


def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def advice(cfg: TrainConfig, est: MemoryEstimate, have: int, processes: int = 1) -> str:
    """What keeps this run's batch (tokens per optimizer step) within `have` bytes a process."""
    largest = est.largest_batch(have)
    if est.fixed >= have:
        return (f"the weights, gradients and AdamW's moments alone need {est.fixed / 2**30:.1f} GiB: a smaller model, "
                "or FSDP across GPUs (torchrun ... --fsdp true) to shard them")
    if largest == 0:
        return "not even one sequence a micro-batch fits: a smaller --block_size" + (
            "" if cfg.activation_checkpointing else ", or --activation_checkpointing")
    sequences = cfg.batch_size * cfg.gradient_accumulation_steps  # per optimizer step, all processes together
    batch = next(b for b in range(min(largest, cfg.batch_size), 0, -1) if sequences % (b * processes) == 0)
    return (f"--batch_size {batch} --gradient_accumulation_steps {sequences // batch} keeps the batch of "
            f"{sequences * cfg.model.block_size:,} tokens (at most {largest} sequences a micro-batch fit)")


def check_fits(cfg: TrainConfig, vocab_size: int, device: torch.device, dtype: torch.dtype, attention: str,
               processes: int = 1) -> MemoryEstimate:
    est = estimate(cfg.model, vocab_size, dtype, attention, cfg.activation_checkpointing)
    need, have = est.total(cfg.batch_size), device_memory(device)
    if need > have:
        raise ValueError(f"this configuration needs about {need / 2**30:.1f} GiB for one micro-batch (block_size "
                         f"{cfg.model.block_size}, batch_size {cfg.batch_size}, n_layer {cfg.model.n_layer}, n_embd "
                         f"{cfg.model.n_embd}) but {device} has {have / 2**30:.1f} GiB: "
                         f"{advice(cfg, est, have, processes)}")
    return est


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(prog="python -m gpt.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append",
                        help="the preset(s) to estimate (default: all)")
    parser.add_argument("--gib", type=float, default=80.0, help="memory of one GPU in GiB (default: 80, an H100)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--kernels", default="triton", help="the attention backend (reference holds the scores)")
    parser.add_argument("--vocab_size", type=int, default=None,
                        help=f"the data's vocabulary (default: {GPT2_VOCAB} for GPT-2's BPE, {SHAKESPEARE_CHARS} for a "
                             "character preset: Tiny Shakespeare's characters; another text has its own count)")
    args = parser.parse_args(argv)
    have = int(args.gib * 2**30)
    lines = [f"{'preset':22} {'params':>8} {'fixed GiB':>9} {'GiB/seq':>8} {'ckpt GiB/seq':>12}  on {args.gib:g} GiB"]
    for name in args.preset or PRESETS:
        cfg = TrainConfig.from_flat(PRESETS[name])
        vocab = args.vocab_size or (SHAKESPEARE_CHARS if cfg.tokenizer == "char" else GPT2_VOCAB)
        model = GPTConfig(**{**cfg.model.to_dict(), "vocab_size": vocab})
        plain, ckpt = (estimate(model, vocab, getattr(torch, args.dtype), args.kernels, c) for c in (False, True))
        chosen = ckpt if cfg.activation_checkpointing else plain
        lines.append(f"{name:22} {chosen.fixed / 16 / 1e6:7.0f}M {plain.fixed / 2**30:9.1f} "
                     f"{plain.per_sequence / 2**30:8.2f} {ckpt.per_sequence / 2**30:12.2f}  "
                     + ("fits as it is" if chosen.total(cfg.batch_size) <= have else advice(cfg, chosen, have)))
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
