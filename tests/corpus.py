"""A play-shaped text this project writes itself, so the tests need no download, and a BPE trained on it.

It uses exactly Tiny Shakespeare's 65 characters (so vocabularies, prompts and shapes match the
real data set's), in speaker-and-lines form, with enough repetition of words and names for a
tiny model's loss to fall. Deterministic: the same seed writes the same text.
"""

from __future__ import annotations

import random
import string
from pathlib import Path

CHARACTERS = "\n !$&',-.3:;?" + string.ascii_uppercase + string.ascii_lowercase  # Tiny Shakespeare's 65
SPEAKERS = ["ROMEO", "JULIET", "FIRST CITIZEN", "MENENIUS", "KING RICHARD III", "QUEEN ELIZABETH", "GLOUCESTER",
            "LADY CAPULET", "BRUTUS", "DUKE VINCENTIO", "ISABELLA", "PETRUCHIO", "KATHARINA", "WARWICK"]
WORDS = ("the and to of my a i you that in is not with me it be his your this he but for have thou thy so will "
         "what her by all no do shall if are we our him as on thee lord now good come let sir they love or more "
         "then how well would was there know she am their here make say than which one upon may hath king yet "
         "when go like us man them out did should must some why tell speak own heart death life blood night day "
         "fair sweet grace noble father mother son brother crown heaven earth honour name hand eyes word peace "
         "war time dead live stay give take hear see leave friends gentle queen duke").split()
EXTRA = "Zeal, jest; quick vex! & $3 XERXES's jolly zany -"  # the rarer characters, so all 65 appear


def make_text(n_chars: int = 300_000, seed: int = 0) -> str:
    rng = random.Random(seed)
    parts = [f"{EXTRA}\n\n"]
    size = len(parts[0])
    while size < n_chars:
        lines = []
        for _ in range(rng.randint(1, 4)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(4, 11))]
            line = " ".join(words)
            if rng.random() < 0.3:
                line += rng.choice([",", ";", ":", " -"]) + " " + " ".join(rng.choice(WORDS) for _ in range(3))
            lines.append(line[0].upper() + line[1:] + rng.choice([".", ".", ",", "?", "!", ";", ":"]))
        speech = f"{rng.choice(SPEAKERS)}:\n" + "\n".join(lines) + "\n\n"
        parts.append(speech)
        size += len(speech)
    return "".join(parts)


def write_corpus(path: Path, n_chars: int = 300_000, seed: int = 0) -> Path:
    text = make_text(n_chars, seed)
    assert set(text) == set(CHARACTERS), sorted(set(CHARACTERS) ^ set(text))
    path.write_text(text, encoding="utf-8")
    return path


GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def small_bpe(text: str, merges: int = 60):
    """A byte-level BPE with GPT-2's split pattern and end-of-text token, trained here on text."""
    import regex
    import tiktoken

    ranks = {bytes([b]): b for b in range(256)}
    words = [[bytes([b]) for b in word.encode()] for word in regex.findall(GPT2_PATTERN, text)]
    for _ in range(merges):
        counts = {}
        for word in words:
            for pair in zip(word, word[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        a, b = max(counts, key=counts.get)
        ranks[a + b] = len(ranks)
        for word in words:
            i = 0
            while i < len(word) - 1:
                if word[i] == a and word[i + 1] == b:
                    word[i:i + 2] = [a + b]
                i += 1
    return tiktoken.Encoding("small-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})
