"""Seeded, class-stratified splits that keep each group (a subject, or a visible/infrared pair) whole.

Two steps: integer targets per (split, class) whose row and column sums are exact, then a greedy pass
that places whole groups, largest first, where they reduce the squared distance to those targets.
Without groups (every group one sample) the targets are met exactly.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from fer_dist.errors import UserError

RATIO_NAMES = ("train", "val", "test")


def parse_ratios(text: str) -> tuple[float, ...]:
    """'0.7,0.15,0.15' -> (0.7, 0.15, 0.15): two or three positive ratios summing to 1."""
    try:
        ratios = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise UserError(f"--split '{text}' is not a comma-separated list of numbers "
                        f"(e.g. 0.7,0.15,0.15)") from None
    return check_ratios(ratios)


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Two (train, val) or three (train, val, test) positive ratios that sum to 1."""
    shown = ",".join(f"{r:g}" for r in ratios)
    if len(ratios) not in (2, 3):
        raise UserError(f"--split {shown}: give 2 (train,val) or 3 (train,val,test) ratios")
    if any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise UserError(f"--split {shown}: every ratio must be a positive number")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise UserError(f"--split {shown} sums to {sum(ratios):g}; the ratios must sum to 1")
    return tuple(float(r) for r in ratios)


def split_names(ratios: Sequence[float] | None, folds: int | None) -> list[str]:
    """train/val[/test] for ratio splits, fold0..fold{K-1} for K folds."""
    return [f"fold{k}" for k in range(folds)] if folds else list(RATIO_NAMES[:len(ratios)])


def _largest_remainder(total: int, shares: np.ndarray) -> np.ndarray:
    """Integers summing to `total`, proportional to `shares`; ties go to earlier entries."""
    exact = total * shares / shares.sum()
    counts = np.floor(exact).astype(int)
    order = sorted(range(len(shares)), key=lambda s: (-(exact[s] - counts[s]), s))
    counts[order[:total - counts.sum()]] += 1
    return counts


def integer_targets(class_totals: Sequence[int], ratios: Sequence[float]) -> np.ndarray:
    """[split, class] integer targets: rows sum to split sizes, columns to class totals."""
    totals, shares = np.asarray(class_totals, dtype=int), np.asarray(ratios, dtype=float)
    split_sizes = _largest_remainder(int(totals.sum()), shares)
    exact = shares[:, None] * totals[None, :]
    targets = np.floor(exact).astype(int)
    # hand out each class's remaining units to the splits still short of their size
    for c in np.argsort(-(exact - targets).sum(0), kind="stable"):
        for _ in range(totals[c] - targets[:, c].sum()):
            short = split_sizes - targets.sum(1)
            frac = exact[:, c] - targets[:, c]
            s = max(range(len(shares)), key=lambda s: (short[s] > 0, frac[s] > 0, frac[s], -s))
            targets[s, c] += 1
    return targets


def assign_groups(labels: Sequence[int], groups: Sequence[str], n_classes: int,
                  ratios: Sequence[float], seed: int) -> np.ndarray:
    """Split index for every sample; samples sharing a group always share a split."""
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    counts = np.zeros((len(names), n_classes))
    for label, group in zip(labels, groups):
        counts[index[group], label] += 1
    targets = integer_targets(counts.sum(0).astype(int), ratios).astype(float)
    order = np.random.default_rng(seed).permutation(len(names))
    order = order[np.argsort(-counts[order].sum(1), kind="stable")]   # big groups first
    placed = np.zeros_like(targets)
    where = np.empty(len(names), dtype=int)
    for g in order:
        vec = counts[g]
        gain = ((placed + vec - targets) ** 2).sum(1) - ((placed - targets) ** 2).sum(1)
        s = int(np.argmin(gain))
        placed[s] += vec
        where[g] = s
    return np.array([where[index[group]] for group in groups], dtype=int)


def check_folds(folds: int, class_totals: Sequence[int], classes: Sequence[str]) -> None:
    """--folds must be at least 2 and at most the size of the smallest class."""
    if folds < 2:
        raise UserError(f"--folds {folds}: cross-validation needs at least 2 folds")
    smallest = int(np.argmin(class_totals))
    if folds > class_totals[smallest]:
        raise UserError(f"--folds {folds} is larger than the smallest class ('{classes[smallest]}', "
                        f"{class_totals[smallest]} samples); use at most {class_totals[smallest]} folds")


def check_filled(assignment: np.ndarray, labels: Sequence[int], names: Sequence[str],
                 classes: Sequence[str], grouped: bool) -> None:
    """Every split must get at least one sample of every class; say which one did not and why."""
    labels = np.asarray(labels)
    for s, name in enumerate(names):
        for c, cname in enumerate(classes):
            if not np.any((assignment == s) & (labels == c)):
                total = int((labels == c).sum())
                why = ("its subject groups (--group-regex) cannot fill every split" if grouped
                       else "the ratios leave it empty")
                raise UserError(f"split '{name}' would get no '{cname}' sample ({total} in all): "
                                f"{why}; use larger ratios, fewer folds or more data")
