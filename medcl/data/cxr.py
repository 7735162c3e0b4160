"""Chest X-ray image-text data: manifest rows -> MONAI dictionary pipelines -> batches.

A batch is a dict::

    image      (B, 1, S, S) float32 in [0, 1]
    text       list[str] (the report text used for contrast)
    group_id   (B,) int64: a stable hash of the study id; images of one study share one report (positives)
    labels     (B, 14) float32 targets under the uncertain-label policy; label_mask (B, 14) bool
    image_id   list[str]
    context    list[str] "indication / history" text
    has_context (B,) bool: the row has an indication or a history (context-infused encoders skip the others)
    view       (B,) int64 view-position index (:func:`medcl.models.cogaze.view_index`: PA, AP, LATERAL, LL, other)

With gaze (``use_gaze``; on by default when the manifest has a ``gaze`` column or ``gaze_manifests`` are given)::

    gaze                (B, 1, S, S) full-reading heatmap (zeros where the image has none); gaze_present (B,) bool
    gaze_text           list[str] the full transcript ("" without gaze)
    gaze_sentences      (B, M, S, S) one heatmap per transcript sentence, M = the batch's most sentences (padded)
    gaze_sentence_mask  (B, M) bool, True for a real sentence
    gaze_sentence_text  list[list[str]] the sentences of each item

The image, gaze map and masks go through the same MONAI dictionary transforms (one random draw for all keys).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from monai import transforms as mt
from monai.data import Dataset
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, default_collate

from medcl.data.cache import cached_dataset, check_cache_mode
from medcl.data.manifest import binarize_labels, read_manifest, require_manifests
from medcl.data.quarantine import Quarantine, QuarantiningDataLoader, guard, separating
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.views import view_index
from medcl.data.transforms import cxr_transforms
from medcl.errors import InvalidInputError

GAZE_KEYS = ("gaze", "gaze_sentences")
# Keys whose per-item size varies; cxr_collate pads or lists them instead of stacking.
_RAGGED_KEYS = ("gaze_sentences", "gaze_sentence_text", "gaze_sentence_count")


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


def has_context(row: pd.Series) -> bool:
    return bool(_text(row.get("indication")) or _text(row.get("history")))


def cxr_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """``default_collate`` plus padding of the per-sentence gaze maps to the batch's most sentences."""
    # New dicts, never pop: CacheDataset may hand out its cached dicts themselves.
    ragged = [{k: item[k] for k in _RAGGED_KEYS if k in item} for item in items]
    batch = default_collate([{k: v for k, v in item.items() if k not in _RAGGED_KEYS} for item in items])
    if ragged and "gaze_sentences" in ragged[0]:
        # Each item holds max(count, 1) maps (one zero map when it has no sentence): zero-padding them to the
        # longest gives (B, max(1, most sentences), S, S).
        maps = pad_sequence([torch.as_tensor(r["gaze_sentences"]) for r in ragged], batch_first=True)
        counts = torch.tensor([r["gaze_sentence_count"] for r in ragged])
        batch["gaze_sentences"] = maps
        batch["gaze_sentence_mask"] = torch.arange(maps.shape[1])[None, :] < counts[:, None]
        batch["gaze_sentence_text"] = [list(r["gaze_sentence_text"]) for r in ragged]
    return batch


def cxr_pipeline(image_size: int, train: bool, *, gaze: bool = False) -> mt.Compose:
    """The CXR image pipeline of training, evaluation and serving: :func:`medcl.data.transforms.cxr_transforms`
    (image, gaze map and sentence gaze maps on one grid) ending in plain tensors, since batches need no metadata."""
    pipeline = cxr_transforms(
        "image",
        gaze_keys=("gaze",) if gaze else (),
        sentence_key="gaze_sentences" if gaze else None,
        size=image_size,
        train=train,
    )
    keys = ["image", *GAZE_KEYS] if gaze else ["image"]
    return mt.Compose([*pipeline.transforms, mt.EnsureTyped(keys=keys, track_meta=False)])


