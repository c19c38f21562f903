"""The sampling settings every config shares, declared once, and the named response-length defaults.

:class:`SamplingFields` holds ``max_new_tokens``, ``temperature`` and ``top_p`` with their
docstring lines (which :mod:`bupo_core.config_cli` turns into flag help and the docs tables) and
their validation. A config that samples responses inherits it and names its purpose's length
limit, e.g. ``max_new_tokens: int = MAX_NEW_TOKENS_EVAL`` (a dataclass keeps an inherited field's
position and documentation when a subclass only changes its default).

One default per purpose, each named here (tokens of the embedded tokenizer):

* :data:`MAX_NEW_TOKENS_ROLLOUT` (24): training rollouts; the embedded model's chain_sum answers
  are a few tokens, the limit bounds the runaway ones that make a step slow.
* :data:`MAX_NEW_TOKENS_EVAL` (32): held-out evaluation; a little room beyond the rollout limit
  so an answer cut short in training can still be finished and graded.
* :data:`MAX_NEW_TOKENS_ANALYSIS` (256): the paper's entropy analysis of a model's own full
  answers (chain-of-thought included).
* :data:`MAX_NEW_TOKENS_SHORT_ANALYSIS` (48): the texts measured on short-answer tasks (the
  demo's entropy analysis, the fixed reference set of ``bupo refine``).
* :data:`MAX_NEW_TOKENS_SAMPLER` (64): :class:`~bupo_core.rollout.SamplingConfig` when its caller
  sets nothing.
* :data:`MAX_NEW_TOKENS_DEMO` (16): the demo's training and evaluation (single-digit sums; sized
  for a 2-core CPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InputFormatError

MAX_NEW_TOKENS_ROLLOUT = 24
MAX_NEW_TOKENS_EVAL = 32
MAX_NEW_TOKENS_ANALYSIS = 256
MAX_NEW_TOKENS_SHORT_ANALYSIS = 48
MAX_NEW_TOKENS_SAMPLER = 64
MAX_NEW_TOKENS_DEMO = 16

#: the paper's sampling: temperature 1.0, no nucleus truncation
PAPER_TEMPERATURE = 1.0
PAPER_TOP_P = 1.0


def check_sampling(*, max_new_tokens: int, temperature: float, top_p: float, batch_size: int | None = None) -> None:
    """Raise :class:`~bupo_core.errors.InputFormatError` for sampling settings that cannot work.

    ``temperature`` 0 is allowed and means greedy decoding; ``batch_size`` is checked when given.

    >>> check_sampling(max_new_tokens=8, temperature=0.0, top_p=1.0, batch_size=4)
    >>> check_sampling(max_new_tokens=8, temperature=1.0, top_p=0.0)
    Traceback (most recent call last):
    ...
    bupo_core.errors.InputFormatError: top_p must be in (0, 1], got 0.0
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise InputFormatError(f"max_new_tokens must be >= 1, got {max_new_tokens!r}")
    if not isinstance(temperature, (int, float)) or not math.isfinite(temperature) or temperature < 0:
        raise InputFormatError(f"temperature must be a finite number >= 0 (0 = greedy decoding), got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and math.isfinite(top_p) and 0 < top_p <= 1):
        raise InputFormatError(f"top_p must be in (0, 1], got {top_p!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InputFormatError(f"batch_size must be >= 1, got {batch_size!r}")


@dataclass
class SamplingFields:
    """How responses are sampled (inherited by every config that samples).

    Attributes:
        max_new_tokens: response length limit in tokens.
        temperature: sampling temperature (the paper: 1.0; 0 = greedy decoding).
        top_p: nucleus sampling mass (1.0 = off, the paper's setting).
    """

    max_new_tokens: int = MAX_NEW_TOKENS_SAMPLER
    temperature: float = PAPER_TEMPERATURE
    top_p: float = PAPER_TOP_P

    def check_sampling_fields(self, batch_size: int | None = None) -> None:
        """Validate the sampling fields (see :func:`check_sampling`)."""
        check_sampling(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, batch_size=batch_size
        )
