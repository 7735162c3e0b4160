"""Synthetic CheXpert (``CheXpert-v1.0-small``): ``{train,valid}.csv`` and JPGs in the official layout.

Images come from the shared procedural renderer (:mod:`.radiograph`), so a label always matches what is drawn; most
studies get one of the 5x200 zero-shot classes alone so the zero-shot set fills.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from medcl.data.synthetic.radiograph import Finding, render, to_uint8
from medcl.data.text.labels import CHEXPERT_CLINICAL_ORDER, CHEXPERT_LABELS

# Findings the renderer draws; SINGLE: the 5x200 zero-shot classes.
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


def _findings(rng: np.random.Generator) -> list[Finding]:
    if rng.random() < 0.2:
        return []
    names = [str(rng.choice(SINGLE))] if rng.random() < 0.6 else list(rng.choice(DRAWABLE, rng.integers(1, 4), False))
    return [Finding(n, float(rng.uniform(0.5, 1.0)), (str(rng.choice(["right", "left"])),)) for n in names]


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
                Image.fromarray(to_uint8(rendered.image)).save(folder / relative, quality=92)
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
