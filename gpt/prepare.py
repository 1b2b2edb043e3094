"""Tokenize a corpus of any size into shards: `python -m gpt.prepare SOURCE... --tokenizer gpt2 --out DIR`.

SOURCE: a text file (one document), a folder or glob of .txt files (a document each), .jsonl files
(a document per line, its --text_field) or .parquet files (a document per row). One text alone is split
by position with --val_tail (its last fraction is val, as nanoGPT's Shakespeare); `gpt.train --input
FILE` prepares its text so, into a cache folder named by the file's sha256. Documents stream
through a pool of --workers processes, so memory holds only the documents in flight and one shard
per split, whatever the corpus size; a long text file goes through in pieces cut where the
tokenization cannot change (the same tokens as the whole text at once). In the shards, documents
are separated by the end-of-text token (GPT-2's 50256; for characters, an id after the text's
characters, named <|endoftext|>).

DIR gets train_NNNNNN.bin and val_NNNNNN.bin shards of --shard_tokens tokens (uint16, or uint32 for a
vocabulary above 65536) and manifest.json: the tokenizer, the sources, every shard with its token
count and sha256, and the split (by documents: --val_fraction of them, chosen by a fixed hash of the
document's position, and the first documents until val holds --min_val_tokens, so val is never empty;
or --val SOURCE; or --val_tail). While it runs, progress.json records the position of the last completed shard: run
the same command again after an interruption and it continues from there, writing the same bytes an
uninterrupted run writes; run it with other arguments and the unfinished preparation is started afresh.
A complete DIR prepared with other arguments is refused.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from . import data
from .config import ArgumentParser, fail
from .data import CharTokenizer, sha256_of

END_OF_TEXT = "<|endoftext|>"
PIECE_CHARS = 1 << 20  # a long text goes to the workers in pieces of about this many characters
FORMAT = 2  # of manifest.json and progress.json
MIN_VAL_TOKENS = 1025  # GPT-2's block_size + 1: one evaluation batch of the largest preset
VAL_TAIL = 0.1  # gpt.train --input: the text's last tenth is val


class BadDocument(ValueError):
    """A document that cannot be read: its file and line (or row) in the message."""


@dataclass(frozen=True)
class Document:
    source: int  # index into the sources
    where: str  # "FILE:LINE" or "FILE row N", for messages
    text: str
    last_piece: bool = True  # False for all but the last piece of a long text


# ----------------------------------------------------------------------------- sources

def expand_sources(patterns: list[str]) -> list[Path]:
    """Files of the SOURCE arguments, in a fixed order: a folder gives its .txt files, a glob its matches
    (.txt, .jsonl or .parquet); a file named as it is is a text unless it is .jsonl or .parquet."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
        elif any(ch in pattern for ch in "*?["):
            found = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        elif path.is_file():
            files.append(path)
            continue
        else:
            raise FileNotFoundError(f"source {pattern!r} is not a file, a folder or a glob that matches files")
        if not found:
            raise FileNotFoundError(f"source {pattern!r} holds no files (a folder is read for its .txt files)")
        for file in found:
            if file.suffix not in (".txt", ".jsonl", ".parquet"):
                raise ValueError(f"source {file}: expected a .txt, .jsonl or .parquet file")
        files += found
    return files


