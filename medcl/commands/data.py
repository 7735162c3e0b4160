"""``medcl data``: dataset adapters (official layouts -> validated manifests) and synthetic datasets."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from medcl.commands.common import command_parser
from medcl.data.prepare import available_adapters, merge_manifests, prepare
from medcl.errors import ConfigError

EXAMPLES = (
    "medcl data list",
    "medcl data synth mimic-cxr --out data/mimic-cxr-jpg --option n_subjects=40 --option image_size=96",
    "medcl data prepare mimic-cxr --root data/mimic-cxr-jpg --out data/mimic.csv --workers 2",
)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> {"a": 1, "b": "x"} (values parsed as YAML scalars)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--option expects key=value, got {pair!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    return options


# Gaze sets annotate an existing (synthetic) MIMIC-CXR tree: they take it as --option mimic_root=<dir>.
NEEDS_MIMIC_ROOT = {"egd-cxr", "reflacx"}
SYNTHESISERS = {
    "mimic-cxr": "medcl.data.synthetic.cxr:generate_mimic_cxr",
    "egd-cxr": "medcl.data.synthetic.gaze:write_egd_cxr",
    "reflacx": "medcl.data.synthetic.gaze:write_reflacx",
    "chexpert": "medcl.data.synthetic.cxr_downstream:generate_chexpert",
    "rsna-pneumonia": "medcl.data.synthetic.cxr_downstream:generate_rsna_pneumonia",
    "siim-acr": "medcl.data.synthetic.cxr_downstream:generate_siim_acr",
    "msd": "medcl.data.synthetic.volume:generate_msd",
    "btcv": "medcl.data.synthetic.volume:generate_btcv",
    "brats": "medcl.data.synthetic.volume:generate_brats",
    "totalsegmentator": "medcl.data.synthetic.volume:generate_totalsegmentator",
    "acdc": "medcl.data.synthetic.volume:generate_acdc",
}


def _resolve(target: str) -> Any:
    import importlib

    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _resolve(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def synthesize(kind: str, out: str | Path, **options: Any) -> Path:
    """Write synthetic dataset ``kind`` in its official layout under ``out`` (``medcl data synth``); returns the
    dataset root. Gaze sets annotate an existing MIMIC-CXR tree given as ``mimic_root``."""
    if kind not in SYNTHESISERS:
        raise ConfigError(f"no synthetic dataset {kind!r}; one of: {', '.join(sorted(SYNTHESISERS))}")
    generator = _resolve(SYNTHESISERS[kind])
    if kind in NEEDS_MIMIC_ROOT:
        if "mimic_root" not in options:
            raise ConfigError(f"synth {kind} annotates a MIMIC-CXR tree: add --option mimic_root=<dir>")
        return Path(generator(options.pop("mimic_root"), out, **options))
    return Path(generator(out, **options))


def main(argv: list[str]) -> int:
    parser = command_parser("data", "Dataset adapters and synthetic datasets.", EXAMPLES)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list dataset adapters")
    p = sub.add_parser("prepare", help="write a validated manifest for a dataset tree")
    p.add_argument("dataset")
    p.add_argument("--root", required=True, help="the dataset folder as downloaded")
    p.add_argument("--out", required=True, help="manifest CSV to write (quarantine/summary go beside it)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: CPUs, at most 8)")
    p.add_argument("--shard", default=None, help="i/N: process the i-th of N slices (cluster array jobs)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="adapter option")
    p.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("merge", help="merge shard manifests")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", required=True)
    s = sub.add_parser("synth", help="write a synthetic dataset in the official layout")
    s.add_argument("kind", choices=sorted(SYNTHESISERS))
    s.add_argument("--out", required=True, help="output folder (for gaze sets: the gaze dataset folder)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="generator keyword argument")
    args = parser.parse_args(argv)
    if args.command == "list":
        print("\n".join(available_adapters()))
    elif args.command == "prepare":
        result = prepare(
            args.dataset,
            args.root,
            args.out,
            workers=args.workers,
            shard=args.shard,
            progress=not args.no_progress,
            **_parse_options(args.option),
        )
        counts = result.counts
        print(
            f"{result.manifest}: {counts['rows']} rows from {counts['discovered']} items, "
            f"{counts['quarantined']} quarantined (see {result.quarantine})"
        )
    elif args.command == "merge":
        print(merge_manifests(args.parts, args.out))
    elif args.command == "synth":
        print(synthesize(args.kind, args.out, **_parse_options(args.option)))
    return 0
