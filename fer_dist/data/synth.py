"""Synthetic VIRI-like data: drawn faces whose expression lives in the mouth, brows and eyes.

Every (subject, class, k) scene is drawn twice: a visible photo "in the wild" (identity, pose,
lighting, clutter) and its infrared twin, the same face and pose as a smooth, noisy thermal map
(warm eyes, mouth and forehead; cool nose and hair). Each image has its own seeded generator, so a
seed always gives the same files. Shapes are soft-edged numpy masks in face coordinates.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from fer_dist import CLASSES
from fer_dist.console import progress
from fer_dist.atomic import atomic_folder
from fer_dist.errors import UserError

MODALITY_FOLDERS = ("Visible", "Infrared")
BACKGROUND_BLUR = 0.02   # depth of field: background blur sigma as a fraction of the image side


@dataclass(frozen=True)
class Expression:
    """What one expression does to the face (all in face-width units)."""
    smile: float       # mouth-corner lift (negative: frown)
    open: float        # mouth opening
    width: float       # mouth width factor
    brow_raise: float
    brow_tilt: float   # inner brow ends down (angry) when positive, up (sad) when negative
    arch: float        # brow arch
    eye_open: float    # eye height / eye width


EXPRESSIONS = {
    "Angry": Expression(-0.07, 0.0, 0.8, -0.07, 0.15, 0.0, 0.32),
    "Happy": Expression(0.26, 0.1, 1.2, 0.02, 0.0, 0.02, 0.36),
    "Neutral": Expression(0.0, 0.0, 1.0, 0.0, 0.0, 0.015, 0.58),
    "Sad": Expression(-0.24, 0.0, 0.95, 0.03, -0.14, 0.0, 0.42),
    "Surprise": Expression(0.0, 0.24, 0.7, 0.16, -0.02, 0.05, 0.95),
}


@dataclass(frozen=True)
class Identity:
    """One subject's look, fixed across their images."""
    face_ratio: float
    eye_spacing: float
    eye_y: float
    eye_size: float
    brow_thick: float
    mouth_y: float
    mouth_width: float
    lip_thick: float
    hairline: float
    hair_len: float
    skin: np.ndarray
    hair: np.ndarray
    iris: np.ndarray
    lips: np.ndarray
    clothes: np.ndarray
    rest: Expression   # the subject's resting-face offsets, added to every expression


@dataclass(frozen=True)
class SynthSummary:
    """What `generate` wrote."""
    out: Path
    subjects: int
    size: int
    seed: int
    images_per_class: int
    images_per_modality: int
    seconds: float


@dataclass
class Layer:
    """A soft mask with its visible colour and its temperature (None: invisible in that modality)."""
    mask: np.ndarray
    rgb: np.ndarray | None
    temp: np.ndarray | float | None


def draw_identity(rng: np.random.Generator) -> Identity:
    """A random subject: face shape, feature placement, skin, hair and clothing colours."""
    tone = rng.uniform(0.25, 0.95)
    skin = np.array([0.45 + 0.5 * tone, 0.3 + 0.5 * tone, 0.2 + 0.45 * tone]) * rng.uniform(0.9, 1.05, 3)
    rest = Expression(rng.normal(0, 0.025), 0.0, 1.0, rng.normal(0, 0.02), rng.normal(0, 0.025),
                      0.0, rng.normal(0, 0.05))
    return Identity(
        face_ratio=rng.uniform(1.15, 1.4), eye_spacing=rng.uniform(0.33, 0.43),
        eye_y=rng.uniform(-0.2, -0.08), eye_size=rng.uniform(0.85, 1.15),
        brow_thick=rng.uniform(0.7, 1.4), mouth_y=rng.uniform(0.48, 0.62),
        mouth_width=rng.uniform(0.85, 1.15), lip_thick=rng.uniform(0.7, 1.3),
        hairline=rng.uniform(-0.85, -0.62), hair_len=rng.uniform(-0.3, 0.9),
        skin=np.clip(skin, 0, 1), hair=rng.uniform(0.02, 0.6) * rng.uniform(0.6, 1.0, 3),
        iris=rng.uniform(0.05, 0.5, 3),
        lips=np.clip(skin * [0.8, 0.45, 0.45] + rng.uniform(0, 0.1), 0, 1),
        clothes=rng.uniform(0, 1, 3), rest=rest)


