"""GPT-3's sizes as presets, the memory estimate that says which fit, and activation checkpointing."""

import pytest
import torch
from tiny import TINY_MODEL

from gpt import memory
from gpt.config import PRESETS, GPTConfig, TrainConfig
from gpt.model import GPT

# Brown et al. 2020, table 2.1: parameters, layers, width, heads' width, batch in tokens, learning rate
PAPER = {
    "gpt3-small": (125e6, 12, 768, 64, 0.5e6, 6.0e-4),
    "gpt3-medium": (350e6, 24, 1024, 64, 0.5e6, 3.0e-4),
    "gpt3-large": (760e6, 24, 1536, 96, 0.5e6, 2.5e-4),
    "gpt3-xl": (1.3e9, 24, 2048, 128, 1e6, 2.0e-4),
    "gpt3-2.7b": (2.7e9, 32, 2560, 80, 1e6, 1.6e-4),
}


@pytest.mark.parametrize("name", PAPER)
def test_gpt3_presets_have_the_papers_shapes_batch_and_schedule(name):
    params, n_layer, n_embd, head, batch_tokens, learning_rate = PAPER[name]
    cfg = TrainConfig.from_flat(PRESETS[name])
    m = cfg.model
    assert (m.n_layer, m.n_embd, m.n_embd // m.n_head, m.block_size) == (n_layer, n_embd, head, 2048)
    assert (m.attention_pattern, m.layer_window(0), m.layer_window(1)) == ("alternating", None, 256)
    assert cfg.learning_rate == learning_rate and cfg.min_lr == pytest.approx(learning_rate / 10)
    assert abs(cfg.tokens_per_iter - batch_tokens) / batch_tokens < 0.05  # 0.5M is 2^19 = 524,288 tokens
    assert (cfg.warmup_tokens, cfg.decay_tokens) == (375e6, 260e9) and 4e9 <= cfg.batch_ramp_tokens <= 12e9
    assert cfg.max_iters * cfg.tokens_per_iter == pytest.approx(300e9, rel=0.01)
    model_config = GPTConfig(**{**m.to_dict(), "vocab_size": 50257})
    counted = memory.estimate(model_config, 50257, torch.bfloat16, "triton").fixed / 16  # 16 bytes a parameter
    assert abs(counted - params) / params < 0.03, f"{counted / 1e6:.0f}M parameters against the paper's {params / 1e6:.0f}M"


@pytest.mark.parametrize("bias", [True, False])
def test_the_estimates_parameter_count_is_the_models(bias):
    config = GPTConfig(**(TINY_MODEL | dict(vocab_size=37, bias=bias)))
    exact = GPT(config).num_params(non_embedding=False)
    assert memory.estimate(config, 37, torch.float32, "torch").fixed == 16 * exact


def test_gpt3_presets_fit_an_80_gib_gpu_by_the_estimate_and_a_smaller_one_gets_advice():
    lines = memory.main(["--gib", "80"])
    assert all(line.endswith("fits as it is") for line in lines if line.startswith("gpt3"))
    (line,) = memory.main(["--gib", "24", "--preset", "gpt3-small"])[1:]
    batch = int(line.split("--batch_size ")[1].split()[0])
    accum = int(line.split("--gradient_accumulation_steps ")[1].split()[0])
    assert batch * accum * 2048 == 2**19 and batch < 32  # the paper's batch, in micro-batches that fit


def test_activation_checkpointing_keeps_less_and_an_estimate_that_says_so():
    config = GPTConfig(**(TINY_MODEL | dict(vocab_size=37, n_layer=4)))
    plain = memory.estimate(config, 37, torch.float32, "torch")
    checkpointed = memory.estimate(config, 37, torch.float32, "torch", activation_checkpointing=True)
    assert checkpointed.per_sequence < plain.per_sequence and checkpointed.fixed == plain.fixed


def saved_bytes_loss_and_grads(checkpointing: bool):
    torch.manual_seed(0)
    model = GPT(GPTConfig(**(TINY_MODEL | dict(vocab_size=37, n_layer=4, dropout=0.1)))).train()
    model.activation_checkpointing = checkpointing
    idx = torch.randint(37, (4, 32), generator=torch.Generator().manual_seed(1))
    saved = []
    torch.manual_seed(2)  # the same dropout masks
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        _, loss = model(idx, idx)
    loss.backward()
    return sum(saved), loss, [p.grad for p in model.parameters()]


def test_activation_checkpointing_gives_the_same_loss_and_gradients_keeping_less():
    """Dropout included: the recomputation replays the same random masks."""
    kept, loss, grads = saved_bytes_loss_and_grads(False)
    kept_checkpointed, loss_checkpointed, grads_checkpointed = saved_bytes_loss_and_grads(True)
    assert torch.equal(loss, loss_checkpointed)
    for a, b in zip(grads, grads_checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert kept_checkpointed < kept / 2


def test_the_memory_command_counts_the_vocabulary_it_is_given():
    """A character preset's vocabulary is its text's: 65 by default (Tiny Shakespeare), another with --vocab_size."""
    def millions(*flags):
        (line,) = memory.main(["--preset", "shakespeare-char", *flags])[1:]
        return float(line.split()[1].rstrip("M"))

    n_embd = TrainConfig.from_flat(PRESETS["shakespeare-char"]).model.n_embd
    assert millions("--vocab_size", "50257") - millions() == pytest.approx((50257 - 65) * n_embd / 1e6, abs=1)


def test_a_model_whose_weights_alone_do_not_fit_is_told_so():
    """Where the weights, gradients and AdamW's moments alone exceed the GPU, no batch setting can help: the
    advice says so (gpt3-2.7b's are 39.5 GiB)."""
    (line,) = memory.main(["--gib", "24", "--preset", "gpt3-2.7b"])[1:]
    assert "alone need 39.5 GiB" in line and "--fsdp true" in line and "--block_size" not in line