def utf8_error(path: Path) -> str | None:
    """Where a file stops being UTF-8 ("FILE:LINE: ..."), or None: read in blocks, nothing kept."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(PIECE_CHARS)
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as err:
                bad = max(0, consumed + err.start - len(decoder.getstate()[0]))
                with open(path, "rb") as again:
                    line = again.read(bad).count(b"\n") + 1
                return f"{path}:{line}: not valid UTF-8 (byte {bad}: {err.reason})"
            if not block:
                return None
            consumed += len(block)


def text_pieces(path: Path, source: int) -> Iterator[Document | BadDocument]:
    """A text file as one document, checked to be UTF-8 first (a bad one is one bad document, none of it
    written), then read in blocks and cut before a space that follows a non-space character: no GPT-2
    pre-token spans such a point, and characters never do."""
    error = utf8_error(path)
    if error:
        yield BadDocument(error)
        return
    pending, line = "", 1
    with open(path, encoding="utf-8", newline="") as f:
        while block := f.read(PIECE_CHARS):
            pending += block
            cut = len(pending)
            while len(pending) > PIECE_CHARS and cut > 0:
                cut = pending.rfind(" ", 0, cut - 1)
                if cut > 0 and not pending[cut - 1].isspace():
                    yield Document(source, f"{path}:{line}", pending[:cut], last_piece=False)
                    line += pending.count("\n", 0, cut)
                    pending = pending[cut:]
                    cut = len(pending)
    yield Document(source, f"{path}:{line}", pending)


def cut_in_two(pieces: Iterator[Document | BadDocument], position: int) -> Iterator[Document | BadDocument]:
    """One text's pieces as two documents, the second from its character `position` (--val_tail)."""
    seen, cut = 0, False
    for doc in pieces:
        if isinstance(doc, BadDocument):
            yield doc
            continue
        start, seen = seen, seen + len(doc.text)
        if cut or position > seen:
            yield doc
            continue
        yield Document(doc.source, doc.where, doc.text[:position - start])
        yield Document(doc.source, doc.where, doc.text[position - start:], last_piece=doc.last_piece)
        cut = True


def jsonl_documents(path: Path, source: int, text_field: str) -> Iterator[Document | BadDocument]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                yield BadDocument(f"{where}: not a JSON line ({err})")
                continue
            if not isinstance(record, dict) or text_field not in record:
                yield BadDocument(f"{where}: no field {text_field!r} (choose it with --text_field)")
            elif not isinstance(record[text_field], str):
                yield BadDocument(f"{where}: field {text_field!r} is {type(record[text_field]).__name__}, not text")
            else:
                yield Document(source, where, record[text_field])


def parquet_documents(path: Path, source: int, text_field: str) -> Iterator[Document | BadDocument]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {path} needs pyarrow: pip install pyarrow") from None
    table = pq.ParquetFile(path)
    if text_field not in table.schema_arrow.names:
        raise BadDocument(f"{path}: no column {text_field!r} (it has {table.schema_arrow.names}; choose with --text_field)")
    row = 0
    for batch in table.iter_batches(columns=[text_field], batch_size=1024):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield Document(source, f"{path} row {row}", value)
            else:
                yield BadDocument(f"{path} row {row}: column {text_field!r} is {type(value).__name__}, not text")
            row += 1


def numbered(stream: Iterator[Document]) -> Iterator[tuple[int, bool, Document]]:
    """(document index, whether this is its first piece, the piece): a long text's pieces share its index."""
    index, first = 0, True
    for doc in stream:
        yield index, first, doc
        first = doc.last_piece
        index += doc.last_piece


def documents(files: list[Path], text_field: str, on_error: str, skipped: list[str],
              val_tail: float = 0.0) -> Iterator[Document]:
    """Every document of every file, in order. A bad one (the readers yield it as a BadDocument) stops
    the run, or with on_error 'skip' is recorded in skipped and left out (a bad text file is one bad
    document). With val_tail, the one text is two documents: its head and its last val_tail of characters."""
    for source, path in enumerate(files):
        if path.suffix == ".jsonl":
            stream = jsonl_documents(path, source, text_field)
        elif path.suffix == ".parquet":
            stream = parquet_documents(path, source, text_field)
        elif val_tail:
            length = sum(len(doc.text) for doc in text_pieces(path, source) if isinstance(doc, Document))
            stream = cut_in_two(text_pieces(path, source), int(length * (1 - val_tail)))
        else:
            stream = text_pieces(path, source)
        for doc in stream:
            if isinstance(doc, BadDocument):
                if on_error == "stop":
                    raise doc
                skipped.append(str(doc))
                continue
            yield doc


# ----------------------------------------------------------------------------- tokenizers

