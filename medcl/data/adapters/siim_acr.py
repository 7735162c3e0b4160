"""SIIM-ACR Pneumothorax Segmentation (2019): ``train-rle.csv`` masks over a DICOM tree.

Layout: ``train-rle.csv`` (``ImageId``, ``EncodedPixels``; the release's header reads `` EncodedPixels`` with a
leading space, and an image with several pneumothorax regions has one row per region) and
``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm``.

RLE convention (SIIM's ``mask_functions.py``): pixels are numbered column by column (column-major, i.e. down each
column of the image), and the numbers come in pairs ``(offset, length)`` where each offset counts from the end of the
previous run (relative / cumulative); ``-1`` means no pneumothorax. Masks are decoded to 0/1 PNGs under
``<out>/masks/siim-acr/`` and referenced in ``label``.

Patients: an image's patient is its DICOM ``PatientID``, which in an un-anonymised export may be a real MRN, so it
is never written: ``subject_id`` is a keyed hash of it (option ``subject_salt``, set a private one for real PHI).
Splits come from a hash of that pseudonym (``split_fractions``, default ``0.8,0.1,0.1``): patient-disjoint and stable.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from medcl.data.adapters.common import find_csv, hash_split, parse_fractions, read_csv, stored_shape
from medcl.data.adapters.rsna_pneumonia import save_mask
from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.errors import InvalidInputError


def rle_to_mask(rle: str, height: int, width: int, *, source: object = None) -> np.ndarray:
    """Decode one SIIM RLE string into a (height, width) 0/1 uint8 mask."""
    text = str(rle).strip()
    flat = np.zeros(height * width, dtype=np.uint8)
    if text in ("-1", "", "nan"):
        return flat.reshape(width, height).T.copy()
    try:
        numbers = np.array([int(v) for v in text.split()], dtype=np.int64)
    except ValueError as err:
        raise InvalidInputError(source, f"EncodedPixels is not a list of integers ({err})") from err
    if len(numbers) % 2 or (numbers < 0).any():
        raise InvalidInputError(source, "EncodedPixels must be non-negative (offset, length) pairs")
    position = 0
    for offset, length in numbers.reshape(-1, 2):
        position += offset
        if position + length > flat.size:
            raise InvalidInputError(source, f"run ends at pixel {position + length}, past the {height}x{width} image")
        flat[position : position + length] = 1
        position += length
    return flat.reshape(width, height).T.copy()  # column-major numbering: index = column * height + row


def pseudonym(patient_id: str, salt: str) -> str:
    """A keyed, one-way pseudonym: the raw PatientID never leaves this function."""
    return hashlib.blake2b(patient_id.encode(), key=salt.encode()[:64], digest_size=8).hexdigest()


@register_adapter
class SIIMACRAdapter(DatasetAdapter):
    """``medcl data prepare siim-acr --root <folder with train-rle.csv and dicom-images-train/>``."""

    name = "siim-acr"

    def discover(self) -> list[WorkItem]:
        table_path = find_csv(self.root, "train-rle")
        table = read_csv(table_path, ["ImageId", "EncodedPixels"], dtype={"ImageId": str}, skipinitialspace=True)
        image_dir = self.root / "dicom-images-train"
        if not image_dir.is_dir():
            raise InvalidInputError(image_dir, "missing: the DICOM tree of the training images")
        files = {path.stem: path for path in image_dir.rglob("*.dcm")}
        items = []
        for image_id, group in table.groupby("ImageId", sort=True):
            path = files.get(image_id, image_dir / f"{image_id}.dcm")  # a missing file is quarantined in process()
            items.append(WorkItem(image_id, str(path), {"rles": [str(v) for v in group["EncodedPixels"]]}))
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        height, width = stored_shape(item.path)
        mask = np.zeros((height, width), dtype=np.uint8)
        for rle in item.info["rles"]:
            mask |= rle_to_mask(rle, height, width, source=item.path)
        header = pydicom.dcmread(item.path, stop_before_pixels=True, specific_tags=["PatientID"])
        patient = str(header.get("PatientID", "") or "").strip()
        if not patient:
            raise InvalidInputError(item.path, "DICOM has no PatientID: cannot keep patients within one split")
        subject = pseudonym(patient, str(self.options.get("subject_salt", "medcl-siim")))
        fractions = parse_fractions(self.options.get("split_fractions", "0.8,0.1,0.1"))
        label = save_mask(mask, self.out_dir / "masks" / self.name / f"{item.key}.png")
        return [
            {
                "image": item.path,
                "image_id": item.key,
                "subject_id": subject,
                "study_id": Path(item.path).parent.parent.name,
                "split": hash_split(subject, fractions),
                "view": "",
                "Pneumothorax": float(mask.any()),
                "label": str(label),
                "mask_pixels": int(mask.sum()),
            }
        ]
