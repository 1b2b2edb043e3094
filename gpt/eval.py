"""HellaSwag (Zellers et al. 2019) on a trained run, beside the validation loss:

    python -m gpt.eval RUN_DIR --hellaswag hellaswag_val.jsonl

Each example is a context and four endings, one of them right (its label). Each ending is scored by the
cross-entropy of its tokens given the context: `acc` picks the ending with the lowest sum, `acc_norm` the
lowest mean per token (build-nanogpt's and llm.c's way, by which OpenAI's GPT-2 124M scores acc_norm
0.2955 on the 10,042 validation examples). The file is the official validation jsonl (`ctx`, `endings`,
`label` per line; data/hellaswag_val.jsonl of github.com/rowanz/hellaswag): nothing is downloaded. An
ending or context with characters outside a character model's vocabulary, or an ending longer than the
model's context, is counted unscorable and reported, not scored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .config import ArgumentParser, fail


@dataclass(frozen=True)
class Example:
    context: str
    endings: tuple[str, ...]
    label: int


def load_examples(path: str | Path) -> list[Example]:
    """The examples of a HellaSwag jsonl file; a missing file or a malformed line is one clear ValueError."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"HellaSwag file {path} not found: give the official validation jsonl "
                         "(data/hellaswag_val.jsonl of github.com/rowanz/hellaswag)")
    examples = []
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                context, endings, label = record["ctx"], record["endings"], record["label"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path} line {number} is not a HellaSwag example (a JSON object with ctx, "
                                 f"endings and label): {type(err).__name__}: {err}") from None
            if (not isinstance(context, str) or not isinstance(endings, list) or len(endings) < 2
                    or not all(isinstance(e, str) for e in endings) or not isinstance(label, int)
                    or not 0 <= label < len(endings)):
                raise ValueError(f"{path} line {number}: expected ctx a string, endings a list of strings and "
                                 f"label an index into them, got label {label!r} of {len(endings)} endings")
            examples.append(Example(context, tuple(endings), label))
    if not examples:
        raise ValueError(f"{path} holds no examples")
    return examples


@dataclass
class Scores:
    examples: int = 0  # all given (on every rank together)
    unscorable: int = 0
    correct: int = 0  # by the summed loss of an ending
    correct_norm: int = 0  # by its mean loss per token

    @property
    def scored(self) -> int:
        return self.examples - self.unscorable

    @property
    def acc(self) -> float:
        return self.correct / self.scored if self.scored else float("nan")

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / self.scored if self.scored else float("nan")

    def summary(self) -> str:
        return (f"hellaswag acc {self.acc:.4f}, acc_norm {self.acc_norm:.4f} over {self.scored} examples"
                + (f" ({self.unscorable} unscorable: characters outside the vocabulary or endings longer "
                   "than the context)" if self.unscorable else ""))


def render(example: Example, tokenizer, block_size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(tokens, mask), each (endings, L): context + " " + ending per row, the ending's tokens marked in mask,
    the context cut from the left to fit the model; None if the example cannot be scored."""
    try:
        context = tokenizer.encode(example.context)
        endings = [tokenizer.encode(" " + ending) for ending in example.endings]
    except ValueError:  # a character outside a character model's vocabulary
        return None
    if any(not 1 <= len(ending) <= block_size for ending in endings):
        return None
    rows = [(context + ending)[-(block_size + 1):] for ending in endings]  # +1: the first token is only input
    width = max(len(row) for row in rows)
    tokens = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, ending) in enumerate(zip(rows, endings)):
        tokens[i, :len(row)] = torch.tensor(row)
        mask[i, len(row) - len(ending):len(row)] = True
    return tokens, mask


def choices(loss_sums: torch.Tensor, token_counts: torch.Tensor) -> tuple[int, int]:
    """(the ending of the lowest summed loss, the ending of the lowest mean loss per token)."""
    return int(loss_sums.argmin()), int((loss_sums / token_counts).argmin())


@torch.no_grad()
def ending_losses(model, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of each row's ending given what precedes it, and the ending's token count."""
    logits, _ = model(tokens[:, :-1])  # (endings, L-1, V)
    losses = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none")  # (endings, L-1)
    scored = mask[:, 1:]
    return (losses * scored).sum(dim=1), scored.sum(dim=1)


def evaluate(model, examples: list[Example], tokenizer, device: torch.device, autocast=None,
             rank: int = 0, world_size: int = 1, progress: bool = False) -> Scores:
    """Scores over the examples; under torchrun each rank takes every world_size-th example and the counts
    are summed over ranks (every rank gets the totals)."""
    was_training = model.training
    model.eval()
    counts = torch.zeros(4, dtype=torch.long)  # examples, unscorable, correct, correct_norm
    mine = examples[rank::world_size]
    start = time.perf_counter()
    for done, example in enumerate(mine, 1):
        counts[0] += 1
        rendered = render(example, tokenizer, model.config.block_size)
        if rendered is None:
            counts[1] += 1
        else:
            tokens, mask = (t.to(device) for t in rendered)
            with autocast or torch.autocast(device.type, enabled=False):
                loss_sums, token_counts = ending_losses(model, tokens, mask)
            pick, pick_norm = choices(loss_sums.cpu(), token_counts.cpu())
            counts[2] += pick == example.label
            counts[3] += pick_norm == example.label
        if progress and (done % 50 == 0 or done == len(mine)):
            print(f"\rhellaswag {done}/{len(mine)} ({time.perf_counter() - start:.0f} s)", end="", file=sys.stderr,
                  flush=True)
    if progress:
        print(file=sys.stderr)
    if world_size > 1 and dist.is_initialized():
        totals = counts.to(device)
        dist.all_reduce(totals)
        counts = totals.cpu()
    model.train(was_training)
    return Scores(*(int(c) for c in counts))


def build_arg_parser() -> argparse.ArgumentParser:
    import gpt_kernels

    p = ArgumentParser(prog="python -m gpt.eval", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a folder written by gpt.train")
    p.add_argument("--hellaswag", required=True, metavar="FILE", help="HellaSwag's validation jsonl (ctx, endings, label)")
    p.add_argument("--checkpoint", choices=("best", "last"), default="best", help="which weights (default: best)")
    p.add_argument("--limit", type=int, default=0, help="only the first N examples (default: all)")
    p.add_argument("--device", default="", help="cpu, cuda or cuda:N (default: cuda if available, else cpu)")
    p.add_argument("--kernels", default="auto", help=gpt_kernels.registry.spec_help() + " (default: auto)")
    return p


def main(argv: list[str] | None = None) -> Scores:
    from .sample import load_model

    parser = build_arg_parser()
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available on this machine")
    try:
        examples = load_examples(args.hellaswag)
        model, tokenizer = load_model(Path(args.run_dir), args.checkpoint, device, args.kernels)
    except (FileNotFoundError, ValueError) as err:
        fail(parser.prog, err)
    if args.limit > 0:
        examples = examples[:args.limit]
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    start = time.perf_counter()
    scores = evaluate(model, examples, tokenizer, device, autocast, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    print(f"{scores.summary()} in {seconds:.1f} s ({1000 * seconds / len(examples):.1f} s per 1,000 examples)")
    return scores


if __name__ == "__main__":
    main()
