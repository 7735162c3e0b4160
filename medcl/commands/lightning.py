"""``medcl fit|validate|test|predict -c configs/<task>/<name>.yaml [--trainer.max_epochs 2 ...]``: LightningCLI.

YAML ``class_path``/``init_args`` configs, ``--print_config``, MLflow logging by default, resumable with
``--ckpt_path last`` (the same MLflow run continues).

    medcl fit -c configs/cxr/demo.yaml --trainer.max_epochs 1
    medcl fit -c configs/cxr/demo.yaml --print_config
    medcl test -c configs/cxr/demo.yaml --ckpt_path demo_out/cxr-demo/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from medcl.errors import ConfigError, MedclError
from medcl.tracking import MedclMLFlowLogger, MLflowRunFile, MLflowSaveConfigCallback, run_id_for_resume

log = logging.getLogger("medcl")


class MedclCLI(LightningCLI):
    """LightningCLI with medcl's checkpointing, MLflow defaults and run continuation on resume."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        # `checkpoint.*` is the best-model checkpoint (monitor/mode/save_top_k); a second callback keeps last.ckpt
        # fresh every N training steps so `--ckpt_path last` resumes mid-epoch after a crash or kill.
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
        if config.get("weights_only") is None and "weights_only" in config:
            # Checkpoints given with --ckpt_path are read as tensors and plain types only (Lightning would default
            # to unpickling anything, i.e. running code from the file).
            config.weights_only = True
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
                log.info("resuming MLflow run %s", run_id)
                logger.init_args.run_id = run_id


def lightning_main(args: list[str], run: bool = True) -> MedclCLI:
    """Run LightningCLI with medcl's defaults on ``args`` (``["fit", "-c", ...]``); returns the CLI object.

    Argument errors raise :class:`~medcl.errors.ConfigError` (one line) instead of printing the whole usage.
    """
    try:
        return MedclCLI(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=MLflowSaveConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"logger": {"class_path": f"{MedclMLFlowLogger.__module__}.MedclMLFlowLogger"}},
            parser_kwargs={"exit_on_error": False},
            args=args,
            run=run,
        )
    except argparse.ArgumentError as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"{message} (medcl {args[0] if args else 'fit'} --help lists the options)") from None
    except ValueError as err:
        # jsonargparse wraps what a class raises while it is built from the config (a task's ConfigError for an
        # unknown optimizer setting or a loss outside medcl) into a union-type error: surface medcl's own sentence.
        cause = err.__cause__
        while cause is not None and not isinstance(cause, MedclError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _subcommand(name: str) -> Any:
    def run(argv: list[str]) -> int:
        argv_before, sys.argv = sys.argv, sys.argv[:1]  # LightningCLI warns when it sees both argv and explicit args
        try:
            lightning_main([name, *argv])
        finally:
            sys.argv = argv_before
        return 0

    run.__name__ = f"{name}_main"
    return run


fit_main = _subcommand("fit")
validate_main = _subcommand("validate")
test_main = _subcommand("test")
predict_main = _subcommand("predict")
