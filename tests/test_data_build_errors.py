"""Every bad input to build-shards: one clear message naming the path, exit 2, and no output folder."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fer_dist.cli import main
from fer_dist.data.shards import read_manifest

REGEX = r"^(S\d+)_"


@pytest.fixture
def trees(tmp_path, synth_tree) -> Path:
    """A private, writable copy of the small synthetic tree (Visible/ and Infrared/)."""
    copy = tmp_path / "in"
    shutil.copytree(synth_tree, copy)
    return copy


def build(trees: Path, out: Path, *flags: str, modality: str = "visible") -> int:
    return main(["build-shards", "--visible", str(trees / "Visible"), "--infrared",
                 str(trees / "Infrared"), "--modality", modality, "--out", str(out),
                 "--workers", "1", *flags])


def assert_refused(code: int, capsys, out: Path, *fragments: str) -> str:
    """Exit 2, one error line holding every fragment, and nothing at or beside `out`."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists() or out.is_file()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]
    return err


def test_missing_and_empty_input_folders(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["build-shards", "--visible", str(tmp_path / "nowhere"), "--out", str(out)])
    assert_refused(code, capsys, out, f"--visible folder {tmp_path / 'nowhere'} does not exist")
    (tmp_path / "empty").mkdir()
    code = main(["build-shards", "--visible", str(tmp_path / "empty"), "--out", str(out)])
    assert_refused(code, capsys, out, f"--visible {tmp_path / 'empty'} is empty")
    code = main(["build-shards", "--modality", "fusion", "--visible", str(tmp_path), "--out", str(out)])
    assert_refused(code, capsys, out, "--modality fusion needs --infrared DIR")


def test_class_folder_without_images(trees, tmp_path, capsys):
    for f in (trees / "Infrared" / "Neutral").iterdir():
        f.unlink()
    (trees / "Infrared" / "Neutral" / "notes.txt").write_text("no images here")
    out = tmp_path / "out"
    assert_refused(build(trees, out, modality="combined"), capsys, out,
                   f"class folder {trees / 'Infrared' / 'Neutral'} has no images")


def test_unknown_class_folder_unless_listed(trees, tmp_path, capsys):
    (trees / "Visible" / "disgust").mkdir()
    for f in (trees / "Visible" / "Sad").iterdir():
        shutil.copy(f, trees / "Visible" / "disgust" / f.name.replace("Sad", "Disgust"))
    out = tmp_path / "out"
    assert_refused(build(trees, out), capsys, out,
                   f"{trees / 'Visible' / 'disgust'}: unknown class folder 'disgust'", "--classes")
    assert build(trees, out, "--classes", "Angry,Happy,Neutral,Sad,Surprise,Disgust") == 0
    manifest = read_manifest(out)
    assert manifest["classes"][-1] == "Disgust"
    assert sum(s["class_counts"]["Disgust"] for s in manifest["splits"].values()) == 16


def test_corrupt_and_truncated_images_are_listed_then_skipped(trees, tmp_path, capsys):
    garbage = trees / "Visible" / "Happy" / "S002_Happy_1.JPG"
    garbage.write_bytes(b"this is not a picture")
    truncated = trees / "Infrared" / "Sad" / "S005_Sad_2.JPG"
    truncated.write_bytes(truncated.read_bytes()[:-40])        # the end of the scan is lost
    out = tmp_path / "out"
    assert_refused(build(trees, out, "--group-regex", REGEX, modality="fusion"), capsys, out,
                   "2 images cannot be read", f"{garbage} (not a readable image",
                   f"{truncated} (truncated JPEG", "--skip-bad")
    assert build(trees, out, "--group-regex", REGEX, "--skip-bad", modality="fusion") == 0
    manifest = read_manifest(out)
    skipped = {(d["modality"], d["source"]): d["reason"] for d in manifest["skipped"]}
    assert set(skipped) == {("visible", "Happy/S002_Happy_1.JPG"), ("infrared", "Happy/S002_Happy_1.JPG"),
                            ("infrared", "Sad/S005_Sad_2.JPG"), ("visible", "Sad/S005_Sad_2.JPG")}
    assert "twin" in skipped[("infrared", "Happy/S002_Happy_1.JPG")]
    assert sum(s["count"] for s in manifest["splits"].values()) == 78
    assert main(["verify-shards", str(out)]) == 0


