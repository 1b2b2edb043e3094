"""The plan of a training run: every decision made once, from the command line, the preset, a resumed
run's checkpoint and a pretrained model, before anything is built (gpt.train builds from it and loops).

Decided here and only here: the data a resumed run continues on; a pretrained model's shape and
vocabulary (its config.json read once); device, dtype and kernels; the prepared data (--input FILE is
prepared into the cache by gpt.prepare); the vocabulary; the evaluation set. What cannot run is refused
here, before a byte is written or a weight allocated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

import gpt_kernels

from . import checkpoint, hf
from .config import MODEL_FLAGS, GPTConfig, TrainConfig, UsageError
from .data import GPT2_VOCAB, SHAKESPEARE_CHARS, ShardedData, default_cache_dir, download_shakespeare
from .device import resolve_device_dtype
from .distributed import Distributed
from .eval import load_examples
from .memory import check_fits
from .prepare import prepare_text

RUN_FILES = ("last.safetensors", "last.state.pt", "best.safetensors", "metrics.jsonl", "loss.png")


@dataclass(frozen=True)
class Plan:
    """Everything a run decides, decided once by make_plan from the command line, the preset, a resumed
    run's checkpoint and a pretrained model; the build and the loop read it and never re-derive it."""

    cfg: TrainConfig  # the flags, with a resumed run's own data and a pretrained model's shape
    preset: str
    world: Distributed
    device: torch.device
    dtype: torch.dtype
    ops: gpt_kernels.Kernels  # the backends of every op
    model: GPTConfig  # the shape, with the vocabulary: the data's, or a pretrained model's padded one
    tokenizer: dict  # what checkpoints record and gpt.sample rebuilds the tokenizer from
    data: ShardedData | None  # the prepared folder; None with --synthetic_data
    pretrained: str  # weights to start from ("": none, or a resumed run's own)
    hellaswag: list | None  # the examples of --eval_hellaswag
    compiled: bool
    resumed_changes: tuple[str, ...] = ()  # a resumed run's settings this command changes, "--name old -> new"

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)


def make_plan(cfg: TrainConfig, explicit: set[str] = frozenset(), preset: str = "",
              world: Distributed | None = None) -> Plan:
    """Decide, in order: the data a resumed run continues on, a pretrained model's shape and vocabulary,
    device, dtype and kernels, the data and the vocabulary, the evaluation set; refuse what cannot run
    before a byte is written or a weight allocated. explicit: the flags the command line gave."""
    world = world or Distributed()
    changes = ()
    if cfg.resume:  # a run continues on its own data unless the command names other data
        saved = saved_run_config(Path(cfg.out_dir))
        cfg = dataclasses.replace(cfg, **resumed_data(saved, explicit, cfg))
        changes = changed_settings(saved, cfg)
    pretrained = hf.read_config(cfg.init_from) if cfg.init_from else None  # its config.json, read once
    if pretrained:
        shape = hf.gpt_config_from_hf(pretrained, dropout=cfg.model.dropout)
        tokenizer_kind = hf.tokenizer_of(pretrained)["kind"]
        refuse_contradictions(cfg, explicit, shape, tokenizer_kind)
        cfg = dataclasses.replace(cfg, model=shape, tokenizer=tokenizer_kind)
    device, dtype = resolve_device_dtype(cfg, world.local_rank)
    ops = gpt_kernels.resolve(cfg.kernels, device, cfg.auto_table or gpt_kernels.registry.AUTO_TABLE)
    if world.is_main:
        claim_out_dir(Path(cfg.out_dir), cfg.resume, cfg.overwrite)
    if cfg.gradient_accumulation_steps % world.world_size:
        raise UsageError(f"--gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                         f"by the number of processes ({world.world_size}) to keep the global batch")

    # The data, and the vocabulary: the data's, padded to a pretrained model's
    if cfg.synthetic_data:
        data, tokenizer = None, {"kind": "synthetic",
                                 "vocab_size": GPT2_VOCAB if cfg.tokenizer == "gpt2" else SHAKESPEARE_CHARS}
    else:
        chars = hf.tokenizer_of(pretrained).get("chars") if pretrained else None  # a character model's own
        data = ShardedData(cfg.data or prepared_input(cfg.input, cfg.tokenizer, cfg.data_cache, chars, world),
                           cfg.data_cache or None)
        tokenizer = data.meta
    vocab_size = tokenizer["vocab_size"]
    if pretrained:
        if vocab_size > pretrained["vocab_size"]:
            raise ValueError(f"the data has {vocab_size} token ids, the pretrained model {cfg.init_from} "
                             f"only {pretrained['vocab_size']}")
        vocab_size = pretrained["vocab_size"]

    hellaswag = None
    if cfg.eval_hellaswag:
        if cfg.synthetic_data:
            raise UsageError("--eval_hellaswag needs a text tokenizer; --synthetic_data has none")
        if cfg.fsdp and world.enabled:
            raise UsageError("--eval_hellaswag with --fsdp is not supported: the ranks would run different "
                             "numbers of forward passes over sharded weights")
        hellaswag = load_examples(cfg.eval_hellaswag)
    check_fits(cfg, tokenizer["vocab_size"], device, dtype, ops.chosen["attention"].name, world.world_size)
    return Plan(cfg, preset, world, device, dtype, ops, dataclasses.replace(cfg.model, vocab_size=vocab_size),
                tokenizer, data, "" if cfg.resume else cfg.init_from, hellaswag,
                cfg.compile if cfg.compile is not None else device.type == "cuda", changes)


def saved_run_config(out_dir: Path) -> dict | None:
    """The TrainConfig (as a dict) the run in out_dir was started with, from its last checkpoint's header."""
    last = out_dir / "last.safetensors"
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume in --out_dir {out_dir}: it has no last.safetensors "
                                "(name the run's folder with --out_dir, or start a new run without --resume)")
    return checkpoint.saved_train_config(last)  # a damaged file is reported here, before any data is sought


