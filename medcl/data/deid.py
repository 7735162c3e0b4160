"""De-identification of DICOM metadata after the DICOM PS3.15 Annex E Basic Application Level Confidentiality
Profile, with consistent pseudonyms so that one patient, study or series keeps one identity across files.

Actions (PS3.15 Table E.1-1): X remove, Z empty, D dummy value, U replace UID, K keep. Where the table offers a
choice (X/Z, Z/D, X/Z/D, X/D) medcl empties the attribute: it stays present, so type-2 attributes remain valid,
and holds nothing. On top of the listed attributes medcl applies rules by value representation, which the
profile allows ("may remove more"): every person name is emptied, every date, time and datetime is emptied, every
non-standard UID is remapped, private attributes, curves and overlay data are removed. PatientID and PatientName
become the same salted HMAC pseudonym, so patient-level splits still work without the identifier.

UIDs map to ``2.25.<128-bit HMAC of the UID>``: the same UID gives the same new UID across files and runs with the
same salt (references between objects stay intact), and nobody without the salt can map it back.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import os
from collections.abc import Iterable
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from medcl.errors import ConfigError, InvalidInputError

REMOVE, EMPTY, DUMMY, REMAP_UID, KEEP = "X", "Z", "D", "U", "K"

# PS3.15 Table E.1-1, Basic Profile column, by keyword. Compound actions are resolved as described above.
# Repeating groups (curves 50xx, overlay data/comments 60xx) are handled by tag in _is_curve_or_overlay_content.
# fmt: off
BASIC_PROFILE: dict[str, str] = {
    **dict.fromkeys(
        [
            # patient
            "PatientAddress", "PatientAge", "PatientBirthName", "PatientBirthTime", "PatientComments",
            "PatientInsurancePlanCodeSequence", "PatientMotherBirthName", "PatientPrimaryLanguageCodeSequence",
            "PatientPrimaryLanguageModifierCodeSequence", "PatientReligiousPreference", "PatientSize",
            "PatientState", "PatientTelephoneNumbers", "PatientTransportArrangements", "PatientWeight",
            "OtherPatientIDs", "OtherPatientIDsSequence", "OtherPatientNames", "IssuerOfPatientID",
            "MedicalRecordLocator", "MilitaryRank", "BranchOfService", "EthnicGroup", "Occupation",
            "CountryOfResidence", "RegionOfResidence", "CurrentPatientLocation", "ResponsiblePerson",
            "ResponsibleOrganization", "Allergies", "MedicalAlerts", "PregnancyStatus", "SmokingStatus",
            "LastMenstrualDate", "SpecialNeeds", "AdditionalPatientHistory", "PatientSexNeutered",
            "ReferencedPatientSequence", "ReferencedPatientAliasSequence",
            "ConfidentialityConstraintOnPatientDataDescription",
            "InsurancePlanIdentification", "PersonAddress", "PersonTelephoneNumbers",
            # visit / admission
            "AdmissionID", "AdmittingDate", "AdmittingTime", "AdmittingDiagnosesDescription",
            "AdmittingDiagnosesCodeSequence", "DischargeDiagnosisDescription", "IssuerOfAdmissionIDSequence",
            "ServiceEpisodeID", "ServiceEpisodeDescription", "IssuerOfServiceEpisodeIDSequence", "VisitComments",
            "ScheduledPatientInstitutionResidence",
            # people and places
            "InstitutionAddress", "InstitutionalDepartmentName", "ReferringPhysicianAddress",
            "ReferringPhysicianTelephoneNumbers", "ReferringPhysicianIdentificationSequence",
            "PhysiciansOfRecord", "PhysiciansOfRecordIdentificationSequence", "PerformingPhysicianName",
            "PerformingPhysicianIdentificationSequence", "NameOfPhysiciansReadingStudy",
            "PhysiciansReadingStudyIdentificationSequence", "OperatorIdentificationSequence",
            "RequestingPhysician", "RequestingService", "ScheduledPerformingPhysicianName",
            "ScheduledPerformingPhysicianIdentificationSequence", "HumanPerformerName",
            "HumanPerformerOrganization", "ActualHumanPerformersSequence", "ScheduledHumanPerformersSequence",
            "OrderEnteredBy", "OrderEntererLocation", "OrderCallbackPhoneNumber", "NamesOfIntendedRecipientsOfResults",
            "IntendedRecipientsOfResultsIdentificationSequence", "PhysicianApprovingInterpretation",
            "InterpretationRecorder", "InterpretationTranscriber", "InterpretationAuthor",
            "InterpretationApproverSequence", "DistributionName", "DistributionAddress", "VerifyingOrganization",
            "CustodialOrganizationSequence", "AuthorObserverSequence", "ParticipantSequence",
            "ContentCreatorIdentificationCodeSequence",
            # devices, stations, places
            "CassetteID", "DetectorID", "GantryID", "GeneratorID", "PlateID", "ModifyingDeviceID",
            "ModifyingDeviceManufacturer", "PerformedLocation", "PerformedStationAETitle",
            "PerformedStationGeographicLocationCodeSequence", "PerformedStationName",
            "PerformedStationNameCodeSequence", "ScheduledStationAETitle",
            "ScheduledStationGeographicLocationCodeSequence",
            "ScheduledStationName", "ScheduledStationNameCodeSequence", "ScheduledStudyLocation",
            "ScheduledStudyLocationAETitle", "ScheduledProcedureStepLocation", "RequestedProcedureLocation",
            # procedure and free text
            "AcquisitionComments", "AcquisitionContextSequence", "AcquisitionProtocolDescription",
            "ContributionDescription", "DerivationDescription", "FrameComments", "IdentifyingComments",
            "ImageComments", "ImagePresentationComments", "ImagingServiceRequestComments", "Impressions",
            "InterpretationDiagnosisDescription", "InterpretationIDIssuer", "InterpretationText",
            "ModifiedImageDescription", "PerformedProcedureStepDescription",
            "PerformedProcedureStepID", "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
            "PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime", "PreMedication",
            "ReasonForStudy", "ReasonForTheImagingServiceRequest", "ReasonForTheRequestedProcedure",
            "RequestAttributesSequence", "RequestedContrastAgent", "RequestedProcedureComments",
            "RequestedProcedureID", "ResultsComments", "ResultsDistributionListSequence", "ResultsIDIssuer",
            "ScheduledProcedureStepDescription", "ScheduledProcedureStepStartDate", "ScheduledProcedureStepEndDate",
            "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndTime", "ScheduledProcedureStepID",
            "SeriesDescription", "StudyComments", "StudyDescription", "StudyIDIssuer", "TextComments",
            "TextString", "TopicAuthor", "TopicKeywords", "TopicSubject", "TopicTitle", "AddressTrial",
            "Arbitrary", "CurveDate", "CurveTime", "OverlayDate", "OverlayTime", "DataSetTrailingPadding",
            "DigitalSignaturesSequence", "ReferencedDigitalSignatureSequence", "ReferencedSOPInstanceMACSequence",
            "MAC", "IconImageSequence", "ModifiedAttributesSequence", "OriginalAttributesSequence",
            "TimezoneOffsetFromUTC", "ContentSequence", "InstanceCreationDate", "InstanceCreationTime",
            "EndAcquisitionDateTime", "StartAcquisitionDateTime",
        ],
        REMOVE,
    ),
    **dict.fromkeys(
        [
            "AccessionNumber", "PatientBirthDate", "PatientSex", "ReferringPhysicianName", "StudyDate",
            "StudyTime", "StudyID", "FillerOrderNumberImagingServiceRequest",
            "PlacerOrderNumberImagingServiceRequest", "ContentCreatorName",
            "VerifyingObserverIdentificationCodeSequence",
            # compound X/Z, Z/D, X/Z/D, X/D: emptied
            "AcquisitionDate", "AcquisitionTime", "AcquisitionDateTime", "ContentDate", "ContentTime",
            "SeriesDate", "SeriesTime", "InstitutionName", "InstitutionCodeSequence", "StationName",
            "OperatorsName", "DeviceSerialNumber", "ProtocolName", "ContrastBolusAgent",
            "AcquisitionDeviceProcessingDescription", "RequestedProcedureDescription", "ReviewerName",
            "ReferencedStudySequence", "ReferencedPerformedProcedureStepSequence",
        ],
        EMPTY,
    ),
    **dict.fromkeys(
        [
            "PatientName", "PatientID", "PersonName", "VerifyingObserverName", "VerifyingObserverSequence",
            "GraphicAnnotationSequence", "PersonIdentificationCodeSequence",
        ],
        DUMMY,
    ),
    **dict.fromkeys(
        [
            "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID",
            "FrameOfReferenceUID", "SynchronizationFrameOfReferenceUID", "ReferencedSOPInstanceUID",
            "ReferencedSOPInstanceUIDInFile", "ReferencedFrameOfReferenceUID", "RelatedFrameOfReferenceUID",
            "ConcatenationUID", "DimensionOrganizationUID", "DeviceUID", "DoseReferenceUID", "FiducialUID",
            "IrradiationEventUID", "InstanceCreatorUID", "LargePaletteColorLookupTableUID",
            "PaletteColorLookupTableUID", "StorageMediaFileSetUID", "TemplateExtensionCreatorUID",
            "TemplateExtensionOrganizationUID", "TransactionUID", "UID", "FailedSOPInstanceUIDList",
            "RequestedSOPInstanceUID", "AffectedSOPInstanceUID", "SpecimenUID", "TargetUID",
            "ReferencedGeneralPurposeScheduledProcedureStepTransactionUID",
        ],
        REMAP_UID,
    ),
}
# fmt: on

DEID_METHOD = "medcl: DICOM PS3.15 Basic Application Level Confidentiality Profile (salted pseudonyms)"
DATE_TIME_VRS = ("DA", "DT", "TM")


def _require_salt(salt: str) -> bytes:
    if not salt:
        raise ConfigError("a de-identification salt is required (set MEDCL_DEID_SALT or pass salt=); keep it secret")
    return salt.encode("utf-8")


def pseudonymize_id(identifier: str, *, salt: str, prefix: str = "anon-") -> str:
    """Stable, non-reversible pseudonym for a patient (or other) identifier: ``prefix`` + 16 hex of HMAC-SHA256."""
    digest = hmac.new(_require_salt(salt), str(identifier).strip().encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{prefix}{digest[:16]}"


def remap_uid(uid: str, *, salt: str) -> str:
    """A new, valid UID derived from ``uid`` and the salt (``2.25.`` + a 128-bit integer, at most 44 characters)."""
    digest = hmac.new(_require_salt(salt), str(uid).strip().encode("ascii", "replace"), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def salt_from_env(variable: str = "MEDCL_DEID_SALT") -> str:
    """The de-identification salt from the environment; a clear error when it is missing."""
    salt = os.environ.get(variable, "")
    _require_salt(salt)
    return salt


def _is_standard_uid(value: str) -> bool:
    """Registered DICOM UIDs (SOP classes, transfer syntaxes, coding schemes) identify nobody and are kept."""
    return bool(UID(value).keyword) or value.startswith("1.2.840.10008.")


def _remap_value(value, salt: str):
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return [v if _is_standard_uid(str(v)) else remap_uid(str(v), salt=salt) for v in value if v]
    if not value or _is_standard_uid(str(value)):
        return value
    return remap_uid(str(value), salt=salt)


def _is_curve_or_overlay_content(tag: BaseTag) -> bool:
    group = tag.group
    is_curve = 0x5000 <= group <= 0x50FF and group % 2 == 0
    is_overlay_content = 0x6000 <= group <= 0x60FF and group % 2 == 0 and tag.element in (0x3000, 0x4000)
    return is_curve or is_overlay_content


def _action_for(keyword: str, vr: str, value) -> str:
    if keyword in BASIC_PROFILE:
        return BASIC_PROFILE[keyword]
    if vr == "PN":
        return EMPTY
    if vr in DATE_TIME_VRS:
        return EMPTY
    if vr == "UI":
        return REMAP_UID
    return KEEP


def _dummy_value(vr: str, keyword: str, pseudonym: str):
    if keyword in ("PatientName", "PatientID"):
        return pseudonym
    if vr == "SQ":
        return Sequence([])
    return "ANONYMIZED" if vr in ("PN", "LO", "SH", "LT", "ST", "UT", "CS") else None


def _clean(ds: Dataset, salt: str, pseudonym: str) -> None:
    for tag in list(ds.keys()):
        if tag.is_private or _is_curve_or_overlay_content(tag):
            del ds[tag]
            continue
        element = ds[tag]
        action = _action_for(element.keyword, element.VR, element.value)
        if action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            element.value = Sequence([]) if element.VR == "SQ" else None
        elif action == DUMMY:
            element.value = _dummy_value(element.VR, element.keyword, pseudonym)
        elif action == REMAP_UID:
            element.value = _remap_value(element.value, salt)
        elif element.VR == "SQ":
            for item in element.value:
                _clean(item, salt, pseudonym)


def deidentify(ds: Dataset, *, salt: str, allow_burned_in_annotation: bool = False) -> Dataset:
    """A de-identified copy of ``ds`` (PS3.15 basic profile plus the rules in the module docstring).

    Raises:
        InvalidInputError: when the pixels themselves carry identifying text (BurnedInAnnotation = YES), which
            metadata de-identification cannot fix; pass ``allow_burned_in_annotation=True`` after checking them.
        ConfigError: when ``salt`` is empty.
    """
    _require_salt(salt)
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES" and not allow_burned_in_annotation:
        raise InvalidInputError(
            getattr(ds, "filename", None), "BurnedInAnnotation is YES: the pixels may show identifying text"
        )
    clean = copy.deepcopy(ds)
    pseudonym = pseudonymize_id(str(ds.get("PatientID", "") or ds.get("PatientName", "") or ""), salt=salt)
    _clean(clean, salt, pseudonym)
    file_meta = getattr(clean, "file_meta", None)
    if file_meta is not None and "MediaStorageSOPInstanceUID" in file_meta:
        file_meta.MediaStorageSOPInstanceUID = _remap_value(file_meta.MediaStorageSOPInstanceUID, salt)
    clean.PatientIdentityRemoved = "YES"
    clean.LongitudinalTemporalInformationModified = "REMOVED"
    clean.DeidentificationMethod = DEID_METHOD
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator = "113100", "DCM"
    code.CodeMeaning = "Basic Application Confidentiality Profile"
    clean.DeidentificationMethodCodeSequence = Sequence([code])
    return clean


def deidentify_file(source: str | Path, destination: str | Path, *, salt: str) -> Path:
    """Read a DICOM file, de-identify it and write it to ``destination`` (parents created)."""
    source, destination = Path(source), Path(destination)
    try:
        ds = pydicom.dcmread(source, force=True)
    except Exception as err:  # pydicom raises many types on damaged input
        raise InvalidInputError(source, f"not a readable DICOM file ({type(err).__name__}: {err})") from err
    clean = deidentify(ds, salt=salt)
    destination.parent.mkdir(parents=True, exist_ok=True)
    clean.save_as(destination, enforce_file_format=bool(getattr(clean, "file_meta", None)))
    return destination


def scan_for_phi(root: str | Path, needles: Iterable[str]) -> list[tuple[Path, str]]:
    """(file, needle) for every file under ``root`` whose name or bytes contain a needle (case-insensitive).

    A verification tool for tests and audits of caches, manifests and run artifacts; ``root`` may be one file.
    """
    root = Path(root)
    patterns = [(needle, needle.lower().encode("utf-8")) for needle in needles if needle]
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    hits = []
    for file in files:
        content = file.read_bytes().lower()
        name = str(file.relative_to(root) if file != root else file.name).lower().encode("utf-8")
        hits.extend((file, needle) for needle, pattern in patterns if pattern in content or pattern in name)
    return hits
