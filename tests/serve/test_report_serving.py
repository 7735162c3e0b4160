"""Report generation served: LogBestModel logs a report task, the pyfunc reproduces the task, `/v1/report` works."""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pydicom
import pytest
import torch
import uvicorn
from lightning.pytorch import LightningDataModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ModelCheckpoint
from pydicom.data import get_testdata_file
from torch.utils.data import DataLoader, default_collate

from medcl.data.text.reports import ROLES, context_prompt
from medcl.data.uploads import read_upload
from medcl.deploy.callbacks import LogBestModel, load_checkpoint_weights
from medcl.deploy.image_text import radiograph_tensor
from medcl.deploy.pyfunc import example_png
from medcl.deploy.report import ReportPyfunc
from medcl.tasks.report import ReportGeneration

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
PHI_NAME, PHI_ID = "Qazwsx^Plokmijn", "MRN-5550199-PHI"
IMAGE_SIZE = 64
# A generator small enough to train and serve in seconds: narrow ResNet-10, 1-layer random BERT for the context,
# 2-layer random GPT-2 with the packaged byte-level BPE tokenizer.
TINY_GENERATOR = {
    "backbone_overrides": {
        "image": {"widths": [8, 8, 16, 16]},
        "text": {"pretrained": False, "num_hidden_layers": 1,
                 "config_overrides": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2}},
        "embed_dim": 16,
    },
    "decoder": {"config_overrides": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 64}},
}  # fmt: skip
REPORTS = ["Moderate cardiomegaly. Small left pleural effusion.", "No acute cardiopulmonary process."]


class TinyStudies(LightningDataModule):
    """Four two-view studies of random pixels in the batch layout of ReportDataModule (hparams: image_size)."""

    def __init__(self, image_size: int = IMAGE_SIZE) -> None:
        super().__init__()
        self.save_hyperparameters()

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(0)
        items = [
            {
                "images": torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
                "view_mask": torch.tensor([True, i % 2 == 0]),
                "view_role": torch.tensor([ROLES["current"], ROLES["other_view"]]),
                "context": context_prompt("cough" if i % 2 else None, None),
                "text": REPORTS[i % 2],
                "study_id": str(i),
            }
            for i in range(4)
        ]
        return DataLoader(items, batch_size=4, collate_fn=default_collate)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """Two epochs of a tiny report task; LogBestModel logs the best checkpoint and registers it @champion.

    The monitored loss is *maximised* so that the best checkpoint is epoch 0 and differs from the final weights:
    the served model must be the checkpoint's. As in ``pipelines/``, a parent run is active while the training
    logs into its own run (the logger's), and the model must land in the latter.
    """
    from medcl.tracking import MedclMLFlowLogger

    root = tmp_path_factory.mktemp("report-serving")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    seed_everything(0)
    task = ReportGeneration(
        model_overrides=TINY_GENERATOR, optimizer={"lr": 3e-3}, num_beams=2, max_new_tokens=6, min_new_tokens=3
    )
    checkpoint = ModelCheckpoint(dirpath=root / "checkpoints", monitor="train/loss_epoch", mode="max")
    log_best = LogBestModel(registered_name="medcl-report-tiny")
    trainer = Trainer(
        max_epochs=2,
        logger=MedclMLFlowLogger(experiment_name="report-serving", tracking_uri=uri, log_model=False),
        callbacks=[checkpoint, log_best],
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )
    try:
        with mlflow.start_run(run_name="pipeline") as parent:
            trainer.fit(task, datamodule=TinyStudies())
            assert mlflow.active_run().info.run_id == parent.info.run_id  # the parent is still the active run
        assert log_best.logged is not None and log_best.logged.run_id == trainer.logger.run_id != parent.info.run_id
        yield {"uri": uri, "root": root, "logged": log_best.logged, "best": checkpoint.best_model_path, "final": task}
    finally:
        mlflow.set_tracking_uri(previous)


def best_task(fitted) -> ReportGeneration:
    seed_everything(0)
    task = ReportGeneration(model_overrides=TINY_GENERATOR, num_beams=2, max_new_tokens=6, min_new_tokens=3)
    load_checkpoint_weights(task, fitted["best"])
    return task.eval()


def dicom_bytes(**elements: object) -> bytes:
    """CT_small.dcm with ``elements`` set (a patient's name and id, a display window)."""
    ds = pydicom.dcmread(CT_SMALL)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def phi_dicom() -> bytes:
    return dicom_bytes(PatientName=PHI_NAME, PatientID=PHI_ID)


