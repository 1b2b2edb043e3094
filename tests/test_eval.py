"""HellaSwag evaluation (gpt.eval): the arithmetic, a model that knows the answers, labels that no longer
point at them, unscorable examples, ranks, the trainer's --eval_hellaswag, and bad files."""

import json
import random

import pytest
import torch
from tiny import tiny_flags

from gpt import eval as hellaswag
from gpt import train
from gpt.data import CharTokenizer

WORDS = ("red", "blue", "cat", "dog", "ran", "sat", "over", "under", "the", "hill", "boat", "sang", "green", "old")


def make_examples(count: int, seed: int = 0) -> list[dict]:
    """Contexts of 4 words and right endings of 2, the wrong endings other examples' right ones."""
    rng = random.Random(seed)
    rights = []
    contexts = []
    while len(contexts) < count:
        context = " ".join(rng.choice(WORDS) for _ in range(4))
        if context not in contexts:
            contexts.append(context)
            rights.append(" ".join(rng.choice(WORDS) for _ in range(2)))
    examples = []
    for i, (context, right) in enumerate(zip(contexts, rights)):
        wrong = [rights[(i + k) % count] for k in (1, 2, 3)]
        label = rng.randrange(4)
        endings = wrong[:label] + [right] + wrong[label:]
        examples.append({"ctx": context, "endings": endings, "label": label})
    return examples


def write_jsonl(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return path


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny character model trained until it knows each context's right ending."""
    folder = tmp_path_factory.mktemp("memorised")
    examples = make_examples(24)
    rng = random.Random(1)
    lines = [f"{e['ctx']} {e['endings'][e['label']]}\n" for e in examples] * 80
    rng.shuffle(lines)
    text = folder / "text.txt"
    text.write_text("".join(lines))
    flags = tiny_flags(batch_size=16, eval_iters=2)
    flags[flags.index("--n_embd") + 1] = "64"
    train.main(["--input", str(text), "--data_cache", str(folder / "cache"), "--out_dir", str(folder / "run"), *flags,
                "--max_iters", "600", "--eval_interval", "600", "--learning_rate", "3e-3", "--warmup_iters", "20"])
    return folder / "run", examples


def test_acc_takes_the_lowest_sum_and_acc_norm_the_lowest_mean_per_token():
    sums, counts = torch.tensor([2.0, 4.0, 3.0, 9.0]), torch.tensor([1, 4, 1, 3])
    assert hellaswag.choices(sums, counts) == (0, 1)  # means 2, 1, 3, 3
    scores = hellaswag.Scores(examples=10, unscorable=2, correct=6, correct_norm=4)
    assert (scores.scored, scores.acc, scores.acc_norm) == (8, 0.75, 0.5)


def test_render_marks_the_ending_and_cuts_the_context_from_the_left():
    tokenizer = CharTokenizer(list(" abcdefghijklmnopqrstuvwxyz"))
    example = hellaswag.Example("abcdefghij", ("xy", "zzz"), 1)
    tokens, mask = hellaswag.render(example, tokenizer, block_size=6)
    assert tokens.shape == mask.shape == (2, 7)  # block_size + 1: the first token is only input
    assert tokenizer.decode(tokens[1].tolist()) == "hij zzz"
    assert tokenizer.decode(tokens[1][mask[1]].tolist()) == " zzz"
    assert tokenizer.decode(tokens[0][mask[0]].tolist()) == " xy" and mask[0].sum() == 3
    assert hellaswag.render(hellaswag.Example("abc", ("é",), 0), tokenizer, 6) is None  # outside the vocabulary
    assert hellaswag.render(hellaswag.Example("abc", ("abcdefgh",), 0), tokenizer, 6) is None  # longer than the context


def test_a_model_that_knows_the_answers_scores_one_and_shuffled_labels_fall_to_chance(memorised, tmp_path, capsys):
    run, examples = memorised
    right = hellaswag.main([str(run), "--hellaswag", str(write_jsonl(tmp_path / "right.jsonl", examples)),
                            "--kernels", "torch"])
    assert (right.scored, right.acc, right.acc_norm) == (24, 1.0, 1.0)
    assert "hellaswag acc 1.0000, acc_norm 1.0000 over 24 examples" in capsys.readouterr().out
    rng = random.Random(5)  # the label kept, the endings shuffled: it points at the right one by chance
    shuffled, hits = [], 0
    for e in examples:
        endings = list(e["endings"])
        rng.shuffle(endings)
        hits += endings[e["label"]] == e["endings"][e["label"]]
        shuffled.append({**e, "endings": endings})
    chance = hellaswag.main([str(run), "--hellaswag", str(write_jsonl(tmp_path / "shuffled.jsonl", shuffled)),
                             "--kernels", "torch"])
    assert chance.acc_norm == chance.acc == hits / 24 and 0.1 < hits / 24 < 0.5


def test_unscorable_examples_are_counted_not_fatal_and_ranks_add_up(memorised):
    run, examples = memorised
    from gpt.sample import load_model

    model, tokenizer = load_model(run, "best", torch.device("cpu"), "torch")
    parsed = [hellaswag.Example(e["ctx"], tuple(e["endings"]), e["label"]) for e in examples]
    parsed.append(hellaswag.Example("a context with \u00e9", ("one", "two"), 0))  # not in the vocabulary
    single = hellaswag.evaluate(model, parsed, tokenizer, torch.device("cpu"))
    assert (single.examples, single.unscorable, single.acc) == (25, 1, 1.0)
    ranks = [hellaswag.evaluate(model, parsed, tokenizer, torch.device("cpu"), rank=r, world_size=3) for r in range(3)]
    for field in ("examples", "unscorable", "correct", "correct_norm"):
        assert sum(getattr(s, field) for s in ranks) == getattr(single, field)


def test_train_scores_hellaswag_at_every_evaluation(tmp_path, corpus, data_cache):
    file = write_jsonl(tmp_path / "hs.jsonl", make_examples(6))
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "run"),
                *tiny_flags(batch_size=4, eval_iters=2), "--max_iters", "4", "--eval_interval", "2",
                "--eval_hellaswag", str(file)])
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    scored = [r for r in records if "hellaswag_acc_norm" in r]
    assert [r["iter"] for r in scored] == [0, 2, 4]
    assert all(0.0 <= r["hellaswag_acc"] <= 1.0 and r["hellaswag_unscorable"] == 0 for r in scored)


