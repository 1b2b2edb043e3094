"""gpt.export: a run as a transformers GPT-2 folder, loaded by transformers itself; --init_from back again."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from corpus import small_bpe
from tiny import tiny_flags
from tolerance import assert_close_to_reference

from gpt import data, export, sample, train
from gpt.checkpoint import load_weights
from gpt.config import config_from_args
from gpt.model import GPT

transformers = pytest.importorskip("transformers")

TINY = tiny_flags(batch_size=4, eval_iters=2)
def trained_run(out_dir, corpus, data_cache, *extra):
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(out_dir), *TINY,
                "--max_iters", "3", "--eval_interval", "3", "--learning_rate", "1e-2", *extra])
    return out_dir


@pytest.fixture
def bpe(monkeypatch, corpus):
    encoding = small_bpe(corpus.read_text()[:20000])
    monkeypatch.setattr(data, "gpt2_encoding", lambda: encoding)
    return encoding


def our_model(run_dir):
    state, config, _ = load_weights(run_dir / "best.safetensors")
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval()


def load_export(hf_dir):
    """transformers' own loading, with what it reports about the weights and what it logs."""
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        model, info = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, output_loading_info=True)
    finally:
        logger.removeHandler(handler)
    return model.eval(), info, [r.getMessage() for r in records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
@pytest.mark.parametrize("bias", [True, False])
def test_transformers_loads_the_export_and_computes_our_logits(tmp_path, corpus, data_cache, request, tokenizer, bias):
    extra = ["--bias", str(bias)] + (["--tokenizer", "gpt2"] if tokenizer == "bpe" else [])
    if tokenizer == "bpe":
        request.getfixturevalue("bpe")
    run = trained_run(tmp_path / "run", corpus, data_cache, *extra)
    hf_dir = export.main([str(run), str(tmp_path / "hf")])
    theirs, info, warnings = load_export(hf_dir)
    assert {k: v for k, v in info.items() if v} == {} and warnings == [], (info, warnings)
    ours = our_model(run)
    config = json.loads((hf_dir / "config.json").read_text())
    assert (config["n_positions"], config["n_layer"], config["n_embd"]) == (32, 2, 32)
    assert config["activation_function"] == "gelu_new" and config["tie_word_embeddings"] is True
    idx = torch.randint(ours.config.vocab_size, (3, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        truth = GPT(ours.config)
        truth.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
        reference, _ = truth.double()(idx)
        their_logits = theirs(idx).logits
        our_logits, _ = ours(idx)
    assert_close_to_reference(f"logits {tokenizer} bias={bias}", their_logits, our_logits, reference)


def test_the_tokenizers_encode_as_ours(tmp_path, corpus, data_cache, bpe):
    text = corpus.read_text()[50000:52000]
    hf_dir = export.main([str(trained_run(tmp_path / "bpe", corpus, data_cache, "--tokenizer", "gpt2")),
                          str(tmp_path / "hf-bpe")])
    theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert type(theirs).__name__.startswith("GPT2Tokenizer")  # GPT2TokenizerFast before transformers 5
    assert theirs.encode(text) == bpe.encode_ordinary(text) and theirs.decode(bpe.encode_ordinary(text)) == text
    assert theirs.eos_token_id == bpe.eot_token

    hf_dir = export.main([str(trained_run(tmp_path / "char", corpus, data_cache)), str(tmp_path / "hf-char")])
    theirs = transformers.AutoTokenizer.from_pretrained(hf_dir)
    ours = data.CharTokenizer.from_text(corpus.read_text())
    assert theirs.encode(text) == ours.encode(text) and theirs.decode(ours.encode(text)) == text


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_greedy_generation_is_the_same_in_transformers(tmp_path, corpus, data_cache, request, tokenizer, capsys):
    extra = []
    if tokenizer == "bpe":
        request.getfixturevalue("bpe")
        extra = ["--tokenizer", "gpt2"]
    run = trained_run(tmp_path / "run", corpus, data_cache, *extra)
    hf_dir = export.main([str(run), str(tmp_path / "hf")])
    ours = sample.main(["--out_dir", str(run), "--prompt", "ROMEO:", "--temperature", "0", "--num_samples", "1",
                        "--max_new_tokens", "20"])[0]
    model, _, _ = load_export(hf_dir)
    tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    prompt = torch.tensor([tok.encode("ROMEO:")])
    generated = model.generate(prompt, do_sample=False, max_new_tokens=20, min_new_tokens=20, pad_token_id=0)
    assert tok.decode(generated[0].tolist()) == ours


@pytest.mark.parametrize("bias", [True, False])
def test_init_from_an_export_starts_from_its_logits(tmp_path, corpus, data_cache, bias):
    run = trained_run(tmp_path / "run", corpus, data_cache, "--bias", str(bias))
    hf_dir = export.main([str(run), str(tmp_path / "hf")])
    cfg, _, explicit = config_from_args(["--input", str(corpus), "--data_cache", str(data_cache), *TINY,
                                         "--out_dir", str(tmp_path / "finetune"), "--init_from", str(hf_dir),
                                         "--n_layer", "2"])  # agreeing with the export is fine
    trainer = train.Trainer(train.make_plan(cfg, explicit))
    idx = torch.randint(65, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, _ = our_model(run)(idx)
        started, _ = trainer.model.eval()(idx)
    assert trainer.plan.model.bias is True  # transformers' GPT-2 has biases: zeros stand in for ours
    if bias:
        assert torch.equal(started, expected)
    else:
        torch.testing.assert_close(started, expected, rtol=0, atol=1e-6)
    trainer.model.train()
    summary = trainer.run()
    assert summary["iter"] == cfg.max_iters and summary["val_loss"] < 4.2


def test_init_from_refuses_contradicting_shape_flags(tmp_path, corpus, data_cache):
    hf_dir = export.main([str(trained_run(tmp_path / "run", corpus, data_cache)), str(tmp_path / "hf")])
    with pytest.raises(SystemExit, match=r"--n_layer 3 \(the pretrained model has 2\).*contradicts it"):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "ft"), *TINY,
                    "--init_from", str(hf_dir), "--n_layer", "3"])
    with pytest.raises(SystemExit, match="the model reads char tokens, not --tokenizer gpt2"):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "ft"), *TINY,
                    "--init_from", str(hf_dir), "--tokenizer", "gpt2"])