def char_vocabulary(files: list[Path], text_field: str, on_error: str, end_of_text: bool = True) -> list[str]:
    """Every character of the corpus (a first pass over it), sorted, then the end-of-text entry (which
    one text alone never needs: it has no second document to separate)."""
    chars: set[str] = set()
    for doc in documents(files, text_field, on_error, []):
        chars.update(doc.text)
    return sorted(chars) + [END_OF_TEXT] * end_of_text


_encode = None  # each worker's tokenizer, made once by _start_worker


def _start_worker(chars: list[str] | None, encoding) -> None:
    global _encode
    _encode = CharTokenizer(chars).encode if chars is not None else encoding.encode_ordinary


def _tokenize(text: str) -> np.ndarray:
    return np.asarray(_encode(text), dtype=np.uint32)


# ----------------------------------------------------------------------------- shards

def in_val(index: int, fraction: float) -> bool:
    """Document index's split under --val_fraction: a fixed 64-bit mix of the index (splitmix64), so
    the val documents are spread over the corpus and the same on every run."""
    z = (index + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) < fraction * 2.0 ** 64


@dataclass
class SplitWriter:
    """One split's shards: tokens append to the open shard's .partial file; a full shard is renamed."""

    folder: Path
    split: str
    shard_tokens: int
    dtype: str
    shards: list[dict] = field(default_factory=list)  # completed: name, tokens, sha256
    partial_tokens: int = 0  # in the open shard
    documents: int = 0
    started: bool = False  # a document has been written (the next one needs a separator first)

    @property
    def tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards) + self.partial_tokens

    def _partial(self) -> Path:
        return self.folder / f"{self.split}_{len(self.shards):06d}.bin.partial"

    def write(self, tokens: np.ndarray) -> bool:
        """Append tokens; returns whether a shard was completed."""
        completed = False
        tokens = tokens.astype(self.dtype)
        while len(tokens):
            room = self.shard_tokens - self.partial_tokens
            with open(self._partial(), "ab") as f:
                f.write(tokens[:room].tobytes())
            self.partial_tokens += min(room, len(tokens))
            tokens = tokens[room:]
            if self.partial_tokens == self.shard_tokens:
                self._close_shard()
                completed = True
        return completed

    def _close_shard(self) -> None:
        partial = self._partial()
        final = partial.with_suffix("")  # drops .partial
        with open(partial, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, final)
        self.shards.append({"name": final.name, "tokens": self.partial_tokens, "sha256": sha256_of(final)})
        self.partial_tokens = 0

    def sync(self) -> None:
        """The open shard's tokens on disk, before a progress record names them."""
        partial = self._partial()
        if partial.exists():
            with open(partial, "rb+") as f:
                os.fsync(f.fileno())

    def finish(self) -> None:
        if self.partial_tokens:
            self._close_shard()

    def state(self) -> dict:
        return {"shards": self.shards, "partial_tokens": self.partial_tokens, "documents": self.documents,
                "started": self.started}

    def restore(self, state: dict) -> None:
        """Back to a recorded state: the open shard's file cut to the tokens recorded then."""
        self.shards, self.partial_tokens = state["shards"], state["partial_tokens"]
        self.documents, self.started = state["documents"], state["started"]
        partial = self._partial()
        if not partial.exists() and partial.with_suffix("").exists():  # completed after the record was written
            os.replace(partial.with_suffix(""), partial)
        size = self.partial_tokens * np.dtype(self.dtype).itemsize
        if self.partial_tokens and (not partial.exists() or partial.stat().st_size < size):
            raise ValueError(f"{partial} is shorter than progress.json records: delete {self.folder} and start again")
        if partial.exists():
            os.truncate(partial, size)
        for later in self.folder.glob(f"{self.split}_*.bin*"):  # written after the recorded state
            if later.name not in {s["name"] for s in self.shards} and later != partial:
                later.unlink()


def atomic_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- the run

