"""The Hugging Face transformers GPT-2 format, both ways: our weights and config as theirs, theirs as ours.

transformers' GPT-2 keeps its projections in Conv1D modules, whose weights are the transpose of
nn.Linear's (c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj); it always has biases (zeros stand in
for a bias=False model's, so the outputs are the same) and ties lm_head to the token embedding.
Reading a transformers folder needs only safetensors; writing one needs transformers itself
(`pip install -e '.[hf]'`), so that the files are exactly what its from_pretrained expects.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import GPTConfig

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LAYER_NORM_EPS = 1e-5  # the model's LayerNorms
TOKENIZER_KEY = "gpt_kernels_tokenizer"  # our tokenizer description, kept in the exported config.json


def to_hf_state_dict(state: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our state dict (tied head included or not) as GPT2LMHeadModel's, zero biases where we have none."""
    C = config.n_embd
    out = {}
    for name, value in state.items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight, which transformers ties back on load
        out[name] = value.t().contiguous() if name.endswith(CONV1D) else value
    if not config.bias:
        widths = {"ln_1": C, "ln_2": C, "attn.c_attn": 3 * C, "attn.c_proj": C, "mlp.c_fc": 4 * C, "mlp.c_proj": C}
        for i in range(config.n_layer):
            for module, width in widths.items():
                out[f"transformer.h.{i}.{module}.bias"] = torch.zeros(width, dtype=state["transformer.wte.weight"].dtype)
        out["transformer.ln_f.bias"] = torch.zeros(C, dtype=state["transformer.wte.weight"].dtype)
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A GPT-2 state dict of transformers (GPT2LMHeadModel's, or GPT2Model's without the `transformer.`
    prefix, as the original GPT-2 files have it) in our layout, the tied head filled in."""
    out = {}
    for name, value in state.items():
        if name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # the tied head, and causal-mask buffers older transformers saved
        name = name if name.startswith("transformer.") else f"transformer.{name}"
        out[name] = value.t() if name.endswith(CONV1D) else value
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def gpt_config_from_hf(hf: dict, dropout: float = 0.0) -> GPTConfig:
    """Our GPTConfig from a transformers GPT-2 config.json's values; refuses what our model cannot be."""
    model_type = hf.get("model_type", "gpt2")
    if model_type != "gpt2":
        raise ValueError(f"a GPT-2 checkpoint was expected, this one is model_type {model_type!r}")
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"activation_function {activation!r} is not the model's tanh GELU (gelu_new)")
    if hf.get("tie_word_embeddings", True) is False:
        raise ValueError("the checkpoint's output head is not tied to its token embedding, as this model's is")
    return GPTConfig(block_size=hf["n_positions"], vocab_size=hf["vocab_size"], n_layer=hf["n_layer"],
                     n_head=hf["n_head"], n_embd=hf["n_embd"], dropout=dropout, bias=True)


def read_config(name_or_path: str) -> dict:
    """The config.json values of a local transformers folder, or of a model name transformers resolves."""
    path = Path(name_or_path)
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a transformers model folder: it has no config.json")
        return json.loads((path / "config.json").read_text())
    try:
        from transformers import GPT2Config
    except ImportError:
        raise ValueError(f"{name_or_path!r} is not a folder here, and resolving a model name needs transformers: "
                         "pip install -e '.[hf]'") from None
    try:
        return GPT2Config.from_pretrained(name_or_path).to_dict()
    except OSError as err:
        raise ValueError(f"{name_or_path!r} is neither a folder here nor a model transformers can fetch: "
                         f"{str(err).splitlines()[0]}") from None


def tokenizer_of(hf_config: dict) -> dict:
    """The tokenizer a pretrained model reads: the one gpt.export recorded, else GPT-2's BPE."""
    return hf_config.get(TOKENIZER_KEY) or {"kind": "gpt2", "vocab_size": 50257}


def load_state(name_or_path: str) -> dict[str, torch.Tensor]:
    """Our state dict from a local transformers GPT-2 folder (save_pretrained's), or from a model name
    transformers resolves (and may download)."""
    path = Path(name_or_path)
    if not path.exists():
        read_config(name_or_path)  # the clear error when the name cannot be resolved
        from transformers import GPT2LMHeadModel

        return from_hf_state_dict(GPT2LMHeadModel.from_pretrained(name_or_path).state_dict())
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return from_hf_state_dict(load_file(str(path / "model.safetensors")))
    if (path / "pytorch_model.bin").is_file():
        return from_hf_state_dict(torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True))
    raise FileNotFoundError(f"{path} has no model.safetensors or pytorch_model.bin")


def load_pretrained(name_or_path: str) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """(our config, our state dict) of a transformers GPT-2 folder or model name."""
    return gpt_config_from_hf(read_config(name_or_path)), load_state(name_or_path)


def hf_config_values(config: GPTConfig, tokenizer_meta: dict) -> dict:
    """GPT2Config keyword arguments for our model."""
    eot = 50256 if tokenizer_meta.get("kind") == "gpt2" and config.vocab_size > 50256 else None
    return dict(vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
                n_layer=config.n_layer, n_head=config.n_head, activation_function="gelu_new",
                layer_norm_epsilon=LAYER_NORM_EPS, resid_pdrop=config.dropout, embd_pdrop=config.dropout,
                attn_pdrop=config.dropout, tie_word_embeddings=True, bos_token_id=eot, eos_token_id=eot,
                architectures=["GPT2LMHeadModel"], **{TOKENIZER_KEY: tokenizer_meta})
