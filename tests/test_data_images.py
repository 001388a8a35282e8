"""The build's per-file check: the fast header reader agrees with PIL on every kind of file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_dist.data.images import _prepare_with_pil, prepare


def _image(w: int = 37, h: int = 23) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("name, save", [
    ("plain.jpg", lambda im, p: im.save(p, "JPEG")),
    ("progressive.jpg", lambda im, p: im.save(p, "JPEG", progressive=True)),
    # a large EXIF segment before the frame header: the reader must hop over it
    ("exif.jpg", lambda im, p: im.save(p, "JPEG", exif=b"Exif\x00\x00" + bytes(30000))),
    ("grey.jpg", lambda im, p: im.convert("L").save(p, "JPEG")),
    ("rgb.png", lambda im, p: im.save(p, "PNG")),
    ("rgba.png", lambda im, p: im.convert("RGBA").save(p, "PNG")),
    ("image.bmp", lambda im, p: im.save(p, "BMP")),
])
def test_fast_check_equals_pil(tmp_path: Path, name, save):
    path = tmp_path / name
    save(_image(), path)
    fast = prepare(path)
    assert fast == _prepare_with_pil(path, None)
    assert fast.error is None and fast.size == (37, 23)


@pytest.mark.parametrize("fmt, ext", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated_files_are_caught_by_both_paths(tmp_path: Path, fmt, ext):
    path = tmp_path / f"cut.{ext}"
    _image(64, 64).save(path, fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    fast = prepare(path)
    assert fast.error and "truncated" in fast.error
    assert _prepare_with_pil(path, None).error == fast.error


def test_not_an_image_is_reported(tmp_path: Path):
    path = tmp_path / "notes.jpg"
    path.write_text("not an image")
    assert "not a readable image" in prepare(path).error
