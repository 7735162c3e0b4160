"""Chest X-ray image-text data: manifest rows -> MONAI dictionary pipelines -> batches.

A batch is a dict::

    image      (B, 1, S, S) float32 in [0, 1]
    text       list[str] (the report text used for contrast)
    group_id   (B,) int64: a stable hash of the study id; images of one study share one report (positives)
    labels     (B, 14) float32 targets under the uncertain-label policy; label_mask (B, 14) bool
    image_id   list[str]
    gaze       (B, 1, S, S) when the manifest has gaze heatmaps and ``use_gaze`` (zeros + has_gaze=False otherwise)
    context    list[str] "indication / history" text

The image, gaze map and masks go through the same MONAI dictionary transforms (one random draw for all keys).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from monai import transforms as mt
from monai.data import CacheDataset, Dataset
from torch.utils.data import DataLoader

from medcl.data.manifest import CHEXPERT_LABELS, binarize_labels, read_manifest


def stable_group_id(value: str) -> int:
    """Same study -> same int64 on every rank and every run (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(str(value).encode(), digest_size=7).digest(), "big")


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value).strip()


def report_text(row: pd.Series, fields: Sequence[str]) -> str:
    """The first non-empty section among ``fields`` (findings, then impression, by default)."""
    for name in fields:
        text = _text(row.get(name))
        if text:
            return text
    return ""


def context_text(row: pd.Series) -> str:
    """Clinical context for context-infused encoders: indication and history with section markers."""
    return f"[INDICATION] {_text(row.get('indication'))} [HISTORY] {_text(row.get('history'))}".strip()


def cxr_transforms(image_size: int, train: bool, keys: Sequence[str] = ("image",)) -> mt.Compose:
    """Deterministic load/resize, then (train only) mild geometric and intensity augmentation.

    Horizontal flips are excluded on purpose: reports say "left"/"right" and the heart sits on the left.
    The first random transform ends what CacheDataset caches.
    """
    image_keys = [k for k in keys if k == "image"]
    steps: list[mt.Transform] = [
        mt.LoadImaged(keys=image_keys, image_only=True, ensure_channel_first=True, reader="PILReader"),
        mt.ScaleIntensityd(keys=image_keys),
        mt.Resized(keys=list(keys), spatial_size=image_size, size_mode="longest", anti_aliasing=True),
        mt.ResizeWithPadOrCropd(keys=list(keys), spatial_size=(image_size, image_size)),
        mt.EnsureTyped(keys=list(keys), dtype=torch.float32, track_meta=False),
    ]
    if train:
        steps += [
            mt.RandAffined(
                keys=list(keys),
                prob=0.8,
                rotate_range=math.radians(7),
                scale_range=0.08,
                translate_range=image_size * 0.04,
                padding_mode="zeros",
            ),
            mt.RandAdjustContrastd(keys=image_keys, prob=0.3, gamma=(0.8, 1.25)),
        ]
    return mt.Compose(steps)


class CXRDataModule(LightningDataModule):
    """Image-report pairs from a CXR manifest (``medcl data prepare mimic-cxr ...``).

    Args:
        manifest: manifest CSV path.
        image_size: square training size in pixels.
        batch_size, num_workers: loader settings (per device).
        text_fields: report sections tried in order for the text side.
        uncertain: policy for uncertain labels (``ones``, ``zeros``, ``ignore``; see binarize_labels).
        cache: ``"memory"`` caches the deterministic part of the pipeline (MONAI CacheDataset), ``"none"`` does not.
        synthetic: when set and ``manifest`` does not exist, ``prepare_data`` writes a synthetic MIMIC-CXR-JPG tree
            under ``synthetic_root`` with these generator arguments and runs the ``mimic-cxr`` adapter on it, so a
            demo config runs on a fresh checkout.
        frontal_only: keep PA/AP images only.
    """

    def __init__(
        self,
        manifest: str,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        text_fields: Sequence[str] = ("findings", "impression"),
        uncertain: str = "ones",
        cache: str = "memory",
        frontal_only: bool = False,
        synthetic: dict[str, Any] | None = None,
        synthetic_root: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.manifest = Path(manifest)
        self.frames: dict[str, pd.DataFrame] = {}

    # -- data preparation -------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.manifest.is_file() or not self.hparams.synthetic:
            return
        from medcl.data.prepare import prepare
        from medcl.data.synthetic.cxr import generate_mimic_cxr

        root = Path(self.hparams.synthetic_root or self.manifest.parent / "mimic-cxr-jpg")
        if not (root / "files").is_dir():
            generate_mimic_cxr(root, **self.hparams.synthetic)
        prepare("mimic-cxr", root, self.manifest, progress=True)

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        frame = read_manifest(self.manifest)
        if self.hparams.frontal_only and "view" in frame:
            frame = frame[frame["view"].isin(["PA", "AP"])]
        frame = frame.assign(text=[report_text(r, self.hparams.text_fields) for _, r in frame.iterrows()])
        frame = frame[frame["text"] != ""]
        self.frames = {split: part.reset_index(drop=True) for split, part in frame.groupby("split")}

    def records(self, split: str) -> list[dict[str, Any]]:
        frame = self.frames.get(split)
        if frame is None or frame.empty:
            raise ValueError(f"{self.manifest}: no usable rows in split {split!r}")
        label_columns = [c for c in CHEXPERT_LABELS if c in frame.columns]
        codes = frame[label_columns].to_numpy(dtype=np.float64) if label_columns else np.zeros((len(frame), 0))
        targets, masks = binarize_labels(codes, self.hparams.uncertain)
        records = []
        for i, row in frame.iterrows():
            records.append(
                {
                    "image": row["image"],
                    "image_id": str(row["image_id"]),
                    "text": row["text"],
                    "context": context_text(row),
                    "group_id": stable_group_id(row.get("study_id", row["image_id"])),
                    "labels": torch.from_numpy(targets[i]),
                    "label_mask": torch.from_numpy(masks[i]),
                }
            )
        return records

    def dataset(self, split: str, train: bool) -> Dataset:
        transform = cxr_transforms(self.hparams.image_size, train)
        data = self.records(split)
        if self.hparams.cache == "memory":
            return CacheDataset(data, transform, num_workers=self.hparams.num_workers or None, progress=False)
        return Dataset(data, transform)

    def loader(self, split: str, train: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split, train),
            batch_size=self.hparams.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)
