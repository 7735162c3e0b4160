"""CheXpert adapter and the 5x200 zero-shot set on a synthetic CheXpert-v1.0-small tree."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.data.adapters.chexpert import CheXpertAdapter, make_5x200
from medcl.data.adapters.common import find_csv, hash_split
from medcl.data.manifest import read_manifest
from medcl.data.prepare import prepare
from medcl.data.synthetic.chexpert import generate_chexpert
from medcl.data.text.labels import CHEXPERT_5X200, CHEXPERT_CLINICAL_ORDER, CHEXPERT_LABELS
from medcl.errors import InvalidInputError


@pytest.fixture(scope="module")
def chexpert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_chexpert(tmp_path_factory.mktemp("chexpert"), n_patients=40, seed=1, image_size=(64, 64))


def test_official_csv_layout(chexpert: Path) -> None:
    train = pd.read_csv(chexpert / "train.csv")
    assert list(train.columns) == ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLINICAL_ORDER]
    assert (
        train["Path"].str.match(r"CheXpert-v1\.0-small/train/patient\d{5}/study\d+/view\d_(frontal|lateral)\.jpg").all()
    )


@pytest.mark.parametrize("from_parent", [True, False])
def test_manifest_strips_prefix_and_keeps_labels(chexpert: Path, tmp_path: Path, from_parent: bool) -> None:
    root = chexpert.parent if from_parent else chexpert
    result = prepare("chexpert", root, tmp_path / "m.csv", workers=1, progress=False)
    manifest = read_manifest(tmp_path / "m.csv")
    table = pd.concat([pd.read_csv(chexpert / "train.csv"), pd.read_csv(chexpert / "valid.csv")], ignore_index=True)
    assert result.counts["rows"] == len(table) and set(manifest["split"]) == {"train", "val"}
    table["image_id"] = table["Path"].str.replace(r"^CheXpert-v1\.0-small/|\.jpg$", "", regex=True)
    merged = manifest.merge(table, on="image_id", suffixes=("", "_csv"))
    assert len(merged) == len(table)
    assert (merged["image"] == [str(chexpert / f"{i}.jpg") for i in merged["image_id"]]).all()
    assert (merged["subject_id"] == merged["image_id"].str.extract(r"(patient\d+)")[0]).all()
    for label in CHEXPERT_LABELS:
        np.testing.assert_array_equal(merged[label].to_numpy(float), merged[f"{label}_csv"].to_numpy(float))
    lateral = merged["Frontal/Lateral"] == "Lateral"
    assert (merged.loc[lateral, "view"] == "LATERAL").all() and merged.loc[~lateral, "view"].isin(["AP", "PA"]).all()


def test_gzipped_csvs_and_bad_paths(chexpert: Path, tmp_path: Path) -> None:
    copy = tmp_path / "CheXpert-v1.0-small"
    shutil.copytree(chexpert, copy)
    for name in ("train", "valid"):
        with open(copy / f"{name}.csv", "rb") as src, gzip.open(copy / f"{name}.csv.gz", "wb") as dst:
            dst.write(src.read())
        (copy / f"{name}.csv").unlink()
    assert find_csv(copy, "train").name == "train.csv.gz"
    assert prepare("chexpert", tmp_path, tmp_path / "m.csv", workers=1, progress=False).counts["quarantined"] == 0
    with pytest.raises(InvalidInputError, match="patientN/studyM"):
        CheXpertAdapter.relative_path("CheXpert-v1.0-small/train/p1/view1.jpg", copy / "train.csv.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"train\.csv"):
        prepare("chexpert", tmp_path / "empty", tmp_path / "x.csv", workers=1, progress=False)


def test_zero_shot_5x200_convention_and_exclusion(chexpert: Path, tmp_path: Path) -> None:
    out = tmp_path / "zero_shot.csv"
    result = prepare(
        "chexpert",
        chexpert,
        tmp_path / "m.csv",
        workers=1,
        progress=False,
        zero_shot_out=str(out),
        zero_shot_per_class=2,
    )
    chosen = pd.read_csv(out)
    assert sorted(chosen["label"].value_counts().items()) == [(c, 2) for c in CHEXPERT_5X200]
    full = read_manifest(prepare("chexpert", chexpert, tmp_path / "all.csv", workers=1, progress=False).manifest)
    rows = full.set_index("image_id").loc[chosen["image_id"]]
    assert (rows["split"] == "train").all() and rows["view"].isin(["AP", "PA"]).all()
    codes = rows[list(CHEXPERT_LABELS)].fillna(0).drop(columns="No Finding")
    for label, (_, row) in zip(chosen["label"], codes.iterrows()):
        assert row[label] == 1 and (row.drop(label) == 0).all()
    remaining = read_manifest(result.manifest)
    assert not set(chosen["image_id"]) & set(remaining["image_id"]) and len(remaining) == len(full) - 10
    again = make_5x200(full, seed=0, per_class=2)
    assert list(again["image_id"]) == list(chosen["image_id"])  # fixed seed: the same set every time
    with pytest.raises(InvalidInputError, match="need 500"):
        make_5x200(full, per_class=500)


def test_hash_split_is_stable_and_roughly_proportional() -> None:
    assert hash_split("patient00001") == hash_split("patient00001")
    splits = pd.Series([hash_split(f"p{i}") for i in range(4000)]).value_counts(normalize=True)
    assert abs(splits["train"] - 0.8) < 0.03 and abs(splits["val"] - 0.1) < 0.02
