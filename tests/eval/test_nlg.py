"""Report NLG metrics: pycocoevalcap's numbers under the papers' preprocessing, hand-checked, with and without Java."""

from __future__ import annotations

import math
import re
import shutil

import pandas as pd
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge

from medcl.commands.eval import report_main
from medcl.errors import ConfigError, InvalidInputError
from medcl.eval.nlg import nlg_scores, preprocess_cogaze, preprocess_r2gen

REFERENCES = [
    "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
    "Moderate cardiomegaly. Small bilateral pleural effusions.  Mild pulmonary edema.",
    "Endotracheal tube terminates 4.5 cm above the carina. No pneumothorax.",
    "There is a 2.0 cm nodule in the right upper lobe.",
]
GENERATED = [
    "The lungs are clear. No pleural effusion. The heart is normal in size.",
    "Cardiomegaly with small pleural effusions. No edema.",
    "Endotracheal tube 5 cm above the carina. No pneumothorax.",
    "",
]


NO_METEOR = ("bleu", "rouge", "cider")


def _direct(references: list[str], generated: list[str], meteor: bool = False) -> dict[str, float]:
    """CoGaze's own recipe, written out: '.' -> ' .', collapse spaces, pycocoevalcap scorers on the dicts."""
    gts = {i: [re.sub(" +", " ", t.replace(".", " ."))] for i, t in enumerate(references)}
    res = {i: [re.sub(" +", " ", t.replace(".", " ."))] for i, t in enumerate(generated)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out = {f"BLEU_{n + 1}": bleu[n] for n in range(4)}
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor:
        out["METEOR"] = Meteor().compute_score(gts, res)[0]
    return out


def test_hand_checked_single_pair() -> None:
    # "No pleural effusion ." (4 tokens) vs "No effusion ." (3): every unigram matches, 1 of 2 bigrams, brevity
    # penalty exp(1 - 4/3); ROUGE-L: LCS 3, P 1, R 3/4, F_beta(1.2) = 2.44 * 0.75 / (0.75 + 1.44).
    result = nlg_scores(["No pleural effusion."], ["No effusion."], metrics=("bleu", "rouge"))
    penalty = math.exp(1 - 4 / 3)
    assert result.corpus["BLEU_1"] == pytest.approx(penalty, rel=1e-6)
    assert result.corpus["BLEU_2"] == pytest.approx(penalty * math.sqrt(0.5), rel=1e-6)
    assert result.corpus["BLEU_3"] < 1e-4  # no trigram matches (pycocoevalcap's tiny smoothing only)
    assert result.corpus["ROUGE_L"] == pytest.approx(2.44 * 0.75 / 2.19, rel=1e-9)


def test_bleu_is_corpus_level_not_mean() -> None:
    # Corpus BLEU-1 pools clipped counts: (3 + 1) matches / (3 + 2) tokens, penalty exp(1 - (4 + 4)/5).
    result = nlg_scores(
        ["No pleural effusion.", "Cardiomegaly is present."], ["No effusion.", "Edema."], metrics=NO_METEOR
    )
    assert result.corpus["BLEU_1"] == pytest.approx(4 / 5 * math.exp(1 - 8 / 5), rel=1e-6)
    assert result.corpus["BLEU_1"] != pytest.approx(sum(result.per_report["BLEU_1"]) / 2)


def test_equals_pycocoevalcap_under_cogaze_recipe() -> None:
    result = nlg_scores(REFERENCES, GENERATED, metrics=NO_METEOR)
    expected = _direct(REFERENCES, GENERATED)
    assert set(result.corpus) == set(expected)
    for name, value in expected.items():
        assert result.corpus[name] == value, name  # exactly, not approximately
    assert all(len(v) == len(REFERENCES) for v in result.per_report.values())
    assert result.per_report["ROUGE_L"][3] == 0.0  # the empty generated report scores zero


@pytest.mark.slow  # METEOR's Java process loads its paraphrase tables: 10-50 s on a 2-core machine
@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs Java")
def test_meteor_equals_pycocoevalcap() -> None:
    result = nlg_scores(REFERENCES, GENERATED, metrics=("meteor",))
    assert result.corpus == {"METEOR": _direct(REFERENCES, GENERATED, meteor=True)["METEOR"]}
    assert len(result.per_report["METEOR"]) == len(REFERENCES)


def test_java_free_path_gives_identical_numbers_and_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with_java = nlg_scores(REFERENCES, GENERATED, metrics=NO_METEOR)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `java` anywhere on PATH
    without = nlg_scores(REFERENCES, GENERATED)
    assert "METEOR" not in without.corpus
    assert "Java" in without.skipped["METEOR"] and "PATH" in without.skipped["METEOR"]
    assert without.corpus == with_java.corpus
    with pytest.raises(ConfigError, match="Java"):
        nlg_scores(REFERENCES, GENERATED, preprocessing="coco")


def test_preprocessing_recipes() -> None:
    assert preprocess_cogaze("No pleural  effusion.No PTX.") == "No pleural effusion .No PTX ."
    # R2Gen: list numbers dropped, lower-cased, punctuation removed, sentences joined with " . ".
    text = "1. The heart is normal.  2. No effusion, no PTX (left).\n3. Lines: stable."
    assert preprocess_r2gen(text) == "the heart is normal . no effusion no ptx left . lines stable ."
    lower = nlg_scores(["heart is normal."], ["Heart is normal."], preprocessing="r2gen", metrics=("bleu",))
    assert lower.corpus["BLEU_4"] == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        nlg_scores(["a"], ["a"], preprocessing="nltk")
    with pytest.raises(ValueError, match="2 references"):
        nlg_scores(["a", "b"], ["a"])


def test_cli_scores_csv_and_writes_per_report_rows(tmp_path, capsys) -> None:
    csv = tmp_path / "generated.csv"
    pd.DataFrame({"study": list("abcd"), "ref": REFERENCES, "gen": GENERATED}).to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    from medcl.commands.main import main

    # Through the `medcl` entry, as the docs show it: `medcl eval report ...`.
    code = main(["eval", "report", "--csv", str(csv), "--ref-col", "ref", "--gen-col", "gen", "--id-col", "study",
                 "--metrics", "bleu", "rouge", "cider", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    expected = _direct(REFERENCES, GENERATED)
    assert f"BLEU_4                       {expected['BLEU_4']:.4f}" in printed
    assert "rule_ce_14_micro_f1" in printed and "chexbert" not in printed  # the proxy is never called CheXbert
    scores = pd.read_csv(out)
    assert list(scores["study"]) == list("abcd")
    assert {"BLEU_1", "ROUGE_L", "CIDEr", "rule_ce_f1"} <= set(scores.columns)
    assert "ref" not in scores.columns and "gen" not in scores.columns  # report texts are not copied


def test_cli_rejects_bad_input(tmp_path) -> None:
    csv = tmp_path / "bad.csv"
    pd.DataFrame({"ref": ["No effusion.", ""], "gen": ["No effusion.", "x"]}).to_csv(csv, index=False)
    with pytest.raises(InvalidInputError, match="empty reference"):
        report_main(["--csv", str(csv), "--ref-col", "ref", "--gen-col", "gen"])
    with pytest.raises(InvalidInputError, match="no column"):
        report_main(["--csv", str(csv), "--ref-col", "reference", "--gen-col", "gen"])
    with pytest.raises(InvalidInputError, match="not found"):
        report_main(["--csv", str(tmp_path / "missing.csv"), "--ref-col", "ref", "--gen-col", "gen"])
    from medcl.commands.main import main

    assert main(["eval", "report", "--csv", str(csv), "--ref-col", "ref", "--gen-col", "gen"]) == 2  # one line
