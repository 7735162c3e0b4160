"""MLflow pyfunc wrappers: same outputs as the trained task, no pickle, signature + example, aliases, CLI."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import mlflow
import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from medcl.data.preprocessing import Preprocessing
from medcl.data.uploads import ImageLimits, ImageTooLargeError, UnsupportedMediaError, read_upload, redact
from medcl.deploy.image_text import radiograph_tensor
from medcl.deploy.mlflow_models import log_pyfunc
from medcl.deploy.pyfunc import Payload, example_nifti, example_png
from medcl.deploy.segmentation import segmentation_config
from medcl.errors import InvalidInputError

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
TINY = ['--model.init_args.model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}']


@pytest.fixture
def tracking(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    mlflow.set_tracking_uri(previous)


# -- uploads ------------------------------------------------------------------------------------------------------


def test_uploads_are_decoded_like_files_and_errors_never_name_the_client_file():
    image = read_upload(CT_SMALL.read_bytes(), "Doe_John.dcm")
    assert tuple(image.shape) == (1, 128, 128)
    assert image.meta["filename_or_obj"] == "upload"
    with pytest.raises(UnsupportedMediaError, match=r"'\.exe'"):
        read_upload(b"MZ", "scan.exe")
    with pytest.raises(InvalidInputError, match=r"^upload: ") as err:
        read_upload(CT_SMALL.read_bytes()[:3000], "Doe_John.dcm")
    assert "Doe_John" not in str(err.value) and "/tmp" not in str(err.value)


def test_dimensions_are_checked_from_the_header_before_decoding():
    ds = pydicom.dcmread(CT_SMALL)
    ds.Rows = ds.Columns = 60000  # header claims 3.6 G pixels; the pixel data is still 32 KiB
    buffer = io.BytesIO()
    ds.save_as(buffer)
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        read_upload(buffer.getvalue(), "bomb.dcm", limits=ImageLimits())
    with pytest.raises(ImageTooLargeError, match="axis of 128 exceeds the limit of 100"):
        read_upload(example_png(128), "x.png", limits=ImageLimits(max_side=100))


def test_header_text_values_are_redacted_from_messages():
    assert redact("bad value 'Doe^Jane' in PatientName", {"Doe^Jane", "x"}) == "bad value '<redacted>' in PatientName"


# -- image-text models ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(synthetic_cxr, tmp_path_factory):
    """`medcl fit` (1 epoch, tiny) with LogBestModel registering the best checkpoint as cxr-tiny@champion."""
    from medcl.commands.main import main

    root = tmp_path_factory.mktemp("fit")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous_env, previous_uri = os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    callback = {"class_path": "medcl.deploy.LogBestModel", "init_args": {"registered_name": "cxr-tiny"}}
    args = [
        "fit",
        "-c",
        str(Path(__file__).resolve().parents[2] / "configs" / "cxr" / "demo.yaml"),
        f"--data.init_args.manifest={synthetic_cxr['manifest']}",
        "--data.init_args.image_size=64",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
        *TINY,
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={root / 'run'}",
        f"--checkpoint.dirpath={root / 'run' / 'checkpoints'}",
        f"--trainer.callbacks=[{json.dumps(callback)}]",
    ]
    try:
        assert main(args) == 0
        yield {"uri": uri, "root": root, "best": next((root / "run" / "checkpoints").glob("epoch=*.ckpt"))}
    finally:
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def predict_png(model_uri: str, png: Path) -> pd.DataFrame:
    return mlflow.pyfunc.load_model(model_uri).predict(
        pd.DataFrame({"content": [png.read_bytes()], "filename": ["x.jpg"]})
    )


def test_fit_logs_best_model_and_medcl_register_promotes_it(fitted, synthetic_cxr, monkeypatch):
    """The best checkpoint is logged into the training run with signature and example, registered with an alias,
    reproduces the task's embeddings and zero-shot scores, and `medcl register --run` promotes it."""
    from mlflow import MlflowClient

    from medcl.commands.main import main
    from medcl.data import load_image
    from medcl.deploy.callbacks import load_checkpoint_weights
    from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings, zero_shot_scores
    from medcl.tasks import ImageTextPretraining

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fitted["uri"])
    mlflow.set_tracking_uri(fitted["uri"])
    client = MlflowClient(fitted["uri"])
    version = client.get_model_version_by_alias("cxr-tiny", "champion")
    assert client.get_run(version.run_id).data.params["trainer.max_epochs"] == "1"  # logged into the training run
    info = mlflow.models.get_model_info("models:/cxr-tiny@champion")
    assert [c.name for c in info.signature.inputs.inputs] == ["content", "filename"]
    assert info.saved_input_example_info is not None
    model_dir = Path(
        mlflow.artifacts.download_artifacts("models:/cxr-tiny@champion", dst_path=str(fitted["root"] / "m"))
    )
    assert not list(model_dir.rglob("*.pkl"))  # models-from-code: nothing is unpickled on load

    task = ImageTextPretraining(model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32})
    load_checkpoint_weights(task, fitted["best"])
    task.eval()
    png = synthetic_cxr_png(synthetic_cxr)
    out = predict_png("models:/cxr-tiny@champion", png)
    with torch.no_grad():
        expected = task.model.encode_image(radiograph_tensor(load_image(png), 64))[0]
        classes = list(task.hparams.zero_shot_classes)
        positive, negative = class_prompt_embeddings(task.model.encode_text, {c: PROMPTS[c] for c in classes})
        scores = zero_shot_scores(expected[None], positive, negative, 1 / float(task.loss.temperature))[0]
    np.testing.assert_allclose(out["embedding"][0], expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(out[classes].to_numpy()[0], scores.numpy(), atol=1e-5)

    assert main(["register", "--run", version.run_id, "--name", "cxr-tiny", "--alias", "staging"]) == 0
    staging = client.get_model_version_by_alias("cxr-tiny", "staging")
    assert staging.version != version.version and staging.source == version.source
    assert main(["register", "--run", "0" * 32, "--name", "nothing"]) == 2


@pytest.mark.slow
def test_medcl_register_from_a_checkpoint_logs_the_same_model(fitted, synthetic_cxr, monkeypatch):
    from medcl.commands.main import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fitted["uri"])
    mlflow.set_tracking_uri(fitted["uri"])
    assert main(["register", "--ckpt", str(fitted["best"]), "--name", "cxr-from-ckpt"]) == 0
    png = synthetic_cxr_png(synthetic_cxr)
    from_ckpt = predict_png("models:/cxr-from-ckpt@champion", png)
    np.testing.assert_allclose(
        from_ckpt["embedding"][0], predict_png("models:/cxr-tiny@champion", png)["embedding"][0], atol=1e-5
    )


