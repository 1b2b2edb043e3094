import itertools
import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from tiny import TINY_MODEL, tiny_flags

import gpt_kernels
from gpt import sample, train
from gpt.checkpoint import load_weights
from gpt.config import PRESETS, GPTConfig, TrainConfig, build_arg_parser, config_from_args
from gpt.device import peak_flops
from gpt.model import GPT

TINY = [*tiny_flags(batch_size=8, eval_iters=4), "--warmup_iters", "5"]


def run(tmp_path, corpus, data_cache, *extra) -> list[dict]:
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                *TINY, *extra])
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("text", ["corpus", "shakespeare"])  # the generated text always; the real one where present
def test_loss_falls(tmp_path, text, data_cache, request):
    records = run(tmp_path, request.getfixturevalue(text), data_cache, "--max_iters", "150", "--eval_interval", "150",
                  "--learning_rate", "3e-3", "--lr_decay_iters", "2000")  # 150 steps near the peak rate
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 2
    assert val[0] > 4.0 and val[-1] < 2.9  # from uniform over 65 symbols (4.17) to character statistics
    assert (tmp_path / "loss.png").stat().st_size > 1000
    for key in ("iter", "loss", "lr", "tok_per_s", "mfu"):
        assert key in records[0]
    # the first step and first evaluation (compilation happens there), for training time apart from them
    warmups = [r["warmup_s"] for r in records if "val_loss" in r]
    assert 0 < warmups[0] < warmups[1] < records[-1]["elapsed_s"]


def test_checkpoint_round_trip(tmp_path, corpus, data_cache):
    run(tmp_path, corpus, data_cache, "--max_iters", "3", "--eval_interval", "3")
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
def test_resume_reproduces_uninterrupted_losses(tmp_path, corpus, data_cache, dropout):
    common = ["--eval_interval", "6", "--dropout", dropout]
    full = run(tmp_path / "full", corpus, data_cache, "--max_iters", "12", *common)
    run(tmp_path / "parts", corpus, data_cache, "--max_iters", "6", *common)
    resumed = run(tmp_path / "parts", corpus, data_cache, "--max_iters", "12", "--resume", "true", *common)
    losses = lambda records: [(r["iter"], r["loss"]) for r in records if "loss" in r]  # noqa: E731
    assert [i for i, _ in losses(resumed)] == list(range(12))
    assert losses(resumed) == losses(full)  # bitwise: same batches, dropout masks, optimizer state


def test_resume_rejects_a_different_model(tmp_path, corpus, data_cache):
    run(tmp_path, corpus, data_cache, "--max_iters", "2", "--eval_interval", "2")
    with pytest.raises(SystemExit, match="n_embd: checkpoint 32, now 64"):
        run(tmp_path, corpus, data_cache, "--max_iters", "4", "--resume", "true", "--n_embd", "64")


def test_sample_streams_text_from_a_checkpoint(tmp_path, corpus, data_cache, capsys):
    run(tmp_path, corpus, data_cache, "--max_iters", "2", "--eval_interval", "2")
    capsys.readouterr()
    samples = sample.main(["--out_dir", str(tmp_path), "--prompt", "ROMEO:", "--num_samples", "2",
                           "--max_new_tokens", "20", "--seed", "7"])
    printed = capsys.readouterr().out
    assert len(samples) == 2 and all(s.startswith("ROMEO:") and len(s) == 26 for s in samples)
    assert samples[0] in printed and samples[1] in printed
    again = sample.main(["--out_dir", str(tmp_path), "--prompt", "ROMEO:", "--num_samples", "2",
                         "--max_new_tokens", "20", "--seed", "7"])
    assert again == samples


