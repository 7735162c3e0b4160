"""Synthetic MIMIC-CXR(-JPG): the official on-disk layout, with findings that are visible and agree with the text.

:func:`generate_mimic_cxr` writes, under ``root``::

    files/pXX/p<subject_id>/s<study_id>/<dicom_id>.jpg    (jpg=True; .dcm with dicom=True)
    files/pXX/p<subject_id>/s<study_id>.txt                (free-text report, as unzipped from mimic-cxr-reports.zip)
    mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv   (.csv.gz with gzip_csv=True, as in the release)
    cxr-record-list.csv.gz, cxr-study-list.csv.gz          (dicom=True: the DICOM release's indexes)
    synthetic_truth.csv                                     (generator extra: where each finding was drawn)

Each study draws a few findings from subject-level risk factors (heart failure, infection, trauma, smoking, ICU
stay), renders them into every image of the study (:mod:`._render`), writes a MIMIC-style report from sentences that
carry their CheXpert codes (:mod:`._cxr_text`) and derives the labels the way the official pipeline does: from the
impression, else the findings, else the last paragraph. Uncertain mentions are drawn faint or not at all.
``synthetic_truth.csv`` holds one row per drawn region (bilateral findings have two, ``region`` says which) with its
box in ORIGINAL (DICOM, metadata ``Rows``/``Columns``) pixels, x = column, y = row.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from medcl.data.synthetic import _cxr_text as text
from medcl.data.synthetic._render import FRONTAL_VIEWS, SIDE_SIGN, Finding, render
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
PROCEDURES = {"PA": "CHEST (PA AND LAT)", "AP": "CHEST (PORTABLE AP)"}
FINAL_REPORT = " " * 33 + "FINAL REPORT"
RULE = " " + "_" * 78

# Per-study probability of each finding: base + sum of risk-factor increments (subject-level, so correlated).
_RISK_PRIOR = {"chf": 0.3, "infection": 0.35, "trauma": 0.1, "lesion": 0.15, "icu": 0.2}
_FINDING_RATES: dict[str, tuple[float, dict[str, float]]] = {
    "Cardiomegaly": (0.08, {"chf": 0.35}),
    "Pleural Effusion": (0.08, {"chf": 0.3, "icu": 0.1}),
    "Edema": (0.03, {"chf": 0.25}),
    "Consolidation": (0.07, {"infection": 0.28, "icu": 0.08}),
    "Atelectasis": (0.08, {"icu": 0.2}),
    "Lung Lesion": (0.04, {"lesion": 0.45}),
    "Pneumothorax": (0.03, {"trauma": 0.35, "icu": 0.05}),
    "Support Devices": (0.04, {"icu": 0.65}),
    "Enlarged Cardiomediastinum": (0.04, {"chf": 0.05}),
}
# Anatomical order of sentences in the findings section (tubes first, bones last), as radiologists dictate.
_SENTENCE_ORDER = (
    "Support Devices",
    "Consolidation",
    "Pneumonia",
    "Edema",
    "Lung Lesion",
    "Atelectasis",
    "Pleural Effusion",
    "Pneumothorax",
    "Cardiomegaly",
    "Enlarged Cardiomediastinum",
    "Fracture",
)
_HEDGEABLE = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Lung Lesion",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Atelectasis",
)


@dataclass(frozen=True)
class _ImagePlan:
    dicom_id: str
    view: str
    orientation: str
    monochrome1: bool


@dataclass(frozen=True)
class _StudyPlan:
    subject_id: int
    study_id: int
    split: str
    date: int
    time: float
    images: tuple[_ImagePlan, ...]
    drawn: tuple[Finding, ...]
    anatomy: dict[str, float]
    report: str
    labels: dict[str, float]

    @property
    def folder(self) -> Path:
        return Path("files") / f"p{str(self.subject_id)[:2]}" / f"p{self.subject_id}"

    @property
    def procedure(self) -> str:
        return PROCEDURES["AP" if any(im.view == "AP" for im in self.images) else "PA"]


@dataclass(frozen=True)
class _Output:
    root: Path
    image_size: tuple[int, int]
    original_size: tuple[int, int]
    jpg: bool
    dicom: bool
    reports: bool
    seed: int


@dataclass
class _Subject:
    subject_id: int
    split: str
    risks: dict[str, bool]
    anatomy: dict[str, float]
    chronic: dict[str, Finding] = field(default_factory=dict)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = (int(s) for s in size)
    return height, width


def _unique_ids(rng: np.random.Generator, count: int, low: int, high: int) -> list[int]:
    return (
        [int(x) for x in rng.choice(np.arange(low, high, dtype=np.int64), size=count, replace=False)] if count else []
    )


def _dicom_id(rng: np.random.Generator) -> str:
    digits = rng.bytes(20).hex()
    return "-".join(digits[i : i + 8] for i in range(0, 40, 8))


def _split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Subjects per split; every split with a positive fraction gets at least one subject when there are enough."""
    fractions = np.asarray(fractions, dtype=float) / np.sum(fractions)
    counts = [round(f * n) for f in fractions[1:]]
    counts = [max(1, c) if f > 0 and n >= len(fractions) else c for c, f in zip(counts, fractions[1:])]
    return [n - sum(counts), *counts]


