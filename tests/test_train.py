import json

import pytest
import torch
from safetensors.torch import load_file

from gpt import sample, train
from gpt.config import PRESETS, config_from_args, parse_kernels
from gpt.model import GPT
from gpt.checkpoint import load_weights

TINY = ["--n_layer", "2", "--n_head", "2", "--n_embd", "32", "--block_size", "32", "--batch_size", "8",
        "--eval_iters", "4", "--log_interval", "1", "--progress", "false", "--warmup_iters", "5"]


def run(tmp_path, shakespeare, data_cache, *extra) -> list[dict]:
    train.main(["--input", str(shakespeare), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                *TINY, *extra])
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_on_shakespeare(tmp_path, shakespeare, data_cache):
    records = run(tmp_path, shakespeare, data_cache, "--max_iters", "150", "--eval_interval", "150",
                  "--learning_rate", "3e-3")
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 2
    assert val[0] > 4.0 and val[-1] < 2.9  # from uniform over 65 symbols (4.17) to character statistics
    assert (tmp_path / "loss.png").stat().st_size > 1000
    for key in ("iter", "loss", "lr", "tok_per_s", "mfu"):
        assert key in records[0]


def test_checkpoint_round_trip(tmp_path, shakespeare, data_cache):
    run(tmp_path, shakespeare, data_cache, "--max_iters", "3", "--eval_interval", "3")
    plain = load_file(str(tmp_path / "last.safetensors"))  # readable without this project
    assert not any(k.startswith("_orig_mod") or k.startswith("module.") for k in plain)
    state, config, tokenizer_meta = load_weights(tmp_path / "last.safetensors")
    model = GPT(config)
    model.load_state_dict(state)
    assert tokenizer_meta["vocab_size"] == config.vocab_size == 65
    # the loaded model reproduces the evaluation the trainer logged
    idx = torch.randint(65, (2, 32))
    logits, _ = model.eval()(idx)
    assert torch.isfinite(logits).all() and logits.shape == (2, 32, 65)
    assert torch.equal(model.lm_head.weight, plain["transformer.wte.weight"])


@pytest.mark.parametrize("dropout", ["0.0", "0.1"])
def test_resume_reproduces_uninterrupted_losses(tmp_path, shakespeare, data_cache, dropout):
    common = ["--eval_interval", "6", "--dropout", dropout]
    full = run(tmp_path / "full", shakespeare, data_cache, "--max_iters", "12", *common)
    run(tmp_path / "parts", shakespeare, data_cache, "--max_iters", "6", *common)
    resumed = run(tmp_path / "parts", shakespeare, data_cache, "--max_iters", "12", "--resume", "true", *common)
    losses = lambda records: [(r["iter"], r["loss"]) for r in records if "loss" in r]  # noqa: E731
    assert [i for i, _ in losses(resumed)] == list(range(12))
    assert losses(resumed) == losses(full)  # bitwise: same batches, dropout masks, optimizer state


def test_resume_rejects_a_different_model(tmp_path, shakespeare, data_cache):
    run(tmp_path, shakespeare, data_cache, "--max_iters", "2", "--eval_interval", "2")
    with pytest.raises(SystemExit, match="n_embd: checkpoint 32, now 64"):
        run(tmp_path, shakespeare, data_cache, "--max_iters", "4", "--resume", "true", "--n_embd", "64")


def test_sample_streams_text_from_a_checkpoint(tmp_path, shakespeare, data_cache, capsys):
    run(tmp_path, shakespeare, data_cache, "--max_iters", "2", "--eval_interval", "2")
    capsys.readouterr()
    samples = sample.main(["--out_dir", str(tmp_path), "--prompt", "ROMEO:", "--num_samples", "2",
                           "--max_new_tokens", "20", "--seed", "7"])
    printed = capsys.readouterr().out
    assert len(samples) == 2 and all(s.startswith("ROMEO:") and len(s) == 26 for s in samples)
    assert samples[0] in printed and samples[1] in printed
    again = sample.main(["--out_dir", str(tmp_path), "--prompt", "ROMEO:", "--num_samples", "2",
                         "--max_new_tokens", "20", "--seed", "7"])
    assert again == samples


