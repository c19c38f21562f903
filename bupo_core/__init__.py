"""bupo_core: internal policies of language models and Bottom-up Policy Optimization (BuPO).

The package behind the BuPO notebooks (arXiv 2512.19673). Layers use the paper's numbering
everywhere: layer 0 is the embedding output H^0, layer l in 1..L the output of block l.
"""

from .adapter import ArchitectureAdapter, FamilySpec, register_family
from .analysis import AnalysisConfig, EntropyReport, analyse_entropy
from .capture import ResidualCapture, capture_residuals, forward_to_layer
from .entropy import boundary_layer, entropy_change, entropy_from_logits
from .errors import (
    BupoError,
    ConfigMismatchError,
    InputFormatError,
    LayerOutOfRangeError,
    ModelNotAvailableError,
    UnknownModelError,
    UnsupportedArchitectureError,
)
from .evaluate import EvalConfig, evaluate, pass_at_k
from .layer_choice import choose_layer
from .lens import internal_layer_policy, internal_policy_statistics
from .losses import POLICY_LOSSES, PolicyLoss, register_policy_loss
from .models import DEFAULT_MODEL, known_models, load_model, model_summary, tiny_model
from .policy_head import REDUCERS, PolicyHead, Reducer, reduce_policy, register_reducer
from .precision import choose_precision
from .refinement import feature_refinement
from .trainer import TrainConfig, Trainer

__version__ = "0.1.0"

__all__ = [
    "AnalysisConfig",
    "ArchitectureAdapter",
    "EntropyReport",
    "EvalConfig",
    "TrainConfig",
    "Trainer",
    "analyse_entropy",
    "boundary_layer",
    "choose_precision",
    "choose_layer",
    "POLICY_LOSSES",
    "PolicyLoss",
    "register_policy_loss",
    "REDUCERS",
    "PolicyHead",
    "Reducer",
    "reduce_policy",
    "register_reducer",
    "entropy_change",
    "entropy_from_logits",
    "evaluate",
    "feature_refinement",
    "internal_layer_policy",
    "internal_policy_statistics",
    "pass_at_k",
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
    "tiny_model",
]
