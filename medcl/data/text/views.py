"""Radiograph view positions (DICOM/MIMIC-CXR ``ViewPosition``): the names medcl distinguishes and their indices."""

from __future__ import annotations

from typing import Any

FRONTAL = ("PA", "AP")
# MIMIC-CXR ViewPosition values with their own embedding; anything else (or missing) shares the last index.
VIEW_POSITIONS = ("PA", "AP", "LATERAL", "LL")


def view_index(view: Any) -> int:
    """Embedding index of a ViewPosition string (unknown/missing -> ``len(VIEW_POSITIONS)``)."""
    key = str(view).strip().upper() if isinstance(view, str) else ""
    return VIEW_POSITIONS.index(key) if key in VIEW_POSITIONS else len(VIEW_POSITIONS)
