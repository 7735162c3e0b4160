"""Synthetic datasets in the official on-disk layouts of the public datasets, written by ``medcl data synth``.

One module per dataset, named like its adapter in :mod:`medcl.data.adapters` (``mimic_cxr``, ``chexpert``, ...), and
shared helpers: :mod:`.radiograph` (procedural chest films), :mod:`.report_text` and :mod:`.mimic_cxr_studies`
(MIMIC-style studies and reports), :mod:`.gaze_reading` (simulated readings with eye tracking), :mod:`.pacs_export`
(RSNA/SIIM-style CR exports), :mod:`.phantom_geometry`, :mod:`.ct_phantom` and :mod:`.mr_phantoms` (3-D phantoms),
:mod:`.nifti_cases` (how volume cases are stored) and :mod:`.dicom_writer` (the one DICOM writer).

A synthetic tree is data like any other: write it with ``medcl data synth <dataset> --out <dir>``, then turn it into
a manifest with ``medcl data prepare <dataset> --root <dir> --out <manifest.csv>``. Training, evaluation and serving
only read manifests and never import this package (an import-linter contract in pyproject.toml), so a mistyped
manifest path is an error, never a silently generated dataset.

:data:`SYNTHESISERS` is the registry ``medcl data synth`` reads. Importing this package stays cheap: the dataset
modules load only when one is run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Synthesiser:
    """How ``medcl data synth <name>`` writes one dataset.

    Attributes:
        target: ``"module:function"``; the function takes the output folder and keyword options and returns the
            dataset root (``mimic-cxr``: a summary whose ``root`` is it).
        summary: one line for ``medcl data synth --help``.
        annotates_mimic: the dataset adds readings to an existing MIMIC-CXR-JPG tree (the gaze releases), given as
            the option ``mimic_root`` and passed as the function's first argument.
    """

    target: str
    summary: str
    annotates_mimic: bool = False

    def load(self) -> Callable[..., Any]:
        module, _, name = self.target.partition(":")
        return getattr(importlib.import_module(module), name)


SYNTHESISERS: dict[str, Synthesiser] = {
    "mimic-cxr": Synthesiser(
        "medcl.data.synthetic.mimic_cxr:generate_mimic_cxr",
        "MIMIC-CXR(-JPG): reports, CheXpert/NegBio labels, JPG and/or DICOM",
    ),
    "egd-cxr": Synthesiser(
        "medcl.data.synthetic.egd_cxr:generate_egd_cxr",
        "EGD-CXR gaze release over a MIMIC-CXR tree",
        annotates_mimic=True,
    ),
    "reflacx": Synthesiser(
        "medcl.data.synthetic.reflacx:generate_reflacx",
        "REFLACX gaze release over a MIMIC-CXR tree",
        annotates_mimic=True,
    ),
    "chexpert": Synthesiser(
        "medcl.data.synthetic.chexpert:generate_chexpert", "CheXpert-v1.0-small: train/valid CSVs, JPGs"
    ),
    "rsna-pneumonia": Synthesiser(
        "medcl.data.synthetic.rsna_pneumonia:generate_rsna_pneumonia",
        "RSNA Pneumonia stage 2: boxes, CR DICOMs with PHI",
    ),
    "siim-acr": Synthesiser(
        "medcl.data.synthetic.siim_acr:generate_siim_acr", "SIIM-ACR Pneumothorax: RLE masks, CR DICOMs with PHI"
    ),
    "msd": Synthesiser(
        "medcl.data.synthetic.msd:generate_msd", "Medical Segmentation Decathlon task (spleen, liver, ...)"
    ),
    "btcv": Synthesiser(
        "medcl.data.synthetic.btcv:generate_btcv", "BTCV abdominal CT, 13 organs (raw or SwinUNETR layout)"
    ),
    "brats": Synthesiser("medcl.data.synthetic.brats:generate_brats", "BraTS 2021/2023 glioma MRI, four contrasts"),
    "totalsegmentator": Synthesiser(
        "medcl.data.synthetic.totalsegmentator:generate_totalsegmentator", "TotalSegmentator CT, one mask per class"
    ),
    "acdc": Synthesiser("medcl.data.synthetic.acdc:generate_acdc", "ACDC cardiac cine MRI, ED/ES labels"),
}
