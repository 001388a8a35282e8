"""The report's numbers on hand-made curves: peak window, rolling mean, Wilson interval, folds."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from fer_dist.report import tables
from fer_dist.report.runs import load_run, unique_names


def curve(n: int, peaks: dict[int, float], base: float = 0.5) -> list[float]:
    """n epochs at `base`, with the given 1-based epochs set to other values."""
    values = [base] * n
    for epoch, value in peaks.items():
        values[epoch - 1] = value
    return values


def ramp(n: int) -> list[float]:
    """Distinct values 0.01, 0.02, ... so each window's mean names its epochs."""
    return [round(0.01 * e, 2) for e in range(1, n + 1)]


# ----------------------------------------------------------------------------- peak window

def test_peak_in_the_middle_takes_five_before_and_four_after():
    values = ramp(30)
    values[19] = 0.9                                  # peak at epoch 20
    window = tables.peak_window(values)
    assert (window.first, window.last) == (15, 24)
    assert window.mean == pytest.approx((sum(values[14:24])) / 10)
    assert window.mean == pytest.approx((0.15 + 0.16 + 0.17 + 0.18 + 0.19 + 0.9
                                         + 0.21 + 0.22 + 0.23 + 0.24) / 10)


def test_peak_at_the_start_shifts_the_window_right():
    values = curve(30, {1: 0.95, 2: 0.7})
    window = tables.peak_window(values)
    assert (window.first, window.last) == (1, 10)
    assert window.mean == pytest.approx((0.95 + 0.7 + 8 * 0.5) / 10)
    # peak at epoch 3: only 2 epochs before, so epochs 1..10 again
    assert (tables.peak_window(curve(30, {3: 0.9})).first,
            tables.peak_window(curve(30, {3: 0.9})).last) == (1, 10)


def test_peak_at_the_end_shifts_the_window_left():
    values = curve(30, {30: 0.9, 29: 0.8})
    window = tables.peak_window(values)
    assert (window.first, window.last) == (21, 30)
    assert window.mean == pytest.approx((0.9 + 0.8 + 8 * 0.5) / 10)
    # peak two epochs from the end: [peak-5, peak+4] = [23, 32] becomes [21, 30]
    w = tables.peak_window(curve(30, {28: 0.9}))
    assert (w.first, w.last) == (21, 30)


def test_ties_take_the_first_peak():
    values = curve(40, {8: 0.9, 30: 0.9})
    assert tables.peak(values) == (8, 0.9)
    window = tables.peak_window(values)
    assert (window.first, window.last) == (3, 12)


def test_runs_shorter_than_ten_epochs_average_every_epoch():
    values = [0.2, 0.6, 0.4, 0.8, 0.5, 0.3, 0.7]
    window = tables.peak_window(values)
    assert (window.first, window.last) == (1, 7)
    assert window.mean == pytest.approx(3.5 / 7)
    rolling = tables.best_rolling(values)
    assert (rolling.first, rolling.last, rolling.mean) == (1, 7, window.mean)
    single = tables.peak_window([0.42])
    assert (single.first, single.last, single.mean) == (1, 1, 0.42)


def test_exactly_ten_epochs_is_one_window():
    values = ramp(10)
    assert tables.peak_window(values) == tables.Window(pytest.approx(0.055), 1, 10)


# ----------------------------------------------------------------------------- rolling mean

def test_best_rolling_mean_finds_the_highest_ten_epoch_stretch():
    values = curve(40, {e: 0.8 for e in range(25, 35)})
    values[5] = 1.0                                  # a lone spike does not win
    rolling = tables.best_rolling(values)
    assert (rolling.first, rolling.last) == (25, 34)
    assert rolling.mean == pytest.approx(0.8)
    # the peak window sits around the spike instead
    assert (tables.peak_window(values).first, tables.peak_window(values).last) == (1, 10)


def test_best_rolling_mean_ties_take_the_earliest_window():
    # two equal plateaus of 10 epochs; naive float sums would rate the reversed (later) one
    # higher: sum(plateau) = 6.59 < sum(reversed(plateau)) = 6.590000000000001
    plateau = [0.99, 0.86, 0.12, 0.33, 0.72, 0.71, 0.94, 0.42, 0.83, 0.67]
    assert sum(plateau) < sum(reversed(plateau))
    values = [0.0] * 5 + plateau + [0.0] * 10 + list(reversed(plateau)) + [0.0] * 5
    rolling = tables.best_rolling(values)
    assert (rolling.first, rolling.last) == (6, 15)


