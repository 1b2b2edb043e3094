"""A HellaSwag-format multiple-choice file of Shakespeare continuations, for gpt.eval on a character model
trained on Tiny Shakespeare (the text is not committed; this makes the file from it):

    python bench/shakespeare_choices.py input.txt choices.jsonl --examples 500

From the last 10% of the text (the trainer's val split, unseen in training): each example's context is the
300 characters up to a space in the middle of a line, its right ending the rest of that line, the three wrong
endings the rests of lines from elsewhere in the split; the right one at a random place. Chance is 0.25."""

import argparse
import json
import random
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("text", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    text = args.text.read_text(encoding="utf-8")
    val = text[int(0.9 * len(text)):]
    splits = []  # (position of a space in the middle third of a line, the rest of the line after it)
    start = 0
    while (end := val.find("\n", start)) != -1:
        line = val[start:end]
        spaces = [i for i, ch in enumerate(line) if ch == " " and len(line) / 3 <= i <= 2 * len(line) / 3]
        if len(line) >= 30 and spaces and start + spaces[0] >= 300:
            splits.append((start + spaces[0], line[spaces[0] + 1:]))
        start = end + 1
    rng = random.Random(args.seed)
    with open(args.out, "w") as out:
        for position, right in rng.sample(splits, args.examples):
            wrong = [rest for _, rest in rng.sample(splits, 3)]
            label = rng.randrange(4)
            endings = wrong[:label] + [right] + wrong[label:]
            # the context stops before the space: gpt.eval puts one space before each ending
            out.write(json.dumps({"ctx": val[position - 300:position], "endings": endings, "label": label}) + "\n")

if __name__ == "__main__":
    main()
