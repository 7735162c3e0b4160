"""REFLACX adapter on the synthetic release written over a synthetic MIMIC-CXR-JPG tree."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import multivariate_normal

from medcl.data.adapters.reflacx import aggregate_codes, reading_codes
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr
from medcl.data.synthetic.reflacx import REFLACX_LABELS_PHASE_2_3, generate_reflacx

STORED, ORIGINAL, SCALE = (96, 80), (384, 320), 4


@pytest.fixture(scope="module")
def reflacx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("reflacx")
    generate_mimic_cxr(base / "mimic", n_subjects=6, seed=5, image_size=STORED, original_size=ORIGINAL, workers=1)
    generate_reflacx(base / "mimic", base / "reflacx", n_images=4, seed=5)
    result = prepare(
        "reflacx",
        base / "reflacx",
        base / "out" / "reflacx.csv",
        workers=1,
        progress=False,
        mimic_root=str(base / "mimic"),
    )
    assert result.counts == {"discovered": 4, "processed": 4, "quarantined": 0, "rows": 4}
    return {"mimic": base / "mimic", "root": base / "reflacx", "manifest": result.manifest}


def _metadata(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(root / "main_data" / f"metadata_phase_{p}.csv", dtype=str) for p in (1, 2, 3)])


def test_release_layout_and_discarded_reading(reflacx: dict[str, Path]) -> None:
    metadata = _metadata(reflacx["root"])
    assert all(re.fullmatch(r"P[12]\d{2}R\d{6}|P300R\d{6}", i) for i in metadata["id"])
    discarded = metadata[metadata["eye_tracking_data_discarded"] == "True"]["id"].tolist()
    assert len(discarded) == 1 and not (reflacx["root"] / "main_data" / discarded[0] / "fixations.csv").exists()
    manifest = read_manifest(reflacx["manifest"])
    readings = ";".join(manifest["readings"]).split(";")
    assert sorted(readings) == sorted(set(metadata["id"]) - set(discarded))  # every kept reading, once


def _official_heatmap(fixations: pd.DataFrame) -> np.ndarray:
    """generate_heatmaps.py's formulation: a pdf over the shown rectangle, weighted by duration, summed to 1."""
    img = np.zeros(ORIGINAL)
    for _, r in fixations.iterrows():
        x0, y0, x1, y1 = (int(r[f"{a}_shown_from_image"]) for a in ("xmin", "ymin", "xmax", "ymax"))
        yy, xx = np.mgrid[0 : y1 - y0, 0 : x1 - x0]
        pdf = multivariate_normal(
            [r.y_position - y0, r.x_position - x0],
            [r.angular_resolution_y_pixels_per_degree**2, r.angular_resolution_x_pixels_per_degree**2],
        ).pdf(np.dstack([yy, xx]))
        img[y0:y1, x0:x1] += pdf * (r.timestamp_end_fixation - r.timestamp_start_fixation)
    return img / img.sum()


def test_heatmap_is_mean_of_official_reading_maps(reflacx: dict[str, Path]) -> None:
    manifest = read_manifest(reflacx["manifest"])
    multi = manifest[manifest["readings"].str.contains(";")].iloc[0]  # the phase-1/2 image with several readers
    expected = np.mean(
        [
            _official_heatmap(pd.read_csv(reflacx["root"] / "main_data" / r / "fixations.csv"))
            for r in multi.readings.split(";")
        ],
        axis=0,
    )
    expected = expected.reshape(STORED[0], SCALE, STORED[1], SCALE).sum(axis=(1, 3))
    heatmap = np.load(multi.gaze)
    assert heatmap.dtype == np.float32 and heatmap.shape == STORED
    np.testing.assert_allclose(heatmap, expected / expected.sum(), rtol=1e-4, atol=1e-9)


def test_sentences_follow_the_transcription(reflacx: dict[str, Path]) -> None:
    for row in read_manifest(reflacx["manifest"]).itertuples(index=False):
        records = json.loads(Path(row.gaze_sentences).read_text())
        for reading in row.readings.split(";"):
            text = (reflacx["root"] / "main_data" / reading / "transcription.txt").read_text()
            mine = [r for r in records if r["reading"] == reading]
            assert mine and " ".join(r["text"] for r in mine) in text
            assert all(np.load(r["heatmap"]).shape == STORED for r in mine)


def test_label_mapping_and_aggregation() -> None:
    labels = REFLACX_LABELS_PHASE_2_3
    reader = {label: 0 for label in labels} | {
        "Enlarged cardiac silhouette": 4,
        "Pleural abnormality": 3,
        "Atelectasis": 2,
        "Support devices": True,
        "Other": "",
    }
    codes = reading_codes(reader, [*labels, "Other"])
    assert codes["Cardiomegaly"] == 1.0 and codes["Pleural Effusion"] == -1.0 and codes["Atelectasis"] == 0.0
    assert codes["Support Devices"] == 1.0 and codes["No Finding"] == 0.0 and "Pneumonia" not in codes
    agg = aggregate_codes([{"Edema": 1.0}, {"Edema": 1.0}, {"Edema": 0.0, "Fracture": 0.0}])
    assert agg["Edema"] == 1.0 and agg["Fracture"] == 0.0 and np.isnan(agg["Pneumonia"])
    assert aggregate_codes([{"Edema": 1.0}, {"Edema": 0.0}])["Edema"] == -1.0  # no majority: uncertain


def test_missing_fixations_of_a_kept_reading_is_quarantined(reflacx: dict[str, Path], tmp_path: Path) -> None:
    root = tmp_path / "reflacx"
    shutil.copytree(reflacx["root"], root)
    metadata = pd.read_csv(root / "main_data" / "metadata_phase_3.csv", dtype=str)
    victim = root / "main_data" / metadata["id"].iloc[0] / "fixations.csv"
    victim.unlink()
    result = prepare("reflacx", root, tmp_path / "out.csv", workers=1, progress=False, mimic_root=str(reflacx["mimic"]))
    quarantine = pd.read_csv(result.quarantine)
    assert result.counts["quarantined"] == 1 and str(victim) in quarantine["reason"][0]
