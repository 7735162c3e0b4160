"""Pseudonymous names in reports, finding the file behind one, and the PHI scan's matching rules."""

from __future__ import annotations

from pathlib import Path

from medcl.data.deid import DeidOptions, PseudonymKey, find_phi, locate, pseudonymize_text, scan_for_phi

KEY = PseudonymKey(bytes(range(32)))
STUDY, SOP = "1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.1.7"


def test_report_names_hide_uids_and_the_root_and_map_back(tmp_path: Path) -> None:
    root = tmp_path / "siim"
    source = root / "dicom-images-train" / STUDY / f"{SOP}.dcm"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    (root / "train-rle.csv").write_text("ImageId\n")
    reason = f"FileNotFoundError: [Errno 2] {source} (pydicom 3.0.2)"
    shown = pseudonymize_text(reason, KEY, DeidOptions(), root)
    assert (
        shown == f"FileNotFoundError: [Errno 2] dicom-images-train/{KEY.uid(STUDY)}/{KEY.uid(SOP)}.dcm (pydicom 3.0.2)"
    )
    reported = pseudonymize_text(str(source.relative_to(root)), KEY, DeidOptions())
    assert locate(root, reported, KEY) == [source]
    assert locate(root, reported, PseudonymKey(bytes(range(1, 33)))) == []  # without the key, no way back
    assert pseudonymize_text(SOP, KEY, DeidOptions(retain_uids=True)) == SOP


def test_scan_matches_anywhere_case_insensitively(tmp_path: Path) -> None:
    assert find_phi("Seen by DOE^JANE", ["doe^jane", "smith"]) == ["doe^jane"]
    assert find_phi(b"\x08\x0019310109\x30\x00", ["19310109"]) == ["19310109"]  # beside binary bytes too
    (tmp_path / "MRN-55.txt").write_text("nothing")
    assert scan_for_phi(tmp_path, ["mrn-55"]) == [(tmp_path / "MRN-55.txt", "mrn-55")]  # file names count too


def test_needle_search_finds_what_a_plain_substring_search_finds():
    """The vectorised search against `needle.lower() in data.lower()`, with needles across chunk boundaries, in other
    letter case, shorter than its 8-byte prefix, and absent."""
    import random

    from medcl.data.deid.reports import CHUNK, NeedleSearch

    rng = random.Random(0)
    needles = [f"PHI{rng.randrange(10**9):09d}x" for _ in range(500)] + ["Doe^Jane", "ab1", "19450317", "never-there"]
    data = bytearray(rng.randbytes(3 * CHUNK))
    planted = {needles[3].upper(): 17, needles[40]: CHUNK - 5, "doe^jane": 2 * CHUNK - 1, "AB1": 3 * CHUNK - 3}
    for text, at in planted.items():
        data[at : at + len(text)] = text.encode()
    expected = {n for n in needles if n.lower().encode() in bytes(data).lower()}
    assert NeedleSearch(needles).found(bytes(data)) == expected
    assert {needles[3], needles[40], "Doe^Jane", "ab1"} <= expected and "never-there" not in expected
