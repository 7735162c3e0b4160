"""Export a fine-tuned segmentation checkpoint as a MONAI bundle (and TorchScript where the network allows).

The bundle::

    <out>/configs/metadata.json     MONAI's required metadata (versions, task, network_data_format)
    <out>/configs/inference.json    LoadImage -> RAS -> spacing -> HU window -> sliding window -> softmax
                                    -> Invertd (back to the input grid) -> argmax -> SaveImage
    <out>/models/model.pt           the network's state dict
    <out>/models/model.ts           TorchScript (scripted, else traced), when possible

runs with::

    python -m monai.bundle run --config_file <out>/configs/inference.json --bundle_root <out> \\
        --dataset_dir <folder of .nii.gz> --output_dir <folder>

Preprocessing settings (spacing, HU window, foreground crop, resize) are read from the checkpoint's datamodule
hyper-parameters (:class:`medcl.data.volume.SegmentationDataModule` saves them), so inference matches training.

Command line: ``python -m medcl.export --checkpoint last.ckpt --out bundle/``.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from torch import nn

from medcl.errors import ConfigError, InvalidInputError
from medcl.models.factory import model_config

log = logging.getLogger(__name__)

MONAI_NETWORKS = {"swinunetr": "monai.networks.nets.SwinUNETR", "basic_unet": "monai.networks.nets.BasicUNet"}
NETWORK_KWARGS = {
    "swinunetr": (
        "in_channels",
        "out_channels",
        "feature_size",
        "use_v2",
        "depths",
        "num_heads",
        "spatial_dims",
        "norm_name",
    ),
    "basic_unet": ("spatial_dims", "in_channels", "out_channels", "features", "dropout"),
}


def network_definition(model: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The ``network_def`` of inference.json: the MONAI class and its arguments (medcl's class for ResNetUNet)."""
    config = model_config(model, **overrides)
    architecture = config.pop("architecture")
    if architecture == "resnet_unet":
        return {"_target_": "medcl.models.volume.ResNetUNet", **config}
    if architecture not in MONAI_NETWORKS:
        raise ConfigError(f"cannot export architecture {architecture!r}")
    kwargs = {k: v for k, v in config.items() if k in NETWORK_KWARGS[architecture]}
    if architecture == "basic_unet":
        kwargs.setdefault("spatial_dims", 3)
    return {"_target_": MONAI_NETWORKS[architecture], **kwargs}


def preprocessing_definition(data: Mapping[str, Any], spatial_dims: int) -> list[dict[str, Any]]:
    """MONAI-bundle transforms equal to the training datamodule's deterministic preprocessing (image only)."""
    steps: list[dict[str, Any]] = [
        {"_target_": "LoadImaged", "keys": "image", "image_only": False},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
    ]
    if spatial_dims == 2:
        size = int(data.get("image_size", 256))
        steps += [
            {"_target_": "Resized", "keys": "image", "spatial_size": size, "size_mode": "longest", "mode": "area"},
            {"_target_": "SpatialPadd", "keys": "image", "spatial_size": [size, size]},
            {"_target_": "ScaleIntensityd", "keys": "image", "minv": 0.0, "maxv": 1.0},
        ]
    else:
        steps.append({"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"})
        if data.get("pixdim"):
            steps.append({"_target_": "Spacingd", "keys": "image", "pixdim": list(data["pixdim"]), "mode": "bilinear"})
        window = data.get("intensity_range", (-175.0, 250.0))
        if window is None:
            steps.append({"_target_": "NormalizeIntensityd", "keys": "image", "nonzero": True})
        else:
            steps.append(
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": float(window[0]),
                    "a_max": float(window[1]),
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                }
            )
        if data.get("crop_foreground") is not None:
            threshold = float(data["crop_foreground"])
            steps.append(
                {
                    "_target_": "CropForegroundd",
                    "keys": "image",
                    "source_key": "image",
                    "margin": 2,
                    "allow_smaller": True,
                    "select_fn": f"$lambda x: x > {threshold}",
                }
            )
        if data.get("spatial_size"):
            steps.append(
                {
                    "_target_": "Resized",
                    "keys": "image",
                    "spatial_size": list(data["spatial_size"]),
                    "mode": "trilinear",
                    "anti_aliasing": True,
                }
            )
    steps.append({"_target_": "EnsureTyped", "keys": "image", "dtype": "$torch.float32"})
    return steps


