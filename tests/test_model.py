import pytest
import torch
from tiny import TINY_MODEL

from gpt.config import PRESETS, GPTConfig
from gpt.model import GPT, sample_next


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig(**(TINY_MODEL | dict(block_size=16, vocab_size=37) | overrides))


def test_shakespeare_char_parameter_count():
    preset = PRESETS["shakespeare-char"]
    config = GPTConfig(vocab_size=65, **{k: preset[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")})
    model = GPT(config)
    assert round(model.num_params() / 1e6, 2) == 10.65  # nanoGPT's figure, position embeddings excluded
    assert model.num_params(non_embedding=False) - model.num_params() == 256 * 384


def test_shapes_weight_tying_and_initial_loss():
    config = tiny_config()
    model = GPT(config)
    idx = torch.randint(config.vocab_size, (3, 11))
    targets = torch.randint(config.vocab_size, (3, 11))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 11, config.vocab_size)
    assert model.lm_head.weight is model.transformer.wte.weight
    # small initial weights: nearly uniform predictions
    assert abs(loss.item() - torch.log(torch.tensor(config.vocab_size)).item()) < 0.2
    last, none = model(idx, last_logits_only=True)
    assert none is None and torch.allclose(last[:, 0], logits[:, -1], atol=1e-6)


def test_residual_projections_use_scaled_init():
    model = GPT(tiny_config(n_layer=8, n_embd=256, n_head=4))
    std = model.transformer.h[0].attn.c_proj.weight.std().item()
    assert abs(std - 0.02 / (2 * 8) ** 0.5) < 1e-3
    assert abs(model.transformer.h[0].mlp.c_fc.weight.std().item() - 0.02) < 1e-3


def test_causality():
    model = GPT(tiny_config()).eval()
    idx = torch.randint(37, (1, 12))
    changed = idx.clone()
    changed[0, 8] = (changed[0, 8] + 1) % 37
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("prompt_len, new_tokens", [(1, 10), (5, 30)])  # 30 runs past block_size=16
def test_kv_cache_greedy_equals_no_cache(prompt_len, new_tokens):
    model = GPT(tiny_config()).eval()
    idx = torch.randint(37, (2, prompt_len))
    cached = model.generate(idx, new_tokens, temperature=0.0, use_cache=True)
    uncached = model.generate(idx, new_tokens, temperature=0.0, use_cache=False)
    assert cached.shape == (2, prompt_len + new_tokens)
    assert torch.equal(cached, uncached)


def test_kv_cache_logits_match_full_forward():
    from gpt.model import KVCache

    model = GPT(tiny_config()).eval()
    idx = torch.randint(37, (2, 10))
    full, _ = model(idx)
    cache = KVCache([None, None])
    model(idx[:, :6], cache=cache)
    step, _ = model(idx[:, 6:], cache=cache)  # 4 queries continuing a cache of 6
    torch.testing.assert_close(step, full[:, 6:], atol=1e-5, rtol=1e-5)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    gen = torch.Generator().manual_seed(0)
    assert sample_next(logits, 0.0, None, None, gen).item() == 1
    top2 = {sample_next(logits, 1.0, 2, None, gen).item() for _ in range(200)}
    assert top2 == {1, 2}
    # probabilities ~ (0.0, 0.67, 0.24, 0.0, 0.09): top_p 0.8 keeps tokens 1 and 2 only
    nucleus = {sample_next(logits, 1.0, None, 0.8, gen).item() for _ in range(300)}
    assert nucleus == {1, 2}
    with pytest.raises(ValueError, match="top_p"):
        next(GPT(tiny_config()).generate_tokens(torch.zeros(1, 1, dtype=torch.long), 1, top_p=1.5))


def test_config_errors():
    with pytest.raises(ValueError, match="divisible by n_head"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match=r"unknown GPTConfig fields \['n_experts'\]"):
        GPTConfig.from_dict(GPTConfig().to_dict() | {"n_experts": 8})
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="block_size is only 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_from_pretrained_matches_hugging_face():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.GPT2Config(vocab_size=101, n_positions=32, n_embd=48, n_layer=2, n_head=4,
                                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(1)
    hf_model = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():  # HF initialises biases to zero; make them count
        for name, p in hf_model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.02)
    ours = GPT.from_pretrained(hf_model=hf_model).eval()
    idx = torch.randint(101, (2, 20))
    with torch.no_grad():
        expected = hf_model(idx).logits
        logits, _ = ours(idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- banded attention (GPT-3)

def test_every_layer_banded_sees_only_its_receptive_field():
    """Two layers banded at 3: position t depends on positions t-4 .. t only; a change at t-5 leaves it be."""
    torch.manual_seed(0)
    model = GPT(tiny_config(n_layer=2, attention_pattern="banded", attention_window=3)).eval()
    idx = torch.randint(37, (1, 14))
    changed = idx.clone()
    changed[0, 5] = (changed[0, 5] + 1) % 37
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, 10:], b[:, 10:]) and not torch.allclose(a[:, 5:10], b[:, 5:10])
    torch.manual_seed(0)
    dense = GPT(tiny_config(n_layer=2)).eval()  # the same weights, dense: t=10 on sees t=5
    torch.testing.assert_close(dense(idx)[0][:, :3], a[:, :3])  # positions 0..2: a band of 3 leaves out nothing
    assert not torch.allclose(dense(changed)[0][:, 10:], b[:, 10:])


def test_alternating_pattern_bands_every_second_layer_from_the_second():
    config = tiny_config(n_layer=4, attention_pattern="alternating", attention_window=5)
    assert [config.layer_window(i) for i in range(4)] == [None, 5, None, 5]
    assert [block.attn.window for block in GPT(config).transformer.h] == [None, 5, None, 5]


@pytest.mark.parametrize("pattern", ["alternating", "banded"])
@pytest.mark.parametrize("prompt_len, new_tokens", [(1, 12), (9, 30)])  # 30 runs past block_size=16
def test_banded_kv_cache_greedy_equals_no_cache_and_keeps_only_the_band(pattern, prompt_len, new_tokens):
    from gpt.model import KVCache

    config = tiny_config(attention_pattern=pattern, attention_window=4)
    model = GPT(config).eval()
    idx = torch.randint(37, (2, prompt_len))
    cached = model.generate(idx, new_tokens, temperature=0.0, use_cache=True)
    assert torch.equal(cached, model.generate(idx, new_tokens, temperature=0.0, use_cache=False))
    cache = KVCache.for_config(config)
    full, _ = model(idx[:, :1].repeat(1, 12))
    model(idx[:, :1].repeat(1, 7), cache=cache)
    step, _ = model(idx[:, :1].repeat(1, 5), cache=cache)  # 5 queries continuing a cache of 7
    torch.testing.assert_close(step, full[:, 7:], atol=1e-5, rtol=1e-5)
    assert cache.length == 12
    assert [k.shape[2] for k in cache.keys] == [12 if w is None else 4 for w in map(config.layer_window, range(2))]


@pytest.mark.parametrize("overrides, message", [
    (dict(attention_window=8), "--attention_window 8 is set but --attention_pattern is dense"),
    (dict(attention_pattern="alternating"), "--attention_pattern alternating needs --attention_window"),
    (dict(attention_pattern="banded", attention_window=0), "needs --attention_window, a width of at least 1"),
    (dict(attention_pattern="sparse", attention_window=8), "--attention_pattern must be one of dense, alternating"),
])
def test_bad_band_configurations_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)
