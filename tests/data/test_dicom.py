"""DICOM series geometry, orientation conventions, LUTs and multi-frame objects."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage, Orientation
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi, apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import JPEG2000Lossless, RLELossless, generate_uid
from scipy.spatial.transform import Rotation

from medcl.data import load_image
from medcl.data.dicom import list_dicom_series
from medcl.data.synthetic.dicom_writer import write_dicom_series, write_radiograph
from medcl.errors import InvalidInputError

RNG = np.random.default_rng(7)


def oblique_affine(spacing=(0.7, 0.8, 2.5), angles=(20.0, -10.0, 35.0), origin=(10.0, -20.0, 30.0)) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = Rotation.from_euler("xyz", angles, degrees=True).as_matrix() @ np.diag(spacing)
    affine[:3, 3] = origin
    return affine


def ct_volume(shape=(20, 16, 12)) -> np.ndarray:
    return RNG.integers(-1000, 2000, size=shape).astype(np.float32)


def test_oblique_series_with_shuffled_instance_numbers_matches_its_nifti_twin(tmp_path: Path) -> None:
    volume, affine = ct_volume() / 2, oblique_affine()  # slope 0.5: multiples of 0.5 are exact
    files = write_dicom_series(volume, affine, tmp_path / "dicom", shuffle_instance_numbers=True, rescale_slope=0.5)
    numbers = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    assert numbers != sorted(numbers)  # InstanceNumber disagrees with the slice order
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "twin.nii.gz")

    from_dicom = load_image(tmp_path / "dicom")
    from_nifti = load_image(tmp_path / "twin.nii.gz")
    assert from_dicom.shape == from_nifti.shape == (1, 20, 16, 12)
    torch.testing.assert_close(from_dicom.as_tensor(), from_nifti.as_tensor(), rtol=0, atol=0)
    np.testing.assert_allclose(from_dicom.affine.numpy(), from_nifti.affine.numpy(), atol=1e-6)
    np.testing.assert_allclose(from_dicom.affine.numpy(), affine, atol=1e-6)
    assert from_dicom.meta["spacing"] == pytest.approx((0.7, 0.8, 2.5), abs=1e-6)


def test_gantry_tilt_shear_is_kept_in_the_affine(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[1, 2] = 0.6  # each slice shifts 0.6 mm along y: a tilted gantry
    volume = ct_volume((8, 9, 6))
    write_dicom_series(volume, affine, tmp_path)
    image = load_image(tmp_path)
    np.testing.assert_allclose(image.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_array_equal(image[0].numpy(), volume)


def test_reversed_slice_direction_is_the_same_anatomy(tmp_path: Path) -> None:
    affine = oblique_affine()
    flipped = affine.copy()
    flipped[:3, 2] *= -1  # slices written against the normal
    volume = ct_volume()
    write_dicom_series(volume, flipped, tmp_path / "dicom")
    nib.save(nib.Nifti1Image(volume, flipped), tmp_path / "twin.nii")
    from_dicom, from_nifti = load_image(tmp_path / "dicom"), load_image(tmp_path / "twin.nii")
    np.testing.assert_array_equal(from_dicom[0].numpy(), volume[:, :, ::-1])  # sorted along the normal
    ras = Orientation(axcodes="RAS")
    np.testing.assert_array_equal(ras(from_dicom).numpy(), ras(from_nifti).numpy())
    np.testing.assert_allclose(ras(from_dicom).affine.numpy(), ras(from_nifti).affine.numpy(), atol=1e-6)


def _marker_volume(affine: np.ndarray, shape, world_ras: np.ndarray) -> np.ndarray:
    volume = np.zeros(shape, np.float32)
    index = np.rint(np.linalg.solve(affine, np.append(world_ras, 1.0))[:3]).astype(int)
    volume[tuple(index)] = 1000.0
    return volume


@pytest.mark.parametrize("angles", [(0.0, 0.0, 0.0), (90.0, 0.0, 0.0), (0.0, 0.0, 180.0), (10.0, 15.0, -5.0)])
def test_known_anatomy_ends_up_where_nibabel_and_monai_say(tmp_path: Path, angles) -> None:
    """A marker on the patient's left, anterior, superior side stays there through DICOM and RAS reorientation."""
    affine = oblique_affine(spacing=(2.0, 2.0, 2.0), angles=angles, origin=(0.0, 0.0, 0.0))
    affine[:3, 3] = -affine[:3, :3] @ np.array([10.0, 10.0, 10.0])  # volume centred on the world origin
    left_anterior_superior = np.array([-12.0, 12.0, 12.0])  # RAS+: x<0 is the patient's left
    volume = _marker_volume(affine, (21, 21, 21), left_anterior_superior)
    write_dicom_series(volume, affine, tmp_path, rescale_intercept=0.0)
    image = load_image(tmp_path)
    marker = np.array(np.unravel_index(int(image[0].argmax()), image.shape[1:]))
    world = image.affine.numpy() @ np.append(marker, 1.0)
    assert np.linalg.norm(world[:3] - left_anterior_superior) < 2.0 * np.sqrt(3)
    canonical = Orientation(axcodes="RAS")(image)
    assert nib.aff2axcodes(canonical.affine.numpy()) == ("R", "A", "S")
    index = np.array(np.unravel_index(int(canonical[0].argmax()), canonical.shape[1:]))
    centre = (np.array(canonical.shape[1:]) - 1) / 2
    assert index[0] < centre[0] and index[1] > centre[1] and index[2] > centre[2]  # left, anterior, superior


