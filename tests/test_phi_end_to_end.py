"""PHI planted in DICOM tags must not reach the manifest, the transform cache, checkpoints or MLflow."""

from __future__ import annotations

from pathlib import Path

import pydicom

from medcl.commands.lightning import lightning_main
from medcl.data.deid import scan_for_phi
from medcl.data.prepare import prepare
from medcl.data.synthetic.mimic_cxr import generate_mimic_cxr

REPO = Path(__file__).resolve().parents[1]
PHI_TAGS = {
    "PatientName": "Doe^Janet^Quincy",
    "PatientBirthDate": "19450317",
    "InstitutionName": "St Elsewhere General Hospital",
    "ReferringPhysicianName": "House^Gregory",
    "AccessionNumber": "ACC99887766",
    "OtherPatientIDs": "MRN55501234",
    "PatientAddress": "12 Harbour Lane Springfield",
}
NEEDLES = ["Janet", "Quincy", "19450317", "Elsewhere", "Gregory", "ACC99887766", "MRN55501234", "Harbour Lane"]


def test_planted_phi_never_leaves_the_source_tree(tmp_path, monkeypatch):
    source = tmp_path / "source" / "mimic-cxr"
    generate_mimic_cxr(
        source, n_subjects=16, seed=5, image_size=64, jpg=False, dicom=True, split_fractions=(0.5, 0.25, 0.25)
    )
    dicoms = sorted(source.rglob("*.dcm"))
    assert dicoms
    for path in dicoms:
        dataset = pydicom.dcmread(path)
        for keyword, value in PHI_TAGS.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)
    assert scan_for_phi(dicoms[0], NEEDLES)  # the needles are really there to be found

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    manifest = prepare(
        "mimic-cxr", source, work / "manifest.csv", workers=1, progress=False, image_format="dcm"
    ).manifest
    lightning_main(
        [
            "fit",
            "-c",
            str(REPO / "configs" / "cxr" / "demo.yaml"),
            f"--data.init_args.manifest={manifest}",
            "--data.init_args.image_size=48",
            "--data.init_args.batch_size=4",
            "--data.init_args.num_workers=0",
            "--data.init_args.cache=disk",
            f"--data.init_args.cache_dir={work / 'cache'}",
            '--model.init_args.model_overrides={"image": {"widths": [8, 8, 8, 8]}, "embed_dim": 16}',
            "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=3",
            "--trainer.enable_progress_bar=false",
            f"--trainer.default_root_dir={work / 'run'}",
            f"--checkpoint.dirpath={work / 'run' / 'checkpoints'}",
        ]
    )
    assert any((work / "cache").iterdir()), "the disk cache was not used"
    assert any(p.suffix == ".ckpt" for p in (work / "run" / "checkpoints").iterdir())
    assert scan_for_phi(work, NEEDLES) == []  # manifest, quarantine, cache, checkpoints, mlflow.db, artifacts
