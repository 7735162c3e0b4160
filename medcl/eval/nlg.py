"""Natural-language-generation metrics for radiology reports, exactly as the report-generation papers compute them.

The numbers are pycocoevalcap's own scorers (``Bleu(4)``, ``Meteor()``, ``Rouge()``, ``Cider()``) called on
``{i: [reference]}`` / ``{i: [generated]}`` dictionaries; only the text preprocessing differs between papers:

* ``"cogaze"`` (default; CoGaze, MLRG and their released code): ``"."`` becomes ``" ."`` and runs of spaces are
  collapsed; nothing else (case and other punctuation are kept). CoGaze's published generated-report CSV scores
  BLEU-1 0.4103 / BLEU-4 0.1748 / METEOR 0.1905 / ROUGE-L 0.3258 / CIDEr 0.3963 with it (docs/report_generation.md).
* ``"r2gen"`` (R2Gen, R2GenCMN and their many descendants): R2Gen's ``clean_report_mimic_cxr`` (lower-case, list
  numbers and most punctuation removed, sentences joined with ``" . "``), applied to both sides.
* ``"coco"``: pycocoevalcap's PTBTokenizer (Stanford CoreNLP, needs Java), as in MS-COCO captioning.
* ``"none"``: the strings as given.

BLEU, ROUGE-L and CIDEr are pure Python; METEOR runs ``meteor-1.5.jar`` and therefore needs ``java`` on PATH.
Without Java every other metric is still computed and :attr:`NLGResult.skipped` says why METEOR is missing.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medcl.errors import ConfigError

METRICS = ("bleu", "meteor", "rouge", "cider")
# Column names of the corpus scores, in the order papers print them.
SCORE_NAMES = ("BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr")
JAVA_HINT = "install a Java runtime (e.g. `apt-get install default-jre-headless`) and make sure `java` is on PATH"


def preprocess_cogaze(text: str) -> str:
    """CoGaze/MLRG: split the full stop off its word and collapse repeated spaces (nothing else)."""
    return re.sub(" +", " ", text.replace(".", " ."))


# R2Gen's sentence cleaner. The ":-\[" inside the class is a character *range* (":" to "["), which also removes
# ;<=>?@ and upper-case letters; the text is lower-cased first, so kept as is to give identical strings.
_R2GEN_SENTENCE_PUNCT = re.compile(r"[.,?;*!%^&_+():-\[\]{}]")


def preprocess_r2gen(text: str) -> str:
    """R2Gen's ``clean_report_mimic_cxr``, step for step (its replace chains are finite, hence the loops)."""
    text = text.replace("\n", " ")
    for _ in range(7):
        text = text.replace("__", "_")
    for _ in range(6):
        text = text.replace("  ", " ")
    for _ in range(8):
        text = text.replace("..", ".")
    text = text.replace("1. ", "")
    for number in "2345":
        text = text.replace(f". {number}. ", ". ")
    for number in "2345":
        text = text.replace(f" {number}. ", ". ")
    sentences = text.strip().lower().split(". ")

    def clean(sentence: str) -> str:
        sentence = sentence.replace('"', "").replace("/", "").replace("\\", "").replace("'", "")
        return _R2GEN_SENTENCE_PUNCT.sub("", sentence.strip().lower())

    return " . ".join(clean(s) for s in sentences) + " ."


PREPROCESSORS: dict[str, Callable[[str], str]] = {
    "cogaze": preprocess_cogaze,
    "r2gen": preprocess_r2gen,
    "none": lambda text: text,
}
PREPROCESSING_CHOICES = (*PREPROCESSORS, "coco")


def java_available() -> bool:
    return shutil.which("java") is not None


@dataclass
class NLGResult:
    """corpus: metric -> corpus score (pycocoevalcap's return value); per_report: metric -> one score per report;
    skipped: metric -> why it was not computed."""

    corpus: dict[str, float]
    per_report: dict[str, list[float]]
    skipped: dict[str, str] = field(default_factory=dict)


