"""EGD-CXR adapter on the synthetic release written over a synthetic MIMIC-CXR-JPG tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage

from medcl.data.adapters.egd_cxr import chx_columns
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.egd_cxr import generate_egd_cxr
from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.errors import ConfigError, InvalidInputError

STORED, ORIGINAL, SCALE = (96, 80), (384, 320), 4  # JPGs are 4x smaller than the DICOMs gaze refers to


@pytest.fixture(scope="module")
def egd(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("egd")
    generate_mimic_cxr(base / "mimic", n_subjects=6, seed=3, image_size=STORED, original_size=ORIGINAL, workers=1)
    generate_egd_cxr(base / "mimic", base / "egd", n_images=4, seed=3)
    result = prepare(
        "egd-cxr", base / "egd", base / "out" / "egd.csv", workers=1, progress=False, mimic_root=str(base / "mimic")
    )
    assert result.counts == {"discovered": 4, "processed": 4, "quarantined": 0, "rows": 4}
    return {"base": base, "mimic": base / "mimic", "root": base / "egd", "manifest": result.manifest}


def test_manifest_rows_link_to_mimic(egd: dict[str, Path]) -> None:
    manifest = read_manifest(egd["manifest"])
    master = pd.read_csv(egd["root"] / "master_sheet.csv", dtype={"dicom_id": str})
    split = pd.read_csv(egd["mimic"] / "mimic-cxr-2.0.0-split.csv", dtype=str).set_index("dicom_id")
    assert sorted(manifest["image_id"]) == sorted(master["dicom_id"])
    for row in manifest.itertuples(index=False):
        assert Path(row.image).is_file() and row.image.endswith(f"s{row.study_id}/{row.image_id}.jpg")
        assert row.subject_id == split.loc[row.image_id, "subject_id"]
        assert row.split == {"validate": "val"}.get(split.loc[row.image_id, "split"], split.loc[row.image_id, "split"])
    # Labels are the master sheet's __chx codes; the indication's embedded newline survived as one field.
    merged = manifest.merge(master, left_on="image_id", right_on="dicom_id")
    for label in CHEXPERT_LABELS:
        column = f"{label.lower().replace(' ', '_')}__chx"
        np.testing.assert_array_equal(merged[label].to_numpy(float), merged[column].to_numpy(float))
    assert all("Evaluate for pneumonia" in text for text in manifest["indication"])
    assert not {"gender", "anchor_age", "stay_id"} & set(manifest.columns)


def test_heatmap_matches_official_recipe_at_original_size(egd: dict[str, Path]) -> None:
    manifest = read_manifest(egd["manifest"])
    fixations = pd.read_csv(egd["root"] / "fixations.csv", dtype={"DICOM_ID": str})
    row = manifest.iloc[0]
    mine = fixations[fixations["DICOM_ID"] == row.image_id]
    counts = np.zeros(ORIGINAL)
    for x, y in zip(mine["X_ORIGINAL"], mine["Y_ORIGINAL"]):
        if x >= 0 and y >= 0:
            counts[y, x] += 1
    official = ndimage.gaussian_filter(counts, 150)  # the EGD script's call, at DICOM resolution
    expected = official.reshape(STORED[0], SCALE, STORED[1], SCALE).sum(axis=(1, 3))
    heatmap = np.load(row.gaze)
    with Image.open(row.image) as image:
        assert heatmap.shape == (image.height, image.width) == STORED and heatmap.dtype == np.float32
    np.testing.assert_allclose(heatmap, expected / expected.sum(), rtol=1e-4, atol=1e-9)


def test_sentence_heatmaps_fall_on_the_finding(egd: dict[str, Path]) -> None:
    truth = pd.read_csv(egd["mimic"] / "synthetic_truth.csv", dtype={"dicom_id": str})
    checked = 0
    for row in read_manifest(egd["manifest"]).itertuples(index=False):
        records = json.loads(Path(row.gaze_sentences).read_text())
        assert records and all(Path(r["heatmap"]).is_file() and r["end_s"] >= r["begin_s"] for r in records)
        for record in records:
            if "heart is enlarged" not in record["text"]:
                continue
            box = truth[(truth["dicom_id"] == row.image_id) & (truth["finding"] == "Cardiomegaly")].iloc[0]
            heatmap = np.load(record["heatmap"])
            inside = heatmap[box.y0 // SCALE : box.y1 // SCALE + 1, box.x0 // SCALE : box.x1 // SCALE + 1].sum()
            full = np.load(row.gaze)
            full_inside = full[box.y0 // SCALE : box.y1 // SCALE + 1, box.x0 // SCALE : box.x1 // SCALE + 1].sum()
            assert inside > full_inside  # the sentence's gaze is more concentrated on the heart than the whole read
            checked += 1
    assert checked >= 1


def test_bad_inputs_are_reported(egd: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mimic_root"):
        prepare("egd-cxr", egd["root"], tmp_path / "m.csv", workers=1, progress=False)
    root = tmp_path / "egd"
    shutil.copytree(egd["root"], root)
    victim = sorted((root / "audio_segmentation_transcripts").iterdir())[0]
    (victim / "transcript.json").write_text("{not json")
    result = prepare(
        "egd-cxr", root, tmp_path / "out" / "m.csv", workers=1, progress=False, mimic_root=str(egd["mimic"])
    )
    quarantine = pd.read_csv(result.quarantine)
    assert result.counts["quarantined"] == 1 and quarantine["key"][0] == victim.name
    assert str(victim / "transcript.json") in quarantine["reason"][0]
    (root / "master_sheet.csv").unlink()
    with pytest.raises(InvalidInputError, match=r"master_sheet\.csv"):
        prepare("egd-cxr", root, tmp_path / "m2.csv", workers=1, progress=False, mimic_root=str(egd["mimic"]))


def test_chx_column_spellings() -> None:
    assert chx_columns(["atelectasis__chx", "Pleural Effusion_chx", "no_finding__chx", "dx1", "foo_chx"]) == {
        "atelectasis__chx": "Atelectasis",
        "Pleural Effusion_chx": "Pleural Effusion",
        "no_finding__chx": "No Finding",
    }
