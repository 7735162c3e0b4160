"""Chest radiographs as a hospital PACS exports them, as in the RSNA Pneumonia and SIIM-ACR releases.

8-bit MONOCHROME2 CR DICOMs (:mod:`.dicom_writer`) that still carry the patient's name, MRN, birth and study dates:
identifiers planted so tests can check that adapters never copy them into manifests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from medcl.data.synthetic.dicom_writer import write_radiograph
from medcl.data.synthetic.radiograph import to_uint8

PIXEL_SPACING_MM = [0.168, 0.168]


def planted_identifiers(rng: np.random.Generator, index: int) -> dict[str, str]:
    """DICOM attributes of patient ``index``: a name, an MRN, a birth date and a study date (fictitious)."""
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
    study_date = f"2019{int(rng.integers(1, 13)):02d}15"
    return {
        "PatientName": f"Testperson^Alex{index:03d}",
        "PatientID": f"MRN{7000000 + index}",
        "PatientBirthDate": birth.strftime("%Y%m%d"),
        "StudyDate": study_date,
        "SeriesDate": study_date,
    }


def write_cr_export(path: Path, image: np.ndarray, *, uids: tuple[str, str, str], identifiers: dict[str, str]) -> Path:
    """A PA chest film (``image`` in [0, 1]) as an 8-bit CR DICOM; ``uids`` = (SOP instance, study, series)."""
    sop_instance_uid, study_uid, series_uid = uids
    return write_radiograph(
        path,
        to_uint8(image),
        modality="CR",
        sop_instance_uid=sop_instance_uid,
        study_uid=study_uid,
        series_uid=series_uid,
        attributes={**identifiers, "ViewPosition": "PA", "PixelSpacing": PIXEL_SPACING_MM},
    )
