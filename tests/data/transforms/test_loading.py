"""Loading image, masks and gaze heatmaps onto one grid (medcl.data.transforms.loading)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from medcl.data.transforms import LoadGazeHeatmap, LoadGazeHeatmapd, LoadGazeSentencesd, load_transforms
from medcl.errors import InvalidInputError

from .conftest import BLOB_COL, BLOB_ROW, HEIGHT, WIDTH


def _peak(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(tensor[0].argmax()), tensor.shape[1:]))


def test_gaze_heatmap_lands_on_the_image_grid(cxr_item: dict[str, str]) -> None:
    data = Compose(load_transforms(mask_keys=["mask"], gaze_keys=["gaze"]))(cxr_item)
    assert data["image"].shape == data["gaze"].shape == data["mask"].shape == (1, WIDTH, HEIGHT)
    assert _peak(data["gaze"]) == (BLOB_COL, BLOB_ROW)  # (x, y) = (column, row) of the stored picture
    assert data["image"][0, BLOB_COL, BLOB_ROW] == 255
    assert torch.equal(data["gaze"].affine, data["image"].affine) and data["gaze_present"]


def test_heatmap_of_the_wrong_size_or_missing(cxr_item: dict[str, str], tmp_path: Path) -> None:
    np.save(tmp_path / "small.npy", np.zeros((HEIGHT // 2, WIDTH // 2), np.float32))
    loader = Compose(load_transforms(gaze_keys=["gaze"]))
    with pytest.raises(RuntimeError) as caught:  # MONAI's Compose wraps errors; the cause is medcl's
        loader({**cxr_item, "gaze": str(tmp_path / "small.npy")})
    cause = caught.value.__cause__
    assert isinstance(cause, InvalidInputError) and cause.path == str(tmp_path / "small.npy")
    assert "gaze heatmap is (24, 32) (H, W) but the image is stored as (48, 64)" in cause.reason
    without = loader({"image": cxr_item["image"]})
    assert without["gaze_present"] is False and float(without["gaze"].abs().sum()) == 0.0
    from_array = LoadGazeHeatmapd(keys="gaze")({"image": without["image"], "gaze": np.load(cxr_item["gaze"])})
    assert _peak(from_array["gaze"]) == (BLOB_COL, BLOB_ROW)
    with pytest.raises(InvalidInputError, match="no gaze heatmap under 'gaze'"):
        LoadGazeHeatmapd(keys="gaze", allow_missing=False)({"image": without["image"]})
    with pytest.raises(InvalidInputError, match="2-D"):
        LoadGazeHeatmap()(np.zeros((2, HEIGHT, WIDTH)), without["image"])
    with pytest.raises(InvalidInputError, match="NaN"):  # in-memory maps get the checks of .npy files
        LoadGazeHeatmap()(np.full((HEIGHT, WIDTH), np.nan), without["image"])
    with pytest.raises(TypeError, match="MetaTensor"):
        LoadGazeHeatmap()(cxr_item["gaze"], torch.zeros(1, WIDTH, HEIGHT))


def test_array_and_dictionary_heatmap_loaders_agree(cxr_item: dict[str, str]) -> None:
    image = Compose(load_transforms())(cxr_item)["image"]
    for source in (cxr_item["gaze"], np.load(cxr_item["gaze"]), None):
        alone = LoadGazeHeatmap()(source, image)
        item = {"image": image, "other": 1, **({"gaze": source} if source is not None else {})}
        wrapped = LoadGazeHeatmapd(keys="gaze")(item)
        assert isinstance(alone, MetaTensor) and torch.equal(wrapped["gaze"].as_tensor(), alone.as_tensor())
        assert torch.equal(wrapped["gaze"].affine, alone.affine) and wrapped["gaze_present"] is (source is not None)
        assert wrapped["other"] == 1 and "gaze_present" not in item  # a new dict: the input item is not edited


def test_sentence_heatmaps_stack_on_the_image_grid(cxr_item: dict[str, str], tmp_path: Path) -> None:
    image = Compose(load_transforms())(cxr_item)["image"]
    np.save(tmp_path / "second.npy", np.ones((HEIGHT, WIDTH), np.float32))
    sentences = [cxr_item["gaze"], str(tmp_path / "second.npy")]
    out = LoadGazeSentencesd()({"image": image, "gaze_sentences": sentences})
    assert out["gaze_sentences"].shape == (2, WIDTH, HEIGHT) and out["gaze_sentence_count"] == 2
    assert _peak(out["gaze_sentences"][:1]) == (BLOB_COL, BLOB_ROW) and bool((out["gaze_sentences"][1] == 1).all())
    alone = LoadGazeHeatmap()(sentences[0], image)
    torch.testing.assert_close(out["gaze_sentences"][:1].as_tensor(), alone.as_tensor())
    empty = LoadGazeSentencesd()({"image": image, "gaze_sentences": []})
    assert empty["gaze_sentences"].shape == (1, WIDTH, HEIGHT) and empty["gaze_sentence_count"] == 0
    assert float(empty["gaze_sentences"].abs().sum()) == 0.0
