"""The explanation report: classification and explanation metrics of one or more models and
explanation methods on one split, with confidence intervals, curves, a sanity check, a gallery
and an ``index.html`` that shows them together.

Run through the bundle (``python -m monai.bundle run explain_eval --config_file
"['bundle/configs/train.yaml','bundle/configs/explain.yaml']"``) or call :func:`explanation_report`.

Written to ``output_dir``:

* ``report.json`` / ``report.csv``: per model, its classification metrics; per model and method,
  each explanation metric's mean, 95 % bootstrap confidence interval, ``n`` and ``n_excluded``,
  and whether higher or lower is better;
* ``cases.csv``: every per-image value (image, label, prediction, model, method, metrics);
* ``faithfulness.png``: mean deletion and insertion curves;
* ``sanity.png`` and ``sanity.csv``: cascading randomisation (Spearman correlation per layer);
* ``gallery.png``: image, ground truth, SoftCAM's map of every class and each method's map;
* ``table.md``: the headline table in Markdown (AUC; localisation and faithfulness per method);
* ``paired.csv`` / ``paired.md``: each SoftCAM map against each other model/method on the same
  images: the mean per-image difference (SoftCAM minus the other), its 95 % bootstrap CI and a
  paired sign-flip permutation test (:func:`~monai_softcam.metrics.statistics.paired_difference`);
* ``index.html``: all of the above on one page.

**Both protocols** are reported side by side (``table.md`` has a table for each):

* this project's (``activation_precision``, ``pointing_game``, ``topk_precision``, ``deletion_auc``,
  ...): maps brought to the image grid bi/trilinearly, masks as annotated, top-k patches ranked by
  their mean, deletion tiles ranked by their mean, relative confidence on every image;
* the paper's (``paper_*``, :mod:`monai_softcam.metrics.paper`): each map upsampled cubically
  from the grid it was made on, masks dilated (``dilation``), top-k from the point values above a
  threshold with counts pooled over images (``paper_topk_precision``, and ``_tp`` on the images the
  model assigns to the explained class), and ``paper_deletion_auc``: deletion on the **diseased**
  images only (label other than ``healthy_class``), tiles ranked by their **max**, scored by
  accuracy for two classes (is the image still assigned to its class?) and by relative
  confidence for more.

The paper's top-k threshold is in raw map units, and each method has its own (``paper_thresholds``:
a number for every method, or ``{method: number}`` with 0 for the methods not named; SoftCAM's is
the settings' ``paper_threshold``). The reference's 1 is in SoftCAM's units: a cell of 1 adds
``1/N`` to the logit of an ``N``-cell map. Post-hoc maps have no such unit (Grad-CAM's are gradients
times activations, Integrated Gradients' sum to the logit over the pixels, Score-CAM's are weights
that sum to 1 over the channels), so by default they count every patch with positive evidence, the
most lenient choice for them. On a ResNet, Grad-CAM equals ``ReLU(CAM - b)/N``
(``tests/test_equivalence.py``): a SoftCAM threshold of 1 corresponds to ``(1 - b)/N`` there.

Rules: localisation metrics use only images with a non-empty mask (the others are counted in
``n_excluded``); deletion and insertion use only the images that **every** compared model
classifies correctly (as the paper, which compares two models at a time: with more models the set
is the images all of them get right), so that all methods are compared on the same images.
Pooled metrics (:data:`~monai_softcam.metrics.explanation.WEIGHTS`) are summarised as the pooled
ratio with an image-resampling bootstrap, and are left out of the paired tests (a per-image
difference of pooled ratios is not what they measure).

The per-image values are those of :func:`monai_softcam.metrics.explanation.explanation_values`
(the same function, names and settings as the bundle's evaluation), plus ``deletion_auc`` and
``insertion_auc``. :func:`explanation_report` runs three steps, each usable on its own:
:func:`collect` (one pass over the data: probabilities, per-image values, curves, gallery cases,
the sanity check), :func:`aggregate` (the report dict: classification metrics, means with
confidence intervals, mean curves) and :func:`write` (the files).
"""

