"""The ``segmentation`` model kind: a volume -> label-map network, served on the input's own grid.

Logged: ``config`` (the network spec of :func:`medcl.models.volume.network_spec`, the
:class:`~medcl.data.preprocessing.Preprocessing` settings of the training datamodule, sliding-window settings and
label names) and ``weights``. Serving rebuilds the network through medcl's architecture registry (a config cannot
name a class to import), runs the training preprocessing, MONAI sliding-window inference, and MONAI's ``Invertd``
to map the argmax back onto the input grid (nearest neighbour).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Mapping
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.inferers import sliding_window_inference
from monai.transforms import Compose, Invertd

from medcl.data.preprocessing import Preprocessing
from medcl.data.uploads import UPLOAD_NAME
from medcl.deploy.pyfunc import (
    MedclPyfunc,
    Payload,
    example_nifti,
    load_tensors,
    register_kind,
    require_finite,
)
from medcl.errors import ConfigError, InvalidInputError
from medcl.models.factory import build_model
from medcl.models.volume import network_spec


def nifti_bytes(label_map: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 of ``label_map`` on ``affine``; a fresh header, so nothing of the input's is copied."""
    dtype = np.uint8 if label_map.max(initial=0) < 256 else np.int16
    image = nib.Nifti1Image(np.asarray(label_map, dtype=dtype), np.asarray(affine, dtype=np.float64))
    image.header.set_xyzt_units("mm")
    image.set_qform(image.affine, code=1)
    image.set_sform(image.affine, code=1)
    raw = io.BytesIO()
    image.to_file_map(nib.Nifti1Image.make_file_map({"image": raw, "header": raw}))
    return gzip.compress(raw.getvalue(), compresslevel=6, mtime=0)


@register_kind
class SegmentationPyfunc(MedclPyfunc):
    """Label maps for 3-D volumes, on the input's own voxel grid and affine."""

    kind = "segmentation"
    capabilities = ("segment",)

    def load(self, artifacts: Mapping[str, str]) -> None:
        super().load(artifacts)
        self.network = build_model(self.config["network"]).eval()
        self.network.load_state_dict(load_tensors(artifacts["weights"]))
        self.inference = dict(self.config["inference"])
        # Loading is done by read_upload; metadata must survive (track_meta) for Invertd to undo every step.
        self.preprocess = Compose(Preprocessing.from_settings(self.config["preprocessing"]).transforms())

    @torch.no_grad()
    def segment(self, image: MetaTensor) -> tuple[np.ndarray, np.ndarray]:
        """-> (label map on the input grid, input affine)."""
        spatial = tuple(image.shape[1:])
        if len(spatial) != 3 or min(spatial) < 2:
            raise InvalidInputError(UPLOAD_NAME, f"expected a 3-D volume, got an image of shape {spatial}")
        expected = int(self.config["network"].get("in_channels", 1))
        if image.shape[0] != expected:
            raise InvalidInputError(UPLOAD_NAME, f"the model expects {expected} channel(s), got {image.shape[0]}")
        original_affine = np.asarray(image.affine, dtype=np.float64)
        data = self.preprocess({"image": image})
        if not bool(torch.isfinite(data["image"]).all()):  # finite voxels whose range overflows in preprocessing
            raise InvalidInputError(UPLOAD_NAME, "voxel values too large: preprocessing gives NaN or infinite values")
        logits = sliding_window_inference(
            data["image"][None].float(),
            tuple(self.inference["roi_size"]),
            sw_batch_size=self.inference["sw_batch_size"],
            predictor=self.network,
            overlap=self.inference["overlap"],
            padding_mode="constant",
        )
        require_finite(logits, "segmentation logits")  # argmax would turn NaN into a plausible-looking label map
        data["pred"] = MetaTensor(logits[0].argmax(dim=0, keepdim=True).float(), meta=dict(data["image"].meta))
        data["pred"].applied_operations = list(data["image"].applied_operations)
        inverted = Invertd(keys="pred", transform=self.preprocess, orig_keys="image", nearest_interp=True)(data)
        label_map = np.asarray(inverted["pred"][0].round().cpu().numpy(), dtype=np.int16)
        if label_map.shape != spatial:
            raise RuntimeError(f"inverted label map {label_map.shape} does not match the input grid {spatial}")
        return label_map, original_affine

    def self_check(self) -> None:
        self.segment(self.decode(example_nifti(int(self.config["network"].get("in_channels", 1))), "example.nii"))

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        label_map, affine = self.segment(image)
        return {"segmentation": nifti_bytes(label_map, affine)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "labels": self.config.get("labels", {})}


def segmentation_config(
    network: Mapping[str, Any],
    preprocessing: Preprocessing,
    *,
    roi_size: tuple[int, ...],
    sw_batch_size: int = 2,
    overlap: float = 0.25,
    labels: Mapping[int, str] | None = None,
    name: str = "segmentation",
) -> dict[str, Any]:
    """The ``config`` artifact of a segmentation model."""
    if preprocessing.spatial_dims != 3:
        raise ConfigError("only 3-D segmentation models can be logged as MLflow models so far")
    return {
        "name": name,
        "network": dict(network),
        "preprocessing": preprocessing.as_dict(),
        "inference": {"roi_size": list(roi_size), "sw_batch_size": int(sw_batch_size), "overlap": float(overlap)},
        "labels": {str(k): v for k, v in (labels or {}).items()},
    }


def segmentation_payload(task: Any, data_hparams: Mapping[str, Any]) -> Payload:
    """What a :class:`~medcl.tasks.segmentation.Segmentation` task logs (its network, the datamodule's
    preprocessing, the task's sliding-window settings and class names)."""
    hparams = task.hparams
    if data_hparams.get("slice_context") is not None:
        raise ConfigError("slice-wise (2D/2.5D) segmentation models cannot be logged as MLflow models so far")
    spec = network_spec(hparams["model"], **{**(hparams.get("model_overrides") or {}),
                                              "out_channels": hparams["num_classes"]})  # fmt: skip
    names = list(hparams.get("class_names") or [f"class_{i}" for i in range(1, hparams["num_classes"])])
    config = segmentation_config(
        spec,
        Preprocessing.from_settings(data_hparams),
        roi_size=tuple(hparams.get("roi_size", (96, 96, 96))),
        sw_batch_size=int(hparams.get("sw_batch_size", 2)),
        overlap=float(hparams.get("sw_overlap", 0.25)),
        labels={0: "background", **{i + 1: n for i, n in enumerate(names)}},
        name=hparams["model"],
    )
    weights = {k: v.detach().cpu().clone() for k, v in task.network.state_dict().items()}
    example = (example_nifti(int(spec.get("in_channels", 1))), "example.nii")
    return Payload("segmentation", config, {"weights": weights}, example=example)