def draw_expression(name: str, ident: Identity, rng: np.random.Generator) -> Expression:
    """The class's expression at a random intensity, shifted by the subject's resting face."""
    base, full = EXPRESSIONS["Neutral"], EXPRESSIONS[name]
    t = rng.uniform(0.8, 1.15)
    mix = {f: getattr(base, f) + t * (getattr(full, f) - getattr(base, f)) + getattr(ident.rest, f)
           for f in ("smile", "brow_raise", "brow_tilt", "eye_open")}
    mix["eye_open"] = max(0.15, mix["eye_open"])
    return replace(full, open=t * full.open, width=base.width + t * (full.width - base.width), **mix)


def _soft(d: np.ndarray, px: float) -> np.ndarray:
    """Anti-aliased inside mask from a signed distance (positive inside), `px` = one pixel."""
    return np.clip(d / px + 0.5, 0.0, 1.0)


def _ellipse(u, v, cu, cv, a, b, px) -> np.ndarray:
    """Soft mask of the ellipse centred (cu, cv) with half-axes a, b."""
    r = np.sqrt(((u - cu) / a) ** 2 + ((v - cv) / b) ** 2)
    return _soft((1.0 - r) * min(a, b), px)


def _capsule(u, v, p, q, radius, px) -> np.ndarray:
    """A thick segment from p to q: brows, nose ridge, neck."""
    pu, pv, du, dv = u - p[0], v - p[1], q[0] - p[0], q[1] - p[1]
    t = np.clip((pu * du + pv * dv) / (du * du + dv * dv), 0.0, 1.0)
    return _soft(radius - np.hypot(pu - t * du, pv - t * dv), px)


def _eye_layers(u, v, px, ident: Identity, expr: Expression, cu: float, gaze: float) -> list[Layer]:
    cv, a = ident.eye_y, 0.14 * ident.eye_size
    b = a * expr.eye_open
    white = _ellipse(u, v, cu, cv, a, b, px)
    iris_r = 0.06 * ident.eye_size
    return [
        Layer(_ellipse(u, v, cu, cv, 1.6 * a, 0.09, px), None, 0.73),
        Layer(_ellipse(u, v, cu, cv, a + 0.02, b + 0.02, px), ident.hair * 0.5, None),
        Layer(white, np.array([0.93, 0.92, 0.88]), 0.78),
        Layer(white * _ellipse(u, v, cu + gaze, cv, iris_r, iris_r, px), ident.iris, None),
        Layer(white * _ellipse(u, v, cu + gaze, cv, 0.45 * iris_r, 0.45 * iris_r, px),
              np.array([0.03, 0.03, 0.03]), None),
    ]


def _brow_layer(u, v, px, ident: Identity, expr: Expression, side: int, shift: float) -> Layer:
    es, y = ident.eye_spacing, ident.eye_y - 0.17 - expr.brow_raise
    inner = (side * (es - 0.11) + shift, y + expr.brow_tilt)
    mid = (side * (es + 0.01) + shift, y - expr.arch)
    outer = (side * (es + 0.14) + shift, y - 0.5 * expr.brow_tilt)
    r = 0.035 * ident.brow_thick
    mask = np.maximum(_capsule(u, v, inner, mid, r, px), _capsule(u, v, mid, outer, r, px))
    return Layer(mask, ident.hair * 0.5, 0.57)


