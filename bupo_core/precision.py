"""Compute precision chosen by the card: bf16, fp16 with loss scaling, or float32.

One decision, written once (:func:`choose_precision`), from the CUDA compute capability:

* ``(8, 0)`` and newer (A100, A10, L4, RTX 30xx/40xx, H100): native bfloat16 -> ``"bf16"`` autocast;
* older cards (T4 = (7, 5), V100 = (7, 0), P100 = (6, 0)): no native bf16 -> ``"fp16"`` autocast with
  dynamic loss scaling (:class:`torch.amp.GradScaler`);
* no GPU -> ``"fp32"``.

``torch.cuda.is_bf16_supported()`` is NOT used: in the torch versions we pin it answers True on a T4
(sm_75), where bf16 runs through slow emulation. The capability is what the hardware has.

Whatever the mode, training keeps float32 master weights and the policy head (log-probs, ratios,
entropies, lens statistics) runs in float32 with autocast disabled (:mod:`bupo_core.policy_head`);
only the transformer blocks run in the reduced dtype.

``BUPO_SIMULATE_DTYPE=bfloat16|float16`` makes a CPU run compute as a GPU run would: models load
in that dtype (:func:`bupo_core.runtime.default_dtype`) and the trainer's ``precision="auto"``
takes that CPU autocast over its float32 master weights (:func:`simulated_dtype`);
:mod:`bupo_core.tolerances` then widens the notebooks' numeric checks to the dtype in use.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from .errors import InputFormatError

Precision = Literal["bf16", "fp16", "fp32"]
PRECISION_SETTINGS: tuple[str, ...] = ("auto", "bf16", "fp16", "fp32")
NATIVE_BF16_CAPABILITY = (8, 0)
SIMULATE_ENV = "BUPO_SIMULATE_DTYPE"
SIMULATE_CHOICES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
COMPUTE_DTYPE: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def choose_precision(capability: tuple[int, int] | None) -> Precision:
    """The compute precision for a CUDA card of compute capability ``(major, minor)``; ``None`` = no GPU.

    >>> choose_precision((9, 0)), choose_precision((8, 0)), choose_precision((7, 5)), choose_precision(None)
    ('bf16', 'bf16', 'fp16', 'fp32')
    """
    if capability is None:
        return "fp32"
    major, minor = (int(x) for x in capability)
    return "bf16" if (major, minor) >= NATIVE_BF16_CAPABILITY else "fp16"


def precision_reason(capability: tuple[int, int] | None, name: str | None = None) -> str:
    """One line saying why :func:`choose_precision` chose what it chose.

    >>> precision_reason((7, 5), "Tesla T4")
    'Tesla T4 (compute capability 7.5) has no native bfloat16 (needs >= 8.0): fp16 autocast with dynamic loss scaling'
    """
    if capability is None:
        return "no CUDA GPU: float32 compute"
    card = f"{name + ' ' if name else ''}(compute capability {capability[0]}.{capability[1]})"
    if choose_precision(capability) == "bf16":
        return f"{card} has native bfloat16: bf16 autocast"
    return f"{card} has no native bfloat16 (needs >= 8.0): fp16 autocast with dynamic loss scaling"


def cuda_capability(device: torch.device | str | None) -> tuple[int, int] | None:
    """The compute capability of ``device`` when it is a visible CUDA GPU, else ``None``."""
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return tuple(torch.cuda.get_device_capability(dev))  # type: ignore[return-value]


def cuda_name(device: torch.device | str | None) -> str | None:
    """The GPU's name (``"Tesla T4"``) or ``None`` off CUDA."""
    dev = torch.device(device) if device is not None else None
    if dev is None or dev.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(dev)


def check_precision(setting: str) -> str:
    """Validate a ``precision`` setting (``auto|bf16|fp16|fp32``) and return it."""
    if setting not in PRECISION_SETTINGS:
        raise InputFormatError(
            f"precision must be one of {', '.join(PRECISION_SETTINGS)} (auto = bf16 on cards with compute capability >= 8.0, "
            f"fp16 with loss scaling on older cards such as the T4, fp32 without a GPU), got {setting!r}"
        )
    return setting


@dataclass(frozen=True)
class PrecisionChoice:
    """A resolved precision: the mode, where it runs and why.

    Attributes:
        mode: ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        device_type: ``"cuda"``, ``"cpu"``, ... (the autocast device).
        reason: one line for the start-of-run message.
        capability: the card's compute capability, ``None`` off CUDA.
    """

    mode: Precision
    device_type: str
    reason: str
    capability: tuple[int, int] | None = None

    @property
    def compute_dtype(self) -> torch.dtype:
        return COMPUTE_DTYPE[self.mode]

    def autocast(self) -> AbstractContextManager[Any]:
        """The autocast region of this mode (a no-op for fp32)."""
        return autocast_context(self.mode, self.device_type)

    def message(self) -> str:
        return f"[bupo] precision: {self.mode} ({self.reason})"


