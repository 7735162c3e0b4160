"""Hostile clients and malformed files, for the reliability tests and ``benchmarks/serve.py``.

Each fault is real: a bomb is a valid PNG or DICOM whose header claims a huge image, a NaN image is a float NIfTI
or DICOM that decoders accept, a stalled body is a socket that sends part of a body and then nothing. The
socket-level clients speak raw HTTP/1.1 because ordinary clients cannot stall, trickle or stop mid-head.

Only for loopback targets you own (like :mod:`medcl.serve.loadgen`): every client here sends a bounded amount of
data and gives up after ``hold`` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import io
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np

BOUNDARY = "medclfaultboundary"

# ---------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


@functools.lru_cache(maxsize=8)
def png_bomb(width: int, height: int, channels: int = 1) -> bytes:
    """A valid 8-bit PNG of zeros (grey or RGB): a few hundred KB that decode to ``width x height x channels``
    bytes. Compressed 256 rows at a time, so making one never holds the decoded image."""
    colour_type = {1: 0, 3: 2}[channels]
    compressor = zlib.compressobj(6)
    row = bytes(1 + width * channels)  # filter byte 0 + zero samples
    block, rest = divmod(height, 256)
    chunks = [compressor.compress(row * 256) for _ in range(block)] + [compressor.compress(row * rest)]
    idat = b"".join(chunks) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def dicom_bytes(**attributes: object) -> bytes:
    """pydicom's CT_small.dcm with ``attributes`` set (e.g. ``Rows=60000``: a header claiming a huge image)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for name, value in attributes.items():
        setattr(ds, name, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def float_dicom(pixels: np.ndarray) -> bytes:
    """CT_small.dcm's header over 32-bit Float Pixel Data (NaN and infinities representable)."""
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    for name in ("RescaleSlope", "RescaleIntercept", "PixelRepresentation", "SmallestImagePixelValue",
                 "LargestImagePixelValue"):  # fmt: skip
        if name in ds:
            delattr(ds, name)
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit = 31
    ds.FloatPixelData = np.ascontiguousarray(pixels, dtype=np.float32).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def nifti_bytes(array: np.ndarray, affine: np.ndarray | None = None) -> bytes:
    """An uncompressed NIfTI-1 of ``array`` (any shape nibabel writes, zero-length axes included)."""
    image = nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine)
    raw = io.BytesIO()
    image.to_file_map(nib.Nifti1Image.make_file_map({"image": raw, "header": raw}))
    return raw.getvalue()


def nifti_header_bomb(shape: tuple[int, ...]) -> bytes:
    """A NIfTI-1 whose header claims a float32 image of ``shape`` followed by 4 KiB of data."""
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    return header.binaryblock + bytes(4) + bytes(4096)


def non_finite_image(value: float, shape: tuple[int, ...] = (64, 64)) -> np.ndarray:
    """A smooth float image with ``value`` (NaN, inf, -inf) in a 4 x 4 patch."""
    grid = np.mgrid[tuple(slice(0, n) for n in shape)].astype(np.float32)
    image = 100 * np.cos(grid.sum(axis=0) / 7)
    image[tuple(slice(2, 6) for _ in shape)] = value
    return image


# ---------------------------------------------------------------------------------------------------------------
# Raw HTTP clients
# ---------------------------------------------------------------------------------------------------------------


