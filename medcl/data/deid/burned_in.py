"""Pixels that may show identifying text: metadata de-identification cannot clean them, so such files are refused
(and quarantined by ``medcl data prepare``) unless the user accepts the risk for pixels they have checked.

At risk: a file that says BurnedInAnnotation = YES, and the modalities of :data:`BURNED_IN_MODALITIES` (or a
Secondary Capture SOP class, counted as ``SC``) whatever their BurnedInAnnotation says, because devices of these
kinds often write NO or nothing while printing the patient banner into the image.
"""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from medcl.data.deid.profile import BURNED_IN_FLAGGED, BURNED_IN_MODALITIES, DeidOptions
from medcl.errors import InvalidInputError

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"  # SC Image Storage and the multi-frame SC classes (.7.x)
WHY = {
    "US": "ultrasound screens print the patient banner",
    "SC": "secondary captures are screenshots or scanned documents",
    "OT": "'other' objects are often screenshots or scanned documents",
    "XC": "external-camera photographs may show faces, wristbands and labels",
    "ES": "endoscopy frames often carry the patient banner",
}


def burned_in_risk(ds: Dataset, options: DeidOptions) -> str | None:
    """Why the pixels of ``ds`` may show identifying text and the user has not accepted it, or None."""
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        if BURNED_IN_FLAGGED not in options.allow_burned_in:
            return (
                "BurnedInAnnotation is YES: the pixels may show identifying text (after checking or cleaning them, "
                f"accept with allow_burned_in {BURNED_IN_FLAGGED}: `--allow-burned-in {BURNED_IN_FLAGGED}`)"
            )
        return None
    sop_class = str(ds.get("SOPClassUID", "") or "")
    kind = "SC" if sop_class.startswith(SECONDARY_CAPTURE_PREFIX) else str(ds.get("Modality", "") or "").upper()
    if kind in BURNED_IN_MODALITIES and kind not in options.allow_burned_in:
        return (
            f"burned-in text risk: modality {kind} ({WHY[kind]}); if the pixels are clean, accept with "
            f"allow_burned_in {kind}: `--allow-burned-in {kind}`"
        )
    return None


def refuse_burned_in(ds: Dataset, options: DeidOptions, *, source: str | Path | None = None) -> None:
    """Raise :class:`InvalidInputError` naming ``source`` when :func:`burned_in_risk` finds a risk."""
    reason = burned_in_risk(ds, options)
    if reason is not None:
        raise InvalidInputError(source, reason)