def resolve_precision(
    setting: str, device: torch.device | str, *, capability: tuple[int, int] | None | str = "detect"
) -> PrecisionChoice:
    """Resolve ``auto|bf16|fp16|fp32`` for ``device``.

    ``"auto"`` calls :func:`choose_precision` on the card's capability (``capability`` overrides the
    detection: tests fake a T4 with ``(7, 5)``); on the CPU with ``BUPO_SIMULATE_DTYPE`` set it takes
    that dtype (the notebooks' switch). An explicit mode is taken as asked; bf16 asked for on
    a card without native bf16 is allowed (it runs, emulated) but the reason says so.
    """
    check_precision(setting)
    dev = torch.device(device)
    cap = cuda_capability(dev) if capability == "detect" else capability
    if setting == "auto":
        mode = choose_precision(cap)  # type: ignore[arg-type]
        reason = "auto: " + precision_reason(cap, cuda_name(dev))  # type: ignore[arg-type]
        if cap is None and dev.type != "cuda":
            reason = f"auto: no CUDA GPU (device {dev.type}): float32 compute"
            if simulated_precision() != "fp32" and dev.type == "cpu":  # the notebooks' GPU-dtype switch
                mode = simulated_precision()
                reason = (
                    f"auto: {SIMULATE_ENV}={os.environ[SIMULATE_ENV].strip()}: "
                    f"CPU autocast in {COMPUTE_DTYPE[mode]}, as a GPU run would"
                )
    else:
        mode = setting  # type: ignore[assignment]
        reason = f"asked for --precision {setting}"
        if setting == "bf16" and cap is not None and choose_precision(cap) != "bf16":  # type: ignore[arg-type]
            reason += f"; this card (compute capability {cap[0]}.{cap[1]}) emulates bf16 slowly, fp16 is faster"  # type: ignore[index]
        if setting != "fp32" and dev.type == "cpu":
            reason += f"; CPU autocast in {COMPUTE_DTYPE[setting]} (simulates a GPU run)"
    return PrecisionChoice(mode, dev.type, reason, cap)  # type: ignore[arg-type]


def autocast_context(mode: str, device_type: str) -> AbstractContextManager[Any]:
    """``torch.autocast(device_type, dtype)`` for bf16/fp16; a null context for fp32.

    >>> with autocast_context("bf16", "cpu"):
    ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
    torch.bfloat16
    """
    if mode == "fp32":
        return nullcontext()
    if device_type not in ("cuda", "cpu"):
        return nullcontext()
    return torch.autocast(device_type, dtype=COMPUTE_DTYPE[mode])


@dataclass
class LossScaler:
    """The update side of a precision: dynamic loss scaling for fp16, plain backward otherwise.

    Used by the training step as::

        scaler.backward(loss)            # scaled for fp16
        scaler.unscale_(optimizer)       # before clipping: the true gradients
        ...clip, check finite...
        scaler.step(optimizer)           # then scaler.update() adjusts the scale
        # or, for a non-finite gradient: scaler.skip() (halves the scale for fp16)

    Attributes:
        mode: ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        device_type: where the gradients live (``"cuda"``, ``"cpu"``).
        init_scale: the first fp16 loss scale (torch's default 2**16).
        device: the exact device (``"cuda:1"``) when not the default one of ``device_type``.
    """

    mode: str
    device_type: str = "cpu"
    init_scale: float = 2.0**16
    device: str | None = None
    _scaler: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode == "fp16":
            self._scaler = torch.amp.GradScaler(self.device_type, init_scale=self.init_scale)
            # create the scale and growth tensors now (torch makes them at the first scale() call),
            # so that skip(), unscale_() and load_state_dict() work before any backward
            self._scaler.scale(torch.zeros((), device=self.device or self.device_type))

    @property
    def enabled(self) -> bool:
        return self._scaler is not None

    @property
    def scale(self) -> float:
        """The current loss scale (1.0 without scaling)."""
        return float(self._scaler.get_scale()) if self.enabled else 1.0

    def backward(self, loss: torch.Tensor) -> None:
        (self._scaler.scale(loss) if self.enabled else loss).backward()

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if self.enabled:
            self._scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.enabled:
            self._scaler.step(optimizer)
            self._scaler.update()
        else:
            optimizer.step()

    def skip(self) -> None:
        """A step skipped for a non-finite gradient: fp16 lowers the scale (the overflow's usual cause)."""
        if self.enabled:
            self._scaler.update(self.scale / 2.0)

    def state_dict(self) -> dict:
        """JSON-able state (the fp16 scale and its growth counter) for checkpoints."""
        return {"mode": self.mode, **({"scaler": self._scaler.state_dict()} if self.enabled else {})}

    def load_state_dict(self, state: dict) -> None:
        if self.enabled and state.get("scaler"):
            self._scaler.load_state_dict(dict(state["scaler"]))


def load_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype to load a model in on ``device``: bf16 on cards with native bf16, else float32.

    fp16 cards (T4) load float32 weights and compute in fp16 under autocast: the un-normed residual
    stream, which the internal policies read, can exceed fp16's range (65,504) when stored in fp16.
    """
    dev = torch.device(device)
    return torch.bfloat16 if choose_precision(cuda_capability(dev)) == "bf16" else torch.float32


# --------------------------------------------------------------------------- notebooks: the GPU-dtype switch
def simulated_dtype() -> torch.dtype | None:
    """The dtype of ``BUPO_SIMULATE_DTYPE`` (``bfloat16`` / ``float16``), or ``None`` when unset.

    An unknown value raises :class:`~bupo_core.errors.InputFormatError` naming the choices.
    """
    raw = os.environ.get(SIMULATE_ENV, "").strip().lower()
    if raw in ("", "0", "none", "float32", "off"):
        return None
    if raw not in SIMULATE_CHOICES:
        raise InputFormatError(f"{SIMULATE_ENV}={raw!r}: use bfloat16 or float16 (or unset it for float32)")
    return SIMULATE_CHOICES[raw]


def simulated_precision() -> Precision:
    """``"bf16"``, ``"fp16"`` or ``"fp32"``: the precision the notebooks run in (see :func:`simulated_dtype`)."""
    dt = simulated_dtype()
    return "fp32" if dt is None else ("bf16" if dt == torch.bfloat16 else "fp16")
