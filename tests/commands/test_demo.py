"""`medcl demo`'s data: the documented `medcl data synth` + `medcl data prepare`, with the demo's arguments."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from medcl.commands.demo import DEMO_DATA, default_config, prepare_demo_data


def test_the_demo_config_header_shows_the_synth_options_medcl_demo_uses() -> None:
    header = "".join(line[1:] for line in default_config().read_text().splitlines(True) if line.startswith("#"))
    synth = re.search(r"medcl data synth mimic-cxr .*?(?=\n\s*medcl )", header, re.S).group(0).replace("\\\n", " ")
    words = shlex.split(synth)
    options = dict(words[i + 1].split("=", 1) for i, w in enumerate(words) if w == "--option")
    assert {k: yaml.safe_load(v) for k, v in options.items()} == {**DEMO_DATA, "split_fractions": [0.75, 0.08, 0.17]}
    assert DEMO_DATA == {"n_subjects": 1200, "split_fractions": (0.75, 0.08, 0.17), "seed": 0, "image_size": 256}
    assert "--root demo_out/mimic-cxr-jpg --out demo_out/mimic-cxr/manifest.csv" in header


def test_prepare_demo_data_writes_the_tree_and_manifest_once(tmp_path: Path) -> None:
    manifest = prepare_demo_data(tmp_path, n_subjects=6, image_size=32, workers=1)
    assert manifest == tmp_path / "mimic-cxr" / "manifest.csv" and manifest.is_file()
    assert (tmp_path / "mimic-cxr-jpg" / "mimic-cxr-2.0.0-metadata.csv").is_file()
    written = manifest.stat().st_mtime_ns
    assert prepare_demo_data(tmp_path, n_subjects=6, image_size=32, workers=1) == manifest
    assert manifest.stat().st_mtime_ns == written  # reused, not rewritten
