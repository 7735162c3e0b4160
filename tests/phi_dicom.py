"""Test DICOM carrying a distinct planted identifier in every attribute of PS3.15 Table E.1-1 (generated from the
table medcl ships), in curves and overlays, in a private block and in nested sequences; and a SIIM-ACR tree of
such files.

Needles are the planted values that could be recognised in written bytes: text (``PHI`` + the tag in hex), UIDs,
dates, times and date-times unique per attribute, binary values. Numbers and 4-character ages are planted too but
are not distinctive enough to search for.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian

from medcl.data.deid import table

TEXT_VRS = ("AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT")
BINARY_VRS = ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
UID_ROOT = "1.2.826.0.1.3680043.10.543"  # a private test root; planted UIDs extend it with unique numbers
PRIVATE_GROUP, PRIVATE_CREATOR = 0x0011, "ACME PHI"
SET_BELOW = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")  # the ids a dataset is read by


def planted_uid(tag: int, n: int) -> str:
    return f"{UID_ROOT}.{tag}.{n}"


class Planter:
    """Makes the planted value for each VR and remembers the distinctive ones (the needles)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.needles: set[str] = set()
        self.count = 0

    def value(self, tag: int, vr: str) -> object:
        self.count += 1
        n = self.seed * 100_000 + self.count
        text = f"PHI{self.seed:02d}{tag:08X}"
        day = datetime.date(1931, 1, 1) + datetime.timedelta(days=n % 20_000)
        time = f"{n % 24:02d}{n % 60:02d}{(n * 7) % 60:02d}.{n % 1_000_000:06d}"
        if vr in TEXT_VRS:
            value: object = f"{text}^ZED" if vr == "PN" else text
            self.needles.add(text)
        elif vr == "DA":
            value = day.strftime("%Y%m%d")
            self.needles.add(str(value))
        elif vr == "TM":
            value = time
            self.needles.add(time)
        elif vr == "DT":
            value = day.strftime("%Y%m%d") + time
            self.needles.add(str(value))
        elif vr == "UI":
            value = planted_uid(tag, n)
            self.needles.add(str(value))
        elif vr in BINARY_VRS:
            value = f"{text}-binary".encode()
            self.needles.add(f"{text}-binary")
        elif vr == "AS":
            value = "042Y"
        elif vr in ("IS", "DS"):
            value = "71"
        elif vr == "AT":
            value = 0x00100010
        else:  # US, SS, UL, SL, UV, SV, FL, FD
            value = 71
        return value

    def item(self, tag: int) -> Dataset:
        """A sequence item whose identifiers sit one and two levels down."""
        item = Dataset()
        item.PersonName = self.value(tag + 1, "PN")  # (0040,A123), D
        item.ReferencedSOPInstanceUID = self.value(tag + 2, "UI")  # U
        inner = Dataset()
        inner.PatientName = self.value(tag + 3, "PN")  # Z
        inner.OtherPatientIDs = self.value(tag + 4, "LO")  # X
        item.PersonIdentificationCodeSequence = Sequence([inner])  # (0040,1101), D
        return item


def _vr(tag: int, keyword: str) -> str:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:  # attributes newer than pydicom's dictionary
        return "SQ" if keyword.endswith("Sequence") or "Sequence" in keyword else "LO"


def planted_dataset(
    seed: int,
    *,
    patient_id: str,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    rows: int = 32,
    columns: int = 32,
) -> tuple[Dataset, set[str]]:
    """A DX image whose every Table E.1-1 attribute holds a planted value; (dataset with file meta, needles)."""
    planter = Planter(seed)
    ds = Dataset()
    for rule in table():
        if not rule.tag.startswith("(") or "x" in rule.tag:
            continue
        group, element = (int(part, 16) for part in rule.tag.strip("()").split(","))
        tag = group << 16 | element
        if group in (0x0000, 0x0002) or rule.keyword in SET_BELOW:
            continue  # command elements cannot be stored in a file; file meta and the ids are set below
        vr = _vr(tag, rule.name.replace(" ", ""))
        if vr == "SQ":
            ds.add_new(BaseTag(tag), "SQ", Sequence([planter.item(tag)]))
        else:
            ds.add_new(BaseTag(tag), vr, planter.value(tag, vr))
    # Curves, overlay data and comments (repeating groups), a private block with a nested sequence.
    ds.add_new(0x50003000, "OW", planter.value(0x50003000, "OW"))
    ds.add_new(0x60003000, "OW", planter.value(0x60003000, "OW"))
    ds.add_new(0x60004000, "LT", planter.value(0x60004000, "LT"))
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", planter.value(0x00111001, "LO"))
    block.add_new(0x02, "SQ", Sequence([planter.item(0x00111002)]))

    # What a readable radiograph needs (not identifying: kept), and the identifiers the adapter reads.
    planter.needles |= {patient_id, study_uid, series_uid, sop_uid}
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = (
        patient_id, study_uid, series_uid, sop_uid,
    )  # fmt: skip
    ds.SOPClassUID, ds.Modality = DigitalXRayImageStorageForPresentation, "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = (np.arange(rows * columns, dtype=np.uint8) % 251).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    return ds, planter.needles


def write_siim_tree(root: Path, patients: int = 3, images_per_patient: int = 2, seed: int = 1) -> tuple[Path, set[str]]:
    """A SIIM-ACR layout (train-rle.csv, dicom-images-train/<study>/<series>/<ImageId>.dcm) of planted files."""
    needles: set[str] = set()
    rows = []
    for p in range(patients):
        patient_id = f"MRN{seed:02d}{p:05d}PHI"
        study, series = planted_uid(seed, 10 + p), planted_uid(seed, 20 + p)
        for i in range(images_per_patient):
            sop = planted_uid(seed, 1000 + 10 * p + i)
            ds, found = planted_dataset(
                seed * 100 + p * 10 + i, patient_id=patient_id, study_uid=study, series_uid=series, sop_uid=sop
            )
            needles |= found
            path = root / "dicom-images-train" / study / series / f"{sop}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            rows.append({"ImageId": sop, " EncodedPixels": "-1" if i % 2 else " 40 3 29 3"})
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)
    return root, needles
