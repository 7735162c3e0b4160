"""3D data: volume manifests -> MONAI dictionary pipelines for VoCo, two-view SSL, slice contrast and segmentation.

Every pipeline is ``deterministic preprocessing`` (load, RAS orientation, spacing, HU window / z-score, foreground
crop, resize, label selection) followed by ``random sampling``: MONAI caches the first part (``cache="memory"``:
RAM, ``"disk"``: :func:`medcl.data.cache.persistent_dataset` keyed on the transform parameters) and recomputes the
second every step, so VoCo crops, SSL views and segmentation patches are new each epoch while NIfTI decoding and
resampling happen once. Both parts are built from :mod:`medcl.data.transforms`.

Batches:

* :class:`VoCoDataModule`: ``crops`` (B, R, C, r, r, r), ``bases`` (B, K, C, r, r, r), ``overlap`` (B, R, K) with
  rows summing to 1 (the in-plane fraction of crop r inside base cell k);
* :class:`VolumeViewsDataModule`: ``view1``, ``view2`` (B, C, r, r, r), two augmented crops of one region;
* :class:`SliceContrastDataModule`: ``view1``, ``view2`` (B, P, C', S, S) slices, one per partition along z, with
  ``partition`` (B, P) (Chaitanya et al.; C' = 2k + 1 channels for 2.5D);
* :class:`SegmentationDataModule`: ``image`` (B, C, ...), ``label`` (B, 1, ...) integer-valued; patches from
  ``RandCropByPosNegLabeld`` in training, whole volumes (batch 1) for sliding-window validation.

Manifests come from ``medcl data prepare msd|btcv|...`` (columns ``image``, ``label``, ``split``, ...), for a
try-out over a tree written by ``medcl data synth``; the datamodules only read them (a missing one is an error at
``setup``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningDataModule
from monai import transforms as mt
from monai.data import DataLoader, Dataset, list_data_collate

from medcl.data.cache import cached_dataset, check_cache_mode
from medcl.data.manifest import read_manifest
from medcl.data.quarantine import Quarantine, QuarantiningDataLoader, guard, separating
from medcl.data.transforms import (
    AxialSlabd,
    PartitionSlicesd,
    TwoViewsd,
    VoCoCropsd,
    cxr_transforms,
    volume_preprocessing,
)
from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)


# -- datamodules ----------------------------------------------------------------------------------------------
class _VolumeDataModule(LightningDataModule):
    """Shared manifest handling, caching and loaders of the volume datamodules.

    Args:
        manifest: volume manifest CSV (``medcl data prepare msd|btcv|brats|... --out manifest.csv``).
        train_splits / val_split: manifest splits used for training and validation (None: no validation).
        pixdim, intensity_range, crop_foreground, spatial_size: see :func:`volume_preprocessing`.
        batch_size, num_workers: loader settings.
        cache: ``memory`` (RAM), ``disk`` (``cache_dir``, reused across runs) or ``none``.
        limit_volumes: use at most this many volumes per split (quick runs).
        bad_items, max_bad_fraction: a volume that cannot be read is skipped and listed (``skip``) unless more
            than ``max_bad_fraction`` of a split is bad, or stops the run naming it (``strict``); see
            :mod:`medcl.data.quarantine`.
    """

    label_key: str | None = None

    def __init__(
        self,
        manifest: str,
        train_splits: Sequence[str] = ("train",),
        val_split: str | None = "val",
        pixdim: Sequence[float] | None = (1.5, 1.5, 2.0),
        intensity_range: Sequence[float] | None = (-175.0, 250.0),
        crop_foreground: float | None = None,
        spatial_size: Sequence[int] | None = None,
        batch_size: int = 2,
        num_workers: int = 0,
        cache: str = "memory",
        cache_dir: str | None = None,
        limit_volumes: int | None = None,
        bad_items: str = "skip",
        max_bad_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        check_cache_mode(cache)
        if cache == "disk" and not cache_dir:
            raise ConfigError("cache='disk' needs cache_dir")
        self.manifest = Path(manifest)
        self.frame: pd.DataFrame | None = None
        self.settings = {
            "train_splits": tuple(train_splits),
            "val_split": val_split,
            "pixdim": pixdim,
            "intensity_range": intensity_range,
            "crop_foreground": crop_foreground,
            "spatial_size": spatial_size,
            "batch_size": batch_size,
            "num_workers": num_workers,
            "cache": cache,
            "cache_dir": cache_dir,
            "limit_volumes": limit_volumes,
            "bad_items": bad_items,
        }
        self.quarantine = Quarantine(max_bad_fraction)

    def setup(self, stage: str | None = None) -> None:
        if self.frame is None:
            self.frame = read_manifest(self.manifest)

    def rows(self, splits: Sequence[str], *, labelled: bool = False) -> pd.DataFrame:
        if self.frame is None:
            self.setup()
        frame = self.frame[self.frame["split"].isin(list(splits))]
        if labelled:
            if "label" not in frame.columns:
                raise InvalidInputError(self.manifest, "segmentation needs a 'label' column (mask paths)")
            frame = frame[frame["label"].notna() & (frame["label"].astype(str).str.strip() != "")]
        if frame.empty:
            raise InvalidInputError(
                self.manifest, f"no {'labelled ' if labelled else ''}rows in split(s) {list(splits)}"
            )
        limit = self.settings["limit_volumes"]
        return frame.iloc[:limit].reset_index(drop=True) if limit else frame.reset_index(drop=True)

    def records(self, frame: pd.DataFrame) -> list[dict[str, Any]]:
        """Only file paths go into (cached) items: no identifiers."""
        records = []
        for _, row in frame.iterrows():
            record = {"image": row["image"]}
            if self.label_key:
                record[self.label_key] = row["label"]
            records.append(record)
        return records

    def preprocessing(self) -> list[mt.Transform]:
        s = self.settings
        return volume_preprocessing(
            label_key=self.label_key,
            pixdim=s["pixdim"],
            intensity_range=s["intensity_range"],
            crop_foreground=s["crop_foreground"],
            spatial_size=s["spatial_size"],
            label_values=getattr(self, "label_values", None),
        )

    def dataset(self, records: list[dict[str, Any]], transform: mt.Compose) -> Dataset:
        s = self.settings
        return cached_dataset(records, guard(transform, s["bad_items"]), s["cache"], s["cache_dir"], s["num_workers"])

    def _transform(self, seed: int | None) -> mt.Compose:
        """Preprocessing + the module's views; ``seed`` fixes the random views (validation), None for training."""
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        data = self.records(self.rows(self.settings["train_splits"]))
        return self.loader(self.dataset(data, self._transform(None)), train=True, split="train")

    def val_dataloader(self) -> DataLoader | list:
        split = self.settings["val_split"]
        if not split or (self.frame is not None and not (self.frame["split"] == split).any()):
            return []
        return self.loader(self.dataset(self.records(self.rows([split])), self._transform(0)), train=False, split=split)

    def loader(self, dataset: Dataset, *, train: bool, split: str, batch_size: int | None = None) -> DataLoader:
        workers = self.settings["num_workers"]
        # MONAI's DataLoader (num_workers=0) seeds the transforms from the generator it is given, then resets that
        # generator to its initial seed. Given none, it resets torch's global RNG: every loader built after
        # seed_everything then replays the same crops in the same order, so a loop that rebuilds its loader each
        # epoch (or ``reload_dataloaders_every_n_epochs``) trains on one fixed epoch. Training loaders get a
        # generator of their own drawn from the global RNG (reproducible, yet different per loader); evaluation
        # loaders a fixed one, so validation sees the same views in every run.
        seed = int(torch.randint(2**62, ()).item()) if train else 0
        return QuarantiningDataLoader(
            dataset,
            quarantine=self.quarantine,
            split=split,
            generator=torch.Generator().manual_seed(seed),
            batch_size=batch_size or self.settings["batch_size"],
            shuffle=train,
            drop_last=train and len(dataset) >= (batch_size or self.settings["batch_size"]),
            num_workers=workers,
            persistent_workers=workers > 0,
            collate_fn=separating(list_data_collate),
        )


