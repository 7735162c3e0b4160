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

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from medcl.errors import ConfigError, find_cause
from medcl.tasks.checkpoint import AtomicCheckpointIO, read_checkpoint
from medcl.tasks.guards import POLICIES, NonFiniteGuard, QuarantineReport
from medcl.tracking import (
    SPOOL_FILE,
    MedclMLFlowLogger,
    MLflowRunFile,
    MLflowSaveConfigCallback,
    check_reachable,
    default_tracking_uri,
    run_id_for_resume,
)

log = logging.getLogger("medcl")


# `medcl <subcommand> --help` ends with examples that work as written on a fresh checkout after `medcl demo`.
EXAMPLES = {
    "fit": (
        "medcl fit -c configs/cxr/demo.yaml --trainer.max_epochs 1",
        "medcl fit -c configs/cxr/demo.yaml --print_config",
    ),
    "validate": ("medcl validate -c configs/cxr/demo.yaml --ckpt_path demo_out/cxr-demo/checkpoints/last.ckpt",),
    "test": ("medcl test -c configs/cxr/demo.yaml --ckpt_path demo_out/cxr-demo/checkpoints/last.ckpt",),
    "predict": ("medcl predict -c configs/seg/unet-small.yaml --ckpt_path demo_out/seg-small/checkpoints/last.ckpt",),
}


class _HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """jsonargparse's help, with the examples' line breaks kept."""


SUBCOMMAND_HELP = {
    name: {"exit_on_error": False, "formatter_class": _HelpFormatter,
           "epilog": "examples:\n" + "\n".join(f"  {e}" for e in examples)}
    for name, examples in EXAMPLES.items()
}  # fmt: skip


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
        parser.add_argument(
            "--nonfinite",
            choices=POLICIES,
            default="stop",
            help="a step whose loss or gradients are NaN/inf: stop the run (default), skip the step, or roll back "
            "to last.ckpt",
        )
        parser.add_argument("--nonfinite_max_skipped", type=int, default=10, help="skips/rollbacks before stopping")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("weights_only") is None and "weights_only" in config:
            # Checkpoints given with --ckpt_path are read as tensors and plain types only (Lightning would default
            # to unpickling anything, i.e. running code from the file).
            config.weights_only = True
        root = Path(config.trainer.default_root_dir or ".")
        if not config.checkpoint.dirpath:
            config.checkpoint.dirpath = str(root / "checkpoints")
        checkpoints = Path(config.checkpoint.dirpath)
        # last.ckpt belongs to the dedicated callback below; a second writer would produce last-v1.ckpt.
        config.checkpoint.save_last = False
        self.trainer_defaults["callbacks"] = [
            MLflowRunFile(checkpoints),
            ModelCheckpoint(
                dirpath=checkpoints,
                save_top_k=0,
                save_last=True,
                every_n_train_steps=config.last_checkpoint_every_n_steps,
            ),
            NonFiniteGuard(config.nonfinite, config.nonfinite_max_skipped, str(checkpoints)),
            QuarantineReport(root / "quarantine"),
        ]
        self.trainer_defaults["plugins"] = [AtomicCheckpointIO()]
        if config.trainer.logger in (None, True):
            config.trainer.logger = Namespace(class_path="medcl.tracking.MedclMLFlowLogger", init_args=Namespace())
        logger = config.trainer.logger
        medcl_logger = isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("MedclMLFlowLogger")
        if medcl_logger:
            check_reachable(logger.init_args.get("tracking_uri") or default_tracking_uri())
            if not logger.init_args.get("spool"):
                logger.init_args.spool = str(checkpoints / SPOOL_FILE)
        if self.subcommand == "fit" and config.get("ckpt_path"):
            config.ckpt_path = resume_path(str(config.ckpt_path), checkpoints)
            run_id = run_id_for_resume(checkpoints) if config.ckpt_path else None
            if run_id and medcl_logger:
                log.info("resuming MLflow run %s", run_id)
                logger.init_args.run_id = run_id


def resume_path(ckpt_path: str, checkpoints: Path) -> str | None:
    """``--ckpt_path`` for fit: ``last`` must exist (an error, not a silent fresh start), ``last-if-present`` resumes
    when there is one; a checkpoint that cannot be read is named before training starts."""
    if ckpt_path in ("last", "last-if-present"):
        last = checkpoints / "last.ckpt"
        if not last.is_file():
            if ckpt_path == "last-if-present":
                return None
            raise ConfigError(
                f"--ckpt_path last: nothing to resume in {checkpoints}; start without --ckpt_path, or pass "
                "--ckpt_path last-if-present to resume only when a checkpoint exists"
            )
        ckpt_path = str(last)
    read_checkpoint(ckpt_path)  # a truncated or foreign file is one clear error here, not a traceback later
    return ckpt_path


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
            parser_kwargs={"exit_on_error": False, "formatter_class": _HelpFormatter, **SUBCOMMAND_HELP},
            args=args,
            run=run,
        )
    except argparse.ArgumentError as err:
        message = " ".join(str(err).split())
        raise ConfigError(f"{message} (medcl {args[0] if args else 'fit'} --help lists the options)") from None
    except ValueError as err:
        # jsonargparse wraps what a class raises while it is built from the config (a task's ConfigError for an
        # unknown optimizer setting or a loss outside medcl) into a union-type error: surface medcl's own sentence.
        cause = find_cause(err)
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
