"""What reports may say about a source file of a dataset with identifiers, and how its owner finds the file again.

Quarantine reports, summaries and logs of such datasets name an item by its path relative to the dataset root with
every DICOM UID in it (study and series folders, file names like SIIM-ACR's ``<SOPInstanceUID>.dcm``) replaced by
its keyed UID; :func:`locate` (``medcl data locate``) maps such a name back to the file, which takes the key and the
dataset tree, i.e. what the data's owner has and a reader of the report has not.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from medcl.data.deid.clean import map_uid
from medcl.data.deid.keys import PseudonymKey
from medcl.data.deid.profile import DeidOptions

# A UID-like token: four or more dot-separated numbers (roots such as 1.2.840 have three; real instance UIDs more).
UID_TOKEN = re.compile(r"(?<![\w.])\d+(?:\.\d+){3,}(?!\w)")


def pseudonymize_text(text: str, key: PseudonymKey, options: DeidOptions, root: str | Path | None = None) -> str:
    """``text`` with the dataset root dropped from paths and every UID-like token replaced by its keyed UID."""
    text = str(text)
    if root is not None:
        prefix = str(Path(root)).rstrip(os.sep) + os.sep
        text = text.replace(prefix, "")
    return UID_TOKEN.sub(lambda match: map_uid(match.group(0), key, options), text)


def locate(root: str | Path, reported: str, key: PseudonymKey, options: DeidOptions | None = None) -> list[Path]:
    """The files under ``root`` whose report name (:func:`pseudonymize_text` of the relative path) is ``reported``."""
    root, options = Path(root), options or DeidOptions()
    wanted = str(reported).strip().lstrip(os.sep)
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if pseudonymize_text(str(path.relative_to(root)), key, options) == wanted:
                found.append(path)
    return sorted(found)


def phi_patterns(needles: Iterable[str]) -> list[tuple[str, re.Pattern[bytes]]]:
    """Case-insensitive byte patterns for identifier strings, matched anywhere: an audit prefers a false alarm (a date
    that happens to occur inside a long number) to a miss."""
    return [(needle, re.compile(re.escape(needle.encode("utf-8")), re.IGNORECASE)) for needle in needles if needle]


def find_phi(text: str | bytes, needles: Iterable[str]) -> list[str]:
    """The needles found in ``text`` (same rules as :func:`scan_for_phi`)."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [needle for needle, pattern in phi_patterns(needles) if pattern.search(data)]


def scan_for_phi(root: str | Path, needles: Iterable[str]) -> list[tuple[Path, str]]:
    """(file, needle) for every file under ``root`` whose name or bytes contain a needle (case-insensitive).

    A verification tool for tests and audits of caches, manifests and run artifacts; ``root`` may be one file.
    """
    root = Path(root)
    patterns = phi_patterns(needles)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    hits = []
    for file in files:
        content = file.read_bytes()
        name = str(file.relative_to(root) if file != root else file.name).encode("utf-8")
        hits.extend((file, needle) for needle, pattern in patterns if pattern.search(content) or pattern.search(name))
    return hits
