"""The one DICOM writer of the synthetic datasets: chest radiographs (DX, CR) and CT/MR series.

Every file is a real Part 10 file written by pydicom (preamble, file meta, explicit VR little endian, uncompressed).
UIDs come from :func:`pydicom.uid.generate_uid`: :func:`uid` hashes its parts under a root (pydicom's by default), so a
dataset written twice with one seed is the same byte for byte; a series written without UIDs gets random ones, as
from a scanner (two series of one test must not collide).

Volumes are indexed like ``medcl.data.load_image`` returns them: axis 0 along a row (column index), axis 1 down a
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

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    PYDICOM_ROOT_UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medcl.data.dicom import LPS_TO_RAS

SOP_CLASSES = {
    "CT": CTImageStorage,
    "MR": MRImageStorage,
    "CR": ComputedRadiographyImageStorage,
    "DX": DigitalXRayImageStorageForPresentation,
}
RADIOGRAPH_MODALITIES = ("CR", "DX")
SERIES_MODALITIES = ("CT", "MR")


def uid(*parts: object, root: str = PYDICOM_ROOT_UID) -> str:
    """A reproducible UID: pydicom's SHA-512 of the parts under ``root`` (no real identifier goes in)."""
    return str(generate_uid(prefix=root, entropy_srcs=["-".join(map(str, parts))]))


def _new_file(path: Path, modality: str, sop_instance_uid: str | None) -> FileDataset:
    """An empty Part 10 dataset of ``modality``'s storage class, file meta filled in."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASSES[modality]
    meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    return ds


def _save(ds: FileDataset, path: Path, attributes: Mapping[str, Any] | None) -> Path:
    """Set ``attributes`` by keyword (they win over the defaults) and write ``path``."""
    for keyword, value in (attributes or {}).items():
        setattr(ds, keyword, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_radiograph(
    path: str | Path,
    pixels: np.ndarray,
    *,
    modality: str = "DX",
    bits_stored: int | None = None,
    monochrome1: bool = False,
    sop_instance_uid: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Path:
    """Write one single-frame chest radiograph; returns ``path``.

    Args:
        pixels: (rows, columns) uint8 or uint16: the stored values (already inverted when ``monochrome1``).
        modality: ``DX`` (Digital X-Ray For Presentation, as MIMIC-CXR) or ``CR`` (Computed Radiography, as the RSNA
            and SIIM exports).
        bits_stored: significant bits (e.g. 12 in 16); default all of the pixel type.
        monochrome1: the values are stored inverted (higher = darker), as some real files are.
        sop_instance_uid, study_uid, series_uid: random when not given.
        attributes: further attributes by keyword (patient, study, view, spacing, window; planted PHI).
    """
    path = Path(path)
    if modality not in RADIOGRAPH_MODALITIES:
        raise ValueError(f"radiograph modality must be one of {RADIOGRAPH_MODALITIES}, got {modality!r}")
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"pixels must be a 2-D uint8 or uint16 array, got {pixels.dtype} {pixels.shape}")
    ds = _new_file(path, modality, sop_instance_uid)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), series_uid or generate_uid()
    ds.BodyPartExamined = "CHEST"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    bits = pixels.dtype.itemsize * 8
    stored = bits_stored or bits
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return _save(ds, path, attributes)


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
    """Write one single-frame CT/MR DICOM file per slice of ``volume`` and return their paths (in slice order).

    The patient, study and institution tags carry identifiers, as un-anonymised exports do (de-identification
    tests). Stored values are ``round((volume - intercept) / slope)`` as int16; a volume outside that range is an
    error. With ``shuffle_instance_numbers`` the InstanceNumbers (and the file names, ``IM<InstanceNumber>.dcm``)
    are a random permutation of the slice order, as some scanners and anonymisers leave them. ``extra_tags`` sets
    any further attributes by keyword (e.g. planted identifiers for de-identification tests).
    """
    volume = np.asarray(volume)
    affine = np.asarray(affine, dtype=np.float64)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3-D (x, y, slices), got shape {volume.shape}")
    if affine.shape != (4, 4):
        raise ValueError(f"affine must be 4x4, got {affine.shape}")
    if modality not in SERIES_MODALITIES:
        raise ValueError(f"modality must be one of {list(SERIES_MODALITIES)}, got {modality!r}")
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
    acquired = dt.datetime.strptime(study_date, "%Y%m%d").strftime("%H%M%S")
    # What every slice of the series shares: identifiers, dates, equipment, plane geometry and pixel encoding.
    series = {
        "StudyInstanceUID": study_uid or generate_uid(), "SeriesInstanceUID": series_uid or generate_uid(),
        "FrameOfReferenceUID": generate_uid(), "PatientName": patient_name, "PatientID": patient_id,
        "PatientBirthDate": patient_birth_date, "PatientSex": "O", "AccessionNumber": accession_number,
        "ReferringPhysicianName": "Smith^John", "InstitutionName": institution_name, "StudyID": "1", "SeriesNumber": 1,
        "Manufacturer": "medcl synthetic",
        **dict.fromkeys(("StudyDate", "SeriesDate", "ContentDate"), study_date),
        **dict.fromkeys(("StudyTime", "SeriesTime", "ContentTime"), acquired),
        "ImageOrientationPatient": _format_ds(np.concatenate([row_cosine, column_cosine])),
        "PixelSpacing": _format_ds(np.array([row_spacing, column_spacing])),
        "SliceThickness": _format_ds(np.array([slice_gap]))[0],
        "Rows": int(volume.shape[1]), "Columns": int(volume.shape[0]), "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1,
        "RescaleSlope": _format_ds(np.array([rescale_slope]))[0],
        "RescaleIntercept": _format_ds(np.array([rescale_intercept]))[0],
        **({"RescaleType": "HU", "WindowCenter": "40", "WindowWidth": "400"} if modality == "CT" else {}),
    }  # fmt: skip
    paths = []
    for k in range(n_slices):
        path = out_dir / f"IM{int(instance_numbers[k]):05d}.dcm"
        ds = _new_file(path, modality, None)
        ds.update(series)
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = _format_ds(origin + k * slice_step)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()  # stored row-major: (rows, columns)
        paths.append(_save(ds, path, extra_tags))
    return paths


def write_volume_as_dicom(case: str | Path | nib.Nifti1Image, out_dir: str | Path, **series_options: Any) -> list[Path]:
    """Write a 3D NIfTI volume (e.g. an MSD ``imagesTr`` case) as a DICOM series twin; returns the slice files.

    The twin lets tests check that DICOM input is read with the geometry of the NIfTI and that names, birth dates
    and MRNs stay out of manifests. Keyword arguments go to :func:`write_dicom_series` (identifiers,
    ``modality="MR"``, ``shuffle_instance_numbers``).
    """
    image = case if isinstance(case, nib.Nifti1Image) else nib.load(str(case))
    volume = np.asarray(image.dataobj)
    if volume.ndim != 3:
        raise ValueError(f"a DICOM series holds one 3D volume; got shape {volume.shape}")
    return write_dicom_series(volume, image.affine, Path(out_dir), **series_options)
