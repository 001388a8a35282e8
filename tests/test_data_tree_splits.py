"""Class-folder trees (case, extensions, stems, subjects, pairing) and the stratified, group-aware splits."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fer_dist import CLASSES
from fer_dist.data import splits
from fer_dist.data.tree import (compile_group_regex, pair_by_stem, read_tree, sanitize_key,
                                subject_of)
from fer_dist.errors import UserError


def _image(path: Path, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(path, fmt)
    return path


def _tree(root: Path, folders=("angry", "HAPPY", "Neutral", "sad", "Surprise")) -> Path:
    for i, folder in enumerate(folders):
        _image(root / folder / f"S{i:03d}_x_1.JPG")
    return root


def test_class_names_ignore_case_and_every_extension_is_normalised(tmp_path):
    root = _tree(tmp_path / "t")
    _image(root / "HAPPY" / "b.jpeg")
    _image(root / "HAPPY" / "c.png", "PNG")
    _image(root / "HAPPY" / "d.BMP", "BMP")
    (root / "HAPPY" / "Thumbs.db").write_text("not an image")
    (root / "HAPPY" / ".hidden.jpg").write_text("hidden")
    (root / "README.txt").write_text("a file beside the class folders")
    images = read_tree(root, CLASSES)
    happy = [i for i in images if i.class_index == CLASSES.index("Happy")]
    assert [(i.rel, i.ext, i.key) for i in happy] == [
        ("HAPPY/S001_x_1.JPG", "jpg", "S001_x_1"), ("HAPPY/b.jpeg", "jpg", "b"),
        ("HAPPY/c.png", "png", "c"), ("HAPPY/d.BMP", "bmp", "d")]
    assert Counter(i.class_index for i in images) == {0: 1, 1: 4, 2: 1, 3: 1, 4: 1}


def test_keys_have_no_dots_and_colliding_keys_are_refused(tmp_path):
    assert sanitize_key("img.0 1+x") == "img_0_1_x"
    root = _tree(tmp_path / "t")
    _image(root / "sad" / "a.b.jpg")
    _image(root / "sad" / "a_b.png", "PNG")
    with pytest.raises(UserError, match=r"a\.b\.jpg and .*a_b\.png both give sample key 'a_b'"):
        read_tree(root, CLASSES)


@pytest.mark.parametrize("make, message", [
    (lambda r: None, "folder {root} does not exist"),
    (lambda r: r.mkdir(), "{root} is empty: expected one sub-folder per class"),
    (lambda r: r.write_text("x"), "{root} is a file"),
    (lambda r: (_tree(r), (r / "Disgust").mkdir()), "{root}/Disgust: unknown class folder 'Disgust'"),
    (lambda r: _tree(r, CLASSES[:4]), "has no folder for class Surprise"),
    (lambda r: (_tree(r), [p.unlink() for p in (r / "sad").iterdir()]),
     "class folder {root}/sad has no images"),
])
def test_tree_errors_name_the_path(tmp_path, make, message):
    root = tmp_path / "t"
    make(root)
    with pytest.raises(UserError, match=re.escape(message.format(root=root))):
        read_tree(root, CLASSES, "--visible")


def test_two_folders_of_one_class_are_refused(tmp_path):
    root = _tree(tmp_path / "t")
    _image(root / "Happy" / "other.jpg")
    with pytest.raises(UserError, match=r"HAPPY and .*/Happy are both class 'Happy'"):
        read_tree(root, CLASSES)


def test_extra_classes_are_accepted_when_listed(tmp_path):
    root = _tree(tmp_path / "t")
    _image(root / "Disgust" / "d.jpg")
    images = read_tree(root, CLASSES + ("Disgust",))
    assert [i.class_index for i in images if i.key == "d"] == [5]


def test_subjects_come_from_the_regex_group_or_whole_match(tmp_path):
    image = read_tree(_tree(tmp_path / "t"), CLASSES)[1]
    assert subject_of(image, compile_group_regex(r"^(S\d+)_")) == "S001"
    assert subject_of(image, compile_group_regex(r"^S\d+")) == "S001"
    assert subject_of(image, None) is None
    with pytest.raises(UserError, match=r"stem 'S001_x_1' does not match --group-regex '\^P'"):
        subject_of(image, compile_group_regex("^P"))
    with pytest.raises(UserError, match="not a valid regular expression"):
        compile_group_regex("(S")


def test_pairing_by_stem_not_by_listing_order(tmp_path):
    vis, ir = _tree(tmp_path / "v"), _tree(tmp_path / "i")
    _image(vis / "sad" / "zz_only_visible.jpg")
    _image(ir / "sad" / "aa_only_infrared.jpg")   # sorts first: listing order would mis-pair
    pairing = pair_by_stem(read_tree(vis, CLASSES), read_tree(ir, CLASSES))
    assert [(v.key, i.key) for v, i in pairing.pairs] == [(f"S{i:03d}_x_1",) * 2 for i in range(5)]
    assert [v.key for v in pairing.visible_only] == ["zz_only_visible"]
    assert [i.key for i in pairing.infrared_only] == ["aa_only_infrared"]
    _image(ir / "HAPPY" / "zz_only_visible.jpg")
    with pytest.raises(UserError, match="different class folders"):
        pair_by_stem(read_tree(vis, CLASSES), read_tree(ir, CLASSES))


@pytest.mark.parametrize("text, message", [
    ("0.7,0.2,0.2", "sums to 1.1"), ("0.7;0.3", "not a comma-separated list"),
    ("1", "give 2 (train,val) or 3"), ("0.8,-0.1,0.3", "every ratio must be a positive number"),
    ("0.5,0.2,0.2,0.1", "give 2 (train,val) or 3")])
def test_ratio_errors(text, message):
    with pytest.raises(UserError, match=re.escape(message)):
        splits.parse_ratios(text)


def test_ratios_and_names():
    assert splits.parse_ratios("0.7,0.15,0.15") == (0.7, 0.15, 0.15)
    assert splits.split_names((0.8, 0.2), None) == ["train", "val"]
    assert splits.split_names(None, 3) == ["fold0", "fold1", "fold2"]


def test_integer_targets_are_exact_and_give_viri_like_counts():
    targets = splits.integer_targets([110] * 5, [0.7, 0.15, 0.15])
    assert targets.sum(1).tolist() == [385, 83, 82]
    assert targets.sum(0).tolist() == [110] * 5
    assert set(targets[0]) == {77} and set(targets[1]) <= {16, 17}
    uneven = splits.integer_targets([7, 30, 12, 3, 51], [0.6, 0.25, 0.15])
    assert uneven.sum(0).tolist() == [7, 30, 12, 3, 51]
    assert uneven.sum(1).tolist() == [62, 26, 15]
    assert np.all(np.abs(uneven - np.outer([0.6, 0.25, 0.15], [7, 30, 12, 3, 51])) < 1)


def test_ungrouped_assignment_meets_the_targets_exactly():
    labels = [c for c in range(5) for _ in range(110)]
    where = splits.assign_groups(labels, [str(i) for i in range(550)], 5, [0.7, 0.15, 0.15], seed=3)
    got = np.zeros((3, 5), int)
    np.add.at(got, (where, labels), 1)
    assert (got == splits.integer_targets([110] * 5, [0.7, 0.15, 0.15])).all()


def test_groups_stay_whole_and_classes_stay_balanced():
    rng = np.random.default_rng(0)
    labels, groups = [], []
    for s in range(60):                      # 60 subjects, 1-3 images per class each
        for c in range(5):
            n = int(rng.integers(1, 4))
            labels += [c] * n
            groups += [f"S{s}"] * n
    where = splits.assign_groups(labels, groups, 5, [0.6, 0.2, 0.2], seed=1)
    owner = {}
    for g, s in zip(groups, where):
        assert owner.setdefault(g, s) == s
    labels = np.array(labels)
    for c in range(5):
        share = np.bincount(where[labels == c], minlength=3) / (labels == c).sum()
        assert np.all(np.abs(share - [0.6, 0.2, 0.2]) < 0.08), share


def test_assignment_is_seeded():
    labels = [c for c in range(5) for _ in range(40)]
    groups = [f"S{i % 40}" for i in range(200)]
    a = splits.assign_groups(labels, groups, 5, [0.5, 0.25, 0.25], seed=0)
    assert (a == splits.assign_groups(labels, groups, 5, [0.5, 0.25, 0.25], seed=0)).all()
    assert (a != splits.assign_groups(labels, groups, 5, [0.5, 0.25, 0.25], seed=1)).any()


def test_folds_and_empty_splits_are_explained():
    with pytest.raises(UserError, match=r"--folds 4 is larger than the smallest class \('Sad', 3 samples\)"):
        splits.check_folds(4, [5, 5, 5, 3, 5], CLASSES)
    with pytest.raises(UserError, match="at least 2 folds"):
        splits.check_folds(1, [5] * 5, CLASSES)
    labels = [0, 0, 0, 1, 1, 1]
    where = splits.assign_groups(labels, list("abcdef"), 2, [0.8, 0.1, 0.1], seed=0)
    with pytest.raises(UserError, match="split 'val' would get no 'Angry' sample .* the ratios leave it"):
        splits.check_filled(where, labels, ["train", "val", "test"], CLASSES[:2], grouped=False)
