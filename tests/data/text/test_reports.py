"""MIMIC-CXR report sectioning: header variants, addenda, last-paragraph fallback, sectioned CSV."""

from __future__ import annotations

import pandas as pd
import pytest

from medcl.data.text.reports import (
    SECTIONED_COLUMNS,
    normalize_section_name,
    parse_report,
    read_report,
    split_sections,
    write_sectioned_csv,
)
from medcl.errors import InvalidInputError

# The example report published on the MIMIC-CXR website (leading spaces and " " blank lines as in the release).
OFFICIAL_EXAMPLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___ year old woman with ?pleural effusion  // ?pleural effusion
 
 TECHNIQUE:  Chest PA and lateral
 
 COMPARISON:  ___
 
 FINDINGS: 
 
 Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Small
 right effusion is new.  The upper lungs are clear.  Right lower lobe opacities
 are better seen in prior CT.  There is no pneumothorax.  There are mild
 degenerative changes in the thoracic spine
 
 IMPRESSION: 
 
 Large left pleural effusion
"""  # noqa: W291, W293


def test_official_example_sections() -> None:
    sections = parse_report(OFFICIAL_EXAMPLE)
    assert sections["examination"] == "CHEST (PA AND LAT)"
    assert sections["indication"] == "___ year old woman with ?pleural effusion // ?pleural effusion"
    assert sections["technique"] == "Chest PA and lateral"
    assert sections["comparison"] == "___"
    # Wrapped lines are joined with single spaces; sentences are intact across the line breaks.
    assert sections["findings"].startswith(
        "Cardiac size cannot be evaluated. Large left pleural effusion is new. Small"
    )
    assert "Small right effusion is new." in sections["findings"]
    assert sections["findings"].endswith("mild degenerative changes in the thoracic spine")
    assert sections["impression"] == "Large left pleural effusion"
    assert "last_paragraph" not in sections
    assert "preamble" not in sections  # only the FINAL REPORT title, which is dropped


@pytest.mark.parametrize(
    ("header", "canonical"),
    [
        ("REASON FOR EXAM", "indication"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CLINICAL INDICATION", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("CLINICAL INFORMATION", "history"),
        ("HISTORY", "history"),
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("FINDNGS", "findings"),
        ("COMPARISONS", "comparison"),
        ("COMPARISON EXAM", "comparison"),
        ("PA AND LATERAL VIEWS OF THE CHEST", "findings"),
        ("PORTABLE SEMI-UPRIGHT RADIOGRAPH", "findings"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("WET READ", "wet read"),
        ("NOTIFICATION", "notification"),
        ("PRIOR HISTORY", "history"),  # contains a main section name
        ("NOTE", "note"),  # unknown headers keep their (lower-case) name
    ],
)
def test_header_variants(header: str, canonical: str) -> None:
    assert normalize_section_name(header) == canonical


def test_variant_headers_in_a_report_and_notification_stays_out_of_impression() -> None:
    report = (
        "                                 FINAL REPORT\n"
        " REASON FOR EXAM:  Cough and fever.\n \n"
        " CLINICAL HISTORY:  Smoker.\n \n"
        " PA AND LATERAL VIEWS OF THE CHEST:  Right lower lobe consolidation.\n \n"
        " CONCLUSION: \n \n Pneumonia.\n \n"
        " NOTIFICATION:  Discussed with Dr. ___ at 10:00.\n"
    )
    sections = parse_report(report)
    assert sections == {
        "indication": "Cough and fever.",
        "history": "Smoker.",
        "findings": "Right lower lobe consolidation.",
        "impression": "Pneumonia.",
        "notification": "Discussed with Dr. ___ at 10:00.",
    }


def test_addendum_first_then_final_report() -> None:
    report = (
        "                                 FINAL ADDENDUM\n"
        " ADDENDUM:  Findings were discussed with Dr. ___ by telephone\n at ___.\n \n"
        " ______________________________________________________________________________\n"
        "                                 FINAL REPORT\n"
        " INDICATION:  Dyspnea.\n \n"
        " FINDINGS: \n \n Moderate cardiomegaly.\n \n"
        " IMPRESSION: \n \n Cardiomegaly.\n"
    )
    sections = parse_report(report)
    assert sections["addendum"] == "Findings were discussed with Dr. ___ by telephone at ___."  # no rule, no title
    assert sections["findings"] == "Moderate cardiomegaly."
    assert sections["impression"] == "Cardiomegaly."


def test_empty_findings_section_is_dropped_and_last_section_of_a_name_wins() -> None:
    report = (
        " CHEST, PA LATERAL:\n \n"  # a title-like header with nothing under it (official comment's example)
        " INDICATION:  Chest pain.\n \n"
        " FINDINGS: \n \n Lungs are clear.\n \n"
        " IMPRESSION:  Early draft.\n \n"
        " IMPRESSION: \n \n No acute process.\n"
    )
    names = [name for name, _ in split_sections(report)]
    assert names == ["preamble", "findings", "indication", "findings", "impression", "impression"]
    sections = parse_report(report)
    assert sections["findings"] == "Lungs are clear."
    assert sections["impression"] == "No acute process."


def test_last_paragraph_when_neither_findings_nor_impression() -> None:
    report = (
        "                                 FINAL REPORT\n"
        " EXAMINATION:  CHEST (PORTABLE AP)\n \n"
        " COMPARISON:  ___\n \n"
        " Heart size is normal.  Lungs are clear.\n \n"
        " No pneumothorax.\n"
    )
    sections = parse_report(report)
    assert sections["comparison"] == "___"
    assert sections["last_paragraph"] == "Heart size is normal. Lungs are clear. No pneumothorax."
    assert "findings" not in sections and "impression" not in sections


def test_report_without_headers() -> None:
    sections = parse_report("CHEST RADIOGRAPH\n\nThe lungs are clear.\nNo effusion.\n")
    assert sections == {"full report": "CHEST RADIOGRAPH", "last_paragraph": "The lungs are clear. No effusion."}


def test_lowercase_colon_text_is_not_a_header() -> None:
    sections = parse_report(" FINDINGS: \n \n Tip of the line: in the SVC. Note: stable.\n")
    assert sections == {"findings": "Tip of the line: in the SVC. Note: stable."}


def test_read_report_errors(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match=r"mimic-cxr-reports\.zip") as info:
        read_report(tmp_path / "s50000000.txt")
    assert info.value.path == str(tmp_path / "s50000000.txt")
    empty = tmp_path / "s50000001.txt"
    empty.write_text("  \n")
    with pytest.raises(InvalidInputError, match="empty"):
        read_report(empty)
    binary = tmp_path / "s50000002.txt"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidInputError, match="UTF-8"):
        read_report(binary)


def test_write_sectioned_csv(tmp_path) -> None:
    folder = tmp_path / "files" / "p10" / "p10000032"
    folder.mkdir(parents=True)
    (folder / "s50414267.txt").write_text(OFFICIAL_EXAMPLE)
    (folder / "s53189527.txt").write_text(" COMPARISON:  None.\n \n Lungs are clear.\n")
    (folder / "s50414267").mkdir()  # the image folder beside the report is ignored
    (tmp_path / "out").mkdir()
    out = write_sectioned_csv(tmp_path, tmp_path / "out")  # a folder gets the official file name
    assert out == tmp_path / "out" / "mimic_cxr_sectioned.csv"
    frame = pd.read_csv(out, keep_default_na=False)
    assert tuple(frame.columns) == SECTIONED_COLUMNS
    assert frame["study"].tolist() == ["s50414267", "s53189527"]
    first, second = frame.iloc[0], frame.iloc[1]
    assert first["impression"] == "Large left pleural effusion" and first["last_paragraph"] == ""
    assert first["comparison"] == "___"
    assert second["findings"] == "" and second["last_paragraph"] == "Lungs are clear."
    assert second["comparison"] == "None."


def test_write_sectioned_csv_without_reports(tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="unzip it into the dataset root"):
        write_sectioned_csv(tmp_path, tmp_path / "mimic_cxr_sectioned.csv")