from __future__ import annotations

import csv
import html
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_weights
from .explain import make_explainer, on_input_grid
from .metrics.classification import classification_report, two_columns
from .metrics.explanation import HIGHER_IS_BETTER, WEIGHTS, ExplanationSettings, explanation_values, is_paired
from .metrics.faithfulness import curve_auc, deletion_curve
from .metrics.paper import paper_point_grid, paper_upsample, paper_values
from .metrics.sanity import cascading_randomization
from .metrics.statistics import paired_difference, summarize
from .networks.outputs import probabilities, split_output, upsample_map
from .text import direction_arrow, table
from .utils import atomic_open
from .visualize import GalleryCase, render_gallery

__all__ = [
    "Aggregated",
    "Collected",
    "HIGHER_IS_BETTER",
    "aggregate",
    "collect",
    "explanation_report",
    "markdown_table",
    "method_thresholds",
    "paired_table",
    "write",
]

logger = logging.getLogger("monai_softcam")

Pair = tuple[str, str]  # (model name, method name)
CURVES = ("deletion", "insertion", "paper_deletion")
#: the key of :func:`method_thresholds` for one threshold of every method
ALL_METHODS = "*"


def _methods_for(model: dict[str, Any]) -> list[str]:
    methods = list(model.get("methods") or [])
    if not methods:
        raise ValueError(f"model {model.get('name')!r} has no explanation methods")
    return methods


def _prepare_models(models: Sequence[dict[str, Any]], device: torch.device) -> list[dict[str, Any]]:
    prepared, names = [], set()
    for entry in models:
        missing = [k for k in ("name", "network") if k not in entry]
        if missing:
            raise ValueError(f"each model needs 'name', 'network' and 'methods'; missing {missing} in {entry}")
        if entry["name"] in names:
            raise ValueError(f"two models are named {entry['name']!r}")
        names.add(entry["name"])
        network = entry["network"]
        if entry.get("checkpoint"):
            load_weights(network, entry["checkpoint"])
        network.to(device).eval()
        options = dict(entry.get("options") or {})
        explainers = {m: make_explainer(m, network, **options.get(m, {})) for m in _methods_for(entry)}
        prepared.append({"name": entry["name"], "network": network, "explainers": explainers, "options": options})
    return prepared


@dataclass
class Collected:
    """What :func:`collect` gathers in one pass over the data (every tensor in data order).

    Attributes:
        pairs: the ``(model, method)`` pairs, in the order of the models and their methods.
        labels: ``[N]`` true classes.
        explained_class: the setting the maps were computed with (None: each image's label).
        settings: the metric settings.
        thresholds: the paper's top-k threshold per method (:func:`method_thresholds`).
        probs: per model, ``[N, max(C, 2)]`` class probabilities (one output read as ``[1 - p, p]``).
        values: per pair, the per-image values of :func:`~monai_softcam.metrics.explanation.explanation_values`.
        curves: per pair, ``"deletion"`` and ``"insertion"`` curves ``[N, points]``.
        gallery: the cases of the gallery (image, label, mask, SoftCAM's maps of every class, each pair's map).
        sanity: the rows of the cascading randomisation check, per model and method.
    """

    pairs: list[Pair]
    labels: torch.Tensor
    explained_class: int | None
    settings: ExplanationSettings
    thresholds: dict[str, float]
    probs: dict[str, torch.Tensor]
    values: dict[Pair, dict[str, torch.Tensor]]
    curves: dict[Pair, dict[str, torch.Tensor]]
    gallery: list[dict[str, Any]] = field(default_factory=list)
    sanity: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Aggregated:
    """What :func:`aggregate` makes of a :class:`Collected`: the report dict (``report.json``),
    the per-image values of every pair with ``deletion_auc`` and ``insertion_auc`` (``cases.csv``)
    and the mean curves (``faithfulness.png``)."""

    report: dict[str, Any]
    per_case: dict[Pair, dict[str, torch.Tensor]]
    mean_curves: dict[Pair, dict[str, list[float]]]


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
    old_thresholds = legacy.pop("paper_topk_threshold", None)
    if old_thresholds is not None:
        warnings.warn(
            "explanation_report(paper_topk_threshold=...) is deprecated: use paper_thresholds=...",
            FutureWarning,
            stacklevel=2,
        )
        if paper_thresholds is not None:
            raise TypeError("explanation_report() got both 'paper_topk_threshold' and its new name 'paper_thresholds'")
        paper_thresholds = old_thresholds
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


