"""Models: encoders, heads and architectures, built by name with :func:`create_model`."""

from medcl.models.cogaze import CoGazeModel
from medcl.models.factory import create_model, list_models, model_config
from medcl.models.image_text import ImageTextModel
from medcl.models.outputs import EncoderOutput
from medcl.models.weights import KeyMatchReport, load_matching_state_dict

__all__ = [
    "CoGazeModel",
    "EncoderOutput",
    "ImageTextModel",
    "KeyMatchReport",
    "create_model",
    "list_models",
    "load_matching_state_dict",
    "model_config",
]
