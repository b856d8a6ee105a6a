"""Step 1 of the explanation report: one pass over the data (probabilities, per-image values, curves, gallery
cases), then the randomisation sanity check."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import torch
from tqdm import tqdm

from ..checkpoint import load_weights
from ..explain import make_explainer, on_input_grid
from ..metrics.classification import two_columns
from ..metrics.explanation import ExplanationSettings, explanation_values
from ..metrics.faithfulness import deletion_curve
from ..metrics.paper import (
    cubic_resize,
    paper_consistency,
    paper_map_grid,
    paper_point_grid,
    paper_upsample,
    paper_values,
)
from ..metrics.sanity import cascading_randomization
from ..networks.outputs import probabilities, split_output

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
        sanity: the rows of the cascading randomisation check, per model and method."""

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


def method_thresholds(settings: ExplanationSettings, given: float | dict[str, float] | None) -> dict[str, float]:
    """The paper's top-k threshold per method: SoftCAM's is ``settings.paper_threshold``; ``given`` is one number
    for every method (SoftCAM's too) or ``{method: number}`` (0 for the methods not
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
    """Step 1: run every model and method over ``dataloader`` (arguments as
    :func:`~monai_softcam.explanation_report.report.explanation_report`; ``thresholds``:
    :func:`method_thresholds`, None for its default), then the sanity check on the first ``sanity_cases``
    images. Every explainer is closed at the end (its hooks leave the model)."""
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
                # the paper's metrics see every map on the reference's grid (post-hoc maps resized to it)
                paper_native = cubic_resize(native, paper_map_grid(native.shape[1:], settings.paper_map_size))
                per_image["paper_consistency"] = paper_consistency(paper_native, labels == classes)
                if masks is not None:
                    keywords = {**settings.paper_keywords(), "paper_threshold": threshold_of(method)}
                    per_image.update(paper_values(paper_native, masks, predicted, **keywords))
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
                        paper_upsample(paper_native, spatial, point_grid),
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
    """The paper's deletion curve of the diseased images (NaN rows for the others): tiles ranked by their max,
    accuracy (two classes) or relative confidence (more)."""
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


def _plain_tensor(x: Any) -> torch.Tensor:
    """A torch.Tensor without MONAI's metadata (faster, and what the explainers expect)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


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