class CXRDataModule(LightningDataModule):
    """Image-report pairs from a CXR manifest (``medcl data prepare mimic-cxr ...``).

    Args:
        manifest: manifest CSV path.
        image_size: square training size in pixels.
        batch_size, num_workers: loader settings (per device).
        text_fields: report sections tried in order for the text side.
        uncertain: policy for uncertain labels (``ones``, ``zeros``, ``ignore``; see binarize_labels).
        cache: ``"memory"`` caches the deterministic part of the pipeline in RAM (MONAI CacheDataset), ``"disk"``
            in ``cache_dir`` (PersistentDataset keyed by a fingerprint of the deterministic transforms; default
            ``<manifest folder>/cache``), ``"none"`` does not cache.
        frontal_only: keep PA/AP images only.
        gaze_manifests: manifests of gaze datasets (``medcl data prepare egd-cxr|reflacx``) whose ``gaze`` and
            ``gaze_sentences`` columns are joined onto ``manifest`` by image id (``dicom_id`` when the gaze manifest
            has it, else ``image_id``): the combined CoGaze manifest. When an image has gaze in several, the first
            manifest listed (then its first row) wins; gaze already in ``manifest`` is kept.
        use_gaze: add the gaze keys to batches (None: when the manifest has gaze columns after the join).
        bad_items, max_bad_fraction: an image that cannot be read is skipped and listed (``skip``) unless more
            than ``max_bad_fraction`` of a split is bad, or stops the run naming it (``strict``); see
            :mod:`medcl.data.quarantine`.

    The module only reads manifests: ``setup`` stops with one error naming any that is missing (write them with
    ``medcl data prepare``; for a try-out, ``medcl data synth`` a synthetic tree first).
    """

    # Subclasses with other items (e.g. one study per item for report generation) override these two.
    collate = staticmethod(cxr_collate)
    drop_last_train = True  # contrastive batches should be full (the batch supplies the negatives)

    def __init__(
        self,
        manifest: str,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 2,
        text_fields: Sequence[str] = ("findings", "impression"),
        uncertain: str = "ones",
        cache: str = "memory",
        cache_dir: str | None = None,
        frontal_only: bool = False,
        gaze_manifests: Sequence[str] = (),
        use_gaze: bool | None = None,
        bad_items: str = "skip",
        max_bad_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        check_cache_mode(cache)
        self.quarantine = Quarantine(max_bad_fraction)
        self.manifest = Path(manifest)
        self.frames: dict[str, pd.DataFrame] = {}
        self._datasets: dict[tuple[str, bool], Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.frames:
            return
        require_manifests([self.manifest, *self.hparams.gaze_manifests])
        frame = join_gaze(read_manifest(self.manifest), self.hparams.gaze_manifests)
        if self.hparams.frontal_only and "view" in frame:
            frame = frame[frame["view"].isin(["PA", "AP"])]
        frame = frame.assign(text=[report_text(r, self.hparams.text_fields) for _, r in frame.iterrows()])
        frame = frame[frame["text"] != ""]
        self.frames = {split: part.reset_index(drop=True) for split, part in frame.groupby("split")}
        if self.hparams.use_gaze is None:
            self.hparams.use_gaze = bool("gaze" in frame and frame["gaze"].map(_text).ne("").any())

    def label_counts(self, split: str = "train") -> list[int]:
        """Positive count per CheXpert label on ``split`` under the uncertain-label policy (class-balanced losses)."""
        targets = torch.stack([r["labels"] for r in self.records(split)])
        return [int(n) for n in (targets > 0.5).sum(dim=0)]

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
                    "has_context": has_context(row),
                    "view": view_index(row.get("view")),
                }
            )
            if self.hparams.use_gaze:
                records[-1].update(gaze_record(row, str(self.manifest)))
        return records

    def dataset(self, split: str, train: bool) -> Dataset:
        """One dataset per (split, train) for the module's lifetime: Lightning may ask for a loader twice
        (e.g. to estimate the number of steps) and the cache must be filled only once."""
        key = (split, train)
        if key not in self._datasets:
            transform = self.guarded(cxr_pipeline(self.hparams.image_size, train, gaze=bool(self.hparams.use_gaze)))
            cache_dir = self.hparams.cache_dir or self.manifest.parent / "cache"
            self._datasets[key] = cached_dataset(
                self.records(split), transform, self.hparams.cache, cache_dir, self.hparams.num_workers
            )
        return self._datasets[key]

    def guarded(self, pipeline: Any) -> mt.Compose:
        """``pipeline`` under the module's bad-item policy (:func:`medcl.data.quarantine.guard`)."""
        return guard(pipeline, self.hparams.bad_items)

    def loader(self, split: str, train: bool) -> DataLoader:
        return QuarantiningDataLoader(
            self.dataset(split, train),
            batch_size=self.hparams.batch_size,
            shuffle=train,
            drop_last=train and self.drop_last_train,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            collate_fn=separating(type(self).collate),
            quarantine=self.quarantine,
            split=split,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self.loader("test", train=False)


def _sentence_records(value: Any, source: str) -> list[dict[str, Any]]:
    """The ``gaze_sentences`` cell: a JSON file path, or the JSON list itself; empty -> []."""
    text = _text(value)
    if not text:
        return []
    try:
        records = json.loads(Path(text).read_text()) if not text.lstrip().startswith("[") else json.loads(text)
    except (OSError, json.JSONDecodeError) as err:
        raise InvalidInputError(text if len(text) < 300 else source, f"unreadable gaze_sentences JSON ({err})") from err
    if not isinstance(records, list) or any("heatmap" not in r or "text" not in r for r in records):
        raise InvalidInputError(source, "gaze_sentences must be a list of {text, heatmap, ...} records")
    return records


def gaze_record(row: pd.Series, source: str) -> dict[str, Any]:
    """Gaze fields of one record: heatmap paths (None when absent), sentence texts and the full transcript."""
    sentences = _sentence_records(row.get("gaze_sentences"), source)
    full = _text(row.get("gaze")) or None
    transcript = _text(row.get("transcript")) or " ".join(str(r["text"]) for r in sentences)
    return {
        "gaze": full,
        "gaze_text": transcript if full is not None else "",
        "gaze_sentences": [str(r["heatmap"]) for r in sentences],
        "gaze_sentence_text": [str(r["text"]) for r in sentences],
    }


def join_gaze(frame: pd.DataFrame, gaze_manifests: Sequence[str]) -> pd.DataFrame:
    """Left-join the gaze columns of ``gaze_manifests`` onto ``frame`` by image id (see CXRDataModule)."""
    if not gaze_manifests:
        return frame
    frame = frame.copy()
    for column in ("gaze", "gaze_sentences", "transcript"):
        if column not in frame:
            frame[column] = ""
        frame[column] = frame[column].map(_text).astype(object)
    for path in gaze_manifests:
        gaze = read_manifest(path)
        key = "dicom_id" if "dicom_id" in gaze else "image_id"
        if "gaze" not in gaze:
            raise InvalidInputError(path, "gaze manifest has no 'gaze' column")
        gaze = gaze[gaze["gaze"].map(_text) != ""].drop_duplicates(subset=key, keep="first").set_index(key)
        lookup = frame["image_id"].astype(str)
        missing = frame["gaze"] == ""
        for column in ("gaze", "gaze_sentences", "transcript"):
            if column in gaze:
                values = lookup.map(gaze[column].map(_text))
                fill = missing & values.notna()
                frame.loc[fill, column] = values[fill]
    return frame
