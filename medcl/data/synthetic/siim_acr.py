"""Synthetic SIIM-ACR Pneumothorax Segmentation: ``train-rle.csv`` and DICOMs in the official layout.

The masks are the pneumothorax regions drawn by :mod:`.radiograph`, run-length encoded as the release does; the
DICOMs are PACS-style exports with planted identifiers (:mod:`.pacs_export`) under the release's UID root.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medcl.data.synthetic.dicom_writer import uid
from medcl.data.synthetic.pacs_export import planted_identifiers, write_cr_export
from medcl.data.synthetic.radiograph import Finding, render

SIIM_UID_ROOT = "1.2.276.0.7230010.3.1."  # the SIIM release's UID root


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
        identifiers = planted_identifiers(rng, 100 + index)
        for visit in range(1 + int(rng.random() < 0.25)):
            positive = rng.random() < positive_fraction
            findings = [Finding("Pneumothorax", float(rng.uniform(0.6, 1.0)), (str(rng.choice(["right", "left"])),))]
            rendered = render(findings if positive else [], view="PA", size=(image_size, image_size), rng=rng)
            image_id, study, series = (
                uid(seed, index, visit, kind, root=SIIM_UID_ROOT) for kind in ("sop", "study", "series")
            )
            write_cr_export(
                root / "dicom-images-train" / study / series / f"{image_id}.dcm",
                rendered.image,
                uids=(image_id, study, series),
                identifiers=identifiers,
            )
            masks = [mask for name, _, mask in rendered.regions if name == "Pneumothorax" and mask.any()]
            if masks:  # one row per connected region in the release; one per drawn side here
                rows += [{"ImageId": image_id, " EncodedPixels": " " + mask_to_rle(mask)} for mask in masks]
            else:
                rows.append({"ImageId": image_id, " EncodedPixels": " -1"})
    pd.DataFrame(rows).to_csv(root / "train-rle.csv", index=False)  # the release's header has " EncodedPixels"
    return root
