"""A GPT-2 family decoder, plain PyTorch, read top to bottom (after nanoGPT's model.py).

The ops that fused kernels replace -- layer norm, causal attention, the loss -- are the
implementations in a `gpt_kernels.Kernels`, resolved once before the model is built
(`gpt_kernels.resolve("auto", device)`); PyTorch's own ops when none is given.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
import torch.utils.checkpoint

import gpt_kernels
from gpt_kernels import Kernels

from .config import GPTConfig

TORCH_KERNELS = gpt_kernels.resolve("torch")


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias. Given a sublayer's output not yet added to the residual
    stream, it adds it first, in the same kernel: returns (the new stream, its normalisation)."""

    def __init__(self, ndim: int, bias: bool, ops: Kernels):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None
        self.layer_norm = ops["layer_norm"]
        self.add_layer_norm = ops["add_layer_norm"]

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if pending is None:
            return x, self.layer_norm(x, self.weight, self.bias, 1e-5)
        y, x = self.add_layer_norm(x, pending, self.weight, self.bias, 1e-5)  # x + pending, then its LayerNorm
        return x, y


class KVCache:
    """Keys and values of the tokens seen so far, one (B, nh, T, hs) pair per layer; a banded layer keeps
    only its last `window` (the most its next query can see)."""

    def __init__(self, windows: list[int | None]):
        self.windows = windows  # per layer: its band (None: dense, every key kept)
        self.keys: list[torch.Tensor | None] = [None] * len(windows)
        self.values: list[torch.Tensor | None] = [None] * len(windows)
        self.length = 0  # tokens seen (the next token's position)

    @classmethod
    def for_config(cls, config: GPTConfig) -> KVCache:
        return cls([config.layer_window(layer) for layer in range(config.n_layer)])

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's keys and values with the new ones, (B, nh, T_kept + T, hs), for this step's attention."""
        if self.keys[layer] is not None:
            k = torch.cat([self.keys[layer], k], dim=2)
            v = torch.cat([self.values[layer], v], dim=2)
        window = self.windows[layer]
        self.keys[layer], self.values[layer] = (k, v) if window is None else (k[:, :, -window:], v[:, :, -window:])
        return k, v


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int, attention):
        super().__init__()
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v for all heads
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.attention = attention
        self.layer = layer
        self.window = config.layer_window(layer)  # None: dense; else this layer's band in tokens

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, C = x.size()  # batch, sequence length, embedding width (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, nh, T_past + T, hs)
        y = self.attention(q, k, v, True, None, self.dropout if self.training else 0.0, self.window)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's gelu
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer: int, ops: Kernels):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.bias, ops)
        self.attn = CausalSelfAttention(config, layer, ops["attention"])
        self.ln_2 = LayerNorm(config.n_embd, config.bias, ops)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, pending: torch.Tensor | None,
                cache: KVCache | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-LN: x = x + attn(ln_1(x)); x = x + mlp(ln_2(x)), with every residual add fused into the
        LayerNorm that follows it. pending is the previous block's MLP output, not yet added (None
        in the first block); this block's MLP output is returned pending in turn."""
        x, h = self.ln_1(x, pending)  # x = x + pending (the previous MLP's output); h = ln_1(x), both (B, T, C)
        y = self.attn(h, cache)
        x, h = self.ln_2(x, y)  # x = x + attn(ln_1(x)); h = ln_2(x)
        y = self.mlp(h)
        return x, y  # x + y is the next LayerNorm's to add