# ----------------------------------------------------------------------------- Wilson

def test_wilson_interval_for_76_of_90():
    # the study's likely 84.44% = 76 of 90 test images; the Wilson bounds are the two roots p of
    # (76/90 - p)^2 = z^2 p (1 - p) / 90, solved here as a quadratic with literal numbers
    z2 = 1.959964 ** 2
    a, b, c = 1 + z2 / 90, -(2 * 76 / 90 + z2 / 90), (76 / 90) ** 2
    root = math.sqrt(b * b - 4 * a * c)
    low, high = tables.wilson_interval(76, 90)
    assert low == pytest.approx((-b - root) / (2 * a), abs=1e-12)
    assert high == pytest.approx((-b + root) / (2 * a), abs=1e-12)
    assert (round(low, 4), round(high, 4)) == (0.7557, 0.9050)


def test_wilson_interval_published_example_and_edges():
    # Newcombe (1998), Statistics in Medicine 17:857, Table I: 81/263 -> 0.2553 to 0.3662
    low, high = tables.wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    # 0/10 and 10/10: the interval stays inside [0, 1] and touches the observed end
    assert tables.wilson_interval(0, 10)[0] == 0.0 and 0.27 < tables.wilson_interval(0, 10)[1] < 0.28
    assert tables.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        tables.wilson_interval(5, 0)


# ----------------------------------------------------------------------------- folds

def test_aggregate_uses_the_sample_standard_deviation():
    rows = [{"window_mean": 0.70, "test_acc": 0.8, "metrics_from": "test"},
            {"window_mean": 0.74, "test_acc": None, "metrics_from": "test"},
            {"window_mean": 0.78, "test_acc": 0.9, "metrics_from": "val@3"}]
    stats = tables.aggregate(rows)
    assert stats["window_mean"]["mean"] == pytest.approx(0.74)
    assert stats["window_mean"]["std"] == pytest.approx(0.04)          # ddof=1: sqrt(0.0032/2)
    assert stats["window_mean"]["n"] == 3
    assert stats["test_acc"] == {"mean": pytest.approx(0.85), "std": pytest.approx(0.0707107, abs=1e-6),
                                 "n": 2}
    assert "metrics_from" not in stats
    assert tables.aggregate([{"x": 0.5}])["x"] == {"mean": 0.5, "std": None, "n": 1}


def write_run(folder: Path, val: list[float], config: dict | None = None,
              summary: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, "val_acc": v, "train_acc": v, "train_loss": 1 - v,
                         "val_loss": 1.1 - v}) for e, v in enumerate(val, start=1)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if config is not None:
        import yaml
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def cfg(name: str, fold: int | None, lr: float = 1e-3) -> dict:
    return {"name": name, "out_dir": "runs", "data": {"shards": "shards/viri", "fold": fold},
            "optim": {"name": "adam", "lr": lr, "schedule": "cosine"}, "launch": {"nodes": fold or 1}}


