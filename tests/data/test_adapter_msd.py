"""MSD adapter (and the volume helpers every 3D adapter shares) on synthetic Decathlon tasks."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.msd import MSDAdapter, validation_subjects
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.msd import generate_msd
from medcl.data.synthetic.nifti_cases import to_nifti
from medcl.errors import ConfigError, InvalidInputError

SHAPE = (28, 28, 20)


@pytest.fixture(scope="module")
def spleen(tmp_path_factory):
    return generate_msd(tmp_path_factory.mktemp("msd"), n_train=6, n_test=2, shape=SHAPE, misspelt_release=True)


@pytest.fixture
def spleen_copy(spleen, tmp_path):
    return shutil.copytree(spleen, tmp_path / spleen.name)


def _run(root, tmp_path, name="manifest.csv", **options):
    result = prepare("msd", root, tmp_path / name, workers=1, progress=False, **options)
    manifest = pd.read_csv(result.manifest, dtype={"image_id": str, "subject_id": str}, keep_default_na=False)
    return result, manifest, pd.read_csv(result.quarantine), json.loads(result.summary.read_text())


def test_manifest_rows_splits_and_header_geometry(spleen, tmp_path):
    result, manifest, quarantine, summary = _run(spleen, tmp_path)
    assert len(manifest) == 8 and quarantine.empty
    assert summary["discovered"] == summary["processed"] == 8 and summary["quarantined"] == 0
    assert manifest["split"].value_counts().to_dict() == {"train": 5, "val": 1, "test": 2}  # round(0.2 * 6) = 1
    assert not manifest["image"].str.contains("/._").any()  # the AppleDouble twins never appear
    assert (manifest.loc[manifest["split"] == "test", "label"] == "").all()
    assert manifest["dataset"].eq("msd/Task09_Spleen").all() and manifest["modality"].eq("CT").all()
    assert manifest["channels"].eq(1).all() and json.loads(manifest["label_names"][0]) == {
        "0": "background",
        "1": "spleen",
    }
    for row in manifest.itertuples():
        header = nib.load(row.image)
        assert row.orientation == "".join(nib.aff2axcodes(header.affine))
        assert (row.shape_x, row.shape_y, row.shape_z) == header.shape
        np.testing.assert_allclose((row.spacing_x, row.spacing_y, row.spacing_z), header.header.get_zooms(), 1e-5)
    assert manifest["orientation"].nunique() >= 2  # orientation really comes from each header
    read_manifest(result.manifest)  # required columns, split names, patient-disjointness


def test_validation_split_is_seeded_and_shard_independent(spleen, tmp_path):
    _, full, _, _ = _run(spleen, tmp_path, val_fraction="0.5", seed="3")
    _, again, _, _ = _run(spleen, tmp_path, "again.csv", val_fraction=0.5, seed=3)
    pd.testing.assert_frame_equal(full, again)
    assert (full["split"] == "val").sum() == 3
    parts = [
        prepare(
            "msd",
            spleen,
            tmp_path / f"shard{i}.csv",
            workers=1,
            progress=False,
            shard=f"{i}/2",
            val_fraction="0.5",
            seed="3",
        ).manifest
        for i in range(2)
    ]
    merged = pd.concat([pd.read_csv(p, dtype=str) for p in parts]).set_index("image_id")["split"]
    assert merged.sort_index().to_dict() == full.set_index("image_id")["split"].sort_index().to_dict()
    _, other_seed, _, _ = _run(spleen, tmp_path, "other.csv", val_fraction=0.5, seed=4)
    assert set(other_seed.loc[other_seed.split == "val", "image_id"]) != set(full.loc[full.split == "val", "image_id"])


def test_validation_subjects_rules():
    assert validation_subjects(["a", "b"], 0.0, 0) == set()
    assert len(validation_subjects(["a", "b", "c"], 0.01, 0)) == 1  # a positive fraction yields at least one
    assert len(validation_subjects([f"s{i}" for i in range(10)], 0.3, 1)) == 3
    assert validation_subjects(["x", "x", "y"], 0.5, 0) <= {"x", "y"}  # subjects, not rows
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_subjects(["a"], 1.0, 0)


def test_bad_files_are_quarantined_with_reasons_and_counts_add_up(spleen_copy, tmp_path):
    meta = json.loads((spleen_copy / "dataset.json").read_text())
    images = [spleen_copy / e["image"] for e in meta["training"]]
    labels = [spleen_copy / e["label"] for e in meta["training"]]
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 2])  # truncated gzip: header reads, voxel data does not
    labels[1].unlink()  # missing label
    bad_values = nib.load(labels[2])
    nib.save(nib.Nifti1Image(np.full(bad_values.shape, 7, np.uint8), bad_values.affine), labels[2])
    other_grid = nib.load(labels[3])
    nib.save(to_nifti(np.zeros((5, 5, 5), np.uint8), (1, 1, 1)), labels[3])
    images[4].write_bytes(b"")
    del other_grid

    _, manifest, quarantine, summary = _run(spleen_copy, tmp_path)
    assert summary["discovered"] == 8 and summary["quarantined"] == 5 and summary["processed"] == 3
    assert summary["discovered"] == summary["processed"] + summary["quarantined"] == len(manifest) + len(quarantine)
    reasons = dict(zip(quarantine["path"], quarantine["reason"]))
    assert "cannot read the voxel data" in reasons[str(images[0])]
    assert f"label {labels[1]}: file not found" in reasons[str(images[1])]
    assert "unexpected label values [7]" in reasons[str(images[2])]
    assert "does not match the image grid" in reasons[str(images[3])]
    assert "empty file" in reasons[str(images[4])]
    assert not set(manifest["image"]) & {str(p) for p in images[:5]}


def test_header_verification_trades_safety_for_speed(spleen_copy, tmp_path):
    """verify=header reads no voxel data: a truncated data block goes unnoticed (documented trade-off)."""
    meta = json.loads((spleen_copy / "dataset.json").read_text())
    image = spleen_copy / meta["training"][0]["image"]
    data = image.read_bytes()
    image.write_bytes(data[: len(data) // 2])
    _, manifest, quarantine, _ = _run(spleen_copy, tmp_path, verify="header")
    assert quarantine.empty and str(image) in set(manifest["image"])
    _, _, quarantine, _ = _run(spleen_copy, tmp_path, "full.csv", verify="full")
    assert list(quarantine["path"]) == [str(image)]
    with pytest.raises(ConfigError, match="verify"):
        MSDAdapter(spleen_copy, verify="sometimes")
    with pytest.raises(ConfigError, match="seed an integer"):
        MSDAdapter(spleen_copy, seed="x")


def test_index_problems(spleen_copy, tmp_path):
    meta = json.loads((spleen_copy / "dataset.json").read_text())
    meta["training"].append({"image": "./imagesTr/._spleen_999.nii.gz", "label": "./labelsTr/._spleen_999.nii.gz"})
    meta["training"].append({"img": "./imagesTr/typo.nii.gz"})
    (spleen_copy / "dataset.json").write_text(json.dumps(meta))
    _, manifest, quarantine, summary = _run(spleen_copy, tmp_path)
    assert len(manifest) == 8 and summary["discovered"] == 9  # junk entry dropped, malformed one quarantined
    assert quarantine["reason"].str.contains("malformed entry").all()

    (spleen_copy / "dataset.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        MSDAdapter(spleen_copy).discover()
    (spleen_copy / "dataset.json").unlink()
    with pytest.raises(InvalidInputError, match=r"no dataset\.json"):
        MSDAdapter(spleen_copy).discover()


def test_parent_folder_and_four_d_task(tmp_path):
    root = tmp_path / "decathlon"
    generate_msd(root, task="Task01_BrainTumour", n_train=3, n_test=1, shape=(24, 24, 16), junk=False)
    _, manifest, quarantine, _ = _run(root, tmp_path)  # the one Task folder below --root is found
    assert quarantine.empty and len(manifest) == 4
    assert manifest["channels"].eq(4).all() and manifest["channel_names"].eq("FLAIR,T1w,t1gd,T2w").all()
    assert manifest["modality"].eq("MR").all() and manifest["image_id"].str.startswith("BRATS_").all()

    generate_msd(root, n_train=2, n_test=0, shape=(24, 24, 16), junk=False)
    with pytest.raises(InvalidInputError, match="Task01_BrainTumour, Task09_Spleen"):
        MSDAdapter(root).discover()
    assert len(MSDAdapter(root, task="Task09_Spleen").discover()) == 2

    # A 3D image in a task whose dataset.json declares four modalities.
    task = root / "Task01_BrainTumour"
    first = json.loads((task / "dataset.json").read_text())["training"][0]["image"]
    four_d = nib.load(task / first)
    nib.save(nib.Nifti1Image(np.asarray(four_d.dataobj)[..., 0], four_d.affine), task / first)
    _, _, quarantine, _ = _run(root, tmp_path, "t01.csv", task="Task01_BrainTumour")
    assert quarantine["reason"].tolist() == ["1 channel(s) but dataset.json lists 4 modalities"]


def test_process_pool_gives_the_same_manifest(spleen, tmp_path):
    """Adapters must pickle: the runner's process pool (8 items, 2 workers) yields the serial result."""
    serial = pd.read_csv(prepare("msd", spleen, tmp_path / "w1.csv", workers=1, progress=False).manifest)
    pooled = pd.read_csv(prepare("msd", spleen, tmp_path / "w2.csv", workers=2, progress=False).manifest)
    pd.testing.assert_frame_equal(
        serial.sort_values("image_id").reset_index(drop=True), pooled.sort_values("image_id").reset_index(drop=True)
    )
