"""Simulated MIMIC-CXR studies: patients, their findings, views, dates and reports, planned before any pixel.

Each subject gets risk factors (heart failure, infection, trauma, smoking, ICU stay) and per-subject anatomy; each of
their studies draws a few findings from those (chronic ones persist across studies), picks views, and dictates a
MIMIC-style report from sentences that carry their CheXpert codes (:mod:`.report_text`). The labels are derived the
way the official pipeline does: from the impression, else the findings, else the last paragraph. Uncertain mentions
are drawn faint or not at all. :func:`plan_studies` is deterministic by seed; :mod:`.mimic_cxr` renders and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.data.synthetic import report_text as text
from medcl.data.synthetic.radiograph import FRONTAL_VIEWS, SIDE_SIGN, Finding

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
class ImagePlan:
    """One image of a study: its id, ViewPosition, patient orientation and whether its DICOM is stored inverted."""

    dicom_id: str
    view: str
    orientation: str
    monochrome1: bool


@dataclass(frozen=True)
class StudyPlan:
    """One study, decided before any pixel: ids, split, date and time, its images, the findings drawn into every
    image, the subject's anatomy, the report and the CheXpert codes of its labelled section."""

    subject_id: int
    study_id: int
    split: str
    date: int
    time: float
    images: tuple[ImagePlan, ...]
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


@dataclass
class _Subject:
    subject_id: int
    split: str
    risks: dict[str, bool]
    anatomy: dict[str, float]
    chronic: dict[str, Finding] = field(default_factory=dict)


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
    reason = text.pick(rng, text.INDICATIONS[context])
    question = text.pick(rng, text.QUESTIONS[context if rng.random() < 0.7 else "generic"])
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
        findings_section.insert(0, (order["Consolidation"] - 1, text.Mention(text.pick(rng, text.NORMAL_LUNGS))))
        impression.insert(0, text.Mention(text.pick(rng, text.NORMAL_IMPRESSIONS)))
    elif not any(m.labels.get("No Finding") for m in impression) and rng.random() < 0.2 and not hedged:
        impression.append(text.Mention("No other acute cardiopulmonary process."))
    findings_section.sort(key=lambda pair: pair[0])
    findings_mentions = [m for _, m in findings_section]

    structure = str(rng.choice(["full", "impression_only", "no_sections", "findings_only"], p=[0.8, 0.13, 0.04, 0.03]))
    lines = []
    if rng.random() < 0.06:  # an addendum on top, separated by a rule, as in the release
        note = text.pick(
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


def plan_studies(
    n_subjects: int, seed: int, split_fractions: Sequence[float], monochrome1_fraction: float
) -> list[StudyPlan]:
    """Every study of ``n_subjects`` patients (1-4 studies each), patient-disjoint splits; one generator by seed."""
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
                ImagePlan(
                    _dicom_id(rng),
                    view,
                    "Erect" if view != "AP" or rng.random() < 0.4 else "Recumbent",
                    bool(rng.random() < monochrome1_fraction),
                )
                for view in views
            )
            plans.append(StudyPlan(
                subject_id, next(study_ids), subject.split, int(str(date).replace("-", "")),
                _study_time(rng), images, tuple(drawn), subject.anatomy, report, labels,
            ))  # fmt: skip
            day += int(rng.integers(1, 400))
    return plans
