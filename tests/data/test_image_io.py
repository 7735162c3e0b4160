"""load_image against the real files shipped with pydicom and nibabel, plus PNG/JPEG/.npy conventions."""

from __future__ import annotations

import gzip
import signal
import warnings
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import LoadImage
from PIL import Image
from pydicom.pixels import apply_color_lut, apply_modality_lut

from medcl.data import load_image
from medcl.data.image_io import MedclReader, read_image_array
from medcl.errors import InvalidInputError

PYDICOM_DIR = Path(pydicom.__file__).parent / "data" / "test_files"
NIBABEL_DIR = Path(nib.__file__).parent / "tests" / "data"
PER_FILE_SECONDS = 30  # a hang guard, far above the slowest file (~1 s unloaded)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


PYDICOM_FILES = _files(PYDICOM_DIR)
NIBABEL_FILES = _files(NIBABEL_DIR)


@contextmanager
def time_limit(seconds: int):
    """Fail instead of hanging (SIGALRM: main thread, POSIX)."""

    def on_alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _pydicom_reference(path: Path) -> np.ndarray | None:
    """pydicom's own decoding after the modality LUT, (frames, rows, cols, channels); None if pydicom cannot."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
            with opener(path, "rb") as fh:
                ds = pydicom.dcmread(fh, force=True)
            stored = ds.pixel_array
    except Exception:
        return None
    photometric = ds.get("PhotometricInterpretation", "")
    if photometric == "PALETTE COLOR":
        values = apply_color_lut(stored, ds).astype(np.float64)
    elif int(ds.get("SamplesPerPixel", 1)) > 1 or stored.dtype.kind == "f":
        values = stored.astype(np.float64)
    else:
        values = apply_modality_lut(stored, ds).astype(np.float64)
        if ds.get("Modality") == "RTDOSE" and "DoseGridScaling" in ds:
            values = values * float(ds.DoseGridScaling)
        if photometric == "MONOCHROME1":  # medcl inverts within the stored value range
            bits = int(ds.BitsStored)
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if ds.PixelRepresentation else (0, 2**bits - 1)
            slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
            values = (low + high) * slope + 2 * intercept - values
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames == 1:
        values = values[None]
    return values if values.ndim == 4 else values[..., None]


def _medcl_as_frames(array: np.ndarray) -> np.ndarray:
    """(C, W, H[, F]) -> (F, H, W, C), pydicom's layout."""
    if array.ndim == 3:
        array = array[..., None]
    return array.transpose(3, 2, 1, 0)


@pytest.mark.parametrize("path", PYDICOM_FILES, ids=lambda p: str(p.relative_to(PYDICOM_DIR)))
def test_every_pydicom_file_loads_like_pydicom_or_raises_clearly(path: Path) -> None:
    with time_limit(PER_FILE_SECONDS):
        reference = _pydicom_reference(path)
        try:
            array, meta = read_image_array(path)
        except InvalidInputError as err:
            assert str(err).startswith(str(path)) and err.reason
            return
    assert reference is not None, "medcl decoded a file pydicom cannot"
    assert array.dtype == np.float32 and meta["affine"].shape == (4, 4)
    np.testing.assert_allclose(_medcl_as_frames(array), reference, rtol=1e-6, atol=1e-6 * (1 + np.abs(reference).max()))


