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


def _tail(path: Path, n: int = 1024) -> bytes:
    """The last `n` bytes of a file (where JPEG and PNG keep their end markers)."""
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        fh.seek(max(0, fh.tell() - n))
        return fh.read()


def prepare(path: str | Path, resize: int | None = None) -> Prepared:
    """Check one image file and, if it is larger than `resize` px (shorter side), shrink it.

    A pass-through check reads only the header (PIL opens lazily) and the tail: the build then
    reads each file once, when it copies the bytes into the shard, as tar would.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            fmt = image.format or ""
            if fmt not in FORMAT_FIELDS:
                return Prepared(error=f"not a JPEG, PNG or BMP image (PIL reads it as {fmt or 'unknown'})")
            reason = _truncation(_tail(path), fmt)
            if reason:
                return Prepared(error=reason)
            if fmt == "BMP" or (resize and min(image.size) > resize):
                image.load()     # BMP has no end marker; decoding it is as cheap as checking
            if resize and min(image.size) > resize:
                small = _shrink(image, fmt, resize)
                return Prepared(FORMAT_FIELDS[fmt] if fmt == "JPEG" else "png",
                                Image.open(io.BytesIO(small)).size, small)
            return Prepared(FORMAT_FIELDS[fmt], image.size)
    except UnidentifiedImageError:
        return Prepared(error="not a readable image (unknown or damaged header)")
    except Exception as err:   # any decoder failure on user data is a bad image, reported by path
        return Prepared(error=f"damaged image ({type(err).__name__}: {err})")


def decode_check(data: bytes) -> str | None:
    """Fully decode image bytes; the error text if that fails (verify-shards uses it)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
        return None
    except Exception as err:
        return f"{type(err).__name__}: {err}"
