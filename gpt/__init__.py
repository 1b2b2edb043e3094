"""Train GPT-2 family models with fused Triton and CUDA kernels."""

import importlib.metadata

import kernels as _kernels

if getattr(_kernels, "DISTRIBUTION", None) != "gpt-kernels":
    _owners = importlib.metadata.packages_distributions().get("kernels", [])
    raise ImportError(
        f"`import kernels` found {getattr(_kernels, '__file__', None) or _kernels.__path__}, not gpt-kernels' own "
        f"package but another with that import name, first on the path (distributions installing one: "
        f"{', '.join(sorted(set(_owners))) or 'none'}); `pip uninstall kernels` (Hugging Face's kernel hub) or put "
        "this project first")

from .config import GPTConfig, TrainConfig  # after the check: config imports kernels
from .model import GPT

__all__ = ["GPT", "GPTConfig", "TrainConfig"]