def synthetic_cxr_png(synthetic_cxr) -> Path:
    return next(Path(synthetic_cxr["root"]).rglob("*.jpg"))


# -- segmentation models -------------------------------------------------------------------------------------------


def test_segmentation_pyfunc_maps_labels_back_onto_the_input_geometry(tmp_path, tracking):
    """A 1x1x1 conv thresholding intensity: the label map must equal the threshold of the input, on the input's
    own grid, although the input is LPS-oriented and resampled to another spacing inside."""
    from medcl.models.factory import register_architecture

    def threshold_net(in_channels: int = 1) -> torch.nn.Module:
        net = torch.nn.Conv3d(in_channels, 2, 1)
        with torch.no_grad():
            net.weight[:] = torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1, 1)
            net.bias[:] = torch.tensor([0.5, -0.5])
        return net

    register_architecture("test_threshold")(threshold_net)  # test code registers it; a config cannot
    spec = {"architecture": "test_threshold", "in_channels": 1}
    config = segmentation_config(
        spec,
        Preprocessing(pixdim=(2.0, 2.0, 2.0), intensity_range=(0.0, 100.0)),
        roi_size=(24, 24, 24),
        labels={0: "background", 1: "bright"},
    )
    payload = Payload("segmentation", config, {"weights": threshold_net().state_dict()}, (example_nifti(), "x.nii"))
    logged = log_pyfunc(payload, registered_name="threshold")
    assert logged.registered == "models:/threshold@champion"
    volume = np.zeros((30, 26, 17), np.float32)
    volume[4:14, 5:20, 3:12] = 100.0  # an off-centre bright box
    affine = np.array([[-1.5, 0, 0, 20], [0, -1.2, 0, 30], [0, 0, 2.5, -40], [0, 0, 0, 1]])  # LPS, anisotropic
    raw = io.BytesIO()
    image = nib.Nifti1Image(volume, affine)
    image.to_file_map(nib.Nifti1Image.make_file_map({"image": raw, "header": raw}))
    model = mlflow.pyfunc.load_model("models:/threshold@champion")
    out = model.predict(pd.DataFrame({"content": [raw.getvalue()], "filename": ["ct.nii"]}))
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(out["segmentation"][0]))
    assert labels.shape == volume.shape
    np.testing.assert_allclose(labels.affine, affine, atol=1e-5)
    truth = volume > 50
    predicted = np.asarray(labels.dataobj) == 1
    dice = 2 * (truth & predicted).sum() / (truth.sum() + predicted.sum())
    assert dice > 0.85
    with pytest.raises(InvalidInputError, match="expected a 3-D volume"):
        model.unwrap_python_model().segment(read_upload(example_png(), "x.png"))


# -- promotion -------------------------------------------------------------------------------------------------------


def test_the_alias_moves_only_to_a_better_model_or_when_forced(tmp_path, tracking):
    from mlflow import MlflowClient

    from medcl.deploy.image_text import ImageEmbedder
    from medcl.deploy.mlflow_models import Score, register

    image = {"type": "monai_resnet", "depth": 10, "widths": [4, 4, 8, 8], "in_channels": 1}
    config = {"name": "tiny", "image": image, "embed_dim": 8, "image_size": 32, "classes": ["Edema"],
              "logit_scale": 10.0}  # fmt: skip
    prototypes = {"positive": torch.ones(1, 8) / 8**0.5, "negative": -torch.ones(1, 8) / 8**0.5}
    payload = Payload("image_text", config, {"weights": ImageEmbedder(image, 8).state_dict(),
                                             "prototypes": prototypes}, (example_png(32), "x.png"))  # fmt: skip
    uri = log_pyfunc(payload).model_uri
    client = MlflowClient(tracking)

    def champion() -> str:
        return str(client.get_model_version_by_alias("promo", "champion").version)

    auc = "val/zeroshot_auroc_mean"
    assert register(uri, "promo", score=Score(auc, 0.80)) == "models:/promo@champion"
    assert register(uri, "promo", score=Score(auc, 0.75)) == "models:/promo/2" and champion() == "1"
    assert register(uri, "promo") == "models:/promo/3" and champion() == "1"  # unscored never replaces a champion
    assert register(uri, "promo", score=Score("val/loss", 0.1, "min")) == "models:/promo/4"  # another yardstick
    assert register(uri, "promo", score=Score(auc, 0.85)) == "models:/promo@champion" and champion() == "5"
    assert register(uri, "promo", score=Score(auc, 0.10), force=True) == "models:/promo@champion"
    assert champion() == "6"
    assert client.get_model_version("promo", "2").tags["medcl.metric_value"] == "0.75"
