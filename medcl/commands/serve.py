"""``medcl serve --model models:/<name>@<alias> [--model ...]``: run the inference service with uvicorn.

export MEDCL_SERVE_TOKEN=$(python -c "import secrets; print(secrets.token_urlsafe(32))")
medcl serve --model models:/cxr-clip@champion --model models:/ct-seg@champion --host 0.0.0.0 --port 8000
curl -H "Authorization: Bearer $MEDCL_SERVE_TOKEN" -F file=@CT_small.dcm http://localhost:8000/v1/embed
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from medcl.commands.common import command_parser
from medcl.errors import ConfigError

TOKEN_ENV = "MEDCL_SERVE_TOKEN"
EXAMPLES = (
    "export MEDCL_SERVE_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
    "medcl serve --model models:/cxr-clip@champion --model models:/ct-seg@champion --host 0.0.0.0 --port 8000",
    'curl -H "Authorization: Bearer $MEDCL_SERVE_TOKEN" -F file=@image.png http://localhost:8000/v1/embed',
)

# Limits that are a ServeSettings field as they stand: flag -> (field, help); the field's default is the flag's.
LIMIT_FLAGS = {
    "--concurrency": ("max_concurrency", "inferences run at once"),
    "--inference-timeout": (
        "inference_timeout",
        "seconds from upload to answer: 503 if no inference slot frees up, 504 if it runs over",
    ),
    "--max-uploads-per-client": (
        "max_uploads_per_client",
        "requests with a body in flight per client address (429 past it)",
    ),
    "--header-timeout": ("header_timeout", "seconds for a request's headers (408)"),
    "--body-timeout": ("body_timeout", "seconds for a whole request body (408)"),
    "--body-idle-timeout": ("body_idle_timeout", "seconds without a body byte (408)"),
    "--keep-alive-timeout": ("keep_alive_timeout", "seconds an idle keep-alive connection stays open"),
    "--max-connections": ("max_connections", "connections and requests at once (uvicorn answers 503 past it)"),
}


def read_token(token_file: str | None) -> str | None:
    """The token from ``--token-file`` or ``$MEDCL_SERVE_TOKEN`` (never a command-line value: ``ps`` shows those)."""
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as err:
            raise ConfigError(f"{token_file}: cannot read the token file ({err.strerror})") from None
    return os.environ.get(TOKEN_ENV) or None


def main(argv: list[str]) -> int:
    from medcl.data.uploads import ImageLimits
    from medcl.serve.app import ServeSettings

    defaults = ImageLimits()
    serve = ServeSettings(models=["-"], token=None, allow_anonymous=True)  # the defaults of the service settings
    parser = command_parser("serve", "Serve medcl models registered in MLflow over HTTP.", EXAMPLES)
    parser.add_argument("--model", action="append", required=True, help="MLflow model URI or folder (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-file", default=None, help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--allow-anonymous", action="store_true", help="serve without a token (local testing only)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    limits = parser.add_argument_group("limits (docs/deployment.md, 'Limits')")
    limits.add_argument("--max-upload-mb", type=float, default=serve.max_upload_bytes / 2**20, help="largest body")
    limits.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest 2-D image (x channels)")
    limits.add_argument("--max-voxels", type=int, default=defaults.max_voxels, help="largest volume (x channels)")
    limits.add_argument("--max-side", type=int, default=defaults.max_side, help="longest image axis")
    for flag, (field, text) in LIMIT_FLAGS.items():
        default = getattr(serve, field)
        limits.add_argument(flag, type=type(default), default=default, help=text)
    limits.add_argument(
        "--max-header-kb", type=int, default=serve.max_header_bytes // 2**10, help="largest request head (400 past it)"
    )
    limits.add_argument("--trusted-proxy", action="append", default=[],
                        help="proxy address whose X-Forwarded-For names the client (repeatable)")  # fmt: skip
    args = parser.parse_args(argv)

    import uvicorn

    from medcl.serve.app import create_app
    from medcl.serve.server import uvicorn_config

    settings = ServeSettings(
        models=args.model,
        token=read_token(args.token_file),
        allow_anonymous=args.allow_anonymous,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        limits=ImageLimits(max_pixels=args.max_pixels, max_voxels=args.max_voxels, max_side=args.max_side),
        max_header_bytes=args.max_header_kb * 2**10,
        trusted_proxies=args.trusted_proxy,
        **{field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _) in LIMIT_FLAGS.items()},
    )
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    server = uvicorn.Server(uvicorn_config(app, settings, host=args.host, port=args.port, log_level=args.log_level))
    server.run()
    if app.state.models.error:
        print(f"medcl serve: error: could not load the models ({app.state.models.error})", file=sys.stderr)
        return 1
    return 0
