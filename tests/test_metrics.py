import math

import pytest
import torch
from ignite.engine import Engine

from monai_softcam.metrics import (
    ClassificationMetrics,
    accuracy,
    average_precision,
    binary_roc_auc,
    classification_report,
    confusion_matrix,
    precision,
    quadratic_kappa,
    roc_auc,
    sensitivity,
    specificity,
)


def _binary():
    # p(class 1) for 8 cases; labels; threshold 0.5 (argmax)
    p1 = torch.tensor([0.9, 0.8, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1])
    labels = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    return torch.stack([1 - p1, p1], dim=1), labels


def test_binary_metrics_by_hand():
    probs, labels = _binary()
    # predicted: 1 1 1 0 | 1 0 0 0 -> TP 3, FN 1, FP 1, TN 3
    assert confusion_matrix(probs, labels).tolist() == [[3, 1], [1, 3]]
    assert accuracy(probs, labels) == pytest.approx(6 / 8)
    assert sensitivity(probs, labels) == pytest.approx(3 / 4)
    assert specificity(probs, labels) == pytest.approx(3 / 4)
    assert precision(probs, labels) == pytest.approx(3 / 4)
    # AUC: positive scores .9 .8 .6 .4 vs negatives .7 .3 .2 .1: 14 of 16 pairs ordered correctly
    assert roc_auc(probs, labels) == pytest.approx(14 / 16)
    # AP: ranking 1 1 0 1 1 0 0 0 -> precision at each positive: 1, 1, 3/4, 4/5; recall steps 1/4
    assert average_precision(probs, labels) == pytest.approx((1 + 1 + 3 / 4 + 4 / 5) / 4)


def test_auc_equals_pairwise_count_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40,), generator=g).float()  # many ties
    positive = torch.rand(40, generator=g) > 0.5
    pos, neg = scores[positive], scores[~positive]
    pairs = (pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()
    assert binary_roc_auc(scores, positive) == pytest.approx(float(pairs.mean()))


def test_auc_ties_and_degenerate_cases():
    assert binary_roc_auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == pytest.approx(0.5)
    assert math.isnan(binary_roc_auc(torch.tensor([0.1, 0.2]), torch.tensor([1, 1])))
    assert binary_roc_auc(torch.tensor([0.2, 0.1]), torch.tensor([1, 0])) == 1.0


def test_multiclass_macro_and_kappa():
    labels = torch.tensor([0, 1, 2, 2])
    perfect = torch.eye(3)[labels]
    assert quadratic_kappa(perfect, labels) == pytest.approx(1.0)
    assert roc_auc(perfect, labels) == pytest.approx(1.0)
    # predict 0, 1, 1, 0: errors of 1 and 2 grades
    probs = torch.eye(3)[torch.tensor([0, 1, 1, 0])]
    observed = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0]], dtype=torch.float64)
    w = torch.tensor([[(i - j) ** 2 / 4 for j in range(3)] for i in range(3)], dtype=torch.float64)
    expected = observed.sum(1)[:, None] * observed.sum(0)[None, :] / 4
    assert quadratic_kappa(probs, labels) == pytest.approx(float(1 - (w * observed).sum() / (w * expected).sum()))
    report = classification_report(probs, labels)
    assert report["kappa"] == pytest.approx(quadratic_kappa(probs, labels))
    assert report["sensitivity"] == pytest.approx((1 + 1 + 0) / 3)
    assert report["precision"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)  # class 2 never predicted: 0


def test_ignite_metric_accumulates_decollated_outputs_and_names_each_metric():
    probs, labels = _binary()
    batches = [
        [{"pred": probs[i], "label": labels[i : i + 1]} for i in range(0, 4)],
        [{"pred": probs[i], "label": labels[i : i + 1]} for i in range(4, 8)],
    ]
    engine = Engine(lambda e, batch: batch)
    metric = ClassificationMetrics(2, output_transform=lambda out: ([o["pred"] for o in out], [o["label"] for o in out]))
    metric.attach(engine, "accuracy")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["accuracy"] == pytest.approx(6 / 8)
    assert engine.state.metrics["auc"] == pytest.approx(14 / 16)
    assert metric.report["confusion_matrix"] == [[3, 1], [1, 3]] and metric.report["n"] == 8
    with pytest.raises(ValueError, match="attach ClassificationMetrics under one of its metric names"):
        bad = ClassificationMetrics(2, output_transform=lambda out: ([o["pred"] for o in out], [o["label"] for o in out]))
        other = Engine(lambda e, batch: batch)
        bad.attach(other, "classification")
        other.run(batches, max_epochs=1)


def test_single_sigmoid_output_and_wrong_width():
    metric = ClassificationMetrics(1)
    metric.reset()
    metric.update((torch.tensor([[0.9], [0.2]]), torch.tensor([1, 0])))
    assert metric.compute()["accuracy"] == 1.0
    metric = ClassificationMetrics(3)
    metric.reset()
    with pytest.raises(ValueError, match="expects 3 class probabilities, got 2"):
        metric.update((torch.zeros(2, 2), torch.tensor([0, 1])))