@pytest.mark.parametrize("path", NIBABEL_FILES, ids=lambda p: p.name)
def test_every_nibabel_file_loads_like_nibabel_or_raises_clearly(path: Path) -> None:
    with time_limit(PER_FILE_SECONDS):
        try:
            array, meta = read_image_array(path)
        except InvalidInputError as err:
            assert str(err).startswith(str(path)) and err.reason
            return
        if meta["format"] == "dicom":
            np.testing.assert_allclose(_medcl_as_frames(array), _pydicom_reference(path), rtol=1e-6)
            return
        image = nib.load(path)
        reference = image.get_fdata()
    if reference.ndim == 5:
        reference = reference[:, :, :, 0, :]
    channels_last = np.moveaxis(array, 0, -1)
    if reference.ndim < 4:
        channels_last = channels_last[..., 0]
    np.testing.assert_allclose(channels_last, reference, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(meta["affine"], image.affine)
    spatial_ndim = array.ndim - 1
    np.testing.assert_allclose(meta["spacing"], nib.affines.voxel_sizes(image.affine)[:spatial_ndim], rtol=1e-5)


# Guards against the sweeps above passing vacuously by rejecting everything.
MUST_LOAD = [
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "JPEG2000.dcm", "JPGExtended.dcm", "JPEGLSNearLossless_16.dcm",
    "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle_2frame.dcm", "SC_ybr_full_422_uncompressed.dcm", "examples_palette.dcm",
    "rtdose.dcm", "zipMR.gz", "image_dfl.dcm", "693_J2KI.dcm",
]  # fmt: skip


@pytest.mark.parametrize("name", MUST_LOAD)
def test_known_good_pydicom_files_load(name: str) -> None:
    image = load_image(PYDICOM_DIR / name)
    assert isinstance(image, MetaTensor) and image.dtype == torch.float32
    assert image.ndim in (3, 4) and image.shape[0] in (1, 3)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("MR_truncated.dcm", "cannot decode pixel data"),
        ("rtplan.dcm", "without pixel data (RT Plan Storage)"),
        ("test-SR.dcm", "without pixel data"),
        ("README.txt", "unsupported file type '.txt'"),
        ("test1.json", "unsupported file type '.json'"),
        ("dicomdirtests/DICOMDIR", "not a DICOM image"),
    ],
)
def test_unreadable_pydicom_files_say_why(name: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^" + str(PYDICOM_DIR / name).replace(".", r"\.")) as caught:
        load_image(PYDICOM_DIR / name)
    assert reason in caught.value.reason


def test_lossless_codecs_decode_to_the_uncompressed_pixels() -> None:
    original = load_image(PYDICOM_DIR / "MR_small.dcm")
    for name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        compressed = load_image(PYDICOM_DIR / name)
        assert torch.equal(compressed, original), name
        np.testing.assert_allclose(compressed.affine, original.affine)


def test_ct_small_is_in_hounsfield_units_with_its_geometry() -> None:
    ds = pydicom.dcmread(PYDICOM_DIR / "CT_small.dcm")
    image = load_image(PYDICOM_DIR / "CT_small.dcm")
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(image[0].numpy().T, expected)
    assert image.meta["spacing"][:2] == pytest.approx([float(ds.PixelSpacing[1]), float(ds.PixelSpacing[0])])
    lps_origin = np.asarray(ds.ImagePositionPatient, dtype=float)
    np.testing.assert_allclose(image.affine[:3, 3].numpy(), lps_origin * [-1, -1, 1])
    assert "PatientName" not in image.meta and "PatientID" not in image.meta


def test_nifti_4d_becomes_channels_with_its_affine(tmp_path: Path) -> None:
    data = np.random.default_rng(0).normal(size=(4, 5, 6, 3)).astype(np.float32)
    affine = np.array([[0, 0, 2.0, 10], [-1.5, 0, 0, 20], [0, 1.0, 0, -5], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(data, affine), tmp_path / "multi.nii.gz")
    image = load_image(tmp_path / "multi.nii.gz")
    assert image.shape == (3, 4, 5, 6)
    np.testing.assert_array_equal(image.numpy(), np.moveaxis(data, -1, 0))
    np.testing.assert_allclose(image.affine.numpy(), affine)
    assert image.meta["spacing"] == pytest.approx((1.5, 1.0, 2.0))


def test_nifti_scaling_is_applied(tmp_path: Path) -> None:
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    nifti = nib.Nifti1Image(stored, np.eye(4))
    nifti.header.set_slope_inter(0.5, -3.0)
    nib.save(nifti, tmp_path / "scaled.nii")
    np.testing.assert_allclose(load_image(tmp_path / "scaled.nii")[0].numpy(), stored * 0.5 - 3.0)


@pytest.mark.parametrize(("dtype", "channels"), [(np.uint8, 1), (np.uint16, 1), (np.uint8, 3)])
def test_png_axes_follow_monai(tmp_path: Path, dtype, channels: int) -> None:
    height, width = 7, 11
    pixels = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, size=(height, width, channels)).astype(dtype)
    pixels = pixels[..., 0] if channels == 1 else pixels
    Image.fromarray(pixels).save(tmp_path / "x.png")
    image = load_image(tmp_path / "x.png")
    assert image.shape == (channels, width, height)
    stored = pixels if channels > 1 else pixels[..., None]
    np.testing.assert_array_equal(image.numpy(), stored.transpose(2, 1, 0))
    monai_image = LoadImage(image_only=True, ensure_channel_first=True)(str(tmp_path / "x.png"))
    np.testing.assert_array_equal(image.numpy(), monai_image.numpy())  # same convention as MONAI's PIL reader


def test_jpeg_and_npy_share_the_convention(tmp_path: Path) -> None:
    pixels = np.zeros((20, 30), dtype=np.uint8)
    pixels[4, 25] = 255  # row 4, column 25
    Image.fromarray(pixels).save(tmp_path / "x.jpg", quality=100)
    np.save(tmp_path / "x.npy", pixels.astype(np.float32))
    for name in ("x.jpg", "x.npy"):
        image = load_image(tmp_path / name)
        assert image.shape == (1, 30, 20)
        assert np.unravel_index(int(image[0].argmax()), image.shape[1:]) == (25, 4)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "not a readable PNG/JPEG"),
        ("empty.nii.gz", b"", "not a readable NIfTI"),
        ("notes.txt", b"hello", "unsupported file type"),
        ("x.dcm", b"\0" * 200, "not a DICOM image"),
    ],
)
def test_bad_files_raise_invalid_input(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInputError, match=reason) as caught:
        load_image(tmp_path / name)
    assert caught.value.path == str(tmp_path / name)


