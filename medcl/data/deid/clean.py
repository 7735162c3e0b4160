"""Apply the confidentiality profile (:mod:`medcl.data.deid.profile`) to a pydicom Dataset, recursively through
every sequence item, and write de-identified files.

How each action is carried out:

* ``X`` removes the attribute; ``Z`` empties it (PatientName and PatientID hold the keyed patient pseudonym, a dummy
  the table's ``Z`` allows, or stay empty when the object names no patient); ``D`` puts a dummy of the attribute's
  VR (``ANONYMIZED``, ``19000101``, ``0``; a sequence becomes one empty item; a UID a keyed UID); ``U`` maps every
  instance UID to a keyed UID (registered UIDs such as SOP classes identify nobody and stay); ``U*`` keeps a
  reference sequence and treats its items.
* ``C`` (options only): text is kept after every identifying value of the same object (the values the profile
  removes: names and their parts, IDs, dates in the usual spellings, addresses, institutions) is replaced by
  ``REDACTED``; dates are moved back by the patient's keyed day shift (Modified Dates) and times kept; a sequence is
  kept and inside it text the table does not list is cleaned too (Clean Structured Content); binary values (curves,
  overlay bitmaps) cannot be cleaned by reading and are removed. Text that identifies someone without repeating a
  header value (a name typed only in a comment) is not recognised: turn on a Clean option only for text you trust.
"""

from __future__ import annotations

import copy
import datetime
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from medcl.data.deid.burned_in import refuse_burned_in
from medcl.data.deid.keys import PseudonymKey
from medcl.data.deid.profile import (
    BASIC_PROFILE_CODE,
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    NEW_UID,
    NEW_UIDS_INSIDE,
    OPTION_CODES,
    REMOVE,
    ActionPlan,
    DeidOptions,
    action_plan,
)
from medcl.errors import InvalidInputError

