"""torchrun on the CPU (gloo): 2 processes follow the single-process loss trajectory with the same global batch."""

import json
import subprocess
import sys

import pytest
from tiny import tiny_flags

TINY = [*tiny_flags(batch_size=4, eval_iters=2), "--gradient_accumulation_steps", "2", "--eval_interval", "5"]


def train(out_dir, corpus, data_cache, *extra, processes=1):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)] \
        if processes > 1 else [sys.executable]
    command = [*launcher, "-m", "gpt.train", "--input", str(corpus), "--data_cache", str(data_cache),
               "--out_dir", str(out_dir), *TINY, *extra]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def losses(out_dir):
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["iter"], r["loss"]) for r in records if "loss" in r]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, corpus, data_cache):
    out = tmp_path_factory.mktemp("single")
    train(out, corpus, data_cache, "--max_iters", "10")
    return losses(out)


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_processes_follow_one(tmp_path, corpus, data_cache, single_process, mode):
    stdout = train(tmp_path, corpus, data_cache, "--max_iters", "10", "--fsdp", str(mode == "fsdp"), processes=2)
    assert f"{mode.upper()} x2" in stdout and stdout.count("done at iteration") == 1  # rank 0 alone reports
    ours = losses(tmp_path)
    assert [i for i, _ in ours] == [i for i, _ in single_process] == list(range(10))
    for (_, a), (_, b) in zip(ours, single_process):
        assert a == pytest.approx(b, rel=1e-5)
    assert single_process[-1][1] < single_process[0][1]


def test_fsdp_checkpoint_resumes_the_same_trajectory(tmp_path, corpus, data_cache, single_process):
    train(tmp_path, corpus, data_cache, "--max_iters", "5", "--fsdp", "true", processes=2)
    train(tmp_path, corpus, data_cache, "--max_iters", "10", "--fsdp", "true", "--resume", "true", processes=2)
    ours = losses(tmp_path)
    assert [i for i, _ in ours] == list(range(10))
    for (_, a), (_, b) in zip(ours, single_process):
        assert a == pytest.approx(b, rel=1e-5)


def test_accumulation_must_divide_among_processes(tmp_path, corpus, data_cache):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "gpt.train",
               "--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path),
               *TINY, "--gradient_accumulation_steps", "3", "--max_iters", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "--gradient_accumulation_steps (3) must be divisible by the number of processes (2)" in result.stderr


# Run by torchrun in each process: a process group that, like NCCL on GPUs, has no backend for
# tensors off the training device. On this CPU the training device is the CPU as well, so the
# stand-in for "a CPU tensor on a GPU run" is a tensor made without naming its device (which is
# what lands on the CPU there): the factories mark those, and the collectives refuse them.
DEVICE_CHECKED_RUN = """
import sys
import torch
import torch.distributed as dist
from gpt import train

def marking(factory):
    def make(*args, **kwargs):
        tensor = factory(*args, **kwargs)
        if kwargs.get("device") is None:
            tensor.made_on_the_default_device = True
        return tensor
    return make

for name in ("tensor", "zeros", "ones", "full", "empty"):
    setattr(torch, name, marking(getattr(torch, name)))

def refusing(collective):
    def run(tensor, *args, **kwargs):
        if getattr(tensor, "made_on_the_default_device", False) or tensor.device != torch.device("cpu"):
            raise RuntimeError(f"{collective.__name__}: no backend for this tensor: it is not on the training device")
        print("collective on the training device", flush=True)
        return collective(tensor, *args, **kwargs)
    return run

for name in ("all_reduce", "broadcast", "reduce", "all_gather"):
    setattr(dist, name, refusing(getattr(dist, name)))
train.main(sys.argv[1:])
"""


def test_collectives_run_on_the_training_device(tmp_path, corpus, data_cache, single_process):
    """Training, evaluation and the log points of a 2-process run make collectives only on tensors of the
    training device, and the run still follows one process's losses."""
    script = tmp_path / "device_checked_run.py"
    script.write_text(DEVICE_CHECKED_RUN)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
               "--input", str(corpus), "--data_cache", str(data_cache), "--out_dir", str(tmp_path / "run"),
               *TINY, "--max_iters", "10"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "collective on the training device" in result.stdout
    for (_, a), (_, b) in zip(losses(tmp_path / "run"), single_process):
        assert a == pytest.approx(b, rel=1e-5)


def test_hellaswag_under_torchrun_scores_as_one_process(tmp_path, corpus, data_cache):
    """--eval_hellaswag with 2 processes: each scores half the examples, the counts are summed over ranks, and
    the scores at iteration 0 (the same initial weights) are the single process's exactly."""
    rng = __import__("random").Random(0)
    words = ("ROMEO", "the", "night", "of", "love", "and", "fair", "Verona")
    examples = [{"ctx": " ".join(rng.choice(words) for _ in range(5)), "endings": [rng.choice(words) for _ in range(4)],
                 "label": rng.randrange(4)} for _ in range(9)]
    file = tmp_path / "hs.jsonl"
    file.write_text("".join(json.dumps(e) + "\n" for e in examples))
    scores = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        train(out, corpus, data_cache, "--max_iters", "0", "--eval_hellaswag", str(file), processes=processes)
        (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        scores.append((record["hellaswag_examples"], record["hellaswag_acc"], record["hellaswag_acc_norm"]))
    assert scores[0] == scores[1] and scores[0][0] == 9  # all nine, not one rank's share
