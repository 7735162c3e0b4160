"""Sectioning of MIMIC-CXR free-text reports, following the behaviour of the official parser.

The official parser (MIT-LCP/mimic-cxr, ``txt/section_parser.py`` + ``create_section_files.py``) splits a report on
all-caps ``HEADER:`` lines, maps ~60 header spellings onto a few canonical names, drops empty findings/impression
sections, keeps the *last* section of each name, and, when a report has neither findings nor impression, splits
the last section after its first paragraph into ``last_paragraph``. This module reproduces that behaviour (it is
re-implemented, not copied) and additionally joins wrapped lines (reports are hard-wrapped at 79 characters) and
drops the addendum separators (``____`` rules, ``FINAL REPORT`` titles).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from pathlib import Path

from medcl.errors import InvalidInputError

# A header is an all-caps label at the start of a line followed by a colon and whitespace (or the line's end),
# e.g. " FINDINGS: ", " INDICATION:  text", " PA AND LATERAL VIEWS OF THE CHEST:".
_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,-]*):(?=\s|$)", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*_{5,}[ \t]*$", re.MULTILINE)
_TITLE = re.compile(r"^[ \t]*FINAL (?:REPORT|ADDENDUM)[ \t]*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")

# Exact spellings (lower case) -> canonical section, incl. typos seen in MIMIC-CXR.
SECTION_ALIASES: dict[str, str] = {
    "impression": "impression", "impressions": "impression", "conclusion": "impression",
    "conclusions": "impression", "findings and impression": "impression", "findings/impression": "impression",
    "findings/ impression": "impression", "impresson": "impression", "imprression": "impression",
    "imoression": "impression", "impressoin": "impression", "imprssion": "impression", "impresion": "impression",
    "imperssion": "impression", "mpression": "impression", "impession": "impression", "ndication": "impression",
    "findings": "findings", "finding": "findings", "findins": "findings", "findindgs": "findings",
    "findgings": "findings", "findngs": "findings", "findnings": "findings", "finidngs": "findings",
    "chest, two views": "findings", "reference findings": "findings",
    "indication": "indication", "indications": "indication", "idication": "indication",
    "reason for examination": "indication", "reason for exam": "indication", "clinical indication": "indication",
    "history": "history", "clinical history": "history", "clinical information": "history",
    "patient history": "history", "pfi": "history",
    "comparison": "comparison", "comparisons": "comparison", "comparison exam": "comparison",
    "comparison film": "comparison", "reference exam": "comparison", "comparision": "comparison",
    "comparsion": "comparison", "comparrison": "comparison", "comparisions": "comparison",
    "examination": "examination", "exam": "examination", "type of examination": "examination",
    "technique": "technique", "notification": "notification",
    "recommendation": "recommendations", "recommendations": "recommendations",
    "recommendation(s)": "recommendations", "wet read": "wet read", "wetread": "wet read",
    "addendum": "addendum", "comment": "comment", "date": "date",
}  # fmt: skip
# Otherwise: a header containing one of these words is that section...
_CONTAINS = ("impression", "findings", "history", "comparison", "addendum")
# ...and one that describes the views taken describes the whole study, i.e. it holds the findings.
_VIEW_WORDS = re.compile(
    r"chest|portable|pa and lat|lateral and pa|ap and lateral|lateral and ap|frontal and|two views|frontal view|"
    r"pa view|ap view|one view|lateral view|bone window|frontal upright|frontal semi-upright|ribs"
)
# Columns of the official mimic_cxr_sectioned.csv, in order.
SECTIONED_COLUMNS = ("study", "impression", "findings", "last_paragraph", "comparison")
REPORTS_HINT = (
    "MIMIC-CXR-JPG does not include the reports: download mimic-cxr-reports.zip from the MIMIC-CXR (DICOM) "
    "project and unzip it into the dataset root so that files/p10/p10000032/s50414267.txt sits beside the "
    "study folder files/p10/p10000032/s50414267/"
)


def normalize_section_name(header: str) -> str:
    """Canonical section name of a header (``REASON FOR EXAM`` -> ``indication``, ``CONCLUSION`` -> ``impression``)."""
    name = " ".join(header.lower().split())
    if name in SECTION_ALIASES:
        return SECTION_ALIASES[name]
    for word in _CONTAINS:
        if word in name:
            return word
    return "findings" if _VIEW_WORDS.search(name) else name


def _clean(text: str) -> str:
    """Drop addendum rules and report titles, then join wrapped lines into single-spaced prose."""
    text = _TITLE.sub(" ", _RULE.sub(" ", text))
    return " ".join(text.split())


def split_sections(text: str) -> list[tuple[str, str]]:
    """Ordered ``(canonical name, raw text)`` sections; text before the first header is the ``preamble``.

    A report without any header is a single ``full report`` section.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    headers = list(_HEADER.finditer(text))
    if not headers:
        return [("full report", text)]
    sections = [("preamble", text[: headers[0].start()])]
    for header, following in zip(headers, [*headers[1:], None]):
        end = following.start() if following is not None else len(text)
        sections.append((normalize_section_name(header.group(1)), text[header.end() : end]))
    return sections


