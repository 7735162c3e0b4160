"""``medcl data``: dataset adapters (official layouts -> validated manifests), the de-identification key and
synthetic datasets."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medcl.commands.common import command_parser
from medcl.data.deid import (
    BURNED_IN_FLAGGED,
    BURNED_IN_MODALITIES,
    DeidOptions,
    create_key,
    default_key_file,
    load_key,
    locate,
)
from medcl.data.prepare import available_adapters, merge_manifests, prepare
from medcl.data.synthetic import SYNTHESISERS
from medcl.errors import ConfigError

EXAMPLES = (
    "medcl data list",
    "medcl data synth mimic-cxr --out data/mimic-cxr-jpg --option n_subjects=40 --option image_size=96",
    "medcl data prepare mimic-cxr --root data/mimic-cxr-jpg --out data/mimic.csv --workers 2",
    "medcl data synth siim-acr --out data/siim --option n_patients=4 --option image_size=64",
    "medcl data key init",
    "medcl data prepare siim-acr --root data/siim --out data/siim.csv --deid-option retain-patient-characteristics",
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


def synthesize(kind: str, out: str | Path, **options: Any) -> Path:
    """Write synthetic dataset ``kind`` in its official layout under ``out`` (``medcl data synth``); returns the
    dataset root. Gaze sets annotate an existing MIMIC-CXR tree given as ``mimic_root``."""
    if kind not in SYNTHESISERS:
        raise ConfigError(f"no synthetic dataset {kind!r}; one of: {', '.join(sorted(SYNTHESISERS))}")
    synthesiser = SYNTHESISERS[kind]
    generator = synthesiser.load()
    if synthesiser.annotates_mimic:
        if "mimic_root" not in options:
            raise ConfigError(f"synth {kind} annotates a MIMIC-CXR tree: add --option mimic_root=<dir>")
        written = generator(options.pop("mimic_root"), out, **options)
    else:
        written = generator(out, **options)
    return Path(written["root"] if isinstance(written, Mapping) else written)


def _synth_epilog() -> str:
    width = max(map(len, SYNTHESISERS))
    lines = [f"  {name:<{width}}  {s.summary}" for name, s in sorted(SYNTHESISERS.items())]
    return (
        "datasets:\n" + "\n".join(lines) + "\n\n"
        "--option KEY=VALUE: a keyword argument of the dataset's generator, medcl.data.synthetic.<dataset>.generate_*\n"
        "(values parsed as YAML), e.g.\n"
        "  medcl data synth btcv --out data/btcv --option n_train=8 --option 'shape=[64, 64, 40]'\n"
        "  medcl data synth egd-cxr --out data/egd-cxr --option mimic_root=data/mimic-cxr-jpg --option n_images=20\n"
        "then: medcl data prepare <dataset> --root <out> --out <manifest.csv>"
    )


def _safe_private(text: str) -> tuple[int, str, int]:
    """``"0019,GEMS_ACQU_01,10"`` -> (0x0019, "GEMS_ACQU_01", 0x10): group and element byte in hex."""
    parts = [part.strip() for part in text.split(",")]
    try:
        group, creator, element = int(parts[0], 16), parts[1], int(parts[2], 16)
    except (IndexError, ValueError) as err:
        raise ConfigError(
            f"--safe-private expects GROUP,CREATOR,ELEMENT in hex (e.g. 0019,GEMS_ACQU_01,10), got {text!r}"
        ) from err
    return group, creator, element


def _deid_options(args: argparse.Namespace) -> DeidOptions:
    return DeidOptions.from_names(
        args.deid_option,
        allow_burned_in=frozenset(args.allow_burned_in),
        safe_private=frozenset(_safe_private(entry) for entry in args.safe_private),
    )


def _key_command(action: str) -> None:
    if action == "init":
        key, created = create_key()
        state = "created" if created else "exists (kept; an existing key is never replaced)"
        print(f"pseudonym key {state}: {key.path} (fingerprint {key.fingerprint})")
        if created:
            print("Back it up privately: without it the same patients get new pseudonyms. Never store it with data.")
    else:
        path = default_key_file()
        print(f"pseudonym key: {path} (fingerprint {load_key(path).fingerprint})")


def main(argv: list[str]) -> int:
    parser = command_parser("data", "Dataset adapters, the pseudonym key and synthetic datasets.", EXAMPLES)
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
    p.add_argument(
        "--deid-option",
        action="append",
        default=[],
        choices=[name.replace("_", "-") for name in DeidOptions.option_names()],
        help="a PS3.15 Table E.1-1 option (repeatable); default: the Basic Profile alone",
    )
    p.add_argument(
        "--allow-burned-in",
        action="append",
        default=[],
        choices=[BURNED_IN_FLAGGED, *BURNED_IN_MODALITIES],
        help="accept DICOM pixels that may show text: files flagged BurnedInAnnotation=YES, or a modality (repeatable)",
    )
    p.add_argument(
        "--safe-private",
        action="append",
        default=[],
        metavar="GROUP,CREATOR,ELEMENT",
        help="keep (after cleaning) one private attribute you know holds no identifier (repeatable)",
    )
    k = sub.add_parser("key", help="the installation's pseudonym key (never printed; only its fingerprint)")
    k.add_argument("action", choices=["init", "show"], help="init: create it if absent; show: path and fingerprint")
    loc = sub.add_parser("locate", help="the source file behind a pseudonymous path of a quarantine report")
    loc.add_argument("reported", help="the path as the report gives it")
    loc.add_argument("--root", required=True, help="the dataset folder the report is about")
    m = sub.add_parser("merge", help="merge shard manifests")
    m.add_argument("parts", nargs="+")
    m.add_argument("--out", required=True)
    s = sub.add_parser(
        "synth",
        help="write a synthetic dataset in the official layout",
        description="Write a synthetic dataset in its official on-disk layout (for tests, demos and try-outs).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_synth_epilog(),
    )
    s.add_argument("kind", metavar="dataset", choices=sorted(SYNTHESISERS), help="one of the datasets listed below")
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
            deid=_deid_options(args),
            **_parse_options(args.option),
        )
        counts = result.counts
        print(
            f"{result.manifest}: {counts['rows']} rows from {counts['discovered']} items, "
            f"{counts['quarantined']} quarantined (see {result.quarantine})"
        )
    elif args.command == "key":
        _key_command(args.action)
    elif args.command == "locate":
        found = locate(args.root, args.reported, load_key())
        if not found:
            raise ConfigError(f"no file under {args.root} has the report name {args.reported!r} with this key")
        print("\n".join(str(path) for path in found))
    elif args.command == "merge":
        print(merge_manifests(args.parts, args.out))
    elif args.command == "synth":
        print(synthesize(args.kind, args.out, **_parse_options(args.option)))
    return 0
