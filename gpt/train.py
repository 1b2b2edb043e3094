"""Train a GPT: `python -m gpt.train [--preset NAME] [--field value ...]`.

With no arguments: the shakespeare-char preset on a CUDA machine, shakespeare-char-cpu otherwise.
Several GPUs or nodes: `torchrun --nproc_per_node N -m gpt.train ...` (DDP; --fsdp true for FSDP2).
Writes to --out_dir: best/last checkpoints, metrics.jsonl, loss.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import kernels

from . import checkpoint
from .config import GPTConfig, TrainConfig, config_from_args
from .data import BatchSampler, SyntheticSampler, prepare
from .model import GPT

# Dense bf16 tensor-core peak FLOP/s by device-name substring; first match wins.
PEAK_BF16_FLOPS = (
    ("H200", 989e12), ("H100", 989e12), ("GH200", 989e12), ("A100", 312e12), ("A800", 312e12),
    ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12), ("A10", 125e12), ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's real bf16/fp16 peak, or None (no MFU) when it is unknown or training in fp32."""
    if device.type != "cuda" or dtype == torch.float32:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def learning_rate(it: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to min_lr at lr_decay_iters, then constant."""
    if not cfg.decay_lr:
        return cfg.learning_rate
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it >= cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Distributed:
    """Join the process group that torchrun describes in the environment (NCCL on GPUs, gloo on CPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Distributed()
    info = Distributed(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if torch.cuda.is_available():
        torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", info.local_rank))
    else:
        dist.init_process_group("gloo")
    return info


def resolve_device_dtype(cfg: TrainConfig, world: Distributed) -> tuple[torch.device, torch.dtype]:
    if cfg.device:
        try:
            device = torch.device(cfg.device)
        except RuntimeError:
            device = None
        if device is None or device.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {cfg.device!r} is not supported; expected cpu, cuda or cuda:N")
    elif torch.cuda.is_available():
        device = torch.device("cuda", world.local_rank)
    else:
        device = torch.device("cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available on this machine")
    if cfg.dtype:
        dtype = getattr(torch, cfg.dtype)
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise ValueError("--dtype float16 needs a CUDA device; use float32 or bfloat16 on the CPU")
    return device, dtype


def activation_bytes(cfg: TrainConfig, vocab_size: int, dtype: torch.dtype, attention: str) -> int:
    """Memory one micro-batch's forward and backward need, roughly (Korthikanti et al. 2022: 34bsh + 5as^2b
    bytes per layer in 16-bit; the s^2 term only where attention materialises its scores), plus the
    logits and their gradient, plus weights, gradients and AdamW's two moments in fp32."""
    m, b = cfg.model, cfg.batch_size
    scale = torch.finfo(dtype).bits / 16
    per_layer = 34 * b * m.block_size * m.n_embd
    if attention == "reference":
        per_layer += 5 * m.n_head * m.block_size ** 2 * b
    params = 12 * m.n_layer * m.n_embd ** 2 + (vocab_size + m.block_size) * m.n_embd
    return int(scale * m.n_layer * per_layer + 3 * b * m.block_size * vocab_size * 4 + 16 * params)


def device_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[1]
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(cfg: TrainConfig, vocab_size: int, device: torch.device, dtype: torch.dtype, attention: str) -> None:
    need, have = activation_bytes(cfg, vocab_size, dtype, attention), device_memory(device)
    if need > have:
        raise ValueError(f"this configuration needs about {need / 2**30:.1f} GiB for one micro-batch (block_size "
                         f"{cfg.model.block_size}, batch_size {cfg.batch_size}, n_layer {cfg.model.n_layer}, n_embd "
                         f"{cfg.model.n_embd}) but {device} has {have / 2**30:.1f} GiB: lower --batch_size or --block_size")


RUN_FILES = ("last.safetensors", "last.state.pt", "best.safetensors", "metrics.jsonl", "loss.png")


def claim_out_dir(out_dir: Path, cfg: TrainConfig) -> None:
    """A new run never replaces another run's files by accident: it needs --overwrite true for that."""
    if cfg.resume:
        return
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        return
    if not cfg.overwrite:
        raise ValueError(f"--out_dir {out_dir} holds another run ({', '.join(found)}): continue it with "
                         "--resume true, replace it with --overwrite true, or choose another --out_dir")
    for name in found:
        (out_dir / name).unlink()


def with_the_runs_own_data(cfg: TrainConfig, explicit: set[str]) -> TrainConfig:
    """--resume continues on the data the run was started with, unless the command names other data."""
    if not cfg.resume or explicit & {"input", "tokenizer"}:
        return cfg
    saved = checkpoint.saved_train_config(Path(cfg.out_dir) / "last.safetensors")
    if not saved:
        return cfg
    cache = cfg.data_cache if "data_cache" in explicit else saved["data_cache"]
    return dataclasses.replace(cfg, input=saved["input"], tokenizer=saved["tokenizer"], data_cache=cache)


class Trainer:
    def __init__(self, cfg: TrainConfig, preset: str = "", world: Distributed | None = None):
        self.cfg = cfg
        self.world = world or Distributed()
        self.device, self.dtype = resolve_device_dtype(cfg, self.world)
        self.ops = kernels.resolve(cfg.kernels, self.device)  # decided once, before anything runs
        self.out_dir = Path(cfg.out_dir)
        if self.world.is_main:
            claim_out_dir(self.out_dir, cfg)
        if cfg.gradient_accumulation_steps % self.world.world_size:
            raise ValueError(f"--gradient_accumulation_steps ({cfg.gradient_accumulation_steps}) must be divisible "
                             f"by the number of processes ({self.world.world_size}) to keep the global batch")
        self.accum = cfg.gradient_accumulation_steps // self.world.world_size  # micro-steps on this rank
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank

        rank, size = self.world.rank, self.world.world_size
        if cfg.synthetic_data:
            vocab_size = 50257 if cfg.tokenizer == "gpt2" else 65
            self.tokenizer_meta = {"kind": "synthetic", "vocab_size": vocab_size}
            self.make_sampler = lambda split, seed, rank=0, size=1: SyntheticSampler(  # noqa: E731
                vocab_size, cfg.model.block_size, cfg.batch_size, self.device, seed, rank, size)
        else:
            data = prepare(cfg.input or None, cfg.tokenizer, cfg.data_cache or None)
            self.tokenizer_meta = data.meta
            vocab_size = data.vocab_size
            self.make_sampler = lambda split, seed, rank=0, size=1: BatchSampler(  # noqa: E731
                data.tokens(split), cfg.model.block_size, cfg.batch_size, self.device, seed, split, rank, size)
            self.make_sampler("val", 0)  # fail now, not at the first evaluation, if val is too short
        self.train_batches = self.make_sampler("train", cfg.seed, rank, size)
        check_fits(cfg, vocab_size, self.device, self.dtype, self.ops.chosen["attention"].name)

        self.model_config = dataclasses.replace(cfg.model, vocab_size=vocab_size)
        self.model = GPT(self.model_config, self.ops).to(self.device)
        torch.manual_seed(cfg.seed + self.world.rank)  # per-rank dropout streams
        self.iter_num, self.best_val_loss = 0, float("inf")
        saved = self.load_last() if cfg.resume else None
        self.fsdp = cfg.fsdp and self.world.enabled
        if self.fsdp:
            from torch.distributed.fsdp import fully_shard

            for block in self.model.transformer.h:
                fully_shard(block)
            fully_shard(self.model)
        self.optimizer = self.model.configure_optimizer(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2),
                                                        fused=self.device.type == "cuda" and not self.fsdp)
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
        self.flops_per_iter = self.model.flops_per_token() * cfg.tokens_per_iter
        self.stop_signal: int | None = None
        mode = f"{'FSDP' if self.fsdp else 'DDP'} x{self.world.world_size} | " if self.world.enabled else ""
        self.log(f"preset {preset or '-'} | {mode}device {self.device} {str(self.dtype).removeprefix('torch.')} | "
                 f"compile {cfg.compile_mode if use_compile else False} | kernels {self.ops.spec()}" + (f" ({self.ops.origin})" if self.ops.origin else ""))
        for note in self.ops.notes:
            self.log(f"note: {note}")
        self.log(f"{self.model.num_params() / 1e6:.2f}M parameters | vocab {vocab_size} | "
                 f"{cfg.tokens_per_iter:,} tokens per iteration")

    def log(self, message: str) -> None:
        if self.world.is_main:
            print(message, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def save(self, tag: str) -> None:
        """Write <tag>.safetensors (and for "last" the training state). Collective under torchrun."""
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                                 get_optimizer_state_dict)

            full = StateDictOptions(full_state_dict=True, cpu_offload=True)
            weights = get_model_state_dict(self.model, options=full)
            # Before the first step the optimizer has no state, and asking for it would run a
            # zero-gradient step to create some (advancing Adam's step count): save none then.
            optimizer = (get_optimizer_state_dict(self.model, self.optimizer, options=full)
                         if tag == "last" and self.optimizer.state else None)
        else:
            weights, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        rng = {"cpu": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0)}
        rngs = [rng]
        if self.world.enabled:
            rngs = [None] * self.world.world_size
            dist.all_gather_object(rngs, rng)
        if self.world.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.save_weights(self.out_dir / f"{tag}.safetensors", weights, self.model_config,
                                    self.tokenizer_meta, dataclasses.asdict(self.cfg))
            if tag == "last":
                checkpoint.save_train_state(self.out_dir / "last.state.pt", {
                    "iter_num": self.iter_num, "best_val_loss": self.best_val_loss, "optimizer": optimizer,
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
        shape_fields = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "dropout"]
        mismatched = [f"{name}: checkpoint {getattr(saved_config, name)}, now {getattr(self.model_config, name)}"
                      for name in shape_fields if getattr(saved_config, name) != getattr(self.model_config, name)]
        if mismatched:
            raise ValueError(f"cannot resume from {self.out_dir}: the model differs ({'; '.join(mismatched)})")
        if saved_tokenizer != self.tokenizer_meta:
            raise ValueError(f"cannot resume from {self.out_dir}: it was trained on another text or vocabulary "
                             f"({saved_tokenizer.get('kind')}, {saved_tokenizer.get('vocab_size')} tokens)")
        self.model.load_state_dict(weights)
        self.train_batches.load_state_dict(state["train_batches"])
        rngs = state["rng"]
        if len(rngs) == self.world.world_size:
            torch.set_rng_state(rngs[self.world.rank]["cpu"])
            if self.device.type == "cuda" and rngs[self.world.rank]["cuda"].numel():
                torch.cuda.set_rng_state(rngs[self.world.rank]["cuda"], self.device)
        else:
            self.log(f"note: the checkpoint was written by {len(rngs)} processes, now {self.world.world_size}: "
                     "dropout streams start afresh (the data order continues)")
        self.iter_num, self.best_val_loss = state["iter_num"], state["best_val_loss"]
        self.log(f"resuming from {self.out_dir} at iteration {self.iter_num}")
        return state

    def restore_optimizer(self, state: dict) -> None:
        expected = "fsdp-full" if self.fsdp else "plain"
        if state["optimizer_format"] != expected:
            raise ValueError(f"cannot resume: the optimizer state was saved {'with' if not self.fsdp else 'without'} "
                             "FSDP; resume with the same --fsdp setting")
        self.scaler.load_state_dict(state["scaler"])
        if state["optimizer"] is None:  # saved before the first step: nothing to restore
            return
        if self.fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
        else:
            self.optimizer.load_state_dict(state["optimizer"])

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over the same eval_iters batches of each split at every evaluation (and on every rank)."""
        self.model.eval()
        losses = {}
        for split in ("train", "val"):
            batches = self.make_sampler(split, 0)
            total = torch.zeros((), device=self.device)
            for _ in range(self.cfg.eval_iters):
                x, y = batches.next_batch()
                with self.autocast:
                    _, loss = self.forward(x, y)
                total += loss.float()
            losses[split] = total.item() / self.cfg.eval_iters
        self.model.train()
        return losses

    # ------------------------------------------------------------------ one optimisation step

    def _sync_gradients(self, last_micro_step: bool):
        """Gradients are all-reduced on the last micro-step only (forward included for DDP)."""
        if not self.world.enabled:
            return contextlib.nullcontext()
        if self.fsdp:
            self.model.set_requires_gradient_sync(last_micro_step)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if last_micro_step else self.forward.no_sync()

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Forward and backward over the micro-batches, clip, step. Returns (loss, grad norm, applied)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        for micro in range(self.accum):
            x, y = self.train_batches.next_batch()
            with self._sync_gradients(micro == self.accum - 1):
                with self.autocast:
                    _, loss = self.forward(x, y)
                total += loss.detach().float()
                self.scaler.scale(loss / self.accum).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                                   self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf)
        loss = total / self.accum
        # with fp16 loss scaling, an inf gradient is routine: the scaler skips that step itself
        healthy = torch.isfinite(loss) & (torch.isfinite(grad_norm) | self.scaler.is_enabled())
        applied = bool(healthy.item())
        if applied:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss, grad_norm, applied

    # ------------------------------------------------------------------ the loop

    def _install_signal_handlers(self):
        """The first SIGINT or SIGTERM finishes the step, saves and exits; a second one exits at once.

        The second is caught by a thread reading the interpreter's signal wake-up pipe, so it works
        even while the main thread is inside one long kernel call."""
        def request_stop(signum, _frame):
            self.stop_signal = signum

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        previous_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

        def second_signal_exits():
            seen = 0
            while byte := os.read(read_end, 1):
                if byte[0] in (signal.SIGINT, signal.SIGTERM):
                    seen += 1
                if seen >= 2:
                    os.write(2, f"\n{signal.Signals(byte[0]).name} again: stopping now, without saving\n".encode())
                    os._exit(128 + byte[0])
            os.close(read_end)

        watcher = threading.Thread(target=second_signal_exits, daemon=True)
        watcher.start()

        def restore():
            signal.set_wakeup_fd(previous_wakeup)
            os.close(write_end)  # the thread reads end-of-file and ends
            # ... and is waited for: a daemon thread still waking while the interpreter shuts down is
            # ended by the runtime mid-call, which can abort the process at exit.
            watcher.join(timeout=10)
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore

    def _stop_requested(self) -> bool:
        flag = torch.tensor(int(self.stop_signal is not None))
        if self.world.enabled:  # every rank must leave the loop at the same iteration
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

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
        restore_signal_handlers = self._install_signal_handlers() if in_main_thread else None
        start, t0 = self.iter_num, time.perf_counter()
        progress = _progress_bar(cfg.max_iters, start, cfg.progress and self.world.is_main)
        last_log_time, last_log_iter = t0, start
        summary = {"iter": start, "best_val_loss": self.best_val_loss}
        try:
            while True:
                it = self.iter_num
                if self._stop_requested():
                    self.save("last")
                    name = signal.Signals(self.stop_signal or signal.SIGTERM).name
                    self.log(f"\n{name} received: finished iteration {it - 1}, saved {self.out_dir}/last.*; "
                             "continue with --resume true")
                    return summary | {"iter": it, "stopped_by": name}
                out_of_time = cfg.max_seconds > 0 and time.perf_counter() - t0 > cfg.max_seconds
                record = {}
                evaluate = it % cfg.eval_interval == 0 or it == cfg.max_iters or out_of_time
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
                lr = learning_rate(it, cfg)
                step_start = time.perf_counter()
                loss, grad_norm, applied = self.train_step(lr)
                if it == start:
                    self.first_step_s = seconds = time.perf_counter() - step_start
                    uses_triton = "triton" in self.ops.names().values()
                    if self.device.type == "cpu" and uses_triton:
                        self.log(f"note: the Triton interpreter took {seconds:.1f} s for this iteration: {cfg.max_iters - it} "
                                 f"iterations would take about {duration(seconds * (cfg.max_iters - it))}")
                    elif self.compiled or uses_triton:
                        self.log(f"first step: {seconds:.1f} s, compilation and Triton autotuning included")
                if not applied:
                    message = (f"non-finite loss or gradient at iteration {it} (loss {loss.item():.4g}, "
                               f"grad norm {grad_norm.item():.4g})")
                    if cfg.nonfinite == "stop":
                        raise FloatingPointError(f"{message}: stopped. The last good checkpoint in {self.out_dir} "
                                                 "is intact; resume from it with --resume true (perhaps with a "
                                                 "lower --learning_rate), or pass --nonfinite skip")
                    self.log(f"{message}: step skipped")
                self.iter_num += 1
                if it % cfg.log_interval == 0 or record or not applied:
                    if self.world.enabled:
                        dist.all_reduce(loss, op=dist.ReduceOp.AVG)
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    now = time.perf_counter()
                    tok_per_s = cfg.tokens_per_iter * (self.iter_num - last_log_iter) / (now - last_log_time)
                    mfu = self.flops_per_iter / cfg.tokens_per_iter * tok_per_s / self.peak if self.peak else None
                    record = {"iter": it, "loss": loss.item(), "grad_norm": grad_norm.item(), "lr": lr,
                              "tok_per_s": tok_per_s, "mfu": mfu, "elapsed_s": now - t0} | record
                    if not applied:
                        record["skipped"] = True
                    if metrics:
                        metrics.write(json.dumps(record) + "\n")
                        metrics.flush()
                    progress.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{tok_per_s:,.0f}",
                                         mfu="-" if mfu is None else f"{100 * mfu:.1f}%")
                    last_log_time, last_log_iter = now, self.iter_num
                progress.update(1)
        finally:
            progress.close()
            if restore_signal_handlers:
                restore_signal_handlers()
            if metrics:
                metrics.close()
                plot_losses(metrics_path, self.out_dir / "loss.png")


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="it", dynamic_ncols=True, file=sys.stdout)


def plot_losses(metrics_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line]
    train = [(r["iter"], r["loss"]) for r in records if "loss" in r]
    val = [(r["iter"], r["val_loss"]) for r in records if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train (batch)", alpha=0.6)
    if val:
        ax.plot(*zip(*val), "o-", label="val")
    ax.set_xlabel("iteration")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)


def duration(seconds: float) -> str:
    """A time to read at a glance: '40 s', '12 min', '3.5 h'."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def main(argv: list[str] | None = None) -> dict:
    cfg, preset, explicit = config_from_args(argv, cuda_available=torch.cuda.is_available())
    cfg = with_the_runs_own_data(cfg, explicit)
    world = init_distributed()
    try:
        trainer = Trainer(cfg, preset, world)
        summary = trainer.run()
    except (ValueError, FileNotFoundError, ConnectionError, FloatingPointError) as err:
        raise SystemExit(f"python -m gpt.train: error: {err}") from None
    finally:
        if world.enabled:
            dist.destroy_process_group()
    if "stopped_by" in summary and summary["stopped_by"] in ("SIGINT", "SIGTERM"):
        raise SystemExit(128 + signal.Signals[summary["stopped_by"]].value)
    trainer.log(f"done: {summary} | checkpoints, metrics.jsonl and loss.png in {cfg.out_dir}")
    return summary


if __name__ == "__main__":
    main()
