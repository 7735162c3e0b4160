"""medcl: contrastive pretraining and fine-tuning for medical images."""

from medcl.errors import ConfigError, InvalidInputError, MedclError

__version__ = "0.1.0"
__all__ = ["ConfigError", "InvalidInputError", "MedclError", "__version__"]
