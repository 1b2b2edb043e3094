"""Faults a long unattended run meets: a kill mid-save, a signal, a non-finite loss, damaged or foreign checkpoints."""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from tiny import tiny_flags

from gpt import checkpoint, train
from gpt.config import GPTConfig, config_from_args

TINY = tiny_flags(batch_size=4, eval_iters=2)


def base_args(tmp_path, corpus, data_cache):
    return ["--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path), *TINY]


def losses(out_dir):
    return [(r["iter"], r["loss"]) for r in map(json.loads, (out_dir / "metrics.jsonl").read_text().splitlines())
            if "loss" in r]


def test_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    """A child rewrites a 40 MB checkpoint in a loop; SIGKILL lands mid-write; the file on disk is whole."""
    path = tmp_path / "last.safetensors"
    child = textwrap.dedent(f"""
        import torch
        from gpt import checkpoint
        from gpt.config import GPTConfig
        config = GPTConfig(block_size=8, vocab_size=11, n_layer=1, n_head=1, n_embd=8)
        for version in range(1_000_000):
            state = {{"transformer.wte.weight": torch.full((10_000_000,), float(version))}}
            checkpoint.save_weights({str(path)!r}, state, config, {{"kind": "char", "vocab_size": 11}})
            print(version, flush=True)
    """)
    for delay in (0.05, 0.13, 0.31):
        process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "0"  # one complete save, then kill during a later one
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state, _, _ = checkpoint.load_weights(path)  # never torn
        values = state["transformer.wte.weight"]
        assert values.numel() == 10_000_000 and torch.all(values == values[0])


def test_sigterm_saves_and_resume_reproduces_the_uninterrupted_run(tmp_path, corpus, data_cache):
    common = ["--max_iters", "300", "--eval_interval", "1000", "--dropout", "0.1"]
    full = tmp_path / "full"
    train.main(base_args(full, corpus, data_cache) + common)

    parts = tmp_path / "parts"
    command = [sys.executable, "-m", "gpt.train", *base_args(parts, corpus, data_cache), *common]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = parts / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 20):
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "SIGTERM received" in stdout and stdout.rstrip().endswith("continue with --resume true")  # nothing after it
    stopped_at = len(losses(parts))
    assert 20 <= stopped_at < 300

    train.main(base_args(parts, corpus, data_cache) + common + ["--resume", "true"])
    assert losses(parts) == losses(full)  # bitwise: data order, dropout masks, optimizer state