def parse_report(text: str) -> dict[str, str]:
    """Sections of one report as ``{canonical name: single-spaced text}``.

    The last section of each name wins (addenda come first in MIMIC, so the final report's sections are used), empty
    findings/impression sections are ignored, and a report with neither gets ``last_paragraph``: the text after the
    first paragraph of its last section (the official rule; e.g. a report written under ``COMPARISON:``).
    """
    sections = [(name, body) for name, body in split_sections(text)
                if not (name in ("findings", "impression") and not _clean(body))]  # fmt: skip
    names = {name for name, _ in sections}
    if "findings" not in names and "impression" not in names and sections:
        name, body = sections[-1]
        # Blank lines right after the header do not end the first paragraph.
        paragraphs = _PARAGRAPH_BREAK.split(body.lstrip(" \t\n"))
        if len(paragraphs) > 1:
            sections[-1] = (name, paragraphs[0])
            sections.append(("last_paragraph", "\n\n".join(paragraphs[1:])))
    parsed: dict[str, str] = {}
    for name, body in sections:
        cleaned = _clean(body)
        if cleaned or name not in parsed:
            parsed[name] = cleaned
    return {name: body for name, body in parsed.items() if body}


def read_report(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a report file; a missing or empty file raises :class:`InvalidInputError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, f"report not found. {REPORTS_HINT}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInputError(path, f"report is not UTF-8 text ({err.reason})") from err
    if not text.strip():
        raise InvalidInputError(path, "report is empty")
    return parse_report(text)


def iter_report_files(root: str | os.PathLike[str]) -> Iterable[Path]:
    """``files/pXX/p<subject>/s<study>.txt`` under a MIMIC-CXR root (or its ``files`` folder), sorted."""
    root = Path(root)
    files = root / "files" if (root / "files").is_dir() else root
    return sorted(files.glob("p[0-9][0-9]/p[0-9]*/s[0-9]*.txt"))


def write_sectioned_csv(root: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write ``mimic_cxr_sectioned.csv`` (study, impression, findings, last_paragraph, comparison) for a tree.

    ``study`` is the report's stem (``s50414267``), as in the official file; missing sections are empty.
    """
    reports = list(iter_report_files(root))
    if not reports:
        raise InvalidInputError(root, f"no reports found under files/pXX/p<subject>/. {REPORTS_HINT}")
    out = Path(out)
    if out.is_dir():
        out = out / "mimic_cxr_sectioned.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(SECTIONED_COLUMNS)
        for path in reports:
            sections = read_report(path)
            writer.writerow([path.stem, *(sections.get(name, "") for name in SECTIONED_COLUMNS[1:])])
    return out


# -- report-generation prompts ---------------------------------------------------------------------------------
# Roles of the images a report generator reads (its view-role embedding): the anchor view, the study's other views,
# the latest prior study, and the clinical-context prompt.
ROLES = {"current": 0, "other_view": 1, "prior": 2, "context": 3}
NO_INDICATION, NO_PRIOR_REPORT = "[NHI]", "[NHPR]"


def context_prompt(indication: str | None, prior_report: str | None, history: str | None = None) -> str:
    """MLRG's prompt with explicit absence tokens: ``[INDICATION] ... [HISTORY] ... [FINDINGS] <prior report>``."""
    indication = (indication or "").strip() or NO_INDICATION
    prior = (prior_report or "").strip() or NO_PRIOR_REPORT
    history = (history or "").strip()
    middle = f" [HISTORY] {history}" if history else ""
    return f"[INDICATION] {indication}{middle} [FINDINGS] {prior}"


# -- structured reports (CoGaze's SRRG style: ``Organ:- item- item``) ----------------------------------------------
ORGAN_SECTIONS = (
    "Lungs and Airways",
    "Pleura",
    "Cardiovascular",
    "Hila and Mediastinum",
    "Tubes, Catheters, and Support Devices",
    "Musculoskeletal and Chest Wall",
    "Abdominal",
)
# First matching organ wins, so specific anatomy is tested before the lungs (the default).
_ORGAN_WORDS = (
    ("Tubes, Catheters, and Support Devices",
     r"\btubes?\b|catheter|\bpicc\b|\blines?\b(?! of)|pacemaker|pacer|\bleads?\b|device|\bport\b|stent|\bwires?\b"),
    ("Pleura", r"pleura|effusion|pneumothora|costophrenic|hydrothorax"),
    ("Hila and Mediastinum", r"mediastin|\bhila|hilum|trachea|paratracheal"),
    ("Cardiovascular", r"\bheart\b|cardiac|cardiomegaly|aort|pericardi|vascular|\bsvc\b|atri|ventric"),
    ("Musculoskeletal and Chest Wall", r"fracture|\bribs?\b|osseous|spine|\bbone|shoulder|clavic|scoliosis|chest wall"),
    ("Abdominal", r"abdom|bowel|subdiaphragmatic|free air|stomach|liver|spleen|gastric|colon"),
)  # fmt: skip
_ORGAN_HEADER = re.compile("(" + "|".join(re.escape(o) for o in (*ORGAN_SECTIONS, "Other")) + r"):-\s*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9_])")


def organ_of(sentence: str) -> str:
    lower = sentence.lower()
    return next((organ for organ, words in _ORGAN_WORDS if re.search(words, lower)), ORGAN_SECTIONS[0])


def structure_report(text: str) -> str:
    """Free text -> ``Lungs and Airways:- s1- s2Pleura:- s3`` with sections in :data:`ORGAN_SECTIONS` order."""
    groups: dict[str, list[str]] = {}
    for sentence in _SENTENCE.split(" ".join(text.split())):
        if sentence.strip():
            groups.setdefault(organ_of(sentence), []).append(sentence.strip())
    return "".join(f"{organ}:- " + "- ".join(groups[organ]) for organ in ORGAN_SECTIONS if organ in groups)


def flatten_structured_report(text: str) -> str:
    """Structured report -> plain sentences (headers and item dashes removed), as scored by CoGaze."""
    parts = [p for p in _ORGAN_HEADER.split(text) if p and p not in (*ORGAN_SECTIONS, "Other")]
    items = [item.strip() for part in parts for item in re.split(r"(?:^|(?<=[.!?]))\s*-\s+", part)]
    return " ".join(item for item in items if item)
