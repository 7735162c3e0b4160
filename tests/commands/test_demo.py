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


def test_medcl_demo_checks_its_config_first_then_trains_and_tests(tmp_path, monkeypatch, capsys) -> None:
    """The demo end to end on a small tree (its data step reuses a prepared manifest): a bad override fails before
    any data is written, a good run prints the held-out figures from its MLflow run."""
    from medcl.commands.main import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["demo", "--data-dir", "data", "--trainer.max_epochz=1"]) == 2
    assert "unrecognized arguments: --trainer.max_epochz=1" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    prepare_demo_data(tmp_path / "data", n_subjects=30, image_size=64, split_fractions=(0.6, 0.2, 0.2), workers=1)
    tiny = '--model.init_args.model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}'
    overrides = ["--data.init_args.image_size=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
                 tiny, "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
                 "--trainer.default_root_dir=run", "--checkpoint.dirpath=run/checkpoints"]  # fmt: skip
    assert main(["demo", "--data-dir", "data", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "== medcl demo: held-out test split (patient-disjoint) ==" in printed
    assert re.search(r"test/zeroshot_auroc_mean\s+0\.\d{3}", printed)
    assert re.search(r"best checkpoint: \S*run/checkpoints/epoch=0", printed)
