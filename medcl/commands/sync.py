"""``medcl sync``: upload metrics a run could not send to its MLflow tracking server (a spool file)."""

from __future__ import annotations

from medcl.commands.common import command_parser

EXAMPLES = ("medcl sync runs/convirt/checkpoints/mlflow_spool.jsonl",)


def main(argv: list[str]) -> int:
    parser = command_parser(
        "sync", "Upload the metrics a run kept in a spool file while its MLflow server was down.", EXAMPLES
    )
    parser.add_argument("spool", help="spool file written at the end of such a run (mlflow_spool.jsonl)")
    parser.add_argument("--tracking-uri", default=None, help="send to this server instead of the recorded one")
    args = parser.parse_args(argv)

    from medcl.tracking import upload_spool

    print(f"{upload_spool(args.spool, args.tracking_uri)} metrics sent")
    return 0
