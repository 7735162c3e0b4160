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
import inspect
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from medcl.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}
# Architectures whose JSON keys are exactly the keyword arguments of one class: its import path (MONAI bundles name
# the network by it, so a bundle needs no medcl to run).
_TARGETS: dict[str, str] = {}


def register_architecture(
    name: str, target: str | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a builder for ``"architecture": name``; ``target``: the class it builds with the same arguments."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHITECTURES[name] = builder
        if target is not None:
            _TARGETS[name] = target
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
    return build_model(model_config(name, **overrides), name=name)


def build_model(config: Mapping[str, Any], name: str | None = None) -> nn.Module:
    """Build a resolved model config (what :func:`model_config` returns: ``architecture`` plus its arguments).

    This is the one way any config, including one read from a logged model, becomes a module: only registered
    architectures can be built, so a config cannot name a class to import.
    """
    spec = dict(config)
    architecture = spec.pop("architecture", None)
    _register_builtin()
    if architecture not in _ARCHITECTURES:
        what = f"model {name!r}" if name else "model config"
        raise ConfigError(f"{what}: architecture {architecture!r} unknown; have {sorted(_ARCHITECTURES)}")
    return _ARCHITECTURES[architecture](**spec)


def with_defaults(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` plus every argument of its builder left at the builder's default, so the spec says everything
    (a bundle that names the target class must not fall back to that class's own, different defaults)."""
    _register_builtin()
    builder = _ARCHITECTURES.get(config.get("architecture"))
    if builder is None:
        raise ConfigError(f"architecture {config.get('architecture')!r} unknown; have {sorted(_ARCHITECTURES)}")
    defaults = {
        name: parameter.default
        for name, parameter in inspect.signature(builder).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }
    complete = {**defaults, **config}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in complete.items()}


def architecture_target(architecture: str) -> str:
    """The class an architecture builds with its JSON keys as arguments (``monai.networks.nets.BasicUNet``)."""
    _register_builtin()
    if architecture not in _TARGETS:
        raise ConfigError(f"architecture {architecture!r} has no single target class (known: {sorted(_TARGETS)})")
    return _TARGETS[architecture]


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
