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

    defaults = ImageLimits()
    parser = command_parser("serve", "Serve medcl models registered in MLflow over HTTP.", EXAMPLES)
    parser.add_argument("--model", action="append", required=True, help="MLflow model URI or folder (repeatable)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--token-file", default=None, help=f"file holding the bearer token (default: ${TOKEN_ENV})")
    parser.add_argument("--allow-anonymous", action="store_true", help="serve without a token (local testing only)")
    parser.add_argument("--max-upload-mb", type=float, default=128.0, help="largest request body")
    parser.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="largest 2-D image")
    parser.add_argument("--max-voxels", type=int, default=defaults.max_voxels, help="largest 3-D/4-D volume")
    parser.add_argument("--max-side", type=int, default=defaults.max_side, help="longest image axis")
    parser.add_argument("--concurrency", type=int, default=2, help="inferences run at once")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    import uvicorn

    from medcl.serve.app import ServeSettings, create_app

    settings = ServeSettings(
        models=args.model,
        token=read_token(args.token_file),
        allow_anonymous=args.allow_anonymous,
        max_upload_bytes=int(args.max_upload_mb * 2**20),
        limits=ImageLimits(max_pixels=args.max_pixels, max_voxels=args.max_voxels, max_side=args.max_side),
        max_concurrency=args.concurrency,
    )
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=stop)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, access_log=False, log_level=args.log_level, timeout_graceful_shutdown=10
    )
    server = uvicorn.Server(config)
    server.run()
    if app.state.models.error:
        print(f"medcl serve: error: could not load the models ({app.state.models.error})", file=sys.stderr)
        return 1
    return 0
