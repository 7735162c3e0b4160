"""BraTS adapter: 2021 and 2023 layouts, multi-sequence rows, time points, missing segmentations."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.brats import BraTSAdapter
from medcl.data.manifest import check_patient_disjoint
from medcl.data.prepare import prepare
from medcl.data.synthetic.brats import generate_brats
from medcl.errors import InvalidInputError

SHAPE = (24, 24, 16)


@pytest.fixture(scope="module")
def brats2021(tmp_path_factory):
    return generate_brats(tmp_path_factory.mktemp("b21"), n_cases=5, n_unlabelled=1, shape=SHAPE).parent


def _run(root, tmp_path, name="brats.csv", **options):
    result = prepare("brats", root, tmp_path / name, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype=str, keep_default_na=False)
    return manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def test_2021_rows_have_one_column_per_sequence(brats2021, tmp_path):
    manifest, quarantine, summary = _run(brats2021, tmp_path)
    assert summary["discovered"] == 6 and len(manifest) == 5 and len(quarantine) == 1
    assert "segmentation" in quarantine["reason"][0] and "missing" in quarantine["reason"][0]
    assert manifest["channel_names"].eq("flair,t1,t1ce,t2").all() and manifest["channels"].eq("4").all()
    for row in manifest.itertuples():
        case = row.image_id
        assert row.image == row.image_flair and row.image_flair.endswith(f"{case}/{case}_flair.nii.gz")
        assert row.image_t1ce.endswith(f"{case}_t1ce.nii.gz") and row.label.endswith(f"{case}_seg.nii.gz")
        assert row.subject_id == case
        assert row.orientation == "".join(nib.aff2axcodes(nib.load(row.image).affine))
    assert json.loads(manifest["label_names"][0]) == {"0": "background", "1": "NCR", "2": "ED", "4": "ET"}
    assert manifest["split"].value_counts().to_dict() == {"train": 4, "val": 1}
    # Unlabelled cases can be kept as test rows instead.
    manifest, quarantine, _ = _run(brats2021, tmp_path, "keep.csv", require_label="false")
    assert quarantine.empty and (manifest.loc[manifest.label == "", "split"] == "test").all()
    assert (manifest.label == "").sum() == 1


def test_bad_sequences_and_labels_are_quarantined(brats2021, tmp_path):
    root = shutil.copytree(brats2021, tmp_path / "copy")
    cases = sorted(p for p in root.rglob("BraTS2021_*") if p.is_dir())
    (cases[0] / f"{cases[0].name}_t2.nii.gz").unlink()
    flair = nib.load(cases[1] / f"{cases[1].name}_flair.nii.gz")
    shifted = flair.affine.copy()
    shifted[0, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(flair.dataobj), shifted), cases[1] / f"{cases[1].name}_t1.nii.gz")
    seg_path = cases[2] / f"{cases[2].name}_seg.nii.gz"
    seg = np.asarray(nib.load(seg_path).dataobj).copy()
    seg[seg == 4] = 3  # 2023 numbering inside a 2021 case
    nib.save(nib.Nifti1Image(seg, nib.load(cases[2] / f"{cases[2].name}_flair.nii.gz").affine), seg_path)
    manifest, quarantine, summary = _run(root, tmp_path, require_label="false")
    reasons = dict(zip(quarantine["key"], quarantine["reason"]))
    assert summary["processed"] + summary["quarantined"] == summary["discovered"] == len(manifest) + len(quarantine)
    assert "t2" in reasons[cases[0].name] and "file not found" in reasons[cases[0].name]
    assert "not on the FLAIR grid" in reasons[cases[1].name]
    assert "unexpected label values [3]" in reasons[cases[2].name]


def test_2023_layout_time_points_share_a_subject(tmp_path):
    root = generate_brats(tmp_path / "b23", n_cases=8, shape=SHAPE, edition=2023, seed=2)
    manifest, quarantine, _ = _run(root, tmp_path, val_fraction="0.5")
    assert quarantine.empty and len(manifest) == 8
    followups = manifest[manifest.image_id.str.endswith("-001")]
    assert len(followups) == 2
    for row in followups.itertuples():
        baseline = manifest.set_index("image_id").loc[row.image_id[:-3] + "000"]
        assert row.subject_id == baseline.subject_id == row.image_id[:-4]
        assert row.split == baseline.split  # time points of one patient never straddle splits
    check_patient_disjoint(manifest)
    first = manifest.iloc[0]
    assert first.image_flair.endswith("-t2f.nii.gz") and first.image_t1.endswith("-t1n.nii.gz")
    assert first.image_t1ce.endswith("-t1c.nii.gz") and first.image_t2.endswith("-t2w.nii.gz")
    assert json.loads(first.label_names)["3"] == "ET"


def test_no_cases_is_a_clear_error(tmp_path):
    (tmp_path / "BraTS_archive_notes").mkdir()
    with pytest.raises(InvalidInputError, match="no BraTS case folders"):
        BraTSAdapter(tmp_path).discover()
