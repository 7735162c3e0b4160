"""Models in MLflow: pyfunc wrappers that carry their preprocessing, logging, registration with aliases.

A medcl model in MLflow is a *models-from-code* pyfunc: the artifact holds a three-line loader script, JSON
configs (architecture, preprocessing, class names) and tensors saved with ``torch.save``; loading runs no pickle
(weights are read with ``torch.load(weights_only=True)``). Every wrapper takes the same input, a DataFrame with
columns ``content`` (the file's bytes: DICOM, NIfTI, PNG or JPEG) and ``filename`` (only its suffix is used), so
``mlflow models serve``, ``mlflow.pyfunc.load_model(...).predict`` and ``medcl serve`` all decode uploads with
:func:`read_upload` and preprocess exactly as training did.

Kinds:

* ``image_text``: the image tower of an image-text model -> normalised embedding, plus zero-shot finding scores
  from prompt prototypes computed with the trained text tower at logging time (serving needs no tokenizer).
* ``segmentation``: any network mapping a volume to class logits, run by sliding window on the training grid and
  mapped back to the input's geometry -> label map as NIfTI bytes.
* ``report``: a report generator (image-text backbone + cross-attending GPT-2) -> generated report text; the
  Hugging Face configs and tokenizers travel with the model, so loading it reaches for no model hub.

    medcl register --run <run_id> --name cxr-clip --alias champion       # promote a run's logged model
    medcl register --ckpt best.ckpt --name cxr-clip --alias champion      # log a task checkpoint, then register
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import logging
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged
from torch import Tensor, nn

from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)

MODEL_NAME = "model"  # name of the logged model inside its run
DEFAULT_ALIAS = "champion"
UPLOAD_NAME = "upload"  # what errors call an uploaded file: client file names may carry PHI

DICOM_UPLOAD_SUFFIXES = (".dcm", ".dicom", "")
UPLOAD_SUFFIXES = (*DICOM_UPLOAD_SUFFIXES, ".nii", ".nii.gz", ".png", ".jpg", ".jpeg")


class UnsupportedMediaError(InvalidInputError):
    """An upload whose file type medcl does not read (HTTP 415)."""


class ImageTooLargeError(InvalidInputError):
    """An upload whose image dimensions exceed the configured limits (HTTP 413)."""


# ---------------------------------------------------------------------------------------------------------------
# Uploads
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLimits:
    """Largest images decoded, checked from the file header before any pixel is decoded (decompression bombs).

    Args:
        max_pixels: 2-D images (rows x columns x frames for DICOM).
        max_voxels: 3-D/4-D volumes (all spatial axes times channels).
        max_side: longest single axis.
    """

    max_pixels: int = 64 * 2**20
    max_voxels: int = 256 * 2**20
    max_side: int = 16384


def upload_suffix(filename: str) -> str:
    """``"a.NII.GZ"`` -> ``".nii.gz"``; files without a suffix are DICOM (PACS exports often have none)."""
    name = Path(filename or "").name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    suffix = Path(name).suffix
    return suffix if suffix in UPLOAD_SUFFIXES else (suffix or "")


TEXT_VRS = ("AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UT")


def _dicom_strings(ds: Any) -> set[str]:
    """Every textual header value (names, ids, dates, descriptions...), nested sequences included."""
    found: set[str] = set()
    for element in ds.iterall():
        if element.VR in TEXT_VRS and element.value not in (None, ""):
            values = element.value if element.VM > 1 else [element.value]
            found.update(str(v).strip() for v in values)
    return found


def _inspect_header(path: Path, suffix: str) -> tuple[tuple[int, ...] | None, set[str]]:
    """Image dimensions and the header's text values, from the header only (no pixel decoding).

    Dimensions are None when the header is unreadable: the decoder then reports why. The text values are what
    error messages must never repeat (they may hold patient names, ids or dates).
    """
    try:
        if suffix in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                texts = {str(v) for v in image.info.values() if isinstance(v, (str, bytes))}
                return (*image.size, len(image.getbands())), texts
        if suffix in (".nii", ".nii.gz"):
            image = nib.load(path)
            header = image.header
            texts = {
                header[k].item().decode("latin-1", "ignore").strip("\x00 ")
                for k in ("descrip", "aux_file", "intent_name", "db_name")
                if k in header
            }
            return tuple(int(n) for n in image.shape), texts
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        frames = int(ds.get("NumberOfFrames") or 1)
        shape = (int(ds.Rows), int(ds.Columns), max(frames, 1), int(ds.get("SamplesPerPixel") or 1))
        return shape, _dicom_strings(ds)
    except Exception:  # any header problem is reported by load_image with its reason
        return None, set()


def redact(message: str, secrets: set[str]) -> str:
    """``message`` with every header text value of 3+ characters replaced by ``<redacted>`` (longest first)."""
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        message = message.replace(secret, "<redacted>")
    return message


def check_dimensions(shape: Sequence[int], limits: ImageLimits) -> None:
    spatial = [n for n in shape if n > 1]
    total = int(np.prod(spatial)) if spatial else 1
    if any(n > limits.max_side for n in shape):
        raise ImageTooLargeError(UPLOAD_NAME, f"image axis of {max(shape)} exceeds the limit of {limits.max_side}")
    limit = limits.max_voxels if len(spatial) >= 3 else limits.max_pixels
    if total > limit:
        raise ImageTooLargeError(UPLOAD_NAME, f"image of {total:,} pixels/voxels exceeds the limit of {limit:,}")


def read_upload(
    content: bytes, filename: str, *, voi_lut: bool = False, limits: ImageLimits | None = None
) -> MetaTensor:
    """Decode uploaded bytes with :func:`medcl.data.load_image`; errors name ``upload``, never a file name.

    Raises:
        UnsupportedMediaError: a suffix medcl does not read.
        ImageTooLargeError: dimensions over ``limits`` (checked before decoding).
        InvalidInputError: a corrupt, truncated or non-image file, with the decoder's reason.
    """
    from medcl.data.image_io import load_image

    suffix = upload_suffix(filename)
    if suffix not in UPLOAD_SUFFIXES:
        raise UnsupportedMediaError(
            UPLOAD_NAME, f"unsupported file type {suffix!r}; send DICOM (.dcm), NIfTI (.nii, .nii.gz), PNG or JPEG"
        )
    if not content:
        raise InvalidInputError(UPLOAD_NAME, "empty file")
    with tempfile.TemporaryDirectory(prefix="medcl-upload-") as folder:
        path = Path(folder) / f"{UPLOAD_NAME}{suffix}"
        path.write_bytes(content)
        shape, header_text = _inspect_header(path, suffix)
        if shape is not None:
            check_dimensions(shape, limits or ImageLimits())
        try:
            image = load_image(path, voi_lut=voi_lut)
        except InvalidInputError as err:
            reason = redact(err.reason.replace(str(path), UPLOAD_NAME).replace(folder, "."), header_text)
            raise InvalidInputError(UPLOAD_NAME, reason) from None
        check_dimensions(tuple(image.shape), limits or ImageLimits())
    image.meta["filename_or_obj"] = UPLOAD_NAME
    return image


def without_loading(pipeline: Compose) -> Compose:
    """A training pipeline minus its file-loading steps, for images already decoded by :func:`read_upload`."""
    return Compose([t for t in pipeline.transforms if not isinstance(t, LoadImaged)])


# ---------------------------------------------------------------------------------------------------------------
# pyfunc wrappers
# ---------------------------------------------------------------------------------------------------------------


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

    # Inference entry points disable autograd themselves: grad mode is per thread, and the service calls them from
    # worker threads (a global switch at load time would only reach the loading thread).
    @torch.no_grad()
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        rows = [self.predict_image(self.decode(c, f)) for c, f in zip(model_input["content"], model_input["filename"])]
        return pd.DataFrame(rows)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "capabilities": list(self.capabilities), "name": self.config.get("name")}


def _load_tensors(path: str | Path) -> dict[str, Any]:
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def without_pretrained_weights(image: Mapping[str, Any], hf_config_dir: str | Path | None = None) -> dict[str, Any]:
    """An image-encoder spec that builds the architecture only: weights come from the logged state dict, never from
    a hub or a local pretraining checkpoint. ``hf_config_dir``: a saved HF config for ``type: hf`` towers."""
    spec = dict(image)
    if spec.get("type") != "hf":
        spec["checkpoint"] = None
        return spec
    spec["pretrained"] = False
    if hf_config_dir is not None:
        spec["name_or_path"] = str(hf_config_dir)
    return spec


class ImageEmbedder(nn.Module):
    """The image tower of an ``image_text`` model: encoder + projection -> L2-normalised embedding."""

    def __init__(self, image: Mapping[str, Any], embed_dim: int, projection: str = "mlp") -> None:
        super().__init__()
        from medcl.models.factory import build_component
        from medcl.models.heads import ProjectionHead
        from medcl.models.image_encoders import IMAGE_ENCODERS

        self.image_encoder = build_component(without_pretrained_weights(image), IMAGE_ENCODERS, "image encoder")
        self.image_projection = ProjectionHead(self.image_encoder.out_dim, embed_dim, projection)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_projection(self.image_encoder(images).pooled), dim=-1)


def radiograph_tensor(image: MetaTensor, image_size: int) -> Tensor:
    """A decoded upload -> the (1, 1, S, S) tensor the CXR training pipeline produces for evaluation."""
    from medcl.data.cxr import cxr_pipeline

    spatial = tuple(image.shape[1:])
    if len(spatial) == 3 and spatial[2] == 1:
        image = image[..., 0]
    elif len(spatial) != 2:
        raise InvalidInputError(UPLOAD_NAME, f"expected a 2-D radiograph, got an image of shape {spatial}")
    if image.shape[0] == 3:
        image = image.mean(dim=0, keepdim=True)  # RGB exports of grey radiographs
    elif image.shape[0] != 1:
        raise InvalidInputError(UPLOAD_NAME, f"expected a grey or RGB image, got {image.shape[0]} channels")
    out = without_loading(cxr_pipeline(image_size, train=False))({"image": image})["image"]
    return torch.as_tensor(out, dtype=torch.float32)[None]


class ImageTextPyfunc(MedclPyfunc):
    """Embeddings and zero-shot finding scores for 2-D radiographs.

    Artifacts: ``config`` (kind, image tower config, image size, class names, logit scale), ``weights`` (image tower
    state dict), ``prototypes`` (positive/negative prompt embeddings per class).
    """

    kind = "image_text"
    capabilities = ("embed", "zero-shot")
    voi_lut = True  # radiographs: display values through the file's VOI LUT / window

    def load(self, artifacts: Mapping[str, str]) -> None:
        super().load(artifacts)
        cfg = self.config
        self.model = ImageEmbedder(cfg["image"], cfg["embed_dim"], cfg.get("projection", "mlp")).eval()
        self.model.load_state_dict(_load_tensors(artifacts["weights"]))
        prototypes = _load_tensors(artifacts["prototypes"])
        self.positive, self.negative = prototypes["positive"], prototypes["negative"]
        self.classes: list[str] = list(cfg["classes"])

    @torch.no_grad()
    def embed(self, image: MetaTensor) -> Tensor:
        return self.model(radiograph_tensor(image, self.config["image_size"]))[0]

    def zero_shot(self, embedding: Tensor) -> dict[str, float]:
        from medcl.eval.zeroshot import zero_shot_scores

        scores = zero_shot_scores(embedding[None], self.positive, self.negative, self.config["logit_scale"])[0]
        return {name: float(s) for name, s in zip(self.classes, scores)}

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        embedding = self.embed(image)
        return {"embedding": embedding.tolist(), **self.zero_shot(embedding)}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "embed_dim": self.config["embed_dim"],
            "image_size": self.config["image_size"],
            "classes": self.classes,
        }


def build_network(spec: Mapping[str, Any]) -> nn.Module:
    """``{"class_path": "monai.networks.nets.UNet", "init_args": {...}}`` -> module (same syntax as configs)."""
    module_name, _, class_name = str(spec["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"network class {spec['class_path']!r} not importable: {err}") from err
    return cls(**dict(spec.get("init_args") or {}))


def nifti_bytes(label_map: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 of ``label_map`` on ``affine``; a fresh header, so nothing of the input's is copied."""
    dtype = np.uint8 if label_map.max(initial=0) < 256 else np.int16
    image = nib.Nifti1Image(np.asarray(label_map, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    raw = io.BytesIO()
    file_map = nib.Nifti1Image.make_file_map({"image": raw, "header": raw})
    image.to_file_map(file_map)
    import gzip

    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


class SegmentationPyfunc(MedclPyfunc):
    """Label maps for 3-D volumes, on the input's own voxel grid and affine.

    The volume goes through the training preprocessing (:func:`medcl.data.volume.volume_preprocessing`: RAS,
    resampling, intensity window, optional foreground crop and resize), the network runs by MONAI sliding-window
    inference, and MONAI's ``Invertd`` maps the argmax back to the input grid (nearest neighbour). Artifacts:
    ``config`` (network spec, preprocessing, label names) and ``weights``.
    """

    kind = "segmentation"
    capabilities = ("segment",)

    def load(self, artifacts: Mapping[str, str]) -> None:
        from monai.transforms import EnsureTyped

        from medcl.data.volume import volume_preprocessing

        super().load(artifacts)
        self.network = build_network(self.config["network"]).eval()
        self.network.load_state_dict(_load_tensors(artifacts["weights"]))
        pre = SegmentationPreprocess(**self.config["preprocess"])
        self.settings = pre
        steps = volume_preprocessing(
            pixdim=pre.pixdim,
            intensity_range=pre.intensity_range,
            crop_foreground=pre.crop_foreground,
            spatial_size=pre.spatial_size,
        )
        # Loading is done by read_upload; metadata must survive (track_meta) for Invertd to undo every step.
        self.preprocess = Compose([t for t in steps if not isinstance(t, (LoadImaged, EnsureTyped))])

    @torch.no_grad()
    def segment(self, image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
        """-> (label map on the input grid, input affine)."""
        from monai.inferers import sliding_window_inference
        from monai.transforms import Invertd

        spatial = tuple(image.shape[1:])
        if len(spatial) != 3 or min(spatial) < 2:
            raise InvalidInputError(UPLOAD_NAME, f"expected a 3-D volume, got an image of shape {spatial}")
        expected = int(self.config["network"]["init_args"].get("in_channels", 1))
        if image.shape[0] != expected:
            raise InvalidInputError(UPLOAD_NAME, f"the model expects {expected} channel(s), got {image.shape[0]}")
        original_affine = np.asarray(image.affine, dtype=np.float64)
        data = self.preprocess({"image": image})
        pre = self.settings
        logits = sliding_window_inference(
            data["image"][None].float(),
            tuple(pre.roi_size),
            sw_batch_size=pre.sw_batch_size,
            predictor=self.network,
            overlap=pre.overlap,
            padding_mode="constant",
        )
        data["pred"] = MetaTensor(logits[0].argmax(dim=0, keepdim=True).float(), meta=dict(data["image"].meta))
        data["pred"].applied_operations = list(data["image"].applied_operations)
        inverted = Invertd(keys="pred", transform=self.preprocess, orig_keys="image", nearest_interp=True)(data)
        label_map = np.asarray(inverted["pred"][0].round().cpu().numpy(), dtype=np.int16)
        if label_map.shape != spatial:
            raise RuntimeError(f"inverted label map {label_map.shape} does not match the input grid {spatial}")
        return label_map, original_affine

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        label_map, affine = self.segment(image)
        return {"segmentation": nifti_bytes(label_map, affine)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": self.config.get("labels", {})}


@dataclass
class SegmentationPreprocess:
    """The evaluation preprocessing of :class:`medcl.data.volume.SegmentationDataModule` + sliding-window settings."""

    pixdim: tuple[float, ...] | None = (1.5, 1.5, 2.0)
    intensity_range: tuple[float, float] | None = (-175.0, 250.0)
    crop_foreground: float | None = None
    spatial_size: tuple[int, ...] | None = None
    roi_size: tuple[int, ...] = (96, 96, 96)
    sw_batch_size: int = 2
    overlap: float = 0.25


def save_hf_components(generator: nn.Module, root: str | Path) -> None:
    """Write the HF configs and tokenizers a :class:`~medcl.models.report_generator.ReportGenerator` is built from
    under ``root``: ``decoder/``, and ``text/``, ``image/`` for HF backbone towers.

    Rebuilding from these folders (:func:`offline_generator_spec`) needs no model hub and no local pretrained
    files: only the architecture comes from them, the weights from the logged state dict.
    """
    from medcl.models.image_encoders import HFVisionEncoder
    from medcl.models.text_encoders import HFTextEncoder

    root = Path(root)
    generator.decoder.config.save_pretrained(root / "decoder")
    generator.tokenizer.save_pretrained(str(root / "decoder"))
    text = getattr(generator.backbone, "text_encoder", None)
    if isinstance(text, HFTextEncoder):
        text.net.config.save_pretrained(root / "text")  # vocabulary already grown by the section tokens
        text.tokenizer.save_pretrained(str(root / "text"))
    image = generator.backbone.image_encoder
    if isinstance(image, HFVisionEncoder):
        image.net.config.save_pretrained(root / "image")


def resolved_backbone(generator: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a report generator's backbone: its named JSON merged with ``backbone_overrides``."""
    from medcl.models import model_config

    backbone = model_config(generator["backbone"], **(generator.get("backbone_overrides") or {}))
    backbone.pop("architecture", None)
    return backbone


def offline_generator_spec(generator: Mapping[str, Any], root: str | Path) -> dict[str, Any]:
    """``ReportGenerator`` keyword arguments that rebuild the logged architecture from the folders of
    :func:`save_hf_components` under ``root``, with random weights (the state dict is loaded next)."""
    from medcl.models.factory import merge

    root = Path(root)
    spec = merge(dict(generator), {"backbone_overrides": resolved_backbone(generator), "checkpoint": None})
    spec.pop("architecture", None)
    decoder = str(root / "decoder")
    spec["decoder"] = {**spec.get("decoder", {}), "name_or_path": decoder, "tokenizer": decoder, "pretrained": False}
    backbone = spec["backbone_overrides"]
    if (root / "text").is_dir():
        backbone["text"] = {**backbone["text"], "name_or_path": str(root / "text"), "pretrained": False}
    hf_image = root / "image"
    backbone["image"] = without_pretrained_weights(backbone["image"], hf_image if hf_image.is_dir() else None)
    return spec


class ReportPyfunc(MedclPyfunc):
    """Generated radiology reports for single 2-D radiographs.

    An upload is one view of one study, with no other view, prior study or indication: the decoder's memory is that
    view alone (as the anchor) and, for generators trained with context, the context prompt is the model's explicit
    absence prompt (``[NHI]`` no indication, ``[NHPR]`` no prior report), which is what training saw for such
    studies. The report is generated from pixels only: no header value reaches the model. Artifacts: ``config``
    (generator config, image size, generation settings), ``weights`` (the generator's state dict) and ``hf``
    (folder: HF configs + tokenizers, see :func:`save_hf_components`).
    """

    kind = "report"
    capabilities = ("report",)
    voi_lut = True  # radiographs: display values through the file's VOI LUT / window

    def load(self, artifacts: Mapping[str, str]) -> None:
        from medcl.models.report_generator import ReportGenerator, context_prompt

        super().load(artifacts)
        self.model = ReportGenerator(**offline_generator_spec(self.config["generator"], artifacts["hf"])).eval()
        self.model.load_state_dict(_load_tensors(artifacts["weights"]))
        self.contexts = [context_prompt(None, None)] if self.model.use_context else None
        # HF fast tokenizers keep truncation/padding settings as mutable state: one generation at a time.
        self._generating = threading.Lock()

    def generator_inputs(self, image: MetaTensor) -> dict[str, Any]:
        """The generator's inputs for one upload: a one-view study (the anchor) and the absence context."""
        from medcl.models.report_generator import ROLES

        return {
            "images": radiograph_tensor(image, self.config["image_size"])[:, None],  # (1, 1 view, 1, S, S)
            "contexts": self.contexts,
            "view_mask": torch.ones(1, 1, dtype=torch.bool),
            "view_role": torch.full((1, 1), ROLES["current"], dtype=torch.long),
        }

    @torch.no_grad()
    def generate_report(self, image: MetaTensor) -> str:
        inputs = self.generator_inputs(image)
        with self._generating:
            return self.model.generate(**inputs, **self.config["generation"])[0]

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        return {"report": self.generate_report(image)}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "image_size": self.config["image_size"],
            "generation": self.config["generation"],
            "structured": self.config.get("structured", False),
        }


WRAPPERS: dict[str, type[MedclPyfunc]] = {
    ImageTextPyfunc.kind: ImageTextPyfunc,
    SegmentationPyfunc.kind: SegmentationPyfunc,
    ReportPyfunc.kind: ReportPyfunc,
}


# ---------------------------------------------------------------------------------------------------------------
# Logging and registration
# ---------------------------------------------------------------------------------------------------------------


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


def _requirements() -> list[str]:
    """Pinned to what is installed, so a serving environment rebuilt from the model matches this one."""
    from importlib.metadata import PackageNotFoundError, version

    wanted = ["torch", "monai", "pydicom", "nibabel", "pillow", "numpy", "pandas", "mlflow", "lightning"]
    wanted += ["pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "medcl"]
    out = []
    for name in wanted:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return out


LOADER = """\
# Written by medcl.registry: MLflow models-from-code loader (no pickled objects in this model).
import mlflow
from medcl.registry import {cls}

mlflow.models.set_model({cls}())
"""


@dataclass
class LoggedModel:
    model_uri: str
    run_id: str
    registered: str | None = None  # models:/<name>@<alias> or models:/<name>/<version>


def log_pyfunc(
    kind: str,
    config: dict[str, Any],
    tensors: Mapping[str, Mapping[str, Any]],
    *,
    example: tuple[bytes, str],
    folders: Mapping[str, str | Path] | None = None,
    run_id: str | None = None,
    registered_name: str | None = None,
    alias: str | None = DEFAULT_ALIAS,
    tags: Mapping[str, str] | None = None,
) -> LoggedModel:
    """Log one pyfunc of ``kind`` (in run ``run_id``, or the active/a new run); optionally register + alias it.

    ``tensors`` maps artifact names to dicts of tensors/primitives saved with ``torch.save``; ``folders`` maps
    artifact names to directories logged as they are (configs, tokenizer files). The signature is inferred by
    running the wrapper on ``example`` (bytes, filename), which is also stored as input example.
    """
    wrapper_cls = WRAPPERS[kind]
    config = {**config, "kind": kind}
    with tempfile.TemporaryDirectory(prefix="medcl-model-") as folder:
        root = Path(folder)
        artifacts = {"config": str(root / "config.json")}
        (root / "config.json").write_text(json.dumps(config, indent=2))
        for name, payload in tensors.items():
            torch.save(dict(payload), root / f"{name}.pt")
            artifacts[name] = str(root / f"{name}.pt")
        artifacts.update({name: str(directory) for name, directory in (folders or {}).items()})
        loader = root / "medcl_model.py"
        loader.write_text(LOADER.format(cls=wrapper_cls.__name__))
        wrapper = wrapper_cls()
        wrapper.load(artifacts)
        example_input = pd.DataFrame({"content": [example[0]], "filename": [example[1]]})
        signature = mlflow.models.infer_signature(example_input, wrapper.predict(None, example_input))
        active = mlflow.active_run()
        reuse = active is not None and (run_id is None or active.info.run_id == run_id)
        # Another run active (a pipeline's parent run while a step trains in `run_id`): enter `run_id` nested.
        context = _nullcontext() if reuse else mlflow.start_run(run_id=run_id, nested=active is not None)
        with context:
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(loader),
                artifacts=artifacts,
                signature=signature,
                input_example=example_input,
                pip_requirements=_requirements(),
                tags={"medcl.kind": kind, **dict(tags or {})},
            )
            logged_run = mlflow.active_run().info.run_id
    result = LoggedModel(model_uri=info.model_uri, run_id=logged_run)
    if registered_name:
        result.registered = register(info.model_uri, registered_name, alias=alias)
    return result


class _nullcontext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def register(model_uri: str, name: str, *, alias: str | None = DEFAULT_ALIAS) -> str:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it; returns its models:/ URI."""
    version = mlflow.register_model(model_uri, name)
    if not alias:
        return f"models:/{name}/{version.version}"
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    log.info("registered %s version %s as models:/%s@%s", model_uri, version.version, name, alias)
    return f"models:/{name}@{alias}"


def run_model_uri(run_id: str) -> str:
    """The model logged in run ``run_id`` (the newest, when several were)."""
    run = mlflow.MlflowClient().get_run(run_id)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
        order_by=[{"field_name": "creation_time", "ascending": False}],
        output_format="list",
    )
    if not models:
        raise ConfigError(f"run {run_id} has no logged model; log one with `medcl register --ckpt ...`")
    return f"models:/{models[0].model_id}"


# ---------------------------------------------------------------------------------------------------------------
# Exporting tasks
# ---------------------------------------------------------------------------------------------------------------


def image_text_payload(task: LightningModule, image_size: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Config + tensors of an :class:`~medcl.tasks.ImageTextPretraining` (or subclass) for :class:`ImageTextPyfunc`."""
    from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings
    from medcl.models import model_config

    hparams = task.hparams
    config = model_config(hparams["model"], **(hparams.get("model_overrides") or {}))
    if config.get("architecture") != "image_text":
        raise ConfigError(f"model {hparams['model']!r} is not an image_text architecture")
    classes = list(hparams.get("zero_shot_classes") or PROMPTS)
    model = task.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        positive, negative = class_prompt_embeddings(
            lambda texts: model.encode_text(texts).cpu(), {c: PROMPTS[c] for c in classes}
        )
    model.train(was_training)
    temperature = getattr(task.loss, "temperature", None)
    logit_scale = 1.0 / float(temperature) if temperature is not None else 1.0 / 0.07
    weights = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.startswith(("image_encoder.", "image_projection."))
    }
    payload_config = {
        "name": hparams["model"],
        "image": config["image"],
        "embed_dim": int(config["embed_dim"]),
        "projection": config.get("projection", "mlp"),
        "image_size": int(image_size),
        "classes": classes,
        "logit_scale": logit_scale,
    }
    return payload_config, {"weights": weights, "prototypes": {"positive": positive, "negative": negative}}


def log_image_text_model(task: LightningModule, image_size: int, **kwargs: Any) -> LoggedModel:
    """Log an image-text task's image tower + zero-shot prototypes as an ``image_text`` pyfunc."""
    config, tensors = image_text_payload(task, image_size)
    return log_pyfunc("image_text", config, tensors, example=(example_png(), "example.png"), **kwargs)


def log_segmentation_model(
    network: nn.Module,
    network_spec: Mapping[str, Any],
    *,
    preprocess: SegmentationPreprocess,
    labels: Mapping[int, str] | None = None,
    name: str = "segmentation",
    **kwargs: Any,
) -> LoggedModel:
    """Log a volume -> logits network (rebuilt from ``network_spec``: class_path + init_args) as a pyfunc."""
    config = {
        "name": name,
        "network": {"class_path": network_spec["class_path"], "init_args": dict(network_spec.get("init_args") or {})},
        "preprocess": asdict(preprocess),
        "labels": {str(k): v for k, v in (labels or {}).items()},
    }
    weights = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
    channels = int(config["network"]["init_args"].get("in_channels", 1))
    example = (example_nifti(channels), "example.nii")
    return log_pyfunc("segmentation", config, {"weights": weights}, example=example, **kwargs)


def report_payload(task: LightningModule, image_size: int) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Config + tensors of a :class:`~medcl.tasks.report.ReportGeneration` for :class:`ReportPyfunc`.

    The generator config is the task's (model name + overrides), with its backbone resolved to a full config so
    the served architecture does not follow later edits of the backbone's JSON; the contrastive ``checkpoint`` it
    was fine-tuned from is dropped (its weights are in the state dict).
    """
    from medcl.models import model_config
    from medcl.tasks.report import GENERATION_SETTINGS

    hparams = task.hparams
    generator = model_config(hparams["model"], **(hparams.get("model_overrides") or {}))
    if generator.pop("architecture", None) != "report_generator":
        raise ConfigError(f"model {hparams['model']!r} is not a report_generator architecture")
    generator.update(backbone_overrides=resolved_backbone(generator), checkpoint=None)
    payload_config = {
        "name": hparams["model"],
        "generator": generator,
        "image_size": int(image_size),
        "generation": {k: hparams[k] for k in GENERATION_SETTINGS},
        "structured": bool(hparams.get("structured", False)),
    }
    weights = {k: v.detach().cpu().clone() for k, v in task.model.state_dict().items()}
    return payload_config, {"weights": weights}


def log_report_model(task: LightningModule, image_size: int, **kwargs: Any) -> LoggedModel:
    """Log a report-generation task (generator weights, HF configs + tokenizers, generation settings) as a pyfunc."""
    config, tensors = report_payload(task, image_size)
    with tempfile.TemporaryDirectory(prefix="medcl-hf-") as folder:
        hf = Path(folder) / "hf"  # the artifact keeps the folder's name
        save_hf_components(task.model, hf)
        example = (example_png(), "example.png")
        return log_pyfunc("report", config, tensors, example=example, folders={"hf": hf}, **kwargs)


# Task class -> function logging it; tasks that land later register themselves with `register_exporter`.
Exporter = Callable[[LightningModule, Mapping[str, Any]], LoggedModel]
_EXPORTERS: list[tuple[type, Exporter]] = []


def register_exporter(task_cls: type) -> Callable[[Exporter], Exporter]:
    def decorate(exporter: Exporter) -> Exporter:
        _EXPORTERS.insert(0, (task_cls, exporter))  # later (more specific) registrations win
        return exporter

    return decorate


def _builtin_exporters() -> None:
    from medcl.tasks import ImageTextPretraining

    if any(cls is ImageTextPretraining for cls, _ in _EXPORTERS):
        return

    @register_exporter(ImageTextPretraining)
    def export_image_text(task: LightningModule, data_hparams: Mapping[str, Any], **kwargs: Any) -> LoggedModel:
        return log_image_text_model(task, int(data_hparams.get("image_size", 224)), **kwargs)

    from medcl.tasks.segmentation import Segmentation

    @register_exporter(Segmentation)
    def export_segmentation(task: LightningModule, data_hparams: Mapping[str, Any], **kwargs: Any) -> LoggedModel:
        from medcl.export import network_definition

        hparams = task.hparams
        if int(data_hparams.get("spatial_dims", 3)) != 3:
            raise ConfigError("only 3-D segmentation models can be logged as MLflow models so far")
        definition = network_definition(
            hparams["model"], {**(hparams.get("model_overrides") or {}), "out_channels": hparams["num_classes"]}
        )
        spec = {"class_path": definition.pop("_target_"), "init_args": definition}
        names = list(hparams.get("class_names") or [f"class_{i}" for i in range(1, hparams["num_classes"])])
        preprocess = SegmentationPreprocess(
            pixdim=data_hparams.get("pixdim"),
            intensity_range=data_hparams.get("intensity_range"),
            crop_foreground=data_hparams.get("crop_foreground"),
            spatial_size=data_hparams.get("spatial_size"),
            roi_size=tuple(hparams.get("roi_size", (96, 96, 96))),
            sw_batch_size=int(hparams.get("sw_batch_size", 2)),
            overlap=float(hparams.get("sw_overlap", 0.25)),
        )
        labels = {0: "background", **{i + 1: n for i, n in enumerate(names)}}
        return log_segmentation_model(
            task.network, spec, preprocess=preprocess, labels=labels, name=hparams["model"], **kwargs
        )

    from medcl.tasks.report import ReportGeneration

    @register_exporter(ReportGeneration)
    def export_report(task: LightningModule, data_hparams: Mapping[str, Any], **kwargs: Any) -> LoggedModel:
        return log_report_model(task, int(data_hparams.get("image_size", 224)), **kwargs)


def log_task_model(task: LightningModule, data_hparams: Mapping[str, Any] | None = None, **kwargs: Any) -> LoggedModel:
    """Log ``task`` with the exporter registered for its class (``data_hparams``: the datamodule's)."""
    _builtin_exporters()
    for cls, exporter in _EXPORTERS:
        if isinstance(task, cls):
            return exporter(task, dict(data_hparams or {}), **kwargs)
    known = ", ".join(cls.__name__ for cls, _ in _EXPORTERS)
    raise ConfigError(f"no MLflow model exporter for {type(task).__name__}; known: {known}")


def load_checkpoint_weights(task: LightningModule, path: str | Path) -> None:
    """Load a Lightning checkpoint's weights into ``task`` (``weights_only=True``: no code runs on load)."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    # Strict for the model itself; loss parameters (a learned temperature) may differ with the loss class.
    missing, unexpected = task.load_state_dict(state["state_dict"], strict=False)
    wrong = [k for k in (*missing, *unexpected) if k.startswith("model.")]
    if wrong:
        raise InvalidInputError(path, f"checkpoint does not match the task's model: {wrong[:5]} ...")


class LogBestModel(Callback):
    """At the end of fit, log the best checkpoint's weights as an MLflow model in the training run.

    Add to a config as ``trainer.callbacks: [{class_path: medcl.registry.LogBestModel, init_args: {...}}]``.
    With ``registered_name``, the model is also registered and ``alias`` (``champion``) points at it.
    The best checkpoint is the one of the ``checkpoint`` section (the callback with a monitor); without one,
    the final weights are logged.
    """

    def __init__(self, registered_name: str | None = None, alias: str | None = DEFAULT_ALIAS) -> None:
        self.registered_name = registered_name
        self.alias = alias
        self.logged: LoggedModel | None = None

    @staticmethod
    def best_checkpoint(trainer: Trainer) -> str | None:
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "monitor", None) and getattr(callback, "best_model_path", ""):
                return callback.best_model_path
        return None

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        from medcl.tracking import mlflow_logger

        logger = mlflow_logger(trainer)
        if logger is None or not trainer.is_global_zero:
            return
        best = self.best_checkpoint(trainer)
        current = {k: v.detach().clone() for k, v in pl_module.state_dict().items()} if best else None
        if best:
            load_checkpoint_weights(pl_module, best)
        data_hparams = dict(getattr(trainer.datamodule, "hparams", {}) or {})
        mlflow.set_tracking_uri(logger._tracking_uri)
        try:
            self.logged = log_task_model(
                pl_module,
                data_hparams,
                run_id=logger.run_id,
                registered_name=self.registered_name,
                alias=self.alias,
                tags={"medcl.checkpoint": Path(best).name if best else "final"},
            )
        finally:
            if current is not None:
                pl_module.load_state_dict(current)
        log.info("logged %s (%s)", self.logged.model_uri, self.logged.registered or "not registered")


# ---------------------------------------------------------------------------------------------------------------
# `medcl register`
# ---------------------------------------------------------------------------------------------------------------


def register_main(argv: list[str]) -> int:
    from medcl.tracking import default_tracking_uri

    parser = argparse.ArgumentParser(
        prog="medcl register",
        description="Register a model in the MLflow model registry and point an alias at it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=textwrap.dedent(
            """\
            examples:
              medcl register --run 3f2a... --name cxr-clip                 # the model a training run logged
              medcl register --model-uri models:/m-1a2b... --name cxr-clip --alias staging
              medcl register --ckpt out/checkpoints/best.ckpt --name cxr-clip   # log a checkpoint, then register
            """
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="MLflow run id whose logged model to register")
    source.add_argument("--model-uri", help="any MLflow model URI (models:/m-..., runs:/<id>/model)")
    source.add_argument("--ckpt", help="Lightning checkpoint of a medcl task: logged as a pyfunc first")
    parser.add_argument("--name", required=True, help="registered model name")
    parser.add_argument("--alias", default=DEFAULT_ALIAS, help="alias to point at the new version ('' for none)")
    parser.add_argument(
        "--task", default="medcl.tasks.ImageTextPretraining", help="--ckpt: task class when the checkpoint lacks it"
    )
    parser.add_argument("--experiment", default="medcl-models", help="--ckpt: experiment of the logging run")
    args = parser.parse_args(argv)
    mlflow.set_tracking_uri(default_tracking_uri())
    try:
        if args.ckpt:
            checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=True)
            hparams = dict(checkpoint.get("hyper_parameters", {}))
            # LightningCLI records the task class; `--task` is for checkpoints written without it.
            module_name, _, class_name = str(hparams.get("_class_path") or args.task).rpartition(".")
            task_cls = getattr(importlib.import_module(module_name), class_name)
            task = task_cls(**{k: v for k, v in hparams.items() if not k.startswith("_")})
            load_checkpoint_weights(task, args.ckpt)
            mlflow.set_experiment(args.experiment)
            logged = log_task_model(
                task,
                checkpoint.get("datamodule_hyper_parameters", {}),
                registered_name=args.name,
                alias=args.alias or None,
                tags={"medcl.checkpoint": Path(args.ckpt).name},
            )
            uri = logged.registered
        else:
            model_uri = args.model_uri or run_model_uri(args.run)
            uri = register(model_uri, args.name, alias=args.alias or None)
    except (ConfigError, InvalidInputError, mlflow.exceptions.MlflowException, OSError) as err:
        print(f"medcl register: error: {err}", file=sys.stderr)
        return 2
    print(uri)
    return 0
