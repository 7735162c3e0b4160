"""The inference service: a FastAPI app over medcl pyfunc models from MLflow.

Safety properties, each enforced here rather than left to a proxy (docs/deployment.md, "Limits", says which limit
lives where):

* token authentication (``Authorization: Bearer <token>``, constant-time comparison) on every model endpoint,
  checked before a byte of the body is read (:mod:`medcl.serve.guards`): an unauthenticated upload is never
  received, parsed or spooled; ``/health``, ``/ready`` and the OpenAPI schema stay open for orchestrators;
* limits, each answered with a 4xx: body size (413, declared or streamed), body pace (408), uploads in flight per
  client (429), image dimensions from the file header before decoding, every channel counted (413, decompression
  bombs included); inference gets a deadline (503 when no slot frees up in time, 504 when it runs over);
* bad input is a 4xx with a message a user can act on: 415 unsupported type, 422 corrupt/truncated/not an image,
  an empty axis, NaN/infinite pixels, wrong dimensionality; 404 for an endpoint the loaded models do not provide;
  a model output is never NaN or null (a model whose own example gives NaN is refused at load); a 500 is a bug,
  logged without request data;
* no PHI: uploads are written under a neutral name in a private temp folder, responses carry only model outputs
  (segmentations get a fresh NIfTI header), error messages have header text values redacted (any case), and the
  log lines hold request id, route, status, size and latency only (uvicorn's access log is replaced by them);
* models load in the background: ``/health`` answers at once, ``/ready`` turns 200 once every model is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from medcl.data.uploads import ImageLimits, ImageTooLargeError, UnsupportedMediaError
from medcl.deploy.pyfunc import MedclPyfunc, NonFiniteOutputError, load_model_folder
from medcl.deploy.segmentation import nifti_bytes
from medcl.errors import ConfigError, InvalidInputError
from medcl.serve.guards import RequestLog, UploadGuard, token_matches

log = logging.getLogger("medcl.serve")

CAPABILITY_ROUTES = {
    "embed": "/v1/embed",
    "zero-shot": "/v1/zero-shot",
    "report": "/v1/report",
    "segment": "/v1/segment",
}


@dataclass
class ServeSettings:
    """Service configuration (``medcl serve`` flags; docs/deployment.md, "Limits").

    Args:
        models: MLflow model URIs (``models:/name@alias``, ``runs:/...``, a local model folder) of medcl pyfuncs;
            each endpoint is served by the model that provides it.
        token: the bearer token clients must send; None only with ``allow_anonymous``.
        max_upload_bytes: largest request body.
        limits: largest image dimensions decoded (every channel counted).
        max_concurrency: inferences run at once (the rest wait their turn, up to ``inference_timeout``).
        inference_timeout: seconds from the body's arrival to the model's answer: 503 when no inference slot frees
            up in time, 504 when the inference itself runs over.
        max_uploads_per_client: requests with a body in flight per client address (429 past it).
        header_timeout: seconds for a request head (request line and headers).
        body_timeout: seconds for a whole request body; ``body_idle_timeout``: seconds without a body byte (408).
        keep_alive_timeout: seconds an idle keep-alive connection stays open.
        max_connections: open connections and requests at once (uvicorn answers 503 past it).
        max_header_bytes: largest request head (uvicorn/h11 answers 400 past it).
        trusted_proxies: addresses whose ``X-Forwarded-For`` names the client (for the per-client limit).
    """

    models: Sequence[str]
    token: str | None
    allow_anonymous: bool = False
    max_upload_bytes: int = 128 * 2**20
    limits: ImageLimits = field(default_factory=ImageLimits)
    max_concurrency: int = 2
    inference_timeout: float = 120.0
    max_uploads_per_client: int = 16
    header_timeout: float = 10.0
    body_timeout: float = 120.0
    body_idle_timeout: float = 15.0
    keep_alive_timeout: int = 5
    max_connections: int = 256
    max_header_bytes: int = 16 * 2**10
    trusted_proxies: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("give at least one model (--model models:/<name>@<alias> or a model folder)")
        if not self.token and not self.allow_anonymous:
            raise ConfigError("no token: set MEDCL_SERVE_TOKEN (or --token-file), or pass --allow-anonymous")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError("the token must be at least 16 characters")
        positive = {
            "max_upload_bytes": self.max_upload_bytes, "max_concurrency": self.max_concurrency,
            "inference_timeout": self.inference_timeout, "max_uploads_per_client": self.max_uploads_per_client,
            "header_timeout": self.header_timeout, "body_timeout": self.body_timeout,
            "body_idle_timeout": self.body_idle_timeout, "max_connections": self.max_connections,
            "max_header_bytes": self.max_header_bytes,
        }  # fmt: skip
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")


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
                try:
                    model.self_check()
                except NonFiniteOutputError as err:
                    raise ConfigError(f"{uri}: refusing to serve it: on its input example {err}") from None
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


class InferenceBusy(Exception):
    pass


class InferenceTimeout(Exception):
    pass


class InferenceQueue:
    """At most ``slots`` inferences at once, each request waiting at most ``timeout`` seconds in all.

    Inference runs in a worker thread, which cannot be interrupted: a request past its deadline gets its 504 at
    once, while its inference finishes in the background and keeps its slot until then, so the number of
    inferences running never exceeds ``slots`` (and a stuck model turns later requests into 503s, not into a pile
    of threads).
    """

    def __init__(self, slots: int, timeout: float) -> None:
        self.slots = slots
        self.timeout = timeout
        self._free: asyncio.Semaphore | None = None  # made in the server's event loop, on first use

    async def run(self, work: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        if self._free is None:
            self._free = asyncio.Semaphore(self.slots)
        free = self._free
        deadline = loop.time() + self.timeout
        try:
            await asyncio.wait_for(free.acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise InferenceBusy(f"all {self.slots} inference slot(s) stayed busy for {self.timeout:g} s") from None
        future = loop.run_in_executor(None, work)
        future.add_done_callback(lambda _: free.release())
        try:
            return await asyncio.wait_for(asyncio.shield(future), max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            future.add_done_callback(lambda f: f.exception())  # retrieved: no "exception never retrieved" noise
            raise InferenceTimeout(f"inference did not finish within {self.timeout:g} s") from None


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
    400: {"model": Problem, "description": "unreadable multipart body"},
    401: {"model": Problem, "description": "missing or wrong bearer token"},
    404: {"model": Problem, "description": "no loaded model provides this endpoint"},
    408: {"model": Problem, "description": "request headers or body too slow"},
    413: {"model": Problem, "description": "request body or image over the limits (decompression bombs included)"},
    415: {"model": Problem, "description": "unsupported file type"},
    422: {"model": Problem, "description": "missing file; corrupt, truncated, empty, non-finite or unusable image"},
    429: {"model": Problem, "description": "too many uploads in flight from this client"},
    503: {"model": Problem, "description": "models still loading, or every inference slot busy past the deadline"},
    504: {"model": Problem, "description": "inference ran past the deadline"},
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
    inference = InferenceQueue(settings.max_concurrency, settings.inference_timeout)

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
        """Declares the scheme in the OpenAPI schema; the check that matters ran in UploadGuard before the body
        was read, and this repeats it for routes reached some other way."""
        if settings.token is None:
            return
        given = f"Bearer {credentials.credentials}" if credentials is not None else ""
        if not token_matches(given.encode(), settings.token):
            raise Unauthorized

    async def run_model(capability: str, upload: UploadFile, fn: Callable[[MedclPyfunc, Any], Any]) -> Any:
        model = models.get(capability)
        content = await upload.read()
        filename = upload.filename or ""

        def work() -> Any:
            return fn(model, model.decode(content, filename))

        return await inference.run(work)

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
    app.add_middleware(
        UploadGuard,
        token=settings.token,
        max_bytes=settings.max_upload_bytes,
        max_uploads_per_client=settings.max_uploads_per_client,
        body_timeout=settings.body_timeout,
        body_idle_timeout=settings.body_idle_timeout,
    )
    app.add_middleware(RequestLog, known_paths=[getattr(route, "path", "") for route in app.routes])  # outermost
    return app


class Unauthorized(Exception):
    pass


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _answer(
    status: int, detail: Callable[[Exception], str], headers: dict[str, str] | None = None, *, logged: bool = True
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """An exception handler answering ``status`` with ``detail(err)``; ``logged`` names the error in the request's
    log line (its class name only: never request data)."""

    async def handle(request: Request, err: Exception) -> JSONResponse:
        if logged:
            request.state.error = type(err).__name__
        return _problem(status, detail(err), headers)

    return handle


def _install_error_handlers(app: FastAPI) -> None:
    retry = {"Retry-After": "5"}
    answers = {
        Unauthorized: _answer(
            401, lambda err: "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"}, logged=False
        ),
        NonFiniteOutputError: _answer(422, lambda err: f"upload: {err}; no result is returned for this image"),
        InferenceBusy: _answer(503, lambda err: f"server busy: {err}; retry later", retry),
        InferenceTimeout: _answer(
            504, lambda err: f"{err} (the service's --inference-timeout); send a smaller image or retry later"
        ),
        CapabilityMissing: _answer(404, str, logged=False),
    }
    for error, handler in answers.items():
        app.add_exception_handler(error, handler)

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, err: InvalidInputError) -> JSONResponse:
        status = 415 if isinstance(err, UnsupportedMediaError) else 413 if isinstance(err, ImageTooLargeError) else 422
        request.state.error = type(err).__name__
        return _problem(status, str(err))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        # One message string like every other error (FastAPI's default is a list that may quote the input).
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in err.errors()
        )
        request.state.error = "RequestValidationError"
        return _problem(422, f"request: {problems}")

    @app.exception_handler(ServiceNotReady)
    async def not_ready(request: Request, err: ServiceNotReady) -> JSONResponse:
        detail = "models are still loading" if not str(err) or str(err) == "None" else "model loading failed"
        return _problem(503, detail, retry)


def _version() -> str:
    from medcl import __version__

    return __version__