def test_runs_differing_only_in_fold_form_one_group(tmp_path):
    paths = [write_run(tmp_path / f"vis-fold{f}", [0.5 + 0.1 * f] * 3, cfg(f"vis-fold{f}", f))
             for f in (2, 0, 1)]
    paths.append(write_run(tmp_path / "other-fold0", [0.3] * 3, cfg("other-fold0", 0, lr=0.1)))
    paths.append(write_run(tmp_path / "other-fold1", [0.3] * 3, cfg("other-fold1", 1, lr=0.2)))
    paths.append(write_run(tmp_path / "plain", [0.4] * 3, cfg("plain", None)))
    runs = [load_run(p) for p in paths]
    groups = tables.fold_groups(runs, unique_names(runs))
    assert len(groups) == 1
    assert groups[0].members == (1, 2, 0)            # sorted by fold
    assert groups[0].label == "vis (3 folds)"
    stats = tables.aggregate([tables.run_numbers(runs[i]) for i in groups[0].members])
    assert stats["peak_val_acc"]["mean"] == pytest.approx(0.6)
    assert stats["peak_val_acc"]["std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))


def test_fold_groups_from_summary_only_and_repeated_folds(tmp_path):
    meta = {"dataset": "viri-ir", "modality": "infrared", "schedule": "none", "optimizer": "sgd+lars",
            "classes": ["a", "b"], "global_batch": 1024}
    a = write_run(tmp_path / "a", [0.4], summary={**meta, "name": "ir-0", "fold": 0})
    b = write_run(tmp_path / "b", [0.5], summary={**meta, "name": "ir-1", "fold": 1})
    c = write_run(tmp_path / "c", [0.5], summary={**meta, "name": "ir-1b", "fold": 1})
    runs = [load_run(p) for p in (a, b)]
    assert [g.members for g in tables.fold_groups(runs, unique_names(runs))] == [(0, 1)]
    runs = [load_run(p) for p in (a, b, c)]                   # fold 1 twice: not one CV experiment
    assert tables.fold_groups(runs, unique_names(runs)) == []


# ----------------------------------------------------------------------------- one run's numbers

def test_run_numbers_use_the_test_confusion_for_the_interval(tmp_path):
    val = [0.3, 0.5, 0.6, 0.55, 0.62, 0.61, 0.58, 0.6, 0.59, 0.6, 0.57, 0.56]
    confusion = [[30, 0, 0], [4, 26, 0], [2, 4, 24]]                  # 80 of 90 correct
    test = {"accuracy": 80 / 90, "count": 90, "confusion": confusion,
            **{k: 0.5 + i / 100 for i, k in enumerate(tables.METRIC_KEYS)}}
    run = load_run(write_run(tmp_path / "r", val, summary={
        "name": "r", "best_epoch": 5, "test": {"best": test, "last": {"accuracy": 0.8}},
        "sharpness": {"epsilon": 1e-3, "value": 12.5}}))
    n = tables.run_numbers(run)
    assert (n["peak_epoch"], n["peak_val_acc"]) == (5, 0.62)
    assert (n["window_first"], n["window_last"]) == (1, 10)
    assert n["window_mean"] == pytest.approx(sum(val[:10]) / 10)
    assert (n["best_rolling_first"], n["best_rolling_last"]) == (3, 12)
    assert n["final_val_acc"] == 0.56
    assert (n["test_correct"], n["test_count"]) == (80, 90)
    assert (n["test_ci_low"], n["test_ci_high"]) == tables.wilson_interval(80, 90)
    assert n["test_last_acc"] == 0.8
    assert n["metrics_from"] == "test" and n["f1_weighted"] == 0.55
    assert (n["sharpness"], n["sharpness_epsilon"]) == (12.5, 1e-3)


def test_run_numbers_without_test_fall_back_to_the_best_val_epoch(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    lines = [{"epoch": e, "val_acc": v, **{f"val_{k}": v - 0.01 * i
                                           for i, k in enumerate(tables.METRIC_KEYS)}}
             for e, v in ((1, 0.4), (2, 0.7), (3, 0.6))]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    n = tables.run_numbers(load_run(folder))
    assert n["metrics_from"] == "val@2"
    assert n["precision_macro"] == 0.7 and n["f1_weighted"] == pytest.approx(0.65)
    assert n["test_acc"] is None and n["test_ci_low"] is None and n["sharpness"] is None


def test_two_fold_experiments_with_the_same_name_get_distinct_labels(tmp_path):
    paths = [write_run(tmp_path / f"{d}{f}", [0.5], cfg(f"exp-fold{f}", f, lr=lr))
             for d, lr in (("a", 0.1), ("b", 0.2)) for f in (0, 1)]
    runs = [load_run(p) for p in paths]
    names = unique_names(runs)
    assert names == ["exp-fold0 (a0)", "exp-fold1 (a1)", "exp-fold0 (b0)", "exp-fold1 (b1)"]
    groups = tables.fold_groups(runs, names)
    assert [(g.label, g.members) for g in groups] == [("exp (2 folds)", (0, 1)),
                                                      ("exp (2 folds) #2", (2, 3))]