def test_init_from_a_char_export_keeps_its_vocabulary(tmp_path, corpus, data_cache):
    """Fine-tuning text with fewer characters still uses the export's 65 ids; a foreign character is an error."""
    hf_dir = export.main([str(trained_run(tmp_path / "run", corpus, data_cache)), str(tmp_path / "hf")])
    fewer = tmp_path / "fewer.txt"
    fewer.write_text("ROMEO:\nO she doth teach the torches to burn bright!\n\n" * 300)
    args = ["--data_cache", str(data_cache), *TINY, "--init_from", str(hf_dir), "--max_iters", "2",
            "--eval_interval", "2"]
    train.main(["--input", str(fewer), "--out_dir", str(tmp_path / "ft"), *args])
    _, config, meta = load_weights(tmp_path / "ft" / "best.safetensors")
    assert config.vocab_size == 65 and meta["chars"] == data.CharTokenizer.from_text(corpus.read_text()).chars
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("Ça ira, ça ira!\n" * 500)
    with pytest.raises(SystemExit, match="2 characters 'Ç' 'ç' are not in this model's vocabulary"):
        train.main(["--input", str(foreign), "--out_dir", str(tmp_path / "ft2"), *args])


def test_an_existing_folder_is_not_overwritten_without_asking(tmp_path, corpus, data_cache):
    run = trained_run(tmp_path / "run", corpus, data_cache)
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists and is not empty: pass --overwrite"):
        export.main([str(run), str(hf_dir)])
    with pytest.raises(SystemExit, match="is not a model folder .*refusing to replace it"):
        export.main([str(run), str(hf_dir), "--overwrite"])
    assert (hf_dir / "notes.txt").read_text() == "mine"
    (hf_dir / "notes.txt").unlink()
    export.main([str(run), str(hf_dir)])
    before = (hf_dir / "model.safetensors").read_bytes()
    export.main([str(run), str(hf_dir), "--overwrite", "--checkpoint", "last"])
    assert (hf_dir / "model.safetensors").read_bytes() == before  # best and last are the same iteration here


def test_a_model_name_that_cannot_be_fetched_is_a_clear_error(tmp_path, corpus, data_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit, match="'no-such-model-here' is neither a folder here nor a model transformers can fetch"):
        train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path), *TINY,
                    "--init_from", "no-such-model-here"])


