"""Report sentences for synthetic MIMIC-CXR studies, each carrying the CheXpert codes a labeler would assign.

A :class:`Mention` is one sentence plus its label effects (1 positive, 0 negated, -1 uncertain). Reports are built
from mentions, so the labels agree with the text by construction: positives assert, uncertain mentions hedge
("possible", "cannot be excluded", "may reflect"), negatives deny ("No pleural effusion.").
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

import numpy as np

from medcl.data.synthetic.radiograph import Finding
from medcl.data.text.labels import CHEXPERT_LABELS

# Labels that make "No Finding" blank when positive or uncertain (CheXpert ignores support devices for it).
PATHOLOGIES = tuple(label for label in CHEXPERT_LABELS if label not in ("No Finding", "Support Devices"))
# CheXpert aggregation over mentions: a positive mention wins over an uncertain one, which wins over a negation.
_PRIORITY = {1.0: 3, -1.0: 2, 0.0: 1}


@dataclass(frozen=True)
class Mention:
    text: str
    labels: dict[str, float] = field(default_factory=dict)


def aggregate_labels(mentions: list[Mention]) -> dict[str, float]:
    """Per-study codes from the mentions of the labelled section; unmentioned labels are absent (blank)."""
    codes: dict[str, float] = {}
    for mention in mentions:
        for label, code in mention.labels.items():
            if label not in codes or _PRIORITY[code] > _PRIORITY[codes[label]]:
                codes[label] = code
    if mentions and not any(codes.get(label) in (1.0, -1.0) for label in PATHOLOGIES):
        codes["No Finding"] = 1.0
    return codes


def pick(rng: np.random.Generator, options: list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _asserted(
    name: str, rng: np.random.Generator, body: list[str], impression: list[str]
) -> tuple[list[Mention], list[Mention]]:
    """One findings sentence, then one impression sentence, both asserting ``name``."""
    return [Mention(pick(rng, body), {name: 1.0})], [Mention(pick(rng, impression), {name: 1.0})]


def _grade(severity: float, words: tuple[str, str, str]) -> str:
    return words[0] if severity < 0.4 else words[1] if severity < 0.7 else words[2]


def _side_phrase(sides: tuple[str, ...]) -> str:
    return "bilateral" if len(sides) == 2 else sides[0]


def _zone(finding: Finding) -> str:
    """Lung zone of a localised finding from its drawn position, e.g. 'right upper lobe'."""
    centre = finding.params.get("centre")
    b = centre[1] if centre else 0.6
    level = "upper" if b < 0.36 else "mid" if b < 0.5 else "lower"
    if level == "mid":
        return f"{finding.sides[0]} mid lung" if finding.sides[0] == "left" else "right middle lobe"
    return f"{finding.sides[0]} {level} lobe"


def positive_mentions(finding: Finding, rng: np.random.Generator) -> tuple[list[Mention], list[Mention]]:
    """(findings-section sentences, impression sentences) asserting a drawn finding."""
    s, name = finding.severity, finding.name
    if name == "Cardiomegaly":
        adverb = _grade(s, ("mildly", "moderately", "markedly"))
        adjective = _grade(s, ("Mild", "Moderate", "Severe"))
        return _asserted(
            name,
            rng,
            [
                f"The heart is {adverb} enlarged.",
                f"{adjective} cardiomegaly is present.",
                f"The cardiac silhouette is {adverb} enlarged.",
                f"Heart size is {adverb} enlarged.",
            ],
            [f"{adjective} cardiomegaly.", "Cardiomegaly.", f"{adjective} enlargement of the heart."],
        )
    if name == "Pleural Effusion":
        size = _grade(s, ("Small", "Moderate", "Large"))
        side = _side_phrase(finding.sides)
        plural = "effusions" if side == "bilateral" else "effusion"
        verb = "are" if side == "bilateral" else "is"
        article = "" if side == "bilateral" else "a "
        body = pick(
            rng,
            [
                f"There {verb} {article}{size.lower()} {side} pleural {plural}.",
                f"{size} {side} pleural {plural} {verb} present.",
                f"{size} {side} pleural {plural} with adjacent compressive changes.",
            ],
        )
        if s < 0.4 and side != "bilateral":
            body = pick(
                rng, [body, f"Blunting of the {side} costophrenic angle is compatible with a small pleural effusion."]
            )
        return [Mention(body, {name: 1.0})], [Mention(f"{size} {side} pleural {plural}.", {name: 1.0})]
    if name == "Lung Lesion":
        diameter_mm = int(round(2 * (0.022 + 0.035 * s) * 350 / 5) * 5)
        kind = "mass" if diameter_mm >= 30 else "nodule"
        size = f"{diameter_mm / 10:.1f} cm" if kind == "mass" else f"{diameter_mm} mm"
        zone = _zone(finding)
        return _asserted(
            name,
            rng,
            [
                f"There is a {size} {kind} in the {zone}.",
                f"A {size} {kind} projects over the {zone}.",
                f"{kind.capitalize()} in the {zone} measures {size}.",
            ],
            [
                f"{zone.capitalize()} {kind}; CT is recommended for further evaluation.",
                f"{size} {zone} {kind}, concerning for malignancy." if kind == "mass" else f"{size} {zone} {kind}.",
            ],
        )
    if name == "Pneumothorax":
        size = _grade(s, ("small", "moderate", "large"))
        side = _side_phrase(finding.sides)
        body = pick(
            rng,
            [
                f"There is a {size} {side} apical pneumothorax.",
                f"A {size} {side} pneumothorax is seen with a visible visceral pleural line.",
                f"{size.capitalize()} {side} pneumothorax.",
            ],
        )
        return [Mention(body, {name: 1.0})], [Mention(f"{size.capitalize()} {side} pneumothorax.", {name: 1.0})]
    if name == "Consolidation":
        zone = _zone(finding)
        quality = _grade(s, ("patchy", "focal", "dense"))
        pneumonia = finding.params.get("pneumonia")
        body = pick(
            rng,
            [
                f"There is {quality} consolidation in the {zone}.",
                f"{quality.capitalize()} consolidation is seen in the {zone}.",
            ],
        )
        # A quarter of radiologists call it an "opacity": CheXpert then labels Lung Opacity, not Consolidation.
        noun, labels = ("opacity", {"Lung Opacity": 1.0}) if rng.random() < 0.25 else ("consolidation", {name: 1.0})
        if pneumonia == 1.0:
            tail = pick(rng, [", consistent with pneumonia", ", compatible with pneumonia", " due to pneumonia"])
        elif pneumonia == -1.0:
            tail = pick(
                rng, ["; pneumonia cannot be excluded", ", possibly pneumonia", ", which may represent pneumonia"]
            )
        else:
            tail = ""
        if pneumonia is not None:
            labels["Pneumonia"] = pneumonia
        return [Mention(body, {name: 1.0})], [Mention(f"{zone.capitalize()} {noun}{tail}.", labels)]
    if name == "Edema":
        grade = _grade(s, ("mild", "moderate", "severe"))
        return _asserted(
            name,
            rng,
            [
                f"There is {grade} pulmonary edema.",
                f"Perihilar haziness and vascular indistinctness are consistent with {grade} pulmonary edema.",
                f"Pulmonary vascular congestion with {grade} interstitial edema.",
            ],
            [f"{grade.capitalize()} pulmonary edema.", f"Findings consistent with {grade} pulmonary edema."],
        )
    if name == "Atelectasis":
        side = finding.sides[0]
        grade = _grade(s, ("Minimal", "Mild", "Moderate"))
        body = pick(
            rng,
            [
                f"{grade} plate-like atelectasis at the {side} lung base.",
                f"Linear opacity at the {side} base is consistent with atelectasis.",
            ],
        )
        labels = {name: 1.0, "Lung Opacity": 1.0} if "opacity" in body else {name: 1.0}
        return [Mention(body, labels)], [Mention(f"{grade} {side} basilar atelectasis.", {name: 1.0})]
    if name == "Enlarged Cardiomediastinum":
        body = pick(rng, ["The mediastinum is widened.", "The cardiomediastinal silhouette is enlarged."])
        return [Mention(body, {name: 1.0})], [Mention("Widened mediastinum.", {name: 1.0})]
    if name == "Support Devices":
        sentences = {
            "ett": "Endotracheal tube terminates {} cm above the carina.",
            "ngt": "Enteric tube courses below the diaphragm with the tip in the stomach.",
            "cvc": "Right internal jugular central venous catheter terminates in the mid SVC.",
            "pacemaker": "Left-sided pacemaker with leads in the right atrium and right ventricle.",
        }
        body = [Mention(sentences[k].format(f"{rng.uniform(3, 6):.1f}"), {name: 1.0}) for k in finding.params["kinds"]]
        impression = pick(rng, ["Lines and tubes in standard position.", "Support devices in expected position."])
        if finding.params["kinds"] == ("pacemaker",):
            impression = "Pacemaker leads in standard position."
        return body, [Mention(impression, {name: 1.0})]
    raise ValueError(f"no sentences for finding {name!r}")


def uncertain_mention(finding: Finding, rng: np.random.Generator) -> Mention:
    """A hedged mention (CheXpert code -1) of a finding that is subtle or absent on the film."""
    name = finding.name
    side = _side_phrase(finding.sides) if finding.sides else ""
    options = {
        "Cardiomegaly": ["Heart size is borderline enlarged.", "Possible mild cardiomegaly."],
        "Pleural Effusion": [
            f"Possible small {side} pleural effusion.",
            f"A trace {side} pleural effusion cannot be excluded.",
        ],
        "Lung Lesion": [f"Possible nodule in the {side} lung; consider CT for further evaluation."],
        "Pneumothorax": [
            f"Possible tiny {side} apical pneumothorax.",
            f"A small {side} pneumothorax cannot be excluded.",
        ],
        "Consolidation": [f"Possible early consolidation in the {side} lung base."],
        "Edema": ["Possible mild interstitial edema.", "Mild pulmonary edema cannot be excluded."],
        "Atelectasis": [f"{side.capitalize()} basilar opacity may reflect atelectasis."],
    }
    text = pick(rng, options[name])
    labels = {name: -1.0}
    if "opacity" in text:
        labels["Lung Opacity"] = 1.0
    return Mention(text, labels)


NEGATIONS: dict[str, list[tuple[str, dict[str, float]]]] = {
    "Cardiomegaly": [
        ("Heart size is normal.", {"Cardiomegaly": 0.0}),
        ("The heart is normal in size.", {"Cardiomegaly": 0.0}),
        ("No cardiomegaly.", {"Cardiomegaly": 0.0}),
    ],
    "Pleural Effusion": [
        ("No pleural effusion.", {"Pleural Effusion": 0.0}),
        ("There is no pleural effusion or pneumothorax.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
        ("No effusion is seen.", {"Pleural Effusion": 0.0}),
    ],
    "Pneumothorax": [("No pneumothorax.", {"Pneumothorax": 0.0}), ("There is no pneumothorax.", {"Pneumothorax": 0.0})],
    "Consolidation": [
        ("No focal consolidation.", {"Consolidation": 0.0}),
        ("There is no focal consolidation to suggest pneumonia.", {"Consolidation": 0.0, "Pneumonia": 0.0}),
    ],
    "Pneumonia": [("No evidence of pneumonia.", {"Pneumonia": 0.0})],
    "Edema": [
        ("No pulmonary edema.", {"Edema": 0.0}),
        ("There is no pulmonary vascular congestion or edema.", {"Edema": 0.0}),
    ],
    "Enlarged Cardiomediastinum": [
        ("The cardiomediastinal silhouette is normal.", {"Enlarged Cardiomediastinum": 0.0}),
        ("Mediastinal contours are within normal limits.", {"Enlarged Cardiomediastinum": 0.0}),
    ],
    "Lung Lesion": [("No suspicious pulmonary nodules.", {"Lung Lesion": 0.0})],
    "Fracture": [("No displaced rib fractures.", {"Fracture": 0.0}), ("No acute fracture is seen.", {"Fracture": 0.0})],
}
NORMAL_IMPRESSIONS = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
]
NORMAL_LUNGS = ["The lungs are clear.", "Lungs are well expanded and clear.", "The lungs are clear bilaterally."]


# Reason-for-exam fragments, grouped by the findings they make more likely (correlated, never deterministic).
INDICATIONS = {
    "chf": [
        "dyspnea",
        "shortness of breath",
        "CHF exacerbation",
        "lower extremity edema",
        "hypoxia and volume overload",
    ],
    "infection": ["fever", "cough", "productive cough and fever", "leukocytosis", "fever and hypoxia"],
    "trauma": ["chest pain", "fall", "trauma", "s/p thoracentesis", "s/p lung biopsy", "sudden pleuritic chest pain"],
    "lesion": [
        "weight loss",
        "long smoking history",
        "hemoptysis",
        "history of lung cancer",
        "follow-up of lung nodule",
    ],
    "icu": ["intubated", "ET tube placement", "NG tube placement", "s/p central line placement", "s/p pacemaker"],
    "generic": ["preop", "altered mental status", "chest pain", "weakness", "routine evaluation", "syncope"],
}
QUESTIONS = {
    "chf": ["eval for effusion", "? fluid overload", "eval for pulmonary edema", "eval for CHF"],
    "infection": ["eval for pneumonia", "r/o pneumonia", "? infiltrate", "eval for consolidation"],
    "trauma": ["? ptx", "eval for pneumothorax", "r/o fracture or ptx"],
    "lesion": ["eval for mass", "interval change of nodule", "eval for lesion"],
    "icu": ["assess tube placement", "line placement", "eval position of tube"],
    "generic": ["eval for acute process", "eval for acute cardiopulmonary process", "r/o acute process"],
}
HISTORIES = {
    "chf": "history of congestive heart failure",
    "infection": "recent upper respiratory infection",
    "trauma": "recent fall",
    "lesion": "long smoking history",
    "icu": "respiratory failure",
    "generic": "hypertension",
}
FINDING_CONTEXT = {
    "Cardiomegaly": "chf",
    "Edema": "chf",
    "Pleural Effusion": "chf",
    "Consolidation": "infection",
    "Pneumothorax": "trauma",
    "Lung Lesion": "lesion",
    "Support Devices": "icu",
    "Atelectasis": "icu",
}


def wrap_section(header: str | None, text: str, *, inline: bool) -> list[str]:
    """MIMIC layout: every line starts with a space and is at most 79 characters wide."""
    if header is None:
        return textwrap.wrap(text, width=79, initial_indent=" ", subsequent_indent=" ") or [" "]
    if inline:
        return textwrap.wrap(text, width=79, initial_indent=f" {header}:  ", subsequent_indent=" ")
    return [f" {header}: ", " ", *textwrap.wrap(text, width=79, initial_indent=" ", subsequent_indent=" ")]
