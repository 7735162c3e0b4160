"""Caching of the deterministic part of a MONAI pipeline, keyed on what that part does.

MONAI's ``PersistentDataset`` names a cache file after a hash of the data item plus, optionally, a hash of the
transforms before the first random one. Its stock hashers do not see parameters (``json_hashing`` falls back to
class names) or hash whole pickles (random states, unpicklable lambdas). :func:`transform_fingerprint` describes
each deterministic transform by class and parameters, recursively, plus medcl's loader version, so changing a
parameter (a spacing, an intensity window, the loader) gives new cache keys, while an identical pipeline rebuilt in
another process hits the same files.

Cached items are MetaTensors (``track_meta=True``) read back with ``torch.load(weights_only=True)``, so a cache
file cannot run code when loaded. Since PyTorch 2.6 that fails on the numpy arrays MONAI transforms leave in
metadata and in the applied-operations trace (MONAI then silently recomputes every item, every epoch): the cached
item is therefore converted to tensors and plain types first, and MONAI's ``TraceKeys`` enum is allow-listed.

The metadata holds no patient identifiers (see :mod:`medcl.data.dicom`), but every other field of a data item is
stored too: keep identifiers out of the items you cache.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, MetaTensor, PersistentDataset
from monai.transforms import Compose
from monai.utils.enums import TraceKeys

from medcl.errors import ConfigError

torch.serialization.add_safe_globals([TraceKeys])  # a str enum in MONAI's transform traces; loading it runs no code

MAX_DEPTH = 12
# What a datamodule's ``cache`` setting may say: see cached_dataset.
CACHE_MODES = ("memory", "disk", "none")


def _describe(obj: Any, depth: int = 0, seen: frozenset[int] = frozenset()) -> Any:
    """A JSON-like, process-independent description of ``obj`` (its parameters, not its identity)."""
    if depth > MAX_DEPTH or id(obj) in seen:
        return f"<{type(obj).__qualname__}>"
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return f"{type(obj).__qualname__}.{obj.name}"
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bytes, bytearray)):
        return hashlib.sha256(obj).hexdigest()
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        array = obj.detach().cpu().numpy() if isinstance(obj, torch.Tensor) else obj
        array = np.ascontiguousarray(array)
        return {"dtype": str(array.dtype), "shape": array.shape, "sha256": hashlib.sha256(array.tobytes()).hexdigest()}
    if isinstance(obj, (np.dtype, torch.dtype)):
        return str(obj)
    if isinstance(obj, np.random.RandomState | np.random.Generator | torch.Generator):
        return "<random state>"  # deterministic transforms never draw from it
    inner = seen | {id(obj)}
    if isinstance(obj, (list, tuple)):
        return [_describe(item, depth + 1, inner) for item in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((_describe(item, depth + 1, inner) for item in obj), key=repr)
    if isinstance(obj, dict):
        return {repr(key): _describe(value, depth + 1, inner) for key, value in sorted(obj.items(), key=repr)}
    if isinstance(obj, functools.partial):
        return {"partial": _describe(obj.func, depth + 1, inner), "args": _describe(obj.args, depth + 1, inner),
                "keywords": _describe(obj.keywords, depth + 1, inner)}  # fmt: skip
    if isinstance(obj, (types.FunctionType, types.MethodType)):
        function = obj.__func__ if isinstance(obj, types.MethodType) else obj
        code = function.__code__
        body = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()
        return {"function": f"{function.__module__}.{function.__qualname__}", "code": body}
    if isinstance(obj, type) or (callable(obj) and not hasattr(obj, "__dict__")):
        return f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    if hasattr(obj, "__dict__"):
        description = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
        version = getattr(type(obj), "cache_version", None)
        if version is not None:
            description["cache_version"] = version
        state = {key: value for key, value in vars(obj).items() if key != "R"}
        description["state"] = _describe(state, depth + 1, inner)
        return description
    return f"<{type(obj).__qualname__}>"


def transform_fingerprint(transforms: Sequence[Callable] | Callable) -> bytes:
    """SHA-256 (hex, as bytes) of the transforms' classes and parameters; a ``hash_transform`` for MONAI."""
    if isinstance(transforms, Compose):
        transforms = transforms.flatten().transforms
    if callable(transforms) and not isinstance(transforms, Sequence):
        transforms = [transforms]
    description = repr([_describe(transform) for transform in transforms])
    return hashlib.sha256(description.encode("utf-8")).hexdigest().encode("utf-8")


def _weights_only_safe(value: Any) -> Any:
    """numpy arrays and scalars -> tensors and Python numbers, through dicts, lists and MetaTensor metadata."""
    if isinstance(value, MetaTensor):
        value.meta = _weights_only_safe(dict(value.meta))
        value.applied_operations = _weights_only_safe(list(value.applied_operations))
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: _weights_only_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_weights_only_safe(item) for item in value)
    return value


class WeightsOnlyPersistentDataset(PersistentDataset):
    """``PersistentDataset`` whose cached items load under ``torch.load(weights_only=True)``."""

    def _pre_transform(self, item_transformed: Any) -> Any:
        return _weights_only_safe(super()._pre_transform(item_transformed))


def persistent_dataset(data: Sequence[Any], transform: Compose, cache_dir: str | Path) -> PersistentDataset:
    """On-disk cache of the deterministic prefix of ``transform``; new keys whenever that prefix changes."""
    return WeightsOnlyPersistentDataset(
        data=data,
        transform=transform,
        cache_dir=Path(cache_dir),
        hash_transform=transform_fingerprint,
        track_meta=True,
        weights_only=True,
    )


def in_memory_dataset(
    data: Sequence[Any], transform: Compose, *, cache_rate: float = 1.0, num_workers: int | None = 0
) -> CacheDataset:
    """RAM cache of the deterministic prefix of ``transform``, filled once at construction."""
    return CacheDataset(data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers, progress=True)


def check_cache_mode(mode: str) -> None:
    """ConfigError unless ``mode`` is one of :data:`CACHE_MODES` (checked when a datamodule is built, not when its
    first loader is)."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache must be one of {CACHE_MODES}, got {mode!r}")


def cached_dataset(
    data: Sequence[Any], transform: Compose, mode: str, cache_dir: str | Path | None, num_workers: int = 0
) -> Dataset:
    """``data`` through ``transform``, its deterministic prefix cached as ``mode`` says: ``memory``
    (:func:`in_memory_dataset`, filled by ``num_workers`` threads, or one per CPU for 0), ``disk``
    (:func:`persistent_dataset` in ``cache_dir``) or ``none``."""
    check_cache_mode(mode)
    if mode == "memory":
        return in_memory_dataset(data, transform, num_workers=num_workers or None)
    if mode == "disk":
        return persistent_dataset(data, transform, cache_dir)
    return Dataset(data, transform)