@pytest.mark.parametrize("content, message", [
    (None, "not found: give the official validation jsonl"),
    ('{"ctx": "a", "endings": ["b", "c"]}\n', "line 1 is not a HellaSwag example .*KeyError"),
    ('{"ctx": "a", "endings": ["b", "c"], "label": 2}\n', "line 1: expected ctx a string, .* label 2 of 2 endings"),
    ("not json\n", "line 1 is not a HellaSwag example"),
])
def test_a_missing_or_malformed_file_is_one_line_before_training(tmp_path, corpus, data_cache, content, message):
    file = tmp_path / "hs.jsonl"
    if content is not None:
        file.write_text(content)
    with pytest.raises(SystemExit, match=message):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "run"),
                    *tiny_flags(), "--max_iters", "2", "--eval_hellaswag", str(file)])
    assert not (tmp_path / "run" / "metrics.jsonl").exists()



HARNESS_TASK = """
task: gpt_eval_agreement
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{ctx}}}}"
doc_to_choice: "{{{{endings}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
"""


def test_lm_evaluation_harness_on_the_export_gives_gpt_evals_log_likelihoods(memorised, tmp_path, monkeypatch):
    """EleutherAI's harness, its `hf` model on gpt.export's folder, a local task in HellaSwag's format: the
    same per-ending log-likelihoods as gpt.eval computes on the run (the harness's acc_norm normalises by
    bytes, not tokens, so the accuracies are not compared)."""
    lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed (pip install lm_eval)")
    from lm_eval.tasks import TaskManager

    from gpt import export
    from gpt.sample import load_model

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run, examples = memorised
    data = write_jsonl(tmp_path / "hs.jsonl", examples[:8])
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "gpt_eval_agreement.yaml").write_text(HARNESS_TASK.format(data=data))
    hf_dir = export.export(run, tmp_path / "hf")
    # a character vocabulary has no BOS: the harness's prefix token (used only for an empty context) is id 0
    model_args = f"pretrained={hf_dir},dtype=float32,prefix_token_id=0"
    results = lm_eval.simple_evaluate(model="hf", model_args=model_args,
                                      tasks=["gpt_eval_agreement"], task_manager=TaskManager(include_path=str(tasks)),
                                      device="cpu", batch_size=1, log_samples=True)
    samples = sorted(results["samples"]["gpt_eval_agreement"], key=lambda s: s["doc_id"])
    model, tokenizer = load_model(run, "best", torch.device("cpu"), "torch")
    assert len(samples) == 8
    for sample, example in zip(samples, examples):
        tokens, mask = hellaswag.render(hellaswag.Example(example["ctx"], tuple(example["endings"]), example["label"]),
                                        tokenizer, model.config.block_size)
        loss_sums, _ = hellaswag.ending_losses(model.eval(), tokens, mask)
        harness = torch.tensor([response[0][0] for response in sample["resps"]])
        torch.testing.assert_close(harness, -loss_sums, atol=1e-3, rtol=1e-4)


def test_a_bpe_model_scores_every_example(tmp_path, corpus, data_cache, monkeypatch):
    """GPT-2's BPE (here a small one trained on the test text, as tests/test_export.py does): no example is
    unscorable, whatever its characters."""
    from corpus import small_bpe

    from gpt import data

    encoding = small_bpe(corpus.read_text()[:20000])
    monkeypatch.setattr(data, "gpt2_encoding", lambda: encoding)
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "run"),
                *tiny_flags(batch_size=4, eval_iters=2), "--tokenizer", "gpt2", "--max_iters", "2"])
    examples = make_examples(5) + [{"ctx": "caf\u00e9 \u00fcber", "endings": ["na\u00efve", "\u2014"], "label": 0}]
    scores = hellaswag.main([str(tmp_path / "run"), "--hellaswag", str(write_jsonl(tmp_path / "hs.jsonl", examples)),
                             "--kernels", "torch"])
    assert (scores.examples, scores.unscorable) == (6, 0)
