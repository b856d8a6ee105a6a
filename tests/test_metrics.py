import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import metric_settings
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
    two_columns,
)
from monai_softcam.metrics.explanation import ExplanationMetrics


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
    metric = ClassificationMetrics(
        2, output_transform=lambda out: ([o["pred"] for o in out], [o["label"] for o in out])
    )
    metric.attach(engine, "accuracy")
    engine.run(batches, max_epochs=1)
    assert engine.state.metrics["accuracy"] == pytest.approx(6 / 8)
    assert engine.state.metrics["auc"] == pytest.approx(14 / 16)
    assert metric.report["confusion_matrix"] == [[3, 1], [1, 3]] and metric.report["n"] == 8
    bad = ClassificationMetrics(2, output_transform=lambda out: ([o["pred"] for o in out], [o["label"] for o in out]))
    other = Engine(lambda e, batch: batch)
    bad.attach(other, "classification")
    with pytest.raises(ValueError, match="attach ClassificationMetrics under one of its metric names"):
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


def test_two_columns_reads_one_sigmoid_output_as_two_classes():
    p = torch.tensor([[0.9], [0.25]])
    torch.testing.assert_close(two_columns(p), torch.tensor([[0.1, 0.9], [0.75, 0.25]]))
    probs = torch.tensor([[0.2, 0.8], [0.6, 0.4]])
    assert two_columns(probs) is probs


def _sharded_data():
    """8 cases for the classification metric and 4 maps for the explanation metric, with masks."""
    probs, labels = _binary()
    torch.manual_seed(0)
    maps = torch.randn(4, 2, 4, 4)
    masks = torch.zeros(4, 1, 16, 16)
    masks[:2, :, 2:8, 2:8] = 1
    return probs, labels, maps, masks, torch.tensor([1, 0, 1, 1])


def _metrics_of(shards):
    """ClassificationMetrics and ExplanationMetrics over ``shards`` (a slice of the classification
    cases, a slice of the maps) of the data."""
    probs, labels, maps, masks, map_labels = _sharded_data()
    cls = ClassificationMetrics(2)
    cls.reset()
    cls.update((probs[shards[0]], labels[shards[0]]))
    expl = ExplanationMetrics(
        output_transform=lambda o: o, settings=metric_settings(explained_class=1, topk=1, patch=4, stride=2)
    )
    expl.reset()
    s = shards[1]
    expl.update((maps[s], masks[s], map_labels[s], maps[s].flatten(2).mean(2)))
    return {"classification": cls.compute(), "n": cls.report["n"], "explanation": expl.compute(), "values": expl.values}


def _gather_worker(rank, world_size, port, folder):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        # uneven shards: 5 and 3 classification cases, 3 maps and 1 map
        shards = [(slice(0, 5), slice(0, 3)), (slice(5, 8), slice(3, 4))][rank]
        torch.save(_metrics_of(shards), os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_metrics_gather_uneven_shards_over_gloo_processes(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_gather_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    whole = _metrics_of((slice(0, 8), slice(0, 4)))  # one process: no torch.distributed
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        assert got["n"] == 8 and got["classification"] == whole["classification"]
        assert got["explanation"].keys() == whole["explanation"].keys()
        for name, v in whole["values"].items():
            assert v.shape == (4,), name
            torch.testing.assert_close(got["values"][name], v, rtol=0, atol=0, equal_nan=True)