def _sample_finding(name: str, rng: np.random.Generator, severity: float | None = None) -> Finding:
    severity = float(rng.uniform(0.2, 1.0)) if severity is None else severity
    if name in ("Cardiomegaly", "Edema", "Enlarged Cardiomediastinum"):
        return Finding(name, severity)
    if name == "Support Devices":
        kinds = tuple(k for k, p in (("ett", 0.7), ("ngt", 0.5), ("cvc", 0.6)) if rng.random() < p) or ("cvc",)
        return Finding(name, 1.0, (), {"kinds": kinds})
    if name == "Pleural Effusion":
        sides = (("right",), ("left",), ("right", "left"))[int(rng.choice(3, p=[0.3, 0.3, 0.4]))]
        return Finding(name, severity, sides)
    side = ("right", "left")[int(rng.integers(2))]
    sign, cx, rx = SIDE_SIGN[side], (0.31 if side == "right" else 0.69), 0.16
    if name == "Lung Lesion":
        centre = (cx + sign * rng.uniform(-0.2, 0.6) * rx, rng.uniform(0.22, 0.5))
        return Finding(name, severity, (side,), {"centre": centre, "phase": rng.uniform(0, 6.3), "depth": rng.random()})
    if name == "Consolidation":
        centre = (cx + sign * rng.uniform(0.0, 0.5) * rx, rng.uniform(0.36, 0.62))
        pneumonia = (1.0, -1.0, None)[int(rng.choice(3, p=[0.45, 0.3, 0.25]))]
        return Finding(name, severity, (side,), {"centre": centre, "depth": rng.random(), "pneumonia": pneumonia})
    if name == "Atelectasis":
        return Finding(name, severity, (side,), {"offset": rng.uniform(-0.02, 0.06), "tilt": rng.uniform(0.0, 0.2)})
    return Finding(name, severity, (side,))  # Pneumothorax


def _new_subject(subject_id: int, split: str, rng: np.random.Generator) -> _Subject:
    risks = {k: bool(rng.random() < p) for k, p in _RISK_PRIOR.items()}
    anatomy = {
        "heart_ratio": float(rng.uniform(0.40, 0.48)),
        "inspiration": float(rng.normal(0.0, 0.015)),
        "body_width": float(rng.uniform(0.43, 0.48)),
    }
    subject = _Subject(subject_id, split, risks, anatomy)
    # Chronic findings persist across a patient's studies (same nodule, same pacemaker, same big heart).
    if risks["chf"] and rng.random() < 0.5:
        subject.chronic["Cardiomegaly"] = _sample_finding("Cardiomegaly", rng)
    if risks["lesion"] and rng.random() < 0.5:
        subject.chronic["Lung Lesion"] = _sample_finding("Lung Lesion", rng)
    if risks["chf"] and rng.random() < 0.15:
        subject.chronic["Support Devices"] = Finding("Support Devices", 1.0, (), {"kinds": ("pacemaker",)})
    return subject