def inference_config(
    network_def: Mapping[str, Any],
    preprocessing: Sequence[Mapping[str, Any]],
    roi_size: Sequence[int],
    sw_batch_size: int,
    overlap: float,
    slice_wise: bool = False,
) -> dict[str, Any]:
    """MONAI-bundle inference.json: SupervisedEvaluator over every image in ``dataset_dir``; ``slice_wise`` runs a
    2D network over the axial slices of volumes (MONAI's SliceInferer)."""
    inferer: dict[str, Any] = {"_target_": "SlidingWindowInferer"}
    if slice_wise:
        inferer = {"_target_": "SliceInferer", "spatial_dim": 2, "progress": False}
    return {
        "imports": ["$import glob", "$import os", "$import numpy as np"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$sorted(glob.glob(os.path.join(@dataset_dir, '*.nii*')))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": dict(network_def),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": list(preprocessing)},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {
            "_target_": "DataLoader",
            "dataset": "@dataset",
            "batch_size": 1,
            "shuffle": False,
            "num_workers": 0,
        },
        "inferer": {
            **inferer,
            "roi_size": list(roi_size),
            "sw_batch_size": sw_batch_size,
            "overlap": overlap,
            "mode": "gaussian",
        },
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "Activationsd", "keys": "pred", "softmax": True},
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "image",
                    "nearest_interp": False,
                    "to_tensor": True,
                },
                {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
                {
                    "_target_": "SaveImaged",
                    "keys": "pred",
                    "output_dir": "@output_dir",
                    "output_postfix": "seg",
                    "output_dtype": "$np.uint8",
                    "separate_folder": False,
                    "resample": False,
                },
            ],
        },
        "handlers": [
            {
                "_target_": "CheckpointLoader",
                "load_path": "$@bundle_root + '/models/model.pt'",
                "load_dict": {"model": "@network"},
                "map_location": "@device",
            },
            {"_target_": "StatsHandler", "iteration_log": False},
        ],
        "evaluator": {
            "_target_": "SupervisedEvaluator",
            "device": "@device",
            "val_data_loader": "@dataloader",
            "network": "@network",
            "inferer": "@inferer",
            "postprocessing": "@postprocessing",
            "val_handlers": "@handlers",
            "amp": False,
        },
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def metadata(
    *,
    task: str,
    num_classes: int,
    class_names: Sequence[str],
    roi_size: Sequence[int],
    in_channels: int,
    description: str,
    init_from: str | None,
) -> dict[str, Any]:
    """MONAI bundle metadata.json with the keys ``monai.bundle verify_metadata`` requires."""
    import ignite

    channels = {"0": "background", **{str(i + 1): n for i, n in enumerate(class_names)}}
    return {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json",
        "version": "0.1.0",
        "changelog": {"0.1.0": "exported by medcl"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"pytorch-ignite": ignite.__version__, "nibabel": _version("nibabel")},
        "supported_apps": {},
        "name": task,
        "task": task,
        "description": description,
        "authors": "medcl",
        "copyright": "Copyright (c) the model's authors",
        "data_source": "see the training run in MLflow",
        "data_type": "nibabel",
        "intended_use": "Research only; not validated for clinical use.",
        "pretrained_from": init_from or "scratch",
        "exported_on": platform.platform(),
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": "hounsfield",
                    "modality": "CT",
                    "num_channels": in_channels,
                    "spatial_shape": list(roi_size),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": {str(i): "image" for i in range(in_channels)},
                }
            },
            "outputs": {
                "pred": {
                    "type": "image",
                    "format": "segmentation",
                    "num_channels": num_classes,
                    "spatial_shape": list(roi_size),
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": True,
                    "channel_def": channels,
                }
            },
        },
    }


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def torchscript(network: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule | None, str]:
    """Script the network, else trace it on ``example``; (module or None, how / why not)."""
    network = network.eval()
    try:
        return torch.jit.script(network), "scripted"
    except Exception as script_error:  # TorchScript rejects many Python constructs; tracing is the fallback
        try:
            with torch.no_grad():
                traced = torch.jit.trace(network, example, check_trace=False)
            with torch.no_grad():
                if not torch.allclose(traced(example), network(example), atol=1e-4):
                    return None, "traced output differs from eager output"
            return traced, f"traced (scripting failed: {type(script_error).__name__})"
        except Exception as trace_error:
            return None, f"not exportable to TorchScript ({type(trace_error).__name__}: {trace_error})"


