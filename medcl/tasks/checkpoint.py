"""Checkpoints: the one way a checkpoint becomes a task (:func:`load_task`), and how they are written
(:class:`AtomicCheckpointIO`).

Every command, pipeline and export loads checkpoints through here. Checkpoints are untrusted input (downloaded,
shared, or uploaded to a registry), so loading one never runs code from it:

* the file is read with ``torch.load(weights_only=True)``: tensors and plain Python types only, no pickled objects;
* every class path it names (the task LightningCLI records as ``_class_path``, nested ``class_path`` entries such as
  a loss, the datamodule's class) must be on medcl's explicit allow-list of tasks, losses and datamodules, and the
  instantiator must be Lightning's own; anything else is refused with one sentence naming the file;
* the task is then built with Lightning's ``load_from_checkpoint`` on the allow-listed class (``weights_only=True``).

Writing is atomic: a checkpoint goes to a temporary file in the same folder, is flushed to disk (fsync) and renamed
over the old one, so a run killed, or out of disk space, at any moment leaves the previous complete checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.plugins.io import TorchCheckpointIO

from medcl.errors import InvalidInputError
from medcl.losses import LOSSES
from medcl.tasks import _EXPORTS as TASK_MODULES

# The only instantiator LightningCLI records; Lightning itself allows nothing else either.
INSTANTIATORS = ("lightning.pytorch.cli.instantiate_module", "pytorch_lightning.cli.instantiate_module")
# Classes a medcl checkpoint may name besides the tasks: the losses a task is configured with (the allow-list that
# medcl.losses.build_loss enforces), and the datamodules whose hyper-parameters Lightning stores next to the task's.
DATAMODULES = {
    "CXRDataModule": "medcl.data.cxr",
    "ReportDataModule": "medcl.data.report",
    "VoCoDataModule": "medcl.data.volume",
    "VolumeViewsDataModule": "medcl.data.volume",
    "SliceContrastDataModule": "medcl.data.volume",
    "SegmentationDataModule": "medcl.data.volume",
}


class UntrustedCheckpointError(InvalidInputError):
    """A checkpoint that would need code outside medcl's allow-list to load."""


def _class_paths(names: Mapping[str, str], package: str) -> dict[str, str]:
    """Both spellings of each class: ``medcl.tasks.Segmentation`` and ``medcl.tasks.segmentation.Segmentation``."""
    return {**{f"{package}.{n}": n for n in names}, **{f"{module}.{n}": n for n, module in names.items()}}


TASK_CLASS_PATHS = _class_paths(TASK_MODULES, "medcl.tasks")
ALLOWED_CLASS_PATHS = frozenset([*TASK_CLASS_PATHS, *LOSSES, *_class_paths(DATAMODULES, "medcl.data")])


def _named_classes(value: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """(key path, value) of every ``class_path`` / ``_class_path`` / ``_instantiator`` entry, at any depth."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if key in ("class_path", "_class_path", "_instantiator"):
                yield here, item
            else:
                yield from _named_classes(item, here)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _named_classes(item, f"{where}[{index}]")


def check_class_paths(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose hyper-parameters name a class outside the allow-list (or a foreign instantiator)."""
    for section in ("hyper_parameters", "datamodule_hyper_parameters"):
        for where, named in _named_classes(checkpoint.get(section) or {}, section):
            allowed = INSTANTIATORS if where.endswith("_instantiator") else ALLOWED_CLASS_PATHS
            if named not in allowed:
                raise UntrustedCheckpointError(
                    path, f"refused: {where} names {named!r}, which is not a medcl task, loss or datamodule"
                )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint's contents, read with ``weights_only=True`` (tensors and plain types, never pickled objects)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(path, "checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch says which global it refused ("... unsupported GLOBAL posix.system ..."); anything else is damage.
        refused = re.search(r"(?:unsupported )?GLOBAL ([\w.]+)", str(err), re.IGNORECASE)
        if refused is None:
            raise InvalidInputError(path, "not a readable checkpoint (corrupt or not written by torch.save)") from None
        raise UntrustedCheckpointError(
            path, f"refused: it holds objects beyond tensors and plain types (a pickled {refused.group(1)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InvalidInputError(path, f"not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InvalidInputError(path, "not a Lightning checkpoint (no state_dict)")
    return checkpoint


def task_class(class_path: str | None, path: str | Path) -> type[LightningModule]:
    """The medcl task a class path names (imported from medcl only)."""
    if class_path is None:
        raise InvalidInputError(path, "not a medcl task checkpoint: it records no task class (_class_path)")
    name = TASK_CLASS_PATHS.get(class_path)
    if name is None:
        raise UntrustedCheckpointError(path, f"refused: task class {class_path!r} is not a medcl task")
    import medcl.tasks

    return getattr(medcl.tasks, name)


@dataclass
class LoadedTask:
    """A task rebuilt from a checkpoint, with what else the checkpoint says about its training."""

    task: LightningModule
    path: Path
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return str(self.hparams.get("_class_path"))


def load_task(
    path: str | Path,
    *,
    expect: type | tuple[type, ...] = LightningModule,
    default_task: str | None = None,
    map_location: str | torch.device = "cpu",
    **overrides: Any,
) -> LoadedTask:
    """Rebuild the task a medcl checkpoint was trained as; ``overrides`` replace saved init arguments.

    ``default_task`` (a medcl task class path) is used only for checkpoints that record no task class.

    Raises:
        UntrustedCheckpointError: the file holds pickled objects or names a class outside the allow-list.
        InvalidInputError: missing, unreadable, not a medcl task checkpoint, or not the kind of task ``expect``s.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    check_class_paths(checkpoint, path)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    cls = task_class(hparams.get("_class_path") or default_task, path)
    if not issubclass(cls, expect):
        wanted = " or ".join(c.__name__ for c in (expect if isinstance(expect, tuple) else (expect,)))
        raise InvalidInputError(path, f"a {cls.__name__} checkpoint, but this command needs a {wanted}")
    task = cls.load_from_checkpoint(path, map_location=map_location, weights_only=True, **overrides)
    return LoadedTask(task, path, hparams, dict(checkpoint.get("datamodule_hyper_parameters") or {}))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a partial file under a checkpoint's name (see the module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        write_atomically(checkpoint, Path(path))


def write_atomically(payload: Any, path: Path) -> None:
    """``torch.save(payload, path)`` through a fsynced temporary file renamed over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.partial"):  # left by a writer that was killed
        stale.unlink(missing_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)