def _study_findings(subject: _Subject, rng: np.random.Generator) -> tuple[list[Finding], list[Finding]]:
    """(asserted findings, hedged findings) of one study."""
    asserted, hedged = [], []
    for name, (base, increments) in _FINDING_RATES.items():
        if name in subject.chronic and rng.random() < 0.9:
            finding = subject.chronic[name]
        elif rng.random() < base + sum(v for k, v in increments.items() if subject.risks[k]):
            finding = _sample_finding(name, rng)
        else:
            continue
        if name in _HEDGEABLE and rng.random() < 0.15:
            hedged.append(finding)
        else:
            asserted.append(finding)
    devices = [f for f in asserted if f.name == "Support Devices"]
    if (
        len(devices) == 1
        and "Support Devices" in subject.chronic
        and devices[0] is not subject.chronic["Support Devices"]
    ):
        kinds = devices[0].params["kinds"] + ("pacemaker",)
        asserted[asserted.index(devices[0])] = Finding("Support Devices", 1.0, (), {"kinds": kinds})
    return asserted, hedged


def _views(icu: bool, rng: np.random.Generator) -> list[str]:
    if icu and rng.random() < 0.7:
        return ["AP"]
    lateral = "LATERAL" if rng.random() < 0.85 else "LL"
    options = (["PA", lateral], ["PA"], ["AP"], ["AP", lateral], ["PA", "PA", lateral])
    return list(options[int(rng.choice(len(options), p=[0.65, 0.1, 0.15, 0.05, 0.05]))])


def _indication(findings: list[Finding], as_history: bool, rng: np.random.Generator) -> str:
    """Reason for exam (or clinical history); its context follows one of the findings in 65% of studies with one."""
    contexts = [text.FINDING_CONTEXT[f.name] for f in findings if f.name in text.FINDING_CONTEXT]
    if contexts and rng.random() < 0.65:
        context = contexts[int(rng.integers(len(contexts)))]
    else:
        keys = list(text.INDICATIONS)
        context = keys[int(rng.integers(len(keys)))]
    reason = text._pick(rng, text.INDICATIONS[context])
    question = text._pick(rng, text.QUESTIONS[context if rng.random() < 0.7 else "generic"])
    female = bool(rng.random() < 0.5)
    if as_history:
        patient = f"___-year-old {'female' if female else 'male'}"
        return f"{patient} with {text.HISTORIES[context]}. {reason.capitalize()}. {question.capitalize()}."
    form = int(rng.integers(3))
    if form == 0:
        return f"___ year old {'woman' if female else 'man'} with {reason}  // {question}"
    if form == 1:
        return f"___{'F' if female else 'M'} with {reason}, {question}."
    return f"___-year-old {'female' if female else 'male'} with {reason}. {question.capitalize()}."


