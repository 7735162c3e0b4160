"""The profile applied to a dataset that holds a planted identifier in every attribute of Table E.1-1, and what each
option keeps, cleans or shifts."""

from __future__ import annotations

import copy
import datetime
import io
from pathlib import Path

import pydicom
import pytest
from phi_dicom import PRIVATE_CREATOR, PRIVATE_GROUP, planted_dataset
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medcl.data import load_image
from medcl.data.deid import DeidOptions, PseudonymKey, action_plan, deidentify, deidentify_file, find_phi, table
from medcl.data.deid.clean import DUMMY_BY_VR, DUMMY_TEXT, REDACTED

KEY = PseudonymKey(bytes(range(32)))
IDS = {"patient_id": "MRN-4471", "study_uid": "1.2.826.0.1.3680043.10.543.1.1",
       "series_uid": "1.2.826.0.1.3680043.10.543.1.2", "sop_uid": "1.2.826.0.1.3680043.10.543.1.3"}  # fmt: skip


def _written(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _leaks(ds: Dataset, needles: set[str]) -> list[str]:
    return sorted(find_phi(_written(ds), needles))


@pytest.fixture(scope="module")
def planted() -> tuple[Dataset, set[str]]:
    ds, needles = planted_dataset(7, **IDS)
    assert len(needles) > 600 and len(_leaks(ds, needles)) == len(needles)  # all planted, all findable
    return pydicom.dcmread(io.BytesIO(_written(ds)), force=True), needles  # as read from a file


def _tag(rule_tag: str) -> BaseTag:
    group, element = (int(part, 16) for part in rule_tag.strip("()").split(","))
    return BaseTag(group << 16 | element)


def test_every_attribute_gets_its_action(planted: tuple[Dataset, set[str]]) -> None:
    ds, needles = planted
    clean = deidentify(ds, key=KEY)
    assert _leaks(clean, needles) == []
    plan, pseudonym = action_plan(DeidOptions()), KEY.pseudonym(IDS["patient_id"])
    for rule in table():
        if not rule.tag.startswith("(") or "x" in rule.tag or _tag(rule.tag).group in (0, 2):
            continue
        tag = _tag(rule.tag)
        action, before = plan.action_for(tag), ds[tag]
        if action == "X":
            assert tag not in clean, rule
            continue
        value = clean[tag].value
        if rule.keyword in ("PatientID", "PatientName"):
            assert str(value) == pseudonym
        elif action == "Z":
            assert value in (None, "", b"") or len(value) == 0, rule
        elif action == "D":
            expected = {"SQ": 1, "UI": None, **{vr: DUMMY_BY_VR[vr] for vr in DUMMY_BY_VR}}.get(before.VR, DUMMY_TEXT)
            if before.VR == "SQ":
                assert len(value) == 1 and len(value[0]) == 0, rule  # one empty item
            elif before.VR == "UI":
                assert value == KEY.uid(before.value), rule
            elif before.VR in ("OB", "OW", "UN"):
                assert value == b"\0\0", rule
            elif isinstance(expected, str):
                assert str(value) in (expected, "0"), rule
        elif action == "U":
            assert value == KEY.uid(before.value), rule
        elif action == "U*":  # a reference sequence: kept, its items cleaned, its UIDs keyed
            item = value[0]
            assert item.ReferencedSOPInstanceUID == KEY.uid(before.value[0].ReferencedSOPInstanceUID)
            assert item.PersonName == DUMMY_TEXT and len(item.PersonIdentificationCodeSequence[0]) == 0
    assert clean.file_meta.MediaStorageSOPInstanceUID == clean.SOPInstanceUID == KEY.uid(IDS["sop_uid"])
    assert not any(element.tag.is_private for element in clean.iterall())
    assert 0x50003000 not in clean and 0x60003000 not in clean and 0x60004000 not in clean
    assert clean.PatientIdentityRemoved == "YES" and clean.LongitudinalTemporalInformationModified == "REMOVED"
    assert [item.CodeValue for item in clean.DeidentificationMethodCodeSequence] == ["113100"]
    assert clean.Modality == "DX" and clean.PixelData == ds.PixelData  # technical attributes and pixels survive


def test_objects_without_a_patient_id_share_no_pseudonym(planted: tuple[Dataset, set[str]]) -> None:
    ds = copy.deepcopy(planted[0])
    del ds.PatientID
    ds.PatientName = ""
    clean = deidentify(ds, key=KEY)
    assert clean.get("PatientID", "") == "" and clean.PatientName == ""


def test_options_keep_and_clean_their_columns(planted: tuple[Dataset, set[str]]) -> None:
    ds = copy.deepcopy(planted[0])
    ds.StudyDescription = f"chest for {ds.PatientName} {ds.OtherPatientIDs} on {ds.StudyDate[:4]}-{ds.StudyDate[4:6]}-"
    ds.StudyDescription += ds.StudyDate[6:]
    ds.StationAETitle = str(ds.OperatorsName).split("^")[0]  # an AE title named after a person
    options = DeidOptions.from_names(
        [
            "retain-device-identity",
            "retain-institution-identity",
            "retain-patient-characteristics",
            "retain-uids",
            "clean-descriptors",
        ]
    )
    clean = deidentify(ds, key=KEY, options=options)
    assert clean.StationName == ds.StationName and clean.DeviceSerialNumber == ds.DeviceSerialNumber  # K
    assert clean.InstitutionName == ds.InstitutionName and clean.PatientAge == ds.PatientAge  # K
    assert clean.StudyInstanceUID == ds.StudyInstanceUID and clean.SOPInstanceUID == ds.SOPInstanceUID  # K
    # C: descriptors kept, every identifying value of the object (name parts, IDs, dates in any spelling) redacted.
    assert clean.StudyDescription == f"chest for {REDACTED} {REDACTED} on {REDACTED}"
    assert clean.StationAETitle == REDACTED  # C under Retain Device Identity: kept unless it names someone
    assert "PatientName" in clean and str(clean.PatientName) == KEY.pseudonym(IDS["patient_id"])
    assert clean.get("PatientBirthDate") in (None, "") and "OtherPatientIDs" not in clean  # not in these columns
    codes = [item.CodeValue for item in clean.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113109", "113112", "113108", "113105"]


def test_longitudinal_options(planted: tuple[Dataset, set[str]]) -> None:
    ds = planted[0]
    full = deidentify(ds, key=KEY, options=DeidOptions(retain_long_full_dates=True))
    assert full.StudyDate == ds.StudyDate and full.AcquisitionDateTime == ds.AcquisitionDateTime
    assert full.LongitudinalTemporalInformationModified == "UNMODIFIED"
    modified = deidentify(ds, key=KEY, options=DeidOptions(retain_long_modified_dates=True))
    shift = KEY.day_shift(IDS["patient_id"])
    assert 1 <= shift <= 3650 and modified.LongitudinalTemporalInformationModified == "MODIFIED"

    def day(value: str) -> datetime.date:
        return datetime.datetime.strptime(str(value)[:8], "%Y%m%d").date()

    for keyword in ("StudyDate", "SeriesDate", "ContentDate"):  # one shift for every date of the patient
        assert (day(ds[keyword].value) - day(modified[keyword].value)).days == shift, keyword
    assert str(modified.AcquisitionDateTime)[8:] == str(ds.AcquisitionDateTime)[8:]  # time of day kept
    other = copy.deepcopy(ds)
    other.PatientID = "MRN-9999"
    assert KEY.day_shift("MRN-9999") != shift  # another patient, another shift
    with pytest.raises(ValueError, match="exclude"):
        DeidOptions(retain_long_full_dates=True, retain_long_modified_dates=True)


def test_structured_content_graphics_and_safe_private(planted: tuple[Dataset, set[str]]) -> None:
    ds = copy.deepcopy(planted[0])
    text_item = Dataset()  # an SR TEXT content item that repeats the patient's name
    text_item.ValueType, text_item.TextValue = "TEXT", f"seen by {ds.PatientName} today"
    text_item.ConceptNameCodeSequence = Sequence([Dataset()])
    text_item.ConceptNameCodeSequence[0].CodeMeaning = "Finding"
    ds.ContentSequence = Sequence([text_item])
    basic = deidentify(ds, key=KEY)
    assert len(basic.ContentSequence) == 1 and len(basic.ContentSequence[0]) == 0  # D: a dummy, nothing kept
    options = DeidOptions(clean_structured_content=True, safe_private=frozenset({(PRIVATE_GROUP, PRIVATE_CREATOR, 1)}))
    clean = deidentify(ds, key=KEY, options=options)
    item = clean.ContentSequence[0]
    assert item.TextValue == f"seen by {REDACTED} today" and item.ConceptNameCodeSequence[0].CodeMeaning == "Finding"
    block = clean.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)
    assert block[0x01].value == ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR)[0x01].value  # vouched for: kept
    assert 0x02 not in block  # the block's other element is not
    graphics = deidentify(ds, key=KEY, options=DeidOptions(clean_graphics=True))
    assert 0x60004000 in graphics and 0x60003000 not in graphics  # comments cleaned; bitmaps cannot be, removed


def test_written_file_loads_with_the_same_pixels(planted: tuple[Dataset, set[str]], tmp_path: Path) -> None:
    source = tmp_path / "source.dcm"
    planted[0].save_as(source, enforce_file_format=True)
    out = deidentify_file(source, tmp_path / "out" / "clean.dcm", key=KEY)
    assert [p.name for p in out.parent.iterdir()] == ["clean.dcm"]  # written via a temporary file, then renamed
    assert (load_image(out).numpy() == load_image(source).numpy()).all()
