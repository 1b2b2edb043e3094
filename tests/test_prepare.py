"""gpt.prepare: corpora of any size as token shards, and training on them with --data (generated corpora only)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from corpus import make_text, small_bpe
from tiny import tiny_flags

from gpt import data, prepare, train
from gpt.data import BatchSampler, CharTokenizer, ShardedData

TINY = tiny_flags(batch_size=4, eval_iters=2)


@pytest.fixture
def bpe(monkeypatch, corpus):
    encoding = small_bpe(corpus.read_text()[:20000])
    monkeypatch.setattr(data, "gpt2_encoding", lambda: encoding)
    return encoding


def documents(n: int, seed: int = 0) -> list[str]:
    return [make_text(200 + 37 * (i % 11), seed=seed + i) for i in range(n)]


def run(sources, out, *extra, val_fraction="0.2"):
    argv = [*map(str, sources), "--out", str(out), "--workers", "2", *extra]
    if "--val" not in extra:
        argv += ["--val_fraction", val_fraction]
    return prepare.main(argv)


def shard_tokens(out, split) -> np.ndarray:
    manifest = json.loads((out / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"])
    return np.concatenate([np.fromfile(out / s["name"], dtype=dtype) for s in manifest["splits"][split]["shards"]])


def expected_stream(docs, encode, eot, fraction, min_val_tokens=prepare.MIN_VAL_TOKENS):
    """What the shards must hold: each split's documents in order, separated by end-of-text; val takes the
    documents the hash picks, and every document while it holds fewer than min_val_tokens."""
    streams = {"train": [], "val": []}
    for i, doc in enumerate(docs):
        stream = streams["val" if prepare.in_val(i, fraction) or len(streams["val"]) < min_val_tokens else "train"]
        stream += ([eot] if stream else []) + encode(doc)
    return streams


@pytest.mark.parametrize("kind", ["txt file", "folder", "glob", "jsonl", "parquet"])
def test_every_source_kind_gives_its_documents_in_order(tmp_path, bpe, kind):
    docs = documents(12)
    src = tmp_path / "src"
    src.mkdir()
    if kind == "txt file":
        (src / "one.txt").write_text(docs[0])
        docs, sources = docs[:1], [src / "one.txt"]
    elif kind in ("folder", "glob"):
        for i, doc in enumerate(docs):
            (src / f"doc{i:02d}.txt").write_text(doc)
        sources = [src] if kind == "folder" else [f"{src}/doc*.txt"]
    elif kind == "jsonl":
        (src / "a.jsonl").write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs[:7])))
        (src / "b.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs[7:]))
        sources = [src / "a.jsonl", src / "b.jsonl"]
    else:
        pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table({"body": docs, "n": list(range(12))}), src / "docs.parquet", row_group_size=5)
        sources = [src / "docs.parquet"]
    extra = ["--text_field", "body"] if kind == "parquet" else []
    val = ["--val", str(src / "one.txt")] if kind == "txt file" else []
    manifest = run(sources, tmp_path / "out", *extra, *val)
    if kind == "txt file":  # the same file as val: one document each
        assert manifest["splits"]["train"]["documents"] == manifest["splits"]["val"]["documents"] == 1
        assert shard_tokens(tmp_path / "out", "train").tolist() == bpe.encode_ordinary(docs[0])
        return
    streams = expected_stream(docs, bpe.encode_ordinary, bpe.eot_token, 0.2)
    for split in ("train", "val"):
        assert shard_tokens(tmp_path / "out", split).tolist() == streams[split], split
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == 12
    assert manifest["tokenizer"] == {"kind": "gpt2", "vocab_size": bpe.n_vocab, "end_of_text": bpe.eot_token}


def test_shards_and_the_manifest(tmp_path):
    docs = documents(40)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    manifest = run([src], tmp_path / "out", "--tokenizer", "char", "--shard_tokens", "3000")
    chars = sorted(set("".join(docs)))
    assert manifest["tokenizer"]["chars"] == chars + ["<|endoftext|>"] and manifest["dtype"] == "uint16"
    streams = expected_stream(docs, CharTokenizer(chars).encode, len(chars), 0.2)
    train_shards = manifest["splits"]["train"]["shards"]
    assert len(train_shards) == -(-len(streams["train"]) // 3000) > 2
    assert [s["tokens"] for s in train_shards[:-1]] == [3000] * (len(train_shards) - 1)
    assert manifest["splits"]["train"]["tokens"] == len(streams["train"])
    for shard in train_shards:
        assert data.sha256_of(tmp_path / "out" / shard["name"]) == shard["sha256"]
    assert shard_tokens(tmp_path / "out", "train").tolist() == streams["train"]
    assert manifest["sources"] == [{"path": str(src), "bytes": src.stat().st_size, "split": "train"}]
    assert not (tmp_path / "out" / "progress.json").exists()


def test_a_long_text_goes_in_pieces_with_the_tokens_of_the_whole(tmp_path, bpe, monkeypatch):
    monkeypatch.setattr(prepare, "PIECE_CHARS", 500)  # in this process, where the pieces are cut
    text = make_text(30_000, seed=3)
    (tmp_path / "long.txt").write_text(text)
    (tmp_path / "val.txt").write_text(text[:3000])
    run([tmp_path / "long.txt"], tmp_path / "out", "--val", str(tmp_path / "val.txt"))
    assert shard_tokens(tmp_path / "out", "train").tolist() == bpe.encode_ordinary(text)
    pieces = list(prepare.text_pieces(tmp_path / "long.txt", 0))
    assert len(pieces) > 40 and "".join(p.text for p in pieces) == text


def test_an_interrupted_run_resumes_and_writes_the_same_bytes(tmp_path, monkeypatch):
    """Interrupted at the worst moments (after a shard is complete, before the progress names it; and
    between two records), the same command again gives the uninterrupted run's bytes."""
    docs = documents(60)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    args = ["--tokenizer", "char", "--shard_tokens", "2000"]
    run([src], tmp_path / "whole", *args)
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").glob("*.bin")}

    original, calls = prepare.atomic_json, {"n": 0}

    def interrupted(path, value):
        calls["n"] += 1
        if calls["n"] in (4, 9):
            raise KeyboardInterrupt
        original(path, value)

    monkeypatch.setattr(prepare, "atomic_json", interrupted)
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            run([src], tmp_path / "parts", *args)
        assert (tmp_path / "parts" / "progress.json").exists()
    run([src], tmp_path / "parts", *args)
    assert {p.name: p.read_bytes() for p in (tmp_path / "parts").glob("*.bin")} == whole
    assert not list((tmp_path / "parts").glob("*.partial"))


