"""Run-time settings shared by notebooks, the CLI and the tests.

``BUPO_FAST=1`` shrinks problem *sizes* (numbers of prompts, steps, tokens) so that the
notebooks run quickly under CI. It never changes which code runs: every call site passes the
same arguments through the same functions, only with smaller numbers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

import torch

from .precision import load_dtype, simulated_dtype

T = TypeVar("T")

FAST_ENV = "BUPO_FAST"
CACHE_ENV = "BUPO_CACHE"


def fast_mode() -> bool:
    """True when ``BUPO_FAST`` is set to a true value (``1``, ``true``, ``yes``)."""
    return os.environ.get(FAST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def scaled(full: T, fast: T, quick: bool | None = None) -> T:
    """Return ``fast`` in quick mode and ``full`` otherwise.

    Quick mode is ``quick`` when given (the notebooks' ``QUICK`` switch), else ``BUPO_FAST=1``.

    >>> scaled(100, 4) in (100, 4)
    True
    >>> scaled(100, 4, quick=True), scaled(100, 4, quick=False)
    (4, 100)
    """
    return fast if (fast_mode() if quick is None else quick) else full


def cache_dir() -> Path:
    """Folder for converted model weights: ``$BUPO_CACHE`` or ``~/.cache/bupo``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "bupo"


def default_device() -> torch.device:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device | str) -> torch.dtype:
    """float32 on CPU and on GPUs without native bfloat16 (T4, V100); bfloat16 from compute capability 8.0.

    The card's compute capability decides (:func:`bupo_core.precision.load_dtype`), never
    ``torch.cuda.is_bf16_supported()``, which answers True on a T4 through slow emulation. Older
    GPUs load float32 weights and compute in fp16 under autocast: fp16 *storage* overflows in the
    un-normed residual stream that internal policies read.

    ``BUPO_SIMULATE_DTYPE=bfloat16|float16`` (the notebooks' GPU-dtype switch) overrides it, on any
    device, so a CPU run loads the model as a GPU run would.
    """
    return simulated_dtype() or load_dtype(device)