DATE_TIME_VRS = ("DA", "DT", "TM")
TEXT_VRS = ("AE", "AS", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT")
BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
DUMMY_BY_VR = {"DA": "19000101", "TM": "000000", "DT": "19000101000000", "AS": "000D", "IS": "0", "DS": "0"}
DUMMY_TEXT = "ANONYMIZED"
REDACTED = "REDACTED"
MIN_IDENTIFIER_LENGTH = 3  # shorter values (initials, a sex code) would blank unrelated words
PSEUDONYM_KEYWORDS = ("PatientName", "PatientID")
PATIENT_IDENTITY_REMOVED = "YES"


def is_registered_uid(value: str) -> bool:
    """SOP classes, transfer syntaxes and coding schemes are the standard's own UIDs: they identify nobody."""
    return bool(UID(value).keyword) or value.startswith("1.2.840.10008.")


def map_uid(value: str, key: PseudonymKey, options: DeidOptions) -> str:
    """The UID medcl writes for ``value``: itself under Retain UIDs or when registered, else the keyed UID."""
    value = str(value).strip()
    if not value or options.retain_uids or is_registered_uid(value):
        return value
    return key.uid(value)


@dataclass
class _Context:
    plan: ActionPlan
    key: PseudonymKey
    options: DeidOptions
    pseudonym: str
    day_shift: int
    identifiers: list[re.Pattern[str]] = field(default_factory=list)


def _as_list(value: object) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def _date_spellings(value: str) -> list[str]:
    """A DA value as it may be typed in free text (20230517, 2023-05-17, 17/05/2023, 05/17/2023, 17.05.2023)."""
    if not re.fullmatch(r"\d{8}", value):
        return [value]
    y, m, d = value[:4], value[4:6], value[6:8]
    return [value, f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}", f"{d}.{m}.{y}"]


def _identifying_strings(ds: Dataset, plan: ActionPlan, options: DeidOptions) -> list[re.Pattern[str]]:
    """Case-insensitive patterns for every text value the profile takes out of ``ds`` (at any depth)."""
    found: set[str] = set()
    for element in ds.iterall():
        action = plan.action_for(element.tag) or _unlisted_action(element, options, cleaning=False)
        if action in (KEEP, CLEAN) or element.VR in ("SQ", *BINARY_VRS):
            continue
        for value in _as_list(element.value):
            text = str(value).strip()
            if element.VR == "PN":
                found.update(part for part in re.split(r"[\^=\s,]+", text) if part)
            found.update(_date_spellings(text) if element.VR == "DA" else [text])
    usable = sorted((s for s in found if len(s) >= MIN_IDENTIFIER_LENGTH), key=len, reverse=True)
    return [re.compile(re.escape(s), re.IGNORECASE) for s in usable]


def _redact(text: str, ctx: _Context) -> str:
    for pattern in ctx.identifiers:
        text = pattern.sub(REDACTED, text)
    return text


def _shift_date(value: str, days: int) -> str:
    """Move a DA (or the date part of a DT) back by ``days``; a value that is not a date becomes empty."""
    match = re.fullmatch(r"(\d{8})(.*)", value.strip())
    if not match:
        return ""
    try:
        day = datetime.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        return ""
    return (day - datetime.timedelta(days=days)).strftime("%Y%m%d") + match.group(2)


def _unlisted_action(element: DataElement, options: DeidOptions, *, cleaning: bool) -> str:
    """Attributes Table E.1-1 does not list: names emptied, dates per the longitudinal options, UIDs remapped."""
    vr = element.VR
    if vr == "PN":
        return EMPTY
    if vr in DATE_TIME_VRS:
        if options.retain_long_full_dates:
            return KEEP
        return CLEAN if options.retain_long_modified_dates else EMPTY
    if vr == "UI":
        return KEEP if options.retain_uids else NEW_UID
    if cleaning and vr in TEXT_VRS:  # free text inside a cleaned sequence (e.g. an SR TextValue)
        return CLEAN
    return KEEP


def _dummy(element: DataElement, ctx: _Context) -> object:
    vr = element.VR
    if vr == "SQ":
        return Sequence([Dataset()])
    if vr == "UI":
        values = [map_uid(v, ctx.key, ctx.options) for v in _as_list(element.value)] or [ctx.key.uid("dummy")]
        return values if len(values) != 1 else values[0]
    if vr in DUMMY_BY_VR:
        return DUMMY_BY_VR[vr]
    if vr in TEXT_VRS:
        return DUMMY_TEXT
    if vr in BINARY_VRS:
        return b"\0\0"
    return 0  # US, SS, UL, SL, UV, SV, FL, FD, AT


def _clean_value(element: DataElement, ctx: _Context) -> object | None:
    """The value after ``C``; None means the attribute cannot be cleaned and goes."""
    vr = element.VR
    if vr in ("DA", "DT"):
        if not ctx.options.retain_long_modified_dates:
            return ""
        return [_shift_date(str(v), ctx.day_shift) for v in _as_list(element.value)]
    if vr == "TM":
        return element.value if ctx.options.retain_long_modified_dates else ""
    if vr in TEXT_VRS:
        values = [_redact(str(v), ctx) for v in _as_list(element.value)]
        return values if len(values) != 1 else values[0]
    return None


def _creators(ds: Dataset) -> dict[tuple[int, int], str]:
    return {(e.tag.group, e.tag.element): str(e.value).strip() for e in ds if e.tag.is_private_creator}


def _is_safe_private(tag: BaseTag, creators: dict[tuple[int, int], str], options: DeidOptions) -> bool:
    """Whether the user vouched for this private attribute (or for the block whose creator this is)."""
    if tag.is_private_creator:
        creator = creators.get((tag.group, tag.element), "")
        return any(group == tag.group and name == creator for group, name, _ in options.safe_private)
    creator = creators.get((tag.group, tag.element >> 8), "")
    return (tag.group, creator, tag.element & 0xFF) in options.safe_private


def _clean_dataset(ds: Dataset, ctx: _Context, *, cleaning: bool = False) -> None:
    creators = _creators(ds)  # read before any creator element is removed
    for tag in list(ds.keys()):
        element = ds[tag]
        action = ctx.plan.action_for(tag) or _unlisted_action(element, ctx.options, cleaning=cleaning)
        if tag.is_private:
            action = CLEAN if action == CLEAN and _is_safe_private(tag, creators, ctx.options) else REMOVE
            if tag.is_private_creator and action == CLEAN:
                continue  # the creator string of a vouched-for block
        if action == REMOVE:
            del ds[tag]
        elif action == EMPTY:
            is_pseudonymous = element.keyword in PSEUDONYM_KEYWORDS
            element.value = ctx.pseudonym if is_pseudonymous else Sequence([]) if element.VR == "SQ" else None
        elif action == DUMMY:
            element.value = ctx.pseudonym if element.keyword in PSEUDONYM_KEYWORDS else _dummy(element, ctx)
        elif action == NEW_UID:
            values = [map_uid(v, ctx.key, ctx.options) for v in _as_list(element.value)]
            element.value = values if len(values) != 1 else values[0]
        elif element.VR == "SQ":  # K, C and U*: the sequence stays, its items are treated
            for item in element.value:
                _clean_dataset(item, ctx, cleaning=cleaning or action == CLEAN)
        elif action == CLEAN:
            value = _clean_value(element, ctx)
            if value is None:
                del ds[tag]
            else:
                element.value = value
        elif action not in (KEEP, NEW_UIDS_INSIDE):
            raise AssertionError(f"unhandled action {action!r}")


def _record_method(ds: Dataset, options: DeidOptions) -> None:
    """PS3.15 E.1.1: say that and how the object was de-identified."""
    ds.PatientIdentityRemoved = PATIENT_IDENTITY_REMOVED
    if options.retain_long_full_dates:
        ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
    else:
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.retain_long_modified_dates else "REMOVED"
    codes = [BASIC_PROFILE_CODE] + [OPTION_CODES[name] for name in options.enabled()]
    ds.DeidentificationMethod = ["medcl: " + codes[0][1], *(meaning for _, meaning in codes[1:])]  # LO, VM 1-n
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(items)


def patient_identifier(ds: Dataset) -> str:
    """What the patient pseudonym is computed from: PatientID, else PatientName, else empty."""
    return str(ds.get("PatientID", "") or ds.get("PatientName", "") or "").strip()


def deidentify(ds: Dataset, *, key: PseudonymKey, options: DeidOptions | None = None) -> Dataset:
    """A de-identified copy of ``ds`` under the Basic Profile and ``options`` (``ds`` itself is not changed).

    Raises:
        InvalidInputError: when the pixels may show identifying text (BurnedInAnnotation = YES, or a modality or
            SOP class known for it) and ``options.allow_burned_in`` does not accept that risk.
    """
    options = options or DeidOptions()
    refuse_burned_in(ds, options, source=getattr(ds, "filename", None))
    plan = action_plan(options)
    patient = patient_identifier(ds)
    ctx = _Context(
        plan=plan,
        key=key,
        options=options,
        pseudonym=key.pseudonym(patient) if patient else "",  # no shared pseudonym for patients without an id
        day_shift=key.day_shift(patient) if options.retain_long_modified_dates else 0,
        identifiers=_identifying_strings(ds, plan, options) if options.enabled() else [],
    )
    clean = copy.deepcopy(ds)
    _clean_dataset(clean, ctx)
    file_meta = getattr(clean, "file_meta", None)
    if file_meta is not None and "MediaStorageSOPInstanceUID" in file_meta:
        file_meta.MediaStorageSOPInstanceUID = map_uid(file_meta.MediaStorageSOPInstanceUID, key, options)
    _record_method(clean, options)
    return clean


def write_dataset(ds: Dataset, destination: str | Path) -> Path:
    """Write ``ds`` to ``destination`` all at once (a temporary file beside it, then a rename; parents created)."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    try:
        ds.save_as(partial, enforce_file_format=bool(getattr(ds, "file_meta", None)))
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def deidentify_file(
    source: str | Path, destination: str | Path, *, key: PseudonymKey, options: DeidOptions | None = None
) -> Path:
    """Read a DICOM file, de-identify it and write it to ``destination``."""
    source = Path(source)
    try:
        ds = pydicom.dcmread(source, force=True)
    except Exception as err:  # pydicom raises many types on damaged input
        raise InvalidInputError(source, f"not a readable DICOM file ({type(err).__name__}: {err})") from err
    return write_dataset(deidentify(ds, key=key, options=options), destination)