class VoCoDataModule(_VolumeDataModule):
    """Volumes -> VoCo base-crop grids and random crops with overlap labels (see :class:`VoCoCropsd`).

    ``spatial_size`` defaults to ``(grid_x * base_size, grid_y * base_size, base_size)``: the public recipe resizes
    every (foreground-cropped) volume to 384 x 384 x 96 for a 4 x 4 grid of 96-voxel bases. Validation (when
    ``val_split`` has rows) uses the same sampling, seeded once, so validation runs are reproducible from run to run.
    """

    def __init__(
        self,
        manifest: str,
        grid: Sequence[int] = (4, 4),
        base_size: int = 96,
        roi_size: int = 64,
        num_crops: int = 2,
        augment: bool = True,
        train_splits: Sequence[str] = ("train", "test"),
        val_split: str | None = "val",
        crop_foreground: float | None = 0.3,
        spatial_size: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if spatial_size is None:
            spatial_size = (grid[0] * base_size, grid[1] * base_size, base_size)
        super().__init__(
            manifest,
            train_splits=train_splits,
            val_split=val_split,
            crop_foreground=crop_foreground,
            spatial_size=spatial_size,
            **kwargs,
        )
        self.crops = {"grid": tuple(grid), "base_size": base_size, "roi_size": roi_size, "num_crops": num_crops}
        self.augment = augment

    def _transform(self, seed: int | None) -> mt.Compose:
        crops = VoCoCropsd("image", augment=self.augment, **self.crops)
        transform = mt.Compose([*self.preprocessing(), crops])
        if seed is not None:
            transform.set_random_state(seed=seed)
        return transform


class VolumeViewsDataModule(_VolumeDataModule):
    """Volumes -> two augmented crops per volume (SimCLR-3D and SwinUNETR-SSL pretraining; see :class:`TwoViewsd`).

    Args:
        roi_size: crop size fed to the encoder.
        context_scale: both views come from one random region ``context_scale`` times ``roi_size``.
    """

    def __init__(
        self,
        manifest: str,
        roi_size: Sequence[int] = (96, 96, 96),
        context_scale: float = 1.5,
        train_splits: Sequence[str] = ("train", "test"),
        **kwargs: Any,
    ) -> None:
        super().__init__(manifest, train_splits=train_splits, **kwargs)
        self.roi_size = tuple(roi_size)
        self.context_size = tuple(math.ceil(r * context_scale) for r in self.roi_size)

    def _transform(self, seed: int | None) -> mt.Compose:
        transform = mt.Compose([*self.preprocessing(), TwoViewsd("image", self.roi_size, self.context_size)])
        if seed is not None:
            transform.set_random_state(seed=seed)
        return transform


class SliceContrastDataModule(_VolumeDataModule):
    """Volumes -> one slice per z-partition, two views each (Chaitanya et al.; see :class:`PartitionSlicesd`).

    ``image_size`` resizes slices in-plane (depth is kept); ``context`` > 0 gives 2.5D inputs of 2k + 1 slices;
    ``spatial_augment`` must be off for the local (region) stage. MR defaults: no HU window (z-score).
    """

    def __init__(
        self,
        manifest: str,
        image_size: int = 128,
        partitions: int = 4,
        context: int = 0,
        spatial_augment: bool = True,
        intensity_range: Sequence[float] | None = None,
        train_splits: Sequence[str] = ("train", "test"),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("spatial_size", (image_size, image_size, -1))
        super().__init__(manifest, train_splits=train_splits, intensity_range=intensity_range, **kwargs)
        self.slices = {"partitions": partitions, "context": context, "spatial_augment": spatial_augment}

    def _transform(self, seed: int | None) -> mt.Compose:
        transform = mt.Compose([*self.preprocessing(), PartitionSlicesd("image", **self.slices)])
        if seed is not None:
            transform.set_random_state(seed=seed)
        return transform


class SegmentationDataModule(_VolumeDataModule):
    """Image/mask pairs for segmentation fine-tuning, 3D volumes or 2D images (e.g. SIIM pneumothorax PNG masks).

    Args:
        roi_size: training patch (3D: ``RandCropByPosNegLabeld``, ``pos``/``neg`` ratio, ``num_samples`` patches
            per volume); validation/test use whole volumes (batch 1) for sliding-window inference.
        num_labeled: train on this many labelled training cases only (the few-label setting), drawn with
            ``labeled_seed``; None uses all.
        label_values: keep these mask values as classes 1..n (others become background), e.g. BTCV organs.
        flip_prob, rotate_prob: spatial augmentation. Off by default: left/right flips turn a left kidney into a
            right one while its label keeps saying "left".
        spatial_dims: 3 for volumes; 2 for radiographs, loaded and resized to ``image_size`` by
            :func:`medcl.data.transforms.cxr_transforms`.
        slice_context: train a 2D network on axial slices of the volumes (slice-based U-Nets, e.g. after
            Chaitanya pretraining on MR): None trains on 3D patches; k >= 0 on ``roi_size`` (2 values) slices with k
            neighbours either side as channels (2.5D when k > 0; match the pretraining's ``context``). Validation
            and test still see whole volumes; the task predicts them slice by slice and scores in 3D.
        test_split: split for ``medcl test`` (needs labels) and ``predict``.
    """

    label_key = "label"

    def __init__(
        self,
        manifest: str,
        roi_size: Sequence[int] = (96, 96, 96),
        num_samples: int = 2,
        pos: float = 1.0,
        neg: float = 1.0,
        num_labeled: int | None = None,
        labeled_seed: int = 0,
        label_values: Sequence[int] | None = None,
        flip_prob: float = 0.0,
        rotate_prob: float = 0.0,
        spatial_dims: int = 3,
        image_size: int = 256,
        slice_context: int | None = None,
        test_split: str = "val",
        **kwargs: Any,
    ) -> None:
        super().__init__(manifest, **kwargs)
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if slice_context is not None and (slice_context < 0 or spatial_dims != 3 or len(roi_size) != 2):
            raise ConfigError(
                f"slice_context needs volumes (spatial_dims=3), a 2-value in-plane roi_size and k >= 0; got "
                f"slice_context={slice_context}, spatial_dims={spatial_dims}, roi_size={list(roi_size)}"
            )
        if num_labeled is not None and num_labeled < 1:
            raise ConfigError(f"num_labeled must be >= 1, got {num_labeled}")
        self.roi_size = tuple(roi_size)
        self.sampling = {"num_samples": num_samples, "pos": pos, "neg": neg}
        self.num_labeled, self.labeled_seed = num_labeled, labeled_seed
        self.label_values = list(label_values) if label_values else None
        self.flip_prob, self.rotate_prob = flip_prob, rotate_prob
        self.spatial_dims, self.image_size, self.test_split = spatial_dims, image_size, test_split
        self.slice_context = slice_context
        # Saved in checkpoints: `medcl export` rebuilds the same preprocessing for inference.
        self.save_hyperparameters(
            {
                **self.settings,
                "patch_size": list(self.roi_size),
                "label_values": self.label_values,
                "num_labeled": num_labeled,
                "labeled_seed": labeled_seed,
                "spatial_dims": spatial_dims,
                "image_size": image_size,
                "slice_context": slice_context,
            }
        )

    def labeled_rows(self) -> pd.DataFrame:
        """The training cases used: all labelled ones, or ``num_labeled`` of them drawn with ``labeled_seed``."""
        frame = self.rows(self.settings["train_splits"], labelled=True)
        if self.num_labeled is None:
            return frame
        if self.num_labeled > len(frame):
            raise ConfigError(f"num_labeled={self.num_labeled} but only {len(frame)} labelled training cases exist")
        order = np.random.default_rng(self.labeled_seed).permutation(len(frame))[: self.num_labeled]
        return frame.iloc[sorted(order)].reset_index(drop=True)

    def transform(self, train: bool) -> mt.Compose:
        if self.spatial_dims == 2:
            steps: list[Any] = list(
                cxr_transforms("image", mask_keys=("label",), size=self.image_size, train=train).transforms
            )
            steps.append(mt.EnsureTyped(keys=["image", "label"], dtype=torch.float32, track_meta=False))
            return mt.Compose(steps)
        steps = [*self.preprocessing()]
        if not train:
            return mt.Compose(steps)
        keys = ["image", "label"]
        context = self.slice_context
        patch = self.roi_size if context is None else (*self.roi_size, 2 * context + 1)
        if context:
            steps.append(mt.BorderPadd(keys=keys, spatial_border=[0, 0, 0, 0, context, context], mode="replicate"))
        steps += [
            mt.SpatialPadd(keys=keys, spatial_size=patch),
            mt.RandCropByPosNegLabeld(
                keys=keys,
                label_key="label",
                spatial_size=patch,
                pos=self.sampling["pos"],
                neg=self.sampling["neg"],
                num_samples=self.sampling["num_samples"],
                image_key="image",
                image_threshold=0.0,
            ),
            # Slices flip in-plane only: a z flip would reverse the order of a 2.5D input's neighbours.
            *(mt.RandFlipd(keys=keys, prob=self.flip_prob, spatial_axis=a) for a in range(3 if context is None else 2)),
            mt.RandRotate90d(keys=keys, prob=self.rotate_prob, max_k=3, spatial_axes=(0, 1)),
            mt.RandScaleIntensityd(keys="image", factors=0.1, prob=0.1),
            mt.RandShiftIntensityd(keys="image", offsets=0.1, prob=0.5),
        ]
        if context is not None:
            steps.append(AxialSlabd(keys, label_key="label", context=context))
        return mt.Compose(steps)

    def train_dataloader(self) -> DataLoader:
        rows = self.labeled_rows()
        log.info("segmentation: training on %d labelled case(s)", len(rows))
        return self.loader(self.dataset(self.records(rows), self.transform(train=True)), train=True, split="train")

    def _eval_loader(self, split: str) -> DataLoader:
        data = self.records(self.rows([split], labelled=True))
        batch = 1 if self.spatial_dims == 3 else None
        return self.loader(self.dataset(data, self.transform(train=False)), train=False, split=split, batch_size=batch)

    def val_dataloader(self) -> DataLoader | list:
        split = self.settings["val_split"]
        return self._eval_loader(split) if split else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
