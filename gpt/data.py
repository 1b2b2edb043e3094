"""Data: fetch and verify Tiny Shakespeare, the tokenizers (characters or GPT-2 BPE), and batches from
a folder that gpt.prepare wrote (`--data DIR`, or `--input FILE` prepared into the cache by
gpt.prepare.prepare_text), read as memmaps.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
SHAKESPEARE_BYTES = 1_115_394
SHAKESPEARE_CHARS = 65  # its distinct characters: the vocabulary of the default run
GPT2_VOCAB = 50257  # GPT-2's BPE tokens, end of text the last


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "gpt-kernels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_tiny_shakespeare(path: Path) -> bool:
    """Whether path holds Tiny Shakespeare's exact bytes (its size first: other files are never hashed)."""
    return path.is_file() and path.stat().st_size == SHAKESPEARE_BYTES and sha256_of(path) == SHAKESPEARE_SHA256


def download_shakespeare(cache_dir: Path) -> Path:
    """Return the path of a verified Tiny Shakespeare, downloading it once into cache_dir."""
    path = Path(cache_dir) / "tinyshakespeare" / "input.txt"
    if is_tiny_shakespeare(path):
        return path
    created = [p for p in (path.parent.parent, path.parent) if not p.exists()]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".part")
    try:
        with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response, open(partial, "wb") as f:
            f.write(response.read())
    except (urllib.error.URLError, OSError) as err:
        partial.unlink(missing_ok=True)
        for folder in reversed(created):  # leave no empty cache folders behind
            folder.rmdir()
        raise ConnectionError(
            f"could not download Tiny Shakespeare from {SHAKESPEARE_URL} ({err}). "
            f"Offline? Put a copy at {path}, or train on a local text file with --input PATH."
        ) from None
    actual = sha256_of(partial)
    if actual != SHAKESPEARE_SHA256:
        partial.unlink()
        raise ValueError(f"downloaded Tiny Shakespeare has sha256 {actual}, expected {SHAKESPEARE_SHA256}; "
                         "the download is corrupted or the file changed: try again, or pass --input PATH")
    partial.replace(path)
    return path


# ----------------------------------------------------------------------------- tokenizers

class CharTokenizer:
    """One token per distinct character of the training text (65 for Tiny Shakespeare)."""

    kind = "char"

    def __init__(self, chars: list[str]):
        self.chars = chars
        self.stoi = {ch: i for i, ch in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            raise ValueError(f"{'character' if len(unknown) == 1 else f'{len(unknown)} characters'} "
                             f"{' '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not in this "
                             "model's vocabulary") from None

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_meta(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size, "chars": self.chars}


def gpt2_encoding():
    """GPT-2's BPE from tiktoken, which downloads its two files once into a cache folder; offline without them,
    one line that says how to supply them (requests' errors are OSErrors, not the builtin ConnectionError)."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except (OSError, ValueError) as err:
        import tempfile

        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "data-gym-cache")
        raise ConnectionError(
            f"could not load GPT-2's BPE: tiktoken downloads its files once into {cache} and could not "
            f"({type(err).__module__.split('.')[0]}.{type(err).__name__}). Offline? On a "
            "machine online run `TIKTOKEN_CACHE_DIR=DIR python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"`, "
            "copy DIR here and set TIKTOKEN_CACHE_DIR=DIR; or use --tokenizer char") from None


class GPT2Tokenizer:
    """GPT-2's byte-level BPE (tiktoken); 50257 tokens, end of text = 50256."""

    kind = "gpt2"

    def __init__(self):
        self.encoding = gpt2_encoding()
        self.vocab_size = self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids) -> str:
        return self.encoding.decode(list(ids))

    def to_meta(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


def tokenizer_from_meta(meta: dict):
    if meta.get("kind") == "char":
        return CharTokenizer(list(meta["chars"]))
    if meta.get("kind") == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"unknown tokenizer in meta: {meta.get('kind')!r}; expected 'char' or 'gpt2'")


# ----------------------------------------------------------------------------- batches