def test_a_killed_run_resumes_and_writes_the_same_bytes(tmp_path):
    """SIGKILL while shards are being written (a separate process), then the same command again."""
    src = tmp_path / "docs.jsonl"
    with open(src, "w") as f:
        for i in range(3000):
            f.write(json.dumps({"text": make_text(2000, seed=i)}) + "\n")
    args = [str(src), "--tokenizer", "char", "--shard_tokens", "200000", "--workers", "1", "--val_fraction", "0.01"]
    prepare.main([*args, "--out", str(tmp_path / "whole")])
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").glob("*.bin")}
    assert len(whole) > 10
    command = [sys.executable, "-m", "gpt.prepare", *args, "--out", str(tmp_path / "parts")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((tmp_path / "parts").glob("train_*.bin"))) < 4:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "parts" / "manifest.json").exists()  # killed before the end
    prepare.main([*args, "--out", str(tmp_path / "parts")])
    assert {p.name: p.read_bytes() for p in (tmp_path / "parts").glob("*.bin")} == whole


def bad_corpus(tmp_path):
    good = documents(8)
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": good[0]}) + "\n" + '{"text": "unterminated\n'
                                      + json.dumps({"title": "no text"}) + "\n" + json.dumps({"text": good[1]}) + "\n")
    (tmp_path / "b.txt").write_bytes(b"fine line\nbad \xff byte\n")
    for i, doc in enumerate(good[2:]):
        (tmp_path / f"c{i}.txt").write_text(doc)
    return [tmp_path / "a.jsonl", tmp_path / "b.txt", *sorted(tmp_path.glob("c*.txt"))]


def test_bad_documents_stop_the_run_naming_file_and_line(tmp_path):
    sources = bad_corpus(tmp_path)
    with pytest.raises(SystemExit, match=r"a\.jsonl:2: not a JSON line .*--on_error skip"):
        run(sources, tmp_path / "out", "--tokenizer", "char")
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    with pytest.raises(SystemExit, match=r"a\.jsonl:2: no field 'text'"):
        run(sources[:1], tmp_path / "out2", "--on_error", "stop", "--tokenizer", "char")
    with pytest.raises(SystemExit, match=r"b\.txt:2: not valid UTF-8 \(byte 14"):
        run(sources[1:], tmp_path / "out3", "--tokenizer", "char")


def test_bad_documents_are_skipped_and_counted_when_asked(tmp_path):
    sources = bad_corpus(tmp_path)
    manifest = run(sources, tmp_path / "out", "--on_error", "skip", "--tokenizer", "char", "--val_fraction", "0.3")
    assert len(manifest["skipped"]) == 3 and "a.jsonl:2" in manifest["skipped"][0]
    assert "a.jsonl:3" in manifest["skipped"][1] and "b.txt:2" in manifest["skipped"][2]
    splits = manifest["splits"]
    assert splits["train"]["documents"] + splits["val"]["documents"] == 8


