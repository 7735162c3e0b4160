"""SIIM-ACR adapter: the SIIM RLE convention, masks, pseudonymous patients, planted PHI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image

from medcl.data.adapters.siim_acr import rle_to_mask
from medcl.data.deid import load_key
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.siim_acr import generate_siim_acr, mask_to_rle
from medcl.errors import InvalidInputError


def test_rle_hand_example() -> None:
    # 3 x 3 image, pixels numbered down the columns: "1 2 3 1" = pixels 1-2, then (after a gap of 3) pixel 6.
    expected = np.array([[0, 0, 1], [1, 0, 0], [1, 0, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(rle_to_mask("1 2 3 1", 3, 3), expected)
    assert mask_to_rle(expected) == "1 2 3 1"
    assert rle_to_mask(" -1", 3, 3).sum() == 0 and mask_to_rle(np.zeros((3, 3))) == "-1"
    with pytest.raises(InvalidInputError, match="past"):
        rle_to_mask("5 10", 3, 3, source="train-rle.csv")


def test_rle_round_trip_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for shape in [(7, 5), (32, 40)]:
        mask = (rng.random(shape) < 0.3).astype(np.uint8)
        np.testing.assert_array_equal(rle_to_mask(mask_to_rle(mask), *shape), mask)


@pytest.fixture(scope="module")
def siim(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("siim")
    root = generate_siim_acr(base / "siim", n_patients=10, seed=4, image_size=96, positive_fraction=0.6)
    result = prepare("siim-acr", root, base / "out" / "siim.csv", workers=1, progress=False)
    return {"root": root, "out": base / "out", "manifest": result.manifest, "counts": result.counts}


def test_masks_and_patients(siim: dict[str, Path]) -> None:
    table = pd.read_csv(siim["root"] / "train-rle.csv", skipinitialspace=True)
    assert " EncodedPixels" in pd.read_csv(siim["root"] / "train-rle.csv").columns  # the release's odd header
    manifest = read_manifest(siim["manifest"])
    assert len(manifest) == table["ImageId"].nunique() and manifest["Pneumothorax"].sum() >= 1
    key = load_key()
    image_id_of = {key.uid(image_id): image_id for image_id in table["ImageId"]}  # manifest ids are keyed UIDs
    for row in manifest.itertuples(index=False):
        expected = np.zeros((96, 96), dtype=np.uint8)
        for rle in table.loc[table["ImageId"] == image_id_of[row.image_id], "EncodedPixels"]:
            expected |= rle_to_mask(rle, 96, 96)
        np.testing.assert_array_equal(np.asarray(Image.open(row.label)), expected)
        assert row.Pneumothorax == float(expected.any())
    # Same DICOM PatientID -> same pseudonym (and split); the pseudonym is not the MRN. The manifest points at
    # de-identified copies: the source file of a row is the one whose keyed SOPInstanceUID is its image_id.
    sources = {key.uid(path.stem): path for path in (siim["root"] / "dicom-images-train").rglob("*.dcm")}
    by_patient: dict[str, set[str]] = {}
    for row in manifest.itertuples(index=False):
        source = pydicom.dcmread(sources[row.image_id], stop_before_pixels=True)
        by_patient.setdefault(str(source.PatientID), set()).add(row.subject_id)
        copy = pydicom.dcmread(row.image, stop_before_pixels=True)
        assert copy.PatientID == row.subject_id and copy.SOPInstanceUID == row.image_id
        assert copy.StudyInstanceUID == row.study_id == key.uid(source.StudyInstanceUID)
    assert all(len(s) == 1 for s in by_patient.values()) and len(manifest) > len(by_patient)
    assert not set(by_patient) & set(manifest["subject_id"])


def test_planted_phi_never_reaches_outputs(siim: dict[str, Path]) -> None:
    secrets = set()
    for path in (siim["root"] / "dicom-images-train").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), ds.PatientID, ds.PatientBirthDate, ds.StudyDate}
    written = "".join(p.read_text() for p in siim["out"].glob("*.*") if p.suffix in (".csv", ".json"))
    assert secrets and not [s for s in secrets if s in written]


def test_missing_dicom_is_quarantined(siim: dict[str, Path], tmp_path: Path) -> None:
    table = pd.read_csv(siim["root"] / "train-rle.csv")
    extra = pd.DataFrame([{"ImageId": "1.2.3.4.5", " EncodedPixels": " -1"}])
    pd.concat([table, extra]).to_csv(tmp_path / "train-rle.csv", index=False)
    (tmp_path / "dicom-images-train").symlink_to(siim["root"] / "dicom-images-train")
    result = prepare("siim-acr", tmp_path, tmp_path / "out" / "m.csv", workers=1, progress=False)
    quarantine = pd.read_csv(result.quarantine)
    # The report names the item by its keyed UID (its real one may identify the patient).
    assert result.counts["quarantined"] == 1 and quarantine["key"][0] == load_key().uid("1.2.3.4.5")
