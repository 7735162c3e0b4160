"""TotalSegmentator adapter: meta.csv parsing, class selection/merging into one label map, bad cases."""

from __future__ import annotations

import gzip
import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.totalsegmentator import TotalSegmentatorAdapter, parse_classes
from medcl.data.prepare import prepare
from medcl.data.synthetic.ct_phantom import CT_STRUCTURES
from medcl.data.synthetic.totalsegmentator import TOTALSEG_EMPTY_CLASSES, generate_totalsegmentator
from medcl.errors import ConfigError, InvalidInputError

SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def totalseg(tmp_path_factory):
    return generate_totalsegmentator(tmp_path_factory.mktemp("ts"), n_cases=4, shape=SHAPE, seed=1)


def _run(root, tmp_path, name="ts.csv", **options):
    result = prepare("totalsegmentator", root, tmp_path / name, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype=str, keep_default_na=False)
    return manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def _mask(case_dir, name):
    return np.asarray(nib.load(case_dir / "segmentations" / f"{name}.nii.gz").dataobj)


def test_default_merges_every_class_with_splits_from_meta(totalseg, tmp_path):
    manifest, quarantine, summary = _run(totalseg, tmp_path)
    assert quarantine.empty and summary["rows"] == 4
    meta = pd.read_csv(totalseg / "meta.csv", sep=";", encoding="utf-8-sig", dtype=str).set_index("image_id")
    for row in manifest.itertuples():
        assert row.split == meta.loc[row.image_id, "split"] and row.study_type == meta.loc[row.image_id, "study_type"]
    names = json.loads(manifest["label_names"][0])
    expected = sorted([s.name for s in CT_STRUCTURES] + list(TOTALSEG_EMPTY_CLASSES))
    assert [names[str(i)] for i in range(1, len(expected) + 1)] == expected
    row = manifest.iloc[0]
    label = nib.load(row.label)
    ct = nib.load(row.image)
    np.testing.assert_allclose(label.affine, ct.affine)
    label_map = np.asarray(label.dataobj)
    case_dir = totalseg / row.image_id
    for value, name in ((expected.index("liver") + 1, "liver"), (expected.index("aorta") + 1, "aorta")):
        np.testing.assert_array_equal(label_map == value, _mask(case_dir, name) == 1)
    assert "age" not in manifest.columns and "gender" not in manifest.columns


def test_classes_option_picks_and_merges(totalseg, tmp_path):
    manifest, quarantine, _ = _run(totalseg, tmp_path, classes="kidney=kidney_left+kidney_right, liver")
    assert quarantine.empty
    assert json.loads(manifest["label_names"][0]) == {"0": "background", "1": "kidney", "2": "liver"}
    row = manifest.iloc[1]
    label_map = np.asarray(nib.load(row.label).dataobj)
    case_dir = totalseg / row.image_id
    kidneys = (_mask(case_dir, "kidney_left") == 1) | (_mask(case_dir, "kidney_right") == 1)
    np.testing.assert_array_equal(label_map == 1, kidneys)
    np.testing.assert_array_equal(label_map == 2, _mask(case_dir, "liver") == 1)
    assert set(np.unique(label_map)) == {0, 1, 2}


def test_parse_classes_rejects_bad_specs():
    assert parse_classes("a, b=c+d") == [("a", ["a"]), ("b", ["c", "d"])]
    for spec in ("", "../etc", "x=y+"):
        with pytest.raises(ConfigError, match="class"):
            parse_classes(spec)


def test_meta_variants_and_bad_cases(totalseg, tmp_path):
    root = shutil.copytree(totalseg, tmp_path / "copy")
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    shutil.rmtree(cases[0])  # listed in meta.csv, folder gone
    (root / "s9999").mkdir()  # folder without a meta.csv row
    mask_path = cases[1] / "segmentations" / "spleen.nii.gz"
    mask = nib.load(mask_path)
    nib.save(nib.Nifti1Image(np.asarray(mask.dataobj) * 2, mask.affine), mask_path)
    (cases[2] / "segmentations" / "liver.nii.gz").unlink()
    # Comma-separated and gzipped meta (a user re-saved it): still read by column name.
    meta = pd.read_csv(root / "meta.csv", sep=";", encoding="utf-8-sig", dtype=str)
    (root / "meta.csv").unlink()
    with gzip.open(root / "meta.csv.gz", "wt") as handle:
        meta[["split", "image_id", "study_type"]].to_csv(handle, index=False)

    manifest, quarantine, summary = _run(root, tmp_path, classes="spleen,liver")
    assert summary["discovered"] == 5 and summary["processed"] == 1 and len(manifest) == 1
    reasons = dict(zip(quarantine["key"], quarantine["reason"]))
    assert reasons[cases[0].name] == "listed in meta.csv but the case folder is missing"
    assert reasons["s9999"] == "case folder not listed in meta.csv (no split)"
    assert "mask spleen" in reasons[cases[1].name] and "not binary" in reasons[cases[1].name]
    assert "mask liver" in reasons[cases[2].name] and "file not found" in reasons[cases[2].name]


def test_missing_meta_is_fatal(tmp_path):
    with pytest.raises(InvalidInputError, match=r"meta\.csv not found"):
        TotalSegmentatorAdapter(tmp_path).discover()
    (tmp_path / "meta.csv").write_text("id;split\ns0001;train\n")
    with pytest.raises(InvalidInputError, match="image_id"):
        TotalSegmentatorAdapter(tmp_path).discover()
