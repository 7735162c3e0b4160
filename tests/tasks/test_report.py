"""Report generation: model memory and generation controls, data items, structured reports, and a train/test run."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from medcl.data.report import ReportDataModule
from medcl.data.text.labeler import label_reports
from medcl.data.text.reports import (
    NO_INDICATION,
    NO_PRIOR_REPORT,
    ORGAN_SECTIONS,
    context_prompt,
    flatten_structured_report,
    structure_report,
)
from medcl.errors import ConfigError
from medcl.models import create_model
from medcl.models.report_generator import codes_to_states, states_to_codes
from medcl.tasks.report import ReportGeneration

# A CPU-sized generator: narrow ResNet, a 1-layer random BERT for the context, a 2-layer random GPT-2.
SMALL = {
    "backbone_overrides": {
        "image": {"widths": [8, 16, 16, 32]},
        "text": {"pretrained": False, "num_hidden_layers": 1, "config_overrides": {"hidden_size": 64,
                 "intermediate_size": 128, "num_attention_heads": 2}},
        "embed_dim": 32,
    },
    "decoder": {"config_overrides": {"n_layer": 2, "n_embd": 64, "n_head": 2, "n_positions": 192}},
}  # fmt: skip


@pytest.fixture(scope="module")
def model():
    seed_everything(0)
    return create_model("report-gen-demo", **SMALL).eval()


def test_context_prompt_marks_missing_parts() -> None:
    assert context_prompt("", None) == f"[INDICATION] {NO_INDICATION} [FINDINGS] {NO_PRIOR_REPORT}"
    assert (
        context_prompt("cough", "No effusion.", "smoker")
        == "[INDICATION] cough [HISTORY] smoker [FINDINGS] No effusion."
    )


def test_memory_covers_views_prior_and_context(model) -> None:
    images = torch.rand(2, 3, 1, 64, 64)
    view_mask = torch.tensor([[True, True, False], [True, False, True]])
    view_role = torch.tensor([[0, 1, 0], [0, 0, 2]])
    memory, mask = model.memory(images, [context_prompt("cough", None)] * 2, view_mask, view_role)
    tokens_per_view = model.image_memory(images[:, :1])[0].shape[1]
    assert memory.shape[1] > 3 * tokens_per_view  # three view slots plus the context tokens
    assert mask[0, 2 * tokens_per_view : 3 * tokens_per_view].sum() == 0  # padded view slot is masked out
    assert mask[1, 2 * tokens_per_view : 3 * tokens_per_view].all()  # the prior study is attended to


@pytest.mark.parametrize("finding_prompt", [True, False], ids=["diagnosis-prompt", "plain"])
def test_generation_controls(model, finding_prompt, monkeypatch) -> None:
    images = torch.rand(2, 1, 64, 64)
    contexts = [context_prompt("cough", None)] * 2
    monkeypatch.setattr(model, "finding_prompt", finding_prompt)  # plain: the same weights without the prefix
    cached = model.generate(images, contexts, num_beams=1, max_new_tokens=8, use_cache=True)
    uncached = model.generate(images, contexts, num_beams=1, max_new_tokens=8, use_cache=False)
    assert cached == uncached  # the KV cache is an optimisation, not a different decoder
    beams = model.generate(images, contexts, num_beams=3, max_new_tokens=8)
    assert len(beams) == 2 and all(isinstance(t, str) for t in beams)
    short = model.generate(images, contexts, num_beams=1, max_new_tokens=3, min_new_tokens=3)
    assert all(c.startswith(s) and len(s) < len(c) for s, c in zip(short, cached))  # greedy: a prefix
    with pytest.raises(ConfigError, match=r"unknown generation setting.*num_beam"):
        model.generate(images, contexts, num_beam=1)  # a misspelt setting is an error, not silently ignored


def test_captioning_loss_learns(model) -> None:
    seed_everything(0)
    trainable = create_model("report-gen-demo", **SMALL)
    optimizer = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=3e-3)
    images, reports = torch.rand(2, 1, 32, 32), ["Moderate cardiomegaly.", "No pleural effusion."]
    first = trainable(images, reports).item()
    for _ in range(15):
        optimizer.zero_grad()
        loss = trainable(images, reports)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first


def test_finding_states_round_trip_chexpert_codes() -> None:
    codes = torch.tensor([[1.0, 0.0, -1.0, float("nan")]])
    states = codes_to_states(codes)
    assert states.tolist() == [[1, 2, 3, 0]]  # CheXbert's class order: blank, positive, negative, uncertain
    assert torch.equal(states_to_codes(states).isnan(), codes.isnan())
    assert states_to_codes(states)[:, :3].tolist() == [[1.0, 0.0, -1.0]]


def test_finding_prompt_head_and_decoder_learn_the_diagnosis() -> None:
    """Two images, two diagnoses: the head learns each image's labels and the prompted decoder writes its report."""
    seed_everything(0)
    trainable = create_model("report-gen-demo", **SMALL, finding_prompt=True)
    optimizer = torch.optim.AdamW([p for p in trainable.parameters() if p.requires_grad], lr=3e-3)
    images = torch.stack([torch.zeros(1, 32, 32), torch.ones(1, 32, 32)])
    reports = ["Moderate cardiomegaly.", "No pleural effusion."]
    for _ in range(80):
        optimizer.zero_grad()
        losses = trainable.losses(images, reports)
        trainable.total_loss(losses).backward()
        optimizer.step()
    trainable.eval()
    cached, codes = trainable.generate(images, num_beams=1, max_new_tokens=12, use_cache=True, return_findings=True)
    expected = torch.from_numpy(label_reports(reports)).float()
    assert torch.equal(codes.isnan(), expected.isnan()) and torch.equal(codes.nan_to_num(9), expected.nan_to_num(9))
    assert cached == reports
    assert trainable.generate(images, num_beams=1, max_new_tokens=12, use_cache=False) == cached
    assert trainable.generate(images, num_beams=3, max_new_tokens=12) == reports


