"""``medcl serve``: the FastAPI inference service over medcl models registered in MLflow."""

from medcl.serve.app import ServeSettings, create_app, load_medcl_model

__all__ = ["ServeSettings", "create_app", "load_medcl_model"]
