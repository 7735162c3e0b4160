"""A radiograph with a bright blob, its mask and a gaze heatmap peaking on it, as files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

HEIGHT, WIDTH = 48, 64
BLOB_ROW, BLOB_COL = 12, 44  # stored pixel (row, column): upper right of the picture


def disk(radius: float) -> np.ndarray:
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    return ((rows - BLOB_ROW) ** 2 + (cols - BLOB_COL) ** 2) <= radius**2


@pytest.fixture
def cxr_item(tmp_path: Path) -> dict[str, str]:
    image = np.full((HEIGHT, WIDTH), 40, np.uint8)
    image[disk(4)] = 255
    Image.fromarray(image).save(tmp_path / "cxr.png")
    Image.fromarray((disk(6) * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    gaze = np.exp(-((rows - BLOB_ROW) ** 2 + (cols - BLOB_COL) ** 2) / (2 * 3.0**2)).astype(np.float32)
    np.save(tmp_path / "gaze.npy", gaze / gaze.sum())
    return {"image": str(tmp_path / "cxr.png"), "mask": str(tmp_path / "mask.png"), "gaze": str(tmp_path / "gaze.npy")}
