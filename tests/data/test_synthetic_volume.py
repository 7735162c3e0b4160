"""Synthetic volume datasets: official layouts, real affines, consistent anatomy, determinism, DICOM twin."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medcl.data.synthetic.acdc import generate_acdc
from medcl.data.synthetic.brats import generate_brats
from medcl.data.synthetic.btcv import generate_btcv
from medcl.data.synthetic.ct_phantom import CT_STRUCTURE_INDEX, CT_STRUCTURES, ct_phantom
from medcl.data.synthetic.dicom_writer import write_volume_as_dicom
from medcl.data.synthetic.mr_phantoms import cardiac_phantom
from medcl.data.synthetic.msd import generate_msd
from medcl.data.synthetic.nifti_cases import to_nifti
from medcl.data.synthetic.totalsegmentator import TOTALSEG_EMPTY_CLASSES, generate_totalsegmentator

SMALL = (40, 40, 28)


def _world_centroid(image: nib.Nifti1Image, mask: np.ndarray) -> np.ndarray:
    """Centroid of ``mask`` in RAS millimetres, via the file's affine."""
    ijk = np.argwhere(mask).mean(axis=0)
    return image.affine[:3, :3] @ ijk + image.affine[:3, 3]


@pytest.fixture(scope="module")
def spleen_task(tmp_path_factory):
    return generate_msd(tmp_path_factory.mktemp("msd"), n_train=4, n_test=2, shape=SMALL, misspelt_release=True)


def test_msd_layout_and_dataset_json(spleen_task):
    meta = json.loads((spleen_task / "dataset.json").read_text())
    assert meta["relase"] == "1.0 04/05/2018" and "release" not in meta
    assert meta["tensorImageSize"] == "3D" and meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "spleen"}
    assert meta["numTraining"] == len(meta["training"]) == 4 and meta["numTest"] == len(meta["test"]) == 2
    for entry in meta["training"]:
        assert entry["image"].startswith("./imagesTr/spleen_") and entry["label"].startswith("./labelsTr/")
        assert (spleen_task / entry["image"]).is_file() and (spleen_task / entry["label"]).is_file()
    assert all(isinstance(t, str) and t.startswith("./imagesTs/") for t in meta["test"])
    junk = sorted(p.name for p in spleen_task.rglob("._*"))
    assert len(junk) == 4 + 4 + 2  # images, labels and test images each get an AppleDouble twin
    assert (spleen_task / "imagesTr" / junk[0]).read_bytes()[:4] == b"\x00\x05\x16\x07"


def test_msd_cases_have_real_varying_affines_and_aligned_labels(spleen_task):
    meta = json.loads((spleen_task / "dataset.json").read_text())
    codes, spacings = set(), set()
    for entry in meta["training"]:
        image, label = nib.load(spleen_task / entry["image"]), nib.load(spleen_task / entry["label"])
        np.testing.assert_allclose(image.affine, label.affine)
        assert image.shape == label.shape and image.get_data_dtype() == np.int16
        assert int(image.header["sform_code"]) == 1 and int(image.header["qform_code"]) == 1
        codes.add("".join(nib.aff2axcodes(image.affine)))
        spacings.add(tuple(np.round(image.header.get_zooms(), 3)))
        # Spacing in the header matches the affine's column norms (a real, self-consistent geometry).
        np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), image.header.get_zooms(), rtol=1e-5)
    assert len(codes) >= 2 and len(spacings) >= 2


def test_ct_anatomy_is_consistent_in_world_coordinates(spleen_task):
    """Whatever the stored orientation, the spleen sits left-posterior of the body centre (RAS: x<0, y<0)."""
    meta = json.loads((spleen_task / "dataset.json").read_text())
    for entry in meta["training"]:
        image, label = nib.load(spleen_task / entry["image"]), nib.load(spleen_task / entry["label"])
        hu, spleen = np.asarray(image.dataobj), np.asarray(label.dataobj) == 1
        assert spleen.sum() > 50
        body = _world_centroid(image, hu > -500)
        offset = _world_centroid(image, spleen) - body
        assert offset[0] < -5.0 and offset[1] < 0.0, offset
        assert abs(np.median(hu[spleen]) - 120) < 40  # contrast-enhanced spleen HU
        assert np.median(hu[0, 0, :]) < -900  # air outside the body


def test_ct_phantom_structures_intensities_and_btcv_map():
    phantom = ct_phantom((48, 48, 32), np.random.default_rng(3))
    hu, parts = phantom.hu.astype(float), phantom.parts
    index = CT_STRUCTURE_INDEX
    liver, lung = parts == index["liver"], parts == index["lung_lower_lobe_right"]
    bone = np.isin(parts, [index[n] for n in index if n.startswith("vertebrae_")])
    assert np.median(hu[lung]) < -700 and abs(np.median(hu[liver]) - 110) < 25 and np.median(hu[bone]) > 300
    u = np.linspace(-1, 1, 48)[:, None, None] * np.ones((48, 48, 32))
    assert u[liver].mean() > 0.15 and u[parts == index["spleen"]].mean() < -0.3  # liver right, spleen left
    w = np.linspace(-1, 1, 32)[None, None, :] * np.ones((48, 48, 32))
    assert w[lung].mean() > w[liver].mean() > w[parts == index["kidney_right"]].mean()  # cranio-caudal order
    btcv = phantom.btcv_label()
    assert set(np.unique(btcv)) <= set(range(14)) and {1, 2, 3, 6, 8} <= set(np.unique(btcv))
    np.testing.assert_array_equal(btcv == 6, liver)


