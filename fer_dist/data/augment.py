"""Batched augmentation on the training device: one random homography per sample, shared by a pair.

Each sample's geometry (horizontal flip, scale, shear, rotation, translation, then perspective
corner jitter, all about the image centre) is one 3x3 matrix drawn from a CPU generator seeded by
the caller, so the output is a pure function of (images, seed) and a resumed run redraws it exactly.
Every image of the list (visible and infrared in fusion) is warped with the same matrix in one
grid_sample call, so pairs stay geometrically matched (the study augmented them independently).

Geometry lives in centred pixel coordinates (x right, y down, origin at the image centre), so
rotation and shear stay rigid on non-square images; positive angles turn counter-clockwise on screen.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from fer_dist.config import AugmentConfig

N_DRAWS = 14   # uniforms per sample: angle, scale, shear, tx, ty, flip, 8 corner offsets


def _affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """Batch of [[a, b, tx], [c, d, ty], [0, 0, 1]]."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    rows = [torch.stack(r, dim=-1) for r in ((a, b, tx), (c, d, ty), (zero, zero, one))]
    return torch.stack(rows, dim=-2)


def rotation(deg: Tensor) -> Tensor:
    """Counter-clockwise on screen (y points down) by `deg` degrees."""
    t = torch.deg2rad(deg)
    return _affine(t.cos(), t.sin(), -t.sin(), t.cos(), torch.zeros_like(t), torch.zeros_like(t))


def corner_homography(src: Tensor, dst: Tensor) -> Tensor:
    """[B, 3, 3] homographies taking the 4 points src[b] ([B, 4, 2]) to dst[b]."""
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zero, one = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=-2)                    # [B, 8, 8]
    h = torch.linalg.solve(a, torch.cat([u, v], dim=-1))       # [B, 8]
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=-1).reshape(-1, 3, 3)


def sample_geometry(cfg: AugmentConfig, batch: int, height: int, width: int,
                    generator: torch.Generator) -> Tensor:
    """[B, 3, 3] float64 forward transforms (source -> output, centred pixel coordinates)."""
    r = torch.rand(batch, N_DRAWS, generator=generator, dtype=torch.float64)
    sym = 2 * r - 1                                            # uniforms in [-1, 1]
    zero, one = torch.zeros(batch, dtype=torch.float64), torch.ones(batch, dtype=torch.float64)
    flip = torch.where(r[:, 5] < 0.5, -one, one) if cfg.hflip else one
    low = 1 / cfg.zoom_out
    scale = low + (cfg.crop_scale - low) * r[:, 1]
    shear = torch.tan(torch.deg2rad(cfg.shear_deg * sym[:, 2]))
    m = _affine(flip * scale, zero, zero, scale, zero, zero)
    m = _affine(one, shear, zero, one, zero, zero) @ m
    m = rotation(cfg.rotation_deg * sym[:, 0]) @ m
    m = _affine(one, zero, zero, one, cfg.translate * width * sym[:, 3],
                cfg.translate * height * sym[:, 4]) @ m
    half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
    corners = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64) * half
    jitter = cfg.perspective * sym[:, 6:].reshape(batch, 4, 2) * (2 * half)
    src = corners.expand(batch, 4, 2)
    return corner_homography(src, src + jitter) @ m


def warp(images: Tensor, forward: Tensor) -> Tensor:
    """Warp float images [B, C, H, W] by forward transforms [B, 3, 3] (bilinear, zeros outside)."""
    b, _, h, w = images.shape
    to_pixels = torch.diag(torch.tensor([w / 2, h / 2, 1.0], dtype=torch.float64))
    to_unit = torch.diag(torch.tensor([2 / w, 2 / h, 1.0], dtype=torch.float64))
    # grid_sample needs, per output location, where to read in the source: the inverse map,
    # expressed in its [-1, 1] coordinates.
    sampling = to_unit @ torch.linalg.inv(forward.cpu().double()) @ to_pixels
    sampling = sampling.to(images.device, torch.float32)
    ys = (torch.arange(h, device=images.device, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=images.device, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    base = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)          # [H, W, 3]
    src = torch.einsum("bij,hwj->bhwi", sampling, base)
    grid = src[..., :2] / src[..., 2:]
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchAugment:
    """Train-time geometry + normalisation, eval-time normalisation, on the tensors' own device."""

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self._mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)

    def _check(self, images: list[Tensor]) -> None:
        if not images:
            raise ValueError("BatchAugment needs at least one image tensor")
        first = images[0]
        for x in images:
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
                raise ValueError(f"expected uint8 [B, 3, H, W] images, got {x.dtype} {tuple(x.shape)}")
            if x.shape != first.shape or x.device != first.device:
                raise ValueError("all images of a batch must share shape and device, got "
                                 f"{tuple(first.shape)} on {first.device} and {tuple(x.shape)} on {x.device}")

    def _normalise(self, x: Tensor) -> Tensor:
        """[0, 1] floats -> (x - mean) / std per channel."""
        mean, std = self._mean.to(x.device), self._std.to(x.device)
        return (x - mean) / std

    def eval(self, images: list[Tensor]) -> list[Tensor]:
        """Normalisation only: float32 tensors of the inputs' shapes."""
        self._check(images)
        return [self._normalise(x.float() / 255) for x in images]

    def train(self, images: list[Tensor], seed: int) -> list[Tensor]:
        """One random geometry per sample, the same for every tensor of the list, then normalisation."""
        if not self.cfg.enabled:
            return self.eval(images)
        self._check(images)
        b, _, h, w = images[0].shape
        generator = torch.Generator().manual_seed(seed % 2**64)   # any int, e.g. a mixed-up hash
        forward = sample_geometry(self.cfg, b, h, w, generator)
        stacked = torch.cat([x.float() / 255 for x in images], dim=1)  # one warp for the whole list
        warped = warp(stacked, forward)
        fmt = (torch.channels_last if images[0].is_contiguous(memory_format=torch.channels_last)
               else torch.contiguous_format)                   # keep the caller's layout
        return [self._normalise(x).contiguous(memory_format=fmt) for x in warped.split(3, dim=1)]
