"""Models by name (open_clip/timm style): ``create_model("clip-cxr-demo", embed_dim=64)``.

Each name is a small JSON file in ``medcl/models/configs/``::

    {"architecture": "image_text",
     "image": {"type": "monai_resnet", "depth": 10, ...},
     "text": {"type": "hf", "name_or_path": "minilm", ...},
     "embed_dim": 128, "projection": "mlp"}

Overrides are merged recursively into the JSON, so configs stay small and experiments stay one flag away.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from medcl.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHITECTURES[name] = builder
        return builder

    return decorate


def list_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; override values win."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_config(name: str, **overrides: Any) -> dict[str, Any]:
    path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return merge(json.loads(path.read_text()), overrides)


def build_component(spec: dict[str, Any], registry: dict[str, type[nn.Module]], what: str) -> nn.Module:
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in registry:
        raise ConfigError(f"{what} type {kind!r} unknown; available: {', '.join(sorted(registry))}")
    return registry[kind](**spec)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build model ``name`` from its JSON config merged with ``overrides``."""
    config = model_config(name, **overrides)
    architecture = config.pop("architecture", None)
    _register_builtin()
    if architecture not in _ARCHITECTURES:
        raise ConfigError(f"model {name!r}: architecture {architecture!r} unknown; have {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[architecture](**config)


# Modules whose @register_architecture decorators define the built-in architectures; imported on first use so
# `import medcl.models` stays light and any model name works without importing its task first.
ARCHITECTURE_MODULES = (
    "medcl.models.image_text",
    "medcl.models.cogaze",
    "medcl.models.volume",
    "medcl.models.report_generator",
)


def _register_builtin() -> None:
    import importlib

    for module in ARCHITECTURE_MODULES:
        importlib.import_module(module)
