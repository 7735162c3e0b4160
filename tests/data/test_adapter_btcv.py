"""BTCV adapter: raw release layout and SwinUNETR JSON layout."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.btcv import BTCVAdapter
from medcl.data.manifest import check_patient_disjoint
from medcl.data.prepare import prepare
from medcl.data.synthetic.btcv import generate_btcv
from medcl.errors import InvalidInputError

SHAPE = (28, 28, 20)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return generate_btcv(tmp_path_factory.mktemp("btcv"), n_train=10, n_test=2, shape=SHAPE)


def _run(root, tmp_path, name="btcv.csv", **options):
    result = prepare("btcv", root, tmp_path / name, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype=str, keep_default_na=False)
    return manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def test_raw_layout_follows_the_24_6_convention(raw, tmp_path):
    manifest, quarantine, summary = _run(raw, tmp_path)
    assert quarantine.empty and summary["rows"] == 12
    splits = manifest.set_index("image_id")["split"]
    assert sorted(splits[splits == "val"].index) == ["btcv_0035", "btcv_0036"]  # held-out cases of dataset_0.json
    assert sorted(splits[splits == "test"].index) == ["btcv_0061", "btcv_0062"]
    assert (manifest.loc[manifest.split == "test", "label"] == "").all()
    train = manifest[manifest.split != "test"]
    assert all(p.endswith(f"label{i[-4:]}.nii.gz") for p, i in zip(train["label"], train["image_id"]))
    assert json.loads(manifest["label_names"][0])["11"] == "pancreas"
    row = manifest.iloc[0]
    header = nib.load(row["image"])
    assert row["orientation"] == "".join(nib.aff2axcodes(header.affine))
    assert float(row["spacing_z"]) == pytest.approx(float(header.header.get_zooms()[2]))
    # Passing val_fraction replaces the convention with a seeded, patient-disjoint split.
    manifest, _, _ = _run(raw, tmp_path, "seeded.csv", val_fraction="0.3", seed="1")
    assert (manifest.split == "val").sum() == 3 and (manifest.split == "test").sum() == 2
    check_patient_disjoint(manifest)


def test_rawdata_folder_as_root_junk_and_missing_label(raw, tmp_path):
    root = shutil.copytree(raw / "RawData", tmp_path / "RawData")
    (root / "Training/img/._img0001.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "Training/img/notes.txt").write_text("ignored")
    (root / "Training/label/label0002.nii.gz").unlink()
    manifest, quarantine, summary = _run(root, tmp_path)
    assert summary["discovered"] == 12 and summary["processed"] == 11 and len(manifest) == 11
    assert quarantine["key"].tolist() == ["btcv_0002"]
    assert "label" in quarantine["reason"][0] and "file not found" in quarantine["reason"][0]
    assert not manifest["image"].str.contains("._img").any()


def test_label_values_outside_the_13_organs_are_quarantined(raw, tmp_path):
    root = shutil.copytree(raw, tmp_path / "btcv")
    label_path = root / "RawData/Training/label/label0003.nii.gz"
    label = nib.load(label_path)
    data = np.asarray(label.dataobj).copy()
    data[0, 0, 0] = 14
    nib.save(nib.Nifti1Image(data, label.affine), label_path)
    _, quarantine, _ = _run(root, tmp_path)
    assert quarantine["key"].tolist() == ["btcv_0003"] and "[14]" in quarantine["reason"][0]


def test_swinunetr_json_layout(tmp_path):
    root = generate_btcv(tmp_path / "swin", n_train=5, n_test=1, shape=(24, 24, 16), layout="swinunetr")
    manifest, quarantine, _ = _run(root, tmp_path)
    assert quarantine.empty
    assert manifest.set_index("image_id")["split"].to_dict() == {
        "btcv_0001": "train",
        "btcv_0002": "train",
        "btcv_0003": "train",
        "btcv_0004": "train",
        "btcv_0035": "val",
        "btcv_0061": "test",
    }
    assert manifest["label"].str.contains("/labelsTr/label").sum() == 5


def test_no_btcv_tree_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInputError, match="RawData/Training/img"):
        BTCVAdapter(tmp_path).discover()
