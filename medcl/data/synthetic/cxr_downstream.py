"""Synthetic CheXpert, RSNA Pneumonia and SIIM-ACR releases in their official layouts, with visible findings.

Images come from the shared procedural renderer (:mod:`medcl.data.synthetic._render`), so a label always matches
what is drawn: RSNA boxes are the bounding boxes of the drawn consolidation, SIIM masks the drawn pneumothorax.
RSNA and SIIM files are real DICOMs (pydicom) carrying planted PHI (name, MRN, birth and study dates) that adapters
must never copy into manifests.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medcl.data.synthetic._render import Finding, render
from medcl.data.text.labels import CHEXPERT_CLINICAL_ORDER, CHEXPERT_LABELS

# Findings the renderer draws; most studies get one 5x200 class alone so the zero-shot set fills.
DRAWABLE = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Pneumothorax",
    "Lung Lesion",
    "Enlarged Cardiomediastinum",
    "Support Devices",
)
SINGLE = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
SIIM_UID_ROOT = "1.2.276.0.7230010.3.1."  # the SIIM release's UID root


def _findings(rng: np.random.Generator) -> list[Finding]:
    if rng.random() < 0.2:
        return []
    names = [str(rng.choice(SINGLE))] if rng.random() < 0.6 else list(rng.choice(DRAWABLE, rng.integers(1, 4), False))
    return [Finding(n, float(rng.uniform(0.5, 1.0)), (str(rng.choice(["right", "left"])),)) for n in names]


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def generate_chexpert(
    root: str | Path,
    *,
    n_patients: int = 40,
    n_valid_patients: int = 4,
    seed: int = 0,
    image_size: tuple[int, int] = (320, 320),
    lateral_fraction: float = 0.2,
    top_folder: str = "CheXpert-v1.0-small",
) -> Path:
    """Write ``<root>/<top_folder>/{train,valid}.csv`` and the JPGs; returns the dataset folder.

    Labels: drawn findings are 1 (or -1, uncertain, one time in ten); a few undrawn ones are 0, the rest blank.
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / top_folder
    tables: dict[str, list[dict[str, object]]] = {"train": [], "valid": []}
    for index in range(n_patients + n_valid_patients):
        split = "train" if index < n_patients else "valid"
        patient = f"patient{index + 1:05d}" if split == "train" else f"patient{64541 + index:05d}"
        for study in range(1, int(rng.integers(1, 3)) + 1):
            findings = _findings(rng)
            names = {f.name for f in findings}
            codes: dict[str, object] = {label: None for label in CHEXPERT_LABELS}
            for label in rng.choice(CHEXPERT_LABELS, 3, replace=False):
                codes[str(label)] = 0.0
            for name in names:
                codes[name] = -1.0 if rng.random() < 0.1 else 1.0
            codes["No Finding"] = 1.0 if not names else None
            views = [("frontal", str(rng.choice(["AP", "PA"])))]
            if rng.random() < lateral_fraction:
                views.append(("lateral", "LATERAL"))
            for number, (kind, view) in enumerate(views, start=1):
                relative = Path(split) / patient / f"study{study}" / f"view{number}_{kind}.jpg"
                rendered = render(findings, view=view, size=image_size, rng=rng)
                (folder / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(_to_uint8(rendered.image)).save(folder / relative, quality=92)
                tables[split].append(
                    {
                        "Path": f"{top_folder}/{relative.as_posix()}",
                        "Sex": str(rng.choice(["Female", "Male"])),
                        "Age": int(rng.integers(18, 90)),
                        "Frontal/Lateral": kind.capitalize(),
                        "AP/PA": view if kind == "frontal" else None,
                        **{label: codes[label] for label in CHEXPERT_CLINICAL_ORDER},
                    }
                )
    columns = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CLINICAL_ORDER]
    for split, rows in tables.items():
        pd.DataFrame(rows, columns=columns).to_csv(folder / f"{split}.csv", index=False)
    return folder


