"""Train a GPT: `python -m gpt.train [--preset NAME] [--field value ...]`.

With no arguments: the shakespeare-char preset on a CUDA machine, shakespeare-char-cpu otherwise.
Several GPUs or nodes: `torchrun --nproc_per_node N -m gpt.train ...` (DDP; --fsdp true for FSDP2).
Writes to --out_dir: best/last checkpoints, metrics.jsonl, loss.png.

The loop reads the GPU's results on the host only at log points (every --log_interval iterations,
and before every evaluation): there it logs, and decides together with every other rank whether to
stop (a signal, the time budget, a non-finite step under --nonfinite stop). Between log points
nothing waits for the GPU: a non-finite step is skipped and counted on the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

import gpt_kernels

from . import checkpoint, hf
from .config import MODEL_FLAGS, TrainConfig, UsageError, config_from_args, fail
from .data import (
    GPT2_VOCAB,
    SHAKESPEARE_CHARS,
    BatchSampler,
    ShardedData,
    SyntheticSampler,
    default_cache_dir,
    download_shakespeare,
    tokenizer_from_meta,
)
from .device import peak_flops, resolve_device_dtype
from .distributed import Distributed, init_distributed
from .eval import evaluate as hellaswag_scores
from .eval import load_examples
from .memory import check_fits
from .model import GPT
from .prepare import prepare_text
from .signals import StopSignals


def learning_rate(it: int, cfg: TrainConfig, tokens_seen: int = 0) -> float:
    """Linear warmup, then cosine decay to min_lr, then constant: over iterations (warmup_iters,
    lr_decay_iters), or over the tokens seen before this step (warmup_tokens, decay_tokens) where given."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    at, warmup, end = (tokens_seen, cfg.warmup_tokens, cfg.decay_tokens) if cfg.decay_tokens else (
        it, cfg.warmup_iters, cfg.lr_decay_iters)
    if at < warmup:
        return cfg.learning_rate * (at + 1) / (warmup + 1)
    if at >= end:
        return cfg.min_lr
    ratio = (at - warmup) / max(1, end - warmup)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


RAMP_START_TOKENS = 32768  # GPT-3's first batch (appendix B: "a small value (32k tokens)")


def accumulation_steps(tokens_seen: int, cfg: TrainConfig, world_size: int = 1) -> int:
    """Micro-steps on each rank for the next optimizer step. With --batch_ramp_tokens the batch grows linearly
    with the tokens seen, from the micro-steps that hold RAMP_START_TOKENS (at least one) to the full batch."""
    full = cfg.gradient_accumulation_steps // world_size
    if tokens_seen >= cfg.batch_ramp_tokens:
        return full
    micro_step = cfg.batch_size * cfg.model.block_size * world_size  # tokens of one micro-step on every rank
    target = RAMP_START_TOKENS + (cfg.tokens_per_iter - RAMP_START_TOKENS) * tokens_seen / cfg.batch_ramp_tokens
    return min(full, max(1, round(target / micro_step)))


RUN_FILES = ("last.safetensors", "last.state.pt", "best.safetensors", "metrics.jsonl", "loss.png")


def claim_out_dir(out_dir: Path, cfg: TrainConfig) -> None:
    """A new run never replaces another run's files by accident: it needs --overwrite true for that."""
    if cfg.resume:
        return
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if not cfg.overwrite:
        raise UsageError(f"--out_dir {out_dir} holds another run ({', '.join(found)}): continue it with "
                         "--resume true, replace it with --overwrite true, or choose another --out_dir")
    for name in found:
        (out_dir / name).unlink()


