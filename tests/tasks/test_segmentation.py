"""Segmentation fine-tuning: metrics, initialisation reports, 2D from CXR encoders, and the CLI end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import pytest
import torch
from monai.inferers import SliceInferer
from torch import nn

from medcl.commands.main import main
from medcl.errors import ConfigError, InvalidInputError
from medcl.models.image_encoders import MonaiResNetEncoder
from medcl.tasks.segmentation import Segmentation, class_overlay, overlay_figure
from medcl.tasks.voco import VoCoPretraining

torch.set_num_threads(1)
TINY = {"features": [4, 4, 8, 8, 16, 4]}


class _Oracle(nn.Module):
    """Returns confident logits for the class stored in the image: perfect predictions for the metric test."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.classes = classes

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(images[:, 0].long(), self.classes).movedim(-1, 1).float() * 10


def _segmentation(**kwargs) -> Segmentation:
    defaults = {"model": "unet3d-small", "num_classes": 3, "model_overrides": TINY, "roi_size": (32, 32, 32)}
    return Segmentation(**{**defaults, **kwargs})


def test_dice_and_hd95_per_class_on_perfect_and_shifted_predictions():
    task = _segmentation(class_names=["organ", "lesion"])
    label = torch.zeros(1, 1, 24, 24, 16)
    label[:, :, 4:12, 4:12, 4:12] = 1
    label[:, :, 14:20, 14:20, 6:10] = 2
    task.network = _Oracle(3)
    task.predict_logits = lambda images: task.network(images)  # whole-volume oracle, no windows needed
    task.dice.reset()
    task.evaluation_step({"image": label, "label": label}, 1, "test")
    metrics = task.evaluation_metrics()
    assert metrics["dice/organ"] == pytest.approx(1.0) and metrics["dice/lesion"] == pytest.approx(1.0)
    assert metrics["hd95/organ"] == pytest.approx(0.0) and metrics["dice_mean"] == pytest.approx(1.0)
    shifted = torch.roll(label, shifts=2, dims=2)
    task.evaluation_step({"image": shifted, "label": label}, 1, "test")
    metrics = task.evaluation_metrics()
    assert 0.5 < metrics["dice/organ"] < 1.0 and metrics["hd95/organ"] == pytest.approx(2.0)


def test_sliding_window_inference_covers_whole_volumes():
    task = _segmentation()
    logits = task.predict_logits(torch.rand(1, 1, 40, 36, 20))
    assert logits.shape == (1, 3, 40, 36, 20)
    loss = task.training_step(
        {"image": torch.rand(2, 1, 32, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32, 32))}, 0
    )
    assert torch.isfinite(loss)
    with pytest.raises(InvalidInputError, match="num_classes"):
        task.training_step({"image": torch.rand(1, 1, 16, 16, 16), "label": torch.full((1, 1, 16, 16, 16), 5.0)}, 0)
    with pytest.raises(InvalidInputError, match="3 input channel\\(s\\) but the network takes 1"):
        task.training_step({"image": torch.rand(1, 3, 16, 16, 16), "label": torch.zeros(1, 1, 16, 16, 16)}, 0)


def test_2d_and_2_5d_networks_predict_volumes_slice_by_slice():
    volumes = torch.rand(2, 1, 40, 40, 5)
    flat = Segmentation(model="unet2d-small", num_classes=3, model_overrides=TINY, roi_size=(32, 32), sw_overlap=0.25)
    flat.eval()
    logits = flat.predict_logits(volumes)
    assert logits.shape == (2, 3, 40, 40, 5)
    inferer = SliceInferer(roi_size=(32, 32), sw_batch_size=4, overlap=0.25, mode="gaussian", spatial_dim=2)
    with torch.no_grad():
        torch.testing.assert_close(logits, inferer(volumes, flat.network), atol=1e-5, rtol=1e-4)  # MONAI's own

    stacked = Segmentation(
        model="unet2d-small", num_classes=3, model_overrides={**TINY, "in_channels": 3}, roi_size=(40, 40)
    ).eval()
    logits = stacked.predict_logits(volumes)
    with torch.no_grad():  # plain reference: slice z with its clamped neighbours as channels, one window per slice
        for z in range(5):
            neighbours = [volumes[..., min(max(z + d, 0), 4)] for d in (-1, 0, 1)]
            torch.testing.assert_close(logits[..., z], stacked.network(torch.cat(neighbours, 1)), atol=1e-5, rtol=1e-4)
    with pytest.raises(InvalidInputError, match="not 2k \\+ 1 slices"):
        stacked.predict_logits(torch.rand(1, 2, 40, 40, 5))


def test_init_from_a_voco_checkpoint_reports_a_full_encoder_match(tmp_path, capsys):
    pretrained = VoCoPretraining(model="unet3d-small", model_overrides=TINY, hidden_dim=16, embed_dim=8)
    torch.save({"state_dict": pretrained.state_dict()}, tmp_path / "voco.ckpt")
    task = _segmentation(init_from=str(tmp_path / "voco.ckpt"))
    assert task.init_report.matched_fraction == 1.0 and not task.init_report.missing
    assert "matched 40 (100.0% of model keys)" in capsys.readouterr().out
    assert torch.equal(task.network.down_4.convs.conv_1.conv.weight, pretrained.encoder.down_4.convs.conv_1.conv.weight)
    with pytest.raises(InvalidInputError, match="shape-mismatched"):
        _segmentation(model_overrides={"features": [8, 8, 8, 8, 16, 4]}, init_from=str(tmp_path / "voco.ckpt"))
    with pytest.raises(ConfigError):
        _segmentation(num_classes=3, class_names=["only one"])


