"""Classification metrics on class probabilities, and an Ignite metric that reports all of them.

All functions take ``probs`` ``[N, C]`` (rows sum to 1; ``C >= 2``) and integer ``labels`` ``[N]``.
For two classes, class 1 is the positive class: sensitivity, specificity, precision, ROC AUC and
AUPRC are those of class 1. For more classes they are macro averages of the one-vs-rest values
over the classes present (ROC AUC, AUPRC, sensitivity) or over all classes (specificity,
precision; a class never predicted has precision 0). The predicted class is the argmax.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.utils import evenly_divisible_all_gather

__all__ = [
    "ClassificationMetrics",
    "accuracy",
    "average_precision",
    "binary_average_precision",
    "binary_roc_auc",
    "classification_report",
    "confusion_matrix",
    "precision",
    "quadratic_kappa",
    "roc_auc",
    "sensitivity",
    "specificity",
    "two_columns",
]


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[C, C]`` counts, rows = true class, columns = predicted class."""
    num_classes = probs.shape[1]
    predicted = probs.argmax(dim=1)
    index = labels.long() * num_classes + predicted
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose argmax class is the label."""
    return float((probs.argmax(dim=1) == labels).double().mean()) if labels.numel() else float("nan")


def _per_class_rates(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cm = cm.double()
    tp = cm.diag()
    fn = cm.sum(dim=1) - tp
    fp = cm.sum(dim=0) - tp
    tn = cm.sum() - tp - fn - fp
    recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), torch.nan)
    spec = torch.where(tn + fp > 0, tn / (tn + fp).clamp(min=1), torch.nan)
    prec = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), 0.0)
    return recall, spec, prec


def _reduce(values: torch.Tensor, num_classes: int) -> float:
    if num_classes == 2:
        return float(values[1])
    return float(values[~values.isnan()].mean()) if (~values.isnan()).any() else float("nan")


def sensitivity(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall TP / (TP + FN) of the positive class (binary) or macro recall."""
    return _reduce(_per_class_rates(confusion_matrix(probs, labels))[0], probs.shape[1])


