"""Typed configuration: the model's GPTConfig, the trainer's TrainConfig (which carries a GPTConfig)
and named presets.

Every field is a command-line flag with its documentation as help (`--max_iters 30`, dashes
accepted too); booleans work bare and negated (`--resume`, `--compile false`, `--no-compile`).
`--preset NAME` applies a preset first and explicit flags override it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NoReturn

import gpt_kernels

from .data import is_tiny_shakespeare


def option(default, doc: str, **kwargs):
    """A configuration field with its one-line documentation (the flag's help)."""
    if callable(default):
        return field(default_factory=default, metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass
class GPTConfig:
    block_size: int = option(1024, "context length in tokens")
    vocab_size: int = option(50257, "tokens in the vocabulary (the trainer takes it from the data)")
    n_layer: int = option(12, "transformer blocks")
    n_head: int = option(12, "attention heads per block")
    n_embd: int = option(768, "embedding width")
    dropout: float = option(0.0, "dropout probability (embeddings, attention probabilities, residuals)")
    bias: bool = option(True, "biases in Linear and LayerNorm layers, as GPT-2")
    attention_pattern: str = option("dense", "which layers attend in a band of attention_window tokens: dense (none), "
                                             "alternating (GPT-3: dense and banded layers in turn, the first dense) "
                                             "or banded (every layer)")
    attention_window: int | None = option(None, "the band's width in tokens: a banded layer's token at position i "
                                                "sees tokens i-window+1 .. i (with attention_pattern alternating "
                                                "or banded)")

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}) "
                "so that every head has the same width"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.attention_pattern not in ATTENTION_PATTERNS:
            raise ValueError(f"--attention_pattern must be one of {', '.join(ATTENTION_PATTERNS)}, "
                             f"got {self.attention_pattern!r}")
        if self.attention_pattern == "dense" and self.attention_window is not None:
            raise ValueError(f"--attention_window {self.attention_window} is set but --attention_pattern is dense: "
                             "give --attention_pattern alternating or banded, or no window")
        if self.attention_pattern != "dense" and (self.attention_window is None or self.attention_window < 1):
            raise ValueError(f"--attention_pattern {self.attention_pattern} needs --attention_window, a width of at "
                             f"least 1 token, got {self.attention_window}")

    def layer_window(self, layer: int) -> int | None:
        """The band of layer `layer` (None: dense)."""
        banded = self.attention_pattern == "banded" or (self.attention_pattern == "alternating" and layer % 2 == 1)
        return self.attention_window if banded else None

    def keys_attended(self, layer: int) -> int:
        """Keys each query of layer `layer` attends at full context: the context, or its band."""
        return min(self.layer_window(layer) or self.block_size, self.block_size)

    @property
    def banded(self) -> bool:
        return self.attention_pattern != "dense"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GPTConfig fields {unknown}; expected a subset of {sorted(known)}")
        return cls(**values)


ATTENTION_PATTERNS = ("dense", "alternating", "banded")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
MODEL_FLAGS = tuple(f.name for f in fields(GPTConfig) if f.name != "vocab_size")  # the data decides the vocabulary


