"""Confusion-matrix metrics agree with scikit-learn on the same predictions."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fer_dist.train.metrics import classification_metrics, confusion_matrix

NAMES = ["Angry", "Happy", "Neutral", "Sad", "Surprise", "Fear"]


def _predictions(seed: int, n: int = 83) -> tuple[torch.Tensor, torch.Tensor]:
    """Random labels where class 3 never occurs in y_true, class 4 is never predicted and class 5
    neither occurs nor is predicted."""
    gen = torch.Generator().manual_seed(seed)
    y_true = torch.tensor([0, 1, 2, 4])[torch.randint(0, 4, (n,), generator=gen)]
    y_pred = torch.where(torch.rand(n, generator=gen) < 0.6, y_true,
                         torch.randint(0, 4, (n,), generator=gen))
    y_pred = torch.where(y_pred == 4, torch.tensor(3), y_pred)
    return y_true, y_pred


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_confusion_matrix_matches_sklearn(seed):
    y_true, y_pred = _predictions(seed)
    cm = confusion_matrix(y_true, y_pred, len(NAMES))
    assert cm.dtype == torch.int64 and cm.shape == (6, 6)
    expected = sk_confusion_matrix(y_true.numpy(), y_pred.numpy(), labels=range(6))
    assert np.array_equal(cm.numpy(), expected)
    assert int(cm.sum()) == 83 and int(cm[3].sum()) == 0 and int(cm[:, 4].sum()) == 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    y_true, y_pred = _predictions(seed)
    metrics = classification_metrics(confusion_matrix(y_true, y_pred, 6), NAMES)
    t, p, labels = y_true.numpy(), y_pred.numpy(), list(range(6))
    assert metrics["accuracy"] == pytest.approx(accuracy_score(t, p), abs=1e-12)
    for average in ("macro", "weighted"):
        prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=labels, average=average,
                                                           zero_division=0)
        assert metrics[f"precision_{average}"] == pytest.approx(prec, abs=1e-12)
        assert metrics[f"recall_{average}"] == pytest.approx(rec, abs=1e-12)
        assert metrics[f"f1_{average}"] == pytest.approx(f1, abs=1e-12)
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=labels, average=None,
                                                             zero_division=0)
    for i, name in enumerate(NAMES):
        row = metrics["per_class"][name]
        assert row["precision"] == pytest.approx(prec[i], abs=1e-12)
        assert row["recall"] == pytest.approx(rec[i], abs=1e-12)
        assert row["f1"] == pytest.approx(f1[i], abs=1e-12)
        assert row["support"] == support[i]
    assert metrics["per_class"]["Sad"]["support"] == 0
    assert metrics["per_class"]["Surprise"]["precision"] == 0.0


def test_hand_computed_two_class_example():
    # rows true, columns predicted: 3 of 4 class-0 right, 1 of 2 class-1 right
    cm = torch.tensor([[3, 1], [1, 1]])
    m = classification_metrics(cm, ["a", "b"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["per_class"]["a"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4}
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["f1_macro"] == pytest.approx(0.625)
    assert m["f1_weighted"] == pytest.approx((0.75 * 4 + 0.5 * 2) / 6)


def test_result_is_json_serialisable_plain_numbers():
    y_true, y_pred = _predictions(0)
    metrics = classification_metrics(confusion_matrix(y_true, y_pred, 6), NAMES)
    assert json.loads(json.dumps(metrics)) == metrics
    assert type(metrics["accuracy"]) is float
    assert type(metrics["per_class"]["Happy"]["support"]) is int


def test_empty_matrix_gives_zeros():
    m = classification_metrics(torch.zeros(3, 3, dtype=torch.int64), ["x", "y", "z"])
    assert m["accuracy"] == 0.0 and m["f1_weighted"] == 0.0 and m["per_class"]["y"]["f1"] == 0.0


def test_bad_inputs_rejected():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(ValueError, match="1-D"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 3)
    with pytest.raises(ValueError, match="class names"):
        classification_metrics(torch.zeros(3, 3), ["x", "y"])
