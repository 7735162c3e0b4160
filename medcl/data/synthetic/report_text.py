"""Report sentences for synthetic MIMIC-CXR studies, each carrying the CheXpert codes a labeler would assign.

A :class:`Mention` is one sentence plus its label effects (1 positive, 0 negated, -1 uncertain). Reports are built
from mentions, so the labels agree with the text by construction: positives assert, uncertain mentions hedge
("possible", "cannot be excluded", "may reflect"), negatives deny ("No pleural effusion.").

The sentences that are a table (templates of findings worded by their grade or size alone, hedges, negations,
normal phrases, reasons for the exam) are data, ``report_sentences.json``, read once; the sentences whose wording
follows rules (sides, plurals, pneumonia qualifiers) are built here.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medcl.data.synthetic.radiograph import Finding
from medcl.data.text.labels import CHEXPERT_LABELS

# Labels that make "No Finding" blank when positive or uncertain (CheXpert ignores support devices for it).
PATHOLOGIES = tuple(label for label in CHEXPERT_LABELS if label not in ("No Finding", "Support Devices"))
# CheXpert aggregation over mentions: a positive mention wins over an uncertain one, which wins over a negation.
_PRIORITY = {1.0: 3, -1.0: 2, 0.0: 1}
_SENTENCES = json.loads(Path(__file__).with_name("report_sentences.json").read_text(encoding="utf-8"))


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


def _asserted(name: str, rng: np.random.Generator, **words: str) -> tuple[list[Mention], list[Mention]]:
    """One findings sentence, then one impression sentence, both asserting ``name``: its templates in
    ``report_sentences.json`` filled with ``words``."""
    templates = _SENTENCES["asserted"][name]
    body, impression = (pick(rng, templates[section]).format(**words) for section in ("findings", "impression"))
    return [Mention(body, {name: 1.0})], [Mention(impression, {name: 1.0})]


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
        return _asserted(name, rng, adverb=adverb, adjective=_grade(s, ("Mild", "Moderate", "Severe")))
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
        concern = ", concerning for malignancy" if kind == "mass" else ""
        return _asserted(
            name, rng, size=size, kind=kind, Kind=kind.capitalize(), zone=zone, Zone=zone.capitalize(), concern=concern
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
        return _asserted(name, rng, grade=grade, Grade=grade.capitalize())
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
    text = pick(rng, _SENTENCES["uncertain"][name]).format(side=side, Side=side.capitalize())
    labels = {name: -1.0}
    if "opacity" in text:
        labels["Lung Opacity"] = 1.0
    return Mention(text, labels)


# Negated mentions per label: (sentence, the codes it sets).
NEGATIONS: dict[str, list[tuple[str, dict[str, float]]]] = {
    label: [(sentence, codes) for sentence, codes in options] for label, options in _SENTENCES["negations"].items()
}
NORMAL_IMPRESSIONS: list[str] = _SENTENCES["normal_impressions"]
NORMAL_LUNGS: list[str] = _SENTENCES["normal_lungs"]
# Reason-for-exam fragments, grouped by the findings they make more likely (correlated, never deterministic).
INDICATIONS: dict[str, list[str]] = _SENTENCES["indications"]
QUESTIONS: dict[str, list[str]] = _SENTENCES["questions"]
HISTORIES: dict[str, str] = _SENTENCES["histories"]
FINDING_CONTEXT: dict[str, str] = _SENTENCES["finding_context"]


def wrap_section(header: str | None, text: str, *, inline: bool) -> list[str]:
    """MIMIC layout: every line starts with a space and is at most 79 characters wide."""
    if header is None:
        return textwrap.wrap(text, width=79, initial_indent=" ", subsequent_indent=" ") or [" "]
    if inline:
        return textwrap.wrap(text, width=79, initial_indent=f" {header}:  ", subsequent_indent=" ")
    return [f" {header}: ", " ", *textwrap.wrap(text, width=79, initial_indent=" ", subsequent_indent=" ")]