@dataclass
class TrainConfig:
    # I/O
    out_dir: str = option("out", "folder for checkpoints, metrics.jsonl and loss.png (a preset's out-shakespeare-char "
                                 "becomes out-NAME on other data: NAME of --input FILE or --data DIR)")
    input: str = option("", "a local UTF-8 text file; empty: Tiny Shakespeare, downloaded and verified")
    data: str = option("", "a folder written by python -m gpt.prepare (shards of any size; its manifest names the "
                           "tokenizer); instead of --input")
    tokenizer: str = option("char", "char (one token per character) or gpt2 (BPE through tiktoken)")
    data_cache: str = option("", "where prepared token files go; empty: ~/.cache/gpt-kernels")
    eval_interval: int = option(250, "iterations between evaluations (and checkpoints)")
    log_interval: int = option(10, "iterations between log records")
    eval_iters: int = option(200, "batches per split in each evaluation")
    eval_only: bool = option(False, "evaluate once and stop")
    eval_hellaswag: str = option("", "HellaSwag's validation jsonl (ctx, endings, label; from github.com/rowanz/hellaswag, "
                                     "never downloaded): acc and acc_norm at every evaluation, as python -m gpt.eval")
    resume: bool = option(False, "continue the run in out_dir from its last checkpoint (on its own data unless --input is given)")
    overwrite: bool = option(False, "start afresh in an out_dir that holds another run, deleting that run's files")
    synthetic_data: bool = option(False, "random tokens instead of a text (throughput measurements)")
    init_from: str = option("", "start from pretrained weights: a transformers GPT-2 folder (gpt.export's or "
                                "save_pretrained's) or a model name transformers can fetch; the model's shape and "
                                "vocabulary come from it")
    # model
    model: GPTConfig = option(GPTConfig, "the model's shape (its fields are flags of their own)")
    kernels: str = option("auto", "which implementation each op uses; see --kernels in --help")
    auto_table: str = option("", "the measured backends --kernels auto reads; empty: gpt_kernels/auto_backends.json "
                                 "(the GPU check names the one its benchmarks just wrote)")
    # optimisation
    batch_size: int = option(12, "sequences per micro-batch")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step (split across processes)")
    learning_rate: float = option(6e-4, "peak learning rate")
    max_iters: int = option(5000, "optimizer steps in all")
    weight_decay: float = option(1e-1, "AdamW weight decay of matrices")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 disables clipping)")
    decay_lr: bool = option(True, "warmup then cosine decay to min_lr (else a constant rate)")
    warmup_iters: int = option(100, "linear warmup steps")
    lr_decay_iters: int | None = option(None, "step at which the cosine reaches min_lr")
    min_lr: float | None = option(None, "final learning rate")
    warmup_tokens: float = option(0, "linear warmup over this many tokens (GPT-3: 375e6), with --decay_tokens instead "
                                     "of --warmup_iters and --lr_decay_iters")
    decay_tokens: float = option(0, "tokens at which the cosine reaches min_lr (GPT-3: 260e9); 0: the schedule "
                                    "counts iterations")
    batch_ramp_tokens: float = option(0, "grow the batch linearly from 32K tokens to the full batch (its gradient "
                                         "accumulation steps) over this many tokens (GPT-3: 4e9 to 12e9); 0: the full "
                                         "batch from the start")
    # system
    device: str = option("", "cpu, cuda or cuda:N; empty: cuda if available, else cpu")
    dtype: str = option("", "float32, bfloat16 or float16; empty: bfloat16 on CUDA (float16 without bf16), float32 on CPU")
    activation_checkpointing: bool = option(False, "keep only each block's input and recompute its activations in "
                                                   "the backward (about a third more compute): larger models and "
                                                   "micro-batches fit (python -m gpt.memory)")
    compile: bool | None = option(None, "torch.compile the model; unset: on for CUDA, off for CPU")
    compile_mode: str = option("default", "torch.compile mode: default, reduce-overhead (CUDA graphs) or max-autotune")
    seed: int = option(1337, "random seed")
    progress: bool = option(True, "show the progress bar")
    fsdp: bool = option(False, "under torchrun: shard parameters, gradients and optimizer state (FSDP2) instead of DDP")
    # stopping and faults
    max_seconds: float = option(0.0, "wall-clock budget; at the first iteration past it: evaluate, save, stop (0: none)")
    target_val_loss: float = option(0.0, "stop after an evaluation at or below this val loss (0: none)")
    nonfinite: str = option("stop", "a non-finite loss or gradient: stop (keep the last good checkpoint) or skip the step")

    def __post_init__(self) -> None:
        for name, (_, derive) in DERIVED.items():  # unset: follows the value it derives from
            if getattr(self, name) is None:
                setattr(self, name, derive(self))
        positive = ("eval_interval", "log_interval", "eval_iters", "batch_size", "gradient_accumulation_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("max_iters", "warmup_iters", "lr_decay_iters"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}")
        if min(self.warmup_tokens, self.decay_tokens, self.batch_ramp_tokens) < 0:
            raise ValueError("--warmup_tokens, --decay_tokens and --batch_ramp_tokens must be >= 0")
        if self.warmup_tokens and not self.decay_tokens > self.warmup_tokens:
            raise ValueError(f"--warmup_tokens {self.warmup_tokens:g} needs --decay_tokens beyond it (the schedule "
                             f"counts tokens from warmup to decay), got {self.decay_tokens:g}")
        if not self.learning_rate > 0:
            raise ValueError(f"--learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"--min_lr must be in [0, learning_rate={self.learning_rate}], got {self.min_lr}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise ValueError("--grad_clip and --weight_decay must be >= 0")
        if self.data and self.input:
            raise ValueError("--data and --input are two ways to give the training text: give one")
        if self.tokenizer not in ("char", "gpt2"):
            raise ValueError(f"--tokenizer must be 'char' or 'gpt2', got {self.tokenizer!r}")
        if self.nonfinite not in ("stop", "skip"):
            raise ValueError(f"--nonfinite must be 'stop' or 'skip', got {self.nonfinite!r}")
        if self.max_seconds < 0 or self.target_val_loss < 0:
            raise ValueError("--max_seconds and --target_val_loss must be >= 0 (0 disables them)")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"--compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.dtype not in ("", "float32", "bfloat16", "float16"):
            raise ValueError(f"--dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        gpt_kernels.registry.parse_spec(self.kernels)  # raises on a bad spec, naming the choices
        if self.auto_table and not Path(self.auto_table).is_file():
            raise ValueError(f"--auto_table {self.auto_table!r} is not a file (a table of measured backends, "
                             "as tools/gpu_check.py writes auto_backends.json)")

    @classmethod
    def from_flat(cls, values: dict) -> TrainConfig:
        """A TrainConfig from one flat mapping (presets, flags): the model's fields go to .model."""
        model = {k: values[k] for k in MODEL_FLAGS if k in values}
        return cls(**{k: v for k, v in values.items() if k not in model}, model=GPTConfig(**model))

    @property
    def tokens_per_iter(self) -> int:
        return self.gradient_accumulation_steps * self.batch_size * self.model.block_size


# Schedule values that follow others unless given: a preset or a flag that changes the learning rate or
# the run's length moves them with it (GPT-3 and nanoGPT: min_lr = learning_rate / 10, decay over the run).
DERIVED = {
    "min_lr": ("learning_rate / 10", lambda cfg: cfg.learning_rate / 10),
    "lr_decay_iters": ("max_iters", lambda cfg: cfg.max_iters),
}


PRESETS: dict[str, dict] = {
    # nanoGPT's config/train_shakespeare_char.py
    "shakespeare-char": dict(
        out_dir="out-shakespeare-char", eval_interval=250, eval_iters=200, log_interval=10,
        n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False,
        batch_size=64, gradient_accumulation_steps=1, learning_rate=1e-3, max_iters=5000,
        beta2=0.99, warmup_iters=100, weight_decay=0.1, grad_clip=1.0,
    ),
    # nanoGPT's README recipe for a CPU (the same data, a much smaller model) with a 3x higher
    # learning rate, which is what takes it below nanoGPT's val loss 1.88 (README: Results)
    "shakespeare-char-cpu": dict(
        out_dir="out-shakespeare-char", eval_interval=250, eval_iters=20, log_interval=10,
        n_layer=4, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False,
        batch_size=12, gradient_accumulation_steps=1, learning_rate=3e-3, max_iters=2000,
        beta2=0.99, warmup_iters=100, weight_decay=0.1, grad_clip=1.0,
    ),
    # GPT-2 small (124M) with the GPT-2 tokenizer, nanoGPT's config/train_gpt2.py per GPU
    "gpt2-124m": dict(
        out_dir="out-gpt2-124m", tokenizer="gpt2", eval_interval=1000, eval_iters=200, log_interval=10,
        n_layer=12, n_head=12, n_embd=768, block_size=1024, dropout=0.0, bias=False,
        batch_size=12, gradient_accumulation_steps=40, learning_rate=6e-4, max_iters=600000,
        beta2=0.95, warmup_iters=2000, weight_decay=0.1, grad_clip=1.0,
    ),
}

# GPT-3 (Brown et al. 2020, table 2.1 and appendix B): context 2048, the GPT-2 tokenizer, dense and locally
# banded layers in turn, AdamW (0.9, 0.95) with weight decay 0.1 and gradient clipping at 1.0, a linear
# warmup over the first 375M tokens and a cosine decay to 10% over 260B (counted in tokens), the batch
# ramped from 32K tokens over the first "4-12 billion tokens, depending on the model size" (not given per
# size: 4B for the 0.5M-token batches, 8B for the 1M ones), 300B tokens in all (max_iters: iterations of
# the full batch). The paper gives no band width: 256, GPT-Neo's (the open replication
# of this pattern). GPT-3 XL's 24 heads of 128 do not make its width 2048; 16 heads of 128 do (as GPT-Neo 1.3B).
# Micro-batches sized for one 80 GiB GPU by gpt.memory's estimate (python -m gpt.memory; none needs
# --activation_checkpointing there), the rest accumulated: batch_size x gradient_accumulation_steps x 2048
# is the paper's batch in tokens.
GPT3_SIZES = {  # name: (n_layer, n_embd, n_head, batch in tokens, learning rate, micro-batch)
    "gpt3-small": (12, 768, 12, 2**19, 6.0e-4, 32),
    "gpt3-medium": (24, 1024, 16, 2**19, 3.0e-4, 16),
    "gpt3-large": (24, 1536, 16, 2**19, 2.5e-4, 16),
    "gpt3-xl": (24, 2048, 16, 2**20, 2.0e-4, 8),
    "gpt3-2.7b": (32, 2560, 32, 2**20, 1.6e-4, 4),
}
GPT3_TOKENS = {"train": 300e9, "warmup": 375e6, "decay": 260e9}
GPT3_RAMP_TOKENS = {2**19: 4e9, 2**20: 8e9}  # batch in tokens: its ramp


def gpt3_preset(name: str) -> dict:
    n_layer, n_embd, n_head, batch_tokens, learning_rate, micro_batch = GPT3_SIZES[name]
    iters = lambda tokens: round(tokens / batch_tokens)  # noqa: E731
    return dict(
        out_dir=f"out-{name}", tokenizer="gpt2", eval_interval=1000, eval_iters=100, log_interval=10,
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=2048, dropout=0.0, bias=True,
        attention_pattern="alternating", attention_window=256,
        batch_size=micro_batch, gradient_accumulation_steps=batch_tokens // 2048 // micro_batch,
        learning_rate=learning_rate, max_iters=iters(GPT3_TOKENS["train"]), warmup_tokens=GPT3_TOKENS["warmup"],
        decay_tokens=GPT3_TOKENS["decay"], batch_ramp_tokens=GPT3_RAMP_TOKENS[batch_tokens],
        beta2=0.95, weight_decay=0.1, grad_clip=1.0,
    )


PRESETS.update({name: gpt3_preset(name) for name in GPT3_SIZES})


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _flag_fields() -> list[dataclasses.Field]:
    """Every flag's field: the trainer's, with the model's (but its vocabulary) in place of `model`."""
    model_fields = [f for f in fields(GPTConfig) if f.name in MODEL_FLAGS]
    return [g for f in fields(TrainConfig) for g in (model_fields if f.name == "model" else [f])]


class CommandLineError(SystemExit):
    """Exit status 2 (a usage error), with the one-line message as the exception's text."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(ValueError):
    """A value on the command line that this run cannot use (a device this machine lacks, a shape flag the
    pretrained model contradicts): like argparse's own errors, exit status 2. Other errors exit with 1."""


def fail(prog: str, err: Exception) -> NoReturn:
    """Stop a command with one line: status 2 for an error in the command line, 1 for any other."""
    line = f"{prog}: error: {err}"
    if isinstance(err, UsageError):
        print(line, file=sys.stderr)
        raise CommandLineError(line)
    raise SystemExit(line)


class ArgumentParser(argparse.ArgumentParser):
    """Errors in one line naming the command and the fix, without the usage block."""

    def error(self, message: str):
        line = f"{self.prog}: error: {message} (see {self.prog} --help)"
        print(line, file=sys.stderr)
        raise CommandLineError(line)


PRESET_SUMMARIES = {
    "shakespeare-char": "nanoGPT's character-level Shakespeare on a GPU: 6 layers, 384 wide, block 256 (the default with CUDA)",
    "shakespeare-char-cpu": "the same data, a model a CPU trains in minutes: 4 layers, 128 wide, block 64 "
                            "(the default without CUDA)",
    "gpt2-124m": "GPT-2 small with the GPT-2 tokenizer, nanoGPT's train_gpt2 per GPU (use with --data or --input)",
    **{name: f"GPT-3 {name.removeprefix('gpt3-')} (table 2.1: {n_layer} layers, {n_embd} wide, context 2048, dense and "
             f"banded layers in turn, {batch // 2**10}K-token batches)"
       for name, (n_layer, n_embd, _, batch, *_) in GPT3_SIZES.items()},
}


def default_preset(cuda_available: bool) -> str:
    return "shakespeare-char" if cuda_available else "shakespeare-char-cpu"


def build_arg_parser(preset: str = "shakespeare-char-cpu", prog: str = "python -m gpt.train") -> argparse.ArgumentParser:
    """The trainer's flags; each help line names the value a run with this preset uses."""
    presets = "; ".join(f"{name}: {summary}" for name, summary in PRESET_SUMMARIES.items())
    parser = ArgumentParser(prog=prog, description="Train a GPT. Every field of the configuration is a flag. "
                            f"Presets: {presets}. The defaults shown are those of preset {preset}; "
                            "--preset NAME --help shows another's.")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help=f"named configuration applied before the other flags (default here: {preset})")
    effective = TrainConfig.from_flat(PRESETS[preset])
    for f in _flag_fields():
        flags = [f"--{f.name}"] + ([f"--{f.name.replace('_', '-')}"] if "_" in f.name else [])
        doc = gpt_kernels.registry.spec_help() if f.name == "kernels" else f.metadata["doc"]
        value = getattr(effective.model if f.name in MODEL_FLAGS else effective, f.name)
        source = f", from preset {preset}" if f.name in PRESETS[preset] else ""
        if f.name in DERIVED:
            value, source = f"{DERIVED[f.name][0]}, here {value:g}", ""
        if str(f.type).startswith("bool"):
            parser.add_argument(*flags, dest=f.name, type=parse_bool, nargs="?", const=True, default=None,
                                metavar="true|false", help=f"{doc} (default: {value}{source})")
            parser.add_argument(f"--no-{f.name.replace('_', '-')}", *([f"--no_{f.name}"] if "_" in f.name else []),
                                dest=f.name, action="store_false", default=None, help=argparse.SUPPRESS)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).removesuffix(" | None"), str)
            shown = value if f.name in DERIVED else repr(value)
            parser.add_argument(*flags, dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                                help=f"{doc} (default: {shown}{source})")
    return parser


