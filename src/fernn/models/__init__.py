"""Models built on FlowRNN, and a registry of them by name.

    >>> from fernn.models import get_model, list_models
    >>> model = get_model("fernn_predictor", hidden_channels=16, max_speed=1)
"""

from ._classifier import CNN3DClassifier, SequenceClassifier
from ._predictor import READOUTS, EquivariantDecoder, NextStepPredictor, conv_decoder
from ._registry import get_model, list_models, model_class, model_options, register_model
from ._world import WorldModel, to_world

__all__ = [
    "CNN3DClassifier",
    "NextStepPredictor",
    "SequenceClassifier",
    "WorldModel",
    "conv_decoder",
    "EquivariantDecoder",
    "READOUTS",
    "get_model",
    "list_models",
    "model_class",
    "model_options",
    "register_model",
    "to_world",
]
