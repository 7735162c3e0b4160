"""Medical Segmentation Decathlon (``TaskXX_Name/{imagesTr,labelsTr,imagesTs}`` + ``dataset.json``).

This module also holds what every volume adapter shares (BTCV, BraTS, TotalSegmentator and ACDC import it): the
manifest columns of a volume, header geometry, image verification, label checks and the seeded patient-disjoint
validation split. MSD's ``dataset.json`` is the de-facto index format of 3D segmentation data (BTCV's SwinUNETR
JSON follows it), which is why the shared part lives here.

Volume manifest columns (one row per case): ``image``, ``label`` (mask path, empty for unlabelled test cases),
``image_id``, ``subject_id``, ``split``, ``dataset``, ``modality`` (CT or MR), ``channels``, ``channel_names``
(comma-separated, in channel order), ``label_names`` (JSON ``{"value": "name"}``), ``orientation`` (axis codes of
the stored affine, e.g. LPS), ``spacing_x/y/z`` (mm) and ``shape_x/y/z`` (voxels) read from the NIfTI header.
Multi-file cases (BraTS) add one ``image_<channel>`` column per channel name; ``image`` is then the first channel.

Options (``--option key=value``): ``val_fraction`` (default 0.2) and ``seed`` (default 0) choose the validation
subjects among the training cases; ``verify`` = ``full`` (default: every image and label is decoded through
:func:`medcl.data.load_image`, which catches truncated or corrupt data, and label values are checked) or
``header`` (NIfTI headers only: fast, but a truncated data block goes unnoticed until training).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import nibabel as nib
import numpy as np

from medcl.data.prepare import DatasetAdapter, WorkItem, register_adapter
from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger(__name__)

VERIFY_MODES = ("full", "header")
AFFINE_TOLERANCE_MM = 1e-3


def is_junk(path: str | Path) -> bool:
    """macOS AppleDouble (``._name``) and Finder files that archives carry next to the real data."""
    name = Path(path).name
    return name.startswith("._") or name == ".DS_Store"


def nifti_stem(path: str | Path) -> str:
    """``spleen_2.nii.gz`` -> ``spleen_2``."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def validation_subjects(subjects: Iterable[str], fraction: float, seed: int) -> set[str]:
    """Seeded choice of ``round(fraction * n)`` subjects (at least one when ``fraction > 0`` and n > 1).

    Decided once over every discovered subject, so the split is patient-disjoint, identical in every ``--shard``
    and unaffected by which items later get quarantined.
    """
    unique = sorted(set(subjects))
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or len(unique) < 2:
        return set()
    n_val = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in order[:n_val]}


