"""The explanation report in one call: collect, aggregate, write."""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import torch

from ..metrics.explanation import ExplanationSettings
from ..utils import renamed_keywords
from .aggregation import aggregate
from .collection import collect, method_thresholds
from .files import _summary_text, write

logger = logging.getLogger("monai_softcam")


@renamed_keywords(paper_topk_threshold="paper_thresholds")
def explanation_report(
    models: Sequence[dict[str, Any]],
    dataloader: Any,
    output_dir: str,
    class_names: Sequence[str],
    settings: ExplanationSettings | None = None,
    paper_thresholds: float | dict[str, float] | None = None,
    gallery_cases: int = 6,
    sanity_cases: int = 4,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    **legacy: Any,
) -> dict[str, Any]:
    """Assess every ``(model, method)`` pair on the images of ``dataloader``; write the report.

    Args:
        models: ``[{"name", "network", "checkpoint" (optional), "methods": [...], "options":
            {method: kwargs}}]``; methods are names of :data:`monai_softcam.explain.EXPLAINERS`
            (``softcam`` needs a SoftCAM network with ``return_maps=True``).
        dataloader: batches of ``{"image": [B, C, *S], "label": [B], "mask": [B, 1, *S] (optional)}``,
            preprocessed as for the network (masks on the image's grid).
        class_names: one name per class.
        settings: the metrics' :class:`~monai_softcam.metrics.explanation.ExplanationSettings` (the
            bundle's ``explanation``, as its evaluation metric uses it): the explained class (None:
            each image's own label; consistency counts that class's images as the positive ones),
            top-k, patch (of the top-k and of deletion), stride, pointing tolerance, dilation,
            deletion steps and baseline, the healthy class the paper's deletion leaves out, and
            SoftCAM's top-k threshold. None: ``ExplanationSettings(explained_class=None, dilation=1)``.
        paper_thresholds: the paper's top-k threshold of the other methods, in their raw units (see
            above): one number for every method, or ``{method: number}`` (0 for the methods not
            named; SoftCAM's is ``settings.paper_threshold`` unless named).
        gallery_cases: images in the picture.
        sanity_cases: images in the randomisation check.
        device: where the models run.
        seed: of the bootstrap, the permutation tests and the randomisation check.
        progress: show a progress bar.
        legacy: the older flat keywords (``explained_class``, ``topk``, ``topk_patch``,
            ``topk_stride``, ``pointing_tolerance``, ``deletion_patch``, ``deletion_steps``,
            ``deletion_baseline``, ``dilation``, ``healthy_class``; ``paper_topk_threshold`` for
            ``paper_thresholds``), applied with a ``FutureWarning``.

    Returns the report dict (also in ``report.json``).
    """
    settings = ExplanationSettings.resolve(settings, legacy, "explanation_report", explained_class=None, dilation=1)
    thresholds = method_thresholds(settings, paper_thresholds)
    start = time.time()
    os.makedirs(output_dir, exist_ok=True)
    collected = collect(
        models,
        dataloader,
        settings,
        thresholds,
        gallery_cases=gallery_cases,
        sanity_cases=sanity_cases,
        device=device,
        seed=seed,
        progress=progress,
    )
    aggregated = aggregate(collected, class_names, seed=seed)
    aggregated.report["seconds"] = round(time.time() - start, 1)
    write(output_dir, aggregated, collected, class_names)
    report = aggregated.report
    logger.info(
        "explanation report of %d images written to %s in %.1f s", report["images"], output_dir, report["seconds"]
    )
    print(_summary_text(report, output_dir))
    return report
