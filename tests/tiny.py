"""The one tiny model shape of the tests, as GPTConfig fields and as gpt.train flags."""

TINY_MODEL = dict(block_size=32, n_layer=2, n_head=2, n_embd=32, bias=True, dropout=0.0)


def tiny_flags(batch_size: int = 8, eval_iters: int = 4) -> list[str]:
    """gpt.train flags for TINY_MODEL with a quiet, fast loop (kernels: PyTorch's)."""
    shape = [item for name in ("block_size", "n_layer", "n_head", "n_embd", "dropout")
             for item in (f"--{name}", str(TINY_MODEL[name]))]
    return [*shape, "--batch_size", str(batch_size), "--eval_iters", str(eval_iters), "--log_interval", "1",
            "--progress", "false", "--kernels", "torch"]
