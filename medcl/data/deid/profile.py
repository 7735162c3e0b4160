"""The PS3.15 Annex E confidentiality profile as data: Table E.1-1 (``table_e1_1.csv``), the options a user turns on,
and the one action each attribute gets under them.

Resolving the table's choices. Table E.1-1 leaves some choices to the application; medcl decides them once, here:

* ``X/Z``, ``X/D``, ``X/Z/D`` -> ``X`` and ``Z/D`` -> ``Z``: the table allows the weaker action only where the IOD
  requires the attribute. medcl's de-identified files are read by medcl for training, not sent back to an archive,
  so it removes rather than keeps IOD conformance (an absent or empty attribute carries nothing; a dummy could be
  mistaken for data).
* ``X/Z/U*`` (Referenced/Source Image Sequence) -> ``U*``: the sequence stays, its items go through the profile and
  their instance UIDs are remapped, so a derived image still points at its source inside the de-identified set.
* ``Z`` may hold a dummy (the table's definition): PatientName and PatientID get the keyed patient pseudonym, so
  patient-level grouping survives without the identifier.

Options (PS3.15 E.3, codes from CID 7050) change the action of the attributes their column lists; an option the
user did not turn on changes nothing. When two options list one attribute, keep (K) wins over clean (C): the user
asked to retain it. Attributes the table does not list are kept, except (the profile allows removing more) person
names, which are emptied, dates and times, which are emptied unless a longitudinal option says otherwise, and
instance UIDs, which are remapped unless Retain UIDs is on.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field, fields
from pathlib import Path

from pydicom.tag import BaseTag

from medcl.errors import ConfigError

TABLE_PATH = Path(__file__).with_name("table_e1_1.csv")

REMOVE, EMPTY, DUMMY, KEEP, CLEAN, NEW_UID, NEW_UIDS_INSIDE = "X", "Z", "D", "K", "C", "U", "U*"
RESOLVED = {"X/Z": REMOVE, "X/D": REMOVE, "X/Z/D": REMOVE, "Z/D": EMPTY, "X/Z/U*": NEW_UIDS_INSIDE}
ACTIONS = (REMOVE, EMPTY, DUMMY, KEEP, CLEAN, NEW_UID, *RESOLVED)


def _read_table(path: Path) -> list[dict[str, str]]:
    """The rows of one of the CSV tables shipped here (``#`` lines are their header comments)."""
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


# Profile and option columns of table_e1_1.csv -> (DICOM code of CID 7050, code meaning), from cid_7050.csv.
OPTION_CODES: dict[str, tuple[str, str]] = {
    row["column"]: (row["code"], row["meaning"]) for row in _read_table(TABLE_PATH.with_name("cid_7050.csv"))
}
BASIC_PROFILE_CODE = OPTION_CODES.pop("basic")

# Modalities whose pixels often carry burned-in text whatever the header says: ultrasound and endoscopy screens
# print the patient banner, secondary captures and "other" are screenshots or scanned documents, external-camera
# photographs show faces and wristbands. Secondary Capture SOP classes count as "SC" whatever their Modality.
BURNED_IN_MODALITIES = ("US", "SC", "OT", "XC", "ES")
BURNED_IN_FLAGGED = "flagged"  # the file says BurnedInAnnotation = YES


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1."""

    tag: str  # "(0010,0010)", "(50xx,xxxx)", "(60xx,3000)" or "private"
    keyword: str
    name: str
    actions: dict[str, str]  # "basic" and each option column -> the action in the table ("" = unchanged)


@functools.cache
def table() -> tuple[Rule, ...]:
    """Table E.1-1 as shipped in ``table_e1_1.csv`` (see its header for the source and the edition)."""
    described = ("tag", "keyword", "name")
    rules = tuple(
        Rule(row["tag"], row["keyword"], row["name"], {k: v for k, v in row.items() if k not in described})
        for row in _read_table(TABLE_PATH)
    )
    for rule in rules:
        unknown = {a for a in rule.actions.values() if a and a not in ACTIONS}
        if unknown or not rule.actions["basic"]:
            raise ConfigError(f"{TABLE_PATH.name}: {rule.tag} has action(s) {unknown or 'none'}")
    return rules


@dataclass(frozen=True)
class DeidOptions:
    """The profile options (each flag is one column of Table E.1-1) and which burned-in text risks the user accepts.

    ``safe_private`` lists private attributes the user vouches for, as ``(group, private creator, element byte)``
    (PS3.15 E.3.10: which private attributes are safe depends on the vendor; medcl ships no list, so by default
    every private attribute is removed). Listing any turns on the Retain Safe Private Option.

    ``allow_burned_in`` holds ``"flagged"`` (accept files with BurnedInAnnotation = YES) and/or modality codes of
    :data:`BURNED_IN_MODALITIES`, for pixels the user has checked or cleaned; everything else at risk is refused.
    """

    retain_uids: bool = False
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_patient_characteristics: bool = False
    retain_long_full_dates: bool = False
    retain_long_modified_dates: bool = False
    clean_descriptors: bool = False
    clean_structured_content: bool = False
    clean_graphics: bool = False
    safe_private: frozenset[tuple[int, str, int]] = field(default_factory=frozenset)
    allow_burned_in: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.retain_long_full_dates and self.retain_long_modified_dates:
            raise ConfigError("retain_long_full_dates and retain_long_modified_dates exclude each other: choose one")
        unknown = set(self.allow_burned_in) - {BURNED_IN_FLAGGED, *BURNED_IN_MODALITIES}
        if unknown:
            raise ConfigError(
                f"allow_burned_in: unknown {sorted(unknown)}; use {BURNED_IN_FLAGGED!r} or one of "
                f"{', '.join(BURNED_IN_MODALITIES)}"
            )
        for group, creator, element in self.safe_private:
            if group % 2 == 0 or not creator or not 0 <= element <= 0xFF:
                raise ConfigError(f"safe_private entry {(group, creator, element)}: need (odd group, creator, 0-255)")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The Table E.1-1 option flags, in the table's column order."""
        return tuple(name for name in OPTION_CODES if name != "retain_safe_private")

    @classmethod
    def from_names(cls, names: list[str] | tuple[str, ...], **kwargs: object) -> DeidOptions:
        """``["retain-uids", "clean-descriptors"]`` -> options with those flags on (dashes or underscores)."""
        flags = {}
        for name in names:
            key = name.strip().replace("-", "_")
            if key not in cls.option_names():
                raise ConfigError(f"unknown de-identification option {name!r}; one of {', '.join(cls.option_names())}")
            flags[key] = True
        return cls(**flags, **kwargs)  # type: ignore[arg-type]

    def enabled(self) -> list[str]:
        """The option columns in force (Retain Safe Private when any private attribute is vouched for)."""
        on = [f.name for f in fields(self) if f.type in ("bool", bool) and getattr(self, f.name)]
        return (["retain_safe_private"] if self.safe_private else []) + on

    def describe(self) -> dict[str, object]:
        """A JSON-ready record of the profile in force, for summaries and logs."""
        return {
            "profile": "DICOM PS3.15 Basic Application Level Confidentiality Profile",
            "options": self.enabled(),
            "safe_private": sorted(f"{g:04X},{c},{e:02X}" for g, c, e in self.safe_private),
            "allow_burned_in": sorted(self.allow_burned_in),
        }


@dataclass(frozen=True)
class ActionPlan:
    """The action for every attribute the table lists, under one set of options."""

    by_tag: dict[BaseTag, str]
    curves: str  # (50xx,xxxx)
    overlay_data: str  # (60xx,3000)
    overlay_comments: str  # (60xx,4000)
    private: str

    def action_for(self, tag: BaseTag) -> str | None:
        """The table's action for ``tag``, or None when the table does not list it."""
        if tag.is_private:
            return self.private
        group = tag.group
        if 0x5000 <= group <= 0x50FF and group % 2 == 0:
            return self.curves
        if 0x6000 <= group <= 0x60FF and group % 2 == 0 and tag.element in (0x3000, 0x4000):
            return self.overlay_data if tag.element == 0x3000 else self.overlay_comments
        return self.by_tag.get(tag)


def _effective(rule: Rule, options: DeidOptions) -> str:
    """The action of one row under ``options``: K from any option beats C from any option beats the profile's."""
    chosen = {rule.actions.get(name, "") for name in options.enabled()} - {""}
    if KEEP in chosen:
        return KEEP
    if CLEAN in chosen:
        return CLEAN
    basic = rule.actions["basic"]
    return RESOLVED.get(basic, basic)


@functools.cache
def action_plan(options: DeidOptions) -> ActionPlan:
    """Resolve Table E.1-1 under ``options`` (cached: options are immutable)."""
    by_tag: dict[BaseTag, str] = {}
    special: dict[str, str] = {}
    for rule in table():
        action = _effective(rule, options)
        if rule.tag.startswith("(") and "x" not in rule.tag:
            group, element = rule.tag.strip("()").split(",")
            by_tag[BaseTag(int(group, 16) << 16 | int(element, 16))] = action
        else:
            special[rule.tag] = action
    return ActionPlan(
        by_tag=by_tag,
        curves=special["(50xx,xxxx)"],
        overlay_data=special["(60xx,3000)"],
        overlay_comments=special["(60xx,4000)"],
        private=special["private"],
    )
