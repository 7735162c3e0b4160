"""Loading an image, its masks and its gaze heatmaps onto one grid.

Images and masks go through :class:`medcl.data.image_io.MedclReader` (the exact code of ``load_image``). A gaze
heatmap (``.npy`` path or array, (H, W) in the stored row-major pixel order of the image file) is put on the image's
grid by :class:`LoadGazeHeatmap`: same (C, W, H) axis convention, same affine, so every later spatial transform
(``Spacingd``, ``Orientationd``, random flips and crops) treats image, heatmap and masks alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import LoadImaged, MapTransform, Transform

from medcl.data.image_io import MedclReader, map_to_channel_first, read_image_array
from medcl.errors import InvalidInputError


class LoadGazeHeatmap(Transform):
    """(H, W) gaze heatmap (``.npy`` path or array) -> (1, W, H) ``MetaTensor`` on the grid of a loaded image.

    The heatmap carries the image's affine. A heatmap whose (H, W) differs from the image as stored is an error
    (rescale fixation coordinates to the stored image first); ``source=None`` gives zeros (an image without gaze).
    """

    def __call__(self, source: Any, image: MetaTensor) -> MetaTensor:
        if not isinstance(image, MetaTensor):
            raise TypeError("LoadGazeHeatmap needs the image loaded as a MetaTensor first")
        if source is None:
            heatmap = torch.zeros((1, *image.shape[1:]), dtype=torch.float32)
        else:
            heatmap = torch.from_numpy(self._to_grid(source))
            if heatmap.shape[1:] != image.shape[1:]:
                where = source if isinstance(source, (str, Path)) else image.meta.get("filename_or_obj")
                raise InvalidInputError(
                    where,
                    f"gaze heatmap is {tuple(heatmap.shape[2:0:-1])} (H, W) but the image is stored as "
                    f"{tuple(image.shape[:0:-1])}",
                )
        meta = {k: v for k, v in image.meta.items() if k not in ("filename_or_obj", "format")}
        meta["filename_or_obj"] = str(source) if isinstance(source, (str, Path)) else "<array>"
        meta["affine"] = image.affine.clone()
        return MetaTensor(heatmap, meta=meta)

    @staticmethod
    def _to_grid(source: Any) -> np.ndarray:
        if isinstance(source, (str, Path)):
            array, _ = read_image_array(source)
            return array
        return np.ascontiguousarray(map_to_channel_first(np.asarray(source)))  # a copy: the caller keeps its array


class _GazeOnImageGridd(MapTransform):
    """Base of the dictionary gaze loaders: what each key holds goes through :class:`LoadGazeHeatmap` onto the grid
    of ``image_key``'s image; :meth:`load` gives the entries a key becomes."""

    def __init__(self, keys: KeysCollection, image_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self.loader = LoadGazeHeatmap()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            d.update(self.load(key, d.get(key), d[self.image_key]))
        return d

    def load(self, key: Hashable, value: Any, image: Any) -> dict[Hashable, Any]:
        raise NotImplementedError


class LoadGazeHeatmapd(_GazeOnImageGridd):
    """Dictionary-based wrapper of :class:`LoadGazeHeatmap`: heatmaps onto the grid of ``image_key``'s image.

    Missing heatmaps (key absent or None) become zeros when ``allow_missing`` is set, and ``<key>_present`` records
    which samples had one.
    """

    def __init__(self, keys: KeysCollection, image_key: str = "image", allow_missing: bool = True) -> None:
        super().__init__(keys, image_key)
        self.allow_missing = allow_missing

    def load(self, key: Hashable, value: Any, image: Any) -> dict[Hashable, Any]:
        if value is None and not self.allow_missing:
            where = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
            raise InvalidInputError(where, f"no gaze heatmap under {key!r}")
        return {key: self.loader(value, image), f"{key}_present": value is not None}


class LoadGazeSentencesd(_GazeOnImageGridd):
    """Stack the sentence heatmaps listed under each key into one (M, W, H) map on the image's grid.

    Each map goes through :class:`LoadGazeHeatmap` (same axis convention and shape check as the full-reading map);
    an item without sentences gets one zero channel. ``<key without its final s>_count`` records the number of
    sentences (``gaze_sentence_count`` for ``gaze_sentences``). Used for CoGaze's sentence-level gaze loss.
    """

    def __init__(self, keys: KeysCollection = "gaze_sentences", image_key: str = "image") -> None:
        super().__init__(keys, image_key)

    def load(self, key: Hashable, value: Any, image: Any) -> dict[Hashable, Any]:
        sources = list(value or [])
        maps = [self.loader(source, image) for source in sources] or [self.loader(None, image)]
        # A MetaTensor on the image's grid, like the full-reading map.
        return {key: torch.cat(maps, dim=0), f"{str(key).removesuffix('s')}_count": len(sources)}


class LoadMedclImaged(LoadImaged):
    """MONAI's ``LoadImaged`` reading with :class:`~medcl.data.image_io.MedclReader` only.

    Given a reader at construction, MONAI still retries a file it fails on with its own readers (PIL opens a truncated
    JPEG MONAI then reports as unreadable, or not at all), and the error naming the file is lost. Passing the reader
    at call time makes it the only one: its :class:`~medcl.errors.InvalidInputError` reaches the caller.
    """

    def __init__(self, keys: KeysCollection, voi_lut: bool = False) -> None:
        self.medcl_reader = MedclReader(voi_lut=voi_lut)
        super().__init__(keys=keys, reader=self.medcl_reader, image_only=True, dtype=np.float32)

    def __call__(self, data: Mapping[Hashable, Any], reader: Any = None) -> dict[Hashable, Any]:
        return super().__call__(data, reader=reader or self.medcl_reader)


def load_transforms(
    image_key: str = "image",
    *,
    mask_keys: Sequence[str] = (),
    gaze_keys: Sequence[str] = (),
    sentence_key: str | None = None,
    voi_lut: bool = False,
) -> list[MapTransform]:
    """Load the image (``voi_lut`` for radiographs), its masks, its gaze heatmaps and (``sentence_key``) its stack
    of per-sentence gaze heatmaps onto one grid."""
    transforms: list[MapTransform] = [LoadMedclImaged(keys=image_key, voi_lut=voi_lut)]
    if mask_keys:
        transforms.append(LoadMedclImaged(keys=list(mask_keys)))
    if gaze_keys:
        transforms.append(LoadGazeHeatmapd(keys=list(gaze_keys), image_key=image_key))
    if sentence_key:
        transforms.append(LoadGazeSentencesd(sentence_key, image_key=image_key))
    return transforms
