"""Bad items during training: skipped, counted and reported by name, never fatal by surprise nor silently dropped.

A manifest row whose file is missing, garbage or truncated fails in the loading transform with an
:class:`~medcl.errors.InvalidInputError` naming the file (medcl's reader is the only reader: MONAI would otherwise
retry the file with its own readers and hide why it failed). With the default policy ``skip``:

* :func:`guard` wraps a pipeline so such an item becomes a *quarantine marker* (file, reason) instead of an
  exception: in the cacheable part (a cached marker is reported again every epoch, never re-read) and in the random
  part alike, in worker processes too;
* :func:`separating` wraps a collate function: markers leave the batch under :data:`QUARANTINE_KEY`;
* :class:`QuarantiningDataLoader` hands the markers to the datamodule's :class:`Quarantine` in the main process and
  drops batches that had no good item left, so a task never sees an empty batch;
* :class:`Quarantine` keeps each split's bad files (written to ``<folder>/<split>.csv`` as they appear) and stops
  the run with one sentence once more than ``max_fraction`` of a split's items are bad.

With ``strict`` the first bad item stops the run at once, naming the file. Errors that are not about the data (a
bug in a transform) are never quarantined: they propagate as they are.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai import transforms as mt
from monai.data import DataLoader

from medcl.errors import ConfigError, InvalidInputError, find_cause

log = logging.getLogger(__name__)

POLICIES = ("skip", "strict")
QUARANTINE_KEY = "quarantined"


class TooManyBadItemsError(InvalidInputError):
    """More than the allowed fraction of a split's items could not be used."""


def _source(item: Any) -> str:
    """The file an item was read from (its ``image`` entry before loading)."""
    if isinstance(item, Mapping):
        value = item.get("image")
        return str(value) if isinstance(value, (str, Path)) else "<item>"
    return "<item>"


class _Guarded:
    """Runs ``transform``; a data error becomes a marker (``skip``) or stops the run naming the file (``strict``)."""

    def __init__(self, transform: Callable, policy: str) -> None:
        self.transform, self.policy = transform, policy

    def __call__(self, item: Any) -> Any:
        if isinstance(item, Mapping) and QUARANTINE_KEY in item:
            return item  # bad earlier in the pipeline (e.g. when it was cached)
        try:
            return self.transform(item)
        except Exception as err:
            cause = find_cause(err, InvalidInputError)
            if cause is None:
                raise
            where = cause.path or _source(item)
            if self.policy == "strict":
                raise InvalidInputError(where, f"{cause.reason} (bad_items: strict)") from None
            return {QUARANTINE_KEY: {"file": where, "reason": cause.reason}}


class GuardedTransform(_Guarded, mt.Transform):
    """The deterministic (cacheable) part of a guarded pipeline."""


class GuardedRandomTransform(_Guarded, mt.Randomizable):
    """The random part of a guarded pipeline; seeds reach the wrapped transforms."""

    def set_random_state(self, seed: int | None = None, state: Any = None) -> GuardedRandomTransform:
        super().set_random_state(seed, state)
        self.transform.set_random_state(seed, state)
        return self

    def randomize(self, data: Any) -> None:  # the wrapped transforms draw their own parameters
        pass


def guard(pipeline: Callable, policy: str = "skip") -> mt.Compose:
    """``pipeline`` with data errors handled by ``policy``. A MONAI Compose is split at its first random transform so
    caches still store the deterministic part (and the markers of items that failed there)."""
    if policy not in POLICIES:
        raise ConfigError(f"bad_items must be one of {POLICIES}, got {policy!r}")
    if not isinstance(pipeline, mt.Compose):
        return mt.Compose([GuardedTransform(pipeline, policy)])
    steps = list(pipeline.transforms)
    first_random = next((i for i, t in enumerate(steps) if isinstance(t, mt.RandomizableTrait)), len(steps))
    guarded: list[Any] = [GuardedTransform(mt.Compose(steps[:first_random]), policy)]
    if first_random < len(steps):
        guarded.append(GuardedRandomTransform(mt.Compose(steps[first_random:]), policy))
    return mt.Compose(guarded)


def separating(collate: Callable[[list[Any]], Any]) -> Callable[[list[Any]], Any]:
    """A collate function that puts quarantine markers under :data:`QUARANTINE_KEY` and collates the rest."""

    def collate_with_markers(items: list[Any]) -> Any:
        flat = [x for item in items for x in (item if isinstance(item, list) else [item])]
        bad = [x[QUARANTINE_KEY] for x in flat if isinstance(x, Mapping) and QUARANTINE_KEY in x]
        if not bad:
            return collate(items)
        good = [item for item in items if not (isinstance(item, Mapping) and QUARANTINE_KEY in item)]
        batch = collate(good) if good else {}
        batch[QUARANTINE_KEY] = bad
        return batch

    return collate_with_markers


class Quarantine:
    """The bad items of each split: counted once per file, written to ``<folder>/<split>.csv``, bounded."""

    def __init__(self, max_fraction: float = 0.1, folder: str | Path | None = None) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ConfigError(f"max_bad_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        self.folder = Path(folder) if folder else None
        self.items: dict[str, dict[str, str]] = {}  # split -> file -> reason
        self.sizes: dict[str, int] = {}

    def expect(self, split: str, size: int) -> None:
        self.sizes[split] = size
        self.items.setdefault(split, {})

    def add(self, split: str, markers: Sequence[Mapping[str, str]]) -> None:
        known = self.items.setdefault(split, {})
        new = [m for m in markers if m["file"] not in known]
        for marker in new:
            known[marker["file"]] = marker["reason"]
            log.warning("%s: skipped (%s)", marker["file"], marker["reason"])
        if new and self.folder is not None:
            self.write(split)
        size = self.sizes.get(split) or 0
        if size and len(known) > self.max_fraction * size:
            first = next(iter(known))
            raise TooManyBadItemsError(
                first,
                f"{known[first]}; {len(known)} of {size} {split} items are unusable, more than max_bad_fraction "
                f"{self.max_fraction:g} (the list: {self.path(split) if self.folder else 'in the log'})",
            )

    def path(self, split: str) -> Path:
        return (self.folder or Path(".")) / f"{split}.csv"

    def write(self, split: str) -> Path:
        path = self.path(split)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["file", "reason"])
            writer.writerows(sorted(self.items.get(split, {}).items()))
        return path

    def counts(self) -> dict[str, int]:
        return {split: len(items) for split, items in self.items.items()}


class QuarantiningDataLoader(DataLoader):
    """MONAI's DataLoader that reports quarantine markers to ``quarantine`` under ``split`` and never yields a batch
    without a good item. (A DataLoader subclass, so Lightning can still swap in a distributed sampler.)"""

    def __init__(self, *args: Any, quarantine: Quarantine | None = None, split: str = "train", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.quarantine, self.split = quarantine, split
        if quarantine is not None:
            quarantine.expect(split, len(self.dataset))

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            if isinstance(batch, dict) and QUARANTINE_KEY in batch:
                markers = batch.pop(QUARANTINE_KEY)
                if self.quarantine is not None:
                    self.quarantine.add(self.split, markers)
                if not batch:
                    continue
            yield batch
