"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault): abdominal CT with 13 organ labels.

Two layouts are read:

* the raw release, ``RawData/Training/{img,label}/img0001.nii.gz / label0001.nii.gz`` and ``RawData/Testing/img``
  (``--root`` may be the folder holding ``RawData`` or ``RawData`` itself). Splits follow the SwinUNETR convention:
  cases 0035-0040 are validation, the other 24 training cases train, Testing is test (no labels). Passing
  ``--option val_fraction=...`` replaces the convention with a seeded split.
* the MONAI SwinUNETR layout: a ``dataset_0.json`` (or ``--option json=<file>``) at the root with ``training``,
  ``validation`` and ``test`` lists of paths relative to the root; its lists are the splits.

``image_id`` and ``subject_id`` are ``btcv_<case number>`` (each case is one patient).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medcl.data.adapters.msd import (
    VolumeAdapter,
    check_label,
    is_junk,
    json_entries,
    nifti_stem,
    read_json_index,
    validation_subjects,
    volume_row,
)
from medcl.data.prepare import WorkItem, register_adapter
from medcl.errors import InvalidInputError

BTCV_LABELS = {
    0: "background",
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal vein and splenic vein",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}
SWINUNETR_VALIDATION = frozenset(range(35, 41))
_CASE = re.compile(r"^img(\d+)\.nii(\.gz)?$")


def case_id(image: str | Path) -> str:
    """``img0035.nii.gz`` -> ``btcv_0035``; other names keep their stem."""
    match = _CASE.match(Path(image).name)
    return f"btcv_{match.group(1)}" if match else f"btcv_{nifti_stem(image)}"


@register_adapter
class BTCVAdapter(VolumeAdapter):
    """BTCV in its raw release layout or the SwinUNETR JSON layout (see the module docstring)."""

    name = "btcv"

    def discover(self) -> list[WorkItem]:
        index = self.root / str(self.options.get("json", "dataset_0.json"))
        cases = self._from_json(index) if index.is_file() else self._from_raw()
        if "val_fraction" in self.options:
            labelled = [case for case, split, *_ in cases if split != "test"]
            val = validation_subjects(labelled, self.val_fraction, self.seed)
            cases = [(c, "test" if s == "test" else "val" if c in val else "train", *rest) for c, s, *rest in cases]
        items = [
            WorkItem(key=case, path=image, info={"split": split, "label": label, "error": error})
            for case, split, image, label, error in cases
        ]
        if not items:
            raise InvalidInputError(self.root, "no BTCV cases found (expected RawData/Training/img or dataset_0.json)")
        return items

    def _from_json(self, index: Path) -> list[tuple[str, str, str, str | None, str | None]]:
        meta = read_json_index(index)
        cases = []
        for key, split in (("training", "train"), ("validation", "val"), ("test", "test")):
            for entry in json_entries(meta, key, index.parent):
                cases.append((case_id(str(entry["image"])), split, str(entry["image"]), entry["label"], entry["error"]))
        return cases

    def _from_raw(self) -> list[tuple[str, str, str, str | None, str | None]]:
        raw = self.root / "RawData" if (self.root / "RawData").is_dir() else self.root
        training = raw / "Training"
        if not (training / "img").is_dir():
            raise InvalidInputError(
                training / "img", "BTCV training images not found: expected RawData/Training/img or dataset_0.json"
            )
        cases = []
        for folder, official in ((training / "img", "train"), (raw / "Testing" / "img", "test")):
            for image in sorted(folder.glob("img*.nii*")) if folder.is_dir() else []:
                if is_junk(image) or not _CASE.match(image.name):
                    continue
                number = _CASE.match(image.name).group(1)  # type: ignore[union-attr]
                label = None
                split = official
                if official == "train":
                    label = str(training / "label" / image.name.replace("img", "label", 1))
                    split = "val" if int(number) in SWINUNETR_VALIDATION else "train"
                cases.append((case_id(image), split, str(image.resolve()), label, None))
        return cases

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        header = self.open_listed(item, missing_label="labelled split but no label path")
        if info["label"] is not None:
            check_label(info["label"], header, BTCV_LABELS, verify=self.verify)
        return [
            volume_row(
                dataset="btcv",
                image=item.path,
                label=info["label"],
                image_id=item.key,
                subject_id=item.key,
                split=info["split"],
                modality="CT",
                channel_names=["CT"],
                label_names=BTCV_LABELS,
                header=header,
            )
        ]