def _compose_report(
    asserted: list[Finding], hedged: list[Finding], views: list[str], first_study: bool, rng: np.random.Generator
) -> tuple[str, dict[str, float]]:
    """Report text and the CheXpert codes of its labelled section."""
    findings_section: list[tuple[int, text.Mention]] = []
    impression: list[text.Mention] = []
    order = {name: i for i, name in enumerate(_SENTENCE_ORDER)}
    for finding in asserted:
        body, summary = text.positive_mentions(finding, rng)
        findings_section += [(order[finding.name], m) for m in body]
        impression += summary
    for finding in hedged:
        mention = text.uncertain_mention(finding, rng)
        findings_section.append((order[finding.name], mention))
        impression.append(mention)
    normal = not impression
    mentioned = {label for m in impression for label in m.labels} | {f.name for f in asserted + hedged}
    for label, options in text.NEGATIONS.items():
        safe = [o for o in options if not (set(o[1]) & mentioned)]
        if not safe:
            continue
        if rng.random() < 0.4:
            sentence, labels = safe[int(rng.integers(len(safe)))]
            findings_section.append((order[label], text.Mention(sentence, dict(labels))))
            mentioned |= set(labels)
            if rng.random() < 0.25:
                impression.append(text.Mention(sentence, dict(labels)))
    if normal:
        findings_section.insert(0, (order["Consolidation"] - 1, text.Mention(text._pick(rng, text.NORMAL_LUNGS))))
        impression.insert(0, text.Mention(text._pick(rng, text.NORMAL_IMPRESSIONS)))
    elif not any(m.labels.get("No Finding") for m in impression) and rng.random() < 0.2 and not hedged:
        impression.append(text.Mention("No other acute cardiopulmonary process."))
    findings_section.sort(key=lambda pair: pair[0])
    findings_mentions = [m for _, m in findings_section]

    structure = str(rng.choice(["full", "impression_only", "no_sections", "findings_only"], p=[0.8, 0.13, 0.04, 0.03]))
    lines = []
    if rng.random() < 0.06:  # an addendum on top, separated by a rule, as in the release
        note = text._pick(
            rng,
            [
                "Findings were discussed with Dr. ___ by Dr. ___ by telephone at ___ on ___.",
                "Comparison was made with the prior chest CT of ___, which confirms the findings.",
            ],
        )
        lines += [" " * 33 + "FINAL ADDENDUM", *text.wrap_section("ADDENDUM", note, inline=True), " ", RULE]
    lines += [
        FINAL_REPORT,
        *text.wrap_section("EXAMINATION", PROCEDURES[views[0] if views[0] in PROCEDURES else "PA"], inline=True),
        " ",
    ]
    header = str(
        rng.choice(["INDICATION", "HISTORY", "CLINICAL HISTORY", "REASON FOR EXAM"], p=[0.72, 0.12, 0.08, 0.08])
    )
    indication = _indication(asserted + hedged, header in ("HISTORY", "CLINICAL HISTORY"), rng)
    lines += [*text.wrap_section(header, indication, inline=True), " "]
    technique = (
        "Chest PA and lateral"
        if "PA" in views and len(views) > 1
        else "Portable AP view of the chest"
        if views == ["AP"]
        else f"Chest {' and '.join(v for v in views if v in FRONTAL_VIEWS)}"
    )
    lines += [*text.wrap_section("TECHNIQUE", technique, inline=True), " "]
    comparison = "None." if first_study and rng.random() < 0.6 else "___"
    lines += [*text.wrap_section("COMPARISON", comparison, inline=True), " "]
    body = " ".join(m.text for m in findings_mentions)
    summary = " ".join(m.text for m in impression)
    impression_header = "IMPRESSION" if rng.random() < 0.96 else "CONCLUSION"
    if structure == "full":
        lines += [*text.wrap_section("FINDINGS", body, inline=False), " "]
        lines += text.wrap_section(impression_header, summary, inline=False)
        labelled = impression
    elif structure == "impression_only":
        # Impression-only reports often describe everything there: the findings sentences, then the summary.
        extra = [m for m in impression if m.text not in body]
        described = rng.random() < 0.5
        combined = " ".join([body, *(m.text for m in extra)]) if described else summary
        lines += text.wrap_section(impression_header, combined, inline=False)
        # Labels come from what the labelled section actually says (negations in the body included).
        labelled = findings_mentions + extra if described else impression
    elif structure == "findings_only":
        lines += text.wrap_section("FINDINGS", body, inline=False)
        labelled = findings_mentions
    else:  # no FINDINGS/IMPRESSION header: the text is the last paragraph after the comparison
        lines += text.wrap_section(None, summary, inline=False)
        labelled = impression
    if (any(f.name == "Pneumothorax" for f in asserted) and rng.random() < 0.5) or rng.random() < 0.03:
        note = (
            "The findings were discussed with ___ by ___ on the telephone on ___ at ___, ___ minutes after discovery."
        )
        lines += [" ", *text.wrap_section("NOTIFICATION", note, inline=True)]
    if any(f.name == "Lung Lesion" for f in asserted) and rng.random() < 0.4:
        lines += [" ", *text.wrap_section("RECOMMENDATION(S)", "Chest CT for further evaluation.", inline=True)]
    return "\n".join(lines) + "\n", text.aggregate_labels(labelled)


def _study_time(rng: np.random.Generator) -> float:
    """HHMMSS.fff as a float, like the metadata's StudyTime (213014.531)."""
    hours, minutes, seconds = int(rng.integers(24)), int(rng.integers(60)), round(float(rng.uniform(0, 59.999)), 3)
    return round(hours * 10000 + minutes * 100 + seconds, 3)


