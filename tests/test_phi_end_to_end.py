"""PHI planted in DICOM tags must not reach the manifest, the quarantine report, the summary, de-identified copies,
the transform cache, checkpoints, MLflow or logs."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pandas as pd
import pydicom

from medcl.commands.lightning import lightning_main
from medcl.data.deid import find_phi, scan_for_phi
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


# What a radiograph's pixels need: copied from the generated file into its planted replacement.
PIXEL_MODULE = ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated", "BitsStored",
                "HighBit", "PixelRepresentation", "PixelData", "WindowCenter", "WindowWidth", "RescaleSlope",
                "RescaleIntercept", "PixelSpacing", "ImagerPixelSpacing")  # fmt: skip


def test_planted_phi_never_leaves_the_source_tree(tmp_path, monkeypatch, caplog, capfd):
    """A MIMIC-CXR (DICOM) tree whose files carry a planted value in every attribute of PS3.15 Table E.1-1 (and a
    private block, nested sequences, curves and overlays), through prepare, training on a disk cache, MLflow (the run
    and the logged model), and the served model's answers and error messages: no planted value anywhere."""
    from phi_dicom import planted_dataset, planted_uid

    from medcl.deploy.pyfunc import load_model_folder
    from medcl.errors import InvalidInputError

    source = tmp_path / "source" / "mimic-cxr"
    generate_mimic_cxr(
        source, n_subjects=16, seed=5, image_size=64, jpg=False, dicom=True, split_fractions=(0.5, 0.25, 0.25)
    )
    dicoms = sorted(source.rglob("*.dcm"))
    needles: set[str] = set(NEEDLES)
    for n, path in enumerate(dicoms):  # the whole table in every file (826 planted values each)
        generated = pydicom.dcmread(path)
        planted, found = planted_dataset(
            n + 10, patient_id=f"MRN{n:06d}", study_uid=planted_uid(7, n), series_uid=planted_uid(8, n),
            sop_uid=planted_uid(9, n),
        )  # fmt: skip
        planted.BurnedInAnnotation = "NO"
        for keyword in PIXEL_MODULE:
            if keyword in generated:
                setattr(planted, keyword, generated.data_element(keyword).value)
            elif keyword in planted:
                delattr(planted, keyword)
        planted.file_meta.TransferSyntaxUID = generated.file_meta.TransferSyntaxUID
        for keyword, value in PHI_TAGS.items():
            setattr(planted, keyword, value)
        planted.save_as(path, enforce_file_format=True)
        needles |= found
    assert scan_for_phi(dicoms[0], needles)  # the needles are really there to be found

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    caplog.set_level(logging.INFO)
    prepared = prepare("mimic-cxr", source, work / "manifest.csv", workers=1, progress=False, image_format="dcm")
    manifest = prepared.manifest
    assert prepared.counts["quarantined"] == 0 and prepared.counts["rows"] > 20  # every planted file was usable
    callback = {"class_path": "medcl.deploy.LogBestModel", "init_args": {"registered_name": "phi-check"}}
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
            f"--trainer.callbacks=[{json.dumps(callback)}]",
        ]
    )
    assert any((work / "cache").iterdir()), "the disk cache was not used"
    assert any(p.suffix == ".ckpt" for p in (work / "run" / "checkpoints").iterdir())

    # The served model on the planted files themselves: answers and error messages.
    model = load_model_folder("models:/phi-check@champion")
    answers = [json.dumps(model.predict_image(model.decode(path.read_bytes(), path.name))) for path in dicoms[:3]]
    errors = []
    for path in dicoms[:3]:
        try:
            model.decode(path.read_bytes()[:-400], path.name)  # pixel data cut short: an error about this file
        except InvalidInputError as err:
            errors.append(str(err))
    assert len(errors) == 3 and all(e.startswith("upload: ") for e in errors)
    said = "".join(answers) + "".join(errors) + caplog.text + "".join(capfd.readouterr())
    assert find_phi(said, needles) == []
    # Manifest, quarantine, cache, checkpoints, mlflow.db (params, metrics, tags), artifacts and the model folder.
    assert scan_for_phi(work, needles) == []


