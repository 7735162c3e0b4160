"""CoGaze task end to end on a tiny synthetic MIMIC-CXR + EGD-CXR tree: gaze join, objective terms, evaluation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything

from medcl.data.cxr import CXRDataModule
from medcl.data.prepare import prepare
from medcl.data.synthetic.egd_cxr import generate_egd_cxr
from medcl.data.synthetic.gaze_reading import SENTENCES
from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr
from medcl.errors import ConfigError
from medcl.eval.gaze_agreement import gaze_inputs
from medcl.tasks.cogaze import CoGazePretraining

IMAGE_SIZE = 64
ORIGINAL = 1024
TINY = {
    "image": {"widths": [8, 8, 16, 16]},
    "text": {"num_hidden_layers": 1, "max_length": 48},
    "embed_dim": 32,
    "num_latents": 4,
    "head_dim": 8,
}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cogaze")
    generate_mimic_cxr(root / "mimic", n_subjects=30, seed=3, image_size=IMAGE_SIZE, original_size=ORIGINAL,
                       split_fractions=(0.5, 0.2, 0.3), workers=1)  # fmt: skip
    prepare("mimic-cxr", root / "mimic", root / "mimic.csv", progress=False, workers=1)
    generate_egd_cxr(root / "mimic", root / "egd", n_images=24, seed=3)
    prepare("egd-cxr", root / "egd", root / "egd.csv", progress=False, workers=1, mimic_root=str(root / "mimic"))
    return {"root": root, "manifest": root / "mimic.csv", "gaze": root / "egd.csv"}


def datamodule(tree: dict[str, Path], **kwargs) -> CXRDataModule:
    options = {"image_size": IMAGE_SIZE, "batch_size": 8, "num_workers": 0, "cache": "none"}
    data = CXRDataModule(str(tree["manifest"]), gaze_manifests=[str(tree["gaze"])], **{**options, **kwargs})
    data.setup()
    return data


def test_gaze_join_and_sentence_maps_land_on_their_findings(tree: dict[str, Path]) -> None:
    data = datamodule(tree)
    assert data.hparams.use_gaze
    joined = pd.concat(data.frames.values())
    assert (joined["gaze"] != "").sum() == len(pd.read_csv(tree["gaze"]))
    truth = pd.read_csv(tree["root"] / "mimic" / "synthetic_truth.csv", dtype={"dicom_id": str})
    scale = IMAGE_SIZE / ORIGINAL
    checked = landed = 0
    for split in ("train", "test"):
        for batch in data.loader(split, train=False):
            assert batch["gaze_sentences"].shape[:2] == batch["gaze_sentence_mask"].shape
            for i, image_id in enumerate(batch["image_id"]):
                boxes = truth[truth["dicom_id"] == image_id]
                for s, sentence in enumerate(batch["gaze_sentence_text"][i]):
                    finding = next((f for f, t in SENTENCES.items() for side in ("left", "right")
                                    if t.format(side=side) == sentence), None)  # fmt: skip
                    if finding is None or finding not in set(boxes["finding"]):
                        continue
                    heatmap = batch["gaze_sentences"][i, s]  # (W, H): x first, as MONAI loads 2-D files
                    x, y = divmod(int(heatmap.argmax()), IMAGE_SIZE)
                    mine = boxes[boxes["finding"] == finding]
                    inside = ((mine.x0 * scale - 3 <= x) & (x <= mine.x1 * scale + 3)
                              & (mine.y0 * scale - 3 <= y) & (y <= mine.y1 * scale + 3)).any()  # fmt: skip
                    checked += 1
                    landed += bool(inside)
    assert checked >= 5
    assert landed / checked >= 0.8, f"{landed}/{checked} sentence gaze peaks inside their finding's box"


def test_gaze_inputs_use_only_items_with_gaze() -> None:
    seed_everything(0)
    task = CoGazePretraining("cogaze-small", model_overrides=TINY, disease_counts=[1] * 14)
    patches = torch.randn(3, 4, 32)
    batch = {
        "gaze_present": torch.tensor([True, False, False]),
        "gaze_sentence_mask": torch.tensor([[True, True], [False, False], [True, False]]),
        "gaze_text": ["Heart big. Effusion.", "", ""],
        "gaze_sentence_text": [["Heart big.", "Effusion."], [], ["Nodule."]],
        "gaze": torch.rand(3, 1, 16, 16),
        "gaze_sentences": torch.rand(3, 2, 16, 16),
    }
    sentences, targets, mask, items, texts = gaze_inputs(batch, patches, task.model.encode_text)
    assert items.tolist() == [0, 2]
    assert mask.tolist() == [[True, True, True], [False, True, False]]
    assert sentences.shape == (2, 3, 32) and targets.shape == (2, 3, 4)
    assert float(targets[1, 0].abs().sum()) == 0 and float(sentences[1, 2].abs().sum()) == 0
    torch.testing.assert_close(targets[mask].sum(-1), torch.ones(int(mask.sum())))
    assert texts == [["Heart big. Effusion.", "Heart big.", "Effusion."], ["", "Nodule.", ""]]


def test_fit_test_reload_and_eval_cli(
    tree: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from mlflow import MlflowClient

    from medcl.tasks.checkpoint import load_task
    from medcl.tracking import MedclMLFlowLogger

    seed_everything(0)
    data = datamodule(tree)
    task = CoGazePretraining("cogaze-small", model_overrides=TINY, optimizer={"lr": 1e-3})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    art = str(tmp_path / "art")
    logger = MedclMLFlowLogger("test-cogaze", tracking_uri=uri, artifact_location=art, log_model=False)
    trainer = Trainer(max_steps=2, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, datamodule=data)
    metrics = trainer.callback_metrics
    for term in ("align", "gaze", "disease_image", "disease_text"):
        assert torch.isfinite(metrics[f"train/loss_{term}"]), term
    assert task.hparams.disease_counts == data.label_counts("train")
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    assert 0.0 <= results["test/gaze_auc"] <= 1.0 and results["test/gaze_pairs"] > 0
    assert 0.0 <= results["test/zeroshot_auroc_mean"] <= 1.0 and "test/i2t_R1" in results
    assert 0.0 <= results["test/disease_head_auroc_mean"] <= 1.0
    client = MlflowClient(uri)
    figures = {a.path for a in client.list_artifacts(logger.run_id, "figures")}
    assert figures == {f"figures/test_{n}.png" for n in ("gaze_overlays", "embedding_map", "retrieval_examples")}
    assert client.get_run(logger.run_id).data.metrics["test/gaze_auc"] == pytest.approx(results["test/gaze_auc"])

    path = tmp_path / "cogaze.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_task(str(path)).task
    assert isinstance(loaded, CoGazePretraining)
    assert loaded.hparams.disease_counts == task.hparams.disease_counts
    for key, value in task.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)

    # `medcl eval` on the checkpoint: manifests and image size come from the checkpoint's datamodule.
    from medcl.commands.eval import main as eval_main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    capsys.readouterr()
    assert eval_main(["linear-probe", "--ckpt", str(path), "--fractions", "0.5", "1", "--repeats", "1"]) == 0
    printed = capsys.readouterr().out
    assert "linear_probe/auroc_mean_100pct" in printed and "linear_probe/n_train_50pct" in printed
    assert eval_main(["gaze", "--ckpt", str(path), "--split", "test"]) == 0
    assert "gaze_auc" in capsys.readouterr().out


def test_convirt_baseline_optimises_only_the_contrast(tree: dict[str, Path]) -> None:
    seed_everything(0)
    data = datamodule(tree)
    task = CoGazePretraining("convirt-small", model_overrides=TINY, gaze_weight=0.0, image_disease_weight=0.0,
                             text_disease_weight=0.0, figures=False)  # fmt: skip
    trainer = Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0)  # fmt: skip
    trainer.fit(task, datamodule=data)
    logged = {k for k in trainer.callback_metrics if k.startswith("train/loss_")}
    assert {k.split("_", 1)[1] for k in logged if not k.endswith(("_step", "_epoch"))} == {"align"}


def test_disease_weights_need_heads() -> None:
    with pytest.raises(ConfigError, match="disease heads"):
        CoGazePretraining("convirt-small", model_overrides=TINY)
    with pytest.raises(ConfigError, match="cogaze"):
        CoGazePretraining("clip-cxr-demo")


@pytest.mark.slow
def test_paper_scale_config_runs_one_training_step_on_cpu() -> None:
    """RAD-DINO-sized frozen DINOv2 at 518 px (random weights offline), 6-layer BERT-base text, 128 latents."""
    seed_everything(0)
    overrides = {
        "image": {"pretrained": False},
        "text": {"name_or_path": "minilm", "pretrained": False, "max_length": 64,
                 "config_overrides": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}},
    }  # fmt: skip
    task = CoGazePretraining("cogaze", model_overrides=overrides, disease_counts=[5] * 14, optimizer={"lr": 5e-5})
    model = task.model
    assert model.image_encoder.net.config.image_size == 518 and model.image_encoder.net.config.patch_size == 14
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert len(model.text_encoder.net.encoder.layer) == 6 and model.shared_latents.shape == (128, 768)
    size = 518
    batch = {
        "image": torch.rand(2, 1, size, size),
        "text": ["There is a left pleural effusion.", "The heart is enlarged."],
        "context": ["[INDICATION] dyspnea [HISTORY] heart failure", ""],
        "has_context": torch.tensor([True, False]),
        "view": torch.tensor([0, 1]),
        "group_id": torch.tensor([1, 2]),
        "labels": torch.zeros(2, 14),
        "gaze_present": torch.tensor([True, False]),
        "gaze_text": ["There is a left pleural effusion.", ""],
        "gaze": torch.rand(2, 1, size, size),
        "gaze_sentences": torch.rand(2, 1, size, size),
        "gaze_sentence_mask": torch.tensor([[True], [False]]),
        "gaze_sentence_text": [["There is a left pleural effusion."], []],
    }
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=5e-5)
    before = model.shared_latents.detach().clone()
    terms, output = task.loss_terms(batch)
    loss = task.total_loss(terms)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and output.image_embedding.shape == (2, 768) and output.text_embedding.shape == (2, 768)
    assert set(terms) == {"align", "gaze", "disease_image", "disease_text"}
    assert not torch.equal(before, model.shared_latents.detach())
