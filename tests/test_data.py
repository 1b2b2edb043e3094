import hashlib
import io
import urllib.error

import numpy as np
import pytest
import torch

from gpt import data, prepare
from gpt.data import BatchSampler, CharTokenizer, ShardedData
from gpt.prepare import prepare_text


def test_shakespeare_char_preparation(shakespeare, data_cache):
    """--input FILE: the text's first 90% of characters train, the rest val, in Tiny Shakespeare's 65
    characters: the same token arrays as encoding each part whole, so the same batches."""
    folder = ShardedData(prepare_text(shakespeare, "char", data_cache))
    text = shakespeare.read_text(encoding="utf-8")
    assert hashlib.sha256(text.encode()).hexdigest() == data.SHAKESPEARE_SHA256
    assert folder.vocab_size == data.SHAKESPEARE_CHARS
    (train,), (val,) = folder.tokens("train"), folder.tokens("val")
    cut = int(0.9 * len(text))
    tok = CharTokenizer.from_text(text)
    assert train.dtype == np.uint16 and np.array_equal(train, tok.encode(text[:cut]))
    assert np.array_equal(val, tok.encode(text[cut:])) and len(train) + len(val) == 1_115_394
    assert folder.tokenizer().decode(val[:50].tolist()) == text[cut:cut + 50]


def test_the_same_text_is_prepared_once_and_a_given_vocabulary_gets_its_own_folder(tmp_path, corpus):
    copy = tmp_path / "elsewhere.txt"
    copy.write_bytes(corpus.read_bytes())
    first = prepare_text(corpus, "char", tmp_path / "cache")
    manifest = (first / "manifest.json").stat().st_mtime_ns
    assert prepare_text(copy, "char", tmp_path / "cache") == first  # by its sha256, not its name
    assert (first / "manifest.json").stat().st_mtime_ns == manifest
    chars = sorted(set(corpus.read_text())) + ["~", "\u00e9"]  # a pretrained model's larger vocabulary
    given = prepare_text(corpus, "char", tmp_path / "cache", list(reversed(chars)))
    assert given != first and ShardedData(given).vocab_size == len(chars)
    (tokens,) = ShardedData(given).tokens("train")
    assert np.array_equal(tokens[:100], CharTokenizer(list(reversed(chars))).encode(corpus.read_text()[:100]))
    copy.write_text(corpus.read_text() + "more")
    assert prepare_text(copy, "char", tmp_path / "cache") != first


def test_char_tokenizer_round_trip_and_unknown_character():
    tok = CharTokenizer.from_text("hello world")
    assert tok.decode(tok.encode("low world")) == "low world"
    with pytest.raises(ValueError, match="'z' is not in this model's vocabulary"):
        tok.encode("zoo")
    with pytest.raises(ValueError, match="3 characters 'a' 'b' 'z' are not in this model's vocabulary"):
        tok.encode("zebra")  # every unknown character named, not only the first


def test_gpt2_tokenizer_uses_tiktoken(tmp_path, monkeypatch):
    tiktoken = pytest.importorskip("tiktoken")
    # GPT-2's vocabulary file is downloaded on first use; offline, a byte-level encoding with
    # GPT-2's split pattern and no merges stands in for it.
    ranks = {bytes([i]): i for i in range(256)}
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    encoding = tiktoken.Encoding("bytes-gpt2-pattern", pat_str=pat, mergeable_ranks=ranks,
                                 special_tokens={"<|endoftext|>": 256})
    monkeypatch.setattr(data, "gpt2_encoding", lambda: encoding)
    monkeypatch.setattr(prepare, "PIECE_CHARS", 100)  # the text goes in many pieces, one cut by the split
    text = "First Citizen:\nBefore we proceed any further, hear me speak. é\n" * 20
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    folder = ShardedData(prepare_text(path, "gpt2", tmp_path / "cache"))
    assert folder.meta["kind"] == "gpt2" and folder.vocab_size == 257
    cut = int(0.9 * len(text))
    (train,), (val,) = folder.tokens("train"), folder.tokens("val")
    assert train.tolist() == encoding.encode_ordinary(text[:cut]) and val.tolist() == encoding.encode_ordinary(text[cut:])


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"abc\n\nd\xff\xfedef", r"input.txt:3: not valid UTF-8 \(byte 6: invalid start byte\)"),
])
def test_bad_input_files(tmp_path, content, message):
    path = tmp_path / "input.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        prepare_text(path, "char", tmp_path / "cache")


def test_too_short_text_is_rejected(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("To be, or not to be: that is the question.\n" * 3)
    prepared = ShardedData(prepare_text(path, "char", tmp_path / "cache"))
    with pytest.raises(ValueError, match=r"the val split has \d+ tokens, fewer than block_size \+ 1 = 65"):
        BatchSampler(prepared.tokens("val"), 64, 4, torch.device("cpu"), seed=0, split="val")


def test_offline_download_says_how_to_provide_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="--input PATH"):
        data.download_shakespeare(tmp_path / "cache")
    assert not list(tmp_path.iterdir())  # no partial file, no empty cache folder left behind


def test_download_is_verified(tmp_path, monkeypatch, shakespeare):
    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response(b"not shakespeare"))
    with pytest.raises(ValueError, match="sha256"):
        data.download_shakespeare(tmp_path)
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda *a, **k: Response(shakespeare.read_bytes()))
    path = data.download_shakespeare(tmp_path)
    assert data.sha256_of(path) == data.SHAKESPEARE_SHA256


def test_batches_are_shifted_chunks_and_reproducible():
    tokens = np.arange(1000, dtype=np.uint16)
    a = BatchSampler(tokens, block_size=16, batch_size=8, device=torch.device("cpu"), seed=3)
    b = BatchSampler(tokens, block_size=16, batch_size=8, device=torch.device("cpu"), seed=3)
    x, y = a.next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)
    state = a.state_dict()
    x2, _ = a.next_batch()
    b.load_state_dict(state)
    assert torch.equal(b.next_batch()[0], x2)


def test_gpt2_bpe_offline_is_one_line_saying_how_to_supply_it(tmp_path, monkeypatch, corpus):
    """tiktoken fetches GPT-2's files with requests, whose ConnectionError is not the builtin one: both
    commands still end in one line naming TIKTOKEN_CACHE_DIR, and leave no folder behind."""
    requests, tiktoken = pytest.importorskip("requests"), pytest.importorskip("tiktoken")

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve host")

    monkeypatch.setattr(requests, "get", offline)
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})  # nothing loaded earlier in this process
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    from gpt import train

    expected = r"could not load GPT-2's BPE: .* \(requests.ConnectionError\)\. Offline\? .*set TIKTOKEN_CACHE_DIR=DIR"
    with pytest.raises(SystemExit, match="^python -m gpt.train: error: " + expected):
        train.main(["--input", str(corpus), "--tokenizer", "gpt2", "--out_dir", str(tmp_path / "run"),
                    "--data_cache", str(tmp_path / "cache"), "--max_iters", "1"])
    (tmp_path / "docs").mkdir()
    for i in range(2):
        (tmp_path / "docs" / f"{i}.txt").write_text("some text")
    with pytest.raises(SystemExit, match="^python -m gpt.prepare: error: " + expected):
        prepare.main([str(tmp_path / "docs"), "--out", str(tmp_path / "shards")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
