"""Synthetic MIMIC-CXR(-JPG): the official on-disk layout, with findings that are visible and agree with the text.

:func:`generate_mimic_cxr` writes, under ``root``::

    files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg    (jpg=True; .dcm with dicom=True)
    files/pXX/p<subject_id>/s<study_id>.txt                (free-text report, as unzipped from mimic-cxr-reports.zip)
    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv   (.csv.gz with gzip_csv=True, as in the release)
    cxr-record-list.csv.gz, cxr-study-list.csv.gz          (dicom=True: the DICOM release's indexes)
    synthetic_truth.csv                                     (generator extra: where each finding was drawn)

The studies (findings, views, reports, labels) are planned by :mod:`.mimic_cxr_studies`; here every image of a study
is rendered with the study's findings (:mod:`.radiograph`) and written. ``synthetic_truth.csv`` holds one row per
drawn region (bilateral findings have two, ``region`` says which) with its box in ORIGINAL (DICOM, metadata
``Rows``/``Columns``) pixels, x = column, y = row.
"""

from __future__ import annotations

import gzip
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from medcl.data.synthetic.dicom_writer import uid, write_radiograph
from medcl.data.synthetic.mimic_cxr_studies import ImagePlan, StudyPlan, plan_studies
from medcl.data.synthetic.radiograph import FRONTAL_VIEWS, render, to_uint8
from medcl.data.text.labels import CHEXPERT_LABELS

METADATA_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows", "Columns",
    "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)  # fmt: skip
TRUTH_COLUMNS = (
    "dicom_id", "subject_id", "study_id", "finding", "x0", "y0", "x1", "y1", "image_width", "image_height",
    "original_width", "original_height", "region",
)  # fmt: skip
VIEW_MEANINGS = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral", "LL": "left lateral"}


@dataclass(frozen=True)
class _Output:
    root: Path
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    jpg: bool
    dicom: bool
    reports: bool
    seed: int


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def _boxes(plan: StudyPlan, image: ImagePlan, regions, out: _Output) -> list[dict[str, Any]]:
    (height, width), (orig_h, orig_w) = out.image_size, out.original_size
    rows = []
    for name, region, mask in regions:
        ys, xs = np.nonzero(mask)
        rows.append({
            "dicom_id": image.dicom_id, "subject_id": plan.subject_id, "study_id": plan.study_id, "finding": name,
            "x0": int(np.floor(xs.min() * orig_w / width)), "y0": int(np.floor(ys.min() * orig_h / height)),
            "x1": int(np.ceil((xs.max() + 1) * orig_w / width)), "y1": int(np.ceil((ys.max() + 1) * orig_h / height)),
            "image_width": width, "image_height": height, "original_width": orig_w, "original_height": orig_h,
            "region": region,
        })  # fmt: skip
    return rows


def _write_dicom(path: Path, pixels: np.ndarray, plan: StudyPlan, image: ImagePlan, seed: int) -> None:
    """A DX 'for presentation' object like MIMIC-CXR's: 12-bit unsigned, uncompressed, pseudonymous ids only."""
    values = np.round(pixels * 4095).astype(np.uint16)
    if image.monochrome1:  # some MIMIC DICOMs store inverted grey levels: readers must flip them
        values = 4095 - values
    write_radiograph(
        path,
        values,
        modality="DX",
        bits_stored=12,
        monochrome1=image.monochrome1,
        sop_instance_uid=uid("mimic-cxr", seed, image.dicom_id),
        study_uid=uid("mimic-cxr", seed, plan.study_id),
        series_uid=uid("mimic-cxr", seed, image.dicom_id, "series"),
        attributes={
            "PatientID": str(plan.subject_id),  # the dataset pseudonym; no names or birth dates
            "PatientName": "",
            "StudyID": str(plan.study_id),
            "StudyDate": str(plan.date),
            "StudyTime": f"{plan.time:013.6f}",
            "ViewPosition": image.view,
            "PerformedProcedureStepDescription": plan.procedure,
            "WindowCenter": 2048,
            "WindowWidth": 4096,
        },
    )