def with_the_runs_own_data(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """--resume continues on the data the run was started with, unless the command names other data."""
    if not cfg.resume:
        return cfg
    last = Path(cfg.out_dir) / "last.safetensors"
    if not last.is_file():
        raise FileNotFoundError(f"nothing to resume in --out_dir {cfg.out_dir}: it has no last.safetensors "
                                "(name the run's folder with --out_dir, or start a new run without --resume)")
    if explicit & {"input", "data", "tokenizer"}:
        return cfg
    saved = checkpoint.saved_train_config(last)  # a damaged file is reported here, before any data is sought
    if not saved:
        return cfg
    cache = cfg.data_cache if "data_cache" in explicit else saved["data_cache"]
    init_from = cfg.init_from if "init_from" in explicit else saved.get("init_from", "")
    return dataclasses.replace(cfg, input=saved["input"], data=saved.get("data", ""), tokenizer=saved["tokenizer"],
                               data_cache=cache, init_from=init_from)


def with_pretrained_shape(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """--init_from: the model's shape and tokenizer are the pretrained model's; a shape flag given on the
    command line that says otherwise is an error naming both."""
    if not cfg.init_from:
        return cfg
    values = hf.read_config(cfg.init_from)
    pretrained = hf.gpt_config_from_hf(values, dropout=cfg.model.dropout)
    contradicted = [f"--{name} {getattr(cfg.model, name)} (the pretrained model has {getattr(pretrained, name)})"
                    for name in MODEL_FLAGS if name in explicit and getattr(cfg.model, name) != getattr(pretrained, name)]
    if contradicted:
        raise UsageError(f"--init_from {cfg.init_from}: the model's shape comes from it, and "
                         f"{'; '.join(contradicted)} contradicts it: drop the flag")
    tokenizer = hf.tokenizer_of(values)["kind"]
    if "tokenizer" in explicit and cfg.tokenizer != tokenizer:
        raise UsageError(f"--init_from {cfg.init_from}: the model reads {tokenizer} tokens, not --tokenizer {cfg.tokenizer}")
    return dataclasses.replace(cfg, model=dataclasses.replace(pretrained, vocab_size=cfg.model.vocab_size),
                               tokenizer=tokenizer)


class Trainer:
    def __init__(self, cfg: TrainConfig, preset: str = "", world: Distributed | None = None):
        self.cfg = cfg
        self.world = world or Distributed()
        self.device, self.dtype = resolve_device_dtype(cfg, self.world.local_rank)
        self.ops = gpt_kernels.resolve(cfg.kernels, self.device,  # decided once, before anything runs
                                   cfg.auto_table or gpt_kernels.registry.AUTO_TABLE)
        self.out_dir = Path(cfg.out_dir)
        if self.world.is_main:
            claim_out_dir(self.out_dir, cfg)
        if cfg.gradient_accumulation_steps % self.world.world_size:
            raise UsageError(f"--gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                             f"by the number of processes ({self.world.world_size}) to keep the global batch")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank

        rank, size = self.world.rank, self.world.world_size
        init = hf.read_config(cfg.init_from) if cfg.init_from else None  # the pretrained model's config.json
        chars = hf.tokenizer_of(init).get("chars") if init else None  # a character model's own vocabulary
        if cfg.synthetic_data:
            vocab_size = GPT2_VOCAB if cfg.tokenizer == "gpt2" else SHAKESPEARE_CHARS
            self.tokenizer_meta = {"kind": "synthetic", "vocab_size": vocab_size}
            self.make_sampler = lambda split, seed, rank=0, size=1: SyntheticSampler(
                vocab_size, cfg.model.block_size, cfg.batch_size, self.device, seed, rank, size)
        else:
            data = ShardedData(cfg.data or self.prepared_input(chars), cfg.data_cache or None)
            self.tokenizer_meta = data.meta
            vocab_size = data.vocab_size
            self.make_sampler = lambda split, seed, rank=0, size=1: BatchSampler(
                data.tokens(split), cfg.model.block_size, cfg.batch_size, self.device, seed, split, rank, size)
            self.make_sampler("val", 0)  # fail now, not at the first evaluation, if val is too short
        self.train_batches = self.make_sampler("train", cfg.seed, rank, size)
        self.hellaswag = None  # the examples of --eval_hellaswag, scored at every evaluation
        if cfg.eval_hellaswag:
            if cfg.synthetic_data:
                raise UsageError("--eval_hellaswag needs a text tokenizer; --synthetic_data has none")
            if cfg.fsdp and self.world.enabled:
                raise UsageError("--eval_hellaswag with --fsdp is not supported: the ranks would run different "
                                 "numbers of forward passes over sharded weights")
            self.hellaswag = load_examples(cfg.eval_hellaswag)
            self.tokenizer = tokenizer_from_meta(self.tokenizer_meta)
        check_fits(cfg, vocab_size, self.device, self.dtype, self.ops.chosen["attention"].name, self.world.world_size)

        if init:  # the pretrained vocabulary, which may be padded beyond the tokenizer's
            if vocab_size > init["vocab_size"]:
                raise ValueError(f"the data has {vocab_size} token ids, the pretrained model {cfg.init_from} "
                                 f"only {init['vocab_size']}")
            vocab_size = init["vocab_size"]
        self.model_config = dataclasses.replace(cfg.model, vocab_size=vocab_size)
        self.model = GPT(self.model_config, self.ops)
        self.model.activation_checkpointing = cfg.activation_checkpointing
        if init and not cfg.resume:
            self.model.load_state_dict(hf.load_state(cfg.init_from))
            self.log(f"initialised from {cfg.init_from}")
        self.model.to(self.device)
        torch.manual_seed(cfg.seed + self.world.rank)  # per-rank dropout streams
        self.iter_num, self.best_val_loss, self.tokens_seen = 0, float("inf"), 0
        saved = self.load_last() if cfg.resume else None
        self.fsdp = cfg.fsdp and self.world.enabled
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            for block in self.model.transformer.h:
                fully_shard(block)
            fully_shard(self.model)
        # Fused: one kernel for the whole update, and the way to skip a step on the device (found_inf)
        self.optimizer = self.model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                                        fused=True)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        if saved is not None:
            self.restore_optimizer(saved)
        self.autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())
        use_compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        self.compiled = use_compile
        self.first_step_s = 0.0  # the first training step and the first evaluation: compilation and
        self.first_eval_s = 0.0  # autotuning happen there, so the records give training time apart from them
        self.forward = torch.compile(self.model, mode=cfg.compile_mode) if use_compile else self.model
        if self.world.enabled and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.peak = peak_flops(self.device, self.dtype)
        self.flops_per_token = self.model.flops_per_token()
        self.signals = StopSignals()
        # Counted on the device between log points: non-finite steps, and the first one's iteration
        self.nonfinite_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=self.device)
        mode = f"{'FSDP' if self.fsdp else 'DDP'} x{self.world.world_size} | " if self.world.enabled else ""
        self.log(f"preset {preset or '-'} | {mode}device {self.device} {str(self.dtype).removeprefix('torch.')} | "
                 f"compile {cfg.compile_mode if use_compile else False} | kernels {self.ops.spec()}"
                 + (f" ({self.ops.origin})" if self.ops.origin else ""))
        for note in self.ops.notes:
            self.log(f"note: {note}")
        self.log(f"{self.model.num_params() / 1e6:.2f}M parameters | vocab {vocab_size} | "
                 f"{cfg.tokens_per_iter:,} tokens per iteration")

    def prepared_input(self, chars: list[str] | None) -> Path:
        """--input FILE (Tiny Shakespeare without one) as a prepared folder in the cache, made once: by one
        process a machine under torchrun while the others wait."""
        cache = Path(self.cfg.data_cache) if self.cfg.data_cache else default_cache_dir()
        if self.world.local_rank == 0:
            folder = prepare_text(self.cfg.input or download_shakespeare(cache), self.cfg.tokenizer, cache, chars)
        self.world.barrier()
        if self.world.local_rank != 0:
            folder = prepare_text(self.cfg.input or download_shakespeare(cache), self.cfg.tokenizer, cache, chars)
        return folder

    def log(self, message: str) -> None:
        if self.world.is_main:
            print(message, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def save(self, tag: str) -> None:
        """Write <tag>.safetensors (and for "last" the training state). Collective under torchrun."""
        weights, optimizer = checkpoint.full_state(self.model, self.optimizer, self.fsdp, with_optimizer=tag == "last")
        rngs = [checkpoint.rng_state(self.device)]
        if self.world.enabled:
            mine, rngs = rngs[0], [None] * self.world.world_size
            dist.all_gather_object(rngs, mine)
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save_weights(self.out_dir / f"{tag}.safetensors", weights, self.model_config,
                                    self.tokenizer_meta, dataclasses.asdict(self.cfg))
            if tag == "last":
                checkpoint.save_train_state(self.out_dir / "last.state.pt", {
                    "iter_num": self.iter_num, "best_val_loss": self.best_val_loss, "tokens_seen": self.tokens_seen,
                    "optimizer": optimizer,
                    "optimizer_format": "fsdp-full" if self.fsdp else "plain", "scaler": self.scaler.state_dict(),
                    "train_batches": self.train_batches.state_dict(), "rng": rngs,
                    "train_config": dataclasses.asdict(self.cfg), "gpt_config": self.model_config.to_dict(),
                    "kernels": self.ops.spec()})
        if self.world.enabled:
            dist.barrier()

    def load_last(self) -> dict:
        """Load last.safetensors into the (not yet sharded) model; return the training state."""
        state = checkpoint.load_train_state(self.out_dir / "last.state.pt")
        weights, saved_config, saved_tokenizer = checkpoint.load_weights(self.out_dir / "last.safetensors", self.device)
        checkpoint.check_resumable(self.out_dir, saved_config, self.model_config, saved_tokenizer, self.tokenizer_meta)
        self.model.load_state_dict(weights)
        self.train_batches.load_state_dict(state["train_batches"])
        rngs = state["rng"]
        if len(rngs) == self.world.world_size:
            checkpoint.set_rng_state(rngs[self.world.rank], self.device)
        else:
            self.log(f"note: the checkpoint was written by {len(rngs)} processes, now {self.world.world_size}: "
                     "dropout streams start afresh (the data order continues)")
        self.iter_num, self.best_val_loss = state["iter_num"], state["best_val_loss"]
        # a checkpoint from before the token schedule: every step had the full batch
        self.tokens_seen = state.get("tokens_seen", self.iter_num * self.cfg.tokens_per_iter)
        self.log(f"resuming from {self.out_dir} at iteration {self.iter_num}")
        return state

    def restore_optimizer(self, state: dict) -> None:
        expected = "fsdp-full" if self.fsdp else "plain"
        if state["optimizer_format"] != expected:
            raise ValueError(f"cannot resume: the optimizer state was saved {'with' if not self.fsdp else 'without'} "
                             "FSDP; resume with the same --fsdp setting")
        self.scaler.load_state_dict(state["scaler"])
        checkpoint.load_optimizer(self.model, self.optimizer, self.fsdp, state["optimizer"])

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over the same eval_iters batches of each split at every evaluation (and on every rank)."""
        self.model.eval()
        totals = torch.zeros(2, device=self.device)
        for i, split in enumerate(("train", "val")):
            batches = self.make_sampler(split, 0)
            for _ in range(self.cfg.eval_iters):
                x, y = batches.next_batch()
                with self.autocast:
                    _, loss = self.forward(x, y)
                totals[i] += loss.float()
        self.model.train()
        train_total, val_total = totals.tolist()
        return {"train": train_total / self.cfg.eval_iters, "val": val_total / self.cfg.eval_iters}

    # ------------------------------------------------------------------ one optimisation step

    def _sync_gradients(self, last_micro_step: bool):
        """Gradients are all-reduced on the last micro-step only (forward included for DDP)."""
        if not self.world.enabled:
            return contextlib.nullcontext()
        if self.fsdp:
            self.model.set_requires_gradient_sync(last_micro_step)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last_micro_step else self.forward.no_sync()

    def train_step(self, lr: float, accum: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward and backward over accum micro-batches, clip, step. Returns, on the device and unread: the loss
        (mean over micro-batches and ranks), the gradient norm, and whether the step was non-finite (and so skipped)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(accum):
            x, y = self.train_batches.next_batch()
            with self._sync_gradients(micro == accum - 1):
                with self.autocast:
                    _, loss = self.forward(x, y)
                total += loss.detach().float()
                self.scaler.scale(loss / accum).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        # The mean over ranks, the figure to log; it also makes the skip decision the same on every rank.
        loss = self.world.all_reduce(total / accum) / self.world.world_size
        if self.scaler.is_enabled():
            # fp16: an inf gradient is routine and the scaler skips that step itself (as it does a
            # non-finite loss, whose gradients are non-finite); only the loss counts as a fault
            nonfinite = ~torch.isfinite(loss)
            self.scaler.step(self.optimizer)
        else:
            nonfinite = ~(torch.isfinite(loss) & torch.isfinite(grad_norm))
            # the fused AdamW leaves weights, moments and step count as they were where found_inf is 1
            self.optimizer.found_inf = nonfinite.float()
            self.optimizer.step()
            del self.optimizer.found_inf
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, nonfinite

    # ------------------------------------------------------------------ the loop

    def read_log_point(self, loss: torch.Tensor, grad_norm: torch.Tensor, past_budget: bool) -> dict:
        """The loop's one host sync between evaluations: the newest step's loss and gradient norm, the
        non-finite steps since the last log point, and whether any rank was signalled or is past the
        time budget (so every rank stops at the same iteration)."""
        stop = torch.tensor([self.signals.received is not None, past_budget], dtype=torch.float32,
                            device=self.device)
        self.world.all_reduce(stop, "max")
        loss, grad_norm, nonfinite, first, signalled, out_of_time = torch.cat([torch.stack(
            [loss.float(), grad_norm.float(), self.nonfinite_steps.float(), self.first_nonfinite.float()]),
            stop]).tolist()
        self.nonfinite_steps.zero_()
        self.first_nonfinite.fill_(-1)
        return {"loss": loss, "grad_norm": grad_norm, "nonfinite_steps": int(nonfinite),
                "first_nonfinite": int(first), "signalled": bool(signalled), "out_of_time": bool(out_of_time)}

    def run(self) -> dict:
        cfg = self.cfg
        metrics_path = self.out_dir / "metrics.jsonl"
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            kept = []
            if cfg.resume and metrics_path.exists():  # drop records past the checkpoint we resume from
                kept = [line for line in metrics_path.read_text().splitlines()
                        if line and json.loads(line)["iter"] < self.iter_num]
            metrics_path.write_text("".join(line + "\n" for line in kept))
        metrics = open(metrics_path, "a") if self.world.is_main else None
        in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers need it
        start, t0 = self.iter_num, time.perf_counter()
        progress = Progress(cfg.max_iters, start, cfg.progress and self.world.is_main)
        last_log_time, last_log_tokens = t0, self.tokens_seen
        summary = {"iter": start, "best_val_loss": self.best_val_loss}
        point = {"signalled": False, "out_of_time": False}  # what the last log point read
        unread = None  # the newest step's (loss, grad norm), when no log point has read it yet
        try:
            with self.signals if in_main_thread else contextlib.nullcontext():
                while True:
                    it = self.iter_num
                    evaluate = it % cfg.eval_interval == 0 or it == cfg.max_iters or point["out_of_time"]
                    if unread is not None and (evaluate or it >= cfg.max_iters):
                        point = self.check(it - 1, *unread, time.perf_counter() - t0)  # before anything is saved
                        unread = None
                        evaluate = evaluate or point["out_of_time"]
                    if point["signalled"]:
                        self.save("last")
                        progress.close()  # nothing is printed after the stop message
                        name = signal.Signals(self.signals.received or signal.SIGTERM).name
                        self.log(f"\n{name} received: finished iteration {it - 1}, saved {self.out_dir}/last.*; "
                                 "continue with --resume true")
                        return summary | {"iter": it, "stopped_by": name}
                    out_of_time = point["out_of_time"]
                    record = {}
                    if evaluate and not (cfg.resume and it == start):
                        eval_start = time.perf_counter()
                        losses = self.estimate_loss()
                        if it == start:
                            self.first_eval_s = time.perf_counter() - eval_start
                        record = {"train_eval_loss": losses["train"], "val_loss": losses["val"],
                                  "warmup_s": self.first_step_s + self.first_eval_s}
                        if self.world.is_main:
                            progress.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                                           f" ({time.perf_counter() - t0:.1f} s)")
                        if self.hellaswag:
                            scores = hellaswag_scores(self.model, self.hellaswag, self.tokenizer, self.device,
                                                      self.autocast, self.world.rank, self.world.world_size)
                            record |= {"hellaswag_acc": scores.acc, "hellaswag_acc_norm": scores.acc_norm,
                                       "hellaswag_examples": scores.examples, "hellaswag_unscorable": scores.unscorable}
                            if self.world.is_main:
                                progress.write(f"iter {it}: {scores.summary()}")
                        if losses["val"] < self.best_val_loss:
                            self.best_val_loss = losses["val"]
                            self.save("best")
                        self.save("last")
                        summary = {"iter": it, "val_loss": losses["val"], "best_val_loss": self.best_val_loss}
                    reached = bool(record) and 0 < cfg.target_val_loss and record["val_loss"] <= cfg.target_val_loss
                    if it >= cfg.max_iters or cfg.eval_only or out_of_time or reached:
                        if record and metrics:
                            metrics.write(json.dumps({"iter": it, "elapsed_s": time.perf_counter() - t0} | record) + "\n")
                        summary["elapsed_s"] = time.perf_counter() - t0
                        summary["first_step_s"] = self.first_step_s  # compilation and autotuning: elapsed_s includes it
                        if out_of_time or reached:
                            summary["stopped_by"] = "time budget" if out_of_time else "target val loss"
                        return summary
                    lr = learning_rate(it, cfg, self.tokens_seen)
                    accum = accumulation_steps(self.tokens_seen, cfg, self.world.world_size)
                    step_start = time.perf_counter()
                    loss, grad_norm, nonfinite = self.train_step(lr, accum)
                    batch_tokens = accum * self.world.world_size * cfg.batch_size * cfg.model.block_size
                    self.tokens_seen += batch_tokens
                    self.nonfinite_steps += nonfinite
                    self.first_nonfinite = torch.where(nonfinite & (self.first_nonfinite < 0), it, self.first_nonfinite)
                    self.iter_num += 1
                    unread = (loss, grad_norm)
                    if it % cfg.log_interval == 0 or it == start or record:
                        point = self.check(it, *unread, time.perf_counter() - t0)
                        unread = None
                        if it == start:
                            self.first_step_s = time.perf_counter() - step_start
                            self.note_first_step(it)
                        now = time.perf_counter()
                        tok_per_s = (self.tokens_seen - last_log_tokens) / (now - last_log_time)
                        mfu = self.flops_per_token * tok_per_s / self.peak if self.peak else None
                        record = {"iter": it, "loss": point["loss"], "grad_norm": point["grad_norm"], "lr": lr,
                                  "tokens": self.tokens_seen, "batch_tokens": batch_tokens, "tok_per_s": tok_per_s,
                                  "mfu": mfu, "elapsed_s": now - t0} | record
                        if point["nonfinite_steps"]:
                            record |= {"nonfinite_steps": point["nonfinite_steps"],
                                       "first_nonfinite": point["first_nonfinite"]}
                        if metrics:
                            metrics.write(json.dumps(record) + "\n")
                            metrics.flush()
                        progress.record(record)
                        last_log_time, last_log_tokens = now, self.tokens_seen
                    progress.update()
        finally:
            progress.close()
            if metrics:
                metrics.close()
                plot_losses(metrics_path, self.out_dir / "loss.png")

    def check(self, it: int, loss: torch.Tensor, grad_norm: torch.Tensor, elapsed: float) -> dict:
        """A log point after iteration it: read it, and act on non-finite steps since the last one."""
        point = self.read_log_point(loss, grad_norm, 0 < self.cfg.max_seconds < elapsed)
        if point["nonfinite_steps"]:
            message = (f"non-finite loss or gradient at iteration {point['first_nonfinite']}"
                       + (f" and {point['nonfinite_steps'] - 1} more step(s) up to iteration {it}"
                          if point["nonfinite_steps"] > 1 else ""))
            if self.cfg.nonfinite == "stop":
                raise FloatingPointError(f"{message}: stopped. The last good checkpoint in {self.out_dir} "
                                         "is intact; resume from it with --resume true (perhaps with a "
                                         "lower --learning_rate), or pass --nonfinite skip")
            self.log(f"{message}: skipped")
        return point

    def note_first_step(self, it: int) -> None:
        seconds = self.first_step_s
        uses_triton = "triton" in self.ops.names().values()
        if self.device.type == "cpu" and uses_triton:
            self.log(f"note: the Triton interpreter took {seconds:.1f} s for this iteration: {self.cfg.max_iters - it} "
                     f"iterations would take about {duration(seconds * (self.cfg.max_iters - it))}")
        elif self.compiled or uses_triton:
            self.log(f"first step: {seconds:.1f} s, compilation and Triton autotuning included")


class Progress:
    """A progress bar on a terminal; one plain line per log record when stdout is a file or a pipe."""

    def __init__(self, total: int, initial: int, enabled: bool):
        from tqdm import tqdm

        self.bar = (tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, file=sys.stdout)
                    if enabled and sys.stdout.isatty() else None)
        self.lines = enabled and self.bar is None

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def record(self, record: dict) -> None:
        mfu = {} if record["mfu"] is None else {"mfu": f"{100 * record['mfu']:.1f}%"}  # none without a known peak
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{record['tok_per_s']:,.0f}", **mfu)
        elif self.lines:
            print(f"iter {record['iter']}: loss {record['loss']:.4f}, {record['tok_per_s']:,.0f} tok/s"
                  + "".join(f", mfu {value}" for value in mfu.values()), flush=True)

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    train = [(r["iter"], r["loss"]) for r in records if "loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if "val_loss" in r]
    schedule = [(r["tokens"], r["lr"], r["batch_tokens"]) for r in records if "batch_tokens" in r]
    fig, (ax, below) = plt.subplots(2, 1, figsize=(7, 6), height_ratios=(2, 1))
    if train:
        ax.plot(*zip(*train), label="train (batch)", alpha=0.6)
    if val:
        ax.plot(*zip(*val), "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    if train or val:  # a run stopped before its first record has none
        ax.legend(loc="upper left")
    hellaswag = [(r["iter"], r["hellaswag_acc_norm"]) for r in records if "hellaswag_acc_norm" in r]
    if hellaswag:
        accuracy_axis = ax.twinx()
        accuracy_axis.plot(*zip(*hellaswag), "s--", color="C4", label="HellaSwag acc_norm")
        accuracy_axis.set_ylabel("HellaSwag acc_norm", color="C4")
        accuracy_axis.legend(loc="upper right")
    ax.grid(alpha=0.3)
    if schedule:  # the schedule against the tokens seen: learning rate, and the batch (ramped or not)
        tokens, lrs, batches = zip(*schedule)
        below.plot(tokens, lrs, color="C2")
        below.set_ylabel("learning rate", color="C2")
        batch_axis = below.twinx()
        batch_axis.step(tokens, batches, where="post", color="C3")
        batch_axis.set_ylabel("batch (tokens)", color="C3")
    below.set_xlabel("tokens seen")
    below.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def duration(seconds: float) -> str:
    """A time to read at a glance: '40 s', '12 min', '3.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def done_line(summary: dict, out_dir: str) -> str:
    """The run's last line: where it stopped, its losses and times, and where its files are."""
    losses = (f"val loss {summary['val_loss']:.4f} (best {summary['best_val_loss']:.4f})" if "val_loss" in summary
              else f"best val loss {summary['best_val_loss']:.4f}")
    stopped = f", stopped by the {summary['stopped_by']}" if "stopped_by" in summary else ""
    elapsed = summary["elapsed_s"]
    return (f"done at iteration {summary['iter']}{stopped}: {losses}, "
            f"{f'{elapsed:.1f} s' if elapsed < 120 else duration(elapsed)} "
            f"(first step {summary['first_step_s']:.1f} s) | checkpoints, metrics.jsonl and loss.png in {out_dir}")


def main(argv: list[str] | None = None) -> dict:
    cfg, preset, explicit = config_from_args(argv, cuda_available=torch.cuda.is_available())
    world = init_distributed()
    try:
        cfg = with_pretrained_shape(with_the_runs_own_data(cfg, explicit), explicit)
        trainer = Trainer(cfg, preset, world)
        summary = trainer.run()
    except (ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as err:
        fail("python -m gpt.train", err)
    finally:
        if world.enabled:
            dist.destroy_process_group()
    if "stopped_by" in summary and summary["stopped_by"] in ("SIGINT", "SIGTERM"):
        raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
    trainer.log(done_line(summary, cfg.out_dir))
    return summary


if __name__ == "__main__":
    main()