def out_dir_for_the_data(values: dict) -> str:
    """A preset's folder names Tiny Shakespeare: a run on other data is written to out-<its name> instead."""
    default, text = values.get("out_dir", "out"), values.get("input") or values.get("data")
    if default != "out-shakespeare-char" or not text:
        return default
    path = Path(text)
    if is_tiny_shakespeare(path):
        return default
    return f"out-{(path.stem if path.is_file() else path.name) or 'run'}"


def config_from_args(argv: list[str] | None = None, *, cuda_available: bool = False) -> tuple[TrainConfig, str, set[str]]:
    """Parse argv into a TrainConfig; returns it, the preset applied and the flags given explicitly."""
    pre = argparse.ArgumentParser(add_help=False)  # the preset first: --help shows its values
    pre.add_argument("--preset")
    named = pre.parse_known_args(argv)[0].preset
    preset = named if named in PRESETS else default_preset(cuda_available)  # a bad name: the parser below says so
    parser = build_arg_parser(preset)
    args = parser.parse_args(argv)
    explicit = {name for name, value in vars(args).items() if name != "preset" and value is not None}
    values = dict(PRESETS[preset]) | {name: getattr(args, name) for name in explicit}
    if "out_dir" not in explicit:
        values["out_dir"] = out_dir_for_the_data(values)
    try:
        return TrainConfig.from_flat(values), preset, explicit
    except ValueError as err:
        parser.error(str(err))


__all__ = ["GPTConfig", "TrainConfig", "PRESETS", "MODEL_FLAGS", "ArgumentParser", "UsageError", "fail",
           "config_from_args", "build_arg_parser"]
