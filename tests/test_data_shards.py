"""build-shards and verify-shards end to end: real shards read back by webdataset, tar and the CLI."""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from fer_dist import CLASSES
from fer_dist.cli import main
from fer_dist.atomic import atomic_folder
from fer_dist.data.shards import BuildOptions, build_shards, read_manifest, split_shard_paths
from fer_dist.errors import UserError

REGEX = r"^(S\d+)_"


def read_samples(folder: Path, split: str) -> list[dict]:
    """Every sample of a split through webdataset's own reader (raw bytes, no decoding)."""
    urls = split_shard_paths(folder, read_manifest(folder), split)
    return list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))


def all_samples(folder: Path) -> dict[str, list[dict]]:
    return {split: read_samples(folder, split) for split in read_manifest(folder)["splits"]}


def subjects_by_split(folder: Path) -> dict[str, set[str]]:
    return {split: {json.loads(s["json"])["subject"] for s in samples}
            for split, samples in all_samples(folder).items()}


def test_round_trip_gives_the_same_bytes_and_labels(shards_small, synth_tree):
    seen = {}
    for split, samples in all_samples(shards_small).items():
        for sample in samples:
            meta = json.loads(sample["json"])
            source = synth_tree / "Visible" / meta["source"]
            assert sample["jpg"] == source.read_bytes()                  # untouched bytes
            assert int(sample["cls"]) == meta["class_index"] == CLASSES.index(source.parent.name)
            assert meta["class_name"] == source.parent.name and meta["modality"] == "visible"
            assert meta["subject"] == source.name[:4] and sample["__key__"] == source.stem
            seen[sample["__key__"]] = split
    assert sorted(seen) == sorted(p.stem for p in (synth_tree / "Visible").rglob("*.JPG"))


def test_manifest_counts_shards_and_checksums(shards_small):
    manifest = read_manifest(shards_small)
    assert manifest["format_version"] == 1 and manifest["classes"] == list(CLASSES)
    assert manifest["modality"] == "visible" and manifest["seed"] == 0 and manifest["resize"] is None
    assert manifest["split"] == {"kind": "ratio", "ratios": {"train": 0.7, "val": 0.15, "test": 0.15},
                                 "group_regex": REGEX}
    assert manifest["skipped"] == [] and manifest["unpaired_dropped"] == []
    counts = {split: (s["count"], len(s["shards"])) for split, s in manifest["splits"].items()}
    assert counts == {"train": (60, 8), "val": (10, 2), "test": (10, 2)}
    for split, spec in manifest["splits"].items():
        samples = read_samples(shards_small, split)
        assert Counter(CLASSES[int(s["cls"])] for s in samples) == spec["class_counts"]
        assert sum(s["count"] for s in spec["shards"]) == spec["count"] == len(samples)
        assert max(s["count"] for s in spec["shards"]) - min(s["count"] for s in spec["shards"]) <= 1
        names = [s["name"] for s in spec["shards"]]
        assert names == [f"{split}-{i:06d}.tar" for i in range(len(names))]


def test_tar_lists_members_named_by_dotless_keys(shards_small):
    shard = split_shard_paths(shards_small, read_manifest(shards_small), "val")[0]
    names = subprocess.run(["tar", "tf", shard], check=True, capture_output=True, text=True).stdout.split()
    keys = Counter(n.split(".", 1)[0] for n in names)
    assert set(keys.values()) == {3} and len(keys) == 5
    assert Counter(n.split(".", 1)[1] for n in names) == {"jpg": 5, "cls": 5, "json": 5}


@pytest.mark.parametrize("fixture", ["shards_small", "shards_infrared", "shards_fusion", "shards_combined"])
def test_subjects_never_straddle_splits(fixture, request):
    by_split = subjects_by_split(request.getfixturevalue(fixture))
    assert sum(len(s) for s in by_split.values()) == len(set().union(*by_split.values())) == 8


def test_folds_are_subject_disjoint_and_stratified(shards_folds):
    manifest = read_manifest(shards_folds)
    assert list(manifest["splits"]) == ["fold0", "fold1", "fold2", "fold3"]
    assert manifest["split"] == {"kind": "folds", "k": 4, "group_regex": REGEX}
    for spec in manifest["splits"].values():
        assert spec["class_counts"] == {c: 4 for c in CLASSES}
    assert [len(s) for s in subjects_by_split(shards_folds).values()] == [2, 2, 2, 2]


def test_combined_keeps_both_images_of_a_pair_in_one_split(shards_combined, shards_small):
    where: dict[str, set[str]] = {}
    for split, samples in all_samples(shards_combined).items():
        for sample in samples:
            base, _, suffix = sample["__key__"].rpartition("_")
            assert suffix in ("vis", "ir")
            assert json.loads(sample["json"])["modality"] == {"vis": "visible", "ir": "infrared"}[suffix]
            where.setdefault(base, set()).add(split)
    assert len(where) == 80 and all(len(s) == 1 for s in where.values())
    assert read_manifest(shards_combined)["splits"]["train"]["count"] == 120


def test_fusion_pairs_by_stem_with_both_images_in_one_sample(shards_fusion, synth_tree):
    n = 0
    for samples in all_samples(shards_fusion).values():
        for sample in samples:
            meta = json.loads(sample["json"])
            assert meta["modality"] == "fusion"
            assert Path(meta["source"]).name == Path(meta["ir_source"]).name == sample["__key__"] + ".JPG"
            assert sample["jpg"] == (synth_tree / "Visible" / meta["source"]).read_bytes()
            assert sample["ir.jpg"] == (synth_tree / "Infrared" / meta["ir_source"]).read_bytes()
            n += 1
    assert n == 80


