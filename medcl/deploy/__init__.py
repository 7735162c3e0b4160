"""Deployment: medcl tasks as MLflow pyfunc models (logging, registration, ``LogBestModel``) and as MONAI bundles.

Configs name the callback as ``medcl.deploy.LogBestModel``.
"""

from __future__ import annotations

from medcl._lazy import lazy_exports

_EXPORTS = {
    "LogBestModel": "medcl.deploy.callbacks",
    "LoggedModel": "medcl.deploy.mlflow_models",
    "log_task_model": "medcl.deploy.mlflow_models",
    "register": "medcl.deploy.mlflow_models",
    "load_model_folder": "medcl.deploy.pyfunc",
    "export_bundle": "medcl.deploy.bundle",
}

__getattr__, __all__ = lazy_exports(__name__, _EXPORTS)
