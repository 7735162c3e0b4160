"""The one description of how an image is prepared for a network: :class:`Preprocessing`.

Training datamodules cache its transforms, logged segmentation models rebuild them from the settings stored with the
model, and MONAI bundles get the same steps written as ``inference.json`` entries. All three come from
:meth:`Preprocessing.steps`, so inference cannot drift from training.

* 3-D volumes: RAS orientation, resampling to ``pixdim`` (None keeps the grid), the CT window ``intensity_range``
  clip-scaled to [0, 1] (None: z-score over non-zero voxels, for MR), an optional crop to voxels above
  ``crop_foreground`` and an optional resize to ``spatial_size`` (-1 keeps an axis).
* 2-D radiographs: resize the longest side to ``image_size`` (area interpolation), pad to a square, scale to [0, 1].

Masks are resampled with nearest neighbour, images with (tri)linear or area interpolation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from monai import transforms as mt


def interpolation_modes(keys: Sequence[str], mask_keys: Sequence[str], smooth: str) -> list[str]:
    """Per-key interpolation: nearest neighbour for masks (labels stay labels), ``smooth`` for the rest."""
    return ["nearest" if key in mask_keys else smooth for key in keys]


class Above:
    """Foreground selector ``x > threshold``: picklable, unlike a lambda (worker processes, cache fingerprints)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)

    def __call__(self, image: Any) -> Any:
        return image > self.threshold

    def __repr__(self) -> str:  # part of the disk-cache fingerprint
        return f"Above({self.threshold})"

    def bundle_expression(self) -> str:
        return f"$lambda x: x > {self.threshold}"


@dataclass(frozen=True)
class Preprocessing:
    """Deterministic preprocessing settings (see the module docstring)."""

    spatial_dims: int = 3
    pixdim: tuple[float, ...] | None = (1.5, 1.5, 2.0)
    intensity_range: tuple[float, float] | None = (-175.0, 250.0)
    crop_foreground: float | None = None
    spatial_size: tuple[int, ...] | None = None
    image_size: int = 256

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> Preprocessing:
        """From any mapping holding (some of) the fields, e.g. a datamodule's saved hyper-parameters."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in settings.items() if k in names}
        for key in ("pixdim", "intensity_range", "spatial_size"):
            if values.get(key) is not None:
                values[key] = tuple(values[key])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready settings (stored with logged models; :meth:`from_settings` reads them back)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def steps(self, keys: Sequence[str] = ("image",), mask_keys: Sequence[str] = ()) -> list[tuple[str, dict]]:
        """(MONAI dictionary transform name, arguments) per step, for ``keys`` of which ``mask_keys`` are masks."""
        keys = list(keys)

        def modes(smooth: str) -> list[str]:
            return interpolation_modes(keys, mask_keys, smooth)

        image = keys[0]
        if self.spatial_dims == 2:
            size = int(self.image_size)
            return [
                ("Resized", {"keys": keys, "spatial_size": size, "size_mode": "longest", "mode": modes("area")}),
                ("SpatialPadd", {"keys": keys, "spatial_size": [size, size]}),
                ("ScaleIntensityd", {"keys": image, "minv": 0.0, "maxv": 1.0}),
            ]
        steps: list[tuple[str, dict]] = [("Orientationd", {"keys": keys, "axcodes": "RAS"})]
        if self.pixdim is not None:
            steps.append(("Spacingd", {"keys": keys, "pixdim": list(self.pixdim), "mode": modes("bilinear")}))
        if self.intensity_range is None:
            steps.append(("NormalizeIntensityd", {"keys": image, "nonzero": True}))
        else:
            low, high = (float(v) for v in self.intensity_range)
            window = {"a_min": low, "a_max": high, "b_min": 0.0, "b_max": 1.0, "clip": True}
            steps.append(("ScaleIntensityRanged", {"keys": image, **window}))
        if self.crop_foreground is not None:
            crop = {"source_key": image, "select_fn": Above(self.crop_foreground), "margin": 2, "allow_smaller": True}
            steps.append(("CropForegroundd", {"keys": keys, **crop, "start_coord_key": None, "end_coord_key": None}))
        if self.spatial_size is not None:
            smooth = [key not in mask_keys for key in keys]
            resize = {"spatial_size": list(self.spatial_size), "mode": modes("trilinear"), "anti_aliasing": smooth}
            steps.append(("Resized", {"keys": keys, **resize}))
        return steps

    def transforms(self, keys: Sequence[str] = ("image",), mask_keys: Sequence[str] = ()) -> list[mt.MapTransform]:
        """The steps as MONAI transform objects (loading not included)."""
        return [getattr(mt, name)(**kwargs) for name, kwargs in self.steps(keys, mask_keys)]

    def bundle(self, key: str = "image") -> list[dict[str, Any]]:
        """The steps as MONAI-bundle ``inference.json`` entries, with loading first and a float tensor last."""
        entries: list[dict[str, Any]] = [
            {"_target_": "LoadImaged", "keys": key, "image_only": False},
            {"_target_": "EnsureChannelFirstd", "keys": key},
        ]
        for name, kwargs in self.steps([key]):
            entry = {"_target_": name, **kwargs}
            if isinstance(entry.get("select_fn"), Above):
                entry["select_fn"] = entry["select_fn"].bundle_expression()
            entries.append(entry)
        entries.append({"_target_": "EnsureTyped", "keys": key, "dtype": "$torch.float32"})
        return entries