def specificity(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """TN / (TN + FP) of the positive class (binary) or macro over classes."""
    return _reduce(_per_class_rates(confusion_matrix(probs, labels))[1], probs.shape[1])


def precision(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """TP / (TP + FP) of the positive class (binary) or macro over classes (0 for a class never predicted)."""
    return _reduce(_per_class_rates(confusion_matrix(probs, labels))[2], probs.shape[1])


def binary_roc_auc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve = P(score of a random positive > that of a random negative), ties count 1/2."""
    scores, positive = scores.double().flatten(), positive.bool().flatten()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    # average ranks over ties
    unique, inverse, counts = torch.unique(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2
    ranks[order] = mean_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the precision-recall curve as average precision: sum over thresholds of (R_k - R_{k-1}) P_k."""
    scores, positive = scores.double().flatten(), positive.bool().flatten()
    n_pos = int(positive.sum())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True)
    scores, hits = scores[order], positive[order].double()
    tp = torch.cumsum(hits, 0)
    fp = torch.cumsum(1 - hits, 0)
    # one operating point per distinct threshold: the last index of each run of equal scores
    last = torch.ones_like(scores, dtype=torch.bool)
    last[:-1] = scores[1:] != scores[:-1]
    tp, fp = tp[last], fp[last]
    prec = tp / (tp + fp)
    recall = tp / n_pos
    recall_prev = torch.cat([recall.new_zeros(1), recall[:-1]])
    return float(((recall - recall_prev) * prec).sum())


def _one_vs_rest(fn: Callable[[torch.Tensor, torch.Tensor], float], probs: torch.Tensor, labels: torch.Tensor) -> float:
    if probs.shape[1] == 2:
        return fn(probs[:, 1], labels == 1)
    values = torch.tensor([fn(probs[:, c], labels == c) for c in range(probs.shape[1])], dtype=torch.float64)
    return float(values[~values.isnan()].mean()) if (~values.isnan()).any() else float("nan")


def roc_auc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """ROC AUC of the positive class (binary) or macro one-vs-rest over the classes present."""
    return _one_vs_rest(binary_roc_auc, probs, labels)


def average_precision(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """AUPRC (average precision) of the positive class (binary) or macro one-vs-rest."""
    return _one_vs_rest(binary_average_precision, probs, labels)


def quadratic_kappa(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Cohen's kappa with quadratic weights (ordinal agreement, e.g. DR grades): 1 - sum(W*O) / sum(W*E)."""
    observed = confusion_matrix(probs, labels).double()
    n = observed.sum()
    if n == 0:
        return float("nan")
    c = observed.shape[0]
    idx = torch.arange(c, dtype=torch.float64)
    weights = (idx[:, None] - idx[None, :]) ** 2 / (c - 1) ** 2
    expected = observed.sum(dim=1)[:, None] * observed.sum(dim=0)[None, :] / n
    denom = (weights * expected).sum()
    return float(1 - (weights * observed).sum() / denom) if denom > 0 else float("nan")


_METRICS: dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "accuracy": accuracy,
    "auc": roc_auc,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "precision": precision,
    "auprc": average_precision,
}


def classification_report(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """All metrics as a dict: accuracy, auc, sensitivity, specificity, precision, auprc, (kappa for C > 2),
    n (number of samples) and confusion_matrix (nested list)."""
    probs, labels = torch.as_tensor(probs).double(), torch.as_tensor(labels).long().flatten()
    report: dict[str, Any] = {name: fn(probs, labels) for name, fn in _METRICS.items()}
    if probs.shape[1] > 2:
        report["kappa"] = quadratic_kappa(probs, labels)
    report["n"] = int(labels.numel())
    report["confusion_matrix"] = confusion_matrix(probs, labels).tolist()
    return report


def two_columns(probs: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` class probabilities with a single sigmoid output ``[N, 1]`` read as ``[1 - p, p]``
    (other shapes are returned as they are), so that every metric here sees ``C >= 2`` columns."""
    return torch.cat([1 - probs, probs], dim=1) if probs.shape[1] == 1 else probs


def _stack(items: Any) -> torch.Tensor:
    if isinstance(items, torch.Tensor):
        return items.detach()
    return torch.stack([torch.as_tensor(item).detach() for item in items])


class ClassificationMetrics(Metric):
    """Ignite metric that accumulates probabilities and labels over an epoch and reports every
    classification metric under its own name in ``engine.state.metrics``.

    Args:
        num_classes: number of classes ``C`` (the ``pred`` vectors must have ``C`` entries, or 1 for a
            single sigmoid output, read as ``[1 - p, p]``).
        output_transform: maps the engine output to ``(probs, labels)``: batched tensors ``[B, C]``
            and ``[B]``/``[B, 1]``, or lists of per-sample tensors (MONAI's decollated output,
            e.g. ``monai.handlers.from_engine(["pred", "label"])``).
        prefix: prepended to every metric name.

    Attach it under the name of one of its metrics (e.g. ``key_val_metric={"accuracy": metric}`` in
    a MONAI evaluator) so that this value serves as the engine's key metric; all the others are
    reported beside it. Under ``torch.distributed`` the predictions of all ranks are gathered before
    computing, so the metrics are those of the whole split. The last report (with the confusion
    matrix) is kept in ``self.report``.
    """

    def __init__(
        self,
        num_classes: int,
        output_transform: Callable = lambda x: x,
        prefix: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.num_classes = int(num_classes)
        self.prefix = prefix
        self.report: dict[str, Any] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        """Start afresh: no probabilities or labels collected."""
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def update(self, output: Sequence[Any]) -> None:
        """Collect one batch's ``(probs, labels)`` (a single sigmoid output read as ``[1 - p, p]``)."""
        probs, labels = output
        probs = _stack(probs).float().cpu()
        labels = _stack(labels).long().cpu().reshape(-1)
        if probs.dim() == 1:
            probs = probs[:, None]
        probs = two_columns(probs)
        if probs.shape[1] != max(self.num_classes, 2):
            raise ValueError(
                f"ClassificationMetrics expects {self.num_classes} class probabilities, got {probs.shape[1]}"
            )
        self._probs.append(probs)
        self._labels.append(labels)

    def compute(self) -> dict[str, Any]:
        """Gather all ranks' samples, keep the full report in ``report`` and return every metric (prefixed)."""
        probs = torch.cat(self._probs) if self._probs else torch.zeros(0, max(self.num_classes, 2))
        labels = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        # all ranks' samples, in rank order (uneven shards are padded for the exchange and cut back)
        probs, labels = evenly_divisible_all_gather(probs), evenly_divisible_all_gather(labels)
        self.report = classification_report(probs, labels)
        return {f"{self.prefix}{k}": v for k, v in self.report.items() if k not in ("n", "confusion_matrix")}

    def completed(self, engine: Engine, name: str) -> None:
        """Put every metric in ``engine.state.metrics``; a ValueError if ``name`` is not one of them."""
        results = self.compute()
        if name not in results:
            raise ValueError(
                f"attach ClassificationMetrics under one of its metric names {sorted(results)}, got {name!r}"
            )
        engine.state.metrics.update(results)
