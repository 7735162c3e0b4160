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

import numpy as np

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


PREFIX = 8  # bytes of each needle packed into one integer for the vectorised first pass of :class:`NeedleSearch`
CHUNK = 2**20


class NeedleSearch:
    """Which of many needles occur in a byte string, case-insensitively (ASCII letters), matched anywhere: an audit
    prefers a false alarm (a date that happens to occur inside a long number) to a miss.

    Thousands of needles over the hundreds of megabytes of a run's checkpoints and caches: every position's next 8
    bytes are packed into one integer (numpy, a megabyte at a time) and looked up among the needles' first 8 bytes;
    only those positions are compared in full. Shorter needles use a plain substring search.
    """

    def __init__(self, needles: Iterable[str]) -> None:
        self.short: list[tuple[str, bytes]] = []
        self.by_prefix: dict[int, list[tuple[str, bytes]]] = {}
        for needle in needles:
            folded = needle.encode("utf-8").lower()
            if not folded:
                continue
            if len(folded) < PREFIX:
                self.short.append((needle, folded))
            else:
                self.by_prefix.setdefault(self._pack(np.frombuffer(folded[:PREFIX], np.uint8))[0], []).append(
                    (needle, folded)
                )
        self.prefixes = np.fromiter(self.by_prefix, dtype=np.uint64)
        self.longest = max((len(f) for group in self.by_prefix.values() for _, f in group), default=PREFIX)

    @staticmethod
    def _pack(data: np.ndarray) -> np.ndarray:
        """The 8 bytes starting at each position (little-endian) as one uint64."""
        packed = data[: len(data) - PREFIX + 1].astype(np.uint64)
        for j in range(1, PREFIX):
            packed |= data[j : len(data) - PREFIX + 1 + j].astype(np.uint64) << np.uint64(8 * j)
        return packed

    def found(self, content: bytes) -> set[str]:
        data = content.lower()
        hits = {needle for needle, folded in self.short if folded in data}
        if not self.by_prefix or len(data) < PREFIX:
            return hits
        array = np.frombuffer(data, np.uint8)
        for start in range(0, len(data), CHUNK):
            window = array[start : start + CHUNK + self.longest]
            if len(window) < PREFIX:
                break
            packed = self._pack(window)[:CHUNK]
            for offset in np.flatnonzero(np.isin(packed, self.prefixes)):
                at = start + int(offset)
                for needle, folded in self.by_prefix[int(packed[offset])]:
                    if data.startswith(folded, at):
                        hits.add(needle)
        return hits


def find_phi(text: str | bytes, needles: Iterable[str]) -> list[str]:
    """The needles found in ``text`` (same rules as :func:`scan_for_phi`)."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return sorted(NeedleSearch(needles).found(data))


def scan_for_phi(root: str | Path, needles: Iterable[str]) -> list[tuple[Path, str]]:
    """(file, needle) for every file under ``root`` whose name or bytes contain a needle (case-insensitive).

    A verification tool for tests and audits of caches, manifests and run artifacts; ``root`` may be one file.
    """
    root = Path(root)
    search = NeedleSearch(needles)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    hits = []
    for file in files:
        name = str(file.relative_to(root) if file != root else file.name).encode("utf-8")
        hits.extend((file, needle) for needle in sorted(search.found(file.read_bytes()) | search.found(name)))
    return hits
