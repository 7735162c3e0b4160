"""Every shipped config: its datamodule accepts its data section, and its header shows how to write its manifests."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def header_commands(text: str) -> list[list[str]]:
    """The `medcl ...` commands of the leading comment block, continuation lines joined, split like a shell."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    joined = re.sub(r"\\\s*\n\s*", " ", "\n".join(header))
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("medcl ")]


def init_parameters(cls: type) -> set[str]:
    """Named parameters a datamodule accepts, following ``**kwargs`` up to its base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith("lightning"):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_data_section_and_the_commands_that_write_its_manifests(config: Path) -> None:
    text = config.read_text()
    data = yaml.safe_load(text)["data"]
    module, _, name = data["class_path"].rpartition(".")
    init_args = data["init_args"]
    unknown = set(init_args) - init_parameters(getattr(importlib.import_module(module), name))
    assert not unknown, f"{config.name}: {data['class_path']} takes no {sorted(unknown)}"

    commands = header_commands(text)
    # `medcl data prepare` writes a manifest; `medcl data merge` joins prepared ones (several pretraining sets).
    prepares = [c for c in commands if c[:3] in (["medcl", "data", "prepare"], ["medcl", "data", "merge"])]
    synths = {option(c, "--out"): c for c in commands if c[:3] == ["medcl", "data", "synth"]}
    for manifest in [init_args["manifest"], *init_args.get("gaze_manifests", [])]:
        writers = [c for c in prepares if option(c, "--out") == manifest]
        assert writers, f"{config.name}: no `medcl data prepare|merge ... --out {manifest}` in the header"
        if manifest.startswith("demo_out/"):  # a synthetic try-out: the tree it prepares is written by synth
            root = option(writers[0], "--root")
            assert root in synths and synths[root][3] == writers[0][3], f"{config.name}: no synth --out {root}"


# -- every config builds its model and datamodule and takes a training step -----------------------------------------

TINY_CXR = {"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}
TINY_SWIN = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "use_checkpoint": False}
# Per config: what makes it test-sized (same classes, same code paths; small sizes, hub weights off).
STEP_OVERRIDES: dict[str, dict] = {
    "cxr/demo": {"model_overrides": TINY_CXR, "data": {"image_size": 64, "batch_size": 8}},
    "cxr/cogaze-small": {"model_overrides": TINY_CXR, "data": {"image_size": 64, "batch_size": 8}},
    "cxr/convirt-small": {"model_overrides": TINY_CXR, "data": {"image_size": 64, "batch_size": 8}},
    "cxr/cogaze": {"model_overrides": "tiny", "data": {"image_size": 56, "batch_size": 4}},
    "cxr/convirt": {"model_overrides": "tiny", "data": {"image_size": 56, "batch_size": 4}},
    "report/demo": {"model_overrides": {"backbone_overrides": TINY_CXR},
                    "model": {"val_max_reports": 2, "max_new_tokens": 4, "num_beams": 1},
                    "data": {"image_size": 64, "batch_size": 4}},
    "report/distilgpt2": {"model_overrides": "tiny", "data": {"image_size": 56, "batch_size": 4},
                          "model": {"val_max_reports": 2, "max_new_tokens": 4, "num_beams": 1}},
    "seg/siim-resnet-unet": {"model_overrides": {"widths": [8, 8, 16, 16]}, "model": {"roi_size": [64, 64]},
                             "data": {"image_size": 64, "batch_size": 2}},
    "seg/swinunetr-btcv": {"model_overrides": TINY_SWIN, "model": {"roi_size": [64, 64, 64], "sw_batch_size": 1},
                           "data": {"roi_size": [64, 64, 64], "num_samples": 1, "cache": "none"}},
    "volume/voco": {"model_overrides": TINY_SWIN, "model": {"hidden_dim": 32, "embed_dim": 32},
                    "data": {"grid": [2, 2], "base_size": 64, "roi_size": 64, "spatial_size": [128, 128, 64],
                             "crop_foreground": None, "batch_size": 1, "cache": "none"}},
}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_manifests(synthetic_cxr, tmp_path_factory) -> dict[str, str]:
    """A manifest of each dataset kind the configs read, written with `medcl data synth` + `prepare`."""
    from medcl.commands.data import synthesize
    from medcl.data.prepare import prepare

    root = tmp_path_factory.mktemp("config-data")

    def written(dataset: str, adapter: dict | None = None, **options) -> str:
        tree = synthesize(dataset, root / dataset, **options)
        adapter = {**({"mimic_root": options["mimic_root"]} if "mimic_root" in options else {}), **(adapter or {})}
        return str(prepare(dataset, tree, root / f"{dataset}.csv", workers=1, progress=False, **adapter).manifest)

    return {
        "mimic-cxr": synthetic_cxr["manifest"],
        "egd-cxr": written("egd-cxr", mimic_root=synthetic_cxr["root"], n_images=8),
        "btcv": written("btcv", n_train=3, n_test=1, shape=[48, 48, 32]),
        "siim-acr": written("siim-acr", {"split_fractions": "0.5,0.5,0"}, n_patients=8, image_size=64),
    }


def dataset_of(config: Path) -> str:
    manifest = yaml.safe_load(config.read_text())["data"]["init_args"]["manifest"]
    return next(kind for kind in ("btcv", "siim", "pretrain", "mimic") if kind in manifest).replace("pretrain", "btcv")


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_builds_its_model_and_data_and_takes_a_training_step(config, tiny_manifests, tmp_path, monkeypatch):
    """`medcl fit -c <config>` with test-sized overrides: LightningCLI builds the task (hub-weight models with
    pretrained: false), the datamodule reads a manifest of the config's dataset, and one training and one
    validation batch run (Lightning's fast_dev_run) on the CPU."""
    import json

    from tiny_models import tiny_overrides

    from medcl.commands.lightning import lightning_main

    name = f"{config.parent.name}/{config.stem}"
    spec = STEP_OVERRIDES.get(name, {})
    section = yaml.safe_load(config.read_text())
    kind = {"mimic": "mimic-cxr", "siim": "siim-acr"}.get(dataset_of(config), dataset_of(config))
    model_overrides = spec.get("model_overrides", {})
    if model_overrides == "tiny":
        model_overrides = tiny_overrides(section["model"]["init_args"]["model"])
    args = [
        "-c", str(config), f"--data.init_args.manifest={tiny_manifests[kind]}", "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32-true",
        "--trainer.fast_dev_run=true", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}",
        f"--checkpoint.dirpath={tmp_path / 'checkpoints'}",
    ]  # fmt: skip
    if "gaze_manifests" in section["data"]["init_args"]:
        args.append(f"--data.init_args.gaze_manifests=[{tiny_manifests['egd-cxr']}]")
    if section["data"]["init_args"].get("cache") == "disk":
        args.append(f"--data.init_args.cache_dir={tmp_path / 'cache'}")
    if model_overrides:
        args.append(f"--model.init_args.model_overrides={json.dumps(model_overrides)}")
    for prefix, values in (("model", spec.get("model", {})), ("data", spec.get("data", {}))):
        args += [f"--{prefix}.init_args.{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in values.items()]
    if section["model"]["init_args"].get("output_dir"):
        args.append(f"--model.init_args.output_dir={tmp_path / 'out'}")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    cli = lightning_main(args, run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
