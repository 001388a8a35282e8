"""Figures: learning curves in the seed's form (A accuracy, B loss) and confusion heatmaps.

Figures have a fixed pixel size (no tight bounding box, which would change it); constrained
layout keeps labels inside the canvas. Files are written to a temporary name, then renamed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fer_dist.report.runs import Run  # noqa: E402

DPI = 100
CURVES_PX = (1200, 500)
CONFUSION_PANEL_PX = (1200, 520)     # one row of two panels (counts, row-normalised)
TRAIN_COLOR, VAL_COLOR = "tab:green", "tab:blue"


def run_title(run: Run) -> str:
    """'data set · modality · schedule' (plus optimizer and fold when known)."""
    schedule = {"cosine": "cosine schedule", "none": "constant lr"}.get(run.schedule or "",
                                                                         run.schedule)
    parts = [run.dataset or run.name, run.modality or "modality unknown",
             schedule or "schedule unknown"]
    if run.optimizer:
        parts.append(run.optimizer)
    if run.fold is not None:
        parts.append(f"fold {run.fold}")
    return " · ".join(parts)


def plot_curves(run: Run, path: Path, numbers: dict[str, Any] | None = None) -> Path:
    """Panel A: train (green) / val (blue) accuracy per epoch; panel B: train / val loss.

    With the run's table `numbers`, panel A also marks the peak and shades the peak window.
    """
    fig = _figure(CURVES_PX)
    ax_acc, ax_loss = fig.subplots(1, 2)
    epochs = run.epoch_numbers()
    panels = ((ax_acc, "acc", "A  Accuracy", "accuracy (fraction correct)"),
              (ax_loss, "loss", "B  Loss", "cross-entropy loss"))
    for ax, key, title, ylabel in panels:
        for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
            xs, ys = _present(epochs, run.curve(f"{split}_{key}"))
            if xs:
                label = "training" if split == "train" else "validation"
                ax.plot(xs, ys, color=color, marker="o" if len(xs) < 30 else None,
                        markersize=3, linewidth=1.6, label=label)
        ax.set_title(title, loc="left", fontweight="bold")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlim(epochs[0] - 0.5, epochs[-1] + 0.5)      # both panels span the same epochs
    if numbers:
        _mark_peak(ax_acc, numbers)
    ax_acc.set_ylim(-0.02, 1.02)
    _shared_legend(fig, (ax_acc, ax_loss))
    fig.suptitle(run_title(run), fontsize=13)
    return _save(fig, path)


def _shared_legend(fig: Figure, axes: Sequence) -> None:
    """One legend under both panels (same colours in each), so no curve hides behind it."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                   ncol=len(entries), frameon=False)


def _mark_peak(ax, numbers: dict[str, Any]) -> None:
    """Shade the peak window (10 epochs, or all of a shorter run) and ring the peak."""
    first, last = numbers["window_first"], numbers["window_last"]
    ax.axvspan(first - 0.5, last + 0.5, color=VAL_COLOR, alpha=0.08,
               label=f"peak window, epochs {first}–{last} (mean {100 * numbers['window_mean']:.1f}%)")
    ax.plot([numbers["peak_epoch"]], [numbers["peak_val_acc"]], "o", markersize=9,
            markerfacecolor="none", markeredgecolor="tab:red",
            label=f"validation peak {100 * numbers['peak_val_acc']:.1f}% "
                  f"(epoch {numbers['peak_epoch']})")


def plot_confusion(classes: Sequence[str], panels: Sequence[tuple[str, list[list[int]]]],
                   title: str, path: Path) -> Path:
    """One row per (label, matrix): counts on the left, row-normalised (recall) on the right."""
    width, height = CONFUSION_PANEL_PX
    fig = _figure((width, height * len(panels)))
    axes = np.atleast_2d(fig.subplots(len(panels), 2, squeeze=False))
    for row, (label, matrix) in enumerate(panels):
        counts = np.asarray(matrix, dtype=float)
        totals = counts.sum(axis=1, keepdims=True)
        normed = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
        _heatmap(axes[row, 0], counts, classes, f"{label}: counts", "{:.0f}", fig,
                 bar_label="images")
        _heatmap(axes[row, 1], normed, classes, f"{label}: row-normalised (recall)", "{:.2f}",
                 fig, vmax=1.0, bar_label="fraction of the true class")
    fig.suptitle(title, fontsize=13)
    return _save(fig, path)


def _heatmap(ax, values: np.ndarray, classes: Sequence[str], title: str, fmt: str, fig: Figure,
             vmax: float | None = None, bar_label: str = "") -> None:
    top = vmax if vmax is not None else max(float(values.max()), 1.0)
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=top)
    ticks = range(len(classes))
    ax.set_xticks(ticks, labels=classes, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_yticks(ticks, labels=classes)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if len(classes) <= 12:   # beyond that the numbers would not fit in their cells
        for (i, j), value in np.ndenumerate(values):
            color = "white" if value > 0.6 * top else "black"
            ax.text(j, i, fmt.format(value), ha="center", va="center", color=color, fontsize=10)
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=bar_label)
    if vmax is None:                                  # counts: whole images only on the scale
        bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _present(xs: Sequence[int], ys: Sequence[float | None]) -> tuple[list[int], list[float]]:
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _figure(size_px: tuple[int, int]) -> Figure:
    return plt.figure(figsize=(size_px[0] / DPI, size_px[1] / DPI), dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    """Write the PNG under a temporary name, then rename it into place; close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path