IMPORT_ORDER_CHECK = """
{first}
import sys
assert "triton" in sys.modules
import torch
import gpt_kernels

for op, backends in gpt_kernels.registry.BACKENDS.items():  # every op on the sample inputs it declares
    args, kwargs = gpt_kernels.registry.OPS[op].sample_inputs(torch.Generator().manual_seed(0))
    call = lambda backend: gpt_kernels.registry.main_output(getattr(gpt_kernels, op)(*args, **kwargs, backend=backend)).float()
    expected = call("reference")
    for backend in backends:
        torch.testing.assert_close(call(backend), expected, atol=1e-4, rtol=1e-4)
        print(op, backend, "ok")
"""


@pytest.mark.parametrize("first", ["import triton", "from transformers import GPT2LMHeadModel"])  # the latter imports triton
def test_every_backend_works_whatever_was_imported_first(first):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a fresh shell has it
    result = subprocess.run([sys.executable, "-c", IMPORT_ORDER_CHECK.format(first=first)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == sum(len(b) for b in __import__("gpt_kernels").registry.BACKENDS.values())


def test_a_damaged_last_checkpoint_names_advice_that_works(tmp_path, corpus, data_cache):
    """The damage message names --checkpoint best and --init_from; following it trains on from best's weights."""
    run = trained_run(tmp_path / "run", corpus, data_cache)
    path = run / "last.safetensors"
    damaged = bytearray(path.read_bytes())
    damaged[len(damaged) // 2:len(damaged) // 2 + 4096] = bytes(4096)
    path.write_bytes(bytes(damaged))
    with pytest.raises(SystemExit, match="last.safetensors is (truncated or )?corrupted.*--checkpoint best.*--init_from"):
        train.main(["--out_dir", str(run), "--data_cache", str(data_cache), "--max_iters", "6", "--resume", "true"])
    hf_dir = export.main([str(run), str(tmp_path / "hf"), "--checkpoint", "best"])
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "on"), *TINY,
                "--init_from", str(hf_dir), "--max_iters", "2", "--eval_interval", "2"])
    assert (tmp_path / "on" / "best.safetensors").exists()


def test_the_readmes_transformers_snippet_gives_gpt_samples_text(tmp_path, corpus, data_cache, monkeypatch):
    """The README's snippet, as written, on an export of a 32-position model: transformers' greedy text is
    gpt.sample's with --temperature 0 and as many new tokens as the positions leave."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    snippet = readme.split("python - <<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    assert "GPT2LMHeadModel.from_pretrained(\"hf-shakespeare\")" in snippet
    run = trained_run(tmp_path / "out-shakespeare-char", corpus, data_cache)
    export.main([str(run), str(tmp_path / "hf-shakespeare")])
    result = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    monkeypatch.chdir(tmp_path)
    ours = sample.main(["--out_dir", "out-shakespeare-char", "--prompt", "ROMEO:", "--temperature", "0",
                        "--num_samples", "1", "--max_new_tokens", str(32 - len("ROMEO:"))])
    assert result.stdout == ours[0] + "\n"


def test_checkpoints_and_exports_have_the_usual_permissions(tmp_path, corpus, data_cache):
    """Files a user shares: the mode any new file gets under the umask (safetensors alone writes 0600)."""
    umask = os.umask(0o022)
    try:
        run = trained_run(tmp_path / "run", corpus, data_cache)
        hf_dir = export.main([str(run), str(tmp_path / "hf")])
    finally:
        os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [run, hf_dir, *run.iterdir(), *hf_dir.iterdir()]}
    assert modes == {name: "0o755" if name in ("run", "hf") else "0o644" for name in modes}, modes


def test_a_banded_run_trains_resumes_samples_and_is_refused_by_export(tmp_path, corpus, data_cache, capsys):
    """The band is in the checkpoint (a resumed run and gpt.sample build it again); transformers' GPT-2 has no
    band, so exporting is refused in one clear line, and nothing is written."""
    run = trained_run(tmp_path / "run", corpus, data_cache, "--attention_pattern", "alternating",
                      "--attention_window", "8")
    _, config, _ = load_weights(run / "best.safetensors")
    assert (config.attention_pattern, config.attention_window) == ("alternating", 8)
    assert [block.attn.window for block in our_model(run).transformer.h] == [None, 8]
    train.main(["--out_dir", str(run), "--resume", *TINY, "--max_iters", "4", "--attention_pattern", "alternating",
                "--attention_window", "8"])
    assert load_weights(run / "last.safetensors")[1].attention_window == 8
    sample.main(["--out_dir", str(run), "--max_new_tokens", "40", "--num_samples", "1", "--kernels", "torch"])
    assert capsys.readouterr().out.strip()
    with pytest.raises(ValueError, match="is a banded model .*transformers' GPT-2 attends densely"):
        export.export(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
