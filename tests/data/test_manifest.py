import numpy as np
import pandas as pd
import pytest

from medcl.data.manifest import binarize_labels, read_manifest, validate_manifest, write_manifest
from medcl.errors import DataLeakageError, InvalidInputError


def frame(**overrides):
    data = {
        "image": ["/a.jpg", "/b.jpg", "/c.jpg"],
        "image_id": ["a", "b", "c"],
        "subject_id": ["1", "1", "2"],
        "split": ["train", "train", "validate"],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def test_splits_are_normalised_and_round_trip(tmp_path):
    path = write_manifest(frame(), tmp_path / "m.csv")
    back = read_manifest(path)
    assert back["split"].tolist() == ["train", "train", "val"]
    assert read_manifest(path, splits=["validate"])["image_id"].tolist() == ["c"]


def test_leakage_fails_loudly():
    with pytest.raises(DataLeakageError, match="1 subject"):
        validate_manifest(frame(split=["train", "test", "test"]), source="m.csv")


def test_missing_columns_and_duplicates_and_unknown_split():
    with pytest.raises(InvalidInputError, match="required column"):
        validate_manifest(frame().drop(columns="split"))
    with pytest.raises(InvalidInputError, match="appears more than once"):
        validate_manifest(frame(image_id=["a", "a", "c"]))
    with pytest.raises(InvalidInputError, match="unknown split"):
        validate_manifest(frame(split=["train", "train", "holdout"]))


def test_read_missing_manifest_says_how_to_make_it(tmp_path):
    with pytest.raises(InvalidInputError, match="medcl data prepare"):
        read_manifest(tmp_path / "none.csv")


@pytest.mark.parametrize(
    ("policy", "targets", "mask"),
    [
        ("ones", [1, 0, 1, 0], [1, 1, 1, 1]),
        ("zeros", [1, 0, 0, 0], [1, 1, 1, 1]),
        ("ignore", [1, 0, 0, 0], [1, 1, 0, 1]),
    ],
)
def test_uncertain_label_policies(policy, targets, mask):
    got, got_mask = binarize_labels(np.array([[1.0, 0.0, -1.0, np.nan]]), policy)
    assert got[0].tolist() == targets and got_mask[0].tolist() == [bool(m) for m in mask]
