"""The ``mimic-cxr`` adapter on generated trees in the official layouts (JPG and DICOM, .csv and .csv.gz)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.data.manifest import read_manifest
from medcl.data.prepare import get_adapter, prepare
from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.reports import read_report
from medcl.errors import ConfigError, InvalidInputError

ORIGINAL = 80


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    """Both image trees in one root, gzipped CSVs, and the planted bad files."""
    root = tmp_path_factory.mktemp("mimic")
    summary = generate_mimic_cxr(
        root, n_subjects=14, seed=2, image_size=40, original_size=ORIGINAL, dicom=True, gzip_csv=True,
        bad_files=True, workers=1,
    )  # fmt: skip
    return root, summary


def _run(root: Path, out: Path, **options) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    result = prepare("mimic-cxr", root, out, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype={"image_id": str, "subject_id": str, "study_id": str})
    return manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def _table(root: Path, stem: str) -> pd.DataFrame:
    return pd.read_csv(root / f"{stem}.csv.gz", dtype={"dicom_id": str})


@pytest.mark.parametrize("image_format", ["jpg", "dcm"])
def test_all_views_every_item_accounted_for(tree, tmp_path, image_format: str) -> None:
    root, summary = tree
    manifest, quarantine, counts = _run(root, tmp_path / "m.csv", views="all", image_format=image_format)
    planted = summary["bad_files"]
    bad = {d for ids in planted.values() for d in ids}
    assert counts["discovered"] == summary["images"]
    assert counts["processed"] + counts["quarantined"] == counts["discovered"]
    assert counts["rows"] == len(manifest) == summary["images"] - len(bad)
    assert set(quarantine["key"]) == bad and set(manifest["image_id"]).isdisjoint(bad)
    reasons = dict(zip(quarantine["key"], quarantine["reason"]))
    assert "no such file" in reasons[planted["missing"][0]]
    assert all("mimic-cxr-reports.zip" in reasons[d] for d in planted["missing_report"])
    for kind in ("truncated", "empty", "not_an_image"):
        # A clear InvalidInputError from the loader; the runner prefixes unexpected crashes with their type.
        assert not re.match(r"^\w+(Error|Exception):", reasons[planted[kind][0]]), reasons[planted[kind][0]]
    assert quarantine["path"].str.endswith(f".{image_format}").all()
    assert manifest["image"].str.endswith(f".{image_format}").all()
    assert manifest["image"].map(lambda p: Path(p).is_absolute() and Path(p).is_file()).all()


def test_manifest_rows_match_the_sources(tree, tmp_path) -> None:
    root, _ = tree
    manifest, _, counts = _run(root, tmp_path / "m.csv")
    metadata = _table(root, "mimic-cxr-2.0.0-metadata").set_index("dicom_id")
    split = _table(root, "mimic-cxr-2.0.0-split").set_index("dicom_id")
    labels = _table(root, "mimic-cxr-2.0.0-chexpert").set_index("study_id")
    assert set(manifest["view"]) <= {"PA", "AP"}  # views=frontal is the default
    assert counts["split_rows"] == manifest["split"].value_counts().to_dict()
    assert set(manifest["split"]) <= {"train", "val", "test"} and "val" in set(manifest["split"])
    assert manifest["gaze"].isna().all()
    for row in manifest.itertuples(index=False):
        codes = manifest.loc[manifest["image_id"] == row.image_id, list(CHEXPERT_LABELS)].to_numpy(dtype=float)[0]
        meta = metadata.loc[row.image_id]
        assert (row.subject_id, row.study_id) == (str(meta.subject_id), str(meta.study_id))
        assert row.view == meta.ViewPosition
        assert {"validate": "val"}.get(split.loc[row.image_id, "split"], split.loc[row.image_id, "split"]) == row.split
        assert (row.width, row.height, row.original_width, row.original_height) == (40, 40, ORIGINAL, ORIGINAL)
        expected = labels.loc[int(row.study_id), list(CHEXPERT_LABELS)].to_numpy(dtype=float)
        np.testing.assert_array_equal(codes, expected)  # raw codes, NaN (blank) kept
        sections = read_report(row.report)
        text = sections.get("findings") or (
            "" if sections.get("impression") else sections.get("last_paragraph", "")
        )  # fmt: skip
        assert (row.findings if isinstance(row.findings, str) else "") == text
        assert (row.impression if isinstance(row.impression, str) else "") == sections.get("impression", "")
        context = row.indication if isinstance(row.indication, str) else row.history
        assert isinstance(context, str) and "___" in context  # de-identified, never a name
    # The written manifest passes the framework's own validation (required columns, splits, disjoint patients).
    assert len(read_manifest(tmp_path / "m.csv")) == len(manifest)


def test_last_paragraph_fallback_reaches_the_manifest(tmp_path) -> None:
    root = tmp_path / "tree"
    generate_mimic_cxr(root, n_subjects=4, seed=0, image_size=32, workers=1)
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv", dtype={"dicom_id": str})
    first = metadata.iloc[0]
    report = root / "files" / f"p{str(first.subject_id)[:2]}" / f"p{first.subject_id}" / f"s{first.study_id}.txt"
    report.write_text(" EXAMINATION:  CHEST (PA AND LAT)\n \n COMPARISON:  ___\n \n Lungs are clear.\n Heart normal.\n")
    manifest, _, _ = _run(root, tmp_path / "m.csv", views="all")
    rows = manifest[manifest["study_id"] == str(first.study_id)]
    assert len(rows) and (rows["findings"] == "Lungs are clear. Heart normal.").all()
    assert rows["impression"].isna().all()


def test_negbio_labels_and_dicom_only_tree(tmp_path) -> None:
    dicom_only = tmp_path / "dicom"
    generate_mimic_cxr(dicom_only, n_subjects=5, seed=9, image_size=32, jpg=False, dicom=True, workers=1)
    manifest, quarantine, _ = _run(dicom_only, tmp_path / "d.csv", labels="negbio")  # image_format=auto finds .dcm
    assert len(quarantine) == 0 and manifest["image"].str.endswith(".dcm").all()
    negbio = pd.read_csv(dicom_only / "mimic-cxr-2.0.0-negbio.csv").set_index("study_id")
    chexpert = pd.read_csv(dicom_only / "mimic-cxr-2.0.0-chexpert.csv").set_index("study_id")
    expected = negbio.loc[manifest["study_id"].astype(int), list(CHEXPERT_LABELS)].to_numpy(dtype=float)
    np.testing.assert_array_equal(manifest[list(CHEXPERT_LABELS)].to_numpy(dtype=float), expected)
    other = chexpert.loc[manifest["study_id"].astype(int), list(CHEXPERT_LABELS)].to_numpy(dtype=float)
    assert not np.array_equal(expected, other, equal_nan=True)  # the option really switched the source


def test_process_pool_gives_the_same_manifest(tree, tmp_path) -> None:
    root, _ = tree
    serial, _, _ = _run(root, tmp_path / "a.csv")
    pooled = prepare("mimic-cxr", root, tmp_path / "b.csv", workers=2, progress=False)
    pd.testing.assert_frame_equal(
        serial, pd.read_csv(pooled.manifest, dtype={"image_id": str, "subject_id": str, "study_id": str})
    )


def test_missing_reports_stop_with_instructions(tmp_path) -> None:
    generate_mimic_cxr(tmp_path, n_subjects=3, seed=0, image_size=24, reports=False, workers=1)
    with pytest.raises(InvalidInputError, match=r"unzip it into the dataset root") as info:
        get_adapter("mimic-cxr")(tmp_path).discover()
    assert "mimic-cxr-reports.zip" in str(info.value)


def test_missing_or_malformed_index_files(tmp_path) -> None:
    generate_mimic_cxr(tmp_path, n_subjects=3, seed=0, image_size=24, workers=1)
    adapter = get_adapter("mimic-cxr")
    (tmp_path / "mimic-cxr-2.0.0-chexpert.csv").unlink()
    with pytest.raises(InvalidInputError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv") as info:
        adapter(tmp_path).discover()
    assert "MIMIC-CXR-JPG" in info.value.reason
    metadata = pd.read_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv")
    metadata.drop(columns=["ViewPosition"]).to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(InvalidInputError, match=r"lacks column\(s\) \['ViewPosition'\]"):
        adapter(tmp_path, labels="negbio").discover()
    shutil.rmtree(tmp_path / "files")
    metadata.to_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", index=False)
    with pytest.raises(InvalidInputError, match="no images found"):
        adapter(tmp_path, labels="negbio").discover()


def test_bad_options(tmp_path) -> None:
    adapter = get_adapter("mimic-cxr")
    with pytest.raises(ConfigError, match="labels"):
        adapter(tmp_path, labels="chexbert")
    with pytest.raises(ConfigError, match="views"):
        adapter(tmp_path, views="lateral")
    with pytest.raises(ConfigError, match="unknown mimic-cxr option"):
        adapter(tmp_path, view="all")