def test_structured_reports_round_trip() -> None:
    text = "ET tube 4 cm above the carina. Mild pulmonary edema. Small left pleural effusion. Heart size is normal."
    structured = structure_report(text)
    assert structured.startswith("Lungs and Airways:- Mild pulmonary edema.")
    assert "Pleura:- Small left pleural effusion." in structured
    assert structured.index("Pleura") < structured.index("Cardiovascular") < structured.index(ORGAN_SECTIONS[4])
    sentences = sorted(re.split(r"(?<=\.) ", text))
    assert sorted(re.split(r"(?<=\.) ", flatten_structured_report(structured))) == sentences


def test_pretrained_weights_get_the_lower_learning_rate(tmp_path) -> None:
    task = ReportGeneration(
        model="report-gen-demo", model_overrides=SMALL, optimizer={"lr": 1e-3}, pretrained_lr_multiplier=0.1
    )
    groups = task.configure_optimizers()["optimizer"].param_groups
    by_name = {g["name"]: g["lr"] for g in groups}
    assert by_name["model.backbone.text_encoder"] == pytest.approx(1e-4)
    assert by_name["base"] == pytest.approx(1e-3)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory):
    from medcl.data.prepare import prepare
    from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr

    root = tmp_path_factory.mktemp("report")
    generate_mimic_cxr(root / "mimic", n_subjects=40, seed=5, image_size=64, split_fractions=(0.6, 0.2, 0.2))
    return prepare("mimic-cxr", root / "mimic", root / "manifest.csv").manifest


def test_items_hold_views_prior_and_context(manifest) -> None:
    data = ReportDataModule(str(manifest), image_size=64, batch_size=4, num_workers=0, max_views=2)
    data.setup()
    records = data.records("train")
    assert len(records) == data.frames["train"]["study_id"].nunique()
    with_prior = [r for r in records if 2 in r["roles"]]
    assert with_prior and all(NO_PRIOR_REPORT not in r["context"] for r in with_prior)
    assert all(NO_PRIOR_REPORT in r["context"] for r in records if 2 not in r["roles"])
    batch = next(iter(data.train_dataloader()))
    assert batch["images"].shape[1:] == (3, 1, 64, 64)
    assert batch["view_mask"][:, 0].all()


def test_fit_and_test_write_generated_reports(manifest, tmp_path) -> None:
    seed_everything(0)
    data = ReportDataModule(str(manifest), image_size=64, batch_size=4, num_workers=0)
    task = ReportGeneration(model="report-gen-demo", model_overrides={**SMALL, "finding_prompt": True}, num_beams=2,
                            max_new_tokens=10, val_max_reports=4, output_dir=str(tmp_path),
                            contrastive_weight=0.5)  # fmt: skip
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, accelerator="cpu")  # fmt: skip
    trainer.fit(task, datamodule=data)
    assert {"train/contrastive_loss_step", "train/finding_loss_step"} <= set(trainer.logged_metrics)
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    assert {"test/BLEU_4", "test/ROUGE_L", "test/CIDEr", "test/rule_ce_14_micro_f1"} <= set(results)
    assert 0.0 <= results["test/prompt_ce_14_micro_f1"] <= 1.0  # the diagnosis head's own clinical efficacy
    assert not any(k.startswith("test/chexbert") for k in results)
    written = pd.read_csv(tmp_path / "generated_reports_test.csv", keep_default_na=False)
    assert len(written) == 4 and {"study_id", "reference", "generated", "BLEU_4", "rule_ce_f1"} <= set(written.columns)