def method_thresholds(settings: ExplanationSettings, given: float | dict[str, float] | None) -> dict[str, float]:
    """The paper's top-k threshold per method: SoftCAM's is ``settings.paper_threshold``; ``given``
    is one number for every method (SoftCAM's too) or ``{method: number}`` (0 for the methods not
    named: every patch of positive evidence counts). A method absent from the dict gets 0."""
    if given is None or isinstance(given, dict):
        given = dict(given or {})
        bad = {k: v for k, v in given.items() if isinstance(v, bool) or not isinstance(v, (int, float))}
        if bad:
            raise ValueError(f"paper_thresholds needs a number per method, got {bad}")
        return {"softcam": float(settings.paper_threshold), **{k: float(v) for k, v in given.items()}}
    if isinstance(given, (int, float)) and not isinstance(given, bool):
        return {ALL_METHODS: float(given)}
    raise ValueError(f"paper_thresholds must be a number or {{method: number}}, got {given!r}")


def collect(
    models: Sequence[dict[str, Any]],
    dataloader: Any,
    settings: ExplanationSettings,
    thresholds: dict[str, float] | None = None,
    gallery_cases: int = 6,
    sanity_cases: int = 4,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> Collected:
    """Step 1: run every model and method over ``dataloader`` (arguments as :func:`explanation_report`;
    ``thresholds``: :func:`method_thresholds`, None for its default), then the sanity check on the
    first ``sanity_cases`` images. Every explainer is closed at the end (its hooks leave the model)."""
    thresholds = method_thresholds(settings, None) if thresholds is None else dict(thresholds)
    device = torch.device(device)
    prepared = _prepare_models(models, device)
    try:
        return _collect(prepared, dataloader, settings, thresholds, gallery_cases, sanity_cases, device, seed, progress)
    finally:
        for model in prepared:
            for explainer in model["explainers"].values():
                explainer.close()


def _collect(
    prepared: list[dict[str, Any]],
    dataloader: Any,
    settings: ExplanationSettings,
    thresholds: dict[str, float],
    gallery_cases: int,
    sanity_cases: int,
    device: torch.device,
    seed: int,
    progress: bool,
) -> Collected:
    threshold_of = lambda method: thresholds.get(ALL_METHODS, thresholds.get(method, 0.0))  # noqa: E731
    explained_class = settings.explained_class
    default_protocol = replace(settings, protocol="default")
    pairs = [(m["name"], method) for m in prepared for method in m["explainers"]]
    values: dict[Pair, dict[str, list[torch.Tensor]]] = {pair: {} for pair in pairs}
    curves: dict[Pair, dict[str, list[torch.Tensor]]] = {pair: {kind: [] for kind in CURVES} for pair in pairs}
    probs: dict[str, list[torch.Tensor]] = {m["name"]: [] for m in prepared}
    labels_all: list[torch.Tensor] = []
    gallery: list[dict[str, Any]] = []
    sanity_images: list[torch.Tensor] = []
    sanity_classes: list[torch.Tensor] = []
    iterator = tqdm(dataloader, desc="explanation report", unit="batch") if progress else dataloader
    for batch in iterator:
        images = _plain_tensor(batch["image"]).to(device).float()
        labels = torch.as_tensor(batch["label"]).reshape(-1).long().to(device)
        masks = batch.get("mask")
        masks = None if masks is None else (_plain_tensor(masks).to(device)[:, 0] > 0.5)
        classes = labels if explained_class is None else torch.full_like(labels, int(explained_class))
        labels_all.append(labels.cpu())
        batch_maps: dict[Pair, torch.Tensor] = {}
        softcam_all: torch.Tensor | None = None
        diseased = labels != int(settings.healthy_class)
        spatial = images.shape[2:]
        point_grid = paper_point_grid(spatial, min(int(settings.patch), *spatial), int(settings.stride))
        for model in prepared:
            with torch.no_grad():
                logits, all_maps = split_output(model["network"](images))
            p = two_columns(probabilities(logits))
            probs[model["name"]].append(p.cpu())
            predicted = p.argmax(dim=1) == classes
            if all_maps is not None and softcam_all is None:
                softcam_all = all_maps.detach().cpu()
            for method, explainer in model["explainers"].items():
                native = explainer.native(images, classes).detach().float()
                maps = on_input_grid(native, spatial)
                pair = (model["name"], method)
                batch_maps[pair] = maps.cpu()
                per_image = explanation_values(maps, masks, labels == classes, default_protocol)
                if masks is not None:
                    per_image.update(
                        paper_values(
                            native,
                            masks,
                            predicted,
                            topk=settings.topk,
                            patch=settings.patch,
                            stride=settings.stride,
                            paper_threshold=threshold_of(method),
                            dilation=settings.dilation,
                        )
                    )
                for name, v in per_image.items():
                    values[pair].setdefault(name, []).append(v.cpu())
                for kind in ("deletion", "insertion"):
                    curve = deletion_curve(
                        model["network"],
                        images,
                        maps,
                        classes,
                        settings.patch,
                        settings.deletion_steps,
                        settings.deletion_baseline,
                        insertion=kind == "insertion",
                    )
                    curves[pair][kind].append(curve)
                curves[pair]["paper_deletion"].append(
                    _paper_deletion(
                        model["network"],
                        images,
                        paper_upsample(native, spatial, point_grid),
                        classes,
                        diseased,
                        settings,
                        binary=p.shape[1] == 2,
                    )
                )
        if len(sanity_images) < sanity_cases:
            sanity_images.append(images[: sanity_cases - len(sanity_images)].cpu())
            sanity_classes.append(classes[: sanity_images[-1].shape[0]].cpu())
        _collect_gallery(gallery, gallery_cases, images, labels, masks, softcam_all, batch_maps)
    if not labels_all or sum(t.numel() for t in labels_all) == 0:
        raise ValueError("the data loader gave no images")
    sanity = []
    if sanity_images:
        sanity = _sanity_check(
            prepared, torch.cat(sanity_images).to(device), torch.cat(sanity_classes).to(device), seed
        )
    return Collected(
        pairs=pairs,
        labels=torch.cat(labels_all),
        explained_class=explained_class,
        settings=settings,
        thresholds=thresholds,
        probs={name: torch.cat(parts) for name, parts in probs.items()},
        values={pair: {name: torch.cat(parts) for name, parts in v.items()} for pair, v in values.items()},
        curves={pair: {kind: torch.cat(parts) for kind, parts in c.items()} for pair, c in curves.items()},
        gallery=gallery,
        sanity=sanity,
    )


def _paper_deletion(network, images, maps, classes, diseased, settings, binary: bool) -> torch.Tensor:
    """The paper's deletion curve of the diseased images (NaN rows for the others): tiles ranked by
    their max, accuracy (two classes) or relative confidence (more)."""
    curve = torch.full((images.shape[0], int(settings.deletion_steps) + 1), float("nan"))
    rows = diseased.nonzero().flatten()
    if rows.numel():
        part = deletion_curve(
            network,
            images[rows],
            maps[rows],
            classes[rows],
            settings.patch,
            settings.deletion_steps,
            settings.deletion_baseline,
            rank="max",
            score="correct" if binary else "relative",
        )
        curve = curve[:, : part.shape[1]]
        curve[rows.cpu()] = part
    return curve


def _sanity_check(
    prepared: list[dict[str, Any]], images: torch.Tensor, classes: torch.Tensor, seed: int
) -> list[dict[str, Any]]:
    rows = []
    for model in prepared:
        for method in model["explainers"]:
            kwargs = model["options"].get(method, {})
            make = lambda net, method=method, kwargs=kwargs: make_explainer(method, net, **kwargs)  # noqa: E731
            for row in cascading_randomization(model["network"], make, images, classes, seed=seed):
                rows.append({"model": model["name"], "method": method, **row})
    return rows


def aggregate(collected: Collected, class_names: Sequence[str], seed: int = 0) -> Aggregated:
    """Step 2: classification metrics per model; per pair, each explanation metric's mean, bootstrap
    CI (seeded) and counts, deletion and insertion only on the images every model classifies correctly."""
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
                **summarize(v, seed=seed, weights=metrics.get(WEIGHTS[name]) if name in WEIGHTS else None),
                "higher_is_better": HIGHER_IS_BETTER.get(name),
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


PAIRED_METRICS = ("activation_precision", "pointing_game", "topk_precision", "deletion_auc")
PAPER_PAIRED_METRICS = ("paper_activation_precision", "paper_deletion_auc")


def _arrow(name: str) -> str:
    return direction_arrow(HIGHER_IS_BETTER.get(name))


def paired_table(report: dict[str, Any], metrics: Sequence[str] = PAIRED_METRICS) -> str:
    """SoftCAM minus each other model/method, per image: mean difference [95 % CI] (p, n)."""
    head = ["SoftCAM", "versus"] + [f"Δ {m.replace('_', ' ')} {_arrow(m)}" for m in metrics]
    rows = []
    found: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in report.get("paired", []):
        found.setdefault((row["softcam"], row["versus"]), {})[row["metric"]] = row
    for (reference, other), by_metric in found.items():
        cells = [reference, other]
        for m in metrics:
            r = by_metric.get(m)
            cells.append(
                "-"
                if not r or r["n"] == 0
                else f"{r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] (p={r['p_value']:.3g}, n={r['n']})"
            )
        rows.append(cells)
    return table(head, rows)


def write(output_dir: str, aggregated: Aggregated, collected: Collected, class_names: Sequence[str]) -> None:
    """Step 3: write every file of the report (see the module's description) into ``output_dir``."""
    os.makedirs(output_dir, exist_ok=True)
    report, per_case = aggregated.report, aggregated.per_case
    with atomic_open(os.path.join(output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2, default=float)
    with atomic_open(os.path.join(output_dir, "report.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["model", "method", "metric", "mean", "ci_low", "ci_high", "n", "n_excluded", "higher_is_better"]
        )
        for model, cls in report["classification"].items():
            for name, value in cls.items():
                if isinstance(value, float):
                    writer.writerow([model, "", name, value, "", "", cls["n"], 0, True])
        for model, methods in report["explanation"].items():
            for method, metrics in methods.items():
                for name, s in metrics.items():
                    writer.writerow(
                        [
                            model,
                            method,
                            name,
                            s["mean"],
                            s["ci_low"],
                            s["ci_high"],
                            s["n"],
                            s["n_excluded"],
                            s["higher_is_better"],
                        ]
                    )
    with atomic_open(os.path.join(output_dir, "cases.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        names = sorted({n for metrics in per_case.values() for n in metrics})
        writer.writerow(["case", "label", "model", "method", "predicted", *names])
        labels = collected.labels
        for (model, method), metrics in per_case.items():
            predicted = collected.probs[model].argmax(dim=1)
            for i in range(labels.numel()):
                row = [float(metrics[n][i]) if n in metrics else "" for n in names]
                writer.writerow([i, int(labels[i]), model, method, int(predicted[i]), *row])
    with atomic_open(os.path.join(output_dir, "sanity.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["model", "method", "layer", "spearman_mean", "spearman_std"])
        writer.writeheader()
        writer.writerows(collected.sanity)
    _plot_curves(os.path.join(output_dir, "faithfulness.png"), aggregated.mean_curves, report["settings"])
    _plot_sanity(os.path.join(output_dir, "sanity.png"), collected.sanity)
    sheet = render_gallery(_gallery_cases(collected.gallery, class_names), tile=140, caption_chars=26)
    with atomic_open(os.path.join(output_dir, "gallery.png"), "wb") as f:
        sheet.save(f, format="PNG")
    with atomic_open(os.path.join(output_dir, "table.md"), "w") as f:
        f.write("This project's protocol:\n\n" + markdown_table(report))
        f.write("\nThe paper's protocol:\n\n" + markdown_table(report, PAPER_TABLE_METRICS))
    with atomic_open(os.path.join(output_dir, "paired.csv"), "w", newline="") as f:
        columns = ["softcam", "versus", "metric", "mean", "ci_low", "ci_high", "n", "p_value", "higher_is_better"]
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report.get("paired", []))
    with atomic_open(os.path.join(output_dir, "paired.md"), "w") as f:
        f.write(paired_table(report) + "\n" + paired_table(report, PAPER_PAIRED_METRICS))
    _write_html(os.path.join(output_dir, "index.html"), report)


def _plain_tensor(x: Any) -> torch.Tensor:
    """A torch.Tensor without MONAI's metadata (faster, and what the explainers expect)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _plain(report: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in report.items()}


def _collect_gallery(gallery, limit, images, labels, masks, softcam_all, batch_maps) -> None:
    """Keep the first ``limit`` cases, preferring annotated ones (half of the places at most for the others)."""
    for i in range(images.shape[0]):
        if len(gallery) >= limit:
            return
        annotated = masks is not None and bool(masks[i].any())
        if not annotated and sum(1 for g in gallery if not g["annotated"]) >= limit // 2:
            continue
        gallery.append(
            {
                "image": images[i].cpu(),
                "label": int(labels[i]),
                "mask": None if masks is None else masks[i].cpu(),
                "annotated": annotated,
                "softcam": None if softcam_all is None else softcam_all[i],
                "maps": {pair: maps[i] for pair, maps in batch_maps.items()},
            }
        )


def _gallery_cases(gallery: list[dict[str, Any]], class_names: Sequence[str]) -> list[GalleryCase]:
    """One gallery row per case: the image, SoftCAM's maps of every class (one colour scale; the
    first SoftCAM model's), then each post-hoc method's map (each on its own scale)."""
    cases = []
    for case in gallery:
        groups = []
        if case["softcam"] is not None:
            up = upsample_map(case["softcam"].float(), case["image"].shape[1:])
            groups.append([(f"SoftCAM: {name}", up[c]) for c, name in enumerate(class_names)])
        groups += [[(f"{model}: {method}", m)] for (model, method), m in case["maps"].items() if method != "softcam"]
        cases.append(GalleryCase(case["image"], f"label: {class_names[case['label']]}", groups, case["mask"]))
    return cases


def _summary_text(report: dict[str, Any], output_dir: str) -> str:
    lines = [
        f"explanation report ({report['images']} images; faithfulness on the {report['faithfulness_images']} "
        f"that every model classifies correctly):"
    ]
    for model, cls in report["classification"].items():
        lines.append(f"  {model}: accuracy {cls['accuracy']:.4f}, auc {cls['auc']:.4f}")
    names = ["activation_precision", "pointing_game", "topk_precision", "deletion_auc", "insertion_auc"]
    lines.append("  " + f"{'model / method':<32}" + "".join(f"{n:>24}" for n in names))
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = [f"{metrics[n]['mean']:.3f}" if n in metrics else "-" for n in names]
            lines.append("  " + f"{model + ' / ' + method:<32}" + "".join(f"{c:>24}" for c in cells))
    paper = ["paper_activation_precision", "paper_topk_precision", "paper_topk_precision_tp", "paper_deletion_auc"]
    lines.append(
        f"  the paper's protocol (deletion on the {report.get('paper_deletion_images', 0)} diseased images that "
        "every model classifies correctly):"
    )
    lines.append("  " + f"{'model / method':<32}" + "".join(f"{n:>28}" for n in paper))
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = [f"{metrics[n]['mean']:.3f}" if n in metrics else "-" for n in paper]
            lines.append("  " + f"{model + ' / ' + method:<32}" + "".join(f"{c:>28}" for c in cells))
    lines.append(f"  report: {os.path.join(output_dir, 'index.html')} ({report['seconds']} s)")
    return "\n".join(lines)


TABLE_METRICS = ("activation_precision", "pointing_game", "topk_precision", "deletion_auc", "insertion_auc")
PAPER_TABLE_METRICS = (
    "paper_activation_precision",
    "paper_topk_precision",
    "paper_topk_precision_tp",
    "paper_topk_patches",
    "paper_deletion_auc",
)


def markdown_table(report: dict[str, Any], metrics: Sequence[str] = TABLE_METRICS) -> str:
    """The headline table: per model and method, the model's ROC AUC and each metric's mean [95 % CI]."""
    head = ["model", "method", "ROC AUC"] + [f"{m.replace('_', ' ')} {_arrow(m)}".strip() for m in metrics]
    rows = []
    for model, methods in report["explanation"].items():
        for method, values in methods.items():
            cells = [model, method, f"{report['classification'][model]['auc']:.3f}"]
            for m in metrics:
                v = values.get(m)
                cells.append(
                    "-" if not v or v["n"] == 0 else f"{v['mean']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                )
            rows.append(cells)
    return table(head, rows)


def _figure():
    import matplotlib  # heavy: only for the report's figures

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy: only for the report's figures

    return plt


def _save(fig, path: str) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def _plot_curves(path: str, mean_curves, settings) -> None:
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4))
    titles = {
        "deletion": "deletion: relative confidence (lower area is better)",
        "insertion": "insertion: relative confidence (higher area is better)",
        "paper_deletion": "the paper's deletion, diseased images (lower is better)",
    }
    for ax, kind in zip(axes, CURVES):
        for (model, method), c in mean_curves.items():
            if c.get(kind):
                x = np.linspace(0, 1, len(c[kind])) * (len(c[kind]) - 1)
                ax.plot(x, c[kind], marker="o", ms=3, label=f"{model} / {method}")
        ax.set_title(titles[kind], fontsize=10)
        ax.set_xlabel(
            f"patches of {settings['patch']} px {'restored' if kind == 'insertion' else 'removed'}"
            + (", ranked by max" if kind == "paper_deletion" else "")
        )
        ax.set_ylabel("accuracy (2 classes) or min(p_i, p) / p" if kind == "paper_deletion" else "min(p_i, p) / p")
        ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3)
    if any(c.get(kind) for c in mean_curves.values() for kind in CURVES):
        axes[1].legend(fontsize=8, loc="lower right")
    else:
        for ax in axes:
            ax.text(0.5, 0.5, "no image that every model classifies correctly", ha="center", transform=ax.transAxes)
    _save(fig, path)
    plt.close(fig)


def _plot_sanity(path: str, sanity) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(8, 4))
    series: dict[str, list[dict[str, Any]]] = {}
    for row in sanity:
        series.setdefault(f"{row['model']} / {row['method']}", []).append(row)
    positions: dict[int, list[str]] = {}
    for name, rows in series.items():
        ax.plot(range(len(rows)), [r["spearman_mean"] for r in rows], marker="o", ms=3, label=name)
        for i, r in enumerate(rows):
            label = r["layer"].replace("backbone.features.", "")
            if label not in positions.setdefault(i, []):
                positions[i].append(label)
    ax.set_xticks(sorted(positions), ["/".join(positions[i]) for i in sorted(positions)], rotation=45, ha="right")
    ax.set_ylabel("Spearman rank correlation with the original map")
    ax.set_title("cascading randomisation (from the output layer down): should drop")
    ax.axhline(0, color="grey", lw=0.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)


def _write_html(path: str, report: dict[str, Any]) -> None:
    def cell(s: dict[str, Any]) -> str:
        if s["n"] == 0:
            return "<td>-</td>"
        return f"<td>{s['mean']:.3f} <small>[{s['ci_low']:.3f}, {s['ci_high']:.3f}]</small></td>"

    names = sorted({n for methods in report["explanation"].values() for m in methods.values() for n in m})
    arrows = {True: " &uarr;", False: " &darr;", None: ""}
    head = "".join(f"<th>{html.escape(n)}{arrows[HIGHER_IS_BETTER.get(n)]}</th>" for n in names)
    body = []
    for model, methods in report["explanation"].items():
        for method, metrics in methods.items():
            cells = "".join(cell(metrics[n]) if n in metrics else "<td>-</td>" for n in names)
            body.append(f"<tr><td>{html.escape(model)}</td><td>{html.escape(method)}</td>{cells}</tr>")
    cls_names = ["accuracy", "auc", "sensitivity", "specificity", "precision", "auprc"]
    cls_rows = "".join(
        f"<tr><td>{html.escape(m)}</td>" + "".join(f"<td>{c[n]:.4f}</td>" for n in cls_names if n in c) + "</tr>"
        for m, c in report["classification"].items()
    )
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>SoftCAM explanation report</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,td:nth-child(2){{text-align:left}}
small{{color:#666}} img{{max-width:100%;border:1px solid #eee}}</style></head><body>
<h1>Explanation report</h1>
<p>{report['images']} images; explained class: {html.escape(str(report['explained_class'] or "each image's label"))};
deletion and insertion on the {report['faithfulness_images']} images that every model classifies correctly
(the paper's deletion, <code>paper_deletion_auc</code>, on the {report.get('paper_deletion_images', 0)} diseased ones);
localisation metrics on images with a non-empty annotation. Columns <code>paper_*</code> follow the paper's
protocol (cubic upsampling, dilated masks, top-k above a threshold pooled over images; see
<code>monai_softcam.metrics.explanation</code>), the others this project's. Values: mean [95 % bootstrap CI];
&uarr; higher is better, &darr; lower is better. Settings: {html.escape(json.dumps(report['settings']))}.</p>
<h2>Classification</h2>
<table><tr><th>model</th>{''.join(f'<th>{n}</th>' for n in cls_names)}</tr>{cls_rows}</table>
<h2>Explanations</h2>
<table><tr><th>model</th><th>method</th>{head}</tr>{''.join(body)}</table>
<p>Tables: <a href="report.csv">report.csv</a>, per image: <a href="cases.csv">cases.csv</a>,
<a href="report.json">report.json</a>.</p>
<h2>Faithfulness curves</h2><img src="faithfulness.png" alt="deletion and insertion curves">
<h2>Sanity check: cascading model-parameter randomisation</h2>
<p>The rank correlation between each map and the map of the progressively randomised model must drop
(<a href="sanity.csv">sanity.csv</a>).</p><img src="sanity.png" alt="randomisation check">
<h2>Gallery</h2><p>Yellow outline: ground truth. Red: evidence for the class, blue: against it.</p>
<img src="gallery.png" alt="maps of each method">
<p><small>Written in {report['seconds']} s.</small></p>
</body></html>
"""
    with atomic_open(path, "w") as f:
        f.write(page)
