"""Sample from a trained model: `python -m gpt.sample --out_dir out-shakespeare-char --prompt "ROMEO:"`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import gpt_kernels

from . import checkpoint
from .config import ArgumentParser, fail
from .data import tokenizer_from_meta
from .model import GPT


def build_arg_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m gpt.sample", description="Generate text from a checkpoint folder written by gpt.train.")
    p.add_argument("--out_dir", "--out-dir", default="out-shakespeare-char",
                   help="the training run's folder (default: %(default)s)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best",
                   help="which weights to load (default: best; last when there is no best)")
    p.add_argument("--prompt", default="\n", help="start text, or FILE:path (or @path) to read it from a file "
                                                  "(default: a newline)")
    p.add_argument("--num_samples", "--num-samples", type=int, default=3, help="samples to draw (default: %(default)s)")
    p.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=500,
                   help="tokens generated per sample; past the model's block_size each is predicted from the last "
                        "block_size tokens (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default: %(default)s)")
    p.add_argument("--top_k", "--top-k", type=int, default=200,
                   help="sample among the k likeliest tokens (default: %(default)s)")
    p.add_argument("--top_p", "--top-p", type=float, default=None,
                   help="sample among the likeliest tokens whose probabilities sum to p (default: off)")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: %(default)s)")
    p.add_argument("--device", default="", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--kernels", default="auto", help=gpt_kernels.registry.spec_help() + " (default: auto)")
    return p


def load_model(out_dir: Path, which: str, device: torch.device, spec: str = "auto") -> tuple[GPT, object]:
    ops = gpt_kernels.resolve(spec, device)  # before loading anything: a backend that cannot run here fails now
    path = out_dir / f"{which}.safetensors"
    if which == "best" and not path.exists():
        path = out_dir / "last.safetensors"
    state, config, tokenizer_meta = checkpoint.load_weights(path, device)
    model = GPT(config, ops)
    model.load_state_dict(state)
    return model.to(device).eval(), tokenizer_from_meta(tokenizer_meta)


def main(argv: list[str] | None = None) -> list[str]:
    parser = build_arg_parser()
    args = parser.parse_args(argv)
    try:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as err:
        parser.error(f"--device {args.device!r}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # Triton launches on the current device, whatever its tensors' device
    if args.num_samples < 1 or args.max_new_tokens < 0:
        parser.error("--num_samples must be >= 1 and --max_new_tokens >= 0")
    try:
        model, tokenizer = load_model(Path(args.out_dir), args.checkpoint, device, args.kernels)
        prompt = args.prompt
        for prefix in ("FILE:", "@"):
            if prompt.startswith(prefix):
                prompt = Path(prompt[len(prefix):]).read_text(encoding="utf-8")
                break
        start = tokenizer.encode(prompt)
    except (FileNotFoundError, ValueError) as err:
        fail(parser.prog, err)
    if not start:
        parser.error("the prompt is empty after tokenization; give at least one token")
    if len(start) + args.max_new_tokens > model.config.block_size:
        print(f"note: the model sees {model.config.block_size} tokens; past that, each new token is predicted "
              f"from the last {model.config.block_size} (prompt {len(start)} + {args.max_new_tokens} new)",
              file=sys.stderr)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    samples = []
    for _ in range(args.num_samples):
        ids = list(start)
        shown = tokenizer.decode(ids)
        sys.stdout.write(shown)
        idx = torch.tensor([start], dtype=torch.long, device=device)
        for token in model.generate_tokens(idx, args.max_new_tokens, temperature=args.temperature,
                                           top_k=args.top_k, top_p=args.top_p, generator=generator):
            ids.append(token.item())
            text = tokenizer.decode(ids)
            if not text.endswith("\ufffd"):  # wait until a multi-byte character is complete
                sys.stdout.write(text[len(shown):])
                sys.stdout.flush()
                shown = text
        sys.stdout.write(tokenizer.decode(ids)[len(shown):] + "\n---------------\n")
        samples.append(tokenizer.decode(ids))
    return samples


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # Ctrl-C ends sampling quietly
        sys.stdout.write("\n")
        sys.exit(130)
