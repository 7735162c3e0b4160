"""Export: a MONAI bundle that `python -m monai.bundle run` executes, and TorchScript."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer

from medcl.data.volume import SegmentationDataModule
from medcl.deploy.bundle import export_bundle, network_definition, torchscript
from medcl.errors import ConfigError, InvalidInputError
from medcl.tasks.segmentation import Segmentation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 1-step Segmentation checkpoint trained on LPS-stored volumes with a non-trivial spacing."""
    root = tmp_path_factory.mktemp("export")
    rows = []
    for i, split in enumerate(["train", "train", "val"]):
        image = np.full((36, 30, 20), -900, dtype=np.int16)
        image[8:20, 6:18, 4:14] = 120
        affine = np.diag([-1.2, -1.2, 2.5, 1.0])  # LPS on disk: the bundle must reorient and invert
        nib.save(nib.Nifti1Image(image, affine), root / f"img{i}.nii.gz")
        nib.save(nib.Nifti1Image((image > 0).astype(np.uint8), affine), root / f"lab{i}.nii.gz")
        rows.append(
            {
                "image": str(root / f"img{i}.nii.gz"),
                "label": str(root / f"lab{i}.nii.gz"),
                "image_id": str(i),
                "subject_id": str(i),
                "split": split,
            }
        )
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    data = SegmentationDataModule(
        str(root / "manifest.csv"), roi_size=(32, 32, 32), pixdim=(1.5, 1.5, 2.0), batch_size=1
    )
    _fit_one_step(data, "unet3d-small", (32, 32, 32), {"features": [4, 4, 8, 8, 16, 4]}, root / "seg.ckpt")
    return root


def _fit_one_step(data: SegmentationDataModule, model: str, roi: tuple, overrides: dict, path) -> None:
    task = Segmentation(
        model=model,
        num_classes=2,
        model_overrides=overrides,
        roi_size=roi,
        class_names=["organ"],
        overlay_every_n_epochs=0,
    )
    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        default_root_dir=path.parent,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(path)


@pytest.fixture(scope="module")
def slice_checkpoints(checkpoint):
    """2D (slice_context 0) and 2.5D (slice_context 1) networks trained on axial slices of the same volumes."""
    for context in (0, 1):
        data = SegmentationDataModule(
            str(checkpoint / "manifest.csv"), roi_size=(32, 32), slice_context=context, pixdim=(1.5, 1.5, 2.0)
        )
        overrides = {"features": [4, 4, 8, 8, 16, 4], "in_channels": 2 * context + 1}
        _fit_one_step(data, "unet2d-small", (32, 32), overrides, checkpoint / f"slices{context}.ckpt")
    return checkpoint


def test_bundle_runs_with_monai_bundle_and_writes_a_segmentation(checkpoint, tmp_path):
    summary = export_bundle(checkpoint / "seg.ckpt", tmp_path / "bundle", torchscript_model=False)
    assert summary["torchscript"] == "skipped"  # covered by the next test
    meta = json.loads((tmp_path / "bundle" / "configs" / "metadata.json").read_text())
    for key in (
        "version",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
    ):
        assert key in meta
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "background", "1": "organ"}
    config = json.loads((tmp_path / "bundle" / "configs" / "inference.json").read_text())
    spacing = next(t for t in config["preprocessing"]["transforms"] if t["_target_"] == "Spacingd")
    assert spacing["pixdim"] == [1.5, 1.5, 2.0]  # taken from the training datamodule

    _run_bundle_on(checkpoint / "img2.nii.gz", tmp_path)


def _run_bundle_on(image, tmp_path) -> None:
    """`python -m monai.bundle run` on one volume: the segmentation must come back on the input's grid."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "case.nii.gz").write_bytes(image.read_bytes())
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(tmp_path / "bundle/configs/inference.json"),
        "--bundle_root",
        str(tmp_path / "bundle"),
        "--dataset_dir",
        str(inputs),
        "--output_dir",
        str(tmp_path / "out"),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", **_env()}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = nib.load(tmp_path / "out" / "case_seg.nii.gz")
    original = nib.load(inputs / "case.nii.gz")
    assert written.shape == original.shape and np.allclose(written.affine, original.affine)  # inverted to input grid
    assert set(np.unique(np.asarray(written.dataobj))) <= {0, 1}


def test_slice_wise_2d_network_exports_with_monai_slice_inferer(slice_checkpoints, tmp_path):
    export_bundle(slice_checkpoints / "slices0.ckpt", tmp_path / "bundle", torchscript_model=False)
    config = json.loads((tmp_path / "bundle" / "configs" / "inference.json").read_text())
    assert config["inferer"]["_target_"] == "SliceInferer" and config["inferer"]["roi_size"] == [32, 32]
    assert any(t["_target_"] == "Spacingd" for t in config["preprocessing"]["transforms"])  # volume preprocessing
    _run_bundle_on(slice_checkpoints / "img2.nii.gz", tmp_path)
    with pytest.raises(ConfigError, match=r"2\.5D network"):
        export_bundle(slice_checkpoints / "slices1.ckpt", tmp_path / "bundle25")


def test_torchscript_matches_eager_and_network_definition(checkpoint):
    task = Segmentation.load_from_checkpoint(checkpoint / "seg.ckpt", map_location="cpu")
    network = task.network.eval()
    example = torch.rand(1, 1, 32, 32, 32)
    module, how = torchscript(network, example)
    assert module is not None and how == "scripted"
    with torch.no_grad():
        torch.testing.assert_close(module(example), network(example))
    definition = network_definition("unet3d-small", {"out_channels": 2})
    assert definition["_target_"] == "monai.networks.nets.BasicUNet" and definition["out_channels"] == 2


def test_export_rejects_other_checkpoints(tmp_path):
    torch.save({"state_dict": {}, "hyper_parameters": {"model": "x"}}, tmp_path / "other.ckpt")
    with pytest.raises(InvalidInputError, match="not a medcl task checkpoint"):
        export_bundle(tmp_path / "other.ckpt", tmp_path / "b")
    other = {"state_dict": {}, "hyper_parameters": {"_class_path": "medcl.tasks.voco.VoCoPretraining"}}
    torch.save(other, tmp_path / "voco.ckpt")
    with pytest.raises(InvalidInputError, match="a VoCoPretraining checkpoint, but this command needs a Segmentation"):
        export_bundle(tmp_path / "voco.ckpt", tmp_path / "b")
    with pytest.raises(InvalidInputError, match="not found"):
        export_bundle(tmp_path / "missing.ckpt", tmp_path / "b")


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