@dataclass(frozen=True)
class PrepareArgs:
    """What defines a prepared folder's bytes; another run into the folder must have the same."""

    sources: list[str]
    val: list[str]
    tokenizer: str
    text_field: str
    shard_tokens: int
    val_fraction: float
    on_error: str
    min_val_tokens: int = MIN_VAL_TOKENS
    val_tail: float = 0.0  # one text: its last fraction of characters is val
    chars: list[str] | None = None  # a character vocabulary to encode with (a pretrained model's)

    def recorded(self) -> dict:
        """As manifest.json records them: the single-text arguments only where used, so that folders
        prepared before those existed still open."""
        values = asdict(self) | {"format": FORMAT}
        return {name: value for name, value in values.items() if name not in ("val_tail", "chars") or value}


def prepare_corpus(args: PrepareArgs, out: str | Path, workers: int = 1, progress: bool = False) -> dict:
    """Tokenize args' sources into out (see the module's docstring); returns the manifest."""
    out = Path(out)
    files = expand_sources(args.sources)
    val_files = expand_sources(args.val) if args.val else []
    defined = args.recorded()
    sources = [{"path": str(p), "bytes": p.stat().st_size, "split": split}
               for split, group in (("train", files), ("val", val_files)) for p in group]
    manifest_path, progress_path = out / "manifest.json", out / "progress.json"
    if manifest_path.exists():
        recorded = json.loads(manifest_path.read_text())
        if recorded["arguments"] != defined or recorded["sources"] != sources:
            raise ValueError(f"{out} was prepared from other arguments or sources (manifest.json records "
                             f"{recorded['arguments']}): choose another --out, or delete it")
        return recorded  # complete already
    if out.exists() and not progress_path.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and holds other files: choose another --out, or empty it")
    if args.val_tail and (len(files) != 1 or files[0].suffix in (".jsonl", ".parquet") or val_files):
        raise ValueError("--val_tail splits one text by position: give one text file and no --val")
    if args.chars is not None and not args.val_tail:
        raise ValueError("a given character vocabulary has no end-of-text entry: it prepares one text (--val_tail)")
    if len(files) == 1 and files[0].suffix not in (".jsonl", ".parquet") and not val_files and not args.val_tail:
        raise ValueError(f"{files[0]} is one document, and the split is by documents: give the val text with "
                         "--val SOURCE, or split the text by position with --val_tail 0.1")

    # Everything that can fail before a byte is written (the tokenizer's files, the vocabulary) is settled first.
    if args.tokenizer == "char":
        chars = args.chars or char_vocabulary(files + val_files, args.text_field, args.on_error, not args.val_tail)
        encoding = None
        tokenizer = {"kind": "char", "vocab_size": len(chars), "chars": chars,
                     "end_of_text": None if args.val_tail else len(chars) - 1}
    else:
        encoding = data.gpt2_encoding()  # looked up at call time: one place to stand in for it
        chars = None
        tokenizer = {"kind": "gpt2", "vocab_size": encoding.n_vocab, "end_of_text": encoding.eot_token}
    if progress_path.exists():
        recorded = json.loads(progress_path.read_text())
        if recorded["arguments"] != defined or recorded["sources"] != sources:
            for unfinished in [*out.glob("train_*.bin*"), *out.glob("val_*.bin*"), progress_path]:
                unfinished.unlink()
            print(f"{out}: an unfinished preparation from other arguments ({recorded['arguments']}) was deleted; "
                  "starting afresh", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    dtype = "uint16" if tokenizer["vocab_size"] <= 1 << 16 else "uint32"
    writers = {split: SplitWriter(out, split, args.shard_tokens, dtype) for split in ("train", "val")}
    next_document, skipped = 0, []  # the skipped documents are met again on the way to next_document
    if progress_path.exists():
        state = json.loads(progress_path.read_text())
        next_document = state["next_document"]
        for split, writer in writers.items():
            writer.restore(state["splits"][split])

    def record_progress(position: int) -> None:
        for writer in writers.values():  # what the state records is on disk first
            writer.sync()
        atomic_json(progress_path, {"arguments": defined, "sources": sources, "next_document": position,
                                    "splits": {s: w.state() for s, w in writers.items()}})

    record_progress(next_document)
    n_train = len(files)

    def goes_to_val(index: int, source: int) -> bool:
        if args.val_tail:
            return index == 1  # the text's tail
        if val_files:
            return source >= n_train
        return in_val(index, args.val_fraction) or writers["val"].tokens < args.min_val_tokens

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit=" docs", file=sys.stderr, disable=not sys.stderr.isatty(), initial=next_document)
    started_at, tokens_seen, last_record, completed = time.perf_counter(), 0, time.perf_counter(), False
    writer = None  # the split of the document being written
    in_flight: deque = deque()

    def write_results() -> None:
        """The oldest batch in flight, written in document order; the progress recorded at a document's
        end after a shard completed (or every half minute)."""
        nonlocal tokens_seen, last_record, completed, writer
        batch, result = in_flight.popleft()
        for (index, first, doc), tokens in zip(batch, result.get()):
            if first:  # a document's split, decided at its first piece
                writer = writers["val" if goes_to_val(index, doc.source) else "train"]
            if first and writer.started:
                writer.write(np.array([tokenizer["end_of_text"]]))
            completed |= writer.write(tokens)
            writer.started = True
            tokens_seen += len(tokens)
            if doc.last_piece:
                writer.documents += 1
                if completed or time.perf_counter() - last_record > 30:
                    record_progress(index + 1)
                    last_record, completed = time.perf_counter(), False
        if bar is not None:
            bar.update(sum(doc.last_piece for _, _, doc in batch))
            bar.set_postfix(tokens=f"{tokens_seen:,}", tok_s=f"{tokens_seen / (time.perf_counter() - started_at):,.0f}")

    documents_read = 0
    # fork where there is one: the workers run only the tokenizer (no torch), and start at once
    context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    with context.Pool(workers, initializer=_start_worker, initargs=(chars, encoding)) as pool:
        batch, batch_chars = [], 0
        for index, first, doc in numbered(documents(files + val_files, args.text_field, args.on_error, skipped,
                                                    args.val_tail)):
            documents_read = index + doc.last_piece
            if index < next_document:  # written before an interruption: read past, not tokenized again
                continue
            batch.append((index, first, doc))
            batch_chars += len(doc.text)
            if batch_chars >= PIECE_CHARS:
                in_flight.append((batch, pool.map_async(_tokenize, [d.text for _, _, d in batch], chunksize=8)))
                batch, batch_chars = [], 0
                while len(in_flight) > 2 * workers:  # bounded: the rest of the corpus waits on disk
                    write_results()
        if batch:
            in_flight.append((batch, pool.map_async(_tokenize, [d.text for _, _, d in batch], chunksize=8)))
        while in_flight:
            write_results()
    if bar is not None:
        bar.close()

    for split, writer in writers.items():
        if not writer.documents:
            hint = "pass --val SOURCE" if split == "val" else "add sources, or lower --min_val_tokens"
            raise ValueError(f"the {split} split has no documents ({documents_read} read in all"
                             f"{f', {len(skipped)} skipped' if skipped else ''}): {hint}")
    for writer in writers.values():
        writer.finish()
    manifest = {"arguments": defined, "sources": sources, "tokenizer": tokenizer, "dtype": dtype,
                "skipped": skipped,
                "splits": {split: {"documents": w.documents, "tokens": sum(s["tokens"] for s in w.shards),
                                   "shards": w.shards} for split, w in writers.items()}}
    atomic_json(manifest_path, manifest)  # written last: its presence marks a complete preparation
    progress_path.unlink()
    return manifest


