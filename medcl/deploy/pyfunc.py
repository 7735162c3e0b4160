"""The base of medcl's MLflow pyfunc models and the one safe way to load a model folder.

A medcl model in MLflow is a *models-from-code* pyfunc: the artifact holds a two-line loader script, JSON configs
(architecture, preprocessing, class names) and tensors saved with ``torch.save``. Every wrapper takes the same input,
a DataFrame with columns ``content`` (the file's bytes: DICOM, NIfTI, PNG or JPEG) and ``filename`` (only its suffix
is used), so ``mlflow models serve``, ``mlflow.pyfunc.load_model(...).predict`` and ``medcl serve`` decode uploads
with :func:`medcl.data.uploads.read_upload` and preprocess exactly as training did.

Model folders are untrusted input. :func:`load_model_folder` never runs the loader script (``mlflow.pyfunc.load_model``
would): it reads ``MLmodel`` as YAML, picks the wrapper class from medcl's own table of kinds, refuses artifact paths
that leave the folder, and the wrappers read tensors with ``torch.load(weights_only=True)`` and build networks only
through medcl's architecture registry.
"""

from __future__ import annotations

import importlib
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import torch
import yaml
from monai.data import MetaTensor

from medcl.data.uploads import ImageLimits, read_upload
from medcl.errors import ConfigError, InvalidInputError, MedclError

# kind -> module defining its wrapper; imported on first use so loading one kind does not import the others.
KIND_MODULES = {
    "image_text": "medcl.deploy.image_text",
    "segmentation": "medcl.deploy.segmentation",
    "report": "medcl.deploy.report",
}
_WRAPPERS: dict[str, type[MedclPyfunc]] = {}

LOADER = """\
# Written by medcl.deploy: MLflow models-from-code loader (no pickled objects in this model).
import mlflow
from medcl.deploy.pyfunc import wrapper_class

mlflow.models.set_model(wrapper_class({kind!r})())
"""


class NonFiniteOutputError(MedclError):
    """A model produced NaN or infinite values. Uploads are refused when their pixels are not finite, and a model is
    refused at load when its own input example gives such values (:meth:`MedclPyfunc.self_check`), so at request
    time it means an input the model cannot handle (values far outside what it was trained on)."""


