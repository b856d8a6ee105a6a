"""Step 2 of the explanation report: classification metrics per model; per model and method, each metric's mean
with its bootstrap CI and counts, mean curves, and the paired differences."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..metrics.classification import classification_report
from ..metrics.explanation import HIGHER_IS_BETTER, higher_is_better, is_paired, weight_of
from ..metrics.faithfulness import curve_auc
from ..metrics.statistics import paired_difference, summarize
from .collection import CURVES, Collected, Pair


@dataclass
class Aggregated:
    """What :func:`aggregate` makes of a :class:`~monai_softcam.explanation_report.collection.Collected`: the
    report dict (``report.json``), the per-image values of every pair with ``deletion_auc`` and
    ``insertion_auc`` (``cases.csv``) and the mean curves (``faithfulness.png``)."""

    report: dict[str, Any]
    per_case: dict[Pair, dict[str, torch.Tensor]]
    mean_curves: dict[Pair, dict[str, list[float]]]


def aggregate(collected: Collected, class_names: Sequence[str], seed: int = 0) -> Aggregated:
    """Step 2: classification metrics per model; per pair, each explanation metric's mean, bootstrap CI (seeded)
    and counts, deletion and insertion only on the images every model classifies correctly."""
    labels = collected.labels
    correct_all = torch.ones_like(labels, dtype=torch.bool)
    for p in collected.probs.values():
        correct_all &= p.argmax(dim=1) == labels
    explained = collected.explained_class
    report: dict[str, Any] = {
        "images": int(labels.numel()),
        "faithfulness_images": int(correct_all.sum()),
        "explained_class": explained if explained is None else class_names[int(explained)],
        "settings": {**collected.settings.to_dict(), "paper_thresholds": dict(collected.thresholds)},
        "classification": {name: _plain(classification_report(p, labels)) for name, p in collected.probs.items()},
        "explanation": {},
    }
    per_case: dict[Pair, dict[str, torch.Tensor]] = {}
    mean_curves: dict[Pair, dict[str, list[float]]] = {}
    for pair in collected.pairs:
        metrics = dict(collected.values[pair])
        mean_curves[pair] = {}
        for kind in CURVES:
            c = collected.curves[pair].get(kind)
            if c is None:
                continue
            used = correct_all & torch.isfinite(c).all(dim=1)
            auc = curve_auc(c)
            metrics[f"{kind}_auc"] = torch.where(used, auc, torch.full_like(auc, float("nan")))
            mean_curves[pair][kind] = c[used].mean(0).tolist() if used.any() else []
        per_case[pair] = metrics
        report["explanation"].setdefault(pair[0], {})[pair[1]] = {
            name: {
                **summarize(v, seed=seed, weights=metrics.get(weight_of(name)) if weight_of(name) else None),
                "higher_is_better": higher_is_better(name),
            }
            for name, v in metrics.items()
        }
    report["paper_deletion_images"] = int((correct_all & (labels != int(collected.settings.healthy_class))).sum())
    report["curves"] = {f"{m}/{k}": v for (m, k), v in mean_curves.items()}
    report["sanity"] = collected.sanity
    report["paired"] = _paired(per_case, seed)
    return Aggregated(report, per_case, mean_curves)


def _paired(per_case: dict[Pair, dict[str, torch.Tensor]], seed: int) -> list[dict[str, Any]]:
    """Every SoftCAM pair against every other pair, metric by metric, on the same images (see ``paired.csv``)."""
    rows = []
    for reference in [p for p in per_case if p[1] == "softcam"]:
        for other in [p for p in per_case if p != reference]:
            shared = [n for n in per_case[reference] if n in per_case[other] and is_paired(n)]
            for name in shared:
                result = paired_difference(per_case[reference][name], per_case[other][name], seed=seed)
                rows.append(
                    {
                        "softcam": "/".join(reference),
                        "versus": "/".join(other),
                        "metric": name,
                        "higher_is_better": HIGHER_IS_BETTER[name],
                        **result,
                    }
                )
    return rows


def _plain(report: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in report.items()}