def prepare_text(path: str | Path, tokenizer: str, cache_dir: Path, chars: list[str] | None = None) -> Path:
    """`gpt.train --input FILE`: the text prepared once (its last VAL_TAIL the val split) into a folder of
    cache_dir named by its sha256 and the tokenizer (and a given character vocabulary, a pretrained
    model's), which --data's reader then reads: one data path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input text {str(path)!r} does not exist or is not a file")
    if not path.stat().st_size:
        raise ValueError(f"input text {str(path)!r} is empty; expected a UTF-8 text to train on")
    vocabulary = "" if chars is None else "-" + hashlib.sha256(json.dumps(chars).encode()).hexdigest()[:8]
    folder = Path(cache_dir) / "texts" / f"{sha256_of(path)[:16]}-{tokenizer}{vocabulary}"
    if not (folder / "manifest.json").exists():
        args = PrepareArgs([str(path)], [], tokenizer, "text", 100_000_000, 0.0, "stop", 0, VAL_TAIL, chars)
        prepare_corpus(args, folder, workers=min(8, os.cpu_count() or 1))
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(prog="python -m gpt.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="text files, folders or globs of .txt files, .jsonl or .parquet files")
    parser.add_argument("--out", required=True, help="the folder to write the shards and manifest.json into")
    parser.add_argument("--tokenizer", choices=("gpt2", "char"), default="gpt2",
                        help="GPT-2's BPE (tiktoken), or one token per character of the corpus (default: gpt2; "
                             "gpt.train's default is char)")
    parser.add_argument("--text_field", "--text-field", default="text",
                        help="the text's field in .jsonl/.parquet (default: text)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="tokenizing processes (default: the CPU count, %(default)s here)")
    parser.add_argument("--shard_tokens", "--shard-tokens", type=int, default=100_000_000,
                        help="tokens per shard (default: %(default)s)")
    parser.add_argument("--val_fraction", "--val-fraction", type=float, default=None,
                        help="the share of documents for the val split, chosen by a hash of their position "
                             "(default: 0.0005; not with --val)")
    parser.add_argument("--min_val_tokens", "--min-val-tokens", type=int, default=MIN_VAL_TOKENS,
                        help="without --val, the first documents also go to val until it holds this many tokens "
                             "(default: %(default)s, GPT-2's block_size + 1)")
    parser.add_argument("--val", nargs="+", default=[], metavar="SOURCE",
                        help="val documents from these sources (instead of --val_fraction)")
    parser.add_argument("--val_tail", "--val-tail", type=float, default=0.0,
                        help="one text alone: its last fraction of characters is val (gpt.train --input: "
                             f"{VAL_TAIL}; instead of --val and --val_fraction)")
    parser.add_argument("--on_error", "--on-error", choices=("stop", "skip"), default="stop",
                        help="a bad document (invalid UTF-8, a JSON line that does not parse, a missing "
                             "field): stop, or skip it and count it in the manifest (default: stop)")
    args = parser.parse_args(argv)
    if sum([bool(args.val), args.val_fraction is not None, bool(args.val_tail)]) > 1:
        parser.error("--val, --val_fraction and --val_tail are three ways to choose the val split: give one")
    fraction = 0.0 if args.val or args.val_tail else 0.0005 if args.val_fraction is None else args.val_fraction
    if (not 0 <= fraction < 1 or not 0 <= args.val_tail < 1 or args.workers < 1 or args.shard_tokens < 1
            or args.min_val_tokens < 0):
        parser.error("--val_fraction and --val_tail must be in [0, 1), --workers and --shard_tokens positive, "
                     "--min_val_tokens >= 0")
    defined = PrepareArgs(args.sources, args.val, args.tokenizer, args.text_field, args.shard_tokens, fraction,
                          args.on_error, 0 if args.val or args.val_tail else args.min_val_tokens, args.val_tail)
    try:
        manifest = prepare_corpus(defined, args.out, args.workers, progress=True)
    except (BadDocument, ValueError, FileNotFoundError, ConnectionError) as err:
        hint = " (pass --on_error skip to leave such documents out, counted)" if isinstance(err, BadDocument) else ""
        fail(parser.prog, type(err)(f"{err}{hint}"))
    splits = manifest["splits"]
    print(f"{args.out}: " + ", ".join(f"{split} {s['documents']:,} documents, {s['tokens']:,} tokens in "
                                      f"{len(s['shards'])} shard(s)" for split, s in splits.items())
          + (f"; {len(manifest['skipped'])} bad document(s) skipped, listed in manifest.json" if manifest["skipped"] else ""))
    return manifest


if __name__ == "__main__":
    main()
