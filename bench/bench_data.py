"""Data pipeline benchmarks: gpt.prepare against tiktoken's own batch encoder, its peak memory, and the
shard loader against the rate a GPU trains.

    pytest bench/bench_data.py                       # a small smoke run of each (what CI runs)
    python bench/bench_data.py --corpus_mb 2000      # the real measurement: ratios and peak memory

Every figure compares two things measured side by side in one run on the same documents. The BPE is
GPT-2's where tiktoken has its files, else one trained here on the generated corpus (tests/corpus.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from corpus import make_text, small_bpe  # tests/, on pytest's path (pyproject.toml)

from gpt import data, prepare

ROOT = Path(__file__).resolve().parents[1]

H100_TOKENS_PER_S = 0.5e6  # GPT-2 124M training on one H100, about (the figure)


def bpe_encoding():
    """GPT-2's own, or (offline) a BPE trained on the generated corpus, and which one it is."""
    try:
        return data.gpt2_encoding(), "GPT-2's BPE"
    except Exception:  # no network for tiktoken's first download
        return small_bpe(make_text(200_000, seed=1), merges=2000), "a 2,256-token BPE trained on the generated corpus"


def write_corpus(path: Path, megabytes: float) -> int:
    """A .jsonl of generated documents of about 4-12 KB each, about megabytes in all; returns the document count."""
    count, written = 0, 0
    with open(path, "w") as f:
        while written < megabytes * 1e6:
            text = make_text(4000 + 800 * (count % 11), seed=count % 997)
            line = json.dumps({"text": text}) + "\n"
            f.write(line)
            written += len(line)
            count += 1
    return count


def peak_rss_of_tree(process: subprocess.Popen) -> int:
    """The largest sum of resident memory of a process and its children, sampled every 50 ms until it ends."""
    def rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            children = []
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    children += map(int, f.read().split())
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            return 0
        return kb * 1024 + sum(rss(child) for child in children)

    peak = 0
    while process.poll() is None:
        peak = max(peak, rss(process.pid))
        time.sleep(0.05)
    return peak


def prepare_against_tiktoken(corpus: Path, out: Path, workers: int, encoding, val_fraction: float = 0.0005) -> dict:
    """Tokens per second of gpt.prepare (the whole command: reading, tokenizing, writing shards) and of
    encode_ordinary_batch over the same documents with as many threads."""
    texts = [json.loads(line)["text"] for line in corpus.open()]
    start = time.perf_counter()
    tokens = sum(map(len, encoding.encode_ordinary_batch(texts, num_threads=workers)))
    tiktoken_s = time.perf_counter() - start
    del texts
    args = prepare.PrepareArgs([str(corpus)], [], "gpt2", "text", 100_000_000, val_fraction, "stop")
    original = data.gpt2_encoding
    data.gpt2_encoding = lambda: encoding
    try:
        start = time.perf_counter()
        manifest = prepare.prepare_corpus(args, out, workers)
        prepare_s = time.perf_counter() - start
    finally:
        data.gpt2_encoding = original
    ours = sum(s["tokens"] for s in manifest["splits"].values())
    documents = sum(s["documents"] for s in manifest["splits"].values())
    assert ours == tokens + documents - 2, (ours, tokens)  # one end-of-text between documents of a split
    return {"tokens": tokens, "tiktoken_tok_per_s": tokens / tiktoken_s, "prepare_tok_per_s": ours / prepare_s,
            "ratio": (ours / prepare_s) / (tokens / tiktoken_s)}


def loader_rate(folder: Path, batch_size: int = 16, block_size: int = 1024, batches: int = 200) -> float:
    """Tokens per second the shard loader delivers (B x T per batch, on the host, one batch at a time)."""
    sampler = data.BatchSampler(data.ShardedData(folder).tokens("train"), block_size, batch_size,
                                torch.device("cpu"), seed=0)
    sampler.next_batch()
    start = time.perf_counter()
    for _ in range(batches):
        sampler.next_batch()
    return batches * batch_size * block_size / (time.perf_counter() - start)


def test_prepare_against_tiktoken(benchmark, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 1)
    encoding = small_bpe(make_text(50_000, seed=1), merges=200)
    result = benchmark.pedantic(prepare_against_tiktoken, args=(corpus, tmp_path / "out", 2, encoding, 0.05), rounds=1)
    assert result["prepare_tok_per_s"] > 0 and result["tiktoken_tok_per_s"] > 0


def test_loader_rate(benchmark, tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, 1)
    prepare.main([str(corpus), "--out", str(tmp_path / "out"), "--tokenizer", "char", "--workers", "1",
                  "--shard_tokens", "200000", "--val_fraction", "0.05"])
    rate = benchmark.pedantic(loader_rate, args=(tmp_path / "out", 4, 64, 20), rounds=1)
    assert rate > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus_mb", type=float, default=200, help="size of the generated corpus for throughput")
    parser.add_argument("--memory_mb", type=float, default=2000, help="size of the corpus for peak memory")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work_dir", default=None, help="where the corpora and shards go (default: a temporary folder)")
    args = parser.parse_args()
    encoding, which = bpe_encoding()
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        tmp = Path(tmp)
        print(f"tokenizer: {which}; {os.cpu_count()} CPUs, {args.workers} workers")
        documents = write_corpus(tmp / "corpus.jsonl", args.corpus_mb)
        result = prepare_against_tiktoken(tmp / "corpus.jsonl", tmp / "out", args.workers, encoding)
        print(f"prepare vs tiktoken.encode_ordinary_batch({args.workers} threads), {args.corpus_mb:.0f} MB, "
              f"{documents:,} documents, {result['tokens']:,} tokens: {result['prepare_tok_per_s']:,.0f} vs "
              f"{result['tiktoken_tok_per_s']:,.0f} tokens/s = {result['ratio']:.2f}x")
        rate = loader_rate(tmp / "out")
        print(f"loader, B=16 T=1024 from {len(list((tmp / 'out').glob('train_*.bin')))} shard(s): {rate:,.0f} tokens/s "
              f"= {rate / H100_TOKENS_PER_S:.0f}x the {H100_TOKENS_PER_S:,.0f} tokens/s an H100 trains GPT-2 124M")
        (tmp / "corpus.jsonl").unlink()
        write_corpus(tmp / "big.jsonl", args.memory_mb)
        size = (tmp / "big.jsonl").stat().st_size
        command = [sys.executable, "-m", "gpt.prepare", str(tmp / "big.jsonl"), "--out", str(tmp / "big"),
                   "--tokenizer", "char", "--workers", str(args.workers)]
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=ROOT)
        peak = peak_rss_of_tree(process)
        assert process.returncode == 0
        print(f"peak memory of gpt.prepare (main process and workers) over a {size / 1e9:.2f} GB corpus: "
              f"{peak / 2**20:,.0f} MiB in {time.perf_counter() - start:.0f} s (char tokenizer: two passes)")


if __name__ == "__main__":
    main()