def test_axial_series_agrees_with_monai_pydicom_reader(tmp_path: Path) -> None:
    affine = np.diag([-0.7, -0.8, 2.5, 1.0])  # RAS of the usual axial DICOM: rows run left, columns back
    affine[:3, 3] = [1.0, 2.0, 3.0]
    volume = ct_volume()
    files = write_dicom_series(volume, affine, tmp_path)
    assert [float(v) for v in pydicom.dcmread(files[0]).ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    mine = load_image(tmp_path)
    monai = LoadImage(reader=PydicomReader(), image_only=True)(str(tmp_path))
    np.testing.assert_array_equal(mine[0].numpy(), monai.numpy())
    np.testing.assert_allclose(mine.affine.numpy(), monai.affine.numpy(), atol=1e-6)
    assert nib.aff2axcodes(mine.affine.numpy()) == ("L", "P", "S")


@pytest.fixture
def series(tmp_path: Path) -> list[Path]:
    return write_dicom_series(ct_volume((6, 5, 8)), np.diag([1.0, 1.0, 2.0, 1.0]), tmp_path / "series")


def test_missing_slice_is_reported(series: list[Path]) -> None:
    series[3].unlink()
    with pytest.raises(InvalidInputError, match=r"missing slice\(s\)") as caught:
        load_image(series[0].parent)
    assert caught.value.path == str(series[0].parent)


def test_duplicated_slice_is_reported(series: list[Path]) -> None:
    ds = pydicom.dcmread(series[2])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(series[0].parent / "copy.dcm")
    with pytest.raises(InvalidInputError, match="duplicated slice"):
        load_image(series[0].parent)


def test_mixed_series_are_reported_and_selectable(series: list[Path], tmp_path: Path) -> None:
    other = write_dicom_series(ct_volume((6, 5, 3)), np.eye(4), tmp_path / "other")
    for file in other:
        shutil.copy(file, series[0].parent / f"other_{file.name}")
    with pytest.raises(InvalidInputError, match="mixed series: 2 different SeriesInstanceUIDs"):
        load_image(series[0].parent)
    uid = str(pydicom.dcmread(other[0]).SeriesInstanceUID)
    assert len(list_dicom_series(series[0].parent)[uid]) == 3
    assert load_image(series[0].parent, series_uid=uid).shape == (1, 6, 5, 3)


@pytest.mark.parametrize(
    ("keyword", "value", "message"),
    [
        ("ImageOrientationPatient", [0, 1, 0, 1, 0, 0], "different ImageOrientationPatient"),
        ("PixelSpacing", [1.5, 1.5], "different PixelSpacing"),
        ("ImagePositionPatient", [5.0, 0.0, 6.0], "off the line"),
        ("ImagePositionPatient", [0.0, 0.0, 7.0], "inconsistent slice spacing"),
        ("ImagePositionPatient", None, "slices cannot be ordered"),
    ],
)
def test_inconsistent_geometry_is_reported(series: list[Path], keyword: str, value, message: str) -> None:
    ds = pydicom.dcmread(series[3])
    if value is None:
        del ds[keyword]
    else:
        setattr(ds, keyword, value)
    ds.save_as(series[3])
    with pytest.raises(InvalidInputError, match=message):
        load_image(series[0].parent)


def test_image_sizes_must_agree(series: list[Path]) -> None:
    ds = pydicom.dcmread(series[1])
    ds.Rows, ds.Columns = 2, 15
    ds.save_as(series[1])
    with pytest.raises(InvalidInputError, match="inconsistent geometry"):
        load_image(series[0].parent)


def test_non_dicom_files_in_a_series_directory_are_skipped(series: list[Path]) -> None:
    (series[0].parent / "notes.txt").write_text("not an image")
    assert load_image(series[0].parent).shape == (1, 6, 5, 8)


def _radiograph(path: Path, pixels: np.ndarray, **attributes) -> Path:
    """A 12-bit DX film without patient geometry, ``attributes`` set by keyword."""
    spacing = {"ImagerPixelSpacing": [0.139, 0.143]}
    return write_radiograph(path, pixels.astype(np.uint16), bits_stored=12, attributes={**spacing, **attributes})


def test_monochrome1_is_inverted_so_brighter_is_larger(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 4096, size=(9, 7)).astype(np.uint16)
    path = _radiograph(tmp_path / "cr.dcm", pixels, PhotometricInterpretation="MONOCHROME1")
    image = load_image(path)
    np.testing.assert_array_equal(image[0].numpy().T, 4095.0 - pixels)
    assert image.meta["spacing"] == pytest.approx((0.143, 0.139))  # (along a row, down a column)
    assert not image.meta["has_patient_geometry"]


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_window_matches_pydicom_scaled_to_unit_range(tmp_path: Path, function: str, photometric: str) -> None:
    pixels = RNG.integers(0, 4096, size=(16, 16)).astype(np.uint16)
    attributes = {"WindowCenter": 1500, "WindowWidth": 1200, "VOILUTFunction": function}
    path = _radiograph(tmp_path / "dx.dcm", pixels, PhotometricInterpretation=photometric, **attributes)
    ds = pydicom.dcmread(path)
    expected = apply_windowing(pixels.astype(np.float64), ds) / 4095.0  # pydicom maps onto [0, 2^12 - 1]
    if photometric == "MONOCHROME1":
        expected = 1.0 - expected
    np.testing.assert_allclose(load_image(path, voi_lut=True)[0].numpy().T, expected, atol=1e-5)


def test_voi_lut_sequence_matches_pydicom(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 4096, size=(8, 8)).astype(np.uint16)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 10]
    lut.add_new("LUTData", "US", [int(v) for v in np.sqrt(np.arange(4096) * 255.0)])
    path = _radiograph(tmp_path / "dx.dcm", pixels, VOILUTSequence=Sequence([lut]))
    ds = pydicom.dcmread(path)
    expected = apply_voi(pixels, ds) / 1023.0
    np.testing.assert_allclose(load_image(path, voi_lut=True)[0].numpy().T, expected, atol=1e-6)


