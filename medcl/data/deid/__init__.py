"""De-identification of DICOM data after DICOM PS3.15 Annex E, with keyed pseudonyms.

* :mod:`~medcl.data.deid.profile`: Table E.1-1 (shipped as ``table_e1_1.csv``), the options, the resolved actions.
* :mod:`~medcl.data.deid.clean`: :func:`deidentify` a pydicom Dataset (recursively), :func:`deidentify_file`.
* :mod:`~medcl.data.deid.keys`: the per-installation secret key; pseudonyms, UIDs and date shifts derived from it.
* :mod:`~medcl.data.deid.burned_in`: refusing pixels that may show identifying text.
* :mod:`~medcl.data.deid.reports`: pseudonymous names for reports, :func:`locate` to find the file behind one,
  :func:`scan_for_phi` to audit written files.
"""

from medcl.data.deid.burned_in import burned_in_risk, refuse_burned_in
from medcl.data.deid.clean import deidentify, deidentify_file, map_uid, patient_identifier, write_dataset
from medcl.data.deid.keys import (
    KEY_FILE_ENV,
    PseudonymKey,
    check_key_outside,
    create_key,
    default_key_file,
    load_key,
)
from medcl.data.deid.profile import BURNED_IN_FLAGGED, BURNED_IN_MODALITIES, DeidOptions, action_plan, table
from medcl.data.deid.reports import find_phi, locate, pseudonymize_text, scan_for_phi

__all__ = [
    "BURNED_IN_FLAGGED",
    "BURNED_IN_MODALITIES",
    "KEY_FILE_ENV",
    "DeidOptions",
    "PseudonymKey",
    "action_plan",
    "burned_in_risk",
    "check_key_outside",
    "create_key",
    "default_key_file",
    "deidentify",
    "deidentify_file",
    "find_phi",
    "load_key",
    "locate",
    "map_uid",
    "patient_identifier",
    "pseudonymize_text",
    "refuse_burned_in",
    "scan_for_phi",
    "table",
    "write_dataset",
]
