"""`fer-dist report` end to end on hand-made run directories: figures, md/html/json, bad input."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from fer_dist.cli import main
from fer_dist.report import figures, tables
from fer_dist.report.runs import load_run

CLASSES = ["Angry", "Happy", "Neutral", "Sad", "Surprise"]


def confusion(correct: int, total_per_class: int = 10) -> list[list[int]]:
    """A 5x5 matrix with `correct` hits spread over the diagonal; misses go to the next class."""
    m = [[0] * 5 for _ in range(5)]
    for i in range(5):
        hits = correct // 5 + (1 if i < correct % 5 else 0)
        m[i][i], m[i][(i + 1) % 5] = hits, total_per_class - hits
    return m


def write_metrics(folder: Path, val_correct: list[int]) -> Path:
    """metrics.jsonl with every key the trainer writes; val accuracy = correct / 50."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for epoch, correct in enumerate(val_correct, start=1):
        acc = correct / 50
        lines.append({"epoch": epoch, "lr": 1e-3, "train_loss": 1.5 / epoch, "train_acc": 1 - 0.5 / epoch,
                      "val_loss": 1.6 - acc, "val_acc": acc, "val_confusion": confusion(correct),
                      **{f"val_{k}": acc for k in tables.METRIC_KEYS},
                      "val_per_class": {c: {"precision": acc, "recall": acc, "f1": acc, "support": 10}
                                        for c in CLASSES},
                      "images_per_s": 100.0, "time_s": 1.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return folder


def write_summary(folder: Path, name: str, fold: int | None = None, test_correct: int | None = None,
                  **extra) -> None:
    test = None
    if test_correct is not None:
        best = {"accuracy": test_correct / 50, "count": 50, "confusion": confusion(test_correct),
                **{k: test_correct / 50 for k in tables.METRIC_KEYS}}
        test = {"best": best, "last": best}
    summary = {"name": name, "classes": CLASSES, "modality": "visible", "dataset": "viri-visible",
               "schedule": "cosine", "optimizer": "adam", "fold": fold, "test": test,
               "global_batch": 64, "world_size": 2, **extra}
    (folder / "summary.json").write_text(json.dumps(summary))


CURVE = [20, 25, 30, 33, 35, 38, 36, 40, 39, 41, 37, 38]


def png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed or finished write left behind (they all start with a dot)."""
    return sorted(p.name for p in folder.rglob(".*"))


def test_report_on_a_run_with_only_metrics_jsonl(tmp_path, capsys):
    run = write_metrics(tmp_path / "bare", CURVE)
    assert main(["report", str(run)]) == 0
    assert png_size(run / "curves.png") == figures.CURVES_PX == (1200, 500)
    assert png_size(run / "confusion.png") == figures.CONFUSION_PANEL_PX      # validation only
    assert (run / "report.md").stat().st_size > 0 and (run / "report.html").stat().st_size > 0
    report = json.loads((run / "report.json").read_text())
    numbers = report["runs"]["bare"]["numbers"]
    assert numbers == tables.run_numbers(load_run(run))
    assert numbers["peak_val_acc"] == 41 / 50 and numbers["peak_epoch"] == 10
    assert (numbers["window_first"], numbers["window_last"]) == (3, 12)
    assert numbers["window_mean"] == pytest.approx(sum(CURVE[2:12]) / 500)
    assert numbers["test_acc"] is None and numbers["metrics_from"] == "val@10"
    assert report["runs"]["bare"]["figures"] == {"curves": "curves.png", "confusion": "confusion.png"}
    assert leftovers(tmp_path) == []
    out = capsys.readouterr().out
    assert "bare" in out and "82.0" in out          # the terminal table shows the peak


def test_report_across_runs_groups_folds_and_embeds_figures(tmp_path):
    runs = []
    for fold, shift in enumerate((0, 2, 4)):
        folder = write_metrics(tmp_path / f"vis-fold{fold}", [c + shift for c in CURVE])
        write_summary(folder, f"vis-fold{fold}", fold=fold, test_correct=40 + fold)
        runs.append(folder)
    single = write_metrics(tmp_path / "ir", CURVE[:5])
    write_summary(single, "ir-cos", test_correct=38, sharpness={"epsilon": 1e-3, "value": 4.25})
    runs.append(single)
    out = tmp_path / "out"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0

    for name in ("vis-fold0", "vis-fold1", "vis-fold2", "ir-cos"):
        assert png_size(out / name / "curves.png") == (1200, 500)
        assert png_size(out / name / "confusion.png") == (1200, 2 * 520)     # validation + test
    report = json.loads((out / "report.json").read_text())
    assert set(report["runs"]) == {"vis-fold0", "vis-fold1", "vis-fold2", "ir-cos"}
    group = report["groups"]["vis (3 folds)"]
    assert group["runs"] == ["vis-fold0", "vis-fold1", "vis-fold2"] and group["folds"] == [0, 1, 2]
    expected = tables.aggregate([tables.run_numbers(load_run(p)) for p in runs[:3]])
    assert group["stats"] == expected
    assert group["stats"]["test_acc"]["mean"] == pytest.approx(0.82)
    assert group["stats"]["test_acc"]["std"] == pytest.approx(0.02)       # 0.80, 0.82, 0.84, ddof=1
    ir = report["runs"]["ir-cos"]["numbers"]
    assert (ir["test_correct"], ir["test_count"]) == (38, 50)
    assert (ir["test_ci_low"], ir["test_ci_high"]) == pytest.approx(tables.wilson_interval(38, 50))
    assert ir["sharpness"] == 4.25

    md = (out / "report.md").read_text()
    assert "| vis (3 folds) |" in md and "82.0 ± 2.0" in md            # test accuracy over folds
    assert "76.0 [62.6, 85.7] (38/50)" in md and "4.25 (ε=0.001)" in md
    assert "![curves of ir-cos](ir-cos/curves.png)" in md
    html = (out / "report.html").read_text()
    sources = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]*)""", html)
    assert len(sources) == 8 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<link" not in html and "<script" not in html
    sizes = {Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))).size for s in sources}
    assert sizes == {(1200, 500), (1200, 1040)}


