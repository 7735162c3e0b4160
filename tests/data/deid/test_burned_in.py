"""Pixels that may show identifying text are refused by deidentify() and quarantined by every DICOM adapter."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from phi_dicom import planted_dataset, planted_uid, write_siim_tree
from pydicom.uid import SecondaryCaptureImageStorage

from medcl.data.deid import DeidOptions, burned_in_risk, load_key
from medcl.data.prepare import prepare
from medcl.errors import ConfigError


def _dataset(**attributes: str):
    ds, _ = planted_dataset(3, patient_id="MRN-1", study_uid="1.2.3.4.5", series_uid="1.2.3.4.6", sop_uid="1.2.3.4.7")
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def test_risks_and_what_accepts_them() -> None:
    strict = DeidOptions()
    assert burned_in_risk(_dataset(), strict) is None  # a DX without the flag
    assert "BurnedInAnnotation is YES" in burned_in_risk(_dataset(BurnedInAnnotation="YES"), strict)
    assert "modality US" in burned_in_risk(_dataset(Modality="US", BurnedInAnnotation="NO"), strict)  # NO: unreliable
    assert "modality SC" in burned_in_risk(_dataset(Modality="CT", SOPClassUID=SecondaryCaptureImageStorage), strict)
    for modality in ("OT", "XC", "ES"):
        assert f"--allow-burned-in {modality}" in burned_in_risk(_dataset(Modality=modality), strict)
    assert burned_in_risk(_dataset(Modality="US"), DeidOptions(allow_burned_in=frozenset({"US"}))) is None
    flagged = DeidOptions(allow_burned_in=frozenset({"flagged"}))
    assert burned_in_risk(_dataset(BurnedInAnnotation="YES"), flagged) is None
    with pytest.raises(ConfigError, match="allow_burned_in"):
        DeidOptions(allow_burned_in=frozenset({"MR"}))


def _add_image(root: Path, index: int, **attributes: str) -> str:
    sop = planted_uid(9, index)
    ds, _ = planted_dataset(9, patient_id=f"MRN-9{index}", study_uid=planted_uid(9, 100 + index),
                            series_uid=planted_uid(9, 200 + index), sop_uid=sop)  # fmt: skip
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = root / "dicom-images-train" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{sop}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    table = pd.read_csv(root / "train-rle.csv")
    pd.concat([table, pd.DataFrame([{"ImageId": sop, " EncodedPixels": "-1"}])]).to_csv(
        root / "train-rle.csv", index=False
    )
    return sop


def test_prepare_quarantines_burned_in_text_with_the_reason(tmp_path: Path) -> None:
    root, _ = write_siim_tree(tmp_path / "siim", patients=2, images_per_patient=1)
    flagged = _add_image(root, 1, BurnedInAnnotation="YES")
    ultrasound = _add_image(root, 2, Modality="US")
    capture = _add_image(root, 3, SOPClassUID=SecondaryCaptureImageStorage)
    result = prepare("siim-acr", root, tmp_path / "out" / "siim.csv", workers=1, progress=False)
    quarantine = pd.read_csv(result.quarantine).set_index("key")["reason"]
    key = load_key()
    assert result.counts == {"discovered": 5, "processed": 2, "quarantined": 3, "rows": 2}
    assert "BurnedInAnnotation is YES" in quarantine[key.uid(flagged)]
    assert "modality US" in quarantine[key.uid(ultrasound)] and "modality SC" in quarantine[key.uid(capture)]
    accepted = DeidOptions(allow_burned_in=frozenset({"US", "flagged"}))
    again = prepare("siim-acr", root, tmp_path / "again" / "siim.csv", workers=1, progress=False, deid=accepted)
    assert again.counts["quarantined"] == 1 and pd.read_csv(again.quarantine)["key"][0] == key.uid(capture)


def test_adapters_reading_only_pixels_screen_too(tmp_path: Path) -> None:
    root = tmp_path / "rsna"
    (root / "stage_2_train_images").mkdir(parents=True)
    rows = []
    for index, flag in enumerate(["NO", "YES"]):
        ds, _ = planted_dataset(4, patient_id=f"p{index}", study_uid="1.2.3.4.5", series_uid="1.2.3.4.6",
                                sop_uid=f"1.2.3.4.{index + 7}")  # fmt: skip
        ds.BurnedInAnnotation = flag
        ds.save_as(root / "stage_2_train_images" / f"patient{index}.dcm", enforce_file_format=True)
        rows.append({"patientId": f"patient{index}", "x": None, "y": None, "width": None, "height": None, "Target": 0})
    pd.DataFrame(rows).to_csv(root / "stage_2_train_labels.csv", index=False)
    result = prepare("rsna-pneumonia", root, tmp_path / "out" / "rsna.csv", workers=1, progress=False)
    quarantine = pd.read_csv(result.quarantine)
    assert result.counts["rows"] == 1 and list(quarantine["key"]) == ["patient1"]
    assert "BurnedInAnnotation is YES" in quarantine["reason"][0]
