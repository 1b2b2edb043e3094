"""End to end, after llm.c's test_gpt2: every kernel backend computes what the torch backend computes.

A fixed small GPT and a fixed batch. Logits, loss and every parameter's gradient of each backend
are held to the project's tolerance rule against the torch backend run in fp64 (the truth),
with the torch backend's own fp32 error as the yardstick; then 10 AdamW steps; then a bitwise
rerun; then torch.compile(fullgraph=True) with zero graph breaks.
"""

import pytest
import torch
from tiny import TINY_MODEL
from tolerance import assert_close_to_reference

import gpt_kernels
from gpt.config import GPTConfig
from gpt.model import GPT

# --kernels values: each of this project's backends alone (every op's, as registered), every op's
# reference, and the full sets (`triton` includes linear_cross_entropy=triton: the head and the
# loss fused in training)
BACKENDS = [f"{op}={name}" for op, backends in gpt_kernels.registry.BACKENDS.items() for name in backends
            if name in gpt_kernels.registry.OURS] + ["reference", "triton", "ext,attention=triton"]
FULL_SETS = BACKENDS[-2:]
SMALL = TINY_MODEL | dict(vocab_size=65, n_embd=64)


def build(spec: str = "torch", dtype=torch.float32, device="cpu", shape=SMALL, seed=0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**shape), gpt_kernels.resolve(spec, device))
    with torch.no_grad():  # non-trivial norm gains and biases, so their gradients are tested too
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.normal_(1.0, 0.1)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.02)
    return model.to(device=device, dtype=dtype)


def batch(shape=SMALL, b=2, device="cpu"):
    gen = torch.Generator().manual_seed(42)
    idx = torch.randint(shape["vocab_size"], (b, shape["block_size"] + 1), generator=gen).to(device)
    return idx[:, :-1], idx[:, 1:]


def logits_loss_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        logits, _ = model(x)  # with targets a fused head + loss returns no logits
    _, loss = model(x, y)
    loss.backward()
    return {"logits": logits, "loss": loss.detach()} | {
        f"grad {name}": p.grad for name, p in model.named_parameters()}


def adamw_losses(model, x, y, steps=10):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)


@pytest.fixture(scope="module")
def reference_runs():
    x, y = batch()
    truth = logits_loss_grads(build("torch", torch.float64), x, y)
    torch32 = logits_loss_grads(build("torch"), x, y)
    return x, y, truth, torch32


@pytest.mark.parametrize("name", BACKENDS)
def test_logits_loss_and_every_gradient(name, reference_runs):
    x, y, truth, torch32 = reference_runs
    ours = logits_loss_grads(build(name), x, y)
    assert ours.keys() == truth.keys() and len(ours) > 20
    for key in truth:
        assert_close_to_reference(f"{name}: {key}", ours[key], torch32[key], truth[key])


@pytest.mark.parametrize("name", FULL_SETS)
def test_ten_adamw_steps(name):
    x, y = batch()
    truth = adamw_losses(build("torch", torch.float64), x, y)
    torch32 = adamw_losses(build("torch"), x, y)
    ours = adamw_losses(build(name), x, y)
    assert truth[-1] < truth[0] - 0.1  # the steps do train
    assert_close_to_reference(f"{name}: 10 AdamW losses", ours, torch32, truth)


@pytest.mark.parametrize("name", FULL_SETS)
def test_rerun_is_bitwise_identical(name):
    x, y = batch()
    first = logits_loss_grads(build(name), x, y)
    second = logits_loss_grads(build(name), x, y)
    for key in first:
        assert torch.equal(first[key], second[key]), key


@pytest.mark.parametrize("name", ["torch", *BACKENDS])
def test_compile_has_no_graph_breaks(name):
    torch._dynamo.reset()
    model = build(name)
    x, y = batch()
    explanation = torch._dynamo.explain(model)(x, y)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("name", ["torch", FULL_SETS[0]])