NOT_COMPARED = {"resume", "overwrite", "out_dir", "progress", "model"}  # a command's own, or checked elsewhere


def changed_settings(saved: dict | None, cfg: TrainConfig) -> tuple[str, ...]:
    """The settings of a resumed run that this command changes, by its flags or its preset's defaults."""
    if not saved:
        return ()
    now = dataclasses.asdict(cfg)
    changes = [f"--{name} {saved[name]} -> {value}" for name, value in now.items()
               if name not in NOT_COMPARED and name in saved and saved[name] != value]
    dropout = saved.get("model", {}).get("dropout", cfg.model.dropout)
    if dropout != cfg.model.dropout:
        changes.append(f"--dropout {dropout} -> {cfg.model.dropout}")
    return tuple(changes)


def resumed_data(saved: dict | None, explicit: set[str], cfg: TrainConfig) -> dict:
    """The data flags of the run, as its checkpoint records them, but those the command gives."""
    if not saved or explicit & {"input", "data", "tokenizer"}:
        return {}
    return {"input": saved["input"], "data": saved.get("data", ""), "tokenizer": saved["tokenizer"],
            "data_cache": cfg.data_cache if "data_cache" in explicit else saved["data_cache"],
            "init_from": cfg.init_from if "init_from" in explicit else saved.get("init_from", "")}


def refuse_contradictions(cfg: TrainConfig, explicit: set[str], shape: GPTConfig, tokenizer: str) -> None:
    """--init_from: the model's shape and tokenizer are the pretrained model's; a flag given on the command
    line that says otherwise is an error naming both."""
    contradicted = [f"--{name} {getattr(cfg.model, name)} (the pretrained model has {getattr(shape, name)})"
                    for name in MODEL_FLAGS if name in explicit and getattr(cfg.model, name) != getattr(shape, name)]
    if contradicted:
        raise UsageError(f"--init_from {cfg.init_from}: the model's shape comes from it, and "
                         f"{'; '.join(contradicted)} contradicts it: drop the flag")
    if "tokenizer" in explicit and cfg.tokenizer != tokenizer:
        raise UsageError(f"--init_from {cfg.init_from}: the model reads {tokenizer} tokens, not --tokenizer {cfg.tokenizer}")


def claim_out_dir(out_dir: Path, resume: bool, overwrite: bool) -> None:
    """A new run never replaces another run's files by accident: it needs --overwrite true for that."""
    found = [] if resume else [name for name in RUN_FILES if (out_dir / name).exists()]
    if found and not overwrite:
        resumable = "last.safetensors" in found  # a run stopped before its first checkpoint cannot be continued
        raise UsageError(f"--out_dir {out_dir} holds another run ({', '.join(found)}): "
                         + ("continue it with --resume true, replace" if resumable else "it saved no checkpoint to "
                            "continue from: replace") + " it with --overwrite true, or choose another --out_dir")
    for name in found:
        (out_dir / name).unlink()


def prepared_input(path: str, tokenizer: str, data_cache: str, chars: list[str] | None, world: Distributed) -> Path:
    """--input FILE (Tiny Shakespeare without one) as a prepared folder in the cache, made once: by one
    process a machine under torchrun while the others wait, then find it made."""
    cache = Path(data_cache) if data_cache else default_cache_dir()

    def prepare() -> Path:
        return prepare_text(path or download_shakespeare(cache), tokenizer, cache, chars)

    folder = prepare() if world.local_rank == 0 else None
    world.barrier()
    return folder or prepare()
