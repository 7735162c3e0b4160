"""The ``medcl`` command: one entry, one line per subcommand in ``medcl --help``.

Every subcommand is a ``main(argv) -> exit code`` function imported only when used, so ``medcl --help`` is instant
and ``medcl data list`` never imports Lightning. Errors medcl raises on purpose (:class:`~medcl.errors.MedclError`:
a bad file, a bad config) end the command with one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import warnings
from typing import Any

# name -> ("module:function", one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "fit": ("medcl.commands.lightning:fit_main", "train a task from a config (LightningCLI; MLflow tracking)"),
    "validate": ("medcl.commands.lightning:validate_main", "run a config's validation loop on a checkpoint"),
    "test": ("medcl.commands.lightning:test_main", "run a config's test loop on a checkpoint"),
    "predict": ("medcl.commands.lightning:predict_main", "run a config's predict loop on a checkpoint"),
    "data": ("medcl.commands.data:main", "dataset adapters, manifests and synthetic datasets"),
    "eval": ("medcl.commands.eval:main", "evaluate a checkpoint or score generated reports"),
    "demo": ("medcl.commands.demo:main", "the end-to-end CPU demo (synthetic MIMIC-CXR, pretrain, evaluate)"),
    "register": ("medcl.commands.register:main", "log a checkpoint or run as an MLflow model and move an alias"),
    "serve": ("medcl.commands.serve:main", "serve registered models over HTTP"),
    "export": ("medcl.commands.export:main", "export a segmentation checkpoint as a MONAI bundle"),
    "sync": ("medcl.commands.sync:main", "upload metrics a run kept while its MLflow server was down"),
}

# Warnings users cannot act on: raised inside Lightning, MONAI, transformers or jsonargparse for choices medcl made.
QUIET_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*NvImgCodecPydicomReader.*",
    r".*LightningCLI's args parameter is intended to run from within Python.*",
    r".*is smaller than the logging interval.*",
    r".*does not have many workers which may be a bottleneck.*",
    r".*unable to generate class balanced samples.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*`torch_dtype` is deprecated.*",
    r".*The given NumPy array is not writable.*",
    r".*Please use the new API settings to control TF32.*",
)
# Their INFO/WARNING lines report optional codecs or accelerators the machine lacks ("nvImageCodec is not
# available", "GPU available: False", the LitLogger tip): nothing to act on.
QUIET_LOGGERS = ("monai.data.nvimgcodec_pydicom_plugin", "lightning.pytorch.utilities.rank_zero", "alembic")


def _quiet_environment() -> None:
    # No model hub is reachable in most clinical sites; never try. Users with hub access set HF_HUB_OFFLINE=0.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    # transformers' per-model "Loading weights" bars and advisory notes say nothing a user can act on.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    for pattern in QUIET_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def _configure_logging() -> None:
    """medcl's own INFO messages on stderr."""
    logger = logging.getLogger("medcl")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _usage() -> str:
    from medcl import __version__

    width = max(map(len, COMMANDS))
    lines = [f"medcl {__version__}: contrastive pretraining and fine-tuning for medical images", "",
             "usage: medcl <command> [options]   (medcl <command> --help for its options and an example)", "",
             "commands:"]  # fmt: skip
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "example:  medcl demo --trainer.max_epochs=1"]
    return "\n".join(lines)


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    from medcl import __version__
    from medcl.errors import find_cause

    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_environment()
    _configure_logging()
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version", "version"}:
        print(f"medcl {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"medcl: error: unknown command {command!r}; one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        return int(_resolve(COMMANDS[command][0])(rest) or 0)
    except KeyboardInterrupt:
        print(f"medcl {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # medcl's own errors, however deep a library wrapped them, are one line; bugs are not
        cause = find_cause(err)
        if cause is None:
            raise
        print(f"medcl {command}: error: {cause}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