def test_2d_segmentation_from_the_cxr_image_tower(tmp_path):
    tower = MonaiResNetEncoder(depth=10, widths=(32, 64, 128, 256))
    torch.save(
        {"state_dict": {f"model.image_encoder.{k}": v for k, v in tower.state_dict().items()}}, tmp_path / "c.ckpt"
    )
    task = Segmentation(model="resnet-unet-cxr", num_classes=2, init_from=str(tmp_path / "c.ckpt"), roi_size=(64, 64))
    assert task.init_report.matched_fraction == 1.0
    logits = task.predict_logits(torch.rand(1, 1, 64, 64))
    assert logits.shape == (1, 2, 64, 64)
    figure = overlay_figure(torch.rand(64, 64), torch.zeros(64, 64), torch.ones(64, 64), num_classes=2)
    assert len(figure.axes) == 3


def test_class_overlay_blends_one_fixed_colour_per_class_over_the_grey_image():
    import matplotlib

    image = torch.linspace(-1.0, 3.0, 48).view(8, 6)
    label = torch.zeros(8, 6)
    label[1, 2], label[4, 4], label[6, 0] = 1, 2, 11
    grey = (image - image.min()) / (image.max() - image.min())
    rgb = class_overlay(image, label, num_classes=3)
    assert rgb.shape == (3, 8, 6)
    background = label == 0
    assert torch.equal(rgb[:, background], grey[background].expand(3, -1))  # background: the image itself
    tab10 = torch.tensor(matplotlib.colormaps["tab10"].colors, dtype=torch.float32)
    for (x, y), colour in (((1, 2), tab10[0]), ((4, 4), tab10[1]), ((6, 0), tab10[0])):  # 11 wraps to colour 1
        torch.testing.assert_close(rgb[:, x, y], 0.5 * grey[x, y] + 0.5 * colour)
    tab20 = torch.tensor(matplotlib.colormaps["tab20"].colors, dtype=torch.float32)
    torch.testing.assert_close(class_overlay(image, label, num_classes=14)[:, 6, 0], 0.5 * grey[6, 0] + 0.5 * tab20[10])


@pytest.mark.parametrize(
    ("pretraining", "pretraining_args", "pretraining_metric", "finetuning", "finetuning_dir"),
    [
        ("voco-small", ["--model.init_args.hidden_dim", "32", "--model.init_args.embed_dim", "16"], "train/position",
         "unet-small", "seg-small"),
        ("chaitanya-global-small", [], "train/loss_step", "unet2d-slices-small", "seg-slices-small"),
    ],
    ids=["voco-3d", "chaitanya-slices"],
)  # fmt: skip
def test_cli_pretraining_then_few_label_finetuning_logs_to_mlflow(
    pretraining, pretraining_args, pretraining_metric, finetuning, finetuning_dir, tmp_path, monkeypatch
):
    """`medcl fit -c configs/volume/<pretraining>.yaml` then `medcl fit -c configs/seg/<finetuning>.yaml
    --model.init_from` on a tiny synthetic BTCV tree: the encoder must load fully and both runs must land in MLflow
    (3D VoCo -> 3D U-Net; Chaitanya global stage -> 2D U-Net on axial slices, scored on whole volumes)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    configs = Path(__file__).resolve().parents[2] / "configs"
    # The configs' data: `medcl data synth` + `medcl data prepare` into the manifest they expect (smaller volumes).
    tree = "demo_out/btcv/synthetic-btcv"
    options = ["--option", "n_train=4", "--option", "n_test=1", "--option", "shape=[40, 40, 24]"]
    assert main(["data", "synth", "btcv", "--out", tree, *options]) == 0
    prepare = ["data", "prepare", "btcv", "--root", tree, "--out", "demo_out/btcv/manifest.csv", "--workers", "1"]
    assert main(prepare) == 0
    common = ["--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1"]
    main(["fit", "-c", str(configs / "volume" / f"{pretraining}.yaml"), *common, *pretraining_args])
    checkpoint = tmp_path / "demo_out" / pretraining / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    finetune = ["fit", "-c", str(configs / "seg" / f"{finetuning}.yaml"), *common, "--trainer.val_check_interval", "2"]
    main([*finetune, "--model.init_args.init_from", str(checkpoint)])
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["medcl-volume"])
    seg = runs[runs["tags.mlflow.runName"] != pretraining].iloc[0]
    pretrained = runs[runs["tags.mlflow.runName"] == pretraining].iloc[0]
    assert seg["metrics.init/matched_fraction"] == 1.0 and seg["metrics.init/missing"] == 0
    assert not math.isnan(seg["metrics.val/dice_mean"]) and "metrics.val/hd95/liver" in runs
    assert not math.isnan(pretrained[f"metrics.{pretraining_metric}"])
    client = mlflow.MlflowClient()
    artifacts = {a.path for a in client.list_artifacts(seg["run_id"])}
    assert {"init", "overlays", "config.yaml"} <= artifacts
    report = client.download_artifacts(seg["run_id"], "init/key_match_report.txt", str(tmp_path))
    assert "100.0% of model keys" in Path(report).read_text()
    run_file = json.loads((tmp_path / "demo_out" / finetuning_dir / "checkpoints" / "mlflow_run.json").read_text())
    assert run_file["run_id"] == seg["run_id"]