def test_format_json_writes_only_the_json(tmp_path):
    run = write_metrics(tmp_path / "r", CURVE)
    assert main(["report", str(run), "--format", "json", "--out", str(tmp_path / "o")]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["confusion.png", "curves.png",
                                                                  "report.json"]
    assert main(["report", str(run), "--format", "md", "--out", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "report.md").is_file() and not (tmp_path / "m" / "report.html").exists()


def test_a_resumed_run_keeps_the_last_record_of_each_epoch(tmp_path):
    run = write_metrics(tmp_path / "r", [10, 20, 30])
    with open(run / "metrics.jsonl", "a") as fh:                     # epoch 3 logged again
        fh.write(json.dumps({"epoch": 3, "val_acc": 0.9}) + "\n\n")
    loaded = load_run(run)
    assert loaded.epoch_numbers() == [1, 2, 3] and loaded.curve("val_acc") == [0.2, 0.4, 0.9]


@pytest.mark.parametrize("content, where", [
    ('{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2, "val_acc": 0.6}\n{"epoch": 3, "val_ac', ":3:"),
    ('{"epoch": 1, "val_acc": 0.5}\n{"epoch": 2}\n', ":2: missing key val_acc"),
    ('{"epoch": 0, "val_acc": 0.5}\n', ":1: epoch = 0"),
    ('[1, 2]\n', ":1: expected a JSON object"),
    ('{"epoch": 1, "val_acc": NaN}\n', ":1: val_acc = nan"),
    ('\n\n', " holds no epochs"),
])
def test_bad_metrics_file_exits_2_naming_file_and_line(tmp_path, capsys, content, where):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(content)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'metrics.jsonl'}{where}" in err and "Traceback" not in err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]        # nothing written


def test_missing_run_directory_and_missing_metrics_exit_2(tmp_path, capsys):
    good = write_metrics(tmp_path / "good", CURVE)
    assert main(["report", str(good), str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert f"run directory {tmp_path / 'nope'} not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert f"{tmp_path / 'empty' / 'metrics.jsonl'} not found" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_a_user_error(tmp_path, capsys):
    run = write_metrics(tmp_path / "r", CURVE)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["report", str(run), "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write the report into {blocker / 'sub'}" in err and "--out" in err


def test_corrupt_optional_files_fall_back_to_config_and_folder_name(tmp_path):
    run = write_metrics(tmp_path / "runs" / "x", CURVE)
    (run / "summary.json").write_text("{truncated")
    (run / "config.yaml").write_text("name: ir-const\ndata: {shards: shards/viri-ir, fold: null}\n"
                                     "optim: {name: sgd, lars: true, schedule: none}\n")
    loaded = load_run(run)
    assert loaded.summary == {} and loaded.name == "ir-const"
    assert figures.run_title(loaded) == "viri-ir · modality unknown · constant lr · sgd+lars"
    (run / "config.yaml").write_text("- a list, not a mapping\n")
    assert load_run(run).name == "x" and figures.run_title(load_run(run)).startswith("x · ")
    assert main(["report", str(run)]) == 0 and png_size(run / "curves.png") == (1200, 500)
