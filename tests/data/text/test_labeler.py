"""Rule-based CheXpert labeler: sentence-level behaviour and agreement with the synthetic MIMIC-CXR labels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medcl.data.text.labeler import label_report, label_reports, labelled_section
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.eval.clinical import binarize_rrg, ce_scores, per_report_f1

CASES = [
    ("No focal consolidation, pleural effusion, or pneumothorax.",
     {"Consolidation": 0, "Pleural Effusion": 0, "Pneumothorax": 0, "No Finding": 1}),
    ("There is no focal consolidation to suggest pneumonia.", {"Consolidation": 0, "Pneumonia": 0, "No Finding": 1}),
    ("Right lower lobe consolidation; pneumonia cannot be excluded.", {"Consolidation": 1, "Pneumonia": -1}),
    ("Right lower lobe opacity, which may represent pneumonia.", {"Lung Opacity": 1, "Pneumonia": -1}),
    ("Left basilar opacity may reflect atelectasis.", {"Lung Opacity": 1, "Atelectasis": -1}),
    ("Heart size is borderline enlarged.", {"Cardiomegaly": -1}),
    ("The heart is normal in size. Mediastinal contours are within normal limits.",
     {"Cardiomegaly": 0, "Enlarged Cardiomediastinum": 0, "No Finding": 1}),
    ("The cardiac silhouette is moderately enlarged.", {"Cardiomegaly": 1}),
    ("Previously noted left pleural effusion has resolved.", {"Pleural Effusion": 0, "No Finding": 1}),
    ("Possible small left pleural effusion, no pneumothorax.", {"Pleural Effusion": -1, "Pneumothorax": 0}),
    ("Endotracheal tube terminates 4.5 cm above the carina. No pneumothorax.",
     {"Support Devices": 1, "Pneumothorax": 0, "No Finding": 1}),
    ("A small pneumothorax is seen with a visible visceral pleural line.", {"Pneumothorax": 1}),
    ("Cardiomegaly with normal pulmonary vasculature and mild interstitial edema.", {"Cardiomegaly": 1, "Edema": 1}),
    ("Bilateral lower extremity edema. No acute cardiopulmonary process.", {"No Finding": 1}),
    ("A 2.5 cm mass in the right upper lobe, concerning for malignancy.", {"Lung Lesion": 1}),
    ("Lungs and Airways:- No focal consolidation.- Mild pulmonary edema.Pleura:- Small right pleural effusion.",
     {"Consolidation": 0, "Edema": 1, "Pleural Effusion": 1}),
    ("", {}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_sentences(text: str, expected: dict[str, int]) -> None:
    assert label_report(text) == {k: float(v) for k, v in expected.items()}


def test_label_matrix_layout() -> None:
    codes = label_reports(["Moderate cardiomegaly.", "No pneumothorax."])
    assert codes.shape == (2, len(CHEXPERT_LABELS))
    assert codes[0, CHEXPERT_LABELS.index("Cardiomegaly")] == 1
    assert codes[1, CHEXPERT_LABELS.index("Pneumothorax")] == 0
    assert math.isnan(codes[1, CHEXPERT_LABELS.index("Edema")])


def test_sections_follow_the_official_rule() -> None:
    report = (
        "                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n \n INDICATION:  cough\n"
        " \n FINDINGS: \n \n Small left pleural effusion.\n \n IMPRESSION: \n \n Small left\n pleural effusion.\n"
        " \n NOTIFICATION:  Discussed with ___ at ___.\n"
    )
    assert labelled_section(report) == "Small left pleural effusion."
    no_impression = report.split(" IMPRESSION:")[0]
    assert labelled_section(no_impression) == "Small left pleural effusion."
    bare = "   FINAL REPORT\n INDICATION:  cough\n \n COMPARISON:  None.\n \n Mild edema.\n"
    assert labelled_section(bare) == "Mild edema."


def test_ce_scores_follow_the_rrg_convention() -> None:
    nan = np.nan
    reference = np.full((2, 14), nan)
    generated = np.full((2, 14), nan)
    cardio, edema = CHEXPERT_LABELS.index("Cardiomegaly"), CHEXPERT_LABELS.index("Edema")
    reference[0, cardio], generated[0, cardio] = 1, -1  # uncertain counts as positive: a true positive
    reference[1, edema], generated[1, edema] = 1, 0  # negative: a false negative
    assert binarize_rrg(np.array([1, -1, 0, nan])).tolist() == [1, 1, 0, 0]
    scores = ce_scores(reference, generated, "x")
    assert scores["x_14_micro_p"] == 1.0 and scores["x_14_micro_r"] == 0.5
    assert scores["x_14_micro_f1"] == pytest.approx(2 / 3)
    assert scores["x_5_macro_f1"] == pytest.approx(1 / 5)  # 1 of 5 classes perfect, the rest 0 (sklearn's rule)
    assert per_report_f1(reference, generated).tolist() == [1.0, 0.0]


@pytest.fixture(scope="module")
def synthetic_reports(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], pd.DataFrame]:
    from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr

    root = tmp_path_factory.mktemp("mimic")
    generate_mimic_cxr(root, n_subjects=250, seed=11, image_size=32, jpg=False, workers=1)
    truth = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    paths = {int(p.stem[1:]): p for p in Path(root, "files").glob("*/*/s*.txt")}
    return [paths[s].read_text() for s in truth["study_id"]], truth


def _f1(predicted: np.ndarray, truth: np.ndarray, code: int) -> float:
    p, t = predicted == code, truth == code
    return 2 * (p & t).sum() / (2 * (p & t).sum() + (p & ~t).sum() + (~p & t).sum())


def test_agrees_with_synthetic_ground_truth(synthetic_reports: tuple[list[str], pd.DataFrame]) -> None:
    reports, truth = synthetic_reports
    predicted = label_reports([labelled_section(r) for r in reports])
    expected = truth[list(CHEXPERT_LABELS)].to_numpy(float)
    assert (expected == -1).sum() > 20 and (expected == 0).sum() > 100  # all three kinds are really exercised
    for code in (1, 0, -1):  # positive, negated and uncertain mentions
        assert _f1(predicted, expected, code) >= 0.95, code


def test_chexbert_labeler_loads_release_layout(tmp_path: Path) -> None:
    """CheXbert's released layout (``model_state_dict``, ``module.`` prefixes) loads and labels; bad files fail."""
    import shutil

    import torch
    from transformers import BertConfig

    from medcl.errors import InvalidInputError
    from medcl.eval.clinical import CheXbert, CheXbertLabeler
    from medcl.eval.report import score_reports
    from medcl.models.text_encoders import resolve_text_model

    bert = tmp_path / "bert"
    bert.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        source = Path(resolve_text_model("minilm")) / name
        if source.is_file():
            shutil.copy(source, bert / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)  # fmt: skip
    config.save_pretrained(bert)
    torch.manual_seed(0)
    state = {f"module.{k}": v for k, v in CheXbert(str(bert)).state_dict().items()}
    torch.save({"model_state_dict": state, "epoch": 1}, tmp_path / "chexbert.pth")
    labeler = CheXbertLabeler(tmp_path / "chexbert.pth", bert=str(bert), device="cpu")
    codes = labeler(["Moderate cardiomegaly.", ""])
    assert codes.shape == (2, 14)
    assert set(np.unique(codes[~np.isnan(codes)])) <= {-1.0, 0.0, 1.0}
    scores = score_reports(["No effusion."], ["Small effusion."], metrics=("bleu",), chexbert=labeler)
    assert "chexbert_14_micro_f1" in scores.corpus and not any(k.startswith("rule_ce") for k in scores.corpus)
    torch.save({"model_state_dict": {"module.linear.weight": torch.zeros(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(InvalidInputError, match="not a CheXbert state dict"):
        CheXbertLabeler(tmp_path / "other.pth", bert=str(bert), device="cpu")
