"""Checkpoints: weights as safetensors, training state as a weights-only torch file.

`<out_dir>/<tag>.safetensors` holds the plain model's weights (never a compiled or DDP
wrapper's key names) with the model config and tokenizer in its metadata, so it loads
without this project. The tied output head is stored once, as transformer.wte.weight.
`<out_dir>/<tag>.state.pt` holds what resuming needs: optimizer, step, RNG states, config.
Both are written to a temporary file, fsynced and renamed, so a crash never leaves a torn file
and a failed save never replaces the previous good one. Both carry a CRC32 of every tensor,
checked on load: damage inside a file is an error naming the file and the tensor.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import GPTConfig

TIED = {"lm_head.weight": "transformer.wte.weight"}


def with_usual_permissions(path: Path) -> None:
    """The mode a plain new file or folder gets under the user's umask (0644 and 0755 under 022): safetensors
    and mkdtemp write 0600 and 0700, which a shared checkpoint or export should not have."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if Path(path).is_dir() else 0o666) & ~umask)


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync it, then rename over path: readers see the old or the new file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with_usual_permissions(tmp)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def checksum(t: torch.Tensor) -> str:
    """CRC32 of a tensor's bytes (a check against damage, not against tampering)."""
    flat = t.detach().reshape(-1).cpu().contiguous()
    return f"{zlib.crc32(flat.view(torch.uint8).numpy()) if flat.numel() else 0:08x}"


def _tensors(tree, prefix: str = ""):
    """(path, tensor) for every tensor in nested dicts, lists and tuples."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from _tensors(value, f"{prefix}/{i}")


def _damaged(expected: dict[str, str], tensors) -> list[str]:
    actual = {name: checksum(t) for name, t in tensors}
    return [name for name, crc in expected.items() if actual.get(name) != crc]


def save_weights(path: Path, state_dict: dict, config: GPTConfig, tokenizer_meta: dict,
                 train_config: dict | None = None) -> None:
    """state_dict: the plain model's (not a compiled or DDP wrapper's) full, unsharded weights.
    train_config (the run's TrainConfig) lets a resumed run find its own data again."""
    # on the CPU once: both the checksums and the file read these bytes
    state = {k: v.detach().cpu().contiguous() for k, v in state_dict.items() if k not in TIED}
    metadata = {"gpt_config": json.dumps(config.to_dict()), "tokenizer": json.dumps(tokenizer_meta),
                "tied": json.dumps(TIED), "checksums": json.dumps({k: checksum(v) for k, v in state.items()})}
    if train_config is not None:
        metadata["train_config"] = json.dumps(train_config)
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def saved_train_config(path: Path) -> dict | None:
    """The TrainConfig a weights file was written by (its header only), or None when it records none."""
    try:
        value = read_metadata(path).get("train_config")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is truncated or corrupted and cannot be read: {err}") from None
    return json.loads(value) if value else None


def read_metadata(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


ANOTHER_CHECKPOINT = ("the run's other checkpoint may be whole: gpt.sample and gpt.export take --checkpoint best or last, "
                      "and training goes on from an export with python -m gpt.train --init_from EXPORT_DIR")


def load_weights(path: Path, device: str | torch.device = "cpu") -> tuple[dict, GPTConfig, dict]:
    """Return (state_dict with the tied head filled in, GPTConfig, tokenizer meta); clear errors on bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        metadata = read_metadata(path)
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"checkpoint {path} is truncated or corrupted and cannot be read: {err}") from None
    if "gpt_config" not in metadata or "tokenizer" not in metadata:
        raise ValueError(f"checkpoint {path} has no model config in its metadata; was it written by gpt.train?")
    config = GPTConfig.from_dict(json.loads(metadata["gpt_config"]))
    damaged = _damaged(json.loads(metadata.get("checksums", "{}")), state.items())
    if damaged:
        raise ValueError(f"checkpoint {path} is corrupted: {len(damaged)} tensor(s) do not match the checksums "
                         f"written with them ({', '.join(damaged[:3])}); {ANOTHER_CHECKPOINT}")
    for head, source in TIED.items():
        if source in state:
            state[head] = state[source]
    return state, config, json.loads(metadata["tokenizer"])


def save_train_state(path: Path, state: dict) -> None:
    checksums = {name: checksum(t) for name, t in _tensors(state)}
    atomic_write(path, lambda tmp: torch.save(state | {"checksums": checksums}, tmp))


def load_train_state(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no training state at {path}; nothing to resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # never runs code from the file
    except Exception as err:  # torch raises several types for damaged zip/pickle data
        raise ValueError(f"training state {path} is truncated or corrupted and cannot be read: {err}") from None
    checksums = state.pop("checksums", {})
    damaged = _damaged(checksums, _tensors(state))
    if damaged:
        raise ValueError(f"training state {path} is corrupted: {len(damaged)} tensor(s) do not match the checksums "
                         f"written with them ({', '.join(damaged[:3])}); it cannot be resumed from")
    return state


# ----------------------------------------------------------------------------- a training run's state

def full_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool,
               with_optimizer: bool) -> tuple[dict, dict | None]:
    """The model's full (unsharded) weights and, if asked, the optimizer's state. Collective under FSDP."""
    if not fsdp:
        return model.state_dict(), optimizer.state_dict() if with_optimizer else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_optimizer_state_dict

    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full)
    # Before the first step the optimizer has no state, and asking for it would run a zero-gradient
    # step to create some (advancing Adam's step count): save none then.
    optimizer_state = (get_optimizer_state_dict(model, optimizer, options=full)
                       if with_optimizer and optimizer.state else None)
    return weights, optimizer_state


def load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, fsdp: bool, state: dict | None) -> None:
    """Restore what full_state saved (nothing when it was saved before the first step)."""
    if state is None:
        return
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0)}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state["cuda"].numel():
        torch.cuda.set_rng_state(state["cuda"], device)


def tokenizer_identity(meta: dict) -> dict:
    """What makes two vocabularies the same, apart from where the data was prepared."""
    return {key: meta.get(key) for key in ("kind", "vocab_size", "chars")}


def check_resumable(out_dir: Path, saved: GPTConfig, current: GPTConfig, saved_tokenizer: dict, tokenizer: dict) -> None:
    """A run continues only with the model shape and the vocabulary it was started with."""
    shape_fields = [f.name for f in dataclasses.fields(GPTConfig) if f.name != "dropout"]
    mismatched = [f"{name}: checkpoint {getattr(saved, name)}, now {getattr(current, name)}"
                  for name in shape_fields if getattr(saved, name) != getattr(current, name)]
    if mismatched:
        raise ValueError(f"cannot resume from {out_dir}: the model differs ({'; '.join(mismatched)})")
    if tokenizer_identity(saved_tokenizer) != tokenizer_identity(tokenizer):
        raise ValueError(f"cannot resume from {out_dir}: it was trained on another text or vocabulary "
                         f"({saved_tokenizer.get('kind')}, {saved_tokenizer.get('vocab_size')} tokens)")
