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


DATAMODULES = {
    "cxr": ("medcl.data.cxr", "CXRDataModule"),
    "report": ("medcl.data.report", "ReportDataModule"),
    "voco": ("medcl.data.volume", "VoCoDataModule"),
    "views": ("medcl.data.volume", "VolumeViewsDataModule"),
    "slices": ("medcl.data.volume", "SliceContrastDataModule"),
    "segmentation": ("medcl.data.volume", "SegmentationDataModule"),
}


def _datamodule(name: str):
    import importlib

    module, cls = DATAMODULES[name]
    return getattr(importlib.import_module(module), cls)


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_a_datamodule_without_its_manifest_stops_with_one_error_and_writes_nothing(name, tmp_path):
    missing = tmp_path / "mistyped" / "manifest.csv"
    datamodule = _datamodule(name)(str(missing))
    datamodule.prepare_data()  # Lightning calls it first: it must not write anything in the manifest's place
    with pytest.raises(InvalidInputError) as err:
        datamodule.setup("fit")
    message = str(err.value)
    assert message.startswith(f"{missing}: manifest not found")
    assert f"`medcl data prepare <dataset> --root <folder> --out {missing}`" in message
    assert "`medcl data synth <dataset> --out <folder>`" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", sorted(DATAMODULES))
def test_datamodules_take_no_synthetic_data_options(name, tmp_path):
    for option in ("synthetic", "synthetic_root", "synthetic_kind", "synthetic_gaze"):
        with pytest.raises(TypeError, match=option):
            _datamodule(name)(str(tmp_path / "m.csv"), **{option: {}})


def test_missing_gaze_manifests_are_named_in_the_same_single_error(synthetic_cxr, tmp_path):
    from medcl.data.cxr import CXRDataModule

    gaze = [str(tmp_path / "egd-cxr.csv"), str(tmp_path / "reflacx.csv")]
    with pytest.raises(InvalidInputError) as err:
        CXRDataModule(synthetic_cxr["manifest"], gaze_manifests=gaze).setup("fit")
    assert str(err.value).startswith(f"{gaze[0]}, {gaze[1]}: manifests not found")
    assert "medcl data prepare" in str(err.value) and "medcl data synth" in str(err.value)
    assert list(tmp_path.iterdir()) == []
