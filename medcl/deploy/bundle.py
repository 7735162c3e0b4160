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

The network is named by its class (:func:`medcl.models.factory.architecture_target`) with the arguments of the
training config's network spec (:func:`medcl.models.volume.network_spec`), and the preprocessing is the
:class:`~medcl.data.preprocessing.Preprocessing` of the checkpoint's datamodule hyper-parameters, written as bundle
steps: the same description training used, so inference matches training.

Command line: ``medcl export --checkpoint last.ckpt --out bundle/``.
"""

from __future__ import annotations

import json
import logging
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import monai
import numpy as np
import torch
from torch import nn

from medcl.data.preprocessing import Preprocessing
from medcl.errors import ConfigError
from medcl.models.factory import architecture_target
from medcl.models.volume import network_spec
from medcl.tasks.checkpoint import load_task
from medcl.tasks.segmentation import Segmentation

log = logging.getLogger(__name__)


def network_definition(model: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The ``network_def`` of inference.json: the network's class and every argument of its spec."""
    spec = network_spec(model, **overrides)
    return {"_target_": architecture_target(spec.pop("architecture")), **spec}


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
    loaded = load_task(checkpoint, expect=Segmentation, init_from=None)
    task, hparams, data = loaded.task, loaded.hparams, loaded.data_hparams
    network = task.network.eval()
    network_def = network_definition(hparams["model"], {**(hparams.get("model_overrides") or {}),
                                                          "out_channels": hparams["num_classes"]})  # fmt: skip
    spatial_dims = int(network_def.get("spatial_dims", 2))
    roi = list(hparams.get("roi_size", (96, 96, 96)))[:spatial_dims]
    slice_context = data.get("slice_context")
    if slice_context:
        raise ConfigError(
            f"{checkpoint}: a 2.5D network (slice_context={slice_context}) cannot be exported as a MONAI bundle: "
            "MONAI's SliceInferer feeds single slices (score it with `medcl test`)"
        )
    in_channels = int(network_def.get("in_channels", 1))
    # A 2D network trained on axial slices of volumes reads volumes: the 3-D preprocessing, then SliceInferer.
    preprocessing = Preprocessing.from_settings({**data, "spatial_dims": 3 if slice_context == 0 else spatial_dims})

    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    torch.save(network.state_dict(), out / "models" / "model.pt")
    config = inference_config(
        network_def,
        preprocessing.bundle(),
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
