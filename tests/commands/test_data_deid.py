"""`medcl data key`, `medcl data prepare` de-identification flags, `medcl data locate` and shard merging, as the
docs show them (docs/reliability.md, "De-identification")."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pandas as pd
import pytest
from phi_dicom import planted_dataset, planted_uid, write_siim_tree

from medcl.commands.main import main
from medcl.data.deid import KEY_FILE_ENV, load_key


@pytest.fixture
def fresh_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config" / "medcl" / "pseudonym.key"
    monkeypatch.setenv(KEY_FILE_ENV, str(path))
    return path


def test_key_init_and_show(fresh_key_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "key", "show"]) == 2
    assert "medcl data key init" in capsys.readouterr().err
    assert main(["data", "key", "init"]) == 0
    fingerprint = load_key(fresh_key_file).fingerprint
    out = capsys.readouterr().out
    assert "created" in out and fingerprint in out and stat.S_IMODE(fresh_key_file.stat().st_mode) == 0o600
    secret = fresh_key_file.read_text().strip()
    assert main(["data", "key", "init"]) == 0 and "kept" in capsys.readouterr().out
    assert fresh_key_file.read_text().strip() == secret
    assert main(["data", "key", "show"]) == 0
    shown = capsys.readouterr().out
    assert fingerprint in shown and secret not in shown


def test_prepare_flags_and_locate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = write_siim_tree(tmp_path / "siim", patients=2, images_per_patient=1)
    sop = planted_uid(8, 1)
    ds, _ = planted_dataset(
        8, patient_id="MRN-US", study_uid=planted_uid(8, 2), series_uid=planted_uid(8, 3), sop_uid=sop
    )
    ds.Modality = "US"
    path = root / "dicom-images-train" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{sop}.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)
    with open(root / "train-rle.csv", "a") as fh:
        fh.write(f"{sop}, -1\n")
    out = tmp_path / "data" / "siim.csv"
    assert main(["data", "prepare", "siim-acr", "--root", str(root), "--out", str(out), "--no-progress"]) == 0
    assert "1 quarantined" in capsys.readouterr().out
    reported = pd.read_csv(out.with_name("siim.quarantine.csv"))["path"][0]
    assert main(["data", "locate", reported, "--root", str(root)]) == 0
    assert capsys.readouterr().out.strip() == str(path)

    args = ["data", "prepare", "siim-acr", "--root", str(root), "--out", str(out), "--no-progress"]
    flags = ["--deid-option", "retain-patient-characteristics", "--allow-burned-in", "US"]
    assert main(args + flags) == 0
    summary = json.loads(out.with_name("siim.summary.json").read_text())
    assert summary["quarantined"] == 0 and summary["deidentification"]["options"] == ["retain_patient_characteristics"]
    assert summary["deidentification"]["allow_burned_in"] == ["US"]
    with pytest.raises(SystemExit):  # argparse: not an option of the table
        main([*args, "--deid-option", "retain-everything"])
    assert "invalid choice" in capsys.readouterr().err


def test_merging_shards_made_with_different_keys_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = write_siim_tree(tmp_path / "siim", patients=2, images_per_patient=1)
    parts = []
    for shard in range(2):
        monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / f"machine{shard}" / "pseudonym.key"))
        assert main(["data", "key", "init"]) == 0  # each machine made its own key: the mistake to catch
        part = tmp_path / "out" / f"part{shard}.csv"
        assert main(["data", "prepare", "siim-acr", "--root", str(root), "--out", str(part), "--shard", f"{shard}/2",
                     "--no-progress"]) == 0  # fmt: skip
        parts.append(str(part))
    assert main(["data", "merge", *parts, "--out", str(tmp_path / "out" / "siim.csv")]) == 2
    assert "different pseudonym keys" in capsys.readouterr().err