def _mouth_layers(u, v, px, ident: Identity, expr: Expression, shift: float) -> list[Layer]:
    w = 0.32 * ident.mouth_width * expr.width
    x = (u - shift) / w
    line = ident.mouth_y + expr.smile * (0.5 - x ** 2)
    opening = expr.open * np.clip(1 - x ** 2, 0, None)
    top, bottom, lip = line - 0.25 * opening, line + opening, 0.04 * ident.lip_thick
    across = _soft(w - np.abs(u - shift), px)
    lips = _soft(v - (top - lip), px) * _soft(bottom + lip - v, px) * across
    inside = _soft(v - top, px) * _soft(bottom - v, px) * across
    layers = [Layer(lips, ident.lips, 0.655), Layer(inside, np.array([0.2, 0.05, 0.05]), 0.78)]
    if expr.smile > 0.05:
        teeth = inside * _soft(top + 0.45 * (bottom - top) - v, px)
        layers.append(Layer(teeth, np.array([0.95, 0.93, 0.85]), 0.68))
    return layers


def _head_layers(u, v, px, ident: Identity, shade: np.ndarray) -> list[Layer]:
    hr = ident.face_ratio
    face = _ellipse(u, v, 0, 0, 1, hr, px)
    face_temp = 0.62 + 0.08 * np.clip((-v / hr - 0.2) / 0.5, 0, 1)   # the forehead is warmest
    return [
        Layer(_ellipse(u, v, 0, hr + 1.5, 1.7, 0.9, px), ident.clothes, 0.35),
        Layer(_capsule(u, v, (0, 0.8 * hr), (0, hr + 0.8), 0.38, px), ident.skin * 0.8, 0.6),
        Layer(_ellipse(u, v, 0, -0.15 * hr, 1.12, 1.05 * hr, px) * _soft(ident.hair_len - v, px),
              ident.hair, 0.3),
        Layer(np.maximum(_ellipse(u, v, -1, -0.05, 0.12, 0.22, px),
                         _ellipse(u, v, 1, -0.05, 0.12, 0.22, px)), ident.skin * 0.9, 0.55),
        Layer(face, ident.skin * shade[..., None], face_temp),
        Layer(face * _soft(ident.hairline * hr - v, px), ident.hair, 0.35),
    ]


def _nose_layers(u, v, px, ident: Identity, shift: float) -> list[Layer]:
    tip = 1.6 * shift
    return [
        Layer(_ellipse(u, v, 1.5 * shift, 0.18, 0.11, 0.16, px), None, 0.48),
        Layer(_capsule(u, v, (shift, -0.05), (tip, 0.24), 0.035, px), ident.skin * 0.85, None),
        Layer(np.maximum(_ellipse(u, v, tip - 0.055, 0.27, 0.03, 0.018, px),
                         _ellipse(u, v, tip + 0.055, 0.27, 0.03, 0.018, px)), ident.skin * 0.45, 0.7),
    ]