def test_enhanced_multiframe_frames_are_sorted_along_the_normal(tmp_path: Path) -> None:
    volume = ct_volume((6, 5, 4))
    affine = oblique_affine(spacing=(1.0, 1.2, 3.0))
    write_dicom_series(volume, affine, tmp_path / "series")
    reference = load_image(tmp_path / "series")
    slices = [pydicom.dcmread(f) for f in sorted((tmp_path / "series").iterdir())]
    slices.sort(
        key=lambda ds: (
            -float(np.dot(ds.ImagePositionPatient, np.cross(*np.reshape(ds.ImageOrientationPatient, (2, 3)))))
        )
    )
    multiframe = slices[0]
    multiframe.NumberOfFrames = len(slices)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = multiframe.ImageOrientationPatient
    measures.PixelSpacing = multiframe.PixelSpacing
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orientation]), Sequence([measures])
    multiframe.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for ds in slices:  # frames stored in reverse order along the normal
        position, item = Dataset(), Dataset()
        position.ImagePositionPatient = ds.ImagePositionPatient
        item.PlanePositionSequence = Sequence([position])
        per_frame.append(item)
    multiframe.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        del multiframe[keyword]
    multiframe.PixelData = b"".join(ds.PixelData for ds in slices)
    multiframe.save_as(tmp_path / "multiframe.dcm")
    image = load_image(tmp_path / "multiframe.dcm")
    torch.testing.assert_close(image.as_tensor(), reference.as_tensor())
    np.testing.assert_allclose(image.affine.numpy(), reference.affine.numpy(), atol=1e-6)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_slices_decode_to_the_same_values(tmp_path: Path, syntax) -> None:
    volume = ct_volume((64, 48, 1))
    (path,) = write_dicom_series(volume, np.eye(4), tmp_path)
    ds = pydicom.dcmread(path)
    ds.compress(syntax)
    ds.save_as(tmp_path / "compressed.dcm")
    assert pydicom.dcmread(tmp_path / "compressed.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(load_image(tmp_path / "compressed.dcm")[0].numpy(), volume[:, :, 0])


def test_gzipped_dicom_loads(tmp_path: Path) -> None:
    import gzip

    volume = ct_volume((8, 8, 1))
    (path,) = write_dicom_series(volume, np.eye(4), tmp_path)
    (tmp_path / "slice.dcm.gz").write_bytes(gzip.compress(path.read_bytes()))
    np.testing.assert_array_equal(load_image(tmp_path / "slice.dcm.gz")[0].numpy(), volume[:, :, 0])
