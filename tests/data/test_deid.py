"""De-identification (PS3.15 basic profile) of planted PHI, on files, on pydicom's datasets and in caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from medcl.data import load_image
from medcl.data.cache import persistent_dataset
from medcl.data.deid import DeidOptions, PseudonymKey, deidentify, deidentify_file, scan_for_phi
from medcl.data.synthetic.dicom_writer import write_dicom_series
from medcl.data.transforms import volume_transforms
from medcl.errors import ConfigError, InvalidInputError

KEY = PseudonymKey(bytes(range(32)))
OTHER_KEY = PseudonymKey(bytes(range(1, 33)))
PHI = {
    "patient_name": "Zyxwv^Quentin",
    "patient_id": "MRN-77123",
    "patient_birth_date": "19511231",
    "study_date": "20230517",
    "institution_name": "Saint Elsewhere Hospital",
    "accession_number": "ACC-99881",
}
EXTRA_PHI = {
    "OtherPatientIDs": "ALT-55501",
    "InstitutionAddress": "12 Harbour Lane",
    "ReferringPhysicianName": "Houseman^Gregory",
    "OperatorsName": "Ratched^Mildred",
    "PatientAddress": "34 Elm Street",
    "PatientTelephoneNumbers": "555-0142",
    "ImageComments": "follow-up for Quentin",
    "StudyDescription": "CT chest Quentin",
    "StationName": "CTSCANNER-ROOM7",
    "PatientBirthTime": "081500",
}
NEEDLES = ["Zyxwv", "Quentin", "MRN-77123", "19511231", "20230517", "Elsewhere", "ACC-99881", "ALT-55501",
           "Harbour", "Houseman", "Ratched", "Elm Street", "555-0142", "ROOM7", "PrivateSecret"]  # fmt: skip


@pytest.fixture
def phi_series(tmp_path: Path) -> list[Path]:
    volume = np.random.default_rng(0).integers(-500, 500, size=(8, 6, 4)).astype(np.float32)
    files = write_dicom_series(volume, np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "phi", **PHI, extra_tags=EXTRA_PHI)
    for index, file in enumerate(files):
        ds = pydicom.dcmread(file)
        block = ds.private_block(0x0011, "ACME HOSPITAL", create=True)
        block.add_new(0x01, "LO", "PrivateSecret Quentin")
        visit = Dataset()
        visit.PatientName = PHI["patient_name"]  # PHI nested in a sequence
        visit.AdmissionID = "PrivateSecret-visit"
        ds.RequestAttributesSequence = Sequence([visit])
        reference = Dataset()  # points at the previous slice: references must survive remapping
        reference.ReferencedSOPClassUID = CTImageStorage
        reference.ReferencedSOPInstanceUID = pydicom.dcmread(files[index - 1]).SOPInstanceUID
        ds.ReferencedImageSequence = Sequence([reference])
        ds.save_as(file)
    return files


def test_planted_phi_is_gone_from_deidentified_files(phi_series: list[Path], tmp_path: Path) -> None:
    assert scan_for_phi(phi_series[0], NEEDLES)  # the scan finds planted PHI before de-identification
    out = tmp_path / "clean"
    for file in phi_series:
        deidentify_file(file, out / file.name, key=KEY)
    assert scan_for_phi(out, NEEDLES) == []
    ds = pydicom.dcmread(sorted(out.iterdir())[0])
    assert ds.PatientID == ds.PatientName == KEY.pseudonym(PHI["patient_id"])
    assert ds.PatientIdentityRemoved == "YES" and ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert not any(element.tag.is_private for element in ds)
    assert ds.StudyDate == "" and "PatientBirthTime" not in ds and "InstitutionAddress" not in ds


def test_uids_are_remapped_consistently_and_standard_uids_kept(phi_series: list[Path], tmp_path: Path) -> None:
    originals = [pydicom.dcmread(f) for f in phi_series]
    cleaned = [deidentify(ds, key=KEY) for ds in originals]
    study_uids = {str(ds.StudyInstanceUID) for ds in cleaned}
    assert len(study_uids) == 1 and study_uids != {str(originals[0].StudyInstanceUID)}
    for before, after in zip(originals, cleaned):
        assert after.SOPInstanceUID == KEY.uid(before.SOPInstanceUID)
        assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID
        assert after.SOPClassUID == CTImageStorage and after.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert len(after.SOPInstanceUID) <= 64 and after.SOPInstanceUID.startswith("2.25.")
    new_uids = {str(ds.SOPInstanceUID) for ds in cleaned}
    for ds in cleaned:  # each reference still points at a slice of the de-identified series
        assert ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID in new_uids
    other_key = deidentify(originals[0], key=OTHER_KEY)
    assert other_key.SOPInstanceUID != cleaned[0].SOPInstanceUID
    assert other_key.PatientID != cleaned[0].PatientID


def test_deidentified_series_loads_with_the_same_pixels_and_geometry(phi_series: list[Path], tmp_path: Path) -> None:
    for file in phi_series:
        deidentify_file(file, tmp_path / "clean" / file.name, key=KEY)
    original, clean = load_image(phi_series[0].parent), load_image(tmp_path / "clean")
    np.testing.assert_array_equal(original.numpy(), clean.numpy())
    np.testing.assert_allclose(original.affine.numpy(), clean.affine.numpy())


def test_input_dataset_is_not_modified(phi_series: list[Path]) -> None:
    ds = pydicom.dcmread(phi_series[0])
    deidentify(ds, key=KEY)
    assert ds.PatientName == PHI["patient_name"]


def test_burned_in_annotation_and_missing_key_are_refused(phi_series: list[Path]) -> None:
    ds = pydicom.dcmread(phi_series[0])
    with pytest.raises(ConfigError, match="key"):
        deidentify(ds, key=PseudonymKey(b""))
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(InvalidInputError, match="BurnedInAnnotation"):
        deidentify(ds, key=KEY)
    accepted = DeidOptions(allow_burned_in=frozenset({"flagged"}))
    assert deidentify(ds, key=KEY, options=accepted).PatientIdentityRemoved == "YES"


PYDICOM_DIR = Path(pydicom.__file__).parent / "data" / "test_files"
PYDICOM_DATASETS = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm", "test-SR.dcm", "JPEG2000.dcm",
                    "examples_palette.dcm", "rtdose.dcm", "waveform_ecg.dcm", "reportsi.dcm"]  # fmt: skip


IDENTIFYING_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName", "StudyID")


def _values(ds: Dataset, keep: bool) -> set[str]:
    """Full values of identifying elements (names, IDs, dates, instance UIDs), or of the other elements."""
    found = set()
    for element in ds.iterall():
        if element.tag.is_private or element.VR == "SQ" or element.value in (None, "", b""):
            continue
        is_instance_uid = element.VR == "UI" and not pydicom.uid.UID(str(element.value)).keyword
        identifying = element.VR in ("PN", "DA", "DT") or element.keyword in IDENTIFYING_KEYWORDS or is_instance_uid
        if identifying != keep and isinstance(element.value, (str, pydicom.valuerep.PersonName)):
            found.add(str(element.value))
    return {value for value in found if len(value) >= 4}


def _assert_profile_applied(ds: Dataset) -> None:
    pseudonym = str(ds.PatientID)
    assert pseudonym.startswith("anon-")
    for element in ds.iterall():
        assert not element.tag.is_private, element
        if element.VR == "PN" and element.value:
            assert str(element.value) in (pseudonym, "ANONYMIZED"), element
        if element.VR in ("DA", "DT", "TM"):
            assert not element.value, element
        if element.VR == "UI" and element.value and element.VM == 1:
            uid = pydicom.uid.UID(str(element.value))
            assert uid.keyword or uid.startswith(("2.25.", "1.2.840.10008.")), element


@pytest.mark.parametrize("name", PYDICOM_DATASETS)
def test_pydicom_datasets_lose_their_identifiers(name: str, tmp_path: Path) -> None:
    ds = pydicom.dcmread(PYDICOM_DIR / name, force=True)
    # Identifying values that also occur inside kept ones (an institution named like its scanner's manufacturer,
    # the software's ImplementationClassUID) cannot be told apart in the bytes; the profile check covers them.
    kept = [value.lower() for value in _values(ds, keep=True) | {str(e.value) for e in ds.file_meta}]
    needles = {value for value in _values(ds, keep=False) if not any(value.lower() in other for other in kept)}
    assert needles, "the dataset should carry identifiers to remove"
    # examples_palette.dcm is ultrasound and JPEG2000.dcm a secondary capture: refused unless their pixels are
    # accepted (tests/data/deid/test_burned_in.py); this test is about their headers.
    accepted = DeidOptions(allow_burned_in=frozenset({"US", "SC"}))
    out = deidentify_file(PYDICOM_DIR / name, tmp_path / name, key=KEY, options=accepted)
    assert scan_for_phi(out, needles) == []
    clean = pydicom.dcmread(out, force=True)
    _assert_profile_applied(clean)
    assert clean.Modality == ds.Modality  # technical attributes survive


def test_persistent_cache_holds_no_phi(phi_series: list[Path], tmp_path: Path) -> None:
    transform = volume_transforms(pixdim=(2.0, 2.0, 2.0), roi_size=(4, 4, 4), train=False)
    dataset = persistent_dataset([{"image": str(phi_series[0].parent)}], transform, tmp_path / "cache")
    item = dataset[0]
    cache_files = list((tmp_path / "cache").iterdir())
    assert len(cache_files) == 1 and cache_files[0].stat().st_size > 0
    assert scan_for_phi(tmp_path / "cache", NEEDLES) == []
    assert not any(needle.lower() in repr(item["image"].meta).lower() for needle in NEEDLES)
