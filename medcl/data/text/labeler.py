"""An offline, rule-based CheXpert-style report labeler: mention, negation and uncertainty for 14 observations.

It follows the CheXpert labeler's three stages (Irvin et al. 2019) with regular expressions instead of NegBio's
dependency parses, so it needs no model, no Java and no download:

1. **Mention extraction**: per-observation phrase patterns (``cardiomegaly``, ``heart size``, ``pleural effusion``,
   ``endotracheal tube`` ...), found in each clause of each sentence.
2. **Classification**: a mention is *negative* when a negation cue scopes over it (``no``/``without``/``free of``
   before it in its clause, or ``is normal``/``has resolved``/``is not seen`` after it), else *uncertain* when an
   uncertainty cue does (``possible``/``may``/``suggestive of`` before it; ``cannot be excluded`` after it), else
   *positive*. Multi-word uncertainty cues that contain a negation word ("cannot be excluded", "not ruled out") are
   matched first and blanked, so their "not" does not negate. Pre-cues reach forward to the end of the clause
   (``;``, sentence end, or "but"/"however"/"which"...); post-cues reach back to the previous comma.
3. **Aggregation**: per report and observation, positive beats uncertain beats negative; unmentioned is blank (NaN).
   ``No Finding`` is positive when the text is non-empty and no pathology (all but Support Devices) is positive or
   uncertain, as in CheXpert.

Codes follow MIMIC-CXR's chexpert CSVs: 1 positive, 0 negative, -1 uncertain, NaN blank; columns are
:data:`medcl.data.manifest.CHEXPERT_LABELS`. This labeler is what ``medcl eval report`` falls back to when no CheXbert
weights are given, and its F1 is reported as ``rule_ce_*``, never under the CheXbert name: it is a proxy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.reports import parse_report

NO_FINDING = "No Finding"
# Observations that make "No Finding" blank when positive or uncertain (CheXpert ignores Support Devices for it).
PATHOLOGIES = tuple(label for label in CHEXPERT_LABELS if label not in (NO_FINDING, "Support Devices"))
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
_PRIORITY = {POSITIVE: 3, UNCERTAIN: 2, NEGATIVE: 1}

_HEART_VERB = r"\b(?:heart|cardiac silhouette|heart silhouette) (?:is|appears|remains|looks)\b"
MENTIONS: dict[str, tuple[str, ...]] = {
    "Atelectasis": (r"\batelecta\w*", r"\bcollapse of the \w+ (?:lower|upper|middle) lobe\b"),
    "Cardiomegaly": (
        r"\bcardiomegaly\b",
        r"\b(?:heart|cardiac) (?:size|enlargement)\b",
        r"\bcardiac (?:silhouette|shadow|contour)s?\b",
        r"\benlarge(?:d|ment of the) heart\b",
        _HEART_VERB + r"(?=[^.;]*\b(?:enlarged|size|normal|prominent)\b)",
    ),
    "Consolidation": (r"\bconsolidat\w*",),
    "Edema": (r"(?<!extremity )(?<!soft tissue )(?<!subcutaneous )(?<!peripheral )\bedema\b",),
    "Enlarged Cardiomediastinum": (
        r"\bcardiomediastinal (?:silhouette|contour|shadow)s?\b",
        r"\bmediastin(?:um|al (?:contour|silhouette|widening|shift)s?)\b",
        r"\bwiden(?:ed|ing) (?:of the )?mediastin\w*",
    ),
    "Fracture": (r"\bfracture[sd]?\b",),
    "Lung Lesion": (
        r"\bnodul(?:e|es|ar|arity)\b",
        r"(?<!soft tissue )\bmass(?:es)?\b",
        r"\blung lesions?\b|\bpulmonary lesions?\b",
        r"\b(?:lung|pulmonary) (?:tumor|neoplasm|carcinoma)s?\b",
    ),
    "Lung Opacity": (r"\bopacit(?:y|ies)\b", r"\bopacification\b", r"\binfiltrates?\b", r"\bair ?space disease\b"),
    "Pleural Effusion": (r"(?<!pericardial )\beffusions?\b", r"\bhydrothora(?:x|ces)\b"),
    "Pleural Other": (r"\bpleural (?:thickening|scarring|plaques?)\b", r"\bfibrothorax\b"),
    "Pneumonia": (r"\bpneumonias?\b", r"\bbronchopneumonia\b"),
    "Pneumothorax": (r"\bpneumothora(?:x|ces)\b", r"\bptx\b"),
    "Support Devices": (
        r"\b(?:endotracheal|et|enteric|nasogastric|ng|og|orogastric|feeding|chest|tracheostomy|dobhoff|gastric)"
        r" tubes?\b",
        r"\blines and tubes\b|\btubes and lines\b|\bsupport devices?\b|\bmonitoring devices?\b",
        r"\bcatheters?\b|\bpicc\b|\bport-?a-?cath\b|\bcentral (?:venous )?line\b|\bij line\b|\bswan-ganz\b",
        r"\bpacemaker\b|\bpacer\b|\bdefibrillator\b|\bicd\b|\bleads?\b(?= (?:in|terminat|project|overl))",
        r"\bsternotomy wires?\b|\bstents?\b|\bprosthetic (?:valve|device)s?\b",
    ),
}

# Uncertainty cues containing a negation word: matched (and blanked) before the negation cues are looked for.
_UNCERTAIN_POST_WITH_NOT = (
    r"\b(?:cannot|can ?not|could not|not) (?:be )?(?:entirely |completely )?(?:excluded|ruled out)\b"
)
_UNCERTAIN_PRE_WITH_NOT = r"\b(?:cannot|can ?not|could not) (?:exclude|rule out)\b|\bnot excluded\b"
NEGATION_PRE = (
    r"\bno\b(?! longer)",
    r"\bnot\b",
    r"\bwithout\b",
    r"\bnegative for\b",
    r"\bfree of\b",
    r"\babsence of\b",
    r"\bresolution of\b",
    r"\brather than\b",
    r"\bclear of\b",
)
NEGATION_POST = (
    r"\b(?:is|are|appears?|remains?|looks?|was|were)\s+(?:\w+\s+)?(?:normal|unremarkable)\b",
    r"\bnormal in (?:size|caliber|contour|configuration)\b",
    r"\bwithin normal limits\b",
    r"\b(?:is|are|was|were|has been|have been)\s+(?:not|no longer)\s+(?:seen|identified|visualized|present|"
    r"appreciated|evident|demonstrated|enlarged)\b",
    r"\b(?:has|have)?\s*resolved\b",
    r"\b(?:is|are) absent\b",
)
UNCERTAINTY_PRE = (
    _UNCERTAIN_PRE_WITH_NOT,
    r"\bpossibl[ey]\b",
    r"\bprobabl[ey]\b",
    r"\bmay\b",
    r"\bmight\b",
    r"\bcould\b",
    r"\bquestionable\b|\bquestion of\b",
    r"\bsuspicious for\b|\bsuspected\b|\bsuspect\b",
    r"\bconcern(?:ing)? for\b|\bworrisome for\b",
    r"\bsuggest(?:s|ive of|ing)?\b",
    r"\blikely\b|\bpresumed\b|\bpresumably\b|\bperhaps\b",
    r"\bborderline\b|\bequivocal\b|\bindeterminate\b",
    r"\bdifferential\b|\bversus\b|\bvs\b",
    r"\bvs\.",
    r"\brule out\b|\br/o\b|\beval(?:uate|uation)? for\b",
)
UNCERTAINTY_POST = (
    _UNCERTAIN_POST_WITH_NOT,
    r"\b(?:is|are) (?:also |not )?(?:possible|suspected|questioned)\b",
    r"\bborderline\b",
)
# Words that end the forward scope of a pre-cue (a new clause starts).
_CLAUSE_BREAKS = re.compile(r";|\b(?:but|however|although|though|which|whereas|except|aside from|apart from)\b")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+|\s*(?::-|\n-|^-)\s*|(?<=[a-z.])-\s+(?=[a-z])")


def _compile(patterns: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_MENTION_RE = {label: _compile(patterns) for label, patterns in MENTIONS.items()}
_NEG_PRE, _NEG_POST = _compile(NEGATION_PRE), _compile(NEGATION_POST)
_UNC_PRE, _UNC_POST = _compile(UNCERTAINTY_PRE), _compile(UNCERTAINTY_POST)
_BLANKED = _compile([_UNCERTAIN_POST_WITH_NOT, _UNCERTAIN_PRE_WITH_NOT])


def normalize(text: str) -> str:
    """Lower-case and collapse whitespace (reports arrive wrapped at 79 columns)."""
    return re.sub(r"\s+", " ", text).strip().lower()


def _clauses(sentence: str) -> list[str]:
    parts, start = [], 0
    for match in _CLAUSE_BREAKS.finditer(sentence):
        parts.append(sentence[start : match.start()])
        start = match.start() if match.group(0) != ";" else match.end()
    parts.append(sentence[start:])
    return [p for p in parts if p.strip()]


def _classify(clause: str, start: int, end: int) -> float:
    """Polarity of the mention at ``clause[start:end]``."""
    blanked = _BLANKED.sub(lambda m: " " * len(m.group(0)), clause)
    before, after = blanked[:start], blanked[end:]
    segment_after = after.split(",", 1)[0]
    if _NEG_PRE.search(before) or _NEG_POST.search(segment_after):
        return NEGATIVE
    if _UNC_PRE.search(clause[:start]) or _UNC_POST.search(clause[end:].split(",", 1)[0]):
        return UNCERTAIN
    return POSITIVE


def mentions(text: str) -> list[tuple[str, float, str]]:
    """Every (observation, code, clause) found in ``text``, in reading order."""
    found = []
    for sentence in _SENTENCE_SPLIT.split(normalize(text)):
        for clause in _clauses(sentence):
            for label, pattern in _MENTION_RE.items():
                for match in pattern.finditer(clause):
                    found.append((label, _classify(clause, match.start(), match.end()), clause.strip()))
    return found


def label_report(text: str) -> dict[str, float]:
    """CheXpert codes of one report section; unmentioned observations are absent."""
    codes: dict[str, float] = {}
    for label, code, _ in mentions(text):
        if label not in codes or _PRIORITY[code] > _PRIORITY[codes[label]]:
            codes[label] = code
    if normalize(text) and not any(codes.get(label) in (POSITIVE, UNCERTAIN) for label in PATHOLOGIES):
        codes[NO_FINDING] = POSITIVE
    return codes


def label_reports(texts: Sequence[str]) -> np.ndarray:
    """(N, 14) float array of codes in :data:`CHEXPERT_LABELS` order; NaN where not mentioned."""
    out = np.full((len(texts), len(CHEXPERT_LABELS)), np.nan)
    for row, text in enumerate(texts):
        for label, code in label_report(text or "").items():
            out[row, CHEXPERT_LABELS.index(label)] = code
    return out


def labelled_section(report: str) -> str:
    """The text MIMIC-CXR's CheXpert labels come from: impression, else findings, else the last paragraph."""
    sections = parse_report(report)
    return next((sections[k] for k in ("impression", "findings", "last_paragraph") if sections.get(k)), "")
