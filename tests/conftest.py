"""Shared fixtures: seeds, the GPU marker, the Tiny Shakespeare text."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import kernels  # noqa: F401  (selects the Triton interpreter on GPU-less machines before any kernel is defined)

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data-cache")


@pytest.fixture(scope="session")
def shakespeare(data_cache) -> Path:
    """Tiny Shakespeare: $GPT_SHAKESPEARE, the copy in ../shared beside the repository, or downloaded."""
    explicit = os.environ.get("GPT_SHAKESPEARE")
    if explicit:
        return Path(explicit)
    if LOCAL_SHAKESPEARE.exists():
        return LOCAL_SHAKESPEARE
    from gpt.data import download_shakespeare

    return download_shakespeare(data_cache)