def _ptb_tokenize(texts: Sequence[str]) -> list[str]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenized = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    return [tokenized[i][0] for i in range(len(texts))]


def preprocess(texts: Sequence[str], preprocessing: str) -> list[str]:
    """Apply one of :data:`PREPROCESSING_CHOICES` to every text."""
    if preprocessing == "coco":
        if not java_available():
            raise ConfigError(f"preprocessing 'coco' runs the PTB tokenizer in Java; {JAVA_HINT}, or use 'cogaze'")
        return _ptb_tokenize(texts)
    if preprocessing not in PREPROCESSORS:
        raise ConfigError(f"preprocessing must be one of {PREPROCESSING_CHOICES}, got {preprocessing!r}")
    return [PREPROCESSORS[preprocessing](t) for t in texts]


def _scorers(metrics: Sequence[str]) -> dict[str, object]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as err:  # pragma: no cover - pycocoevalcap is in the `report` extra
        raise ConfigError("report metrics need pycocoevalcap: pip install 'medcl[report]'") from err
    factories = {"bleu": lambda: Bleu(4), "meteor": _meteor_scorer, "rouge": Rouge, "cider": Cider}
    return {m: factories[m] for m in metrics}


def nlg_scores(
    references: Sequence[str],
    hypotheses: Sequence[str],
    preprocessing: str = "cogaze",
    metrics: Sequence[str] = METRICS,
) -> NLGResult:
    """Corpus and per-report BLEU-1..4, METEOR, ROUGE-L and CIDEr with pycocoevalcap.

    Args:
        references, hypotheses: one reference and one generated report per item (same order).
        preprocessing: one of :data:`PREPROCESSING_CHOICES` (see the module docstring).
        metrics: subset of :data:`METRICS`.
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} generated reports")
    if not references:
        raise ValueError("no reports to score")
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ConfigError(f"unknown metric(s) {unknown}; choose from {METRICS}")
    gts = {i: [t] for i, t in enumerate(preprocess(references, preprocessing))}
    res = {i: [t] for i, t in enumerate(preprocess(hypotheses, preprocessing))}
    corpus: dict[str, float] = {}
    per_report: dict[str, list[float]] = {}
    skipped: dict[str, str] = {}
    for name, factory in _scorers(metrics).items():
        if name == "meteor":
            if not java_available():
                skipped["METEOR"] = f"METEOR needs Java (pycocoevalcap runs meteor-1.5.jar); {JAVA_HINT}"
                continue
            score, scores = _meteor(gts, res)
            corpus["METEOR"], per_report["METEOR"] = float(score), [float(s) for s in scores]
        elif name == "bleu":
            score, scores = factory().compute_score(gts, res, verbose=0)
            for n in range(4):
                corpus[f"BLEU_{n + 1}"] = float(score[n])
                per_report[f"BLEU_{n + 1}"] = [float(s) for s in scores[n]]
        else:
            key = "ROUGE_L" if name == "rouge" else "CIDEr"
            score, scores = factory().compute_score(gts, res)
            corpus[key], per_report[key] = float(score), [float(s) for s in scores]
    order = {name: i for i, name in enumerate(SCORE_NAMES)}
    corpus = dict(sorted(corpus.items(), key=lambda kv: order[kv[0]]))
    return NLGResult(corpus, {k: per_report[k] for k in corpus}, skipped)


@functools.lru_cache(maxsize=1)
def _meteor_scorer() -> object:
    """One METEOR Java process per Python process: it loads its paraphrase tables at start (seconds to a minute)."""
    from pycocoevalcap.meteor.meteor import Meteor

    return Meteor()


def _meteor(gts: dict, res: dict) -> tuple[float, list[float]]:
    """pycocoevalcap's Meteor on the same inputs; its line protocol breaks on newlines, which METEOR's own
    tokeniser treats as spaces anyway, so they are flattened here only."""

    def flat(texts: dict) -> dict:
        return {k: [t.replace("\n", " ") for t in v] for k, v in texts.items()}

    return _meteor_scorer().compute_score(flat(gts), flat(res))