def test_compiled_model_matches_eager(name):
    torch._dynamo.reset()
    x, y = batch()
    eager = logits_loss_grads(build(name), x, y)
    compiled_model = build(name)
    compiled_model.forward = torch.compile(compiled_model.forward, fullgraph=True)  # inductor, as training uses
    compiled = logits_loss_grads(compiled_model, x, y)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], atol=1e-5, rtol=1e-4, msg=key)


@pytest.mark.gpu
@pytest.mark.parametrize("name", FULL_SETS)
def test_gpt2_124m_bf16_gpu(name):
    """gpt2-124m's shape on a short sequence in bf16 autocast; tolerances from the torch backend's own bf16 error."""
    shape = dict(block_size=128, vocab_size=50257, n_layer=12, n_head=12, n_embd=768, bias=True, dropout=0.0)
    x, y = batch(shape, b=4, device="cuda")
    truth = logits_loss_grads(build("torch", torch.float32, "cuda", shape), x, y)
    with torch.autocast("cuda", torch.bfloat16):
        torch_bf16 = logits_loss_grads(build("torch", torch.float32, "cuda", shape), x, y)
        ours = logits_loss_grads(build(name, torch.float32, "cuda", shape), x, y)
    for key in truth:
        err = (ours[key].float() - truth[key]).abs().max().item()
        base = (torch_bf16[key].float() - truth[key]).abs().max().item()
        assert err <= 2 * base + 1e-2 * truth[key].abs().max().item(), f"{name}: {key}: {err:.3g} vs torch {base:.3g}"


@pytest.mark.parametrize("name", FULL_SETS)
def test_generation_with_every_backend(name):
    """KV-cache generation (queries of length 1 against longer keys) through the kernels, past block_size."""
    shape = SMALL | {"block_size": 8}
    prompt = torch.randint(shape["vocab_size"], (2, 3), generator=torch.Generator().manual_seed(3))
    expected = build("torch", shape=shape).eval().generate(prompt, 12, temperature=0.0)
    ours = build(name, shape=shape).eval()
    assert torch.equal(ours.generate(prompt, 12, temperature=0.0), expected)
    assert torch.equal(ours.generate(prompt, 12, temperature=0.0, use_cache=False), expected)


def test_compile_with_attention_dropout_has_no_graph_breaks():
    """Training mode with dropout: the Triton attention draws its seed as a tensor inside the graph."""
    torch._dynamo.reset()
    model = GPT(GPTConfig(**(SMALL | {"dropout": 0.1})), gpt_kernels.resolve(FULL_SETS[0])).train()
    x, y = batch()
    explanation = torch._dynamo.explain(model)(x, y)
    assert explanation.graph_break_count == 0, explanation.break_reasons


def test_every_launch_relies_only_on_options_a_compiled_graph_keeps(monkeypatch):
    """Inductor rebuilds a user kernel from its arguments and num_warps/num_stages alone: an option such as
    maxnreg or enable_fp_fusion given to an eager launch is silently dropped from the compiled graph, which
    then runs another kernel than the one tested eagerly. Every launch of a training step names none."""
    import importlib
    import inspect

    kept = {"num_warps", "num_stages"}
    dropped = []
    for module_name in ("layer_norm", "add_layer_norm", "attention", "cross_entropy"):
        module = importlib.import_module(f"gpt_kernels.ops.{module_name}.triton")
        original = module.wrap_triton

        def recording(kernel, _original=original):
            launcher = _original(kernel)
            function = kernel
            while hasattr(function, "fn"):  # an autotuner's kernel, a kernel's Python function
                function = function.fn
            params = set(inspect.signature(function).parameters)

            class Recorded:
                def __getitem__(self, grid):
                    def launch(*args, **kwargs):
                        dropped.extend(f"{function.__name__}: {k}" for k in kwargs if k not in params | kept)
                        return launcher[grid](*args, **kwargs)
                    return launch
            return Recorded()

        monkeypatch.setattr(module, "wrap_triton", recording)
    model = build("triton")
    idx, targets = batch()
    _, loss = model(idx, targets)
    loss.backward()
    assert not dropped, dropped
