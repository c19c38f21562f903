"""Shared fixtures: tiny random-weight models of every family, and the embedded model (session-scoped)."""

from __future__ import annotations

import pytest
import torch

from bupo_core.models import TINY_FAMILIES, tiny_model

torch.set_num_threads(2)


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request):
    """A tiny random-weight model of each supported family (vocab 128, 2 layers, hidden 64)."""
    return tiny_model(request.param)


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct and its tokenizer (float32, CPU), loaded once."""
    from bupo_core import load_model

    return load_model("smollm2-135m-instruct", device="cpu")


@pytest.fixture(scope="session")
def tiny_llm():
    """``tiny-random-llama`` with the embedded tokenizer: fast end-to-end tests of pipelines."""
    from bupo_core import load_model

    return load_model("tiny-random-llama", device="cpu")
