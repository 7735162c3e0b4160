"""One loader for every image medcl reads: DICOM (file or series directory), NIfTI and other nibabel volumes,
PNG/JPEG, and ``.npy`` maps such as gaze heatmaps.

``load_image`` and ``MedclReader`` (for ``monai.transforms.LoadImage(d)``) share ``read_image_array``, so a
pipeline sees exactly what ``load_image`` returns: a channel-first float32 ``MetaTensor`` whose ``affine`` maps
array indices to RAS+ millimetres.

Spatial axes follow MONAI and NIfTI: axis 0 runs along an image row (x, the column index of the file as
stored), axis 1 down the columns (y, the row index). A PNG stored as H rows x W columns therefore loads as
(C, W, H), as MONAI's own PIL reader does; ``img[0].T`` is the picture as stored. ``.npy`` arrays are taken to be
(H, W) in the stored row-major pixel order and get the same transposition, so a heatmap lines up with its image.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.image_reader import ImageReader
from PIL import Image

from medcl.data.dicom import load_dicom_file, load_dicom_series
from medcl.errors import InvalidInputError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

NIBABEL_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz", ".mgh", ".mgz", ".mnc", ".par", ".rec", ".head")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
ARRAY_SUFFIXES = (".npy",)
DICOM_SUFFIXES = (".dcm", ".dicom", ".dcm.gz", "")

LOADER_VERSION = "1"
"""Bumped whenever loading changes what arrays or metadata come out, so caches keyed on it are rebuilt."""


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for compound in (".nii.gz", ".img.gz", ".dcm.gz"):
        if name.endswith(compound):
            return compound
    return path.suffix.lower()


def _pixel_grid_meta(spatial_shape: Sequence[int], image_format: str) -> dict[str, Any]:
    """Meta for images without physical geometry: one unit per pixel, identity affine."""
    return {
        "affine": np.eye(4),
        "original_affine": np.eye(4),
        "spacing": (1.0,) * len(spatial_shape),
        "space": "RAS",
        "has_patient_geometry": False,
        "format": image_format,
    }


def _stored_2d_to_channel_first(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) as stored -> float32 (C, W, H), a strided view of the stored order."""
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return pixels.astype(np.float32, copy=False).transpose(2, 1, 0)