def read_json_index(path: Path) -> dict[str, Any]:
    """Read a Decathlon-style JSON index (``dataset.json``, ``dataset_0.json``); missing or malformed is fatal."""
    if not path.is_file():
        raise InvalidInputError(path, "index file not found: is --root the dataset folder as downloaded?")
    try:
        meta = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InvalidInputError(path, f"not valid JSON ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("training"), list):
        raise InvalidInputError(path, "expected a JSON object with a 'training' list")
    return meta


def json_entries(meta: Mapping[str, Any], key: str, base: Path) -> list[dict[str, str | None]]:
    """Entries of list ``key`` as ``{"image": abs path, "label": abs path | None, "error": reason | None}``.

    Training lists hold ``{"image", "label"}`` objects, test lists bare strings. A malformed entry is kept with an
    error so it is quarantined (one bad line must not hide the rest of the dataset).
    """
    entries: list[dict[str, str | None]] = []
    for position, entry in enumerate(meta.get(key) or []):
        image = entry if isinstance(entry, str) else entry.get("image") if isinstance(entry, dict) else None
        label = entry.get("label") if isinstance(entry, dict) else None
        if not isinstance(image, str) or (label is not None and not isinstance(label, str)):
            entries.append({"image": f"{key}[{position}]", "label": None, "error": f"malformed entry {entry!r}"})
            continue
        if is_junk(image):
            continue
        entries.append(
            {
                "image": str((base / image).resolve()),
                "label": None if label is None else str((base / label).resolve()),
                "error": None,
            }
        )
    return entries


@contextmanager
def naming(what: str, path: str | Path) -> Iterator[None]:
    """Prefix errors about a secondary file (label, extra channel) with its role and path: the quarantine report
    names the item's main image, and the reason must say which other file was at fault."""
    try:
        yield
    except InvalidInputError as err:
        raise InvalidInputError(path, f"{what} {path}: {err.reason}") from err


def read_header(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI lazily (header only); unreadable headers become InvalidInputError."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InvalidInputError(path, "empty file")
    try:
        image = nib.load(path)
    except Exception as err:  # ImageFileError, HeaderDataError, OSError, zlib/EOF errors on broken gzip
        raise InvalidInputError(path, f"not a readable NIfTI header ({type(err).__name__}: {err})") from err
    if len(image.shape) not in (3, 4):
        raise InvalidInputError(path, f"expected a 3D or 4D volume, got shape {image.shape}")
    return image


def geometry(image: nib.Nifti1Image) -> dict[str, Any]:
    """Orientation, spacing, shape and channel count from the header (no voxel data read)."""
    zooms = image.header.get_zooms()
    shape = image.shape
    return {
        "orientation": "".join(nib.aff2axcodes(image.affine)),
        "spacing_x": round(float(zooms[0]), 6),
        "spacing_y": round(float(zooms[1]), 6),
        "spacing_z": round(float(zooms[2]), 6),
        "shape_x": int(shape[0]),
        "shape_y": int(shape[1]),
        "shape_z": int(shape[2]),
        "channels": int(shape[3]) if len(shape) == 4 else 1,
    }


def load_values(path: str | Path) -> np.ndarray:
    """Decode a volume through :func:`medcl.data.load_image` (the loader training uses) and check it is finite."""
    from medcl.data import load_image

    data = load_image(path).numpy()
    if data.size == 0:
        raise InvalidInputError(path, "volume has no voxels")
    if not np.isfinite(data).all():
        raise InvalidInputError(path, "volume contains NaN or infinite values")
    return data


def same_grid(image: nib.Nifti1Image, other: nib.Nifti1Image) -> bool:
    return image.shape[:3] == other.shape[:3] and np.allclose(image.affine, other.affine, atol=AFFINE_TOLERANCE_MM)


def check_label(
    label_path: str | Path,
    image: nib.Nifti1Image,
    allowed: Iterable[int] | None,
    *,
    verify: str,
) -> None:
    """A label must lie on the image grid and, when decoded, hold only the declared label values."""
    with naming("label", label_path):
        _check_label(label_path, image, allowed, verify)


def _check_label(label_path: str | Path, image: nib.Nifti1Image, allowed: Iterable[int] | None, verify: str) -> None:
    label = read_header(label_path)
    if len(label.shape) != 3 and not (len(label.shape) == 4 and label.shape[3] == 1):
        raise InvalidInputError(label_path, f"label must be a 3D map, got shape {label.shape}")
    if not same_grid(image, label):
        raise InvalidInputError(
            label_path,
            f"label grid {label.shape[:3]} / {''.join(nib.aff2axcodes(label.affine))} does not match the image "
            f"grid {image.shape[:3]} / {''.join(nib.aff2axcodes(image.affine))}",
        )
    if verify == "full":
        values = np.unique(load_values(label_path))
        if allowed is not None:
            declared = {float(v) for v in allowed}
            unexpected = [int(v) if float(v).is_integer() else float(v) for v in values if float(v) not in declared]
            if unexpected:
                raise InvalidInputError(
                    label_path, f"unexpected label values {unexpected[:10]}; declared {sorted(allowed)}"
                )


def volume_row(
    *,
    dataset: str,
    image: str | Path,
    label: str | Path | None,
    image_id: str,
    subject_id: str,
    split: str,
    modality: str,
    channel_names: Sequence[str],
    label_names: Mapping[int | str, str],
    header: nib.Nifti1Image,
    **extra: Any,
) -> dict[str, Any]:
    """One manifest row of a volume in the shared column layout (see the module docstring)."""
    return {
        "image": str(image),
        "label": "" if label is None else str(label),
        "image_id": image_id,
        "subject_id": subject_id,
        "split": split,
        "dataset": dataset,
        "modality": modality,
        **geometry(header),
        "channel_names": ",".join(channel_names),
        "label_names": json.dumps({str(k): v for k, v in label_names.items()}),
        **extra,
    }


class VolumeAdapter(DatasetAdapter):
    """Base of the 3D adapters: typed options shared by all of them."""

    kind: ClassVar[str] = "volume"

    def __init__(self, root: str | Path, out_dir: str | Path | None = None, **options: Any) -> None:
        super().__init__(root, out_dir, **options)
        # Options arrive as strings from the CLI (--option val_fraction=0.1) or typed from Python.
        try:
            self.val_fraction = float(options.get("val_fraction", 0.2))
            self.seed = int(options.get("seed", 0))
        except ValueError as err:
            raise ConfigError(f"val_fraction must be a number and seed an integer ({err})") from err
        self.verify = str(options.get("verify", "full")).lower()
        if self.verify not in VERIFY_MODES:
            raise ConfigError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")

    def option_flag(self, key: str, default: bool) -> bool:
        value = self.options.get(key, default)
        if isinstance(value, str):
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ConfigError(f"option {key} must be true or false, got {value!r}")
            return value.lower() in ("1", "true", "yes")
        return bool(value)

    def open_image(self, path: str | Path) -> nib.Nifti1Image:
        """Header of an image, fully decoded too when ``verify=full``."""
        header = read_header(path)
        if self.verify == "full":
            load_values(path)
        return header

    def open_listed(self, item: WorkItem, missing_label: str | None = None) -> nib.Nifti1Image:
        """:meth:`open_image` of a case ``discover`` listed, once the problems found while listing it are reported:
        its ``error``, and (given ``missing_label``, the layout's words for it) no label path in a labelled split."""
        info = item.info
        if info["error"]:
            raise InvalidInputError(item.path, info["error"])
        if missing_label is not None and info["split"] != "test" and info["label"] is None:
            raise InvalidInputError(item.path, missing_label)
        return self.open_image(item.path)


def msd_modality(modality: Mapping[str, str]) -> str:
    """``{"0": "CT"}`` -> CT; MRI sequences (FLAIR, T1w, T2, ADC, MRI) -> MR."""
    names = {str(v).upper() for v in modality.values()}
    return "CT" if names == {"CT"} else "MR"


@register_adapter
class MSDAdapter(VolumeAdapter):
    """A Medical Segmentation Decathlon task folder (or a folder holding exactly one ``Task*`` folder; pick one of
    several with ``--option task=Task09_Spleen``).

    Splits: ``training`` cases -> train/val (seeded, ``val_fraction``), ``test`` cases -> test without label. Every
    MSD case is a different patient, so ``subject_id`` is the case id. ``relase`` (the misspelt key some tasks ship)
    is accepted like ``release``.
    """

    name = "msd"

    def task_dir(self) -> Path:
        task = self.options.get("task")
        if task:
            return self.root / str(task)
        if (self.root / "dataset.json").is_file():
            return self.root
        candidates = sorted(p.parent for p in self.root.glob("Task*/dataset.json"))
        if len(candidates) == 1:
            return candidates[0]
        found = ", ".join(p.name for p in candidates) or "none"
        raise InvalidInputError(
            self.root / "dataset.json", f"no dataset.json here; Task folders found: {found} (use --option task=...)"
        )

    def discover(self) -> list[WorkItem]:
        task_dir = self.task_dir()
        meta = read_json_index(task_dir / "dataset.json")
        for key in ("modality", "labels"):
            if not isinstance(meta.get(key), dict) or not meta[key]:
                raise InvalidInputError(task_dir / "dataset.json", f"'{key}' must be a non-empty object")
        shared = {
            "task": task_dir.name,
            "release": meta.get("release", meta.get("relase", "")),
            "modality": {str(k): str(v) for k, v in meta["modality"].items()},
            "labels": {str(k): str(v) for k, v in meta["labels"].items()},
        }
        training = json_entries(meta, "training", task_dir)
        test = json_entries(meta, "test", task_dir)
        val = validation_subjects(
            (nifti_stem(e["image"]) for e in training if not e["error"]), self.val_fraction, self.seed
        )
        items = []
        for entries, official in ((training, "train"), (test, "test")):
            for entry in entries:
                case = nifti_stem(str(entry["image"]))
                split = "val" if case in val else official
                info = {**shared, **entry, "split": split, "case": case}
                items.append(WorkItem(key=f"{official}/{case}", path=str(entry["image"]), info=info))
        if not items:
            raise InvalidInputError(task_dir / "dataset.json", "lists no training or test cases")
        return items

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        header = self.open_listed(item, missing_label="training entry has no label")
        channel_names = [info["modality"][k] for k in sorted(info["modality"], key=int)]
        channels = geometry(header)["channels"]
        if channels != len(channel_names):
            raise InvalidInputError(
                item.path, f"{channels} channel(s) but dataset.json lists {len(channel_names)} modalities"
            )
        labels = {int(k): v for k, v in info["labels"].items()}
        if info["label"] is not None:
            check_label(info["label"], header, labels, verify=self.verify)
        return [
            volume_row(
                dataset=f"msd/{info['task']}",
                image=item.path,
                label=info["label"],
                image_id=info["case"],
                subject_id=info["case"],
                split=info["split"],
                modality=msd_modality(info["modality"]),
                channel_names=channel_names,
                label_names=labels,
                header=header,
            )
        ]
