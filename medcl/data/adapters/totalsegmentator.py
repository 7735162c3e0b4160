"""TotalSegmentator: CT volumes with one binary mask file per anatomical class.

Layout: ``sXXXX/ct.nii.gz``, ``sXXXX/segmentations/<class>.nii.gz`` (117 classes in v2, 104 in v1; every case
has a file for every class, empty when the structure is outside the field of view) and ``meta.csv`` (or
``meta.csv.gz``), ``;``-separated and often UTF-8 with a BOM: ``image_id;age;gender;institute;study_type;split``.
Splits come from ``meta.csv``.

Training pipelines want one label map per case, so the adapter merges the chosen class masks into
``<manifest folder>/totalsegmentator_labels/<image_id>.nii.gz`` (uint8, on the CT grid) and puts that path in
``label``; ``label_names`` maps each value to its class. ``--option classes=...`` picks and merges classes:
``spleen,liver`` (labels 1, 2) or ``kidney=kidney_left+kidney_right,liver`` (a named union of several masks).
Default: every class file of the first case, in alphabetical order. Where chosen masks overlap, the later class wins.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from medcl.data.adapters.msd import (
    VolumeAdapter,
    is_junk,
    load_values,
    naming,
    nifti_stem,
    read_header,
    same_grid,
    volume_row,
)
from medcl.data.manifest import normalize_split
from medcl.data.prepare import WorkItem, register_adapter
from medcl.errors import ConfigError, InvalidInputError

LABEL_FOLDER = "totalsegmentator_labels"
_CASE = re.compile(r"^s\d+$")
_CLASS = re.compile(r"^[A-Za-z0-9_]+$")


def read_meta(root: Path) -> pd.DataFrame:
    """``meta.csv`` / ``meta.csv.gz`` by column name; ``;`` (official) or ``,`` separated, BOM tolerated."""
    candidates = [root / "meta.csv", root / "meta.csv.gz"]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise InvalidInputError(root / "meta.csv", "meta.csv not found: is --root the TotalSegmentator folder?")
    raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    text = raw.decode("utf-8-sig")
    separator = ";" if ";" in text.splitlines()[0] else ","
    frame = pd.read_csv(io.StringIO(text), sep=separator, dtype=str, keep_default_na=False)
    frame.columns = [c.strip() for c in frame.columns]
    missing = {"image_id", "split"} - set(frame.columns)
    if missing:
        raise InvalidInputError(path, f"missing column(s) {sorted(missing)}; found {list(frame.columns)}")
    frame["image_id"] = frame["image_id"].str.strip()
    if frame["image_id"].duplicated().any():
        raise InvalidInputError(
            path, f"image_id {frame.loc[frame['image_id'].duplicated(), 'image_id'].iloc[0]!r} listed twice"
        )
    return frame.set_index("image_id", drop=False)


def parse_classes(spec: str) -> list[tuple[str, list[str]]]:
    """``"kidney=kidney_left+kidney_right,liver"`` -> ``[("kidney", [left, right]), ("liver", ["liver"])]``."""
    groups = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, sources = part.partition("=")
        members = [s.strip() for s in (sources or name).split("+")]
        for token in [name.strip(), *members]:
            if not _CLASS.match(token):
                raise ConfigError(f"bad class name {token!r} in classes={spec!r}")
        groups.append((name.strip(), members))
    if not groups:
        raise ConfigError(f"classes={spec!r} names no class")
    if len(groups) > 255:
        raise ConfigError(f"{len(groups)} classes do not fit a uint8 label map")
    return groups


@register_adapter
class TotalSegmentatorAdapter(VolumeAdapter):
    """TotalSegmentator v1/v2 (see the module docstring)."""

    name = "totalsegmentator"

    def discover(self) -> list[WorkItem]:
        meta = read_meta(self.root)
        folders = {p.name for p in self.root.iterdir() if p.is_dir() and _CASE.match(p.name) and not is_junk(p)}
        groups = self._class_groups(list(meta.index), folders)
        items = []
        for case in sorted(set(meta.index) | folders):
            info: dict[str, Any] = {"groups": groups, "error": None, "split": None}
            if case not in folders:
                info["error"] = "listed in meta.csv but the case folder is missing"
            elif case not in meta.index:
                info["error"] = "case folder not listed in meta.csv (no split)"
            else:
                row = meta.loc[case]
                try:
                    info["split"] = normalize_split(row["split"], source=case)
                except InvalidInputError as err:
                    info["error"] = err.reason
                info |= {k: row.get(k, "") for k in ("institute", "study_type")}
            items.append(WorkItem(key=case, path=str(self.root / case / "ct.nii.gz"), info=info))
        if not items:
            raise InvalidInputError(self.root, "no sXXXX case folders and no meta.csv rows")
        return items

    def _class_groups(self, listed: list[str], folders: set[str]) -> list[tuple[str, list[str]]]:
        if self.options.get("classes"):
            return parse_classes(str(self.options["classes"]))
        for case in [c for c in listed if c in folders] + sorted(folders):
            seg_dir = self.root / case / "segmentations"
            names = sorted(nifti_stem(p) for p in seg_dir.glob("*.nii*") if not is_junk(p)) if seg_dir.is_dir() else []
            if names:
                return [(name, [name]) for name in names]
        raise InvalidInputError(self.root, "no case has a segmentations/ folder with class masks")

    def process(self, item: WorkItem) -> list[dict[str, Any]]:
        info = item.info
        header = self.open_listed(item)
        label_map = np.zeros(header.shape[:3], dtype=np.uint8)
        for value, (_, members) in enumerate(info["groups"], start=1):
            for member in members:
                mask_path = Path(item.path).parent / "segmentations" / f"{member}.nii.gz"
                with naming(f"mask {member}", mask_path):
                    mask = read_header(mask_path)
                    if not same_grid(header, mask):
                        raise InvalidInputError(mask_path, f"mask grid {mask.shape} does not match the CT grid")
                    values = load_values(mask_path)[0]
                    if not np.isin(values, (0.0, 1.0)).all():
                        raise InvalidInputError(mask_path, "mask is not binary (values other than 0 and 1)")
                label_map[values > 0.5] = value
        out = self.out_dir / LABEL_FOLDER / f"{item.key}.nii.gz"
        out.parent.mkdir(parents=True, exist_ok=True)
        label_image = nib.Nifti1Image(label_map, header.affine)
        label_image.set_qform(header.affine, code=1)
        label_image.set_sform(header.affine, code=1)
        nib.save(label_image, out)
        return [
            volume_row(
                dataset="totalsegmentator",
                image=item.path,
                label=out,
                image_id=item.key,
                subject_id=item.key,
                split=info["split"],
                modality="CT",
                channel_names=["CT"],
                label_names={0: "background", **{i: name for i, (name, _) in enumerate(info["groups"], start=1)}},
                header=header,
                institute=info.get("institute", ""),
                study_type=info.get("study_type", ""),
            )
        ]