@pytest.fixture
def nan_at_iteration(monkeypatch):
    """Make the model's output NaN on the 8th training forward pass (iteration 7)."""
    calls = {"n": 0}
    original = train.Trainer.train_step

    def poisoned(self, lr, accum):
        calls["n"] += 1
        if calls["n"] == 8:
            handle = self.model.lm_head.register_forward_hook(lambda m, i, out: out * float("nan"))
            try:
                return original(self, lr, accum)
            finally:
                handle.remove()
        return original(self, lr, accum)

    monkeypatch.setattr(train.Trainer, "train_step", poisoned)


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, data_cache, nan_at_iteration):
    with pytest.raises(SystemExit, match="non-finite loss or gradient at iteration 7.*stopped"):
        train.main(base_args(tmp_path, corpus, data_cache) + ["--max_iters", "20", "--eval_interval", "5"])
    state = checkpoint.load_train_state(tmp_path / "last.state.pt")
    assert state["iter_num"] == 5
    weights, _, _ = checkpoint.load_weights(tmp_path / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_nonfinite_loss_can_be_skipped(tmp_path, corpus, data_cache, nan_at_iteration):
    train.main(base_args(tmp_path, corpus, data_cache) + ["--max_iters", "12", "--eval_interval", "6",
                                                                "--nonfinite", "skip"])
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [(r["iter"], r["first_nonfinite"]) for r in records if r.get("nonfinite_steps")]
    assert skipped == [(7, 7)]
    weights, _, _ = checkpoint.load_weights(tmp_path / "last.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert records[-1]["iter"] == 12 and records[-1]["val_loss"] < 4.2


@pytest.fixture
def trained(tmp_path, corpus, data_cache):
    train.main(base_args(tmp_path, corpus, data_cache) + ["--max_iters", "2", "--eval_interval", "2"])
    return tmp_path


def test_truncated_weights_give_a_clear_error(trained, corpus, data_cache):
    path = trained / "last.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load_weights(path)
    with pytest.raises(SystemExit, match="truncated or corrupted"):
        train.main(base_args(trained, corpus, data_cache) + ["--max_iters", "4", "--resume", "true"])
    with pytest.raises(SystemExit, match="last.safetensors is truncated or corrupted"):  # its own data: no download
        train.main(["--out_dir", str(trained), "--data_cache", str(data_cache), "--max_iters", "4", "--resume", "true"])


def test_corrupted_header_gives_a_clear_error(trained):
    path = trained / "best.safetensors"
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # inside the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load_weights(path)


def test_truncated_training_state_gives_a_clear_error(trained, corpus, data_cache):
    path = trained / "last.state.pt"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SystemExit, match="training state .* is truncated or corrupted"):
        train.main(base_args(trained, corpus, data_cache) + ["--max_iters", "4", "--resume", "true"])


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited-by-checkpoint",))


def test_loading_never_executes_code_from_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "last.state.pt"
    with open(path, "wb") as f:
        pickle.dump({"iter_num": Exploit()}, f, protocol=2)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        checkpoint.load_train_state(path)
    assert not (tmp_path / "exploited-by-checkpoint").exists()


def test_resume_with_another_vocabulary_is_rejected(trained, tmp_path, data_cache):
    other = tmp_path / "other.txt"
    other.write_text("abcdefghij klmnop\n" * 2000)
    with pytest.raises(SystemExit, match="vocab_size: checkpoint 65, now 18"):
        train.main(base_args(trained, other, data_cache) + ["--max_iters", "4", "--resume", "true"])


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, corpus, data_cache):
    """With or without --input (without it, the run's own data is sought: never a download)."""
    with pytest.raises(SystemExit, match="nothing to resume in --out_dir .*empty: it has no last.safetensors"):
        train.main(base_args(tmp_path / "empty", corpus, data_cache) + ["--resume", "true"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="nothing to resume in --out_dir .*empty: it has no last.safetensors"):
        train.main(["--out_dir", str(tmp_path / "empty"), "--data_cache", str(data_cache), "--resume", "true"])


def test_block_size_larger_than_the_data_allows(tmp_path, data_cache):
    short = tmp_path / "short.txt"
    short.write_text("O Romeo, Romeo! wherefore art thou Romeo?\n" * 40)
    with pytest.raises(SystemExit, match="the val split has 168 tokens, fewer than block_size \\+ 1 = 257"):
        train.main(["--input", str(short), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "o"),
                    "--block_size", "256", "--progress", "false"])


@pytest.mark.parametrize("argv, message", [
    (["--nonfinite", "ignore"], "--nonfinite must be 'stop' or 'skip'"),
    (["--max_seconds", "-1"], "--max_seconds and --target_val_loss must be >= 0"),
    (["--min_lr", "1"], "--min_lr must be in"),
    (["--dtype", "float8"], "--dtype must be float32, bfloat16 or float16"),
    (["--tokenizer", "bpe"], "--tokenizer must be 'char' or 'gpt2'"),
    (["--n_layer", "0"], "--n_layer must be a positive integer"),
])
def test_more_bad_configs(argv, message):
    with pytest.raises(SystemExit, match=message):
        config_from_args(argv)


def test_weights_load_without_this_project(trained):
    from safetensors import safe_open

    with safe_open(str(trained / "last.safetensors"), framework="pt") as f:
        config = json.loads(f.metadata()["gpt_config"])
        keys = set(f.keys())
    assert GPTConfig(**config).n_layer == 2 and "lm_head.weight" not in keys and "transformer.wte.weight" in keys


def test_a_new_run_never_replaces_another_runs_files(trained, corpus, data_cache):
    """A run into a finished run's folder stops with the two ways forward; --overwrite true is one."""
    before = {name: (trained / name).read_bytes() for name in ("best.safetensors", "metrics.jsonl")}
    with pytest.raises(SystemExit, match="holds another run .*--resume true.*--overwrite true"):
        train.main(base_args(trained, corpus, data_cache) + ["--max_iters", "1"])
    assert {name: (trained / name).read_bytes() for name in before} == before
    train.main(base_args(trained, corpus, data_cache) + ["--max_iters", "1", "--eval_interval", "1", "--overwrite"])
    assert [r["iter"] for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines())] == [0, 1]