def _write_study(plan: StudyPlan, out: _Output) -> list[dict[str, Any]]:
    """Render and write one study's images (and report); returns its truth rows. Runs in worker processes."""
    folder = out.root / plan.folder / f"s{plan.study_id}"
    folder.mkdir(parents=True, exist_ok=True)
    if out.reports:
        (out.root / plan.folder / f"s{plan.study_id}.txt").write_text(plan.report)
    rows: list[dict[str, Any]] = []
    for index, image in enumerate(plan.images):
        rng = np.random.default_rng([out.seed, plan.study_id, index])
        rendered = render(list(plan.drawn), view=image.view, size=out.image_size, rng=rng, anatomy=plan.anatomy)
        if out.jpg:
            Image.fromarray(to_uint8(rendered.image), mode="L").save(folder / f"{image.dicom_id}.jpg", quality=95)
        if out.dicom:
            pixels = rendered.image
            if out.original_size != out.image_size:
                resized = Image.fromarray(pixels, mode="F").resize(out.original_size[::-1], Image.Resampling.BILINEAR)
                pixels = np.clip(np.asarray(resized), 0.0, 1.0)
            _write_dicom(folder / f"{image.dicom_id}.dcm", pixels, plan, image, out.seed)
        rows += _boxes(plan, image, rendered.regions, out)
    return rows


