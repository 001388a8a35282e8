"""Batched augmentation: reproducible, shared geometry for pairs, and geometry that does what it says."""
from __future__ import annotations

import math

import pytest
import torch

from fer_dist.config import AugmentConfig
from fer_dist.data.augment import BatchAugment, corner_homography, rotation, sample_geometry, warp

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _images(batch: int = 6, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, height, width), generator=gen, dtype=torch.uint8)


def _still(**changes) -> AugmentConfig:
    """A config whose geometry is the identity unless `changes` turns something on."""
    base = dict(rotation_deg=0.0, zoom_out=1.0, crop_scale=1.0, perspective=0.0, shear_deg=0.0,
                translate=0.0, hflip=False, mean=MEAN, std=STD)
    return AugmentConfig(**{**base, **changes})


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_same_seed_same_output_different_seed_different():
    images = _images()
    aug = BatchAugment(AugmentConfig(mean=MEAN, std=STD))
    first = aug.train([images], seed=7)[0]
    again = BatchAugment(AugmentConfig(mean=MEAN, std=STD)).train([images], seed=7)[0]
    other = aug.train([images], seed=8)[0]
    assert torch.equal(first, again)
    assert (first - other).abs().amax(dim=(1, 2, 3)).min() > 0.1   # every sample differs


def test_shapes_dtypes_and_eval_normalisation():
    images = _images(batch=3, height=40, width=48)
    aug = BatchAugment(AugmentConfig(mean=MEAN, std=STD))
    for out in aug.train([images, images], seed=1) + aug.eval([images]):
        assert out.shape == (3, 3, 40, 48) and out.dtype == torch.float32
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert torch.allclose(aug.eval([images])[0], expected, atol=1e-6)


def test_channels_last_kept_and_huge_seeds_accepted():
    images = _images()
    aug = BatchAugment(AugmentConfig(mean=MEAN, std=STD))
    plain = aug.train([images], seed=2**70 + 3)[0]
    last = aug.train([images.contiguous(memory_format=torch.channels_last)], seed=2**70 + 3)[0]
    assert last.is_contiguous(memory_format=torch.channels_last) and plain.is_contiguous()
    assert torch.allclose(plain, last, atol=1e-6)
    assert torch.equal(plain, aug.train([images], seed=3)[0])     # seeds are taken modulo 2**64


def test_zero_magnitudes_are_the_identity():
    images = _images()
    aug = BatchAugment(_still())
    assert torch.allclose(aug.train([images], seed=3)[0], aug.eval([images])[0], atol=1e-5)


def test_disabled_train_equals_eval():
    images = _images()
    aug = BatchAugment(AugmentConfig(enabled=False, mean=MEAN, std=STD))
    assert torch.equal(aug.train([images], seed=3)[0], aug.eval([images])[0])


def test_hflip_only_mirrors_exactly():
    images = _images(batch=16)
    aug = BatchAugment(_still(hflip=True))
    out, plain = aug.train([images], seed=5)[0], aug.eval([images])[0]
    flipped = 0
    for o, p in zip(out, plain):
        if torch.allclose(o, p.flip(-1), atol=1e-5):
            flipped += 1
        else:
            assert torch.allclose(o, p, atol=1e-5)
    assert 0 < flipped < 16


def test_pair_members_get_identical_geometry():
    images = _images()
    aug = BatchAugment(AugmentConfig(mean=MEAN, std=STD, perspective=0.2, zoom_out=1.5))
    a, b = aug.train([images, images.clone()], seed=11)
    assert torch.equal(a, b)
    # an image and its inverse: bilinear warping is linear, so the two warps add up to the warp of
    # an all-white image (1 inside the warped frame, less where the frame leaves the picture)
    inverted = 255 - images
    a, b = aug.train([images, inverted], seed=11)
    coverage = aug.train([torch.full_like(images, 255)], seed=11)[0]
    assert torch.allclose(_unnormalise(a) + _unnormalise(b), _unnormalise(coverage), atol=1e-5)
    assert _unnormalise(coverage).min() < 0.5           # the geometry did move the frame


def _bright_pixel(size: int, row: int, col: int) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size)
    image[..., row, col] = 1.0
    return image


def test_rotation_by_90_moves_a_pixel_where_expected():
    # 33 px: centre pixel 16; a pixel 10 px right of the centre turns counter-clockwise to 10 px above
    out = warp(_bright_pixel(33, 16, 26), rotation(torch.tensor([90.0], dtype=torch.float64)))
    assert torch.allclose(out, _bright_pixel(33, 6, 16), atol=1e-5)


def test_random_rotation_keeps_radius_and_stays_in_range():
    image = (_bright_pixel(33, 16, 26) * 255).to(torch.uint8).expand(12, 3, 33, 33).contiguous()
    aug = BatchAugment(_still(rotation_deg=30.0, mean=[0, 0, 0], std=[1, 1, 1]))
    out = aug.train([image], seed=2)[0][:, 0]
    angles = []
    for sample in out:
        row, col = divmod(int(sample.argmax()), 33)
        dx, dy = col - 16, 16 - row                      # dy up on screen
        assert abs(math.hypot(dx, dy) - 10) <= 1.0
        angles.append(math.degrees(math.atan2(dy, dx)))
    assert all(abs(a) <= 30 + 6 for a in angles)
    assert max(angles) - min(angles) > 15               # the angle is drawn per sample


def test_scale_drawn_between_zoom_out_and_crop_scale():
    gen = torch.Generator().manual_seed(0)
    m = sample_geometry(_still(zoom_out=2.0, crop_scale=1.5), 200, 32, 32, gen)
    scale = m[:, 0, 0]
    assert torch.allclose(m[:, 1, 1], scale) and torch.all(m[:, 0, 1] == 0) and torch.all(m[:, :2, 2] == 0)
    assert scale.min() >= 0.5 and scale.max() <= 1.5 and scale.max() - scale.min() > 0.8


def test_corner_homography_maps_corners():
    gen = torch.Generator().manual_seed(0)
    src = torch.tensor([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=torch.float64).expand(5, 4, 2) * 16
    dst = src + 4 * (torch.rand(5, 4, 2, generator=gen, dtype=torch.float64) - 0.5)
    h = corner_homography(src, dst)
    mapped = torch.cat([src, torch.ones(5, 4, 1, dtype=torch.float64)], -1) @ h.transpose(1, 2)
    assert torch.allclose(mapped[..., :2] / mapped[..., 2:], dst, atol=1e-9)


def test_rejects_mismatched_or_non_uint8_batches():
    aug = BatchAugment(AugmentConfig())
    with pytest.raises(ValueError, match="uint8"):
        aug.train([torch.zeros(2, 3, 16, 16)], seed=0)
    with pytest.raises(ValueError, match="share shape"):
        aug.train([_images(2, 16, 16), _images(2, 16, 24)], seed=0)