def multipart(filename: str, content: bytes) -> tuple[str, bytes]:
    """(content type, body) of a one-file ``multipart/form-data`` form with field ``file``."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return f"multipart/form-data; boundary={BOUNDARY}", head + content + f"\r\n--{BOUNDARY}--\r\n".encode()


def request_head(url: str, path: str, *, token: str | None, content_type: str, length: int) -> bytes:
    host = urlsplit(url).netloc
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}", f"Content-Length: {length}"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class RawAnswer:
    """What a raw client saw: the status (None: closed without an answer, or nothing within ``hold``), seconds
    until then, body bytes it managed to send, and whether (``closed``) and when (``closed_after``, seconds from
    the start) the server closed the connection, as far as the client waited to see it."""

    status: int | None
    seconds: float
    sent: int
    closed: bool
    closed_after: float | None = None


async def raw_exchange(
    url: str,
    head: bytes,
    body: bytes = b"",
    *,
    send_bytes: int | None = None,
    chunk: int = 65536,
    pace: float = 0.0,
    hold: float = 30.0,
    wait_close: bool = False,
) -> RawAnswer:
    """Send ``head`` and the first ``send_bytes`` of ``body`` (all by default) in ``chunk``-byte pieces ``pace``
    seconds apart, then keep the connection open without sending more; returns once the server answers (and, with
    ``wait_close``, once it also closes the connection) or after ``hold`` seconds."""
    parts = urlsplit(url)
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    to_send = body[: len(body) if send_bytes is None else send_bytes]
    sent = 0
    status: int | None = None
    answered_after: float | None = None
    closed_after: float | None = None

    async def write() -> None:
        nonlocal sent
        try:
            writer.write(head)
            await writer.drain()
            for offset in range(0, len(to_send), chunk):
                piece = to_send[offset : offset + chunk]
                writer.write(piece)
                await writer.drain()
                sent += len(piece)
                if pace:
                    await asyncio.sleep(pace)
        except (ConnectionError, OSError):
            pass  # the server closed on us: the reader reports what it answered
        await asyncio.sleep(hold)  # stall: send nothing more

    async def read() -> None:
        nonlocal status, answered_after, closed_after
        data = b""
        try:
            while True:
                piece = await reader.read(65536)
                if not piece:
                    break
                data += piece
                if status is None and b"\r\n\r\n" in data:
                    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else None
                    answered_after = time.perf_counter() - started
                    if not wait_close:
                        return
        except (ConnectionError, OSError):
            pass
        closed_after = time.perf_counter() - started

    writing = asyncio.ensure_future(write())
    try:
        await asyncio.wait_for(read(), hold)
    except asyncio.TimeoutError:
        pass
    finally:
        writing.cancel()
        writer.close()
    seconds = answered_after if answered_after is not None else time.perf_counter() - started
    return RawAnswer(status, seconds, sent, closed_after is not None, closed_after)


async def upload_raw(
    url: str, path: str, filename: str, content: bytes, *, token: str | None, **kwargs: object
) -> RawAnswer:
    """A multipart upload over a raw socket; ``kwargs`` as :func:`raw_exchange` (stall, trickle)."""
    content_type, body = multipart(filename, content)
    head = request_head(url, path, token=token, content_type=content_type, length=len(body))
    return await raw_exchange(url, head, body, **kwargs)  # type: ignore[arg-type]


async def partial_head(url: str, *, hold: float = 30.0) -> RawAnswer:
    """A request line and one header, then nothing (slowloris)."""
    host = urlsplit(url).netloc
    return await raw_exchange(url, f"POST /v1/embed HTTP/1.1\r\nHost: {host}\r\n".encode(), hold=hold, wait_close=True)


# ---------------------------------------------------------------------------------------------------------------
# The hostile share of a load run
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hostile:
    """One hostile or malformed request: ``act(url, token)`` returns the status it got (None: cut without one)."""

    name: str
    act: Callable[[str, str], Awaitable[int | None]]


def _upload(path: str, filename: str, content: bytes, *, authenticated: bool = True, **kwargs: object) -> Callable:
    async def act(url: str, token: str) -> int | None:
        answer = await upload_raw(url, path, filename, content, token=token if authenticated else None, **kwargs)
        return answer.status

    return act


def hostile_mix(*, max_upload_bytes: int, max_pixels: int, body_idle_timeout: float) -> list[Hostile]:
    """The hostile share of ``benchmarks/serve.py`` and the reliability load test, sized for a service started with
    these limits: each answer is a 4xx (or a cut connection), never a 5xx."""
    side = int((max_pixels / 3) ** 0.5) + 64  # fits the pixel budget as grey, not as RGB
    stall = {"send_bytes": 32768, "hold": body_idle_timeout + 30}
    large = bytes(max_upload_bytes - 4096)
    return [
        Hostile("stalled body", _upload("/v1/embed", "ct.dcm", dicom_bytes(), **stall)),
        Hostile("no token, large body", _upload("/v1/embed", "big.dcm", large, authenticated=False)),
        Hostile("PNG bomb", _upload("/v1/embed", "bomb.png", png_bomb(14000, 14000))),  # past PIL's own guard
        Hostile("DICOM bomb", _upload("/v1/embed", "bomb.dcm", dicom_bytes(Rows=16000, Columns=16000))),
        Hostile("colour bomb", _upload("/v1/embed", "colour.png", png_bomb(side, side, channels=3))),
        Hostile("NaN image", _upload("/v1/embed", "nan.nii", nifti_bytes(non_finite_image(np.nan)))),
        Hostile("Inf DICOM", _upload("/v1/embed", "inf.dcm", float_dicom(non_finite_image(np.inf)))),
        Hostile("zero-size axis", _upload("/v1/embed", "empty.nii", nifti_bytes(np.zeros((64, 0), np.float32)))),
        Hostile("truncated DICOM", _upload("/v1/embed", "cut.dcm", dicom_bytes()[:9000])),
    ]


__all__ = [
    "Hostile",
    "RawAnswer",
    "dicom_bytes",
    "float_dicom",
    "hostile_mix",
    "multipart",
    "nifti_bytes",
    "nifti_header_bomb",
    "non_finite_image",
    "partial_head",
    "png_bomb",
    "raw_exchange",
    "request_head",
    "upload_raw",
]