def test_every_table_e1_1_attribute_stays_out_of_everything_prepare_writes(tmp_path, caplog, capfd, monkeypatch):
    """A SIIM-ACR tree whose DICOMs carry a planted identifier in every attribute of PS3.15 Table E.1-1 (plus curves,
    overlays, a private block and nested sequences) through `medcl data prepare`: two runs, two shards and a merge,
    a burned-in and a truncated file among them, and the training cache over the result."""
    from phi_dicom import planted_dataset, planted_uid, write_siim_tree

    from medcl.data.cache import persistent_dataset
    from medcl.data.deid import KEY_FILE_ENV, find_phi, load_key, locate
    from medcl.data.manifest import read_manifest
    from medcl.data.prepare import merge_manifests
    from medcl.data.transforms import cxr_transforms

    # A fixed key, so that the keyed UIDs written are the same on every run: a planted 8-digit date could occur inside
    # a random 39-digit UID by chance (about once in a dozen runs), and the byte scan below would report it.
    key_file = tmp_path / "config" / "pseudonym.key"
    key_file.parent.mkdir()
    key_file.write_text(bytes(range(100, 132)).hex() + "\n")
    key_file.chmod(0o600)
    monkeypatch.setenv(KEY_FILE_ENV, str(key_file))

    root, needles = write_siim_tree(tmp_path / "source" / "siim", patients=3, images_per_patient=2, seed=2)
    bad = {}
    for index, trouble in enumerate(["burned-in", "truncated"]):
        sop = planted_uid(2, 5000 + index)
        ds, found = planted_dataset(90 + index, patient_id=f"MRN-BAD{index}", study_uid=planted_uid(2, 5100 + index),
                                    series_uid=planted_uid(2, 5200 + index), sop_uid=sop)  # fmt: skip
        needles |= found
        ds.BurnedInAnnotation = "YES" if trouble == "burned-in" else "NO"
        path = root / "dicom-images-train" / ds.StudyInstanceUID / ds.SeriesInstanceUID / f"{sop}.dcm"
        path.parent.mkdir(parents=True)
        ds.save_as(path, enforce_file_format=True)
        if trouble == "truncated":
            path.write_bytes(path.read_bytes()[:-500])  # pixel data cut short
        bad[trouble] = path
        with open(root / "train-rle.csv", "a") as fh:
            fh.write(f"{sop}, -1\n")

    assert len(scan_for_phi(root, needles)) > 5000  # the needles are really there to be found
    work = tmp_path / "work"
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = prepare("siim-acr", root, work / "run1" / "siim.csv", workers=1, progress=False)
        second = prepare("siim-acr", root, work / "run2" / "siim.csv", workers=2, progress=False)  # process pool
        parts = [
            prepare("siim-acr", root, work / "shards" / f"part{i}.csv", workers=1, progress=False, shard=f"{i}/2")
            for i in range(2)
        ]
        merged = merge_manifests([part.manifest for part in parts], work / "shards" / "siim.csv")
        manifest = read_manifest(first.manifest)
        cache = persistent_dataset(
            [{"image": image} for image in manifest["image"]], cxr_transforms(size=32, train=False), work / "cache"
        )
        items = [cache[i] for i in range(len(cache))]
    assert len(items) == 6 and any((work / "cache").iterdir())

    # Every byte written (manifests, quarantine reports, summaries, de-identified copies, masks, cache), every log
    # record, warning and console line: no planted value.
    assert len(needles) > 5000
    assert scan_for_phi(work, needles) == []
    said = caplog.text + "".join(str(w.message) for w in caught) + "".join(capfd.readouterr())
    assert find_phi(said, needles) == []

    # Keyed ids are the same in every run and shard, and studies and series still group.
    columns = ["image_id", "subject_id", "study_id", "series_id", "split", "Pneumothorax"]

    def ids(path):
        return read_manifest(path)[columns].sort_values("image_id").reset_index(drop=True)

    pd.testing.assert_frame_equal(ids(first.manifest), ids(second.manifest))
    pd.testing.assert_frame_equal(ids(first.manifest), ids(merged))
    assert manifest.groupby("study_id")["series_id"].nunique().eq(1).all()
    assert manifest["study_id"].nunique() == manifest["subject_id"].nunique() == 3
    key = load_key()
    assert set(manifest["study_id"]) == {key.uid(planted_uid(2, 10 + p)) for p in range(3)}

    # The two bad files are quarantined under pseudonymous names that their owner can map back with the key.
    quarantine = pd.read_csv(first.quarantine).set_index("key")
    burned, truncated = (key.uid(bad[t].stem) for t in ("burned-in", "truncated"))
    assert set(quarantine.index) == {burned, truncated}
    assert "BurnedInAnnotation is YES" in quarantine.loc[burned, "reason"]
    for trouble, path in bad.items():
        reported = quarantine.loc[key.uid(path.stem), "path"]
        assert reported.startswith("dicom-images-train/2.25.") and locate(root, reported, key) == [path], trouble
    summary = json.loads(first.summary.read_text())
    assert summary["deidentification"]["pseudonym_key"] == key.fingerprint and summary["quarantined"] == 2