def test_truncated_nifti_and_bad_npy(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.ones((16, 16, 16), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    data = (tmp_path / "v.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInputError, match=r"cut\.nii\.gz"):
        load_image(tmp_path / "cut.nii.gz")
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(InvalidInputError, match=r"2-D numeric \(H, W\)"):
        load_image(tmp_path / "cube.npy")
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0]]))
    with pytest.raises(InvalidInputError, match="NaN"):
        load_image(tmp_path / "nan.npy")


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        load_image(tmp_path / "absent.dcm")
    with pytest.raises(InvalidInputError, match="no DICOM images"):
        load_image(tmp_path)


def test_monai_loadimage_with_medcl_reader_matches_load_image(tmp_path: Path) -> None:
    path = PYDICOM_DIR / "CT_small.dcm"
    via_monai = LoadImage(reader=MedclReader(), image_only=True, ensure_channel_first=True)(path)
    direct = load_image(path)
    assert via_monai.shape == direct.shape
    assert torch.equal(via_monai.as_tensor(), direct.as_tensor())
    np.testing.assert_allclose(via_monai.affine, direct.affine)


def test_reader_stacks_files_as_channels_when_grids_agree(tmp_path: Path) -> None:
    for name, value in (("t1", 1.0), ("t2", 2.0)):
        nib.save(nib.Nifti1Image(np.full((3, 4, 5), value, np.float32), np.eye(4)), tmp_path / f"{name}.nii")
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 6), np.float32), np.eye(4)), tmp_path / "other.nii")
    stacked = LoadImage(reader=MedclReader(), image_only=True)([tmp_path / "t1.nii", tmp_path / "t2.nii"])
    assert stacked.shape == (2, 3, 4, 5) and stacked[1].mean() == 2.0
    with pytest.raises(InvalidInputError, match="cannot stack as channels"):
        MedclReader().read([tmp_path / "t1.nii", tmp_path / "other.nii"])
