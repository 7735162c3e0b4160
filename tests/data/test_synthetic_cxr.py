"""Synthetic MIMIC-CXR: official layout, CSV schemas, determinism, visible findings, labels that match the text."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from scipy.ndimage import binary_erosion

from medcl.data.synthetic.mimic_cxr import METADATA_COLUMNS, TRUTH_COLUMNS, generate_mimic_cxr, plant_bad_files
from medcl.data.synthetic.radiograph import Finding, Pose, render
from medcl.data.text.labels import CHEXPERT_LABELS
from medcl.data.text.reports import parse_report

DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
ORIGINAL = (96, 80)  # (Rows, Columns) of the "DICOM" images, larger than the stored 48 px JPGs


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mimic")
    summary = generate_mimic_cxr(root, n_subjects=12, seed=5, image_size=48, original_size=ORIGINAL, dicom=True)
    return root, summary


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> tuple[Path, dict]:
    """More studies at a tiny size, for label statistics."""
    root = tmp_path_factory.mktemp("cohort")
    return root, generate_mimic_cxr(root, n_subjects=150, seed=11, image_size=24, workers=1)


def test_layout_ids_and_files(tree) -> None:
    root, summary = tree
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv", dtype={"dicom_id": str})
    assert tuple(metadata.columns) == METADATA_COLUMNS
    assert len(metadata) == summary["images"] and metadata["dicom_id"].is_unique
    assert metadata["dicom_id"].str.match(DICOM_ID).all()
    assert metadata["subject_id"].astype(str).str.match(r"^1\d{7}$").all()
    assert metadata["study_id"].astype(str).str.match(r"^5\d{7}$").all()
    assert set(metadata["ViewPosition"]) <= {"PA", "AP", "LATERAL", "LL"}
    assert {"PA", "LATERAL"} <= set(metadata["ViewPosition"]) | {"LL"}
    for row in metadata.itertuples():
        subject = root / "files" / f"p{str(row.subject_id)[:2]}" / f"p{row.subject_id}"
        assert (subject / f"s{row.study_id}.txt").is_file()  # report beside the study folder
        with Image.open(subject / f"s{row.study_id}" / f"{row.dicom_id}.jpg") as image:
            assert image.mode == "L" and image.size == (48, 48)
        assert (row.Rows, row.Columns) == ORIGINAL  # metadata carries the original DICOM size
    # Several images per study and several studies per subject occur.
    assert metadata.groupby("study_id").size().max() > 1
    assert metadata.groupby("subject_id")["study_id"].nunique().max() > 1
    assert str(metadata["StudyDate"].iloc[0]).startswith("2")  # shifted dates, yyyymmdd in 21xx
    assert ((metadata["StudyTime"] >= 0) & (metadata["StudyTime"] < 240000)).all()


def test_dicom_objects(tree) -> None:
    root, _ = tree
    records = pd.read_csv(root / "cxr-record-list.csv.gz", dtype={"dicom_id": str})
    assert list(records.columns) == ["subject_id", "study_id", "dicom_id", "path"]
    photometric = set()
    for row in records.itertuples():
        ds = pydicom.dcmread(root / row.path)
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert (ds.Rows, ds.Columns) == ORIGINAL and ds.pixel_array.shape == ORIGINAL
        assert ds.PatientID == str(row.subject_id) and str(ds.PatientName) == ""
        assert "PatientBirthDate" not in ds
        photometric.add(ds.PhotometricInterpretation)
        if ds.PhotometricInterpretation == "MONOCHROME1":  # stored inverted: the air border is bright
            assert ds.pixel_array[0, 0] > 3000
        else:
            assert ds.pixel_array[0, 0] < 1000
    assert "MONOCHROME2" in photometric


def test_csv_schemas_and_split(tree) -> None:
    root, summary = tree
    split = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv")
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]
    assert set(split["split"]) == {"train", "validate", "test"}
    assert split.groupby("subject_id")["split"].nunique().max() == 1  # patient-disjoint
    for name in ("chexpert", "negbio"):
        labels = pd.read_csv(root / f"mimic-cxr-2.0.0-{name}.csv")
        assert list(labels.columns) == ["subject_id", "study_id", *CHEXPERT_LABELS]
        assert len(labels) == summary["studies"] and labels["study_id"].is_unique
        values = labels[list(CHEXPERT_LABELS)].to_numpy()
        assert set(np.unique(values[~np.isnan(values)])) <= {-1.0, 0.0, 1.0}
    truth = pd.read_csv(root / "synthetic_truth.csv")
    assert tuple(truth.columns) == TRUTH_COLUMNS


def test_truth_boxes_are_original_pixels_and_on_the_right_side(tree) -> None:
    root, _ = tree
    truth = pd.read_csv(root / "synthetic_truth.csv")
    assert len(truth) > 0
    assert (truth["original_height"] == ORIGINAL[0]).all() and (truth["original_width"] == ORIGINAL[1]).all()
    assert (truth["image_width"] == 48).all()
    assert ((truth["x0"] >= 0) & (truth["x0"] < truth["x1"]) & (truth["x1"] <= ORIGINAL[1])).all()
    assert ((truth["y0"] >= 0) & (truth["y0"] < truth["y1"]) & (truth["y1"] <= ORIGINAL[0])).all()
    # Radiographic convention: the patient's left lung is on the image right.
    sided = truth[truth["region"].isin(["left", "right"])]
    centre = (sided["x0"] + sided["x1"]) / 2 / ORIGINAL[1]
    assert (centre[sided["region"] == "left"] > 0.5).all() and (centre[sided["region"] == "right"] < 0.5).all()


def test_box_matches_what_was_drawn() -> None:
    """A drawn nodule is brighter than its surroundings, and its truth box sits on it."""
    nodule = Finding("Lung Lesion", 0.8, ("right",), {"centre": (0.3, 0.35)})
    plain = render([], view="PA", size=(128, 128), rng=np.random.default_rng(1), pose=Pose())
    lesion = render([nodule], view="PA", size=(128, 128), rng=np.random.default_rng(1), pose=Pose())
    ((name, side, mask),) = lesion.regions
    assert (name, side) == ("Lung Lesion", "right")
    ys, xs = np.nonzero(mask)
    assert abs(xs.mean() / 128 - 0.3) < 0.02 and abs(ys.mean() / 128 - 0.35) < 0.02
    assert (lesion.image - plain.image)[mask].mean() > 0.15
    assert abs((lesion.image - plain.image)[~mask]).mean() < 0.01


@pytest.mark.parametrize(
    ("finding", "region_change"),
    [
        (Finding("Pleural Effusion", 0.7, ("left",)), "brighter"),
        (Finding("Consolidation", 0.7, ("right",), {"centre": (0.3, 0.55)}), "brighter"),
        (Finding("Edema", 0.8), "brighter"),
        (Finding("Atelectasis", 0.7, ("left",)), "brighter"),
        (Finding("Pneumothorax", 0.7, ("right",)), "darker"),
        (Finding("Support Devices", 1.0, (), {"kinds": ("ett", "cvc")}), "brighter"),
    ],
)
def test_findings_change_their_region(finding: Finding, region_change: str) -> None:
    plain = render([], view="PA", size=(96, 96), rng=np.random.default_rng(2), pose=Pose())
    sick = render([finding], view="PA", size=(96, 96), rng=np.random.default_rng(2), pose=Pose())
    assert sick.regions and all(name == finding.name for name, _, _ in sick.regions)
    mask = np.any([m for _, _, m in sick.regions], axis=0)
    delta = (sick.image - plain.image)[mask].mean()
    assert delta > 0.04 if region_change == "brighter" else delta < -0.02


def test_pneumothorax_removes_lung_markings() -> None:
    """Beyond the pleural line the film is darker AND loses the vascular texture (not just a uniform offset)."""
    finding = Finding("Pneumothorax", 0.9, ("left",))
    plain = render([], view="PA", size=(128, 128), rng=np.random.default_rng(3), pose=Pose())
    sick = render([finding], view="PA", size=(128, 128), rng=np.random.default_rng(3), pose=Pose())
    ((_, side, mask),) = sick.regions
    core = binary_erosion(mask, iterations=2)  # away from the bright pleural line
    removed = (plain.image - sick.image)[core]  # same noise draws: the difference is what the finding did
    assert side == "left" and core.sum() > 50
    assert removed.mean() > 0.03 and removed.std() > 0.01


@pytest.mark.parametrize("severity", [0.2, 1.0])
def test_cardiomegaly_heart_width_follows_the_cardiothoracic_ratio(severity: float) -> None:
    rendered = render([Finding("Cardiomegaly", severity)], view="PA", size=(128, 128), rng=np.random.default_rng(4),
                      pose=Pose())  # fmt: skip
    ((name, _, mask),) = rendered.regions
    columns = np.nonzero(mask.any(axis=0))[0]
    width = (columns.max() - columns.min() + 1) / 128
    # Cardiothoracic ratio 0.53 + 0.15 * severity of a thorax 0.71 image widths across (normal hearts: 0.40-0.48).
    assert name == "Cardiomegaly"
    assert width == pytest.approx((0.53 + 0.15 * severity) * 0.71, abs=0.025)


def test_labels_agree_with_the_labelled_section(cohort) -> None:
    root, summary = cohort
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    keywords = {
        "Cardiomegaly": r"cardiomegaly|heart|cardiac",
        "Pleural Effusion": r"effusion",
        "Pneumothorax": r"pneumothorax",
        "Edema": r"edema",
        "Lung Lesion": r"nodule|mass",
        "Consolidation": r"consolidation",
        "Pneumonia": r"pneumonia",
        "Atelectasis": r"atelectasis",
        "Support Devices": r"tube|catheter|pacemaker|lines|devices",
    }
    hedges = r"possible|possibly|cannot be excluded|may |borderline"
    checked = {1.0: 0, 0.0: 0, -1.0: 0}
    for row in labels.itertuples(index=False):
        report = root / "files" / f"p{str(row.subject_id)[:2]}" / f"p{row.subject_id}" / f"s{row.study_id}.txt"
        sections = parse_report(report.read_text())
        text = (sections.get("impression") or sections.get("findings") or sections.get("last_paragraph", "")).lower()
        codes = dict(zip(CHEXPERT_LABELS, row[2:]))
        for label, pattern in keywords.items():
            code = codes[label]
            sentences = [s for s in re.split(r"(?<=\.)\s", text) if re.search(pattern, s)]
            if np.isnan(code):
                continue
            assert sentences, f"{label}={code} but no mention in {text!r}"
            if code == 0.0:
                assert any(re.search(r"\bno\b|normal", s) for s in sentences), (label, text)
            elif code == -1.0:
                assert any(re.search(hedges, s) for s in sentences), (label, text)
            checked[code] += 1
        if codes["No Finding"] == 1.0:
            assert not any(codes[k] in (1.0, -1.0) for k in keywords if k != "Support Devices")
    assert min(checked.values()) >= 10, checked  # positives, negations and uncertain mentions all occur
    assert summary["positives"]["No Finding"] > 0


def test_findings_and_context_are_correlated(cohort) -> None:
    """CHF-type indications are more common with effusion/edema/cardiomegaly, but not exclusive to them."""
    root, _ = cohort
    labels = pd.read_csv(root / "mimic-cxr-2.0.0-chexpert.csv")
    chf_words = r"dyspnea|shortness of breath|chf|edema|fluid overload|volume overload|effusion|heart failure"
    rows = []
    for row in labels.itertuples(index=False):
        report = root / "files" / f"p{str(row.subject_id)[:2]}" / f"p{row.subject_id}" / f"s{row.study_id}.txt"
        sections = parse_report(report.read_text())
        context = (sections.get("indication", "") + " " + sections.get("history", "")).lower()
        cardiac = any(getattr(row, label.replace(" ", "_")) == 1.0 for label in ("Cardiomegaly", "Edema"))
        rows.append((cardiac, bool(re.search(chf_words, context))))
    frame = pd.DataFrame(rows, columns=["cardiac", "chf_context"])
    rate = frame.groupby("cardiac")["chf_context"].mean()
    assert rate[True] > rate[False] + 0.15
    assert rate[False] > 0 and rate[True] < 1


def test_deterministic_by_seed_and_worker_count(tmp_path, tree_digest) -> None:
    options = {"n_subjects": 6, "image_size": 32, "dicom": True, "gzip_csv": True}
    generate_mimic_cxr(tmp_path / "a", seed=3, workers=1, **options)
    generate_mimic_cxr(tmp_path / "b", seed=3, workers=2, **options)
    generate_mimic_cxr(tmp_path / "c", seed=4, workers=1, **options)
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    assert tree_digest(tmp_path / "a") != tree_digest(tmp_path / "c")
    assert (tmp_path / "a" / "mimic-cxr-2.0.0-chexpert.csv.gz").is_file()
    assert not (tmp_path / "a" / "mimic-cxr-2.0.0-chexpert.csv").exists()
    split = pd.read_csv(tmp_path / "a" / "mimic-cxr-2.0.0-split.csv.gz")  # pandas reads the official .gz directly
    assert list(split.columns) == ["dicom_id", "study_id", "subject_id", "split"]


def test_plant_bad_files(tmp_path) -> None:
    generate_mimic_cxr(tmp_path, n_subjects=8, seed=1, image_size=32, workers=1)
    sizes = {p: p.stat().st_size for p in tmp_path.rglob("*.jpg")}
    planted = plant_bad_files(tmp_path, seed=0)
    assert set(planted) == {"truncated", "empty", "not_an_image", "missing", "missing_report"}
    metadata = pd.read_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv", dtype={"dicom_id": str}).set_index("dicom_id")

    def image_path(dicom_id: str) -> Path:
        row = metadata.loc[dicom_id]
        return (
            tmp_path
            / "files"
            / f"p{str(row.subject_id)[:2]}"
            / f"p{row.subject_id}"
            / f"s{row.study_id}"
            / (f"{dicom_id}.jpg")
        )

    truncated = image_path(planted["truncated"][0])
    assert 0 < truncated.stat().st_size < sizes[truncated]
    assert image_path(planted["empty"][0]).stat().st_size == 0
    assert image_path(planted["not_an_image"][0]).read_text().startswith("<html>")
    assert not image_path(planted["missing"][0]).exists()
    report = image_path(planted["missing_report"][0]).parent.with_suffix(".txt")
    assert (
        not report.exists() and len(planted["missing_report"]) == (metadata["study_id"] == int(report.stem[1:])).sum()
    )
    # Every planted item is still listed in the metadata: nothing disappears from the index.
    assert all(d in metadata.index for ids in planted.values() for d in ids)