def write_cxr_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    sop_instance_uid: str,
    study_uid: str,
    series_uid: str,
    patient_name: str,
    patient_id: str,
    birth_date: str,
    study_date: str,
) -> Path:
    """A real 8-bit MONOCHROME2 CR DICOM file, PHI tags included (as found in un-anonymised exports)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, sop_instance_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = patient_name, patient_id, birth_date
    ds.StudyDate = ds.SeriesDate = study_date
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [0.168, 0.168]
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _uid(prefix: str | None, *parts: object) -> str:
    """A reproducible DICOM UID (pydicom hashes the parts under the prefix; None = pydicom's 2.25 root)."""
    return str(generate_uid(prefix=prefix, entropy_srcs=["-".join(map(str, parts))]))


def _phi(rng: np.random.Generator, index: int) -> dict[str, str]:
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=int(rng.integers(0, 20000)))
    return {
        "patient_name": f"Testperson^Alex{index:03d}",
        "patient_id": f"MRN{7000000 + index}",
        "birth_date": birth.strftime("%Y%m%d"),
        "study_date": f"2019{int(rng.integers(1, 13)):02d}15",
    }


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def generate_rsna_pneumonia(
    root: str | Path, *, n_patients: int = 20, seed: int = 0, image_size: int = 256, positive_fraction: float = 0.4
) -> Path:
    """Write ``stage_2_train_labels.csv``, ``stage_2_detailed_class_info.csv`` and ``stage_2_train_images/*.dcm``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    labels, classes = [], []
    for index in range(n_patients):
        patient_id = str(uuid.UUID(bytes=rng.bytes(16), version=4))  # RSNA's patientId is a random UUID
        positive = rng.random() < positive_fraction
        sides = ("right", "left") if positive and rng.random() < 0.4 else (str(rng.choice(["right", "left"])),)
        findings = [Finding(n, float(rng.uniform(0.6, 1.0)), sides) for n in ("Consolidation", "Pneumonia")]
        rendered = render(findings if positive else [], view="PA", size=(image_size, image_size), rng=rng)
        write_cxr_dicom(
            root / "stage_2_train_images" / f"{patient_id}.dcm",
            _to_uint8(rendered.image),
            sop_instance_uid=_uid(None, "rsna", seed, index, "sop"),
            study_uid=_uid(None, "rsna", seed, index, "study"),
            series_uid=_uid(None, "rsna", seed, index, "series"),
            **_phi(rng, index),
        )
        boxes = [_bbox(mask) for name, _, mask in rendered.regions if name == "Pneumonia" and mask.any()]
        if positive and boxes:
            labels += [
                {"patientId": patient_id, "x": x, "y": y, "width": w, "height": h, "Target": 1} for x, y, w, h in boxes
            ]
            classes += [{"patientId": patient_id, "class": "Lung Opacity"}] * len(boxes)
        else:
            labels.append({"patientId": patient_id, "x": None, "y": None, "width": None, "height": None, "Target": 0})
            classes.append(
                {"patientId": patient_id, "class": "Normal" if rng.random() < 0.5 else "No Lung Opacity / Not Normal"}
            )
    pd.DataFrame(labels).to_csv(root / "stage_2_train_labels.csv", index=False)
    pd.DataFrame(classes).to_csv(root / "stage_2_detailed_class_info.csv", index=False)
    return root


def mask_to_rle(mask: np.ndarray) -> str:
    """SIIM-ACR run-length encoding: column-major pixel order, pairs of (gap since the previous run's end, length)."""
    flat = np.asarray(mask, dtype=bool).T.ravel()
    if not flat.any():
        return "-1"
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    gaps = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{g} {n}" for g, n in zip(gaps, ends - starts))


def generate_siim_acr(
    root: str | Path, *, n_patients: int = 16, seed: int = 0, image_size: int = 256, positive_fraction: float = 0.4
) -> Path:
    """Write ``train-rle.csv`` and ``dicom-images-train/<study>/<series>/<ImageId>.dcm`` (some patients twice)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    rows = []
    for index in range(n_patients):
        phi = _phi(rng, 100 + index)
        for visit in range(1 + int(rng.random() < 0.25)):
            positive = rng.random() < positive_fraction
            findings = [Finding("Pneumothorax", float(rng.uniform(0.6, 1.0)), (str(rng.choice(["right", "left"])),))]
            rendered = render(findings if positive else [], view="PA", size=(image_size, image_size), rng=rng)
            image_id, study, series = (
                _uid(SIIM_UID_ROOT, seed, index, visit, kind) for kind in ("sop", "study", "series")
            )
            write_cxr_dicom(
                root / "dicom-images-train" / study / series / f"{image_id}.dcm",
                _to_uint8(rendered.image),
                sop_instance_uid=image_id,
                study_uid=study,
                series_uid=series,
                **phi,
            )
            masks = [mask for name, _, mask in rendered.regions if name == "Pneumothorax" and mask.any()]
            if masks:  # one row per connected region in the release; one per drawn side here
                rows += [{"ImageId": image_id, " EncodedPixels": " " + mask_to_rle(mask)} for mask in masks]
            else:
                rows.append({"ImageId": image_id, " EncodedPixels": " -1"})
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)  # the release's header has " EncodedPixels"
    return root