def test_a_folder_prepared_otherwise_is_refused(tmp_path):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(20)))
    run([docs], tmp_path / "out", "--tokenizer", "char")
    again = run([docs], tmp_path / "out", "--tokenizer", "char")  # the same arguments: already done
    assert again["splits"]["train"]["documents"] > 0
    with pytest.raises(SystemExit, match="was prepared from other arguments"):
        run([docs], tmp_path / "out", "--tokenizer", "char", "--shard_tokens", "1000")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and holds other files"):
        run([docs], tmp_path / "other", "--tokenizer", "char")
    with pytest.raises(SystemExit, match="--val, --val_fraction and --val_tail are three ways"):
        prepare.main([str(docs), "--out", str(tmp_path / "x"), "--val", str(docs), "--val_fraction", "0.1",
                      "--tokenizer", "char"])


def test_ranks_draw_disjoint_batches_that_together_are_one_processes():
    shards = [np.arange(i * 1000, i * 1000 + n, dtype=np.uint16) for i, n in enumerate((300, 40, 700))]
    one = BatchSampler(shards, 16, 8, torch.device("cpu"), seed=5)
    ranks = [BatchSampler(shards, 16, 4, torch.device("cpu"), seed=5, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(5):
        x, y = one.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
        assert not torch.equal(parts[0][0], parts[1][0])
        assert torch.equal(y[:, :-1], x[:, 1:]) and torch.equal(y[:, -1], x[:, -1] + 1)  # never across a shard's end
    state = one.state_dict()
    expected = one.next_batch()
    again = BatchSampler(shards, 16, 8, torch.device("cpu"), seed=0)
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(again.next_batch(), expected))


def test_every_shard_start_can_be_drawn():
    shards = [np.zeros(20, dtype=np.uint16), np.ones(20, dtype=np.uint16)]
    sampler = BatchSampler(shards, 8, 64, torch.device("cpu"), seed=0)
    x, _ = sampler.next_batch()
    assert set(x[:, 0].tolist()) == {0, 1}


def test_input_and_data_of_the_same_text_train_the_same(tmp_path, corpus, data_cache, bpe):
    """--input FILE splits the text 90/10; the same two parts prepared as --data (train, --val) give the same losses."""
    text = corpus.read_text()
    cut = int(0.9 * len(text))
    (tmp_path / "train.txt").write_text(text[:cut])
    (tmp_path / "val.txt").write_text(text[cut:])
    run([tmp_path / "train.txt"], tmp_path / "prepared", "--val", str(tmp_path / "val.txt"))
    common = ["--data_cache", str(data_cache), *TINY, "--tokenizer", "gpt2", "--max_iters", "8", "--eval_interval", "4"]
    train.main(["--input", str(corpus), "--out_dir", str(tmp_path / "a"), *common])
    train.main(["--data", str(tmp_path / "prepared"), "--out_dir", str(tmp_path / "b"), *common])
    records = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
               for run in ("a", "b")]
    key = lambda r: (r["iter"], r.get("loss"), r.get("val_loss"))  # noqa: E731
    assert [key(r) for r in records[0]] == [key(r) for r in records[1]]


def test_training_on_shards_resumes_exactly(tmp_path, data_cache):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(80)))
    run([docs], tmp_path / "prepared", "--tokenizer", "char", "--shard_tokens", "5000")
    common = ["--data", str(tmp_path / "prepared"), "--data_cache", str(data_cache), *TINY, "--eval_interval", "5"]
    train.main([*common, "--out_dir", str(tmp_path / "full"), "--max_iters", "10"])
    train.main([*common, "--out_dir", str(tmp_path / "parts"), "--max_iters", "5"])
    train.main(["--out_dir", str(tmp_path / "parts"), "--data_cache", str(data_cache), *TINY, "--eval_interval", "5",
                "--max_iters", "10", "--resume"])  # no --data: the run's own
    losses = [[(r["iter"], r["loss"]) for r in map(json.loads, (tmp_path / d / "metrics.jsonl").read_text().splitlines())
               if "loss" in r] for d in ("full", "parts")]
    assert losses[0] == losses[1] and len(losses[0]) == 10