def face_layers(u, v, px, ident: Identity, expr: Expression, rng: np.random.Generator,
                light: np.ndarray) -> list[Layer]:
    """Every face part, back to front, in face coordinates (u right, v down, face width = 2)."""
    shift, gaze = rng.uniform(-0.12, 0.12), rng.uniform(-0.03, 0.03)
    r2 = u ** 2 + (v / ident.face_ratio) ** 2
    shade = np.clip(1.0 - 0.3 * r2 ** 2 + 0.25 * (light[0] * u + light[1] * v / ident.face_ratio),
                    0.3, 1.3)
    layers = _head_layers(u, v, px, ident, shade)
    for side in (-1, 1):
        layers += _eye_layers(u, v, px, ident, expr, side * ident.eye_spacing + shift, gaze)
        layers.append(_brow_layer(u, v, px, ident, expr, side, shift))
    return layers + _nose_layers(u, v, px, ident, shift) + _mouth_layers(u, v, px, ident, expr, shift)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid resized up with bicubic interpolation."""
    grid = Image.fromarray(rng.uniform(0, 1, (cells, cells)).astype(np.float32))
    return np.asarray(grid.resize((size, size), Image.BICUBIC), dtype=np.float32)


def background_layers(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, size: int) -> list[Layer]:
    """A cluttered scene: a textured gradient wall plus random boxes, discs and striped panels."""
    px = 1.0 / size
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.clip(0.5 + (x - 0.5) * np.cos(angle) + (y - 0.5) * np.sin(angle), 0, 1)
    wall = c0 + ramp[..., None] * (c1 - c0) + 0.15 * (_smooth_noise(rng, size, 6)[..., None] - 0.5)
    layers = [Layer(np.ones_like(x), wall, 0.12 + 0.15 * _smooth_noise(rng, size, 4))]
    for _ in range(rng.integers(4, 10)):
        cx, cy, w, h = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.3), rng.uniform(0.04, 0.3)
        kind = rng.integers(3)
        if kind == 0:
            mask = _soft(np.minimum(w - np.abs(x - cx), h - np.abs(y - cy)), px)
        elif kind == 1:
            mask = _ellipse(x, y, cx, cy, w, w, px)
        else:
            stripes = np.sin((x * np.cos(angle) + y * np.sin(angle)) * rng.uniform(20, 60)) > 0
            mask = _soft(np.minimum(w - np.abs(x - cx), h - np.abs(y - cy)), px) * stripes
        layers.append(Layer(mask, rng.uniform(0, 1, 3), rng.uniform(0.05, 0.65)))
    return layers


def _composite(layers: list[Layer], field: str, start: np.ndarray) -> np.ndarray:
    """Paint the layers' `rgb` or `temp` values back to front through their masks."""
    canvas = start
    for layer in layers:
        value = getattr(layer, field)
        if value is None:
            continue
        mask = layer.mask if canvas.ndim == 2 else layer.mask[..., None]
        canvas = canvas + mask * (value - canvas)
    return canvas


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the first two axes (edges extended); plain numpy, no BLAS threads."""
    r = max(1, int(round(3 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    rest = [(0, 0)] * (img.ndim - 2)
    n, m = img.shape[:2]
    p = np.pad(img, [(r, r), (0, 0)] + rest, mode="edge")
    img = sum(w * p[i:i + n] for i, w in enumerate(k))
    p = np.pad(img, [(0, 0), (r, r)] + rest, mode="edge")
    return sum(w * p[:, i:i + m] for i, w in enumerate(k))


_IRON = np.array([[0, 0, 0], [0.2, 0, 0.45], [0.75, 0.1, 0.35], [0.95, 0.45, 0], [1, 0.85, 0.2],
                  [1, 1, 0.9]])
_IRON_AT = np.array([0, 0.2, 0.45, 0.7, 0.9, 1.0])


def thermal_image(temp: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Optics blur, a coarse noisy sensor with column stripes, drifting calibration, iron palette."""
    size = temp.shape[0]
    t = _blur(temp, 0.032 * size)
    t = t * rng.uniform(0.85, 1.15) + rng.uniform(-0.06, 0.06)
    low = max(8, size // 2)
    sensor = np.asarray(Image.fromarray(t.astype(np.float32)).resize((low, low), Image.BOX))
    sensor = sensor + rng.normal(0, 0.055, sensor.shape) + rng.normal(0, 0.02, (1, low))
    t = np.asarray(Image.fromarray(sensor.astype(np.float32)).resize((size, size),
                                                                                 Image.BILINEAR))
    t = np.clip(t, 0, 1)
    rgb = np.stack([np.interp(t, _IRON_AT, _IRON[:, c]) for c in range(3)], axis=-1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _pose(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Face coordinates (u, v) for a jittered position, scale and roll; returns (u, v, radius)."""
    radius = 0.29 * rng.uniform(0.88, 1.08)
    cx, cy = 0.5 + rng.normal(0, 0.04), 0.47 + rng.normal(0, 0.04)
    roll = np.deg2rad(rng.uniform(-12, 12))
    dx, dy = x - cx, y - cy
    return ((np.cos(roll) * dx + np.sin(roll) * dy) / radius,
            (-np.sin(roll) * dx + np.cos(roll) * dy) / radius, radius)


def _photo(back: list[Layer], face: list[Layer], rng: np.random.Generator, x, y,
           light: np.ndarray) -> np.ndarray:
    """Visible rendering: an out-of-focus background, the face, lighting, colour cast and noise."""
    size = x.shape[0]
    wall = _blur(_composite(back, "rgb", np.zeros((size, size, 3), np.float32)), BACKGROUND_BLUR * size)
    rgb = _composite(face, "rgb", wall)
    gain = rng.uniform(0.7, 1.2) * rng.uniform(0.92, 1.08, 3)
    rgb = rgb * gain * (1 + 0.2 * (light[0] * (x - 0.5) + light[1] * (y - 0.5)))[..., None]
    rgb = np.clip(rgb + rng.normal(0, 0.012, rgb.shape), 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def render_pair(ident: Identity, class_name: str, rng: np.random.Generator,
                size: int) -> tuple[np.ndarray, np.ndarray]:
    """One scene drawn as a visible photo and its infrared twin (HxWx3 uint8 each)."""
    grid = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = np.meshgrid(grid, grid)
    u, v, radius = _pose(rng, x, y)
    light = rng.normal(0, 1, 2)
    back = background_layers(rng, x, y, size)
    face = face_layers(u, v, 1.0 / (radius * size), ident, draw_expression(class_name, ident, rng),
                       rng, light)
    visible = _photo(back, face, rng, x, y, light)
    return visible, thermal_image(_composite(back + face, "temp", np.zeros((size, size), np.float32)), rng)


def _stem(subject: int, subjects: int, class_name: str, k: int) -> str:
    return f"S{subject + 1:0{max(3, len(str(subjects)))}d}_{class_name}_{k + 1}"


def _is_synth_folder(folder: Path) -> bool:
    return {p.name for p in folder.iterdir()} <= set(MODALITY_FOLDERS)


def _check_args(subjects: int, size: int, images_per_class: int) -> None:
    if subjects < 1:
        raise UserError(f"--subjects {subjects}: need at least 1 subject")
    if size < 24:
        raise UserError(f"--size {size}: images must be at least 24 px to draw a face")
    if images_per_class < 1:
        raise UserError(f"--images-per-class {images_per_class}: need at least 1")


def generate(out: Path, subjects: int = 110, size: int = 128, seed: int = 0,
             images_per_class: int = 1, overwrite: bool = False) -> SynthSummary:
    """Write OUT/Visible/<Class>/<stem>.JPG and the same stems under OUT/Infrared (atomically)."""
    _check_args(subjects, size, images_per_class)
    out, t0 = Path(out), time.perf_counter()
    total = subjects * len(CLASSES) * images_per_class
    what = "a synth output folder (Visible/, Infrared/)"
    with atomic_folder(out, overwrite, _is_synth_folder, what) as tmp:
        for folder in MODALITY_FOLDERS:
            for name in CLASSES:
                (tmp / folder / name).mkdir(parents=True)
        with progress("synth", total, "pairs") as bar:
            for s in range(subjects):
                ident = draw_identity(np.random.default_rng([seed, 0, s]))
                for c, name in enumerate(CLASSES):
                    for k in range(images_per_class):
                        rng = np.random.default_rng([seed, 1, s, c, k])
                        stem = _stem(s, subjects, name, k)
                        for folder, pixels in zip(MODALITY_FOLDERS, render_pair(ident, name, rng, size)):
                            Image.fromarray(pixels).save(tmp / folder / name / f"{stem}.JPG",
                                                         "JPEG", quality=92)
                        bar.advance()
    return SynthSummary(out, subjects, size, seed, images_per_class, total, time.perf_counter() - t0)
