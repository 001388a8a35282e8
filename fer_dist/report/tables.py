"""The report's numbers: peak and windowed validation accuracy, Wilson intervals, fold aggregation.

The definitions are in DEFINITIONS below, which report.json carries along with the numbers.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Sequence

from fer_dist.report.runs import Run, finite

WINDOW = 10
BEFORE_PEAK = 5
Z95 = 1.959964

DEFINITIONS = {
    "peak_val_acc": "highest validation accuracy; peak_epoch is the first epoch reaching it",
    "window_mean": "mean validation accuracy over epochs [peak-5, peak+4] (10 epochs), shifted "
                   "to stay inside [1, last epoch]; all epochs when the run has fewer than 10",
    "best_rolling_mean": "highest mean validation accuracy over 10 consecutive epochs (earliest "
                         "on ties; all epochs when the run has fewer than 10)",
    "final_val_acc": "validation accuracy of the last epoch",
    "test_acc": "test accuracy of the best-validation checkpoint; test_ci_low/high: Wilson score "
                "95% interval (z = 1.959964) from test_correct of test_count",
    "precision/recall/f1": "macro and weighted averages on the test split when present, else on "
                           "the validation split at the best-validation epoch (metrics_from)",
    "sharpness": "Keskar et al.'s epsilon-sharpness: 100 * (max_loss - loss0) / (1 + loss0), the "
                 "largest training-loss increase within |dw| <= epsilon * (|w| + 1)",
    "groups": "runs differing only in data.fold: mean and sample standard deviation (ddof=1) "
              "over folds; std is null for a single value",
    "units": "accuracies and precision/recall/F1 are fractions in [0, 1]",
}

METRIC_KEYS = ("precision_macro", "recall_macro", "f1_macro",
               "precision_weighted", "recall_weighted", "f1_weighted")


@dataclass(frozen=True)
class Window:
    """A mean over epochs first..last (1-based, inclusive)."""
    mean: float
    first: int
    last: int


def peak(values: Sequence[float]) -> tuple[int, float]:
    """(1-based epoch, value) of the highest value; the first epoch on ties."""
    if not values:
        raise ValueError("peak of an empty curve")
    best = max(values)
    return values.index(best) + 1, best


def peak_window(values: Sequence[float], width: int = WINDOW, before: int = BEFORE_PEAK) -> Window:
    """Mean over [peak-before, peak-before+width-1], shifted to stay inside [1, len(values)]."""
    n = len(values)
    epoch, _ = peak(values)
    if n <= width:
        return Window(math.fsum(values) / n, 1, n)
    first = max(1, epoch - before)
    last = min(n, first + width - 1)
    first = last - width + 1
    return Window(math.fsum(values[first - 1:last]) / width, first, last)


def best_rolling(values: Sequence[float], width: int = WINDOW) -> Window:
    """The highest mean over `width` consecutive epochs, the earliest on ties."""
    n = len(values)
    if n == 0:
        raise ValueError("rolling mean of an empty curve")
    if n <= width:
        return Window(math.fsum(values) / n, 1, n)
    # fsum rounds exactly, so equal windows compare equal and ties resolve to the earliest
    sums = [math.fsum(values[i:i + width]) for i in range(n - width + 1)]
    start = sums.index(max(sums))
    return Window(sums[start] / width, start + 1, start + width)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion successes/n."""
    if n <= 0:
        raise ValueError(f"Wilson interval needs n > 0, got {n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, {n}], got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def run_numbers(run: Run) -> dict[str, Any]:
    """Every number of the report for one run, flat, keyed as in report.json (fractions, not %)."""
    val = run.curve("val_acc")   # every line has a finite val_acc (checked on load)
    epochs = run.epoch_numbers()
    peak_epoch, peak_acc = peak(val)
    window, rolling = peak_window(val), best_rolling(val)
    numbers: dict[str, Any] = {
        "epochs": len(val), "last_epoch": epochs[-1],
        "peak_val_acc": peak_acc, "peak_epoch": epochs[peak_epoch - 1],
        "window_mean": window.mean, "window_first": epochs[window.first - 1],
        "window_last": epochs[window.last - 1],
        "best_rolling_mean": rolling.mean, "best_rolling_first": epochs[rolling.first - 1],
        "best_rolling_last": epochs[rolling.last - 1],
        "final_val_acc": val[-1],
    }
    numbers.update(_test_numbers(run))
    numbers.update(_class_metrics(run, best_val_epoch(run)))
    numbers.update(_sharpness(run))
    return numbers


def best_val_epoch(run: Run) -> int:
    """The best-validation epoch: summary.json's best_epoch if it is in the log, else the peak."""
    epochs = run.epoch_numbers()
    best = run.summary.get("best_epoch")
    if isinstance(best, int) and best in epochs:
        return best
    return epochs[peak(run.curve("val_acc"))[0] - 1]


def test_result(run: Run, which: str = "best") -> dict[str, Any] | None:
    """summary.json's test result for the best-val (or last) checkpoint, if it has an accuracy."""
    test = run.summary.get("test")
    result = test.get(which) if isinstance(test, dict) else None
    accuracy = finite(result.get("accuracy")) if isinstance(result, dict) else None
    if accuracy is not None and 0 <= accuracy <= 1:
        return result
    return None


def _test_numbers(run: Run) -> dict[str, Any]:
    """Test accuracy of the best-val checkpoint with its Wilson interval (None when absent)."""
    out: dict[str, Any] = dict.fromkeys(("test_acc", "test_correct", "test_count", "test_ci_low",
                                         "test_ci_high", "test_last_acc"))
    last = test_result(run, "last")
    out["test_last_acc"] = float(last["accuracy"]) if last else None
    result = test_result(run, "best")
    if not result:
        return out
    correct, count = _correct_and_count(result)
    out["test_acc"] = float(result["accuracy"])
    if count:
        out["test_correct"], out["test_count"] = correct, count
        out["test_ci_low"], out["test_ci_high"] = wilson_interval(correct, count)
    return out


def _correct_and_count(result: dict[str, Any]) -> tuple[int | None, int | None]:
    """Correct and total test images: the confusion's trace if given, else accuracy x count."""
    matrix = result.get("confusion")
    if _is_matrix(matrix):
        total = sum(map(sum, matrix))
        if total > 0:
            return sum(matrix[i][i] for i in range(len(matrix))), total
    count = result.get("count")
    if isinstance(count, int) and not isinstance(count, bool) and count > 0:
        return round(float(result["accuracy"]) * count), count
    return None, None


def _is_matrix(matrix: Any) -> bool:
    return (isinstance(matrix, list) and len(matrix) > 0
            and all(isinstance(r, list) and len(r) == len(matrix) for r in matrix)
            and all(isinstance(v, int) and not isinstance(v, bool) for r in matrix for v in r))


def _class_metrics(run: Run, val_epoch: int) -> dict[str, Any]:
    """Macro/weighted P/R/F1: of the test split when present, else of the best-val epoch."""
    result = test_result(run, "best")
    if result and all(finite(result.get(k)) is not None for k in METRIC_KEYS):
        return {"metrics_from": "test", **{k: finite(result[k]) for k in METRIC_KEYS}}
    record = next(e for e in run.epochs if e["epoch"] == val_epoch)
    values = {k: finite(record.get(f"val_{k}")) for k in METRIC_KEYS}
    if all(v is not None for v in values.values()):
        return {"metrics_from": f"val@{val_epoch}", **values}
    return {"metrics_from": None, **dict.fromkeys(METRIC_KEYS)}


def _sharpness(run: Run) -> dict[str, Any]:
    probe = run.summary.get("sharpness")
    if isinstance(probe, dict) and finite(probe.get("value")) is not None:
        return {"sharpness": finite(probe["value"]), "sharpness_epsilon": finite(probe.get("epsilon"))}
    return {"sharpness": None, "sharpness_epsilon": None}


def val_confusion(run: Run, epoch: int) -> list[list[int]] | None:
    """The validation confusion matrix logged at `epoch`, if the log has a well-formed one."""
    record = next((e for e in run.epochs if e["epoch"] == epoch), None)
    matrix = record.get("val_confusion") if record else None
    return matrix if _is_matrix(matrix) else None


def test_confusion(run: Run) -> list[list[int]] | None:
    """The test confusion matrix of the best-val checkpoint, if summary.json has one."""
    result = test_result(run, "best")
    matrix = result.get("confusion") if result else None
    return matrix if _is_matrix(matrix) else None


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per numeric key: mean, sample std (ddof=1; None for one value) and n over the rows."""
    out: dict[str, dict[str, Any]] = {}
    for key in rows[0]:
        values = [r[key] for r in rows
                  if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        if not values:
            continue
        std = statistics.stdev(values) if len(values) > 1 else None
        out[key] = {"mean": statistics.fmean(values), "std": std, "n": len(values)}
    return out


@dataclass(frozen=True)
class FoldGroup:
    """Runs that differ only in their validation fold, reported as mean +- std."""
    label: str
    members: tuple[int, ...]       # indices into the report's run list, in fold order


# config keys that may differ between the folds of one experiment
_NOT_IDENTITY = ("name", "out_dir", "data.fold", "launch.", "checkpoint.")


def fold_groups(runs: Sequence[Run], names: Sequence[str]) -> list[FoldGroup]:
    """Group runs with a known fold whose settings are otherwise equal (two or more per group)."""
    keyed: dict[str, list[int]] = {}
    for i, run in enumerate(runs):
        if run.fold is not None:
            keyed.setdefault(_identity(run), []).append(i)
    groups: list[FoldGroup] = []
    for members in keyed.values():
        folds = [runs[i].fold for i in members]
        if len(members) < 2 or len(set(folds)) < len(folds):
            continue   # one fold alone, or repeated folds (reruns): not a cross-validation group
        members.sort(key=lambda i: runs[i].fold)
        label, n = _group_label([names[i] for i in members]), 2
        while label in (g.label for g in groups):       # two experiments sharing a name prefix
            label, n = f"{_group_label([names[i] for i in members])} #{n}", n + 1
        groups.append(FoldGroup(label, tuple(members)))
    return groups


def _identity(run: Run) -> str:
    """What must match for two runs to be folds of one experiment, as a comparable string."""
    if run.config:
        flat = {k: v for k, v in _flatten(run.config).items()
                if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in _NOT_IDENTITY)}
    else:
        flat = {k: run.summary.get(k) for k in ("dataset", "modality", "schedule", "optimizer",
                                                "classes")}
    flat["global_batch"] = run.summary.get("global_batch")
    return repr(sorted(flat.items(), key=lambda kv: kv[0]))


def _flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _group_label(names: Sequence[str]) -> str:
    """The members' common name prefix (e.g. 'visible-cos' for 'visible-cos-fold0/1/2')."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    prefix = prefix.rstrip("-_. ")
    if prefix.lower().endswith("fold"):
        prefix = prefix[:-4].rstrip("-_. ")
    return f"{prefix or names[0]} ({len(names)} folds)"