def test_sample_prompt_from_a_file_and_bad_prompts(tmp_path, corpus, data_cache, capsys):
    run(tmp_path, corpus, data_cache, "--max_iters", "1", "--eval_interval", "1")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("JULIET:\n")
    samples = sample.main(["--out_dir", str(tmp_path), "--prompt", f"FILE:{prompt}", "--num_samples", "1",
                           "--max_new_tokens", "5"])
    assert samples[0].startswith("JULIET:\n") and len(samples[0]) == 13
    assert "note: the model sees" not in capsys.readouterr().err
    sample.main(["--out_dir", str(tmp_path), "--prompt", "JULIET:\n", "--num_samples", "1", "--max_new_tokens", "40"])
    assert "note: the model sees 32 tokens; past that, each new token is predicted from the last 32" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="character '€' is not in this model's vocabulary"):
        sample.main(["--out_dir", str(tmp_path), "--prompt", "€", "--max_new_tokens", "5"])
    with pytest.raises(SystemExit, match="no checkpoint at"):
        sample.main(["--out_dir", str(tmp_path / "nowhere")])


def test_sample_resolves_every_kernels_value(tmp_path, corpus, data_cache, capsys):
    """`gpt.sample --kernels auto` (the default) resolves before the model is built, as training does."""
    run(tmp_path, corpus, data_cache, "--max_iters", "1", "--eval_interval", "1")
    for spec in ("auto", "reference", "layer_norm=ext,attention=triton,cross_entropy=ext"):
        samples = sample.main(["--out_dir", str(tmp_path), "--prompt", "ROMEO:", "--num_samples", "1",
                               "--max_new_tokens", "4", "--kernels", spec])
        assert len(samples[0]) == len("ROMEO:") + 4, spec
    with pytest.raises(SystemExit, match="unknown --kernels value 'fast'"):
        sample.main(["--out_dir", str(tmp_path), "--kernels", "fast"])


def test_cli_flags_and_presets():
    cfg, preset, _ = config_from_args(["--max-iters", "30", "--out_dir", "o", "--compile", "false"])
    assert preset == "shakespeare-char-cpu" and cfg.max_iters == 30 and cfg.out_dir == "o" and cfg.compile is False
    assert cfg.model.n_layer == 4 and cfg.model.block_size == 64 and cfg.batch_size == 12
    cfg, preset, _ = config_from_args([], cuda_available=True)
    assert preset == "shakespeare-char" and (cfg.model.n_layer, cfg.model.n_embd, cfg.model.dropout) == (6, 384, 0.2)
    assert set(PRESETS) == {"shakespeare-char", "shakespeare-char-cpu", "gpt2-124m", "gpt3-small", "gpt3-medium",
                            "gpt3-large", "gpt3-xl", "gpt3-2.7b"}


