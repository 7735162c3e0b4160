"""Hugging Face files (configs, weights, tokenizers) from the local cache or a folder, with one clear error.

medcl never downloads at run time (``HF_HUB_OFFLINE=1`` unless the user says otherwise), so a model that names hub
weights the machine does not have fails with one sentence naming the model and the two ways out, instead of a long
transformers traceback. ``pretrained: false`` builds the same architecture with random weights: its config comes
from the cache when there, otherwise from the model type's defaults (``model_type`` in the model JSON), and a
tokenizer that is not local is replaced by one that ships with medcl (logged), so paper-scale configs instantiate on
any machine for smoke tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)


def missing_from_hub(what: str, name_or_path: str) -> ConfigError:
    return ConfigError(
        f"{what} {name_or_path!r} needs Hugging Face files that are not on this machine: run once with "
        "HF_HUB_OFFLINE=0 and hub access to cache them (or set name_or_path to a local folder), or set "
        '"pretrained": false in the model config to build it with random weights'
    )


def from_hub(what: str, load: Callable[..., Any], name_or_path: str, *args: Any, **kwargs: Any) -> Any:
    """``load(name_or_path, ...)`` (an HF ``from_pretrained``) with :func:`missing_from_hub` as its only error
    for files that are not local; a local folder that does not load is an error naming the folder."""
    try:
        return load(name_or_path, *args, **kwargs)
    except OSError as err:
        if Path(name_or_path).is_dir():
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise InvalidInputError(name_or_path, f"cannot load the {what} from this folder ({reason})") from None
        raise missing_from_hub(what, name_or_path) from None


def is_local(name_or_path: str, probe: Callable[[str], Any]) -> bool:
    """Whether ``probe(name_or_path)`` (e.g. ``AutoConfig.from_pretrained``) finds the files without a hub."""
    try:
        probe(name_or_path)
    except (OSError, ConfigError):
        return False
    return True


def random_init_config(what: str, name_or_path: str, model_type: str | None, **overrides: Any) -> Any:
    """The config of a randomly initialised model: the named one when local, else ``model_type``'s defaults."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, **overrides)
    except OSError:
        if model_type is None:
            raise missing_from_hub(what, name_or_path) from None
        log.info("%s %r is not local: random weights on %s defaults", what, name_or_path, model_type)
        return AutoConfig.for_model(model_type, **overrides)
