"""Shared, session-scoped test data: small synthetic trees and shard folders built with the real builder.

Every fixture is built once per test session, on first use, under pytest's temporary directory.
Treat them as read-only: copy a folder first if a test needs to change it.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from fer_dist.data.shards import BuildOptions, build_shards
from fer_dist.data.synth import generate

SUBJECT_REGEX = r"^(S\d+)_"


@pytest.fixture(scope="session")
def synth_tree(tmp_path_factory) -> Path:
    """Synthetic VIRI-like tree at 32 px: 8 subjects x 5 classes x 2 images = 80 pairs.

    Layout: <root>/Visible/<Class>/S001_Happy_1.JPG ... and the same stems under <root>/Infrared.
    """
    root = tmp_path_factory.mktemp("synth") / "tree"
    generate(root, subjects=8, size=32, seed=0, images_per_class=2)
    return root


def _build(tmp_path_factory, tree: Path, name: str, **options) -> Path:
    out = tmp_path_factory.mktemp("shards") / name
    build_shards(BuildOptions(out=out, visible=tree / "Visible", infrared=tree / "Infrared",
                              workers=1, **options))
    return out


@pytest.fixture(scope="session")
def shards_small(tmp_path_factory, synth_tree) -> Path:
    """Visible shards of `synth_tree`: 0.7/0.15/0.15, subject-disjoint, shard size 8.

    train 60 samples in 8 shards, val 10 (2 shards), test 10 (2 shards); pass-through 32 px JPEGs.
    """
    return _build(tmp_path_factory, synth_tree, "visible", modality="visible",
                  group_regex=SUBJECT_REGEX, shard_size=8)


@pytest.fixture(scope="session")
def shards_infrared(tmp_path_factory, synth_tree) -> Path:
    """Infrared shards of `synth_tree`, split exactly like `shards_small` (same subjects per split)."""
    return _build(tmp_path_factory, synth_tree, "infrared", modality="infrared",
                  group_regex=SUBJECT_REGEX, shard_size=8)


@pytest.fixture(scope="session")
def shards_fusion(tmp_path_factory, synth_tree) -> Path:
    """Fusion shards of `synth_tree`: one sample per pair (<key>.jpg visible + <key>.ir.jpg), 80 samples,
    subject-disjoint 0.7/0.15/0.15, shard size 8."""
    return _build(tmp_path_factory, synth_tree, "fusion", modality="fusion",
                  group_regex=SUBJECT_REGEX, shard_size=8)


@pytest.fixture(scope="session")
def shards_combined(tmp_path_factory, synth_tree) -> Path:
    """Combined shards of `synth_tree`: 160 independent samples (keys end in _vis / _ir), both images
    of a pair in the same split, subject-disjoint 0.7/0.15/0.15, shard size 8."""
    return _build(tmp_path_factory, synth_tree, "combined", modality="combined",
                  group_regex=SUBJECT_REGEX, shard_size=8)


@pytest.fixture(scope="session")
def shards_folds(tmp_path_factory, synth_tree) -> Path:
    """Visible shards of `synth_tree` as 4 subject-disjoint folds (fold0..fold3, 20 samples each)."""
    return _build(tmp_path_factory, synth_tree, "folds", modality="visible",
                  group_regex=SUBJECT_REGEX, folds=4, shard_size=8)


@pytest.fixture(scope="session")
def synth_tree_viri(tmp_path_factory) -> Path:
    """VIRI-sized synthetic tree at 32 px: 110 subjects x 5 classes x 1 image = 550 pairs."""
    root = tmp_path_factory.mktemp("synth_viri") / "tree"
    generate(root, subjects=110, size=32, seed=0, images_per_class=1)
    return root


@pytest.fixture(scope="session")
def shards_odd_val(tmp_path_factory, synth_tree_viri) -> Path:
    """Visible shards of `synth_tree_viri`, 0.7/0.15/0.15 stratified by class (no subject grouping),
    default shard size: train 385 (20 shards), val 83 (odd, 5 shards), test 82 (5 shards)."""
    return _build(tmp_path_factory, synth_tree_viri, "odd-val", modality="visible")
