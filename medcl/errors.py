"""Errors medcl raises on purpose.

Every error about user input names the offending file (or item) and says why, so a batch job can record it in a
quarantine report and carry on. They subclass ``ValueError`` so generic callers that already catch bad values keep
working.
"""

from __future__ import annotations

from os import PathLike


class MedclError(Exception):
    """Base class of medcl's own errors."""


class InvalidInputError(MedclError, ValueError):
    """An input file or record that medcl cannot use.

    Args:
        path: the file (or item id) at fault; it starts the message so logs and quarantine reports name it.
        reason: what is wrong, in words a user can act on.
    """

    def __init__(self, path: str | PathLike[str] | None, reason: str) -> None:
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)

    def __reduce__(self):  # keep (path, reason) across process pools
        return (type(self), (self.path, self.reason))


class DataLeakageError(InvalidInputError):
    """The same patient appears in more than one split."""


class ConfigError(MedclError, ValueError):
    """A configuration that cannot work (unknown name, incompatible options)."""


class TrainingDivergedError(MedclError):
    """Training produced a loss or gradient that is not finite (NaN or infinite)."""


class TrackingUnavailableError(MedclError):
    """The MLflow tracking server cannot be reached."""


def find_cause(error: BaseException, kind: type[MedclError] = MedclError) -> MedclError | None:
    """The first ``kind`` error in ``error``'s chain: libraries wrap what a callback or transform raises (MONAI in
    a RuntimeError naming the transform, jsonargparse in a parser error), medcl reports the sentence it wrote."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
