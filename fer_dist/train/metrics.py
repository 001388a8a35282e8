"""Classification metrics from a confusion matrix: the one exact, reducible summary of predictions.

Ranks sum their int64 confusion matrices; everything else (accuracy, precision, recall, F1 macro,
weighted and per class) follows from the sum, with scikit-learn's zero_division=0 convention.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def confusion_matrix(y_true: Tensor, y_pred: Tensor, num_classes: int) -> Tensor:
    """int64 [C, C] counts, rows the true class and columns the predicted one (on the inputs' device)."""
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {tuple(y_true.shape)} "
                         f"and {tuple(y_pred.shape)}")
    y_true, y_pred = y_true.long(), y_pred.long()
    if y_true.numel() and (min(y_true.min(), y_pred.min()) < 0
                           or max(y_true.max(), y_pred.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    flat = torch.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).to(torch.int64)


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    """num / den elementwise, 0 where den is 0 (scikit-learn's zero_division=0)."""
    return torch.where(den > 0, num / den.clamp(min=1e-300), torch.zeros_like(num))


def classification_metrics(confusion: Tensor, class_names: list[str]) -> dict[str, Any]:
    """Accuracy and macro / weighted / per-class precision, recall, F1 as plain JSON-ready numbers.

    Macro averages run over all classes of the matrix, including any with no samples.
    """
    cm = torch.as_tensor(confusion).detach().to("cpu", torch.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise ValueError(f"confusion must be [C, C] with C = {len(class_names)} class names, "
                         f"got {tuple(cm.shape)}")
    tp = cm.diagonal()
    support, predicted = cm.sum(dim=1), cm.sum(dim=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)        # 2tp / (2tp + fp + fn)
    total = support.sum()
    weights = _ratio(support, total.expand_as(support))
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]),
                        "f1": float(f1[i]), "support": int(support[i])}
                 for i, name in enumerate(class_names)}
    return {
        "accuracy": float(_ratio(tp.sum(), total)),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "f1_macro": float(f1.mean()),
        "precision_weighted": float((precision * weights).sum()),
        "recall_weighted": float((recall * weights).sum()),
        "f1_weighted": float((f1 * weights).sum()),
        "per_class": per_class,
    }
