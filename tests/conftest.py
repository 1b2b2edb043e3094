"""Shared fixtures: seeds, the GPU marker, a generated text, and the real Tiny Shakespeare where present."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import write_corpus

import gpt_kernels  # noqa: F401  (selects the Triton interpreter on GPU-less machines before any kernel is defined)

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
def corpus(tmp_path_factory) -> Path:
    """A play-shaped text the project writes itself (tests/corpus.py): no download needed."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "play.txt")


@pytest.fixture(scope="session")
def shakespeare() -> Path:
    """The real Tiny Shakespeare, for the few tests that need its exact bytes: $GPT_SHAKESPEARE,
    or the copy in ../shared beside the repository; without either the test is skipped."""
    explicit = os.environ.get("GPT_SHAKESPEARE")
    if explicit:
        return Path(explicit)
    if LOCAL_SHAKESPEARE.exists():
        return LOCAL_SHAKESPEARE
    pytest.skip("needs Tiny Shakespeare: set GPT_SHAKESPEARE=/path/to/input.txt (sha256 86c4e6aa...), "
                "e.g. a copy downloaded by `python -m gpt.train`")