def test_generation_is_deterministic_per_seed(tmp_path):
    a = generate_msd(tmp_path / "a", n_train=2, n_test=0, shape=(24, 24, 16), seed=5, junk=False)
    b = generate_msd(tmp_path / "b", n_train=2, n_test=0, shape=(24, 24, 16), seed=5, junk=False)
    c = generate_msd(tmp_path / "c", n_train=2, n_test=0, shape=(24, 24, 16), seed=6, junk=False)
    assert (a / "dataset.json").read_text() == (b / "dataset.json").read_text()
    for path in sorted((a / "imagesTr").iterdir()):
        first, second = nib.load(path), nib.load(b / "imagesTr" / path.name)
        np.testing.assert_array_equal(np.asarray(first.dataobj), np.asarray(second.dataobj))
        np.testing.assert_array_equal(first.affine, second.affine)
    data_a = [np.asarray(nib.load(p).dataobj) for p in sorted((a / "imagesTr").iterdir())]
    data_c = [np.asarray(nib.load(p).dataobj) for p in sorted((c / "imagesTr").iterdir())]
    assert any(x.shape != y.shape or not np.array_equal(x, y) for x, y in zip(data_a, data_c))


def test_msd_liver_task_has_tumour_inside_liver(tmp_path):
    task = generate_msd(tmp_path, task="Task03_Liver", n_train=2, n_test=0, shape=SMALL, junk=False)
    for label_path in (task / "labelsTr").iterdir():
        label = np.asarray(nib.load(label_path).dataobj)
        assert set(np.unique(label)) == {0, 1, 2}
        assert (label == 2).sum() < (label == 1).sum()


def test_msd_brain_tumour_is_4d_multichannel(tmp_path):
    task = generate_msd(tmp_path, task="Task01_BrainTumour", n_train=2, n_test=1, shape=(32, 32, 24), junk=False)
    meta = json.loads((task / "dataset.json").read_text())
    assert meta["tensorImageSize"] == "4D" and len(meta["modality"]) == 4
    entry = meta["training"][0]
    assert entry["image"].startswith("./imagesTr/BRATS_")
    image = np.asarray(nib.load(task / entry["image"]).dataobj)
    label = np.asarray(nib.load(task / entry["label"]).dataobj)
    assert image.ndim == 4 and image.shape[3] == 4 and label.shape == image.shape[:3]
    assert set(np.unique(label)) <= {0, 1, 2, 3} and {1, 3} <= set(np.unique(label))
    t1gd, flair = image[..., 2], image[..., 0]
    assert t1gd[label == 3].mean() > 1.5 * t1gd[label == 1].mean()  # enhancing rim lights up with gadolinium
    assert flair[label == 1].mean() > 1.5 * flair[(label == 0) & (flair > 0)].mean()  # oedema bright on FLAIR
    with pytest.raises(ValueError, match="unsupported MSD task"):
        generate_msd(tmp_path, task="Task42_Nothing")
    with pytest.raises(ValueError, match="four_d=True does not apply"):
        generate_msd(tmp_path, task="Task09_Spleen", four_d=True)


def test_btcv_layouts(tmp_path):
    raw = generate_btcv(tmp_path / "raw", n_train=5, n_test=1, shape=(24, 24, 16))
    images = sorted(p.name for p in (raw / "RawData/Training/img").iterdir())
    assert images == ["img0001.nii.gz", "img0002.nii.gz", "img0003.nii.gz", "img0004.nii.gz", "img0035.nii.gz"]
    assert (raw / "RawData/Training/label/label0035.nii.gz").is_file()
    assert (raw / "RawData/Testing/img/img0061.nii.gz").is_file()
    swin = generate_btcv(tmp_path / "swin", n_train=5, n_test=1, shape=(24, 24, 16), layout="swinunetr")
    meta = json.loads((swin / "dataset_0.json").read_text())
    assert [e["image"] for e in meta["validation"]] == ["imagesTr/img0035.nii.gz"]
    assert len(meta["training"]) == 4 and meta["test"] == ["imagesTs/img0061.nii.gz"]
    assert meta["labels"]["13"] == "left adrenal gland"
    for entry in meta["training"] + meta["validation"]:
        assert (swin / entry["image"]).is_file() and (swin / entry["label"]).is_file()