def _plan(
    n_subjects: int, seed: int, split_fractions: Sequence[float], monochrome1_fraction: float
) -> list[_StudyPlan]:
    rng = np.random.default_rng(seed)
    subject_ids = sorted(_unique_ids(rng, n_subjects, 10_000_000, 20_000_000))
    n_studies = 1 + rng.choice(4, size=n_subjects, p=[0.55, 0.25, 0.12, 0.08])
    study_ids = iter(_unique_ids(rng, int(n_studies.sum()), 50_000_000, 60_000_000))
    order = rng.permutation(n_subjects)
    splits = np.empty(n_subjects, dtype=object)
    start = 0
    for name, count in zip(("train", "validate", "test"), _split_counts(n_subjects, split_fractions)):
        splits[order[start : start + count]] = name
        start += count

    plans = []
    for subject_id, split, count in zip(subject_ids, splits, n_studies):
        subject = _new_subject(subject_id, str(split), rng)
        day = int(rng.integers(0, 365 * 80))  # shifted dates, as in MIMIC (years 2100-2200)
        for index in range(int(count)):
            asserted, hedged = _study_findings(subject, rng)
            views = _views(subject.risks["icu"] or any(f.name == "Support Devices" for f in asserted), rng)
            report, labels = _compose_report(asserted, hedged, views, index == 0, rng)
            drawn = list(asserted)
            # Hedged findings are faint when present at all; hedged consolidation keeps its pneumonia wording.
            drawn += [
                Finding(f.name, float(rng.uniform(0.1, 0.35)), f.sides, f.params) for f in hedged if rng.random() < 0.7
            ]
            if labels.get("Pneumonia") in (1.0, -1.0) and any(f.name == "Consolidation" for f in drawn):
                drawn.append(Finding("Pneumonia", 1.0))
            date = np.datetime64("2100-01-01") + np.timedelta64(day, "D")
            images = tuple(
                _ImagePlan(
                    _dicom_id(rng),
                    view,
                    "Erect" if view != "AP" or rng.random() < 0.4 else "Recumbent",
                    bool(rng.random() < monochrome1_fraction),
                )
                for view in views
            )
            plans.append(_StudyPlan(
                subject_id, next(study_ids), subject.split, int(str(date).replace("-", "")),
                _study_time(rng), images, tuple(drawn), subject.anatomy, report, labels,
            ))  # fmt: skip
            day += int(rng.integers(1, 400))
    return plans


def _boxes(plan: _StudyPlan, image: _ImagePlan, regions, out: _Output) -> list[dict[str, Any]]:
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


def _uid(seed: int, *parts: object) -> str:
    """Deterministic DICOM UID (2.25 + decimal of a hash): reproducible files, no real identifiers."""
    digest = hashlib.sha256("/".join(map(str, (seed, *parts))).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def _write_dicom(path: Path, pixels: np.ndarray, plan: _StudyPlan, image: _ImagePlan, seed: int) -> None:
    """A DX 'for presentation' object like MIMIC-CXR's: 12-bit unsigned, uncompressed, pseudonymous ids only."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    values = np.round(pixels * 4095).astype(np.uint16)
    if image.monochrome1:  # some MIMIC DICOMs store inverted grey levels: readers must flip them
        values = 4095 - values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta.MediaStorageSOPInstanceUID = _uid(seed, image.dicom_id)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(seed, plan.study_id), _uid(seed, image.dicom_id, "series")
    ds.PatientID, ds.PatientName = str(plan.subject_id), ""  # the dataset pseudonym; no names or birth dates
    ds.StudyID, ds.StudyDate, ds.StudyTime = str(plan.study_id), str(plan.date), f"{plan.time:013.6f}"
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "DX", image.view, "CHEST"
    ds.PerformedProcedureStepDescription = plan.procedure
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1" if image.monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = values.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _write_study(plan: _StudyPlan, out: _Output) -> list[dict[str, Any]]:
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
            Image.fromarray(np.round(rendered.image * 255).astype(np.uint8), mode="L").save(
                folder / f"{image.dicom_id}.jpg", quality=95
            )
        if out.dicom:
            pixels = rendered.image
            if out.original_size != out.image_size:
                resized = Image.fromarray(pixels, mode="F").resize(out.original_size[::-1], Image.Resampling.BILINEAR)
                pixels = np.clip(np.asarray(resized), 0.0, 1.0)
            _write_dicom(folder / f"{image.dicom_id}.dcm", pixels, plan, image, out.seed)
        rows += _boxes(plan, image, rendered.regions, out)
    return rows


def _write_studies(plans: list[_StudyPlan], out: _Output, workers: int) -> list[dict[str, Any]]:
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
    plans = _plan(n_subjects, seed, split_fractions, monochrome1_fraction)
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
