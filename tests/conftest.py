"""Fixtures over the tiny random models of :mod:`tests.helpers`: no files, no network, seconds to build."""

from __future__ import annotations

import os

# the tests never reach a model hub: a Hugging Face id resolves from a cache a test lays out, or fails fast
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# queries encode in float32 unless a test asks (their default, "auto", means bfloat16 on some processors)
os.environ.setdefault("ADAPTIVE_RETRIEVAL_PRECISION", "float32")
# linear layers on oneDNN's path, not timed against MKL's per model (cpu_linear.choose_path): tests count its
# calls; tests/test_cpu_linear.py measures the choice itself
os.environ.setdefault("ADAPTIVE_RETRIEVAL_ONEDNN", "1")

import pytest

from adaptive_retrieval import Encoder
from tests.helpers import make_encoder, random_texts


@pytest.fixture(scope="session")
def tiny_encoder() -> Encoder:
    return make_encoder("bert")


@pytest.fixture(scope="session")
def tiny_mpnet() -> Encoder:
    return make_encoder("mpnet")


@pytest.fixture(scope="session")
def corpus() -> list[str]:
    return random_texts(60, seed=1)