@pytest.mark.parametrize("argv, message", [
    (["--n_embd", "100", "--n_head", "3"], "divisible by n_head"),
    (["--learning_rate", "-1"], "learning_rate must be positive"),
    (["--batch_size", "0"], "batch_size must be a positive integer"),
    (["--kernels", "layer_norm=fast"], r"unknown backend 'fast' for layer_norm; expected one of \['torch', 'reference'"),
    (["--kernels", "ln=triton"], r"bad --kernels entry 'ln=triton': expected op=backend with op one of"),
    (["--kernels", "cuda"], "unknown --kernels value 'cuda'"),
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


def test_auto_kernels_use_measurements_only(monkeypatch):
    table = {"NVIDIA H100": {"layer_norm": "ext", "attention": "triton"}}
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    chosen, origin = gpt_kernels.registry.auto_choice(torch.device("cuda"), table)
    assert chosen == dict.fromkeys(gpt_kernels.registry.OPS, "torch") | {"layer_norm": "ext", "attention": "triton"}
    assert "measured on NVIDIA H100" in origin
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    chosen, origin = gpt_kernels.registry.auto_choice(torch.device("cuda"), table)
    assert set(chosen.values()) == {"torch"} and "no measurements for NVIDIA A100" in origin
    assert set(gpt_kernels.registry.auto_choice(torch.device("cpu"), table)[0].values()) == {"torch"}


def test_auto_kernels_read_another_table_when_told(monkeypatch, tmp_path):
    """The GPU check points `auto` at the table its own benchmarks just wrote (--auto_table)."""
    fresh = tmp_path / "auto_backends.json"
    fresh.write_text(json.dumps({"NVIDIA H100": {"linear_cross_entropy": "triton"}}))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    chosen, origin = gpt_kernels.registry.auto_choice(torch.device("cuda"), path=fresh)
    assert chosen["linear_cross_entropy"] == "triton" and chosen["attention"] == "torch"
    assert str(fresh) in origin
    assert gpt_kernels.registry.auto_choice(torch.device("cuda"))[1].endswith("(auto_backends.json)")  # the committed one
    with pytest.raises(ValueError, match="--auto_table 'missing.json' is not a file"):
        TrainConfig(auto_table="missing.json")


def test_auto_kernels_on_the_cpu_train_with_pytorch_ops(tmp_path, corpus, data_cache, capsys):
    run(tmp_path, corpus, data_cache, "--max_iters", "1", "--eval_interval", "1", "--kernels", "auto")
    out = capsys.readouterr().out
    all_torch = ",".join(f"{op}=torch" for op in gpt_kernels.registry.OPS)
    assert f"kernels {all_torch} (auto: PyTorch's ops on the CPU)" in out
    state = torch.load(tmp_path / "last.state.pt", weights_only=True)
    assert state["kernels"] == all_torch


def test_one_vocabulary_of_ops_and_backends():
    """The same op keys and backend names on the command line, in the registry and in the benchmarks."""
    parse = gpt_kernels.registry.parse_spec
    ops = list(gpt_kernels.registry.OPS)
    assert ops == list(gpt_kernels.registry.BACKENDS)  # every registered op declared, in one order
    assert parse("torch") == dict.fromkeys(ops, "torch")
    with_ext = [op for op, backends in gpt_kernels.registry.BACKENDS.items() if "ext" in backends]
    assert "layer_norm" in with_ext and "attention" not in with_ext
    assert parse("ext") == dict.fromkeys(ops, "torch") | dict.fromkeys(with_ext, "ext")
    assert parse("attention=triton") == dict.fromkeys(ops, "torch") | {"attention": "triton"}
    assert parse("triton,cross_entropy=ext") == dict.fromkeys(ops, "triton") | {"cross_entropy": "ext"}
    named = {"layer_norm": "triton", "cross_entropy": "ext"}
    assert gpt_kernels.resolve("layer_norm=triton,cross_entropy=ext").spec() == ",".join(
        f"{op}={named.get(op, 'torch')}" for op in ops)
    assert gpt_kernels.registry.provider_backend("torch-compiled") == "torch"
    help_text = gpt_kernels.registry.spec_help()
    for op, names in gpt_kernels.registry.BACKENDS.items():
        assert f"{op}: {', '.join(names)}" in help_text


def test_model_modules_hold_resolved_functions():
    ops = gpt_kernels.resolve("layer_norm=ext,add_layer_norm=triton,attention=reference,cross_entropy=ext")
    model = GPT(GPTConfig(vocab_size=65, **TINY_MODEL), ops)
    assert model.transformer.h[0].ln_1.layer_norm is ops["layer_norm"]
    assert model.transformer.h[0].ln_2.add_layer_norm is ops["add_layer_norm"]
    assert model.transformer.h[0].attn.attention is ops["attention"]
    assert model.cross_entropy is ops["cross_entropy"] and model.head_and_loss is None  # linear_cross_entropy=torch
    fused = gpt_kernels.resolve("linear_cross_entropy=triton")
    assert GPT(GPTConfig(vocab_size=65, **TINY_MODEL), fused).head_and_loss is fused["linear_cross_entropy"]


def test_boolean_flags_work_bare_and_negated():
    cfg, _, _ = config_from_args(["--resume", "--no-compile", "--no-decay-lr"])
    assert cfg.resume is True and cfg.compile is False and cfg.decay_lr is False
    cfg, _, _ = config_from_args(["--resume", "false", "--compile", "true", "--decay-lr", "yes"])
    assert cfg.resume is False and cfg.compile is True and cfg.decay_lr is True
    cfg, _, _ = config_from_args(["--compile"])
    assert cfg.compile is True


def test_every_flag_has_help_and_kernels_lists_its_choices():
    parser = build_arg_parser()
    flags = [a for a in parser._actions if a.help != "==SUPPRESS==" and a.dest != "help"]
    assert len(flags) > 30 and all(a.help and "\n" not in a.help for a in flags)
    kernels_help = next(a.help for a in flags if a.dest == "kernels")
    assert "layer_norm: torch, reference, triton, ext" in kernels_help


def test_cli_errors_are_one_line(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--n_embd", "100", "--n_head", "3"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m gpt.train: error: n_embd (100) must be divisible")


def test_mfu_needs_a_known_peak():
    assert peak_flops(torch.device("cpu"), torch.float32) is None


def test_learning_rate_schedule():
    cfg, _, _ = config_from_args([])
    lrs = [train.learning_rate(i, cfg) for i in range(cfg.max_iters + 1)]
    assert lrs[0] < lrs[cfg.warmup_iters - 1] < cfg.learning_rate
    assert max(lrs) == pytest.approx(cfg.learning_rate, rel=1e-3)
    assert lrs[-1] == pytest.approx(cfg.min_lr)
    assert all(a >= b for a, b in zip(lrs[cfg.warmup_iters:], lrs[cfg.warmup_iters + 1:]))


def test_schedule_values_follow_the_rate_and_length_the_user_gave():
    """The README's fine-tune command: a lower --learning_rate moves min_lr with it, a shorter --max_iters
    the end of the cosine; values given themselves are kept; the presets keep nanoGPT's numbers."""
    cfg, _, _ = config_from_args(["--learning_rate", "3e-5", "--max_iters", "300"])
    assert (cfg.min_lr, cfg.lr_decay_iters) == (pytest.approx(3e-6), 300)
    assert train.learning_rate(150, cfg) < cfg.learning_rate and train.learning_rate(300, cfg) == cfg.min_lr
    cfg, _, _ = config_from_args(["--learning_rate", "3e-5", "--min_lr", "0", "--max_iters", "300", "--lr_decay_iters", "500"])
    assert (cfg.min_lr, cfg.lr_decay_iters) == (0.0, 500)
    for preset, (min_lr, decay) in {"shakespeare-char": (1e-4, 5000), "shakespeare-char-cpu": (3e-4, 2000),
                                    "gpt2-124m": (6e-5, 600000)}.items():
        cfg, _, _ = config_from_args(["--preset", preset])
        assert (cfg.min_lr, cfg.lr_decay_iters) == (pytest.approx(min_lr), decay), preset
    with pytest.raises(SystemExit):
        config_from_args(["--learning_rate", "3e-5", "--min_lr", "3e-4"])  # given, and above the rate: refused


def test_durations_read_at_a_glance():
    assert [train.duration(s) for s in (40, 720, 12600)] == ["40 s", "12 min", "3.5 h"]


HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")


@pytest.mark.parametrize("kernels", ["torch", "ext"])  # triton: the GPU test below (the interpreter reads by design)
def test_the_step_loop_reads_tensors_on_the_host_only_at_log_points(tmp_path, corpus, data_cache, monkeypatch, kernels):
    """Every .item(), .tolist(), bool(), float() or int() of a tensor (a host sync on a GPU) happens at a log
    point or an evaluation, never in the steps between, with PyTorch's ops and the extension's; the batch
    sampler's host-side offsets aside."""
    cfg, _, _ = config_from_args(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                                  *TINY, "--max_iters", "20", "--log_interval", "5", "--eval_interval", "20",
                                  "--kernels", kernels])
    trainer = train.Trainer(train.make_plan(cfg))
    reads_at: dict[int, int] = {}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            frame = sys._getframe(1)
            while frame is not None and not frame.f_code.co_filename.endswith(os.path.join("gpt", "data.py")):
                frame = frame.f_back
            if frame is None:  # not the sampler's offsets, which live on the host in every run
                reads_at[trainer.iter_num] = reads_at.get(trainer.iter_num, 0) + 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    trainer.run()
    monkeypatch.undo()
    # evaluations at 0 and 20; log points after the steps 0, 5, 10 and 15 (when iter_num is one more)
    assert set(reads_at) <= {0, 1, 6, 11, 16, 20}, sorted(reads_at)
    assert {1, 6, 11, 16} <= set(reads_at)


@pytest.mark.gpu
@pytest.mark.parametrize("kernels, compiled", [("torch", "false"), ("triton", "false"), ("triton", "true")])
def test_steps_between_log_points_never_synchronize_the_gpu(tmp_path, corpus, data_cache, monkeypatch, kernels, compiled):
    """torch.cuda's sync debug mode raises on any host synchronisation. It is "error" from the end of the first
    step (which may compile and autotune) on, at every step's start and end, and only a log point's read turns
    it off: so every step but the first, and the loop's work between them, runs where a sync would raise."""
    cfg, _, _ = config_from_args(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
                                  *TINY, "--device", "cuda", "--kernels", kernels, "--compile", compiled,
                                  "--max_iters", "11", "--log_interval", "5", "--eval_interval", "1000"])
    trainer = train.Trainer(train.make_plan(cfg))
    modes = []  # the sync debug mode at the start of each step
    original_step, original_read = train.Trainer.train_step, train.Trainer.read_log_point

    def step(self, lr, accum):
        if modes:
            torch.cuda.set_sync_debug_mode("error")
        modes.append(torch.cuda.get_sync_debug_mode())
        out = original_step(self, lr, accum)
        if len(modes) == 1:
            torch.cuda.synchronize()  # the first step's compilation and autotuning may wait for the GPU
        torch.cuda.set_sync_debug_mode("error")
        return out

    def read(self, *args):
        torch.cuda.set_sync_debug_mode("default")
        return original_read(self, *args)

    monkeypatch.setattr(train.Trainer, "train_step", step)
    monkeypatch.setattr(train.Trainer, "read_log_point", read)
    try:
        trainer.run()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(modes) == 11 and modes[0] == 0 and set(modes[1:]) == {2}, modes  # 2: "error"


