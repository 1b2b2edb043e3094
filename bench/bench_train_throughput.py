"""pytest-benchmark wrapper of train_throughput.py: rounds of one training step; tokens/s and MFU in extra_info."""

import math

import pytest
from common import ON_GPU
from train_throughput import PROVIDERS, TINY, prepare_steps, preset_config, summarize

PRESETS = ["shakespeare-char", "gpt2-124m"] if ON_GPU else ["shakespeare-char"]
# On a CPU compiling is slow and does not speed up: the smoke case is a tiny eager model.
CASES = list(PROVIDERS) if ON_GPU else ["torch eager"]


@pytest.mark.parametrize("provider", CASES)
@pytest.mark.parametrize("preset", PRESETS)
def test_train_throughput(benchmark, preset, provider, tmp_path):
    overrides = {} if ON_GPU else TINY
    trainer, step = prepare_steps(preset_config(preset, provider, str(tmp_path), **overrides),
                                  warmup=10 if ON_GPU else 1)
    losses = []
    benchmark.group = f"train step {preset}"
    benchmark.pedantic(lambda: losses.append(step()), rounds=20 if ON_GPU else 2, iterations=1)
    stats = getattr(benchmark, "stats", None)
    times = list(stats.stats.data) if stats is not None else [float("nan")]
    result = summarize(trainer, times, losses[-1])
    assert math.isfinite(result["final_loss"])
    benchmark.extra_info.update(provider=provider, kernels=trainer.cfg.kernels,
                                **{k: v for k, v in result.items() if k != "step_ms_spread"})