def test_unpaired_files_in_fusion_are_listed_then_dropped(trees, tmp_path, capsys):
    lonely = trees / "Infrared" / "Angry" / "S001_Angry_1.JPG"
    lonely.rename(trees / "Infrared" / "Angry" / "S001_Angry_9.JPG")
    out = tmp_path / "out"
    assert_refused(build(trees, out, modality="fusion"), capsys, out, "2 files have no twin",
                   str(trees / "Visible" / "Angry" / "S001_Angry_1.JPG"), "S001_Angry_9.JPG",
                   "--allow-unpaired")
    assert build(trees, out, "--allow-unpaired", modality="fusion") == 0
    assert read_manifest(out)["unpaired_dropped"] == [
        {"modality": "visible", "source": "Angry/S001_Angry_1.JPG"},
        {"modality": "infrared", "source": "Angry/S001_Angry_9.JPG"}]
    assert "unpaired dropped: 2 files" in capsys.readouterr().out


@pytest.mark.parametrize("flags, fragment", [
    (["--split", "0.7,0.2,0.2"], "--split 0.7,0.2,0.2 sums to 1.1; the ratios must sum to 1"),
    (["--split", "0.96,0.02,0.02"], "split 'val' would get no 'Angry' sample (16 in all)"),
    (["--group-regex", REGEX, "--split", "0.9,0.05,0.05"], "its subject groups (--group-regex)"),
    (["--folds", "17"], "--folds 17 is larger than the smallest class ('Angry', 16 samples)"),
    (["--group-regex", REGEX, "--folds", "9"], "its subject groups (--group-regex) cannot fill every split"),
    (["--group-regex", "^P"], "does not match --group-regex '^P'"),
    (["--shard-size", "0"], "--shard-size 0: must be at least 1"),
])
def test_impossible_splits_and_flags(trees, tmp_path, capsys, flags, fragment):
    out = tmp_path / "out"
    assert_refused(build(trees, out, *flags), capsys, out, fragment)


def test_output_that_is_a_file_or_a_foreign_folder(trees, tmp_path, capsys):
    target = tmp_path / "target"
    target.write_text("precious")
    assert_refused(build(trees, target), capsys, target, f"output path {target} is a file")
    assert target.read_text() == "precious"
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    assert build(trees, folder) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert build(trees, folder, "--overwrite") == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["thesis.tex"]


def test_overwrite_replaces_a_previous_build(trees, tmp_path, capsys):
    out = tmp_path / "out"
    assert build(trees, out) == 0
    assert build(trees, out, "--overwrite", "--folds", "4") == 0
    assert list(read_manifest(out)["splits"]) == ["fold0", "fold1", "fold2", "fold3"]
    assert sorted(p.name for p in out.iterdir())[-1] == "manifest.json"
    assert not any(p.name.startswith("train") for p in out.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]


def test_real_process_exit_codes_and_messages(trees, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    out = tmp_path / "out"
    bad = subprocess.run([sys.executable, "-m", "fer_dist", "build-shards", "--visible",
                          str(trees / "Visible"), "--split", "0.5,0.4", "--folds", "3", "--out", str(out)],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "not allowed with argument" in bad.stderr
    bad = subprocess.run([sys.executable, "-m", "fer_dist", "build-shards", "--visible",
                          str(trees / "Visble"), "--out", str(out)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == f"error: --visible folder {trees / 'Visble'} does not exist; point it " \
                                 f"at a folder with one sub-folder per class"
    good = subprocess.run([sys.executable, "-m", "fer_dist", "build-shards", "--visible",
                           str(trees / "Visible"), "--split", "0.8,0.2", "--out", str(out)],
                          capture_output=True, text=True, env=env)
    assert good.returncode == 0, good.stderr
    assert "checking images: 80 images" in good.stdout and "writing shards: 80 samples" in good.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 64, "val": 16}
