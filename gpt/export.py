"""Export a training run for Hugging Face transformers: `python -m gpt.export RUN_DIR HF_DIR`.

HF_DIR then loads with `transformers.GPT2LMHeadModel.from_pretrained(HF_DIR)` and
`AutoTokenizer.from_pretrained(HF_DIR)`: config.json, model.safetensors in GPT-2's layout, and the
run's tokenizer (GPT-2's BPE for GPT2TokenizerFast, a character vocabulary as a tokenizers-library
tokenizer that maps each character to its id), all as tokenizer.json. Needs transformers: `pip install -e '.[hf]'`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from . import checkpoint, hf
from .config import ArgumentParser, fail


def byte_level_alphabet() -> dict[int, str]:
    """GPT-2's printable stand-in character for every byte (the byte-level BPE's vocabulary alphabet)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    stand_ins = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            stand_ins.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, stand_ins)))


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list a rank table implies: each multi-byte token is the merge of the two parts that
    byte-pair encoding with only the lower ranks leaves of it."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(a + b), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min((r, i) for r, i in pairs if r is not None and r < rank)
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        merges.append((parts[0], parts[1]))
    return merges


def gpt2_tokenizer(encoding, model_max_length: int):
    """GPT-2's byte-level BPE with the tiktoken encoding's ids and merges, as transformers' GPT-2
    tokenizer reads it (tokenizer.json; export() names the class)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ranks = {token: encoding.encode_single_token(token) for token in encoding.token_byte_values()}
    alphabet = byte_level_alphabet()
    spell = lambda token: "".join(alphabet[b] for b in token)  # noqa: E731
    vocab = {spell(token): rank for token, rank in ranks.items()}
    special = {name: encoding.encode_single_token(name) for name in encoding.special_tokens_set}
    tokenizer = Tokenizer(models.BPE(vocab=vocab | special, merges=[(spell(a), spell(b)) for a, b in bpe_merges(ranks)]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's split pattern
    tokenizer.decoder = decoders.ByteLevel()
    end = "<|endoftext|>" if "<|endoftext|>" in special else None
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token=end, bos_token=end, eos_token=end,
                                   model_max_length=model_max_length, clean_up_tokenization_spaces=False)


def char_tokenizer(chars: list[str], model_max_length: int):
    """Each character its id: a byte-pair model with the characters as vocabulary and no merges, whose
    decoder joins the characters back as they were. Characters outside the vocabulary are dropped."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(chars)}, merges=[], ignore_merges=True))
    tokenizer.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, clean_up_tokenization_spaces=False,
                                   model_max_length=model_max_length)


def export(run_dir: str | Path, hf_dir: str | Path, which: str = "best", overwrite: bool = False) -> Path:
    """Write the run's weights, config and tokenizer as a transformers GPT-2 folder; returns its path."""
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        raise ValueError("exporting needs transformers: pip install -e '.[hf]'") from None
    from .data import gpt2_encoding

    run_dir, hf_dir = Path(run_dir), Path(hf_dir)
    path = run_dir / f"{which}.safetensors"
    if which == "best" and not path.exists():
        path = run_dir / "last.safetensors"
    if hf_dir.exists() and any(hf_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"{hf_dir} exists and is not empty: pass --overwrite to replace it, or choose another folder")
        if not (hf_dir / "config.json").is_file():
            raise ValueError(f"{hf_dir} is not a model folder (no config.json): refusing to replace it")
    state, config, meta = checkpoint.load_weights(path)
    if config.banded:
        raise ValueError(
            f"{path} is a banded model (attention_pattern {config.attention_pattern}, attention_window "
            f"{config.attention_window}): transformers' GPT-2 attends densely, so the export would compute another "
            "model. GPT-Neo's local layers are such a band, but GPT-Neo has no q/k/v biases and does not scale the "
            "scores by 1/sqrt(head size), so it is not written for it either; sample with python -m gpt.sample")
    if meta.get("kind") not in ("char", "gpt2"):
        raise ValueError(f"{path} was trained on {meta.get('kind')!r} tokens, which have no text tokenizer to export")
    tokenizer_meta = {key: meta[key] for key in ("kind", "vocab_size", "chars") if key in meta}
    model = GPT2LMHeadModel(GPT2Config(**hf.hf_config_values(config, tokenizer_meta)))
    missing, unexpected = model.load_state_dict(hf.to_hf_state_dict(state, config), strict=False)
    if set(missing) - {"lm_head.weight"} or unexpected:  # lm_head.weight is the tied embedding
        raise ValueError(f"the weights do not map onto GPT-2's: missing {missing}, unexpected {unexpected}")
    tokenizer = (char_tokenizer(meta["chars"], config.block_size) if meta["kind"] == "char"
                 else gpt2_tokenizer(gpt2_encoding(), config.block_size))

    hf_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{hf_dir.name}.", dir=hf_dir.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if meta["kind"] == "gpt2":  # AutoTokenizer then gives GPT-2's own tokenizer class
            settings = json.loads((staging / "tokenizer_config.json").read_text())
            settings["tokenizer_class"] = "GPT2TokenizerFast"
            (staging / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
        for written in [staging, *staging.iterdir()]:
            checkpoint.with_usual_permissions(written)
        if hf_dir.exists():
            shutil.rmtree(hf_dir)
        staging.replace(hf_dir)  # the new folder appears whole, or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return hf_dir


def main(argv: list[str] | None = None) -> Path:
    parser = ArgumentParser(prog="python -m gpt.export",
                            description="Write a training run as a Hugging Face transformers GPT-2 folder.")
    parser.add_argument("run_dir", help="the training run's folder (gpt.train's --out_dir)")
    parser.add_argument("hf_dir", help="the folder to write: config.json, model.safetensors, the tokenizer")
    parser.add_argument("--checkpoint", choices=("best", "last"), default="best",
                        help="which weights (best falls back to last when there is none)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in hf_dir")
    args = parser.parse_args(argv)
    try:
        out = export(args.run_dir, args.hf_dir, args.checkpoint, args.overwrite)
    except (FileNotFoundError, ValueError) as err:
        fail(parser.prog, err)
    print(f"wrote {out}: load it with transformers.GPT2LMHeadModel.from_pretrained({str(out)!r}) "
          f"and AutoTokenizer.from_pretrained({str(out)!r})")
    return out


if __name__ == "__main__":
    main()