def test_sample_prompt_from_a_file_and_bad_prompts(tmp_path, shakespeare, data_cache, capsys):
    run(tmp_path, shakespeare, data_cache, "--max_iters", "1", "--eval_interval", "1")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("JULIET:\n")
    samples = sample.main(["--out_dir", str(tmp_path), "--prompt", f"FILE:{prompt}", "--num_samples", "1",
                           "--max_new_tokens", "5"])
    assert samples[0].startswith("JULIET:\n") and len(samples[0]) == 13
    with pytest.raises(SystemExit, match="character '€' is not in this model's vocabulary"):
        sample.main(["--out_dir", str(tmp_path), "--prompt", "€", "--max_new_tokens", "5"])
    with pytest.raises(SystemExit, match="no checkpoint at"):
        sample.main(["--out_dir", str(tmp_path / "nowhere")])


def test_cli_flags_and_presets():
    cfg, preset = config_from_args(["--max-iters", "30", "--out_dir", "o", "--compile", "false"])
    assert preset == "shakespeare-char-cpu" and cfg.max_iters == 30 and cfg.out_dir == "o" and cfg.compile is False
    assert cfg.n_layer == 4 and cfg.block_size == 64 and cfg.batch_size == 12
    cfg, preset = config_from_args([], cuda_available=True)
    assert preset == "shakespeare-char" and (cfg.n_layer, cfg.n_embd, cfg.dropout) == (6, 384, 0.2)
    assert set(PRESETS) == {"shakespeare-char", "shakespeare-char-cpu", "gpt2-124m"}


@pytest.mark.parametrize("argv, message", [
    (["--n_embd", "100", "--n_head", "3"], "divisible by n_head"),
    (["--learning_rate", "-1"], "learning_rate must be positive"),
    (["--batch_size", "0"], "batch_size must be a positive integer"),
    (["--kernels", "ln=fast"], "unknown backend 'fast' for op 'ln'"),
])
def test_bad_configs_are_rejected(argv, message):
    with pytest.raises(SystemExit, match=message):
        config_from_args(argv)


def test_bad_preset_and_boolean_are_rejected(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--preset", "gpt5"])
    assert "invalid choice: 'gpt5'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        config_from_args(["--compile", "maybe"])
    assert "expected true or false" in capsys.readouterr().err


def test_auto_kernels_use_measurements_only():
    from gpt.config import resolve_auto_kernels

    table = {"NVIDIA H100": {"ln": "cuda", "attn": "triton"}}
    chosen, origin = resolve_auto_kernels("NVIDIA H100 80GB HBM3", table)
    assert chosen == {"ln": "cuda", "attn": "triton", "loss": "torch"} and "measured on NVIDIA H100" in origin
    chosen, origin = resolve_auto_kernels("NVIDIA A100-SXM4-80GB", table)
    assert chosen == parse_kernels("torch") and "no measurements for NVIDIA A100" in origin
    assert resolve_auto_kernels(None, table)[0] == parse_kernels("torch")
    assert parse_kernels("auto") == {"ln": "auto", "attn": "auto", "loss": "auto"}


def test_auto_kernels_on_the_cpu_train_with_pytorch_ops(tmp_path, shakespeare, data_cache, capsys):
    run(tmp_path, shakespeare, data_cache, "--max_iters", "1", "--eval_interval", "1", "--kernels", "auto")
    out = capsys.readouterr().out
    assert "kernels ln=torch attn=sdpa loss=torch (auto: the CPU uses PyTorch's ops)" in out
    _, config, _ = load_weights(tmp_path / "last.safetensors")
    assert (config.ln_backend, config.attn_backend, config.loss_backend) == ("torch", "sdpa", "torch")


def test_parse_kernels():
    assert parse_kernels("torch") == {"ln": "torch", "attn": "sdpa", "loss": "torch"}
    assert parse_kernels("ln=triton,attn=torch") == {"ln": "triton", "attn": "torch", "loss": "torch"}


def test_mfu_needs_a_known_peak():
    assert train.peak_flops(torch.device("cpu"), torch.float32) is None


def test_learning_rate_schedule():
    cfg, _ = config_from_args([])
    lrs = [train.learning_rate(i, cfg) for i in range(cfg.max_iters + 1)]
    assert lrs[0] < lrs[cfg.warmup_iters - 1] < cfg.learning_rate
    assert max(lrs) == pytest.approx(cfg.learning_rate, rel=1e-3)
    assert lrs[-1] == pytest.approx(cfg.min_lr)
    assert all(a >= b for a, b in zip(lrs[cfg.warmup_iters:], lrs[cfg.warmup_iters + 1:]))
