"""ACDC adapter: one row per ED/ES frame, Info.cfg parsing, testing folder with and without ground truth."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.acdc import ACDCAdapter, read_info
from medcl.data.manifest import check_patient_disjoint
from medcl.data.prepare import prepare
from medcl.data.synthetic.acdc import generate_acdc
from medcl.errors import InvalidInputError

SHAPE = (32, 32, 6)


@pytest.fixture(scope="module")
def acdc(tmp_path_factory):
    return generate_acdc(tmp_path_factory.mktemp("acdc"), n_train=5, n_test=2, shape=SHAPE, n_frames=8).parent


def _run(root, tmp_path, name="acdc.csv", **options):
    result = prepare("acdc", root, tmp_path / name, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype=str, keep_default_na=False)
    return manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def test_one_row_per_labelled_frame(acdc, tmp_path):
    manifest, quarantine, summary = _run(acdc, tmp_path)
    assert quarantine.empty and summary["discovered"] == 14 and len(manifest) == 14
    check_patient_disjoint(manifest)
    phases = manifest.groupby("subject_id")["phase"].apply(sorted)
    assert len(phases) == 7 and all(p == ["ED", "ES"] for p in phases)
    first = manifest.set_index("image_id").loc["patient001_frame01"]
    info = read_info(acdc / "database/training/patient001/Info.cfg")
    assert first.phase == "ED" and first.frame == info["ED"] == "1" and first.group == info["Group"] == "DCM"
    es = manifest[(manifest.subject_id == "patient001") & (manifest.phase == "ES")].iloc[0]
    assert es.image_id == f"patient001_frame{int(info['ES']):02d}" and es.label.endswith(f"{es.image_id}_gt.nii.gz")
    assert set(manifest.loc[manifest.subject_id.str[-3] == "1", "split"]) == {"test"}  # patient1xx = testing
    assert manifest["split"].value_counts().to_dict() == {"train": 8, "test": 4, "val": 2}
    header = nib.load(first.image)
    assert float(first.spacing_z) == pytest.approx(10.0) and first.orientation == "".join(
        nib.aff2axcodes(header.affine)
    )
    assert json.loads(first.label_names)["3"] == "LV cavity"


def test_testing_without_ground_truth_and_bad_info(tmp_path):
    root = generate_acdc(tmp_path / "acdc", n_train=3, n_test=2, shape=SHAPE, n_frames=8, test_labels=False).parent
    manifest, quarantine, _ = _run(root, tmp_path)
    assert len(manifest) == 6 and len(quarantine) == 4 and quarantine["reason"].str.contains("file not found").all()
    manifest, quarantine, _ = _run(root, tmp_path, "keep.csv", require_label="false")
    assert quarantine.empty and (manifest.loc[manifest.split == "test", "label"] == "").all()

    training = root / "database/training"
    (training / "patient021/Info.cfg").write_text("ED: 1\nES: 99\nNbFrame: 8\n")
    (training / "patient041/Info.cfg").unlink()
    frame = training / "patient001" / "patient001_frame01_gt.nii.gz"
    gt = nib.load(frame)
    nib.save(nib.Nifti1Image(np.asarray(gt.dataobj)[:, :, :3], gt.affine), frame)
    shutil.copytree(training / "patient001", training / "._patient001")  # junk folder: ignored
    manifest, quarantine, summary = _run(root, tmp_path, "bad.csv", require_label="false")
    reasons = dict(zip(quarantine["key"], quarantine["reason"]))
    assert reasons["patient021"] == "ES frame 99 outside 1..8"
    assert reasons["patient041"] == "Info.cfg missing: ED/ES frames unknown"
    assert "does not match the image grid" in reasons["patient001/ED"]
    assert summary["discovered"] == len(manifest) + len(quarantine) == 8  # 2 + 1 + 1 + 2 * 2 items


def test_no_acdc_tree_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="training/ or testing/"):
        ACDCAdapter(tmp_path).discover()