class GPT(nn.Module):
    def __init__(self, config: GPTConfig, ops: Kernels = TORCH_KERNELS):
        super().__init__()
        self.config = config
        self.cross_entropy = ops["cross_entropy"]
        # The head and the loss as one op in training (the logits never held), unless
        # linear_cross_entropy=torch keeps them two: the logits, then the cross_entropy op.
        self.head_and_loss = None if ops.names()["linear_cross_entropy"] == "torch" else ops["linear_cross_entropy"]
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config, i, ops) for i in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, config.bias, ops),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        # In training, keep only each block's inputs and recompute the rest in the backward (the trainer's
        # --activation_checkpointing): memory for compute, the same numbers.
        self.activation_checkpointing = False
        self.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default, as nanoGPT counts
        (token embeddings stay in: they are the tied output head)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                last_logits_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V), and the mean loss when targets (B, T) are given.

        With targets and a fused head + loss (a linear_cross_entropy backend other than torch) the
        logits are never formed and None is returned in their place.
        last_logits_only: compute only the last position's logits (B, 1, V), as generation needs.
        """
        B, T = idx.size()
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(f"cannot process position {start + T - 1}: block_size is only {self.config.block_size}")
        pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        pending = None
        for block in self.transformer.h:
            if self.activation_checkpointing and self.training:
                x, pending = torch.utils.checkpoint.checkpoint(block, x, pending, cache, use_reentrant=False)
            else:
                x, pending = block(x, pending, cache)
        if cache is not None:
            cache.length += T
        _, x = self.transformer.ln_f(x, pending)  # the last residual add, fused with the final LayerNorm
        if last_logits_only:
            return self.lm_head(x[:, [-1], :]), None  # (B, 1, V)
        if targets is not None and self.head_and_loss is not None:
            C = x.size(-1)
            return None, self.head_and_loss(x.view(-1, C), self.lm_head.weight, targets.reshape(-1), -1, "mean")
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = self.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), -1, "mean")
        return logits, loss

    def configure_optimizer(self, weight_decay: float, learning_rate: float, betas: tuple[float, float],
                            fused: bool = False) -> torch.optim.AdamW:
        """AdamW; matrices (embeddings, linear weights) decay, biases and norm gains do not.

        fused: one CUDA kernel for the whole update (CUDA parameters only)."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, fused=fused)

    def flops_per_token(self) -> int:
        """Training FLOPs per token: 6N for the matmuls with weights plus 12*H*Q*T per layer for attention
        (PaLM, app. B), a banded layer's T its window's keys."""
        cfg = self.config
        keys = sum(cfg.keys_attended(layer) for layer in range(cfg.n_layer))
        return 6 * self.num_params() + 12 * cfg.n_head * (cfg.n_embd // cfg.n_head) * keys

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate_tokens(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                        top_k: int | None = None, top_p: float | None = None, use_cache: bool = True,
                        generator: torch.Generator | None = None) -> Iterator[torch.Tensor]:
        """Yield max_new_tokens next tokens (B, 1), one at a time, continuing idx (B, T).

        temperature 0 is greedy. Both paths condition on the last block_size tokens. With
        use_cache the keys and values of earlier tokens are kept and only the newest token is
        fed; once the window is full it slides, which moves every position, so the cache is
        rebuilt from the window.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be (B, T) with T >= 1, got shape {tuple(idx.shape)}")
        block = self.config.block_size
        cache = None
        for _ in range(max_new_tokens):
            if use_cache and cache is not None and cache.length < block:
                logits, _ = self(idx[:, -1:], cache=cache, last_logits_only=True)
            else:
                cache = KVCache.for_config(self.config) if use_cache else None
                logits, _ = self(idx[:, -block:], cache=cache, last_logits_only=True)
            next_token = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)  # (B, 1)
            idx = torch.cat((idx, next_token), dim=1)
            yield next_token

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
        """idx (B, T) followed by max_new_tokens sampled tokens: (B, T + max_new_tokens)."""
        new = list(self.generate_tokens(idx, max_new_tokens, **kwargs))
        return torch.cat([idx, *new], dim=1)

    # ------------------------------------------------------------------ pretrained GPT-2

    @classmethod
    def from_pretrained(cls, model_type: str = "gpt2", hf_model=None, ops: Kernels = TORCH_KERNELS,
                        **overrides) -> GPT:
        """GPT-2 weights in the transformers format (gpt/hf.py): a model name transformers resolves
        (gpt2, gpt2-medium, gpt2-large, gpt2-xl; `pip install .[hf]`), a local transformers folder, or an
        already built GPT2LMHeadModel as hf_model. overrides: GPTConfig fields such as dropout."""
        from . import hf

        if hf_model is not None:
            config = hf.gpt_config_from_hf(hf_model.config.to_dict())
            state = hf.from_hf_state_dict(hf_model.state_dict())
        else:
            config, state = hf.load_pretrained(model_type)
        model = cls(dataclasses.replace(config, **overrides), ops)
        model.load_state_dict(state)
        return model


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """Choose the next token from logits (B, V): greedy at temperature 0, else top-k / nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