def test_a_folder_without_a_checkpoint_is_not_offered_to_resume(tmp_path, corpus, data_cache):
    """A run that stopped before its first checkpoint (its output piped into `head`, say) left only metrics:
    the refusal does not suggest --resume, which would find nothing to continue."""
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(SystemExit, match="saved no checkpoint to continue from: replace it with --overwrite true") as err:
        train.main(base_args(tmp_path, corpus, data_cache) + ["--max_iters", "1"])
    assert "--resume" not in str(err.value)


def test_resume_uses_the_runs_own_data(trained, data_cache, capsys):
    """No --input: the run continues on the text it was started with (offline, the default would download)."""
    train.main(["--out_dir", str(trained), "--data_cache", str(data_cache), *TINY, "--max_iters", "4",
                "--eval_interval", "2", "--resume"])
    assert "resuming from" in capsys.readouterr().out
    assert [r["iter"] for r in map(json.loads, (trained / "metrics.jsonl").read_text().splitlines())][-1] == 4


@pytest.mark.parametrize("name", ["last.state.pt", "last.safetensors"])
def test_damage_inside_a_checkpoint_is_found(trained, corpus, data_cache, name):
    """4 KB zeroed in the middle of the file: the checksums written with every tensor catch it."""
    path = trained / name
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=f"{name} is (truncated or )?corrupted"):
        train.main(base_args(trained, corpus, data_cache) + ["--max_iters", "4", "--resume", "true"])


def test_a_configuration_that_cannot_fit_is_refused_up_front(tmp_path, corpus, data_cache):
    with pytest.raises(SystemExit, match=r"needs about [\d.]+ GiB for one micro-batch .* but cpu has [\d.]+ GiB"):
        train.main(base_args(tmp_path, corpus, data_cache) + ["--batch_size", "10000000"])
    assert not (tmp_path / "metrics.jsonl").exists()


def test_triton_on_the_cpu_says_how_long_a_run_would_take(tmp_path, corpus, data_cache, capsys):
    train.main(base_args(tmp_path, corpus, data_cache) + ["--kernels", "triton", "--max_iters", "1",
                                                           "--eval_interval", "1", "--eval_iters", "1"])
    out = capsys.readouterr().out
    assert "note: backend 'triton' on a CPU runs the Triton interpreter" in out
    assert re.search(r"the Triton interpreter took [\d.]+ s for this iteration: 1 iterations would take about "
                     r"\d+ s", out)


def test_a_second_signal_stops_at_once(tmp_path, corpus, data_cache):
    """The first SIGTERM waits for the step to end; the second does not. The step here never ends (a
    stand-in for one long kernel call), so only the second signal can stop the run."""
    child = "import sys, time; from gpt import train; " \
            "train.Trainer.train_step = lambda self, lr, accum: time.sleep(3600); train.main(sys.argv[1:])"
    command = [sys.executable, "-c", child, *base_args(tmp_path, corpus, data_cache), "--max_iters", "10",
               "--eval_interval", "1000", "--eval_iters", "1"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "best.safetensors").exists():  # the loop has begun
        time.sleep(0.05)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert process.poll() is None  # the first signal waits for the step
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "SIGTERM again: stopping now, without saving" in stderr and "Traceback" not in stderr
    assert time.time() - signalled < 10


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device 'tpu' is not supported; expected cpu, cuda or cuda:N"),
    (["--device", "cuda:banana"], "--device 'cuda:banana' is not supported"),
])
def test_bad_devices_are_one_line_errors(tmp_path, corpus, data_cache, argv, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        train.main(base_args(tmp_path, corpus, data_cache) + argv)


def test_ctrl_c_in_sampling_ends_quietly(trained):
    command = [sys.executable, "-m", "gpt.sample", "--out_dir", str(trained), "--max_new_tokens", "100000",
               "--num_samples", "1", "--device", "cpu"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.read(20)  # sampling has begun
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