def _read_pil(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode in ("RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
                image = image.convert("RGB")  # drops alpha: medcl images are opaque
            elif mode == "LA":
                image = image.convert("L")
            pixels = np.asarray(image)  # "P" keeps palette indices: label masks are often paletted PNGs
    except Exception as err:  # PIL raises OSError, SyntaxError, DecompressionBombError, ...
        raise InvalidInputError(path, f"not a readable PNG/JPEG image ({type(err).__name__}: {err})") from err
    if pixels.ndim not in (2, 3) or pixels.size == 0:
        raise InvalidInputError(path, f"unsupported image layout {pixels.shape} (mode {mode})")
    array = _stored_2d_to_channel_first(pixels)
    return array, _pixel_grid_meta(array.shape[1:], "pil")


def _read_npy(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        pixels = np.load(path, allow_pickle=False)
    except Exception as err:  # ValueError for pickled/object arrays, OSError/EOFError when truncated
        raise InvalidInputError(path, f"not a readable .npy array ({type(err).__name__}: {err})") from err
    array = map_to_channel_first(pixels, path)
    return array, _pixel_grid_meta(array.shape[1:], "npy")


def map_to_channel_first(pixels: np.ndarray, source: object = None) -> np.ndarray:
    """A 2-D (H, W) map in stored pixel order (a gaze heatmap, from a ``.npy`` file or in memory) -> float32
    (1, W, H) on its image's grid; ``source`` names it in the error for a map that is not 2-D, numeric and finite."""
    if pixels.ndim != 2 or pixels.dtype.kind not in "biuf":
        raise InvalidInputError(source, f"expected a 2-D numeric (H, W) map, got shape {pixels.shape} {pixels.dtype}")
    if not np.isfinite(pixels).all():
        raise InvalidInputError(source, "array contains NaN or infinite values")
    return _stored_2d_to_channel_first(pixels)


def _read_nibabel(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    try:
        image = nib.load(path)
    except Exception as err:  # ImageFileError, HeaderDataError, OSError, EOFError, zlib.error, missing h5py ...
        raise InvalidInputError(path, f"not a readable NIfTI/nibabel image ({type(err).__name__}: {err})") from err
    if not isinstance(image, nib.spatialimages.SpatialImage):
        raise InvalidInputError(path, f"{type(image).__name__} is not a spatial image")
    if image.get_data_dtype().kind not in "biuf":
        raise InvalidInputError(path, f"unsupported voxel type {image.get_data_dtype()} (complex or RGB)")
    try:
        data = image.get_fdata(dtype=np.float32)  # applies scl_slope / scl_inter, like nibabel users expect
    except Exception as err:  # truncated files surface only when the data block is read
        raise InvalidInputError(path, f"cannot read the voxel data ({type(err).__name__}: {err})") from err
    shape = data.shape
    if data.ndim == 5 and shape[3] == 1:  # NIfTI vector images: (x, y, z, 1, components)
        data = data[:, :, :, 0, :]
    if data.ndim in (2, 3):
        array = data[None]
    elif data.ndim == 4:  # the 4th axis (time, modality, components) becomes channels
        array = np.moveaxis(data, -1, 0)
    else:
        raise InvalidInputError(path, f"unsupported image dimensions {shape}: expected 2-D, 3-D or 4-D")
    affine = np.asarray(image.affine, dtype=np.float64)
    spatial_ndim = array.ndim - 1
    meta = {
        "affine": affine,
        "original_affine": affine.copy(),
        "spacing": tuple(float(s) for s in np.linalg.norm(affine[:3, :spatial_ndim], axis=0)),
        "space": "RAS",
        "has_patient_geometry": True,
        "format": "nibabel",
    }
    return array, meta


def read_image_array(
    path: PathLike, *, voi_lut: bool = False, series_uid: str | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode one image into a channel-first float32 array and plain, PHI-free metadata.

    The array may be a strided view (a transposed DICOM/PNG, a Fortran-ordered NIfTI): copying into C order would
    cost as much as the decoding itself, and torch and MONAI handle any strides.

    Args:
        path: DICOM file (``.dcm``, ``.dcm.gz``, or any name), directory of one DICOM series, NIfTI or other
            nibabel volume, PNG/JPEG, or a 2-D ``.npy`` map.
        voi_lut: DICOM only: apply the VOI LUT / window of the file and return display values in [0, 1]
            (radiographs). Otherwise DICOM values are modality values (e.g. Hounsfield units).
        series_uid: DICOM directories only: the series to load when the directory holds several.
    """
    path = Path(path)
    try:
        is_directory = stat.S_ISDIR(path.stat().st_mode)
    except OSError as err:
        raise InvalidInputError(path, f"no such file or directory ({err.strerror})") from err
    if is_directory:
        array, meta = load_dicom_series(path, voi_lut=voi_lut, series_uid=series_uid)
    else:
        suffix = _suffix(path)
        if suffix in NIBABEL_SUFFIXES or path.name.lower().endswith((".brik", ".brik.gz")):
            array, meta = _read_nibabel(path)
        elif suffix in PIL_SUFFIXES:
            array, meta = _read_pil(path)
        elif suffix in ARRAY_SUFFIXES:
            array, meta = _read_npy(path)
        else:  # .dcm, no suffix (PACS exports), or anything else: DICOM is recognised by content
            try:
                array, meta = load_dicom_file(path, voi_lut=voi_lut)
            except InvalidInputError as err:
                if suffix in DICOM_SUFFIXES:
                    raise
                raise InvalidInputError(
                    path,
                    f"unsupported file type {suffix!r} ({err.reason}); medcl reads DICOM, NIfTI (.nii, .nii.gz), "
                    "PNG, JPEG and .npy",
                ) from err
    # Tensors and plain types only, so cached MetaTensors load with torch.load(weights_only=True).
    meta["original_affine"] = torch.as_tensor(meta["original_affine"], dtype=torch.float64)
    meta["spatial_shape"] = tuple(int(n) for n in array.shape[1:])
    meta["original_channel_dim"] = 0
    meta["filename_or_obj"] = str(path)
    return array, meta


def load_image(path: PathLike, *, voi_lut: bool = False, series_uid: str | None = None) -> MetaTensor:
    """Load any supported image as a channel-first float32 ``MetaTensor`` with a RAS affine and spacing in meta.

    Raises:
        InvalidInputError: naming the file and the reason when it cannot be read as an image.
    """
    array, meta = read_image_array(path, voi_lut=voi_lut, series_uid=series_uid)
    # MetaTensor.ensure_torch_and_prune_meta would force a C-contiguous copy; keep the strides instead.
    meta["affine"] = torch.as_tensor(meta["affine"], dtype=torch.float64)
    return MetaTensor(torch.from_numpy(array), meta=meta)


def _concatenate_channels(paths: Sequence[Path], images: list[tuple[np.ndarray, dict[str, Any]]]):
    """Several files of one subject (e.g. MRI sequences) -> one multi-channel image, if their grids agree."""
    array, meta = images[0]
    for path, (other, other_meta) in zip(paths[1:], images[1:]):
        if other.shape[1:] != array.shape[1:] or not np.allclose(other_meta["affine"], meta["affine"], atol=1e-3):
            raise InvalidInputError(
                path, f"cannot stack as channels with {paths[0]}: grid {other.shape[1:]} vs {array.shape[1:]}"
            )
    return np.concatenate([image for image, _ in images], axis=0), meta


class MedclReader(ImageReader):
    """MONAI ``ImageReader`` over :func:`read_image_array`, for ``LoadImage(d)(reader=MedclReader())``.

    A list of files is stacked along the channel axis (their grids must agree). Returned arrays are already
    channel-first (``original_channel_dim`` = 0), so ``EnsureChannelFirst`` leaves them alone.
    """

    cache_version = LOADER_VERSION

    def __init__(self, voi_lut: bool = False, series_uid: str | None = None) -> None:
        super().__init__()
        self.voi_lut = voi_lut
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        return True  # DICOM is recognised by content, whatever the name; other formats fail with a clear error

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs: Any) -> tuple[np.ndarray, dict[str, Any]]:
        paths = [Path(data)] if isinstance(data, (str, os.PathLike)) else [Path(p) for p in data]
        images = [read_image_array(p, voi_lut=self.voi_lut, series_uid=self.series_uid) for p in paths]
        return images[0] if len(images) == 1 else _concatenate_channels(paths, images)

    def get_data(self, img: tuple[np.ndarray, dict[str, Any]]) -> tuple[np.ndarray, dict[str, Any]]:
        array, meta = img
        return array, dict(meta)
