"""Bad files in a manifest, injected for real: training skips and reports each by name, or stops on the first."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from medcl.commands.main import main

pytestmark = pytest.mark.reliability
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def damaged(synthetic_cxr, tmp_path) -> dict:
    """A copy of the synthetic MIMIC-CXR manifest whose train split has 5 % bad images: a truncated JPEG, a file of
    garbage bytes and a missing file (every other image untouched)."""
    frame = pd.read_csv(synthetic_cxr["manifest"])
    train = frame.index[frame["split"] == "train"].tolist()
    count = max(3, round(0.05 * len(frame)))
    bad = [train[i * len(train) // count] for i in range(count)]
    (tmp_path / "bad").mkdir()
    for n, row in enumerate(bad):
        source = Path(frame.at[row, "image"])
        target = tmp_path / "bad" / f"{n}{source.suffix}"
        if n % 3 == 0:
            target.write_bytes(source.read_bytes()[: len(source.read_bytes()) // 3])  # truncated JPEG
        elif n % 3 == 1:
            target.write_bytes(b"\x00garbage" * 100)
        # n % 3 == 2: never written, a missing file
        frame.at[row, "image"] = str(target)
    manifest = tmp_path / "manifest.csv"
    frame.to_csv(manifest, index=False)
    return {"manifest": manifest, "bad": sorted(str(frame.at[r, "image"]) for r in bad), "fraction": count / len(frame)}


def fit(manifest: Path, root: Path, *extra: str) -> int:
    return main([
        "fit", "-c", str(REPO / "configs/cxr/demo.yaml"), f"--data.init_args.manifest={manifest}",
        "--data.init_args.image_size=64", "--data.init_args.batch_size=8", "--data.init_args.num_workers=0",
        '--model.init_args.model_overrides={"image": {"widths": [8, 8, 16, 16]}, "embed_dim": 32}',
        "--trainer.max_epochs=2", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={root}",
        f"--checkpoint.dirpath={root / 'checkpoints'}", *extra,
    ])  # fmt: skip


def test_bad_images_are_skipped_and_each_is_named_in_the_quarantine_list(damaged, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert 0.04 <= damaged["fraction"] <= 0.1
    assert fit(damaged["manifest"], tmp_path / "run") == 0  # trained to the end
    listed = tmp_path / "run" / "quarantine" / "train.csv"
    with listed.open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["file"] for r in rows) == damaged["bad"]
    reasons = " ".join(r["reason"] for r in rows)
    assert "no such file or directory" in reasons and "truncated" in reasons
    client = MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name("medcl-demo").experiment_id])[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["data/quarantined_train"] == len(damaged["bad"])
    assert "quarantine/train.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "quarantine")}


def test_strict_mode_stops_at_the_first_bad_file_naming_it(damaged, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert fit(damaged["manifest"], tmp_path / "run", "--data.init_args.bad_items=strict") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("medcl fit: error: ") and any(path in error for path in damaged["bad"])
    assert "bad_items: strict" in error


def test_past_the_allowed_fraction_the_run_stops_with_the_count(damaged, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert fit(damaged["manifest"], tmp_path / "run", "--data.init_args.max_bad_fraction=0.01") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "train items are unusable, more than max_bad_fraction 0.01" in error


def test_a_truncated_jpeg_is_reported_by_medcls_reader_not_hidden_by_a_fallback(synthetic_cxr, tmp_path):
    from medcl.data.transforms.loading import load_transforms
    from medcl.errors import InvalidInputError

    source = next(Path(synthetic_cxr["root"]).rglob("*.jpg"))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(source.read_bytes()[:200])
    with pytest.raises(InvalidInputError, match=r"truncated\.jpg"):
        load_transforms()[0]({"image": str(truncated)})