class ShardedData:
    """A folder written by `python -m gpt.prepare`: its manifest, and each split's shards as memmaps.

    Each shard's size is checked against the manifest when the folder is opened, and its sha256 on
    first use (remembered by path, size and modification time in the cache folder, so later runs skip it)."""

    def __init__(self, folder: str | Path, cache_dir: str | Path | None = None):
        self.folder = Path(folder)
        manifest_path = self.folder / "manifest.json"
        if not manifest_path.is_file():
            partial = " (its preparation has not finished: run the same gpt.prepare command again)" \
                if (self.folder / "progress.json").exists() else ""
            raise FileNotFoundError(f"--data {self.folder} has no manifest.json{partial}; "
                                    "write one with python -m gpt.prepare SOURCE --out DIR")
        self.manifest = json.loads(manifest_path.read_text())
        self.dtype = np.dtype(self.manifest["dtype"])
        self.verified_path = (Path(cache_dir) if cache_dir else default_cache_dir()) / "verified-shards.json"
        self._opened: dict[str, list[np.memmap]] = {}
        for split in ("train", "val"):
            for shard in self.manifest["splits"][split]["shards"]:
                path = self.folder / shard["name"]
                expected = shard["tokens"] * self.dtype.itemsize
                if not path.is_file() or path.stat().st_size != expected:
                    found = f"{path.stat().st_size} bytes" if path.is_file() else "missing"
                    raise ValueError(f"shard {path} is {found}, the manifest says {expected} bytes: "
                                     "the folder is incomplete or damaged; prepare it again")

    @property
    def meta(self) -> dict:
        return {k: v for k, v in self.manifest["tokenizer"].items() if k != "end_of_text"} | {"data": str(self.folder)}

    @property
    def vocab_size(self) -> int:
        return self.manifest["tokenizer"]["vocab_size"]

    def tokenizer(self):
        return tokenizer_from_meta(self.meta)

    def tokens(self, split: str) -> list[np.memmap]:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split not in self._opened:  # the trainer asks again at every evaluation
            shards = self.manifest["splits"][split]["shards"]
            self._verify(shards)
            self._opened[split] = [np.memmap(self.folder / s["name"], dtype=self.dtype, mode="r") for s in shards]
        return self._opened[split]

    def _verify(self, shards: list[dict]) -> None:
        verified = json.loads(self.verified_path.read_text()) if self.verified_path.exists() else {}
        changed = False
        for shard in shards:
            path = (self.folder / shard["name"]).resolve()
            stat = path.stat()
            key, seen = str(path), [stat.st_size, stat.st_mtime_ns, shard["sha256"]]
            if verified.get(key) == seen:
                continue
            actual = sha256_of(path)
            if actual != shard["sha256"]:
                raise ValueError(f"shard {path} has sha256 {actual}, the manifest says {shard['sha256']}: "
                                 "it is damaged; prepare the folder again")
            verified[key], changed = seen, True
        if changed:
            self.verified_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.verified_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(verified))
            tmp.replace(self.verified_path)


class BatchSampler:
    """Random chunks of block_size tokens (targets shifted by one) from one split: one token array, or
    the shards of a prepared folder (a chunk never crosses a shard's end; every start is equally likely).

    The offsets come from a torch.Generator whose state is checkpointed, so a resumed run sees
    exactly the batches the uninterrupted run would have seen. Under torchrun every rank follows
    the same generator, draws world_size * batch_size offsets per micro-step and keeps its own
    slice: ranks see disjoint data, and W ranks reproduce one process's batches exactly.
    """

    def __init__(self, tokens: np.ndarray | list[np.ndarray], block_size: int, batch_size: int, device: torch.device,
                 seed: int, split: str = "train", rank: int = 0, world_size: int = 1):
        self.shards = tokens if isinstance(tokens, list) else [tokens]
        windows = [max(0, len(shard) - block_size) for shard in self.shards]
        self.window_starts = np.cumsum([0] + windows)  # shard i's chunks are numbered from window_starts[i]
        if self.window_starts[-1] == 0:
            counted = sum(len(shard) for shard in self.shards)
            where = f" (the longest of its {len(self.shards)} shards has {max(map(len, self.shards))})" \
                if len(self.shards) > 1 else ""
            raise ValueError(
                f"the {split} split has {counted} tokens{where}, fewer than block_size + 1 = {block_size + 1}; "
                "use a longer text or a smaller --block_size"
            )
        self.block_size = block_size
        self.batch_size = batch_size
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(int(self.window_starts[-1]), (self.world_size * self.batch_size,),
                               generator=self.generator)[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        starts = starts.numpy()
        shard = np.searchsorted(self.window_starts, starts, side="right") - 1
        chunks = np.stack([self.shards[i][s:s + self.block_size + 1]
                           for i, s in zip(shard.tolist(), (starts - self.window_starts[shard]).tolist())])
        chunks = torch.from_numpy(chunks.astype(np.int64))  # (B, T+1)
        x, y = chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()  # (B, T) each
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
            y = y.pin_memory().to(self.device, non_blocking=True)
        return x, y

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class SyntheticSampler(BatchSampler):
    """Uniform random tokens of the same shapes: for throughput measurements, no text needed."""

    def __init__(self, vocab_size: int, block_size: int, batch_size: int, device: torch.device, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.vocab_size, self.block_size, self.batch_size = vocab_size, block_size, batch_size
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed + rank)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        chunks = torch.randint(self.vocab_size, (self.batch_size, self.block_size + 1), generator=self.generator)
        return chunks[:, :-1].contiguous().to(self.device), chunks[:, 1:].contiguous().to(self.device)