def test_damaged_or_unfinished_shards_are_refused(tmp_path, data_cache):
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(30)))
    run([docs], tmp_path / "prepared", "--tokenizer", "char", "--shard_tokens", "4000")
    cache = tmp_path / "cache"
    ShardedData(tmp_path / "prepared", cache).tokens("train")  # verified, remembered
    shard = tmp_path / "prepared" / "train_000001.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1
    shard.write_bytes(bytes(raw))  # same size, new modification time
    with pytest.raises(ValueError, match="train_000001.bin has sha256 .* the manifest says"):
        ShardedData(tmp_path / "prepared", cache).tokens("train")
    shard.write_bytes(bytes(raw[:-2]))
    with pytest.raises(ValueError, match="train_000001.bin is 7998 bytes, the manifest says 8000 bytes"):
        ShardedData(tmp_path / "prepared", cache)
    (tmp_path / "prepared" / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no manifest.json; write one with python -m gpt.prepare"):
        ShardedData(tmp_path / "prepared", cache)


def test_a_small_corpus_gets_a_val_split_by_default(tmp_path, capsys):
    """497 documents at the default --val_fraction (0.0005) is 0.25 of a document: the first documents
    still go to val until it holds an evaluation batch of the largest preset (block_size + 1 tokens)."""
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(497)))
    manifest = prepare.main([str(docs), "--out", str(tmp_path / "out"), "--tokenizer", "char", "--workers", "1"])
    val = manifest["splits"]["val"]
    assert val["documents"] >= 1 and val["tokens"] >= prepare.MIN_VAL_TOKENS
    assert manifest["splits"]["train"]["documents"] + val["documents"] == 497
    assert f"val {val['documents']} documents, {val['tokens']:,} tokens" in capsys.readouterr().out


def test_one_text_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "one.txt").write_text(documents(1)[0])
    with pytest.raises(SystemExit, match="one.txt is one document, .* --val SOURCE, or .* --val_tail 0.1"):
        prepare.main([str(tmp_path / "one.txt"), "--out", str(tmp_path / "out"), "--tokenizer", "char"])
    assert not (tmp_path / "out").exists()


def test_one_text_is_split_by_position_with_val_tail(tmp_path):
    """--val_tail: the text's last fraction of characters is val, each part tokenized alone, no end-of-text
    entry in a character vocabulary (one text has nothing to separate); a long text goes in pieces."""
    text = "".join(documents(40))
    (tmp_path / "one.md").write_text(text)  # a file named as it is: a text, whatever its suffix
    manifest = prepare.main([str(tmp_path / "one.md"), "--out", str(tmp_path / "out"), "--tokenizer", "char",
                             "--val_tail", "0.25", "--shard_tokens", "1000", "--workers", "1"])
    cut = int(len(text) * 0.75)
    chars = sorted(set(text))
    assert manifest["tokenizer"] == {"kind": "char", "vocab_size": len(chars), "chars": chars, "end_of_text": None}
    folder = ShardedData(tmp_path / "out")
    decode = data.CharTokenizer(chars).decode
    assert decode(np.concatenate(folder.tokens("train")).tolist()) == text[:cut]
    assert decode(np.concatenate(folder.tokens("val")).tolist()) == text[cut:]
    for conflicting in (["--val", str(tmp_path / "one.md")], ["--val_fraction", "0.1"]):
        with pytest.raises(SystemExit, match="three ways to choose the val split"):
            prepare.main([str(tmp_path / "one.md"), "--out", str(tmp_path / "x"), "--val_tail", "0.1", *conflicting])
    (tmp_path / "two").mkdir()
    with pytest.raises(SystemExit, match="--val_tail splits one text by position: give one text file"):
        prepare.main([str(tmp_path / "one.md"), str(tmp_path / "one.md"), "--out", str(tmp_path / "two" / "out"),
                      "--val_tail", "0.1", "--tokenizer", "char"])


def test_an_unfinished_run_restarts_with_other_arguments(tmp_path, monkeypatch, capsys):
    """Interrupted, then run again with other arguments: the unfinished shards are deleted and the run
    starts afresh, giving the bytes of an uninterrupted run with the new arguments."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(60)))
    run([src], tmp_path / "whole", "--tokenizer", "char", "--shard_tokens", "3000", val_fraction="0.1")
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").glob("*.bin")}
    original, calls = prepare.atomic_json, {"n": 0}

    def interrupted(path, value):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(path, value)

    monkeypatch.setattr(prepare, "atomic_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run([src], tmp_path / "parts", "--tokenizer", "char", "--shard_tokens", "2000", val_fraction="0.1")
    assert (tmp_path / "parts" / "progress.json").exists() and list((tmp_path / "parts").glob("train_*.bin"))
    monkeypatch.setattr(prepare, "atomic_json", original)
    run([src], tmp_path / "parts", "--tokenizer", "char", "--shard_tokens", "3000", val_fraction="0.1")
    assert "unfinished preparation from other arguments" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp_path / "parts").glob("*.bin")} == whole
