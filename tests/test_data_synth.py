"""The synthetic VIRI-like generator: layout, pairing, determinism, what carries the expression."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fer_dist import CLASSES
from fer_dist.cli import main
from fer_dist.data import synth
from fer_dist.errors import UserError


def test_layout_matches_viri_and_stems_pair_up(synth_tree):
    for modality in ("Visible", "Infrared"):
        assert sorted(p.name for p in (synth_tree / modality).iterdir()) == sorted(CLASSES)
    for name in CLASSES:
        visible = sorted(p.name for p in (synth_tree / "Visible" / name).iterdir())
        infrared = sorted(p.name for p in (synth_tree / "Infrared" / name).iterdir())
        assert visible == infrared
        assert visible == [f"S{s:03d}_{name}_{k}.JPG" for s in range(1, 9) for k in (1, 2)]
    with Image.open(synth_tree / "Infrared" / "Sad" / "S003_Sad_2.JPG") as image:
        assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (32, 32))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = synth.generate(tmp_path / "a", subjects=2, size=24, seed=5)
    synth.generate(tmp_path / "b", subjects=2, size=24, seed=5)
    synth.generate(tmp_path / "c", subjects=2, size=24, seed=6)
    assert a.images_per_modality == 10
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.JPG"))
    assert len(files) == 20
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert sum((tmp_path / "a" / r).read_bytes() != (tmp_path / "c" / r).read_bytes() for r in files) == 20


def test_expression_alone_changes_the_face_not_the_scene():
    """Same subject and scene seed, two classes: only pixels inside the face differ."""
    ident = synth.draw_identity(np.random.default_rng(1))
    happy_vis, happy_ir = synth.render_pair(ident, "Happy", np.random.default_rng(7), 64)
    sad_vis, sad_ir = synth.render_pair(ident, "Sad", np.random.default_rng(7), 64)
    diff = np.abs(happy_vis.astype(int) - sad_vis.astype(int)).sum(-1)
    assert diff[:, :6].max() == 0 and diff[:, -6:].max() == 0     # the background is identical
    assert diff[20:60, 16:48].max() > 60                         # mouth/brows/eyes changed a lot
    assert np.abs(happy_ir.astype(int) - sad_ir.astype(int)).sum() > 0


def test_infrared_is_a_warm_face_on_a_cooler_scene_and_blurrier(synth_tree):
    """Palette brightness: the face centre is warmer than the corners; fewer sharp edges than visible."""
    centre, corners, edges_ir, edges_vis = [], [], [], []
    for path in sorted((synth_tree / "Infrared").rglob("*.JPG")):
        ir = np.asarray(Image.open(path).convert("L"), dtype=float)
        vis = np.asarray(Image.open(str(path).replace("Infrared", "Visible")).convert("L"), dtype=float)
        centre.append(ir[12:20, 12:20].mean())
        corners.append(np.mean([ir[:4, :4].mean(), ir[:4, -4:].mean()]))
        edges_ir.append(np.percentile(np.abs(np.diff(ir, axis=1)), 99))
        edges_vis.append(np.percentile(np.abs(np.diff(vis, axis=1)), 99))
    assert np.mean(centre) > np.mean(corners) + 40
    assert np.mean(edges_ir) < 0.8 * np.mean(edges_vis)


def test_bad_arguments_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="--subjects 0"):
        synth.generate(tmp_path / "x", subjects=0)
    with pytest.raises(UserError, match="--size 8"):
        synth.generate(tmp_path / "x", subjects=1, size=8)
    assert not (tmp_path / "x").exists()


def test_cli_writes_refuses_a_second_time_and_overwrites_on_request(tmp_path, capsys):
    out = tmp_path / "data" / "synth"
    assert main(["synth", str(out), "--subjects", "1", "--size", "24", "--images-per-class", "2"]) == 0
    assert "wrote 10 visible + 10 infrared images" in capsys.readouterr().out
    assert len(list(out.rglob("*.JPG"))) == 20
    assert main(["synth", str(out), "--subjects", "1", "--size", "24"]) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert main(["synth", str(out), "--subjects", "1", "--size", "24", "--overwrite"]) == 0
    assert len(list(out.rglob("*.JPG"))) == 10
    assert sorted(p.name for p in out.parent.iterdir()) == ["synth"]     # no temporary folders left


def test_cli_refuses_a_file_and_a_foreign_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["synth", str(tmp_path / "file"), "--subjects", "1", "--size", "24"]) == 2
    assert f"output path {tmp_path / 'file'} is a file" in capsys.readouterr().err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["synth", str(tmp_path / "mine"), "--subjects", "1", "--size", "24", "--overwrite"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