def require_finite(values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` unchanged if all finite; otherwise :class:`NonFiniteOutputError` naming ``what`` (never a null
    or NaN in a response)."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int(finite.numel() - finite.sum())
        raise NonFiniteOutputError(f"the model produced {bad:,} NaN or infinite value(s) in its {what}")
    return values


@dataclass
class Payload:
    """What one task logs: its ``kind``, the JSON ``config``, tensor files (name -> dict of tensors), an input
    ``example`` (bytes, file name) and ``folders`` logged as they are (HF configs and tokenizers)."""

    kind: str
    config: dict[str, Any]
    tensors: dict[str, dict[str, Any]]
    example: tuple[bytes, str]
    folders: dict[str, Path] = field(default_factory=dict)


def register_kind(cls: type[MedclPyfunc]) -> type[MedclPyfunc]:
    _WRAPPERS[cls.kind] = cls
    return cls


def wrapper_class(kind: str) -> type[MedclPyfunc]:
    """The wrapper class of ``kind``; only medcl's own kinds exist (a model folder cannot name a class)."""
    if kind not in KIND_MODULES:
        raise ConfigError(f"unknown medcl model kind {kind!r}; known: {', '.join(sorted(KIND_MODULES))}")
    importlib.import_module(KIND_MODULES[kind])
    return _WRAPPERS[kind]


class MedclPyfunc(mlflow.pyfunc.PythonModel):
    """Shared pyfunc behaviour: upload decoding, per-row prediction, a PHI-free description.

    Subclasses set ``kind`` and ``capabilities`` (what ``medcl serve`` exposes: ``embed``, ``zero-shot``,
    ``segment``, ``report``) and implement ``load`` and ``predict_image``.
    """

    kind: ClassVar[str] = ""
    capabilities: ClassVar[tuple[str, ...]] = ()
    voi_lut: ClassVar[bool] = False

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}
        self.limits = ImageLimits()

    def load_context(self, context: Any) -> None:
        self.load(dict(context.artifacts))

    def load(self, artifacts: Mapping[str, str]) -> None:
        self.config = json.loads(Path(artifacts["config"]).read_text())
        if self.config.get("kind") != self.kind:
            raise ConfigError(f"artifact of kind {self.config.get('kind')!r} given to the {self.kind!r} wrapper")

    def decode(self, content: bytes, filename: str) -> MetaTensor:
        return read_upload(content, filename, voi_lut=self.voi_lut, limits=self.limits)

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        raise NotImplementedError

    def self_check(self) -> None:
        """Run the model once on a built-in example; raises :class:`NonFiniteOutputError` for a model with NaN or
        infinite outputs (e.g. registered after a diverged training), so a service refuses it at load."""

    # Inference entry points disable autograd themselves: grad mode is per thread, and the service calls them from
    # worker threads (a global switch at load time would only reach the loading thread).
    @torch.no_grad()
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        rows = [self.predict_image(self.decode(c, f)) for c, f in zip(model_input["content"], model_input["filename"])]
        return pd.DataFrame(rows)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "capabilities": list(self.capabilities), "name": self.config.get("name")}


def load_tensors(path: str | Path) -> dict[str, Any]:
    """A tensor artifact: ``torch.load(weights_only=True)``, so a crafted file cannot run code."""
    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # pickle refusals, corrupt archives
        raise InvalidInputError(path, f"not a plain tensor file ({type(err).__name__}: {err})") from None


def _artifact_paths(folder: Path) -> dict[str, str]:
    """``MLmodel``'s pyfunc artifacts as local paths inside ``folder`` (YAML read safely, no path escapes it)."""
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        raise InvalidInputError(folder, "not an MLflow model folder (no MLmodel file)")
    try:
        spec = yaml.safe_load(mlmodel.read_text())
    except yaml.YAMLError as err:
        raise InvalidInputError(mlmodel, f"not valid YAML ({err})") from None
    artifacts = ((spec or {}).get("flavors") or {}).get("python_function", {}).get("artifacts")
    if not isinstance(artifacts, Mapping) or "config" not in artifacts:
        raise InvalidInputError(folder, "not a medcl model (its MLmodel lists no medcl config artifact)")
    root = folder.resolve()
    paths = {}
    for name, entry in artifacts.items():
        relative = entry.get("path") if isinstance(entry, Mapping) else None
        local = (root / str(relative)).resolve()
        if not isinstance(relative, str) or not local.is_relative_to(root):
            raise InvalidInputError(folder, f"artifact {name!r} points outside the model folder")
        paths[str(name)] = str(local)
    return paths


def load_model_folder(uri: str, *, download: Callable[[str], str] | None = None) -> MedclPyfunc:
    """A medcl pyfunc from a model folder or MLflow model URI, without running any code the model carries.

    ``uri``: a local folder, or anything MLflow resolves (``models:/name@alias``, ``runs:/<id>/model``,
    ``models:/m-...``), whose files are downloaded first (``download``: ``mlflow.artifacts.download_artifacts``).
    """
    folder = Path(uri)
    if not folder.is_dir():
        fetch = download or (lambda u: mlflow.artifacts.download_artifacts(artifact_uri=u))
        try:
            folder = Path(fetch(uri))
        except mlflow.exceptions.MlflowException as err:
            raise ConfigError(f"{uri}: {err.message}") from None
    artifacts = _artifact_paths(folder)
    try:
        kind = json.loads(Path(artifacts["config"]).read_text()).get("kind")
    except (OSError, json.JSONDecodeError, AttributeError) as err:
        raise InvalidInputError(artifacts["config"], f"not a medcl model config ({err})") from None
    wrapper = wrapper_class(str(kind))()
    wrapper.load(artifacts)
    return wrapper


def example_png(size: int = 64) -> bytes:
    """A small grey PNG with structure (input examples, tests, load runs)."""
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size]
    pixels = (127 + 100 * np.sin(x / 7.0) * np.cos(y / 9.0)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def example_nifti(channels: int = 1) -> bytes:
    """A small float NIfTI-1 volume (24 x 24 x 16, 1.5 x 1.5 x 2 mm)."""
    grid = np.mgrid[0:24, 0:24, 16:32].astype(np.float32)
    volume = 200.0 * np.cos(grid[0] / 5) * np.sin(grid[1] / 4) + grid[2] * 10 - 100
    array = volume if channels == 1 else np.stack([volume] * channels, axis=-1)
    image = nib.Nifti1Image(array.astype(np.float32), np.diag([1.5, 1.5, 2.0, 1.0]))
    raw = io.BytesIO()
    image.to_file_map(nib.Nifti1Image.make_file_map({"image": raw, "header": raw}))
    return raw.getvalue()