def test_help_shows_the_values_the_run_would_use(capsys):
    with pytest.raises(SystemExit):
        config_from_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for preset in PRESETS:
        assert preset in text
    assert "transformer blocks (default: 4, from preset shakespeare-char-cpu)" in text
    assert "peak learning rate (default: 0.003, from preset shakespeare-char-cpu)" in text
    assert "random seed (default: 1337)" in text and "(default: 'out-shakespeare-char', from preset" in text
    with pytest.raises(SystemExit):
        config_from_args(["--preset", "gpt2-124m", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "transformer blocks (default: 12, from preset gpt2-124m)" in text


def test_output_to_a_file_is_one_line_per_log_record(tmp_path, corpus, data_cache):
    """No progress bar when stdout is not a terminal: plain records, no carriage returns."""
    command = [sys.executable, "-m", "gpt.train", "--input", str(corpus), "--data_cache", str(data_cache),
               "--out_dir", str(tmp_path), *TINY, "--progress", "true", "--max_iters", "6", "--log_interval", "2",
               "--eval_interval", "6"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout + result.stderr
    records = [line for line in result.stdout.splitlines() if re.fullmatch(r"iter \d+: loss [\d.]+, [\d,]+ tok/s", line)]
    assert [line.split(":")[0] for line in records] == ["iter 0", "iter 2", "iter 4"]  # no MFU without a known peak
    last = result.stdout.splitlines()[-1]
    assert re.fullmatch(r"done at iteration 6: val loss [\d.]+ \(best [\d.]+\), [\d.]+ s \(first step [\d.]+ s\) "
                        rf"\| checkpoints, metrics.jsonl and loss.png in {re.escape(str(tmp_path))}", last), last


def test_other_data_is_written_to_a_folder_named_after_it(tmp_path, shakespeare):
    notes = tmp_path / "my-notes.txt"
    notes.write_text("some text of mine\n" * 100)
    assert config_from_args([])[0].out_dir == "out-shakespeare-char"
    assert config_from_args(["--input", str(shakespeare)])[0].out_dir == "out-shakespeare-char"  # the same text
    assert config_from_args(["--input", str(notes)])[0].out_dir == "out-my-notes"
    assert config_from_args(["--data", str(tmp_path / "owt")])[0].out_dir == "out-owt"
    assert config_from_args(["--input", str(notes), "--out_dir", "mine"])[0].out_dir == "mine"
    assert config_from_args(["--preset", "gpt2-124m", "--data", "owt"])[0].out_dir == "out-gpt2-124m"


def test_the_same_kind_of_error_exits_with_the_same_status(tmp_path, corpus, data_cache):
    """2 for a command line this machine or run cannot use (as argparse's own errors), 1 for anything else."""
    def status(main, argv):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        return 1 if isinstance(stopped.value.code, str) else stopped.value.code

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    common = ["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "run"), *TINY]
    assert status(train.main, [*common, "--device", "cuda"]) == status(sample.main, ["--device", "cuda"]) == 2
    assert status(train.main, [*common, "--dtype", "float16"]) == 2
    assert status(train.main, [*common, "--learning_rate", "-1"]) == 2
    assert status(train.main, [*common[2:], "--input", str(tmp_path / "missing.txt")]) == 1
    assert status(sample.main, ["--out_dir", str(tmp_path / "missing")]) == 1


def test_a_named_gpu_becomes_the_current_device(monkeypatch):
    """Triton launches on the current device, not its tensors': `--device cuda:1` makes GPU 1 current."""
    from gpt.device import resolve_device_dtype

    made_current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    cfg, _, _ = config_from_args(["--device", "cuda:1"])
    assert resolve_device_dtype(cfg) == (torch.device("cuda", 1), torch.bfloat16)
    assert made_current == [torch.device("cuda", 1)]


def test_the_batch_ramp_grows_the_accumulation_steps_with_the_tokens_seen():
    """GPT-3's ramp: from the micro-steps holding 32K tokens (at least one) to the full batch, linear in tokens."""
    cfg, _, _ = config_from_args(["--block_size", "64", "--batch_size", "8", "--gradient_accumulation_steps", "256",
                                  "--batch_ramp_tokens", "1e6"])  # micro-step: 512 tokens; full batch: 131,072
    steps = [train.accumulation_steps(tokens, cfg) for tokens in (0, 250_000, 500_000, 999_999, 1_000_000, 5e6)]
    assert steps[0] == 32768 // 512 and steps[-2:] == [256, 256]
    assert steps == sorted(steps) and steps[2] == round((32768 + (131072 - 32768) * 0.5) / 512)
    assert train.accumulation_steps(0, cfg, world_size=4) == 32768 // 2048  # all ranks' micro-steps hold the 32K
    unramped, _, _ = config_from_args(["--gradient_accumulation_steps", "4"])
    assert train.accumulation_steps(0, unramped, world_size=2) == 2


def test_the_learning_rate_schedule_in_tokens():
    cfg, _, _ = config_from_args(["--learning_rate", "1e-3", "--warmup_tokens", "1000", "--decay_tokens", "11000"])
    lr = lambda tokens: train.learning_rate(0, cfg, tokens)  # noqa: E731  (the iteration no longer counts)
    assert lr(0) < lr(500) < lr(999) < 1e-3
    assert lr(1000) == pytest.approx(1e-3) and lr(6000) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr(11000) == lr(10**9) == pytest.approx(1e-4)
    with pytest.raises(SystemExit):
        config_from_args(["--warmup_tokens", "1000"])  # without --decay_tokens beyond it


def test_the_token_schedule_is_in_the_metrics_and_exact_across_resume(tmp_path, corpus, data_cache):
    """Batch ramp and token-counted learning rate, interrupted and resumed: the same losses, rates and batches."""
    common = ["--eval_interval", "6", "--dropout", "0.1", "--batch_size", "32", "--gradient_accumulation_steps", "64",
              "--batch_ramp_tokens", "300000", "--warmup_tokens", "100000", "--decay_tokens", "1000000"]
    full = run(tmp_path / "full", corpus, data_cache, "--max_iters", "12", *common)
    run(tmp_path / "parts", corpus, data_cache, "--max_iters", "6", *common)
    resumed = run(tmp_path / "parts", corpus, data_cache, "--max_iters", "12", "--resume", "true", *common)
    schedule = lambda records: [(r["iter"], r["loss"], r["lr"], r["tokens"], r["batch_tokens"])  # noqa: E731
                                for r in records if "loss" in r]
    assert schedule(resumed) == schedule(full)
    batches = [b for *_, b in schedule(full)]
    assert batches[0] == 32768 < batches[-1] == 64 * 32 * 32 and batches == sorted(batches)  # 32 x 32 a micro-step
    assert [t for *_, t, _ in schedule(full)] == list(itertools.accumulate(batches))


@pytest.mark.parametrize("resume", [False, True])
def test_the_configuration_is_decided_once(tmp_path, corpus, data_cache, resume):
    """Followed from argv to the loop (python -m tools.config_walk), the run's configuration is handed back
    only by the command line's parser and the plan, and stops in at most 12 functions: a decision taken in
    a second place shows here."""
    from tools.config_walk import walk

    flags = ["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path), *TINY]
    if resume:
        run(tmp_path, corpus, data_cache, "--max_iters", "1", "--eval_interval", "1")
        flags = ["--out_dir", str(tmp_path), "--data_cache", str(data_cache), *TINY, "--resume", "true"]
    seen = walk([*flags, "--max_iters", "0", "--eval_only", "true"])
    assert seen["returns"] == ["config.py:TrainConfig.from_flat", "config.py:config_from_args", "plan.py:make_plan"]
    assert len(seen["stops"]) <= 12, seen["stops"]
    assert seen["stops"][:2] == ["train.py:main", "config.py:config_from_args"] and "plan.py:make_plan" in seen["stops"]


def test_a_resumed_run_says_which_of_its_settings_the_command_changes(tmp_path, corpus, data_cache, capsys):
    """--resume continues exactly with the run's own flags; a flag left out (its preset's default comes back) or
    changed is named with the run's value, so a changed schedule is never silent."""
    run(tmp_path, corpus, data_cache, "--max_iters", "2", "--eval_interval", "2", "--warmup_iters", "1")
    capsys.readouterr()
    run(tmp_path, corpus, data_cache, "--max_iters", "2", "--eval_interval", "2", "--warmup_iters", "1", "--resume", "true")
    assert "settings other than the run's" not in capsys.readouterr().out
    train.main(["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path), *TINY,
                "--max_iters", "4", "--eval_interval", "2", "--resume", "true"])  # TINY's --warmup_iters 5
    note = next(line for line in capsys.readouterr().out.splitlines() if "settings other than the run's" in line)
    assert "--warmup_iters 1 -> 5" in note and "--max_iters 2 -> 4" in note and "--learning_rate" not in note
