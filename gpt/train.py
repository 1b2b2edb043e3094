"""Train a GPT: `python -m gpt.train [--preset NAME] [--field value ...]`.

With no arguments: the shakespeare-char preset on a CUDA machine, shakespeare-char-cpu otherwise.
Several GPUs or nodes: `torchrun --nproc_per_node N -m gpt.train ...` (DDP; --fsdp true for FSDP2).
Writes to --out_dir: best/last checkpoints, metrics.jsonl, loss.png.

Read top to bottom: main makes the plan (gpt/plan.py: every decision, once), the Trainer builds the
model, optimizer and batches from it, and Trainer.run is the loop. The loop reads the GPU's results on
the host only at log points (every --log_interval iterations, and before every evaluation): there it
logs, and decides together with every other rank whether to stop (a signal, the time budget, a
non-finite step under --nonfinite stop). Between log points nothing waits for the GPU: a non-finite
step is skipped and counted on the device.
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

from . import checkpoint, hf
from .config import TrainConfig, config_from_args, fail
from .data import BatchSampler, SyntheticSampler, tokenizer_from_meta
from .device import peak_flops
from .distributed import init_distributed
from .eval import evaluate as hellaswag_scores
from .model import GPT
from .plan import Plan, make_plan
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


class Trainer:
    """Built from a plan: the model (pretrained or resumed weights in it), the optimizer, the batches and
    the kernels; then run() is the loop."""

    def __init__(self, plan: Plan):
        self.plan, self.cfg, self.world = plan, plan.cfg, plan.world
        self.device, self.dtype, self.ops, self.out_dir = plan.device, plan.dtype, plan.ops, plan.out_dir
        cfg, rank, size = plan.cfg, plan.world.rank, plan.world.world_size
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank

        # Batches: each rank its own slice of every draw; evaluation's from seed 0, the same at every evaluation
        if plan.data is None:
            vocab_size = plan.tokenizer["vocab_size"]
            self.make_sampler = lambda split, seed, rank=0, size=1: SyntheticSampler(
                vocab_size, cfg.model.block_size, cfg.batch_size, self.device, seed, rank, size)
        else:
            self.make_sampler = lambda split, seed, rank=0, size=1: BatchSampler(
                plan.data.tokens(split), cfg.model.block_size, cfg.batch_size, self.device, seed, split, rank, size)
            self.make_sampler("val", 0)  # fail now, not at the first evaluation, if val is too short
        self.train_batches = self.make_sampler("train", cfg.seed, rank, size)
        self.tokenizer = tokenizer_from_meta(plan.tokenizer) if plan.hellaswag else None

        # The model, its weights, the optimizer, and the state of a resumed run
        self.model = GPT(plan.model, self.ops)
        self.model.activation_checkpointing = cfg.activation_checkpointing
        if plan.pretrained:
            self.model.load_state_dict(hf.load_state(plan.pretrained))
            self.log(f"initialised from {plan.pretrained}")
        self.model.to(self.device)
        torch.manual_seed(cfg.seed + rank)  # per-rank dropout streams
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

        # How each step runs: autocast, torch.compile, DDP
        self.autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())
        self.forward = torch.compile(self.model, mode=cfg.compile_mode) if plan.compiled else self.model
        if self.world.enabled and not self.fsdp:
            from torch.nn.parallel import DistributedDataParallel

            self.forward = DistributedDataParallel(
                self.forward, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        # What the loop counts and measures
        self.peak = peak_flops(self.device, self.dtype)
        self.flops_per_token = self.model.flops_per_token()
        self.signals = StopSignals()
        self.first_step_s = 0.0  # the first training step and the first evaluation: compilation and
        self.first_eval_s = 0.0  # autotuning happen there, so the records give training time apart from them
        # Counted on the device between log points: non-finite steps, and the first one's iteration
        self.nonfinite_steps = torch.zeros((), dtype=torch.int64, device=self.device)
        self.first_nonfinite = torch.full((), -1, dtype=torch.int64, device=self.device)
        mode = f"{'FSDP' if self.fsdp else 'DDP'} x{size} | " if self.world.enabled else ""
        self.log(f"preset {plan.preset or '-'} | {mode}device {self.device} {str(self.dtype).removeprefix('torch.')} | "
                 f"compile {cfg.compile_mode if plan.compiled else False} | kernels {self.ops.spec()}"
                 + (f" ({self.ops.origin})" if self.ops.origin else ""))
        for note in self.ops.notes:
            self.log(f"note: {note}")
        if plan.resumed_changes:
            self.log(f"note: resuming with settings other than the run's ({', '.join(plan.resumed_changes)}): "
                     "give the run's values to continue it exactly")
        self.log(f"{self.model.num_params() / 1e6:.2f}M parameters | vocab {plan.model.vocab_size} | "
                 f"{cfg.tokens_per_iter:,} tokens per iteration")


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
            checkpoint.save_weights(self.out_dir / f"{tag}.safetensors", weights, self.plan.model,
                                    self.plan.tokenizer, dataclasses.asdict(self.cfg))
            if tag == "last":
                checkpoint.save_train_state(self.out_dir / "last.state.pt", {
                    "iter_num": self.iter_num, "best_val_loss": self.best_val_loss, "tokens_seen": self.tokens_seen,
                    "optimizer": optimizer,
                    "optimizer_format": "fsdp-full" if self.fsdp else "plain", "scaler": self.scaler.state_dict(),
                    "train_batches": self.train_batches.state_dict(), "rng": rngs,
                    "train_config": dataclasses.asdict(self.cfg), "gpt_config": self.plan.model.to_dict(),
                    "kernels": self.ops.spec()})
        if self.world.enabled:
            dist.barrier()

    def load_last(self) -> dict:
        """Load last.safetensors into the (not yet sharded) model; return the training state."""
        state = checkpoint.load_train_state(self.out_dir / "last.state.pt")
        weights, saved_config, saved_tokenizer = checkpoint.load_weights(self.out_dir / "last.safetensors", self.device)
        checkpoint.check_resumable(self.out_dir, saved_config, self.plan.model, saved_tokenizer, self.plan.tokenizer)
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
        """The loop, in nanoGPT's order: evaluate and checkpoint, stop, step, log. The host reads the device
        only at log points, and before an evaluation or a stop: there every rank agrees whether to stop."""
        cfg, start = self.cfg, self.iter_num
        metrics = Metrics(self.out_dir, self.iter_num if cfg.resume else 0, self.world.is_main)
        progress = Progress(cfg.max_iters, start, cfg.progress and self.world.is_main)
        self.start_iter, self.t0 = start, time.perf_counter()
        self.last_log = self.t0, self.tokens_seen  # time and tokens at the last log point
        summary = {"iter": start, "best_val_loss": self.best_val_loss}
        point = {"signalled": False, "out_of_time": False}  # what the last log point read
        unread = None  # the newest step's (loss, grad norm), when no log point has read it yet
        in_main_thread = threading.current_thread() is threading.main_thread()  # signal handlers need it
        try:
            with self.signals if in_main_thread else contextlib.nullcontext():
                while True:
                    it = self.iter_num
                    evaluating = it % cfg.eval_interval == 0 or it == cfg.max_iters or point["out_of_time"]
                    # Read the newest step before anything is evaluated, saved or stopped
                    if unread is not None and (evaluating or it >= cfg.max_iters):
                        point, unread = self.check(it - 1, *unread), None
                        evaluating = evaluating or point["out_of_time"]

                    # A signal: save, and say how to continue
                    if point["signalled"]:
                        progress.close()  # nothing is printed after the stop message
                        return summary | {"iter": it, "stopped_by": self.stop_on_signal(it)}

                    # Evaluate and checkpoint (a resumed run's first iteration was evaluated before it stopped)
                    record = {}
                    if evaluating and not (cfg.resume and it == start):
                        record = self.evaluate_and_save(it, progress)
                        summary = {"iter": it, "val_loss": record["val_loss"], "best_val_loss": self.best_val_loss}

                    # Stop: the last iteration, --eval_only, the time budget or the target loss
                    stopped_by = self.stop_reason(it, record, point)
                    if stopped_by is not None:
                        if record:
                            metrics.write({"iter": it, "elapsed_s": time.perf_counter() - self.t0} | record)
                        summary |= {"elapsed_s": time.perf_counter() - self.t0, "first_step_s": self.first_step_s}
                        return summary | ({"stopped_by": stopped_by} if stopped_by else {})

                    # Step: forward, backward, update; nothing is read on the host
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

                    # Log: the loop's one host sync between evaluations
                    if it % cfg.log_interval == 0 or it == start or record:
                        point, unread = self.check(it, *unread), None
                        if it == start:
                            self.first_step_s = time.perf_counter() - step_start
                            self.note_first_step(it)
                        record = self.log_record(it, point, lr, batch_tokens) | record
                        metrics.write(record)
                        progress.record(record)
                    progress.update()
        finally:
            progress.close()
            metrics.close()

    def stop_on_signal(self, it: int) -> str:
        self.save("last")
        name = signal.Signals(self.signals.received or signal.SIGTERM).name
        self.log(f"\n{name} received: finished iteration {it - 1}, saved {self.out_dir}/last.*; "
                 "continue with --resume true")
        return name

    def evaluate_and_save(self, it: int, progress: Progress) -> dict:
        """Both splits' losses (and HellaSwag's scores), best.* when val improved, and last.*."""
        eval_start = time.perf_counter()
        losses = self.estimate_loss()
        if it == self.start_iter:
            self.first_eval_s = time.perf_counter() - eval_start
        record = {"train_eval_loss": losses["train"], "val_loss": losses["val"],
                  "warmup_s": self.first_step_s + self.first_eval_s}
        if self.world.is_main:
            progress.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
                           f" ({time.perf_counter() - self.t0:.1f} s)")
        if self.plan.hellaswag:
            scores = hellaswag_scores(self.model, self.plan.hellaswag, self.tokenizer, self.device,
                                      self.autocast, self.world.rank, self.world.world_size)
            record |= {"hellaswag_acc": scores.acc, "hellaswag_acc_norm": scores.acc_norm,
                       "hellaswag_examples": scores.examples, "hellaswag_unscorable": scores.unscorable}
            if self.world.is_main:
                progress.write(f"iter {it}: {scores.summary()}")
        if losses["val"] < self.best_val_loss:
            self.best_val_loss = losses["val"]
            self.save("best")
        self.save("last")
        return record

    def stop_reason(self, it: int, record: dict, point: dict) -> str | None:
        """Why the loop stops before iteration it ("" at its planned end), or None to go on."""
        if point["out_of_time"]:
            return "time budget"
        if record and 0 < self.cfg.target_val_loss and record["val_loss"] <= self.cfg.target_val_loss:
            return "target val loss"
        return "" if it >= self.cfg.max_iters or self.cfg.eval_only else None

    def log_record(self, it: int, point: dict, lr: float, batch_tokens: int) -> dict:
        now = time.perf_counter()
        last_time, last_tokens = self.last_log
        tok_per_s = (self.tokens_seen - last_tokens) / (now - last_time)
        self.last_log = now, self.tokens_seen
        record = {"iter": it, "loss": point["loss"], "grad_norm": point["grad_norm"], "lr": lr,
                  "tokens": self.tokens_seen, "batch_tokens": batch_tokens, "tok_per_s": tok_per_s,
                  "mfu": self.flops_per_token * tok_per_s / self.peak if self.peak else None, "elapsed_s": now - self.t0}
        if point["nonfinite_steps"]:
            record |= {"nonfinite_steps": point["nonfinite_steps"], "first_nonfinite": point["first_nonfinite"]}
        return record

    def check(self, it: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> dict:
        """A log point after iteration it: read it, and act on non-finite steps since the last one."""
        point = self.read_log_point(loss, grad_norm, 0 < self.cfg.max_seconds < time.perf_counter() - self.t0)
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
        elif self.plan.compiled or uses_triton:
            self.log(f"first step: {seconds:.1f} s, compilation and Triton autotuning included")


class Metrics:
    """metrics.jsonl, written by rank 0, a JSON record a line (a resumed run's records past its checkpoint
    dropped first); loss.png drawn from it when the run ends."""

    def __init__(self, out_dir: Path, resumed_at: int, enabled: bool):
        self.path, self.png, self.file = out_dir / "metrics.jsonl", out_dir / "loss.png", None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["iter"] < resumed_at
                ] if resumed_at and self.path.exists() else []
        self.path.write_text("".join(line + "\n" for line in kept))
        self.file = open(self.path, "a")

    def write(self, record: dict) -> None:
        if self.file:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()

    def close(self) -> None:
        if self.file:
            self.file.close()
            plot_losses(self.path, self.png)


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
        trainer = Trainer(make_plan(cfg, explicit, preset, world))
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
