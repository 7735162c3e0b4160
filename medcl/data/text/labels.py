"""The CheXpert observation vocabulary: label names, orders and label codes shared by data, models and metrics."""

from __future__ import annotations

import numpy as np

# The 14 CheXpert observations, in the alphabetical order of MIMIC-CXR's chexpert/negbio CSVs.
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
# The same 14 in the CheXpert CSVs' clinical column order (CheXbert's heads: the last 13 of these, then No Finding).
CHEXPERT_CLINICAL_ORDER = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# The five classes of the CheXpert 5x200 zero-shot benchmark (GLoRIA convention).
CHEXPERT_5X200 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

# CheXbert's head order (its CONDITIONS list); codes per head: 0 blank, 1 positive, 2 negative, 3 uncertain.
CHEXBERT_CONDITIONS = (*CHEXPERT_CLINICAL_ORDER[1:], "No Finding")
# CheXbert's per-observation classes (blank, positive, negative, uncertain) -> CheXpert codes.
CHEXBERT_CLASS_CODES = (np.nan, 1.0, 0.0, -1.0)