def test_brats_2021_and_2023_naming_and_labels(tmp_path):
    folder = generate_brats(tmp_path / "b21", n_cases=2, n_unlabelled=1, shape=(32, 32, 24))
    cases = sorted(p.name for p in folder.iterdir())
    assert all(c.startswith("BraTS2021_") for c in cases) and len(cases) == 3
    labelled = [c for c in cases if (folder / c / f"{c}_seg.nii.gz").is_file()]
    assert len(labelled) == 2
    seg = np.asarray(nib.load(folder / labelled[0] / f"{labelled[0]}_seg.nii.gz").dataobj)
    assert set(np.unique(seg)) == {0, 1, 2, 4}
    assert all((folder / cases[0] / f"{cases[0]}_{m}.nii.gz").is_file() for m in ("flair", "t1", "t1ce", "t2"))

    folder = generate_brats(tmp_path / "b23", n_cases=4, shape=(32, 32, 24), edition=2023)
    cases = sorted(p.name for p in folder.iterdir())
    assert any(c.endswith("-001") for c in cases)  # a follow-up time point of an earlier patient
    case = cases[0]
    assert {p.name.rsplit("-", 1)[1] for p in (folder / case).iterdir()} == {
        "t2f.nii.gz",
        "t1n.nii.gz",
        "t1c.nii.gz",
        "t2w.nii.gz",
        "seg.nii.gz",
    }
    assert set(np.unique(np.asarray(nib.load(folder / case / f"{case}-seg.nii.gz").dataobj))) == {0, 1, 2, 3}


def test_totalsegmentator_layout_meta_and_masks(tmp_path):
    root = generate_totalsegmentator(tmp_path, n_cases=3, shape=(32, 32, 24))
    raw = (root / "meta.csv").read_bytes()
    assert (
        raw.startswith(b"\xef\xbb\xbf") and raw.splitlines()[0][3:] == b"image_id;age;gender;institute;study_type;split"
    )
    case = root / raw.decode("utf-8-sig").splitlines()[1].split(";")[0]
    masks = {p.name[: -len(".nii.gz")]: np.asarray(nib.load(p).dataobj) for p in (case / "segmentations").iterdir()}
    assert set(masks) == {s.name for s in CT_STRUCTURES} | set(TOTALSEG_EMPTY_CLASSES)
    assert all(not masks[name].any() for name in TOTALSEG_EMPTY_CLASSES)
    stacked = np.stack([m for m in masks.values()])
    assert set(np.unique(stacked)) == {0, 1} and stacked.sum(axis=0).max() == 1  # binary and disjoint
    assert masks["liver"].sum() > 100
    ct = nib.load(case / "ct.nii.gz")
    np.testing.assert_allclose(nib.load(case / "segmentations" / "liver.nii.gz").affine, ct.affine)


def test_acdc_layout_info_and_cardiac_cycle(tmp_path):
    base = generate_acdc(tmp_path, n_train=5, n_test=1, shape=(40, 40, 6), n_frames=10)
    patients = sorted(p.name for p in (base / "training").iterdir())
    assert patients == ["patient001", "patient021", "patient041", "patient061", "patient081"]
    info = dict(line.split(": ") for line in (base / "training/patient001/Info.cfg").read_text().splitlines())
    assert set(info) == {"ED", "ES", "Group", "Height", "NbFrame", "Weight"} and info["Group"] == "DCM"
    ed, es = int(info["ED"]), int(info["ES"])
    patient = base / "training/patient001"
    cine = np.asarray(nib.load(patient / "patient001_4d.nii.gz").dataobj)
    assert cine.shape == (40, 40, 6, 10)
    frame = np.asarray(nib.load(patient / f"patient001_frame{es:02d}.nii.gz").dataobj)
    np.testing.assert_array_equal(frame, cine[..., es - 1])

    def ejection_fraction(group: str) -> float:
        _, labels, ed_frame, es_frame = cardiac_phantom((48, 48, 8), 12, group, np.random.default_rng(0))
        edv, esv = (labels[..., ed_frame - 1] == 3).sum(), (labels[..., es_frame - 1] == 3).sum()
        return 1.0 - esv / edv

    assert ed == 1 and es > ed
    assert ejection_fraction("NOR") > 0.35 > ejection_fraction("DCM") > 0.05  # dilated heart pumps poorly


def test_write_volume_as_dicom_round_trip_with_phi_tags(tmp_path):
    from medcl.data import load_image

    image = to_nifti(np.arange(12 * 10 * 5, dtype=np.int16).reshape(12, 10, 5) - 200, (0.8, 0.8, 2.5), "LPS")
    nifti = tmp_path / "case.nii.gz"
    nib.save(image, nifti)
    files = write_volume_as_dicom(nifti, tmp_path / "dicom", patient_name="ROE^RICHARD", patient_id="MRN-777")
    assert len(files) == 5
    ds = pydicom.dcmread(files[0])
    assert str(ds.PatientName) == "ROE^RICHARD" and ds.PatientID == "MRN-777"
    assert ds.PatientBirthDate and ds.InstitutionName and ds.AccessionNumber and ds.StudyDate
    from_dicom, from_nifti = load_image(tmp_path / "dicom"), load_image(nifti)
    np.testing.assert_allclose(from_dicom.numpy(), from_nifti.numpy())
    np.testing.assert_allclose(from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-4)
