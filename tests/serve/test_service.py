"""`medcl serve` over real HTTP: embeddings, zero-shot, segmentation, auth, limits, bad input, no PHI."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import httpx
import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA
from pydicom.data import get_testdata_file

from medcl.deploy.pyfunc import example_png

CT_SMALL = Path(get_testdata_file("CT_small.dcm"))
ANATOMICAL = Path(NIBABEL_DATA) / "anatomical.nii"
PHI_NAME = "Zyxwvut^Qwertyuiop"
PHI_ID = "MRN-8675309-PHI"


def post(served, endpoint: str, filename: str, content: bytes, token: str | None = "default") -> httpx.Response:
    headers = {"Authorization": f"Bearer {served.token if token == 'default' else token}"} if token else {}
    return httpx.post(f"{served.url}{endpoint}", files={"file": (filename, content)}, headers=headers, timeout=120)


def assert_still_serving(served) -> None:
    assert served.alive()
    assert httpx.get(f"{served.url}/health", timeout=10).json() == {"status": "ok"}
    assert post(served, "/v1/embed", "ct.dcm", CT_SMALL.read_bytes()).status_code == 200


def phi_dicom() -> bytes:
    ds = pydicom.dcmread(CT_SMALL)
    ds.PatientName = PHI_NAME
    ds.PatientID = PHI_ID
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def test_health_ready_and_openapi_need_no_token(served):
    assert httpx.get(f"{served.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{served.url}/ready").json()
    assert ready["status"] == "ready"
    assert {c for m in ready["models"] for c in m["capabilities"]} == {"embed", "zero-shot", "segment"}
    schema = httpx.get(f"{served.url}/openapi.json").json()
    assert {"/v1/embed", "/v1/zero-shot", "/v1/segment", "/v1/report", "/health", "/ready"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "413" in schema["paths"]["/v1/embed"]["post"]["responses"]


def test_embedding_of_pydicom_ct_small_is_normalised_and_deterministic(served):
    first = post(served, "/v1/embed", "CT_small.dcm", CT_SMALL.read_bytes())
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["dim"] == 32 == len(body["embedding"])
    assert np.linalg.norm(body["embedding"]) == pytest.approx(1.0, abs=1e-4)
    again = post(served, "/v1/embed", "CT_small.dcm", CT_SMALL.read_bytes()).json()
    np.testing.assert_allclose(again["embedding"], body["embedding"], atol=1e-6)


def test_embedding_of_png_differs_from_the_dicom_and_zero_shot_scores_are_probabilities(served):
    png = post(served, "/v1/embed", "chest.png", example_png(96))
    assert png.status_code == 200, png.text
    dicom = post(served, "/v1/embed", "ct.dcm", CT_SMALL.read_bytes()).json()
    assert not np.allclose(png.json()["embedding"], dicom["embedding"], atol=1e-3)
    scores = post(served, "/v1/zero-shot", "chest.png", example_png(96))
    assert scores.status_code == 200, scores.text
    values = scores.json()["scores"]
    assert set(values) == {"Cardiomegaly", "Edema", "Pleural Effusion"}
    assert all(0.0 <= v <= 1.0 for v in values.values())


def test_segmentation_of_nifti_comes_back_on_the_input_grid(served):
    response = post(served, "/v1/segment", "anatomical.nii", ANATOMICAL.read_bytes())
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    labels = nib.Nifti1Image.from_bytes(gzip.decompress(response.content))
    source = nib.load(ANATOMICAL)
    assert labels.shape == source.shape
    np.testing.assert_allclose(labels.affine, source.affine, atol=1e-4)
    values = np.unique(np.asarray(labels.dataobj))
    assert set(values.tolist()) <= {0, 1, 2}
    assert labels.header["descrip"].item() == b""  # a fresh header: nothing copied from the upload
    gz = post(served, "/v1/segment", "anatomical.nii.gz", gzip.compress(ANATOMICAL.read_bytes()))
    assert gz.status_code == 200


def test_requests_without_or_with_a_wrong_token_get_401(served):
    missing = post(served, "/v1/embed", "ct.dcm", CT_SMALL.read_bytes(), token=None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert post(served, "/v1/embed", "ct.dcm", CT_SMALL.read_bytes(), token="x" * 32).status_code == 401
    assert httpx.get(f"{served.url}/v1/models").status_code == 401


@pytest.mark.parametrize(
    ("filename", "content", "status", "message"),
    [
        ("truncated.dcm", CT_SMALL.read_bytes()[:4000], 422, "DICOM"),
        ("notes.dcm", b"Patient seen in clinic, doing well.\n" * 50, 422, "DICOM"),
        ("broken.png", example_png(96)[:200], 422, "PNG"),
        ("empty.png", b"", 422, "empty file"),
        ("report.txt", b"text", 415, "unsupported file type '.txt'"),
        ("volume.nii", ANATOMICAL.read_bytes(), 422, "expected a 2-D radiograph"),
        ("large.png", example_png(400), 413, "exceeds the limit of 100,000"),
    ],
)
def test_bad_uploads_get_a_clear_4xx_and_the_service_keeps_answering(served, filename, content, status, message):
    response = post(served, "/v1/embed", filename, content)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail
    assert detail.startswith("upload: ")  # named "upload", never by the client's file name
    assert filename not in detail
    assert_still_serving(served)


def test_oversized_body_is_refused_with_413(served):
    response = post(served, "/v1/embed", "big.dcm", b"\0" * (3 * 2**20))
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["detail"]
    assert_still_serving(served)


def test_endpoint_without_a_model_is_a_404_naming_what_exists(served):
    response = post(served, "/v1/report", "ct.dcm", CT_SMALL.read_bytes())
    assert response.status_code == 404
    assert "/v1/embed" in response.json()["detail"]


def test_phi_in_headers_and_file_names_never_reaches_responses_or_logs(served):
    phi_file = f"{PHI_NAME.replace('^', '_')}.dcm"
    ok = post(served, "/v1/embed", phi_file, phi_dicom())
    assert ok.status_code == 200
    broken = post(served, "/v1/embed", phi_file, phi_dicom()[:-20000])
    assert broken.status_code == 422
    for response in (ok, broken):
        for needle in (PHI_NAME, PHI_ID, PHI_NAME.split("^")[0]):
            assert needle not in response.text
    log = served.log()
    assert "/v1/embed 200" in log  # the request log is there ...
    for needle in (PHI_NAME, PHI_ID, PHI_NAME.split("^")[0], phi_file):
        assert needle not in log  # ... without names, ids or file names
