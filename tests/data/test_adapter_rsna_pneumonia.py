"""RSNA Pneumonia adapter on synthetic DICOMs carrying planted PHI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from medcl.data.adapters.common import hash_split
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.rsna_pneumonia import generate_rsna_pneumonia


@pytest.fixture(scope="module")
def rsna(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("rsna")
    root = generate_rsna_pneumonia(base / "rsna", n_patients=12, seed=2, image_size=96, positive_fraction=0.5)
    result = prepare("rsna-pneumonia", root, base / "out" / "rsna.csv", workers=1, progress=False, box_masks="true")
    return {"root": root, "out": base / "out", "manifest": result.manifest}


def test_boxes_labels_and_masks(rsna: dict[str, Path]) -> None:
    labels = pd.read_csv(rsna["root"] / "stage_2_train_labels.csv")
    manifest = read_manifest(rsna["manifest"])
    assert len(manifest) == labels["patientId"].nunique() and manifest["Pneumonia"].sum() >= 1
    for row in manifest.itertuples(index=False):
        own = labels[labels["patientId"] == row.image_id]
        boxes = json.loads(row.boxes)
        assert row.Pneumonia == own["Target"].max() and len(boxes) == row.n_boxes
        assert boxes == own.dropna(subset=["x"])[["x", "y", "width", "height"]].to_numpy(float).tolist()
        mask = np.asarray(Image.open(row.label))
        expected = np.zeros((96, 96), dtype=np.uint8)
        for x, y, w, h in boxes:
            expected[int(y) : int(y + h), int(x) : int(x + w)] = 1
        np.testing.assert_array_equal(mask, expected)
        assert row.split == hash_split(row.image_id)


def test_planted_phi_never_reaches_outputs(rsna: dict[str, Path]) -> None:
    secrets = set()
    for path in (rsna["root"] / "stage_2_train_images").glob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate}
    assert any(s.startswith("MRN") for s in secrets)
    written = "".join(p.read_text() for p in rsna["out"].glob("*.*") if p.suffix in (".csv", ".json"))
    assert not [s for s in secrets if s in written]


def test_truncated_dicom_is_quarantined(rsna: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    shutil.copytree(rsna["root"], root)
    victim = sorted((root / "stage_2_train_images").glob("*.dcm"))[0]
    victim.write_bytes(victim.read_bytes()[:400])
    result = prepare("rsna-pneumonia", root, tmp_path / "m.csv", workers=1, progress=False)
    quarantine = pd.read_csv(result.quarantine)
    assert result.counts["quarantined"] == 1 and quarantine["path"][0] == str(victim)