def test_odd_validation_split_and_default_shard_size(shards_odd_val):
    manifest = read_manifest(shards_odd_val)
    counts = {split: (s["count"], len(s["shards"])) for split, s in manifest["splits"].items()}
    assert counts == {"train": (385, 20), "val": (83, 5), "test": (82, 5)}
    assert manifest["split"]["group_regex"] is None and manifest["shard_size"] == 20


def test_resize_shrinks_the_shorter_side_in_parallel_and_deterministically(tmp_path, synth_tree):
    def build(name: str, workers: int) -> dict:
        return build_shards(BuildOptions(out=tmp_path / name, visible=synth_tree / "Visible",
                                         infrared=synth_tree / "Infrared", modality="fusion",
                                         resize=24, workers=workers, shard_size=40))
    two, one = build("two", 2), build("one", 1)
    assert two["splits"] == one["splits"]                            # same bytes, same sha256
    assert two["resize"] == 24 and two["image_size"] == {"min": [24, 24], "max": [24, 24]}
    sample = read_samples(tmp_path / "two", "train")[0]
    for field in ("jpg", "ir.jpg"):
        with Image.open(io.BytesIO(sample[field])) as image:
            assert (image.format, image.size) == ("JPEG", (24, 24))


def test_verify_passes_on_a_good_folder(shards_fusion, capsys):
    assert main(["verify-shards", str(shards_fusion)]) == 0
    out = capsys.readouterr().out
    assert "verify-shards: OK" in out and "Surprise" in out and "total" in out


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    for f in copy.iterdir():
        f.chmod(0o644)
    return copy


def test_verify_reports_a_damaged_shard_and_a_count_mismatch(shards_small, tmp_path, capsys):
    copy = _copy(shards_small, tmp_path)
    manifest = read_manifest(copy)
    shard = copy / manifest["splits"]["val"]["shards"][0]["name"]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    cut = False
    with tarfile.open(shard, "w") as tar:            # same members, the first image cut in half
        for member, data in members:
            if member.name.endswith(".jpg") and not cut:
                data, cut = data[: len(data) // 2], True
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    manifest["splits"]["test"]["class_counts"]["Angry"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "stray-000000.tar").write_bytes(b"")
    assert main(["verify-shards", str(copy)]) == 1
    err = capsys.readouterr().err
    assert f"{shard}: sha256 differs" in err
    assert "cannot decode" in err
    assert "split 'test', class 'Angry'" in err
    assert "stray-000000.tar: shard not listed" in err
    assert "verify-shards: FAILED" in err


def test_read_manifest_errors_name_the_folder(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path} has no manifest.json"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="is not readable JSON"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 7}))
    with pytest.raises(UserError, match="format_version 7, this fer-dist reads 1"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1, "classes": []}))
    with pytest.raises(UserError, match="incomplete .missing modality, splits"):
        read_manifest(tmp_path)


def test_same_inputs_give_byte_identical_shards(tmp_path, synth_tree, shards_small):
    again = build_shards(BuildOptions(out=tmp_path / "again", visible=synth_tree / "Visible",
                                      group_regex=REGEX, shard_size=8, workers=1))
    assert again["splits"] == read_manifest(shards_small)["splits"]
    other = build_shards(BuildOptions(out=tmp_path / "other", visible=synth_tree / "Visible",
                                      group_regex=REGEX, shard_size=8, workers=1, seed=1))
    assert subjects_by_split(tmp_path / "other") != subjects_by_split(shards_small)
    assert other["splits"]["train"]["count"] == 60


def test_atomic_folder_leaves_nothing_or_the_old_folder_on_failure(tmp_path):
    target = tmp_path / "new" / "deeper" / "out"
    with pytest.raises(RuntimeError):
        with atomic_folder(target, False, lambda p: True, "x") as tmp:
            (tmp / "half.tar").write_bytes(b"half")
            raise RuntimeError("disk full")
    assert not (tmp_path / "new").exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(old, True, lambda p: True, "x") as tmp:
            (tmp / "manifest.json").write_text("new")
            raise KeyboardInterrupt
    assert (old / "manifest.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    with atomic_folder(old, True, lambda p: True, "x") as tmp:
        (tmp / "manifest.json").write_text("new")
    assert (old / "manifest.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_resize_keeps_small_images_untouched_and_turns_png_and_bmp_into_png(tmp_path):
    root = tmp_path / "tree"
    for i, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        Image.new("RGB", (40, 30), (40 * i, 90, 200)).save(root / name / f"big{i}.png")
        Image.new("RGB", (30, 40), (90, 40 * i, 20)).save(root / name / f"wide{i}.bmp")
        Image.new("RGB", (16, 16), (9, 9, 40 * i)).save(root / name / f"small{i}.jpeg")
    manifest = build_shards(BuildOptions(out=tmp_path / "out", visible=root, resize=20, workers=2,
                                         split=(0.6, 0.4)))
    assert manifest["image_size"] == {"min": [16, 16], "max": [27, 27]}
    for sample in read_samples(tmp_path / "out", "train") + read_samples(tmp_path / "out", "val"):
        source = root / json.loads(sample["json"])["source"]
        field = {".png": "png", ".bmp": "png", ".jpeg": "jpg"}[source.suffix]
        with Image.open(io.BytesIO(sample[field])) as image:
            assert image.format == {"png": "PNG", "jpg": "JPEG"}[field]
            assert min(image.size) == (16 if field == "jpg" else 20)
        if field == "jpg":
            assert sample["jpg"] == source.read_bytes()
