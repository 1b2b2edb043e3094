"""Train GPT-2 family models with fused Triton and CUDA kernels."""

from .config import GPTConfig, TrainConfig
from .model import GPT

__all__ = ["GPT", "GPTConfig", "TrainConfig"]
