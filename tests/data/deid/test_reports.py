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
