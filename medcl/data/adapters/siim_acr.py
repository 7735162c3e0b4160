"""SIIM-ACR Pneumothorax Segmentation (2019): ``train-rle.csv`` masks over a DICOM tree.

Layout: ``train-rle.csv`` (``ImageId``, ``EncodedPixels``; the release's header reads `` EncodedPixels`` with a
leading space, and an image with several pneumothorax regions has one row per region) and
``dicom-images-train/<StudyInstanceUID>/<SeriesInstanceUID>/<ImageId>.dcm``.

RLE convention (SIIM's ``mask_functions.py``): pixels are numbered column by column (column-major, i.e. down each
column of the image), and the numbers come in pairs ``(offset, length)`` where each offset counts from the end of the
previous run (relative / cumulative); ``-1`` means no pneumothorax. Masks are decoded to 0/1 PNGs under
``<out>/masks/siim-acr/`` and referenced in ``label``.

Identifiers: an image's patient is its DICOM ``PatientID`` and its names are UIDs (folders and file names), which in
an un-anonymised export are a real MRN and real instance UIDs. So the adapter ``reads_identifiers``: it needs the
installation's pseudonym key (``medcl data key init``) and writes only keyed values: ``subject_id`` = the patient
pseudonym, ``image_id``/``study_id``/``series_id`` = keyed UIDs (the same on every run and shard with the key), and
``image`` = a de-identified copy of the DICOM (PS3.15 profile, :mod:`medcl.data.deid`) under
``<out>/dicom/siim-acr/<image_id>.dcm``, so training never opens the identified file. Images whose pixels may show
identifying text are quarantined. Splits come from a hash of the pseudonym (``split_fractions``, default
``0.8,0.1,0.1``): patient-disjoint and stable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medcl.data.adapters.common import find_csv, hash_split, parse_fractions, read_csv, stored_shape
from medcl.data.adapters.rsna_pneumonia import save_mask
from medcl.data.deid import deidentify, map_uid, write_dataset
from medcl.data.dicom import read_dataset
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


@register_adapter
class SIIMACRAdapter(DatasetAdapter):
    """``medcl data prepare siim-acr --root <folder with train-rle.csv and dicom-images-train/>``."""

    name = "siim-acr"
    reads_identifiers = True

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
        assert self.key is not None  # reads_identifiers: the base class requires it
        height, width = stored_shape(item.path, self.deid)  # also refuses pixels that may show identifying text
        mask = np.zeros((height, width), dtype=np.uint8)
        for rle in item.info["rles"]:
            mask |= rle_to_mask(rle, height, width, source=item.path)
        ds = read_dataset(Path(item.path))
        patient = str(ds.get("PatientID", "") or "").strip()
        if not patient:
            raise InvalidInputError(item.path, "DICOM has no PatientID: cannot keep patients within one split")
        uids = {name: str(ds.get(name, "") or "").strip() for name in ("StudyInstanceUID", "SeriesInstanceUID")}
        missing = [name for name, uid in uids.items() if not uid]
        if missing:
            raise InvalidInputError(item.path, f"DICOM has no {' or '.join(missing)}: cannot group its study")
        subject = self.key.pseudonym(patient)
        image_id = map_uid(item.key, self.key, self.deid)  # ImageId is the SOPInstanceUID
        fractions = parse_fractions(self.options.get("split_fractions", "0.8,0.1,0.1"))
        copy = write_dataset(
            deidentify(ds, key=self.key, options=self.deid), self.out_dir / "dicom" / self.name / f"{image_id}.dcm"
        )
        label = save_mask(mask, self.out_dir / "masks" / self.name / f"{image_id}.png")
        return [
            {
                "image": str(copy),
                "image_id": image_id,
                "subject_id": subject,
                "study_id": map_uid(uids["StudyInstanceUID"], self.key, self.deid),
                "series_id": map_uid(uids["SeriesInstanceUID"], self.key, self.deid),
                "split": hash_split(subject, fractions),
                "view": "",
                "Pneumothorax": float(mask.any()),
                "label": str(label),
                "mask_pixels": int(mask.sum()),
            }
        ]