def test_logged_report_model_loads_offline_and_generates_what_the_task_generates(fitted, tmp_path, monkeypatch):
    from medcl.data.image_io import load_image
    from medcl.data.report import ViewStack
    from medcl.models import report_generator, text_encoders

    logged = fitted["logged"]
    assert logged is not None and logged.registered == "models:/medcl-report-tiny@champion"
    info = mlflow.models.get_model_info(logged.registered)
    assert [c.name for c in info.signature.inputs.inputs] == ["content", "filename"]
    assert [c.name for c in info.signature.outputs.inputs] == ["report"]
    assert info.saved_input_example_info is not None
    folder = Path(mlflow.artifacts.download_artifacts(logged.registered, dst_path=str(tmp_path / "model")))
    assert not list(folder.rglob("*.pkl"))  # models-from-code: nothing is unpickled on load
    assert (folder / "artifacts" / "hf" / "decoder" / "tokenizer.json").is_file()

    # Loading uses the logged configs and tokenizers only: no packaged tokenizer, no MiniLM package (and no hub:
    # tests/conftest.py sets HF_HUB_OFFLINE).
    monkeypatch.setattr(report_generator, "OFFLINE_TOKENIZERS", {})
    monkeypatch.setattr(text_encoders, "OFFLINE_TEXT_MODEL", "<not available>")
    served = mlflow.pyfunc.load_model(str(folder))
    assert isinstance(served.unwrap_python_model(), ReportPyfunc)
    png_path = tmp_path / "chest.png"
    png_path.write_bytes(example_png(96))
    dicom = dicom_bytes(WindowCenter=40, WindowWidth=400)  # a soft-tissue window: the VOI LUT clips intensities
    (tmp_path / "windowed.dcm").write_bytes(dicom)
    out = served.predict(pd.DataFrame({"content": [png_path.read_bytes(), dicom], "filename": ["a.png", "b.dcm"]}))
    monkeypatch.undo()

    # Reference 1: the training data path (ViewStack, padded view slots, absence-token context) on the best weights.
    task = best_task(fitted)
    study = ViewStack(IMAGE_SIZE, train=False, slots=3)(
        {"views": [str(png_path)], "roles": [ROLES["current"]], "context": context_prompt("", ""), "study_id": "1"}
    )
    batch = default_collate([study])
    expected_png = task.generate(batch)[0]
    # The decoder attends to the same memory: the anchor view's tokens and the absence context, nothing else.
    wrapper = served.unwrap_python_model()
    with torch.no_grad():
        memory, mask = wrapper.model.memory(**wrapper.generator_inputs(read_upload(png_path.read_bytes(), "a.png")))
        reference, reference_mask = task.model.memory(
            batch["images"], batch["context"], batch["view_mask"], batch["view_role"]
        )
    torch.testing.assert_close(memory[mask], reference[reference_mask], atol=1e-5, rtol=1e-5)
    # Reference 2: the DICOM displayed through its VOI LUT / window (as CXR training data is), via the task's generate.
    image = radiograph_tensor(load_image(tmp_path / "windowed.dcm", voi_lut=True), IMAGE_SIZE)
    expected_dicom = task.generate({"images": image, "context": [context_prompt(None, None)]})[0]
    with torch.no_grad():
        memory, mask = wrapper.model.memory(**wrapper.generator_inputs(wrapper.decode(dicom, "b.dcm")))
        reference, reference_mask = task.model.memory(image, [context_prompt(None, None)])
    torch.testing.assert_close(memory[mask], reference[reference_mask], atol=1e-5, rtol=1e-5)
    assert out["report"].tolist() == [expected_png, expected_dicom]
    assert all(isinstance(text, str) and text for text in out["report"])

    # The served weights are the best checkpoint's (epoch 0), not the weights the task ended training with.
    assert Path(fitted["best"]).name.startswith("epoch=0")
    served_state = served.unwrap_python_model().model.state_dict()
    for name, value in task.model.state_dict().items():
        torch.testing.assert_close(served_state[name], value, rtol=0, atol=0, msg=name)
    final = fitted["final"].model.state_dict()
    assert any(not torch.equal(served_state[k], final[k]) for k in final)


