"""medcl's Table E.1-1 (medcl/data/deid/table_e1_1.csv) against an independent copy of the standard's table, and the
actions it resolves to under each option."""

from __future__ import annotations

import importlib

import pytest
from pydicom.datadict import dictionary_keyword
from pydicom.tag import BaseTag

from medcl.data.deid import DeidOptions, action_plan, table
from medcl.data.deid.profile import RESOLVED

# dicom-anonymizer lists the Basic Profile column of the 2026c edition by action; masks stand for repeating groups.
REFERENCE_EDITION = "dicomfields_2026c"
REFERENCE_ACTIONS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D", "X_Z_TAGS": "X/Z",
                     "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}  # fmt: skip
REPEATING = {(0x5000, 0x0000, 0xFF00, 0x0000): "(50xx,xxxx)", (0x6000, 0x3000, 0xFF00, 0xFFFF): "(60xx,3000)",
             (0x6000, 0x4000, 0xFF00, 0xFFFF): "(60xx,4000)"}  # fmt: skip


def _reference() -> dict[str, str]:
    module = importlib.import_module(f"dicomanonymizer.dicom_anonymization_databases.{REFERENCE_EDITION}")
    reference = {}
    for name, action in REFERENCE_ACTIONS.items():
        for entry in getattr(module, name):
            tag = REPEATING[entry] if len(entry) == 4 else f"({entry[0]:04X},{entry[1]:04X})"
            assert tag not in reference, f"{tag} listed twice"
            reference[tag] = action
    return reference


def test_basic_profile_is_the_standards_table() -> None:
    ours = {rule.tag: rule.actions["basic"] for rule in table()}
    # Private attributes are a row of the standard's table that dicom-anonymizer handles outside its lists.
    assert ours.pop("private") == "X"
    assert ours == _reference()  # every attribute, every action: nothing hand-picked, nothing missing
    assert len(ours) == 655


def test_names_and_option_columns() -> None:
    rules = table()
    for rule in rules:
        if rule.keyword:  # the keyword is pydicom's for that tag (a typo in a tag would show here)
            group, element = (int(part, 16) for part in rule.tag.strip("()").split(","))
            assert dictionary_keyword(group << 16 | element) == rule.keyword
        assert rule.name
        options = {name: action for name, action in rule.actions.items() if name != "basic" and action}
        assert set(options.values()) <= {"K", "C"}, rule  # options only keep or clean
    by_keyword = {rule.keyword: rule.actions for rule in rules}
    # Spot checks of each option column against PS3.15 E.3.
    assert by_keyword["StudyInstanceUID"]["retain_uids"] == "K"
    assert by_keyword["StationName"]["retain_device_identity"] == "K"
    assert by_keyword["StationAETitle"]["retain_device_identity"] == "C"
    assert by_keyword["InstitutionName"]["retain_institution_identity"] == "K"
    assert by_keyword["PatientAge"]["retain_patient_characteristics"] == "K"
    assert by_keyword["StudyDate"]["retain_long_full_dates"] == "K"
    assert by_keyword["StudyDate"]["retain_long_modified_dates"] == "C"
    assert by_keyword["StudyDescription"]["clean_descriptors"] == "C"
    assert by_keyword["ContentSequence"]["clean_structured_content"] == "C"
    assert by_keyword["GraphicAnnotationSequence"]["clean_graphics"] == "C"
    assert {rule.tag: rule.actions["retain_safe_private"] for rule in rules}["private"] == "C"


# The attributes an audit found kept by medcl's earlier hand-picked subset.
FOUND_KEPT = ["PatientTelecomInformation", "ReferencedPatientPhotoSequence", "PatientInstitutionResidence",
              "ReasonForVisit", "StationAETitle", "SourceSerialNumber"]  # fmt: skip


def test_basic_profile_actions_resolve_as_documented() -> None:
    plan = action_plan(DeidOptions())
    for rule in table():
        if rule.tag.startswith("(") and "x" not in rule.tag:
            group, element = (int(part, 16) for part in rule.tag.strip("()").split(","))
            basic = rule.actions["basic"]
            assert plan.action_for(BaseTag(group << 16 | element)) == RESOLVED.get(basic, basic), rule
    by_keyword = {rule.keyword: rule for rule in table()}
    for keyword in FOUND_KEPT:
        group, element = (int(part, 16) for part in by_keyword[keyword].tag.strip("()").split(","))
        assert plan.action_for(BaseTag(group << 16 | element)) == "X", keyword
    assert plan.action_for(BaseTag(0x00111001)) == "X"  # private
    assert plan.action_for(BaseTag(0x50023000)) == plan.action_for(BaseTag(0x60203000)) == "X"  # curve, overlay
    assert plan.action_for(BaseTag(0x00080060)) is None  # Modality: not listed, kept


@pytest.mark.parametrize("option", DeidOptions.option_names())
def test_each_option_changes_exactly_its_column(option: str) -> None:
    basic, plan = action_plan(DeidOptions()), action_plan(DeidOptions.from_names([option]))
    changed = {tag for tag, action in plan.by_tag.items() if action != basic.by_tag[tag]}
    listed = set()
    for rule in table():
        if rule.actions[option] and rule.tag.startswith("(") and "x" not in rule.tag:
            group, element = (int(part, 16) for part in rule.tag.strip("()").split(","))
            listed.add(BaseTag(group << 16 | element))
            assert plan.by_tag[BaseTag(group << 16 | element)] == rule.actions[option]
    assert changed <= listed and changed  # nothing outside the column moves
