"""``medcl export``: a segmentation checkpoint as a MONAI bundle (+ TorchScript where the network allows)."""

from __future__ import annotations

import json

from medcl.commands.common import command_parser

EXAMPLES = (
    "medcl export --checkpoint runs/seg/checkpoints/last.ckpt --out bundle",
    "python -m monai.bundle run --config_file bundle/configs/inference.json --bundle_root bundle "
    "--dataset_dir <folder of .nii.gz> --output_dir <folder>",
)


def main(argv: list[str]) -> int:
    parser = command_parser(
        "export", "Export a segmentation checkpoint as a MONAI bundle (and TorchScript where possible).", EXAMPLES
    )
    parser.add_argument("--checkpoint", required=True, help="Segmentation checkpoint (.ckpt)")
    parser.add_argument("--out", required=True, help="bundle folder to write")
    parser.add_argument("--no-torchscript", action="store_true", help="skip models/model.ts")
    args = parser.parse_args(argv)

    from medcl.deploy.bundle import export_bundle

    summary = export_bundle(args.checkpoint, args.out, torchscript_model=not args.no_torchscript)
    print(json.dumps(summary, indent=2))
    return 0
