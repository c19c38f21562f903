"""bupo_core: internal policies of language models and Bottom-up Policy Optimization (BuPO).

The package behind the BuPO notebooks (arXiv 2512.19673). Layers use the paper's numbering
everywhere: layer 0 is the embedding output H^0, layer l in 1..L the output of block l.
"""

from .adapter import ArchitectureAdapter, FamilySpec, register_family
from .capture import ResidualCapture, capture_residuals, forward_to_layer
from .errors import (
    BupoError,
    ConfigMismatchError,
    InputFormatError,
    LayerOutOfRangeError,
    ModelNotAvailableError,
    UnknownModelError,
    UnsupportedArchitectureError,
)
from .models import DEFAULT_MODEL, known_models, load_model, model_summary, tiny_model

__version__ = "0.1.0"

__all__ = [
    "ArchitectureAdapter",
    "BupoError",
    "ConfigMismatchError",
    "DEFAULT_MODEL",
    "FamilySpec",
    "InputFormatError",
    "LayerOutOfRangeError",
    "ModelNotAvailableError",
    "ResidualCapture",
    "UnknownModelError",
    "UnsupportedArchitectureError",
    "capture_residuals",
    "forward_to_layer",
    "known_models",
    "load_model",
    "model_summary",
    "register_family",
    "register_family",
    "tiny_model",
]