def _write_studies(plans: list[StudyPlan], out: _Output, workers: int) -> list[dict[str, Any]]:
    progress = {"total": len(plans), "desc": "synthesise mimic-cxr", "unit": "study", "disable": len(plans) < 50}
    if workers <= 1 or len(plans) < 8:
        return [row for plan in tqdm(plans, **progress) for row in _write_study(plan, out)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        chunks = pool.map(_write_study, plans, [out] * len(plans), chunksize=max(1, len(plans) // (workers * 8)))
        return [row for rows in tqdm(chunks, **progress) for row in rows]


def _write_csv(frame: pd.DataFrame, path: Path, gzip_csv: bool) -> Path:
    if gzip_csv:
        path = path.with_name(path.name + ".gz")
        # mtime=0 keeps the archive byte-identical across runs (determinism by seed).
        with gzip.GzipFile(path, "wb", mtime=0) as handle:
            handle.write(frame.to_csv(index=False).encode())
    else:
        frame.to_csv(path, index=False)
    return path


def _negbio(chexpert: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """NegBio disagrees with CheXpert on a few mentions (mostly uncertainty); mimic that deterministically."""
    negbio = chexpert.copy()
    for label in CHEXPERT_LABELS:
        if label == "No Finding":
            continue
        column = negbio[label].to_numpy(dtype=float, copy=True)
        flip = rng.random(len(column)) < 0.05
        column[flip & (column == -1.0)] = 1.0
        column[flip & (column == 0.0)] = np.nan
        negbio[label] = column
    return negbio


def generate_mimic_cxr(
    root: str | os.PathLike[str],
    *,
    n_subjects: int = 200,
    seed: int = 0,
    image_size: int | tuple[int, int] = 256,
    original_size: int | tuple[int, int] | None = None,
    jpg: bool = True,
    dicom: bool = False,
    reports: bool = True,
    gzip_csv: bool = False,
    split_fractions: Sequence[float] = (0.9, 0.05, 0.05),
    monochrome1_fraction: float = 0.1,
    bad_files: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    """Write a synthetic MIMIC-CXR tree under ``root`` and return summary counts.

    Args:
        n_subjects: patients; each has 1-4 studies (mean ~1.7), each study 1-3 images.
        image_size: stored JPG size, int or (height, width).
        original_size: the DICOM size recorded in metadata ``Rows``/``Columns`` (and used for ``.dcm`` files and
            truth boxes); defaults to ``image_size``. Gaze coordinates live in this space.
        jpg / dicom: write the MIMIC-CXR-JPG images and/or the MIMIC-CXR DICOM objects.
        reports: write ``s<study>.txt`` reports beside the study folders (False mimics a JPG-only download).
        gzip_csv: write the index CSVs as ``.csv.gz`` (as distributed by PhysioNet).
        split_fractions: train/validate/test fractions of subjects (patient-disjoint).
        monochrome1_fraction: share of DICOMs stored inverted (MONOCHROME1), as some real ones are.
        bad_files: afterwards, corrupt a few files with :func:`plant_bad_files` (for quarantine tests).
        workers: rendering processes (default: up to 2 CPUs).
    """
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    image_size = _pair(image_size)
    original = image_size if original_size is None else _pair(original_size)
    plans = plan_studies(n_subjects, seed, split_fractions, monochrome1_fraction)
    out = _Output(root, image_size, original, jpg, dicom, reports, seed)
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    truth = _write_studies(plans, out, workers)

    metadata = pd.DataFrame(
        [
            (im.dicom_id, p.subject_id, p.study_id, p.procedure, im.view, original[0], original[1], p.date, p.time,
             p.procedure, VIEW_MEANINGS.get(im.view, ""), im.orientation)
            for p in plans for im in p.images
        ],
        columns=list(METADATA_COLUMNS),
    )  # fmt: skip
    split = pd.DataFrame(
        [(im.dicom_id, p.study_id, p.subject_id, p.split) for p in plans for im in p.images],
        columns=["dicom_id", "study_id", "subject_id", "split"],
    )
    chexpert = pd.DataFrame(
        [{"subject_id": p.subject_id, "study_id": p.study_id, **{k: p.labels.get(k, np.nan) for k in CHEXPERT_LABELS}}
         for p in plans],
        columns=["subject_id", "study_id", *CHEXPERT_LABELS],
    )  # fmt: skip
    written = {
        "metadata": _write_csv(metadata, root / "mimic-cxr-2.0.0-metadata.csv", gzip_csv),
        "split": _write_csv(split, root / "mimic-cxr-2.0.0-split.csv", gzip_csv),
        "chexpert": _write_csv(chexpert, root / "mimic-cxr-2.0.0-chexpert.csv", gzip_csv),
        "negbio": _write_csv(_negbio(chexpert, np.random.default_rng(seed + 1)), root / "mimic-cxr-2.0.0-negbio.csv",
                             gzip_csv),
    }  # fmt: skip
    if dicom:  # the DICOM release's own indexes (always gzipped there)
        records = [
            (p.subject_id, p.study_id, im.dicom_id, (p.folder / f"s{p.study_id}" / f"{im.dicom_id}.dcm").as_posix())
            for p in plans
            for im in p.images
        ]
        written["record_list"] = _write_csv(
            pd.DataFrame(records, columns=["subject_id", "study_id", "dicom_id", "path"]),
            root / "cxr-record-list.csv",
            True,
        )
        studies = [(p.subject_id, p.study_id, (p.folder / f"s{p.study_id}").as_posix()) for p in plans]
        written["study_list"] = _write_csv(
            pd.DataFrame(studies, columns=["subject_id", "study_id", "path"]), root / "cxr-study-list.csv", True
        )
    pd.DataFrame(truth, columns=list(TRUTH_COLUMNS)).to_csv(root / "synthetic_truth.csv", index=False)

    summary: dict[str, Any] = {
        "root": str(root),
        "subjects": n_subjects,
        "studies": len(plans),
        "images": len(metadata),
        "frontal_images": int(metadata["ViewPosition"].isin(FRONTAL_VIEWS).sum()),
        "split_subjects": {k: int(v) for k, v in split.drop_duplicates("subject_id")["split"].value_counts().items()},
        "positives": {k: int((chexpert[k] == 1.0).sum()) for k in CHEXPERT_LABELS},
        "uncertain": {k: int((chexpert[k] == -1.0).sum()) for k in CHEXPERT_LABELS},
        "truth_regions": len(truth),
        "files": {k: str(v) for k, v in written.items()},
    }
    if bad_files:
        summary["bad_files"] = plant_bad_files(root, seed=seed)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    return summary


def _read_index(root: Path, stem: str) -> pd.DataFrame:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (root / name).is_file():
            return pd.read_csv(root / name, dtype={"dicom_id": str})
    raise FileNotFoundError(root / f"{stem}.csv")


def plant_bad_files(root: str | os.PathLike[str], seed: int = 0) -> dict[str, list[str]]:
    """Break a few items the way real downloads break; returns the affected dicom_ids per kind.

    ``truncated`` (first third of the file), ``empty`` (0 bytes), ``not_an_image`` (an HTML error page saved under
    the image name), ``missing`` (metadata row, no file) in every image tree present, and ``missing_report`` (a
    study's report deleted: all its images). Items are picked from distinct studies.
    """
    root = Path(root)
    metadata = _read_index(root, "mimic-cxr-2.0.0-metadata")
    rng = np.random.default_rng(seed + 7)
    studies = metadata["study_id"].drop_duplicates().to_numpy()
    chosen = rng.choice(studies, size=min(5, len(studies)), replace=False)
    kinds = ("truncated", "empty", "not_an_image", "missing", "missing_report")
    planted: dict[str, list[str]] = {}
    for kind, study_id in zip(kinds, chosen):
        rows = metadata[metadata["study_id"] == study_id]
        first = rows.iloc[0]
        folder = root / "files" / f"p{str(first.subject_id)[:2]}" / f"p{first.subject_id}"
        if kind == "missing_report":
            (folder / f"s{study_id}.txt").unlink(missing_ok=True)
            planted[kind] = rows["dicom_id"].tolist()
            continue
        for path in (folder / f"s{study_id}" / f"{first.dicom_id}{ext}" for ext in (".jpg", ".dcm")):
            if not path.exists():
                continue
            if kind == "truncated":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 3])
            elif kind == "empty":
                path.write_bytes(b"")
            elif kind == "not_an_image":
                path.write_text("<html><body><h1>403 Forbidden</h1>Please log in to PhysioNet.</body></html>\n")
            else:
                path.unlink()
        planted[kind] = [first.dicom_id]
    return planted
