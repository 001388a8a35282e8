"""Checking and (optionally) shrinking one image file, cheaply enough to run on every file of a build.

Without resizing the bytes pass through untouched, so the check is structural (PIL reads the header;
JPEG and PNG must end with their end marker, which catches truncation); `verify-shards` decodes every
pixel later. With --resize the image is decoded anyway, which checks it fully.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

FORMAT_FIELDS = {"JPEG": "jpg", "PNG": "png", "BMP": "bmp"}
"""PIL format -> shard field; the field follows the bytes, not the file name."""

JPEG_QUALITY = 95


@dataclass(frozen=True)
class Prepared:
    """What a build stores for one file: its field and size, new bytes if resized, or why it is bad."""
    ext: str = ""
    size: tuple[int, int] = (0, 0)
    data: bytes | None = None     # None: store the file's own bytes
    error: str | None = None


def _truncation(data: bytes, fmt: str) -> str | None:
    """Why a JPEG/PNG looks cut short, or None."""
    if fmt == "JPEG" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return "truncated JPEG (no end-of-image marker)"
    if fmt == "PNG" and not data.rstrip(b"\x00").endswith(b"IEND\xaeB`\x82"):
        return "truncated PNG (no IEND chunk)"
    return None


def _shrink(image: Image.Image, fmt: str, short_side: int) -> bytes:
    """Resize so the shorter side is `short_side` (Lanczos); JPEG stays JPEG (q95), others become PNG."""
    w, h = image.size
    scale = short_side / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if fmt == "JPEG" and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    small = image.resize(size, Image.LANCZOS)
    out = io.BytesIO()
    if fmt == "JPEG":
        small.save(out, "JPEG", quality=JPEG_QUALITY)
    else:
        small.save(out, "PNG")
    return out.getvalue()


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(fh) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, hopping from segment to segment."""
    fh.seek(2)
    while True:
        head = fh.read(4)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker, length = head[1], int.from_bytes(head[2:4], "big")
        if marker in _JPEG_SOF:
            frame = fh.read(5)
            return (int.from_bytes(frame[3:5], "big"), int.from_bytes(frame[1:3], "big")) \
                if len(frame) == 5 else None
        if length < 2:
            return None
        fh.seek(length - 2, io.SEEK_CUR)


def _header_and_tail(path: Path) -> tuple[str, tuple[int, int], bytes] | None:
    """Format, size and last 1 KiB of a well-formed JPEG or PNG, read without PIL; None otherwise.

    PIL's generic open costs more than tar's whole per-file work; this reads a few hundred bytes.
    Anything it does not recognise (BMP, odd or damaged headers) goes through PIL instead.
    """
    with open(path, "rb") as fh:
        start = fh.read(24)
        if start[:3] == b"\xff\xd8\xff":
            fmt, size = "JPEG", _jpeg_size(fh)
        elif start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR":
            fmt, size = "PNG", (int.from_bytes(start[16:20], "big"), int.from_bytes(start[20:24], "big"))
        else:
            return None
        if not size or min(size) < 1:
            return None
        return fmt, size, _tail(fh)


def prepare(path: str | Path, resize: int | None = None) -> Prepared:
    """Check one image file and, if it is larger than `resize` px (shorter side), shrink it.

    A pass-through check reads only the header and the tail: the build then reads each file once,
    when it copies the bytes into the shard, as tar would.
    """
    path = Path(path)
    try:
        quick = None if resize else _header_and_tail(path)
        if quick:
            fmt, size, tail = quick
            reason = _truncation(tail, fmt)
            return Prepared(error=reason) if reason else Prepared(FORMAT_FIELDS[fmt], size)
        return _prepare_with_pil(path, resize)
    except UnidentifiedImageError:
        return Prepared(error="not a readable image (unknown or damaged header)")
    except Exception as err:   # any decoder failure on user data is a bad image, reported by path
        return Prepared(error=f"damaged image ({type(err).__name__}: {err})")


def _tail(fh, n: int = 1024) -> bytes:
    """The last `n` bytes of an open file (where JPEG and PNG keep their end markers)."""
    fh.seek(0, io.SEEK_END)
    fh.seek(max(0, fh.tell() - n))
    return fh.read()


def _prepare_with_pil(path: Path, resize: int | None) -> Prepared:
    """The general path: any format PIL knows, BMP decoded, --resize shrinking."""
    with Image.open(path) as image:
        fmt = image.format or ""
        if fmt not in FORMAT_FIELDS:
            return Prepared(error=f"not a JPEG, PNG or BMP image (PIL reads it as {fmt or 'unknown'})")
        if fmt == "BMP":
            image.load()     # BMP has no end marker: decoding it is the check
        else:
            with open(path, "rb") as fh:
                if reason := _truncation(_tail(fh), fmt):
                    return Prepared(error=reason)
        if resize and min(image.size) > resize:
            small = _shrink(image, fmt, resize)
            return Prepared(FORMAT_FIELDS[fmt] if fmt == "JPEG" else "png",
                            Image.open(io.BytesIO(small)).size, small)
        return Prepared(FORMAT_FIELDS[fmt], image.size)


def decode_check(data: bytes) -> str | None:
    """Fully decode image bytes; the error text if that fails (verify-shards uses it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return None
    except Exception as err:
        return f"{type(err).__name__}: {err}"
