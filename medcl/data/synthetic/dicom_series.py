"""Write a real CT/MR DICOM series from a volume and its RAS affine (tests, demos, de-identification checks).

The volume is indexed like ``medcl.data.load_image`` returns it: axis 0 along a row (column index), axis 1 down a
column (row index), axis 2 across slices, and ``affine`` maps those indices to RAS+ millimetres. Any affine whose
first two columns are orthogonal works: oblique planes, and a sheared third column (gantry tilt). Loading the
directory back gives the same array and affine when the third column points along the slice normal
(``cross(row, column)`` in LPS); otherwise the loader, which always sorts slices along the normal, returns the
slices in reverse with the matching affine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medcl.data.dicom import LPS_TO_RAS

SOP_CLASSES = {"CT": CTImageStorage, "MR": MRImageStorage}


def _format_ds(values: np.ndarray) -> list[str]:
    """Decimal strings of at most 16 characters (the DS limit) that keep sub-micrometre precision."""
    return [np.format_float_positional(float(v), precision=10, trim="-")[:16] for v in values]


def write_dicom_series(
    volume: np.ndarray,
    affine: np.ndarray,
    out_dir: str | Path,
    *,
    modality: str = "CT",
    patient_name: str = "Doe^Jane",
    patient_id: str = "MRN0001",
    patient_birth_date: str = "19700101",
    study_date: str = "20240102",
    institution_name: str = "Example General Hospital",
    accession_number: str = "ACC0001",
    rescale_slope: float = 1.0,
    rescale_intercept: float = -1024.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    shuffle_instance_numbers: bool = False,
    seed: int = 0,
    extra_tags: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write one single-frame DICOM file per slice of ``volume`` and return their paths (in slice order).

    Stored values are ``round((volume - intercept) / slope)`` as int16; a volume outside that range is an error.
    With ``shuffle_instance_numbers`` the InstanceNumbers (and the file names, ``IM<InstanceNumber>.dcm``) are a
    random permutation of the slice order, as some scanners and anonymisers leave them. ``extra_tags`` sets any
    further attributes by keyword (e.g. planted identifiers for de-identification tests).
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, slices), got shape {volume.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if modality not in SOP_CLASSES:
        raise ValueError(f"modality must be one of {sorted(SOP_CLASSES)}, got {modality!r}")
    lps = LPS_TO_RAS @ affine  # the flip is its own inverse
    column_step, row_step, slice_step, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    column_spacing, row_spacing = float(np.linalg.norm(column_step)), float(np.linalg.norm(row_step))
    row_cosine, column_cosine = column_step / column_spacing, row_step / row_spacing
    if abs(float(row_cosine @ column_cosine)) > 1e-6:
        raise ValueError("the first two affine columns must be orthogonal (DICOM pixels are rectangular)")
    normal = np.cross(row_cosine, column_cosine)
    slice_gap = float(abs(slice_step @ normal))
    if slice_gap < 1e-6:
        raise ValueError("the third affine column lies in the slice plane")

    stored = np.rint((volume.astype(np.float64) - rescale_intercept) / rescale_slope)
    if stored.min() < -32768 or stored.max() > 32767:
        raise ValueError("volume does not fit int16 with this rescale slope/intercept")
    stored = stored.astype(np.int16)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_slices = volume.shape[2]
    instance_numbers = np.arange(1, n_slices + 1)
    if shuffle_instance_numbers:
        instance_numbers = np.random.default_rng(seed).permutation(instance_numbers)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_of_reference_uid = generate_uid()
    acquired = dt.datetime.strptime(study_date, "%Y%m%d")
    paths = []
    for k in range(n_slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = out_dir / f"IM{int(instance_numbers[k]):05d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_of_reference_uid
        ds.Modality = modality
        ds.PatientName = patient_name
        ds.PatientID = patient_id
        ds.PatientBirthDate = patient_birth_date
        ds.PatientSex = "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = acquired.strftime("%H%M%S")
        ds.AccessionNumber = accession_number
        ds.ReferringPhysicianName = "Smith^John"
        ds.InstitutionName = institution_name
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(instance_numbers[k])
        ds.Manufacturer = "medcl synthetic"
        ds.ImagePositionPatient = _format_ds(origin + k * slice_step)
        ds.ImageOrientationPatient = _format_ds(np.concatenate([row_cosine, column_cosine]))
        ds.PixelSpacing = _format_ds(np.array([row_spacing, column_spacing]))
        ds.SliceThickness = _format_ds(np.array([slice_gap]))[0]
        ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[0])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope = _format_ds(np.array([rescale_slope]))[0]
        ds.RescaleIntercept = _format_ds(np.array([rescale_intercept]))[0]
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.WindowCenter, ds.WindowWidth = "40", "400"
        for keyword, value in (extra_tags or {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # stored row-major: (rows, columns)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
