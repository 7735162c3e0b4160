"""Report-generation data: one item per study with its views, the latest prior study and the context prompt.

Built on :class:`medcl.data.cxr.CXRDataModule` (same manifest, transforms and report-text choice); a
batch is::

    images     (B, V, 1, S, S)  anchor view, other views of the study, then the latest prior study's anchor view
    view_mask  (B, V) bool       False where a slot is padding (single-view study, first study of a patient)
    view_role  (B, V) int64      0 anchor, 1 other current view, 2 prior study (ROLES in report_generator)
    text       list[str]         target report (findings, else impression)
    context    list[str]         "[INDICATION] ... [FINDINGS] <prior report>" with [NHI]/[NHPR] when missing
    study_id, image_id           list[str]
    labels, label_mask           (B, 14) as in CXRDataModule

Also here: the per-organ structured-report format (CoGaze's SRRG style, ``Organ:- item- item``) and its inverse.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.data import Dataset
from torch.utils.data import default_collate

from medcl.data.cxr import CXRDataModule, _text, cxr_pipeline
from medcl.data.manifest import binarize_labels
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.reports import ROLES, context_prompt
from medcl.data.text.views import FRONTAL


class ViewStack:
    """Loads and transforms every view of an item with the CXR pipeline and stacks them to ``(V, 1, S, S)``."""

    def __init__(self, image_size: int, train: bool, slots: int) -> None:
        self.transform = cxr_pipeline(image_size, train)
        self.image_size = image_size
        self.slots = slots

    def __call__(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in record.items() if k not in ("views", "roles")}
        blank = torch.zeros(1, self.image_size, self.image_size)
        # Plain tensors: MONAI's MetaTensor would otherwise propagate into losses and logged metrics.
        images = [self.transform({"image": path})["image"].as_subclass(torch.Tensor) for path in record["views"]]
        count = len(images)
        out["images"] = torch.stack(images + [blank] * (self.slots - count))
        out["view_mask"] = torch.arange(self.slots) < count
        out["view_role"] = torch.tensor(list(record["roles"]) + [0] * (self.slots - count), dtype=torch.long)
        return out


class ReportDataModule(CXRDataModule):
    """Per-study report-generation items from a CXR manifest.

    Args (beyond :class:`CXRDataModule`'s):
        max_views: current-study views per item (anchor first: a frontal view when there is one).
        use_prior: add the latest earlier study of the same patient (its anchor image and report as context).
        max_items: cap items per split (quick runs); None keeps all.
    """

    collate = staticmethod(default_collate)
    drop_last_train = False

    def __init__(self, manifest: str, max_views: int = 2, use_prior: bool = True, max_items: int | None = None,
                 **kwargs: Any) -> None:  # fmt: skip
        kwargs.setdefault("cache", "none")
        super().__init__(manifest, **kwargs)
        self.save_hyperparameters()

    @property
    def slots(self) -> int:
        return self.hparams.max_views + int(self.hparams.use_prior)

    def records(self, split: str) -> list[dict[str, Any]]:
        frame = self.frames.get(split)
        if frame is None or frame.empty:
            raise ValueError(f"{self.manifest}: no usable rows in split {split!r}")
        label_columns = [c for c in CHEXPERT_LABELS if c in frame.columns]
        frame = frame.assign(_frontal=~frame.get("view", pd.Series("", index=frame.index)).isin(FRONTAL))
        order = [c for c in ("subject_id", "study_date", "study_time", "study_id") if c in frame.columns]
        studies = [group.sort_values(["_frontal", "image_id"]) for _, group in frame.groupby("study_id", sort=False)]
        studies.sort(key=lambda g: tuple(str(g.iloc[0][c]) for c in order))
        records, previous = [], {}
        for study in studies:
            anchor = study.iloc[0]
            subject = str(anchor["subject_id"])
            prior = previous.get(subject)
            views = list(study["image"][: self.hparams.max_views])
            roles = [ROLES["current"]] + [ROLES["other_view"]] * (len(views) - 1)
            if self.hparams.use_prior and prior is not None:
                views.append(prior["image"])
                roles.append(ROLES["prior"])
            codes = anchor[label_columns].to_numpy(dtype=np.float64)[None] if label_columns else np.zeros((1, 0))
            targets, masks = binarize_labels(codes, self.hparams.uncertain)
            records.append({
                "views": views, "roles": roles, "text": anchor["text"],
                "context": context_prompt(_text(anchor.get("indication")), prior["text"] if prior is not None else "",
                                          _text(anchor.get("history"))),
                "study_id": str(anchor["study_id"]), "image_id": str(anchor["image_id"]),
                "labels": torch.from_numpy(targets[0]), "label_mask": torch.from_numpy(masks[0]),
            })  # fmt: skip
            previous[subject] = anchor
        if self.hparams.max_items:
            records = records[: self.hparams.max_items]
        return records

    def dataset(self, split: str, train: bool) -> Dataset:
        key = (split, train)
        if key not in self._datasets:
            views = self.guarded(ViewStack(self.hparams.image_size, train, self.slots))
            self._datasets[key] = Dataset(self.records(split), views)
        return self._datasets[key]
