"""Train a GPT: `python -m gpt.train [--preset NAME] [--field value ...]`.

With no arguments: the shakespeare-char preset on a CUDA machine, shakespeare-char-cpu otherwise.
Writes to --out_dir: best/last checkpoints, metrics.jsonl, loss.png.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

from . import checkpoint
import kernels

from .config import GPTConfig, TrainConfig, config_from_args, parse_kernels, resolve_auto_kernels
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


def resolve_device_dtype(cfg: TrainConfig) -> tuple[torch.device, torch.dtype]:
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda requested but CUDA is not available on this machine")
    if cfg.dtype:
        dtype = getattr(torch, cfg.dtype)
    elif device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    if device.type == "cpu" and dtype == torch.float16:
        raise SystemExit("error: --dtype float16 needs a CUDA device; use float32 or bfloat16 on the CPU")
    return device, dtype


class Trainer:
    def __init__(self, cfg: TrainConfig, preset: str = ""):
        self.cfg = cfg
        self.device, self.dtype = resolve_device_dtype(cfg)
        self.out_dir = Path(cfg.out_dir)
        torch.manual_seed(cfg.seed)

        if cfg.synthetic_data:
            self.tokenizer_meta = {"kind": "gpt2" if cfg.tokenizer == "gpt2" else "synthetic",
                                   "vocab_size": 50257 if cfg.tokenizer == "gpt2" else 65}
            vocab_size = self.tokenizer_meta["vocab_size"]
            make = lambda split, seed: SyntheticSampler(vocab_size, cfg.block_size, cfg.batch_size, self.device, seed)  # noqa: E731
        else:
            data = prepare(cfg.input or None, cfg.tokenizer, cfg.data_cache or None)
            self.tokenizer_meta = data.meta
            vocab_size = data.vocab_size
            make = lambda split, seed: BatchSampler(data.tokens(split), cfg.block_size, cfg.batch_size,  # noqa: E731
                                                    self.device, seed, split)
        self.make_sampler = make
        self.train_batches = make("train", cfg.seed)
        make("val", 0)  # fail now, not at the first evaluation, if val is too short

        backends = parse_kernels(cfg.kernels)
        if "auto" in backends.values():
            table = json.loads((Path(kernels.__file__).parent / "auto_backends.json").read_text())
            gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else None
            backends, origin = resolve_auto_kernels(gpu, table)
            print(origin)
        self.model_config = GPTConfig(
            block_size=cfg.block_size, vocab_size=vocab_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
            n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias,
            ln_backend=backends["ln"], attn_backend=backends["attn"], loss_backend=backends["loss"])
        self.model = GPT(self.model_config).to(self.device)
        self.optimizer = self.model.configure_optimizer(cfg.weight_decay, cfg.learning_rate,
                                                        (cfg.beta1, cfg.beta2), self.device.type)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.autocast = (torch.autocast(self.device.type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())
        self.iter_num, self.best_val_loss = 0, float("inf")
        if cfg.resume:
            self.load_last()
        use_compile = cfg.compile if cfg.compile is not None else self.device.type == "cuda"
        self.forward = torch.compile(self.model) if use_compile else self.model
        self.peak = peak_flops(self.device, self.dtype)
        self.flops_per_iter = self.model.flops_per_token() * cfg.tokens_per_iter
        print(f"preset {preset or '-'} | device {self.device} {str(self.dtype).removeprefix('torch.')} | "
              f"compile {use_compile} | kernels ln={backends['ln']} attn={backends['attn']} loss={backends['loss']}")
        print(f"{self.model.num_params() / 1e6:.2f}M parameters | vocab {vocab_size} | "
              f"{cfg.tokens_per_iter:,} tokens per iteration")

    # ------------------------------------------------------------------ checkpoints

    def train_state(self) -> dict:
        return {
            "iter_num": self.iter_num, "best_val_loss": self.best_val_loss,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "train_batches": self.train_batches.state_dict(), "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
            "train_config": dataclasses.asdict(self.cfg), "gpt_config": self.model_config.to_dict(),
        }

    def save(self, tag: str) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.save_weights(self.out_dir / f"{tag}.safetensors", self.model, self.model_config, self.tokenizer_meta)
        if tag == "last":
            checkpoint.save_train_state(self.out_dir / "last.state.pt", self.train_state())

    def load_last(self) -> None:
        state = checkpoint.load_train_state(self.out_dir / "last.state.pt")
        weights, saved_config, saved_tokenizer = checkpoint.load_weights(self.out_dir / "last.safetensors", self.device)
        shape_fields = ("block_size", "vocab_size", "n_layer", "n_head", "n_embd", "bias")
        mismatched = [f"{name}: checkpoint {getattr(saved_config, name)}, now {getattr(self.model_config, name)}"
                      for name in shape_fields if getattr(saved_config, name) != getattr(self.model_config, name)]
        if mismatched:
            raise SystemExit(f"error: cannot resume from {self.out_dir}: the model differs ({'; '.join(mismatched)})")
        if saved_tokenizer != self.tokenizer_meta:
            raise SystemExit(f"error: cannot resume from {self.out_dir}: it was trained with another text or tokenizer")
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.train_batches.load_state_dict(state["train_batches"])
        torch.set_rng_state(state["cpu_rng"])
        if self.device.type == "cuda" and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.iter_num, self.best_val_loss = state["iter_num"], state["best_val_loss"]
        print(f"resuming from {self.out_dir} at iteration {self.iter_num}")

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        """Mean loss over the same eval_iters batches of each split at every evaluation."""
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

    # ------------------------------------------------------------------ the loop

    def train_step(self, lr: float) -> torch.Tensor:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        accum = self.cfg.gradient_accumulation_steps
        total = torch.zeros((), device=self.device)
        for _ in range(accum):
            x, y = self.train_batches.next_batch()
            with self.autocast:
                _, loss = self.forward(x, y)
            total += loss.detach().float()
            self.scaler.scale(loss / accum).backward()
        if self.cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total / accum

    def run(self) -> dict:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        metrics_path = self.out_dir / "metrics.jsonl"
        kept = []
        if cfg.resume and metrics_path.exists():  # drop records past the checkpoint we resume from
            kept = [line for line in metrics_path.read_text().splitlines()
                    if line and json.loads(line)["iter"] < self.iter_num]
        metrics_path.write_text("".join(line + "\n" for line in kept))
        start = self.iter_num
        progress = _progress_bar(cfg.max_iters, start, cfg.progress)
        last_log_time, last_log_iter = time.perf_counter(), start
        summary = {}
        with open(metrics_path, "a") as metrics:
            while True:
                it = self.iter_num
                record = {}
                if (it % cfg.eval_interval == 0 or it == cfg.max_iters) and not (cfg.resume and it == start):
                    losses = self.estimate_loss()
                    record.update(train_eval_loss=losses["train"], val_loss=losses["val"])
                    progress.write(f"iter {it}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
                    if losses["val"] < self.best_val_loss:
                        self.best_val_loss = losses["val"]
                        self.save("best")
                    self.save("last")
                    summary = {"iter": it, "val_loss": losses["val"], "best_val_loss": self.best_val_loss}
                if it >= cfg.max_iters or cfg.eval_only:
                    if record:
                        metrics.write(json.dumps({"iter": it} | record) + "\n")
                    break
                lr = learning_rate(it, cfg)
                loss = self.train_step(lr)
                self.iter_num += 1
                if it % cfg.log_interval == 0 or record:
                    if self.device.type == "cuda":
                        torch.cuda.synchronize(self.device)
                    now = time.perf_counter()
                    tok_per_s = cfg.tokens_per_iter * (self.iter_num - last_log_iter) / (now - last_log_time)
                    mfu = self.flops_per_iter / cfg.tokens_per_iter * tok_per_s / self.peak if self.peak else None
                    record = {"iter": it, "loss": loss.item(), "lr": lr, "tok_per_s": tok_per_s, "mfu": mfu} | record
                    metrics.write(json.dumps(record) + "\n")
                    metrics.flush()
                    progress.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{tok_per_s:,.0f}",
                                         mfu="-" if mfu is None else f"{100 * mfu:.1f}%")
                    last_log_time, last_log_iter = now, self.iter_num
                progress.update(1)
        progress.close()
        plot_losses(metrics_path, self.out_dir / "loss.png")
        return summary


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


def main(argv: list[str] | None = None) -> dict:
    cfg, preset = config_from_args(argv, cuda_available=torch.cuda.is_available())
    try:
        trainer = Trainer(cfg, preset)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise SystemExit(f"error: {err}") from None
    summary = trainer.run()
    print(f"done: {summary} | checkpoints, metrics.jsonl and loss.png in {cfg.out_dir}")
    return summary


if __name__ == "__main__":
    main()
