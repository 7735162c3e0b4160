"""The ``medcl`` command.

* ``medcl fit|validate|test|predict -c configs/<task>/<name>.yaml [--trainer.max_epochs 2 ...]``: LightningCLI
  (YAML ``class_path``/``init_args``, ``--print_config``), MLflow logging by default, resumable with
  ``--ckpt_path last``.
* ``medcl data list|prepare|merge|synth ...``: dataset adapters and synthetic datasets.
* ``medcl eval ...``: evaluations on a checkpoint.
* ``medcl register ...``: register a logged model (or a checkpoint) in the MLflow registry under an alias.
* ``medcl serve --model models:/<name>@<alias>``: the inference service.
* ``medcl export --checkpoint <ckpt> --out <dir>``: a segmentation checkpoint as a MONAI bundle (+ TorchScript).
* ``medcl demo``: the CPU end-to-end demo.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Other subcommands: "module:function" taking the remaining arguments, imported only when used.
SUBCOMMANDS = {
    "data": "medcl.cli:data_main",
    "eval": "medcl.eval.cli:eval_main",
    "demo": "medcl.demo:demo_main",
    "register": "medcl.registry:register_main",
    "serve": "medcl.serve.cli:serve_main",
    "export": "medcl.export:main",
}


def _quiet_environment() -> None:
    # No model hub is reachable in most clinical sites; never try. Users with hub access can set HF_HUB_OFFLINE=0.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _configure_logging() -> None:
    """medcl's own INFO messages on stderr; silence optional-codec chatter from MONAI's DICOM plugin import."""
    import warnings

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    medcl_logger = logging.getLogger("medcl")
    if not medcl_logger.handlers:
        medcl_logger.addHandler(handler)
    medcl_logger.setLevel(logging.INFO)
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*NvImgCodecPydicomReader.*")
    warnings.filterwarnings("ignore", message=".*isinstance\\(treespec, LeafSpec\\).*")


def lightning_main(args: list[str] | None = None, run: bool = True) -> Any:
    """Run LightningCLI with medcl's defaults; returns the CLI object."""
    from lightning.pytorch import LightningDataModule, LightningModule
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from medcl.tracking import MedclMLFlowLogger, MLflowRunFile, MLflowSaveConfigCallback, run_id_for_resume

    class MedclCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            # `checkpoint.*` is the best-model checkpoint (monitor/mode/save_top_k); a second callback keeps
            # last.ckpt fresh every N training steps so `--ckpt_path last` resumes mid-epoch after a crash or kill.
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": False})
            parser.add_argument(
                "--last_checkpoint_every_n_steps",
                type=int,
                default=50,
                help="write last.ckpt every N training steps (and at each epoch end)",
            )

        def before_instantiate_classes(self) -> None:
            config = self.config[self.subcommand] if self.subcommand else self.config
            root = Path(config.trainer.default_root_dir or ".")
            if not config.checkpoint.dirpath:
                config.checkpoint.dirpath = str(root / "checkpoints")
            # last.ckpt belongs to the dedicated callback below; a second writer would produce last-v1.ckpt.
            config.checkpoint.save_last = False
            self.trainer_defaults["callbacks"] = [
                MLflowRunFile(config.checkpoint.dirpath),
                ModelCheckpoint(
                    dirpath=config.checkpoint.dirpath,
                    save_top_k=0,
                    save_last=True,
                    every_n_train_steps=config.last_checkpoint_every_n_steps,
                ),
            ]
            logger = config.trainer.logger
            if logger in (None, True):
                config.trainer.logger = logger = {"class_path": "medcl.tracking.MedclMLFlowLogger", "init_args": {}}
            if self.subcommand == "fit" and config.get("ckpt_path"):
                run_id = run_id_for_resume(config.checkpoint.dirpath)
                if run_id and getattr(logger, "init_args", None) is not None:
                    logging.getLogger("medcl").info("resuming MLflow run %s", run_id)
                    logger.init_args.run_id = run_id

    return MedclCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=MLflowSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"logger": {"class_path": f"{MedclMLFlowLogger.__module__}.{MedclMLFlowLogger.__name__}"}},
        args=args,
        run=run,
    )


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> {"a": 1, "b": "x"} (values parsed as YAML scalars)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option expects key=value, got {pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


# Gaze sets annotate an existing (synthetic) MIMIC-CXR tree: they take it as --option mimic_root=<dir>.
NEEDS_MIMIC_ROOT = {"egd-cxr", "reflacx"}
SYNTHESISERS = {
    "mimic-cxr": "medcl.data.synthetic.cxr:generate_mimic_cxr",
    "egd-cxr": "medcl.data.synthetic.gaze:write_egd_cxr",
    "reflacx": "medcl.data.synthetic.gaze:write_reflacx",
    "chexpert": "medcl.data.synthetic.cxr_downstream:generate_chexpert",
    "rsna-pneumonia": "medcl.data.synthetic.cxr_downstream:generate_rsna_pneumonia",
    "siim-acr": "medcl.data.synthetic.cxr_downstream:generate_siim_acr",
    "msd": "medcl.data.synthetic.volume:generate_msd",
    "btcv": "medcl.data.synthetic.volume:generate_btcv",
    "brats": "medcl.data.synthetic.volume:generate_brats",
    "totalsegmentator": "medcl.data.synthetic.volume:generate_totalsegmentator",
    "acdc": "medcl.data.synthetic.volume:generate_acdc",
}


def _resolve(target: str) -> Any:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def data_main(argv: list[str]) -> int:
    from medcl.data.prepare import available_adapters, merge_manifests, prepare
    from medcl.errors import ConfigError, MedclError

    parser = argparse.ArgumentParser(prog="medcl data", description="Dataset adapters and synthetic datasets.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list dataset adapters")
    p = sub.add_parser("prepare", help="write a validated manifest for a dataset tree")
    p.add_argument("dataset")
    p.add_argument("--root", required=True, help="the dataset folder as downloaded")
    p.add_argument("--out", required=True, help="manifest CSV to write (quarantine/summary go beside it)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs, at most 8)")
    p.add_argument("--shard", default=None, help="i/N: process the i-th of N slices (cluster array jobs)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("merge", help="merge shard manifests")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", required=True)
    s = sub.add_parser("synth", help="write a synthetic dataset in the official layout")
    s.add_argument("kind", choices=sorted(SYNTHESISERS))
    s.add_argument("--out", required=True, help="output folder (for gaze sets: the gaze dataset folder)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="generator keyword argument")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(available_adapters()))
        elif args.command == "prepare":
            result = prepare(
                args.dataset,
                args.root,
                args.out,
                workers=args.workers,
                shard=args.shard,
                progress=not args.no_progress,
                **_parse_options(args.option),
            )
            counts = result.counts
            print(
                f"{result.manifest}: {counts['rows']} rows from {counts['discovered']} items, "
                f"{counts['quarantined']} quarantined (see {result.quarantine})"
            )
        elif args.command == "merge":
            print(merge_manifests(args.parts, args.out))
        elif args.command == "synth":
            options = _parse_options(args.option)
            generator = _resolve(SYNTHESISERS[args.kind])
            if args.kind in NEEDS_MIMIC_ROOT:
                if "mimic_root" not in options:
                    raise ConfigError(f"synth {args.kind} annotates a MIMIC-CXR tree: add --option mimic_root=<dir>")
                print(generator(options.pop("mimic_root"), args.out, **options))
            else:
                print(generator(args.out, **options))
    except MedclError as err:
        print(f"medcl data {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_environment()
    _configure_logging()
    usage = f"usage: medcl {{{','.join([*LIGHTNING_COMMANDS, *SUBCOMMANDS])}}} ... (medcl <command> --help)"
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage)
        return 0
    command, rest = argv[0], argv[1:]
    if command in LIGHTNING_COMMANDS:
        lightning_main(None if from_command_line else argv)
        return 0
    if command in SUBCOMMANDS:
        return int(_resolve(SUBCOMMANDS[command])(rest) or 0)
    print(f"medcl: unknown command {command!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
