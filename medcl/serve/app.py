"""The inference service: a FastAPI app over medcl pyfunc models from MLflow.

Safety properties, each enforced here rather than left to a proxy:

* token authentication (``Authorization: Bearer <token>``, constant-time comparison) on every model endpoint;
  ``/health``, ``/ready`` and the OpenAPI schema stay open for orchestrators and clients;
* a request-body limit (413 before the body is read when ``Content-Length`` says so, and while streaming
  otherwise) and image-dimension limits checked from the file header before decoding (413);
* bad input is a 4xx with a message a user can act on: 415 unsupported type, 422 corrupt/truncated/not an image,
  404 for an endpoint the loaded models do not provide; a 500 is a bug, logged without request data;
* no PHI: uploads are written under a neutral name in a private temp folder, responses carry only model outputs
  (segmentations get a fresh NIfTI header), error messages have header text values redacted, and the log lines
  hold request id, route, status, size and latency only (uvicorn's access log is replaced by them);
* models load in the background: ``/health`` answers at once, ``/ready`` turns 200 once every model is loaded.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from medcl.data.uploads import ImageLimits, ImageTooLargeError, UnsupportedMediaError
from medcl.deploy.pyfunc import MedclPyfunc, load_model_folder
from medcl.deploy.segmentation import nifti_bytes
from medcl.errors import ConfigError, InvalidInputError

log = logging.getLogger("medcl.serve")

CAPABILITY_ROUTES = {
    "embed": "/v1/embed",
    "zero-shot": "/v1/zero-shot",
    "report": "/v1/report",
    "segment": "/v1/segment",
}


@dataclass
class ServeSettings:
    """Service configuration.

    Args:
        models: MLflow model URIs (``models:/name@alias``, ``runs:/...``, a local model folder) of medcl pyfuncs;
            each endpoint is served by the model that provides it.
        token: the bearer token clients must send; None only with ``allow_anonymous``.
        max_upload_bytes: largest request body.
        limits: largest image dimensions decoded.
        max_concurrency: inferences run at once (the rest wait their turn).
    """

    models: Sequence[str]
    token: str | None
    allow_anonymous: bool = False
    max_upload_bytes: int = 128 * 2**20
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_concurrency: int = 2

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("give at least one model (--model models:/<name>@<alias> or a model folder)")
        if not self.token and not self.allow_anonymous:
            raise ConfigError("no token: set MEDCL_SERVE_TOKEN (or --token-file), or pass --allow-anonymous")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the token must be at least 16 characters")


# ---------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------


def load_medcl_model(uri: str) -> MedclPyfunc:
    """A medcl model from the registry, a run or a folder, loaded without running code the model carries
    (:func:`medcl.deploy.pyfunc.load_model_folder`)."""
    import mlflow

    from medcl.tracking import default_tracking_uri

    mlflow.set_tracking_uri(default_tracking_uri())
    return load_model_folder(uri)


class ModelSet:
    """The loaded models by capability, loaded in a background thread."""

    def __init__(self, uris: Sequence[str], limits: ImageLimits, loader: Callable[[str], MedclPyfunc]) -> None:
        self.uris = list(uris)
        self.limits = limits
        self.loader = loader
        self.by_capability: dict[str, MedclPyfunc] = {}
        self.descriptions: list[dict[str, Any]] = []
        self.error: str | None = None
        self.ready = threading.Event()

    def load(self) -> None:
        try:
            for uri in self.uris:
                started = time.perf_counter()
                model = self.loader(uri)
                model.limits = self.limits
                for capability in model.capabilities:
                    if capability in self.by_capability:
                        raise ConfigError(f"two models provide {capability!r}; serve one per capability")
                    self.by_capability[capability] = model
                self.descriptions.append({"uri": uri, **model.describe()})
                log.info("loaded %s (%s) in %.1f s", uri, ", ".join(model.capabilities), time.perf_counter() - started)
            self.ready.set()
        except Exception as err:  # reported on /ready and in the log; the URI is configuration, not PHI
            self.error = f"{type(err).__name__}: {err}"
            log.error("model loading failed: %s", self.error)

    def get(self, capability: str) -> MedclPyfunc:
        if not self.ready.is_set():
            raise ServiceNotReady(self.error)
        model = self.by_capability.get(capability)
        if model is None:
            have = ", ".join(CAPABILITY_ROUTES[c] for c in self.by_capability) or "none"
            raise CapabilityMissing(f"no loaded model provides {CAPABILITY_ROUTES[capability]}; available: {have}")
        return model


class ServiceNotReady(Exception):
    pass


class CapabilityMissing(Exception):
    pass


# ---------------------------------------------------------------------------------------------------------------
# Middleware
# ---------------------------------------------------------------------------------------------------------------


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware: 413 for request bodies over ``max_bytes`` (declared or streamed)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, send: Callable[[dict], Awaitable[None]]) -> None:
        detail = f"request body exceeds the limit of {self.max_bytes:,} bytes"
        response = JSONResponse({"detail": detail}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send)
            return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> dict:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app makes of the aborted body, the client gets the 413
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._reject(send)


# ---------------------------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------------------------


class Health(BaseModel):
    status: str = Field(examples=["ok"])


class Readiness(BaseModel):
    status: str = Field(description="ready, loading or failed")
    models: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None


class Embedding(BaseModel):
    embedding: list[float] = Field(description="L2-normalised image embedding")
    dim: int


class ZeroShot(BaseModel):
    scores: dict[str, float] = Field(description="probability that each finding is present (prompt ensembles)")


class Report(BaseModel):
    report: str


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    404: {"model": Problem, "description": "no loaded model provides this endpoint"},
    413: {"model": Problem, "description": "request body or image dimensions over the limits"},
    415: {"model": Problem, "description": "unsupported file type"},
    422: {"model": Problem, "description": "corrupt, truncated or unusable image"},
    503: {"model": Problem, "description": "models still loading"},
}

# Module level: FastAPI resolves the (postponed) annotations of endpoint functions in this module's namespace.
BEARER = HTTPBearer(auto_error=False, description="the service token (MEDCL_SERVE_TOKEN)")
UploadField = Annotated[UploadFile, File(description="DICOM (.dcm or no suffix), NIfTI (.nii, .nii.gz), PNG or JPEG")]


# ---------------------------------------------------------------------------------------------------------------
# App
# ---------------------------------------------------------------------------------------------------------------


def create_app(
    settings: ServeSettings,
    loader: Callable[[str], MedclPyfunc] = load_medcl_model,
    on_load_failure: Callable | None = None,
) -> FastAPI:
    """Build the app; models load in a background thread started with the app (``/ready`` says when done)."""
    models = ModelSet(settings.models, settings.limits, loader)
    limiter = anyio.CapacityLimiter(settings.max_concurrency)

    def load_then_report() -> None:
        models.load()
        if models.error and on_load_failure is not None:
            on_load_failure()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        threading.Thread(target=load_then_report, name="medcl-model-loader", daemon=True).start()
        yield

    app = FastAPI(
        title="medcl inference service",
        version=_version(),
        description="Image embeddings, zero-shot finding scores, reports and segmentations from medcl models.",
        lifespan=lifespan,
    )
    app.state.models = models

    def authorize(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]) -> None:
        if settings.token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), settings.token.encode()):
            raise Unauthorized

    async def run_model(capability: str, upload: UploadFile, fn: Callable[[MedclPyfunc, Any], Any]) -> Any:
        model = models.get(capability)
        content = await upload.read()
        filename = upload.filename or ""

        def work() -> Any:
            return fn(model, model.decode(content, filename))

        return await anyio.to_thread.run_sync(work, limiter=limiter)

    secured = [Depends(authorize)]

    @app.get("/health", response_model=Health, tags=["service"])
    async def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok")

    @app.get("/ready", response_model=Readiness, tags=["service"], responses={503: {"model": Readiness}})
    async def ready() -> Any:
        """Readiness: every model is loaded (503 while loading or after a failed load)."""
        if models.ready.is_set():
            return Readiness(status="ready", models=models.descriptions)
        status = "failed" if models.error else "loading"
        return JSONResponse(Readiness(status=status, error=models.error).model_dump(), status_code=503)

    @app.get("/v1/models", dependencies=secured, tags=["models"], responses=ERRORS)
    async def list_models() -> list[dict[str, Any]]:
        """The loaded models: kind, capabilities, classes, image size."""
        if not models.ready.is_set():
            raise ServiceNotReady(models.error)
        return models.descriptions

    @app.post("/v1/embed", response_model=Embedding, dependencies=secured, tags=["inference"], responses=ERRORS)
    async def embed(file: UploadField) -> Embedding:
        """Image embedding of a radiograph (2-D DICOM, PNG, JPEG or 2-D NIfTI)."""
        vector = await run_model("embed", file, lambda m, image: m.embed(image))
        return Embedding(embedding=vector.tolist(), dim=len(vector))

    @app.post("/v1/zero-shot", response_model=ZeroShot, dependencies=secured, tags=["inference"], responses=ERRORS)
    async def zero_shot(file: UploadField) -> ZeroShot:
        """Zero-shot finding scores from prompt ensembles (positive vs negative prompts per finding)."""
        scores = await run_model("zero-shot", file, lambda m, image: m.zero_shot(m.embed(image)))
        return ZeroShot(scores=scores)

    @app.post("/v1/report", response_model=Report, dependencies=secured, tags=["inference"], responses=ERRORS)
    async def report(file: UploadField) -> Report:
        """A generated radiology report (needs a report-generation model)."""
        text = await run_model("report", file, lambda m, image: m.generate_report(image))
        return Report(report=text)

    @app.post(
        "/v1/segment",
        dependencies=secured,
        tags=["inference"],
        response_class=Response,
        responses={200: {"content": {"application/gzip": {}}, "description": "label map (.nii.gz)"}, **ERRORS},
    )
    async def segment(file: UploadField) -> Response:
        """Label map of a volume as gzipped NIfTI on the input's voxel grid and affine."""
        label_map, affine = await run_model("segment", file, lambda m, image: m.segment(image))
        body = await anyio.to_thread.run_sync(nifti_bytes, label_map, affine)
        headers = {"Content-Disposition": 'attachment; filename="segmentation.nii.gz"'}
        return Response(body, media_type="application/gzip", headers=headers)

    _install_error_handlers(app)
    _install_request_log(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    return app


class Unauthorized(Exception):
    pass


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, err: Unauthorized) -> JSONResponse:
        return _problem(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, err: InvalidInputError) -> JSONResponse:
        status = 415 if isinstance(err, UnsupportedMediaError) else 413 if isinstance(err, ImageTooLargeError) else 422
        request.state.error = type(err).__name__
        return _problem(status, str(err))

    @app.exception_handler(CapabilityMissing)
    async def missing(request: Request, err: CapabilityMissing) -> JSONResponse:
        return _problem(404, str(err))

    @app.exception_handler(ServiceNotReady)
    async def not_ready(request: Request, err: ServiceNotReady) -> JSONResponse:
        detail = "models are still loading" if not str(err) or str(err) == "None" else "model loading failed"
        return _problem(503, detail, {"Retry-After": "5"})


def _install_request_log(app: FastAPI) -> None:
    """One log line per request (id, method, route template, status, size, latency) and PHI-safe 500s."""

    @app.middleware("http")
    async def request_log(request: Request, call_next: Callable) -> Response:
        given = request.headers.get("x-request-id", "")[:64]
        request.state.id = given if given.isalnum() else uuid.uuid4().hex[:12]
        started = time.perf_counter()
        try:
            response = await call_next(request)
        except Exception as err:
            # Messages and tracebacks may quote request data: log where it happened, not what it said.
            tb = err.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
            log.error("%s internal error %s at %s", request.state.id, type(err).__name__, where)
            response = _problem(500, f"internal error (request {request.state.id})")
        route = request.scope.get("route")
        path = getattr(route, "path", "<unmatched>")  # the template: raw paths of unknown URLs are not logged
        response.headers["X-Request-ID"] = request.state.id
        log.info(
            "%s %s %s %d %s bytes %.1f ms %s",
            request.state.id, request.method, path, response.status_code,
            request.headers.get("content-length", "-"), (time.perf_counter() - started) * 1000,
            getattr(request.state, "error", ""),
        )  # fmt: skip
        return response


def _version() -> str:
    from medcl import __version__

    return __version__