def test_hf_towers_are_rebuilt_from_the_logged_configs_alone(tmp_path):
    """A generator on the paper-scale `convirt` backbone (a DINOv2 image tower named `microsoft/rad-dino`, which does
    not resolve offline) with the diagnosis prompt is rebuilt from the saved configs and tokenizers alone and takes
    its state dict strictly."""
    from medcl.deploy.report import offline_generator_spec, save_hf_components
    from medcl.models import create_model, model_config
    from medcl.models.report_generator import ReportGenerator

    dino = {"image_size": IMAGE_SIZE, "patch_size": 16, "hidden_size": 32, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_channels": 1}  # fmt: skip
    backbone = {
        "image": {"pretrained": False, "frozen": False, "config_overrides": dino},
        "text": {**TINY_GENERATOR["backbone_overrides"]["text"], "name_or_path": "minilm"},
        "embed_dim": 16, "num_latents": 4, "perceiver_depth": 1, "cross_heads": 2, "latent_heads": 2, "head_dim": 8,
    }  # fmt: skip
    # With the diagnosis prompt: its head and prompt embeddings travel in the state dict like any other weight.
    overrides = {**TINY_GENERATOR, "backbone": "convirt", "backbone_overrides": backbone, "finding_prompt": True}
    seed_everything(0)
    generator = create_model("report-gen-demo", **overrides).eval()
    save_hf_components(generator, tmp_path / "hf")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["decoder", "image", "text"]

    spec = offline_generator_spec(model_config("report-gen-demo", **overrides), tmp_path / "hf")
    assert spec["backbone_overrides"]["image"]["name_or_path"] == str(tmp_path / "hf" / "image")
    rebuilt = ReportGenerator(**spec).eval()
    rebuilt.load_state_dict(generator.state_dict())  # strict: same architecture, vocabularies and special tokens
    images = torch.rand(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    context = [context_prompt(None, None)]
    settings = {"num_beams": 1, "max_new_tokens": 4}
    assert rebuilt.generate(images, context, **settings) == generator.generate(images, context, **settings)


@contextmanager
def service_over_http(settings) -> Iterator[str]:
    """The service app under uvicorn on a free loopback port, in a thread of this process (the `medcl serve`
    subprocess of conftest.py would import torch and friends again: ~15 s); yields its URL once /ready is 200."""
    from medcl.serve.app import create_app
    from medcl.serve.loadgen import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, access_log=False))
    thread = threading.Thread(target=server.run, name="report-service", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        else:
            raise TimeoutError("the report service did not become ready")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_report_endpoint_answers_png_and_dicom_over_http(fitted, monkeypatch, caplog):
    from medcl.serve.app import ServeSettings

    monkeypatch.setenv("MLFLOW_TRACKING_URI", fitted["uri"])
    caplog.set_level(logging.INFO)
    token = secrets.token_urlsafe(24)
    settings = ServeSettings(models=["models:/medcl-report-tiny@champion"], token=token)
    with service_over_http(settings) as url:

        def post(endpoint: str, filename: str, content: bytes, auth: bool = True) -> httpx.Response:
            headers = {"Authorization": f"Bearer {token}"} if auth else {}
            return httpx.post(f"{url}{endpoint}", files={"file": (filename, content)}, headers=headers, timeout=120)

        ready = httpx.get(f"{url}/ready", timeout=10).json()
        assert ready["models"][0]["capabilities"] == ["report"]
        assert ready["models"][0]["generation"]["num_beams"] == 2
        png = post("/v1/report", "chest.png", example_png(96))
        assert png.status_code == 200, png.text
        assert isinstance(png.json()["report"], str) and png.json()["report"].strip()
        dicom = post("/v1/report", "ct.dcm", CT_SMALL.read_bytes())
        assert dicom.status_code == 200, dicom.text
        assert dicom.json()["report"].strip()

        # Text from pixels only: the same pixels under a patient's name and id give the same report, and neither
        # the response nor the service log repeats them.
        phi_file = f"{PHI_NAME.replace('^', '_')}.dcm"
        with_phi = post("/v1/report", phi_file, phi_dicom())
        assert with_phi.status_code == 200
        assert with_phi.json() == dicom.json()

        missing_token = post("/v1/report", "ct.dcm", CT_SMALL.read_bytes(), auth=False)
        assert missing_token.status_code == 401
        notes = post("/v1/report", "notes.dcm", b"Patient seen in clinic, doing well.\n" * 50)
        assert notes.status_code == 422
        assert notes.json()["detail"].startswith("upload: ") and "DICOM" in notes.json()["detail"]
        assert "notes.dcm" not in notes.json()["detail"]
        no_embedder = post("/v1/embed", "chest.png", example_png(96))
        assert no_embedder.status_code == 404 and "/v1/report" in no_embedder.json()["detail"]
    log = caplog.text
    assert "/v1/report 200" in log and "/v1/report 401" in log and "/v1/report 422" in log
    for needle in (PHI_NAME, PHI_ID, PHI_NAME.split("^")[0], phi_file):
        assert needle not in with_phi.text and needle not in log
