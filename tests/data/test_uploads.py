"""Upload decoding: budgets that count every channel, empty axes, non-finite pixels, bombs, redaction in any case."""

from __future__ import annotations

import io

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medcl.data.uploads import ImageLimits, ImageTooLargeError, check_dimensions, read_upload, redact
from medcl.errors import InvalidInputError
from medcl.serve.faults import dicom_bytes, float_dicom, nifti_bytes, non_finite_image, png_bomb

LIMITS = ImageLimits(max_pixels=100_000, max_voxels=1_000_000, max_side=4096)


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pixel_budget_counts_every_channel():
    grey = read_upload(png(np.zeros((200, 200), np.uint8)), "x.png", limits=LIMITS)  # 40,000 values
    assert tuple(grey.shape) == (1, 200, 200)
    with pytest.raises(ImageTooLargeError, match=r"200 x 200 x 3 channel\(s\) = 120,000 pixel values"):
        read_upload(png(np.zeros((200, 200, 3), np.uint8)), "x.png", limits=LIMITS)
    # A 2-D RGB image is judged against the 2-D budget, never the (larger) volume budget.
    with pytest.raises(ImageTooLargeError, match="limit of 100,000"):
        check_dimensions((400, 400), 3, LIMITS)
    check_dimensions((100, 100, 90), 1, LIMITS)  # 900,000 voxels: within the volume budget
    with pytest.raises(ImageTooLargeError, match=r"x 2 channel\(s\) = 1,800,000 voxel values"):
        check_dimensions((100, 100, 90), 2, LIMITS)


def test_decompression_bombs_are_too_large_not_corrupt():
    with pytest.raises(ImageTooLargeError, match="decompression bomb"):
        read_upload(png_bomb(14000, 14000), "bomb.png")  # past PIL's own guard: 413, not 422
    with pytest.raises(ImageTooLargeError, match="exceeds the limit"):
        read_upload(dicom_bytes(NumberOfFrames=1000), "frames.dcm", limits=LIMITS)


@pytest.mark.parametrize(
    ("content", "filename"),
    [
        (nifti_bytes(np.zeros((32, 0, 16), np.float32)), "x.nii"),
        (nifti_bytes(np.zeros((0, 64), np.float32)), "x.nii"),
        (dicom_bytes(Columns=0), "x.dcm"),
    ],
)
def test_an_empty_axis_is_invalid_input(content, filename):
    with pytest.raises(InvalidInputError, match="empty axis"):
        read_upload(content, filename)


@pytest.mark.parametrize(
    ("content", "filename", "count"),
    [
        (nifti_bytes(non_finite_image(np.nan)), "x.nii", "16 of 4,096"),
        (nifti_bytes(non_finite_image(-np.inf, (16, 16, 8))), "x.nii", "64 of 2,048"),
        (float_dicom(non_finite_image(np.inf)), "x.dcm", "16 of 4,096"),
    ],
)
def test_nan_and_infinite_pixels_are_invalid_input(content, filename, count):
    with pytest.raises(InvalidInputError, match=f"{count} pixel values are NaN or infinite"):
        read_upload(content, filename)


def test_a_non_finite_voxel_size_is_invalid_input():
    image = nib.Nifti1Image(np.ones((8, 8, 8), np.float32), None)
    image.header["pixdim"][1] = np.nan  # no sform/qform: the affine comes from pixdim
    image.header.set_sform(None, code=0)
    image.header.set_qform(None, code=0)
    raw = io.BytesIO()
    image.to_file_map(nib.Nifti1Image.make_file_map({"image": raw, "header": raw}))
    with pytest.raises(InvalidInputError, match="geometry"):
        read_upload(raw.getvalue(), "x.nii")


def test_redaction_ignores_case():
    secrets = {"Doe^Jane", "MRN-0042"}
    message = "bad value 'DOE^JANE' for mrn-0042 (doe^jane)"
    assert redact(message, secrets) == "bad value '<redacted>' for <redacted> (<redacted>)"
