"""``medcl data prepare``: run a dataset adapter over a tree and write a validated manifest.

An adapter (one module per dataset in :mod:`medcl.data.adapters`) splits the work in two:

* :meth:`DatasetAdapter.discover` reads the dataset's index files (CSVs, ``dataset.json``) and lists work items. A
  missing index file is fatal: nothing sensible can be written without it.
* :meth:`DatasetAdapter.process` turns one item into manifest rows, checking the image and writing derived files
  (e.g. gaze heatmaps). It raises :class:`~medcl.errors.InvalidInputError` for a bad item; the runner records the
  item in a quarantine report and goes on. Unexpected exceptions are quarantined too, with their type, so one odd
  file never kills a run over a hundred thousand.

The runner processes items in a process pool with a progress bar, supports ``--shard i/N`` for cluster array jobs
(every shard gets a deterministic, disjoint slice of the sorted items; merge shard manifests with
``medcl data merge``), and writes next to the manifest ``<name>.quarantine.csv`` (``item, path, reason``) and
``<name>.summary.json`` with counts that add up: ``discovered == processed + quarantined`` for the shard.

De-identification (:mod:`medcl.data.deid`): every adapter gets the profile options (``deid``) and refuses, through
:func:`medcl.data.adapters.common.load_screened_image`, DICOM pixels that may show identifying text. An adapter that
derives manifest values from DICOM headers (``reads_identifiers``: patient ids, UIDs) also gets the installation's
pseudonym key: prepare stops with instructions when there is none, and such an adapter writes only keyed
pseudonyms, keyed UIDs and de-identified copies of the DICOM files; its quarantine entries name items by
pseudonymous paths (``medcl data locate`` finds the file). The summary records the profile, options and the key's
fingerprint; merging shards made with different keys is refused.
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd
from tqdm.auto import tqdm

from medcl.data.deid import DeidOptions, PseudonymKey, check_key_outside, load_key, pseudonymize_text
from medcl.data.manifest import validate_manifest
from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkItem:
    """One unit of adapter work. ``key`` orders and shards items; ``path`` is the file a quarantine entry names."""

    key: str
    path: str
    info: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Quarantined:
    key: str
    path: str
    reason: str


class DatasetAdapter(ABC):
    """Base class of dataset adapters. Subclasses set ``name`` and register with :func:`register_adapter`.

    Args:
        root: the dataset folder exactly as downloaded.
        out_dir: where derived files (e.g. gaze heatmaps) go; the manifest's folder by default.
        deid: the de-identification profile options and accepted burned-in risks.
        key: the pseudonym key; required when the adapter ``reads_identifiers``.
        options: adapter-specific options from ``--option key=value``.
    """

    name: ClassVar[str]
    kind: ClassVar[str] = "cxr"  # "cxr" (2D radiographs) or "volume" (3D/4D)
    reads_identifiers: ClassVar[bool] = False  # manifest values come from DICOM headers (patient ids, UIDs)

    def __init__(
        self,
        root: str | Path,
        out_dir: str | Path | None = None,
        *,
        deid: DeidOptions | None = None,
        key: PseudonymKey | None = None,
        **options: Any,
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise InvalidInputError(self.root, f"{self.name} root is not a directory")
        self.out_dir = Path(out_dir).resolve() if out_dir is not None else self.root
        self.deid = deid or DeidOptions()
        self.key = key
        if self.reads_identifiers and key is None:
            raise ConfigError(f"{self.name} reads patient identifiers from DICOM headers: it needs the pseudonym key")
        self.options = options

    def quarantine_entry(self, item: WorkItem, reason: str) -> Quarantined:
        """The report line for a bad item: pseudonymous (root dropped, UIDs keyed) if the adapter reads identifiers."""
        if not self.reads_identifiers or self.key is None:
            return Quarantined(item.key, item.path, reason)
        texts = (pseudonymize_text(text, self.key, self.deid, self.root) for text in (item.key, item.path, reason))
        return Quarantined(*texts)

    @abstractmethod
    def discover(self) -> list[WorkItem]:
        """List the work; raise InvalidInputError when the dataset's index files are missing or malformed."""

    @abstractmethod
    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        """Manifest rows for one item; raise InvalidInputError for a bad item."""

    def finalize(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Dataset-wide steps after all items (e.g. assigning splits). Default: unchanged."""
        return frame


_ADAPTERS: dict[str, type[DatasetAdapter]] = {}


def register_adapter(cls: type[DatasetAdapter]) -> type[DatasetAdapter]:
    """Class decorator: make an adapter available to ``medcl data prepare <name>``."""
    if cls.name in _ADAPTERS and _ADAPTERS[cls.name] is not cls:
        raise ConfigError(f"two adapters are named {cls.name!r}")
    _ADAPTERS[cls.name] = cls
    return cls


def available_adapters() -> list[str]:
    import medcl.data.adapters  # noqa: F401  (importing the package registers every adapter)

    return sorted(_ADAPTERS)


def get_adapter(name: str) -> type[DatasetAdapter]:
    names = available_adapters()
    if name not in _ADAPTERS:
        raise ConfigError(f"unknown dataset {name!r}; available: {', '.join(names)}")
    return _ADAPTERS[name]


def parse_shard(text: str | None) -> tuple[int, int]:
    """Parse ``"i/N"`` (0-based i) into (i, N)."""
    if not text:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError as err:
        raise ConfigError(f"--shard must look like i/N (e.g. 0/8), got {text!r}") from err
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--shard {text!r}: need 0 <= i < N")
    return index, count


def select_shard(items: Sequence[WorkItem], index: int, count: int) -> list[WorkItem]:
    """Deterministic, disjoint and covering: sort by key and take every ``count``-th item."""
    return sorted(items, key=lambda it: it.key)[index::count]


def _run_item(adapter: DatasetAdapter, item: WorkItem) -> tuple[list[dict[str, Any]], Quarantined | None]:
    try:
        return adapter.process(item), None
    except InvalidInputError as err:
        return [], adapter.quarantine_entry(item, err.reason)
    except Exception as err:  # a bad file must not end the run: record it with its error type
        return [], adapter.quarantine_entry(item, f"{type(err).__name__}: {err}")


@dataclass
class PrepareResult:
    manifest: Path
    quarantine: Path
    summary: Path
    counts: dict[str, int]


def sidecar_paths(manifest: Path) -> tuple[Path, Path]:
    stem = manifest.name[: -len(".csv")] if manifest.name.endswith(".csv") else manifest.name
    return manifest.with_name(f"{stem}.quarantine.csv"), manifest.with_name(f"{stem}.summary.json")


def prepare(
    dataset: str,
    root: str | Path,
    out: str | Path,
    *,
    workers: int | None = None,
    shard: str | None = None,
    progress: bool = True,
    deid: DeidOptions | None = None,
    key: PseudonymKey | None = None,
    **options: Any,
) -> PrepareResult:
    """Run adapter ``dataset`` over ``root`` and write the manifest ``out`` with its quarantine report and summary.

    ``deid`` sets the de-identification options; ``key`` the pseudonym key for adapters that read identifiers
    (default: the installation's key, :func:`medcl.data.deid.load_key`, an error when there is none).
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    adapter_class = get_adapter(dataset)
    if adapter_class.reads_identifiers:
        key = key or load_key()
        check_key_outside(key, root, out.parent)
    adapter = adapter_class(root, out_dir=out.parent, deid=deid, key=key, **options)
    shard_index, shard_count = parse_shard(shard)
    items = select_shard(adapter.discover(), shard_index, shard_count)
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, workers)

    rows: list[dict[str, Any]] = []
    quarantined: list[Quarantined] = []
    bar = tqdm(total=len(items), desc=f"prepare {dataset}", unit="item", disable=not progress)
    results: Iterable[tuple[list[dict[str, Any]], Quarantined | None]]
    if workers == 1 or len(items) < 2 * workers:
        results = (_run_item(adapter, it) for it in items)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        chunk = max(1, len(items) // (workers * 16))
        results = pool.map(_run_item, [adapter] * len(items), items, chunksize=chunk)
    try:
        for item_rows, bad in results:
            rows.extend(item_rows)
            if bad is not None:
                quarantined.append(bad)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()

    frame = adapter.finalize(pd.DataFrame(rows))
    quarantine_path, summary_path = sidecar_paths(out)
    if len(frame):
        frame = validate_manifest(frame, source=str(out))
    frame.to_csv(out, index=False)
    pd.DataFrame([q.__dict__ for q in quarantined], columns=["key", "path", "reason"]).to_csv(
        quarantine_path, index=False
    )
    counts = {
        "discovered": len(items),
        "processed": len(items) - len(quarantined),
        "quarantined": len(quarantined),
        "rows": len(frame),
    }
    summary: dict[str, Any] = {"dataset": dataset, "root": str(adapter.root), "shard": f"{shard_index}/{shard_count}"}
    summary |= counts
    summary["deidentification"] = {**adapter.deid.describe(), "pseudonym_key": key.fingerprint if key else None}
    if len(frame):
        summary["split_rows"] = {k: int(v) for k, v in frame["split"].value_counts().items()}
    summary_path.write_text(json.dumps(summary, indent=2))
    if quarantined:
        log.warning("%d of %d items quarantined: see %s", len(quarantined), len(items), quarantine_path)
    return PrepareResult(out, quarantine_path, summary_path, counts)


def merge_manifests(parts: Sequence[str | Path], out: str | Path) -> Path:
    """Concatenate shard manifests (and their quarantine reports) and validate the result.

    Shards whose summaries name different pseudonym keys are refused: the same patient would carry two pseudonyms.
    """
    fingerprints = {}
    for part in parts:
        summary = sidecar_paths(Path(part))[1]
        if summary.is_file():
            fingerprint = json.loads(summary.read_text()).get("deidentification", {}).get("pseudonym_key")
            if fingerprint:
                fingerprints[str(part)] = fingerprint
    if len(set(fingerprints.values())) > 1:
        listing = ", ".join(f"{part}: {fp}" for part, fp in fingerprints.items())
        raise ConfigError(
            f"shards were prepared with different pseudonym keys ({listing}): prepare every shard with the same key "
            "file (medcl data key show prints its fingerprint)"
        )
    frames = [pd.read_csv(p, dtype={"image_id": str, "subject_id": str, "study_id": str}) for p in parts]
    merged = validate_manifest(pd.concat(frames, ignore_index=True), source=str(out))
    out = Path(out)
    merged.to_csv(out, index=False)
    quarantines = [sidecar_paths(Path(p))[0] for p in parts]
    existing = [pd.read_csv(q) for q in quarantines if q.is_file()]
    if existing:
        pd.concat(existing, ignore_index=True).to_csv(sidecar_paths(out)[0], index=False)
    return out
