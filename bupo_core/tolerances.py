"""Numeric agreement checks whose tolerance follows the dtype in use.

The notebooks build each quantity by hand and assert that the library agrees. On a CPU the model
runs in float32 and the two agree to ~1e-6; on a GPU it runs in bf16 (:func:`bupo_core.models.
load_model`'s default there), whose 8 significant bits make two mathematically equal computations
differ by about 2^-8 relative, and logits of magnitude ~30 rounded to bf16 by ~0.06 nats. One rule,
used by every notebook assert through :func:`tolerance` / :func:`assert_close`:

* float32 / float64: the tolerance written at the call site (the float32 one) is used as is;
* bfloat16: at least ``atol = 0.1`` and ``rtol = 0.02`` (a few bf16 steps of an O(1)..O(10)
  quantity: probabilities, nats, relative errors; a bf16 lm_head's log-probs are off by up to
  ~0.06 nats at logits of ~30, see ``tests/test_checks.py``);
* float16: at least ``atol = 0.02`` and ``rtol = 0.005`` (3 more mantissa bits than bf16).

An ``rtol`` of 0 at the call site stays 0 (the check is absolute in every dtype).

A quantity computed from logits that a low-precision ``lm_head`` rounded gets a bound derived from
the rounding itself (:func:`logit_rounding_atol`), which grows with the logits' magnitude.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# (atol floor, rtol floor) for dtypes with fewer mantissa bits than float32
LOW_PRECISION_FLOORS: dict[torch.dtype, tuple[float, float]] = {
    torch.bfloat16: (1e-1, 2e-2),
    torch.float16: (2e-2, 5e-3),
}


@dataclass(frozen=True)
class Tolerance:
    """``|actual - expected| <= atol + rtol * |expected|`` (the rule of :func:`torch.allclose`)."""

    atol: float
    rtol: float


def tolerance(dtype: torch.dtype | str, atol: float = 1e-5, rtol: float = 0.0) -> Tolerance:
    """The tolerance for a comparison of numbers computed in ``dtype``.

    Args:
        dtype: the model's dtype (``model.dtype``), or its name.
        atol, rtol: the float32 tolerance of this comparison.

    Returns:
        ``(atol, rtol)`` unchanged for float32/float64; raised to the floors of
        :data:`LOW_PRECISION_FLOORS` for bf16/fp16 (``rtol=0`` stays 0).

    >>> tolerance(torch.float32, atol=1e-4)
    Tolerance(atol=0.0001, rtol=0.0)
    >>> tolerance(torch.bfloat16, atol=1e-4, rtol=1e-5)
    Tolerance(atol=0.1, rtol=0.02)
    >>> tolerance("float16", atol=1e-4).atol
    0.02
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    floors = LOW_PRECISION_FLOORS.get(dtype)  # type: ignore[arg-type]
    if floors is None:
        return Tolerance(float(atol), float(rtol))
    return Tolerance(max(float(atol), floors[0]), max(float(rtol), floors[1]) if rtol else 0.0)


def logit_rounding_atol(dtype: torch.dtype | str, logits: torch.Tensor) -> float:
    """Largest change of any log-softmax entry when ``logits`` are rounded to ``dtype``: ``2 u max|z|``.

    Rounding to nearest moves each logit by at most ``u |z|`` (``u`` = the unit roundoff,
    ``finfo(dtype).eps / 2``: 2^-8 for bf16, 2^-11 for fp16, 2^-24 for float32); a log-softmax entry
    ``z_t - logsumexp(z)`` then moves by at most ``u |z_t| + u max|z|``.

    >>> round(logit_rounding_atol(torch.bfloat16, torch.tensor([30.0, -12.0])), 4)
    0.2344
    >>> logit_rounding_atol("float32", torch.tensor([30.0])) < 1e-5
    True
    """
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    u = torch.finfo(dtype).eps / 2  # type: ignore[arg-type]
    return 2 * u * float(logits.detach().abs().max()) if logits.numel() else 0.0


def assert_close(
    actual: torch.Tensor | float,
    expected: torch.Tensor | float,
    *,
    dtype: torch.dtype | str,
    what: str,
    atol: float = 1e-5,
    rtol: float = 0.0,
) -> float:
    """Assert that ``actual`` agrees with ``expected`` within :func:`tolerance` ``(dtype, atol, rtol)``.

    Args:
        actual, expected: tensors (broadcastable) or numbers.
        dtype: the dtype the numbers were computed in (``model.dtype``).
        what: what is compared, for the message.
        atol, rtol: the float32 tolerance.

    Returns:
        The largest absolute difference (to print).

    Raises:
        AssertionError: naming ``what``, the largest difference, the tolerance and the dtype.

    >>> assert_close(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0 + 1e-7]), dtype=torch.float32, what="x")
    0.0
    >>> round(assert_close(1.0, 1.03, dtype=torch.bfloat16, what="x"), 3)  # within bf16's floor
    0.03
    """
    a = torch.as_tensor(actual, dtype=torch.float64).detach().cpu()
    e = torch.as_tensor(expected, dtype=torch.float64).detach().cpu()
    tol = tolerance(dtype, atol, rtol)
    diff = (a - e).abs()
    bad = diff > tol.atol + tol.rtol * e.abs()
    err = float(diff.max()) if diff.numel() else 0.0
    if bool(bad.any()) or not bool(torch.isfinite(a).all()):
        raise AssertionError(
            f"{what}: largest difference {err:.3g} exceeds the {dtype} tolerance atol={tol.atol:g}, rtol={tol.rtol:g} "
            f"({int(bad.sum())} of {bad.numel()} values)"
        )
    return err