def export_bundle(checkpoint: str | Path, out: str | Path, *, torchscript_model: bool = True) -> dict[str, Any]:
    """Write a MONAI bundle for a :class:`medcl.tasks.segmentation.Segmentation` checkpoint; returns a summary."""
    from medcl.tasks.segmentation import Segmentation

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise InvalidInputError(checkpoint, "checkpoint not found")
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)  # a Lightning checkpoint we wrote
    hparams = payload.get("hyper_parameters") or {}
    if "num_classes" not in hparams:
        raise InvalidInputError(checkpoint, "not a medcl Segmentation checkpoint (no num_classes hyper-parameter)")
    data = payload.get("datamodule_hyper_parameters") or {}
    task = Segmentation.load_from_checkpoint(checkpoint, map_location="cpu", init_from=None)
    network = task.network.eval()
    overrides = dict(hparams.get("model_overrides") or {}, out_channels=hparams["num_classes"])
    network_def = network_definition(hparams["model"], overrides)
    spatial_dims = int(network_def.get("spatial_dims", 2 if network_def["_target_"].endswith("ResNetUNet") else 3))
    roi = list(hparams.get("roi_size", (96, 96, 96)))[:spatial_dims]
    slice_context = data.get("slice_context")
    if slice_context:
        raise ConfigError(
            f"{checkpoint}: a 2.5D network (slice_context={slice_context}) cannot be exported as a MONAI bundle: "
            "MONAI's SliceInferer feeds single slices (score it with `medcl test`)"
        )
    in_channels = int(network_def.get("in_channels", 1))

    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), out / "models" / "model.pt")
    config = inference_config(
        network_def,
        preprocessing_definition(data, 3 if slice_context == 0 else spatial_dims),
        roi,
        hparams.get("sw_batch_size", 4),
        hparams.get("sw_overlap", 0.5),
        slice_wise=slice_context == 0,
    )
    (out / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    names = list(hparams.get("class_names") or [f"class_{i}" for i in range(1, hparams["num_classes"])])
    meta = metadata(
        task=f"medcl segmentation ({hparams['model']})",
        num_classes=hparams["num_classes"],
        class_names=names,
        roi_size=roi,
        in_channels=in_channels,
        init_from=hparams.get("init_from"),
        description=f"{hparams['model']} fine-tuned with medcl from {hparams.get('init_from') or 'scratch'}",
    )
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2))
    summary: dict[str, Any] = {"bundle": str(out), "torchscript": "skipped"}
    if torchscript_model:
        example = torch.zeros(1, in_channels, *roi)
        module, how = torchscript(network, example)
        summary["torchscript"] = how
        if module is not None:
            module.save(str(out / "models" / "model.ts"))
    log.info("exported %s -> %s (TorchScript: %s)", checkpoint, out, summary["torchscript"])
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medcl.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="Segmentation checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = export_bundle(args.checkpoint, args.out, torchscript_model=not args.no_torchscript)
    except (InvalidInputError, ConfigError) as err:
        print(f"medcl export: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
