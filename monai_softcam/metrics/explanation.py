"""Explanation metrics: does a map point at the annotation, is it faithful to the model, is it sparse?

Conventions shared by every function (2D and 3D alike):

* ``maps``: ``[B, *spatial]``, one map per sample (the map of the explained class, on the grid of
  the image or the mask; bring SoftCAM's coarse maps there first, e.g. with
  :func:`monai_softcam.networks.upsample_map`). Signed maps are allowed; each metric says how it
  treats negative values. A ``[B, 1, *spatial]`` channel is accepted and dropped.
* ``masks``: the annotation, same shape as ``maps`` (bool, or numbers where > 0.5 is inside).
* The result is one value per sample, ``[B]`` (``[B, k]`` for top-k precision), float32.

:func:`explanation_values` computes the whole set for one batch, one ``[B]`` tensor per metric
name (the names of :data:`HIGHER_IS_BETTER`); :class:`ExplanationMetrics` (the bundle's
evaluation) and the explanation report both use it, so a metric has one name and one value
wherever it is reported.

Bad input has fixed rules:

* a map holding NaN or inf raises a ``ValueError`` naming the samples;
* masks of another shape than the maps raise a ``ValueError`` giving both shapes;
* an **empty mask** (no annotated pixel, e.g. a healthy image) makes the localisation metrics of
  that sample ``NaN``: it is excluded from means, and :func:`summarize` counts it (``n_excluded``);
* a map with no evidence where a metric needs some (all zeros, or nothing positive) scores the
  worst value of that metric (0), because it points at nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.utils import evenly_divisible_all_gather

from ..networks.outputs import probabilities, split_output, upsample_map
from .classification import _stack

__all__ = [
    "ExplanationMetrics",
    "HIGHER_IS_BETTER",
    "activation_consistency",
    "activation_precision",
    "activation_sensitivity",
    "bootstrap_ci",
    "completeness_error",
    "deletion_curve",
    "curve_auc",
    "energy_pointing_game",
    "explanation_output",
    "explanation_values",
    "gini",
    "paired_difference",
    "pointing_game",
    "summarize",
    "topk_localisation_precision",
]

#: every reported explanation metric and its direction (True: higher is better)
HIGHER_IS_BETTER = {
    "activation_precision": True,
    "activation_sensitivity": True,
    "pointing_game": True,
    "energy_pointing_game": True,
    "topk_precision": True,
    "consistency": True,
    "gini": True,
    "completeness_error": False,
    "deletion_auc": False,
    "insertion_auc": True,
}


def _check_maps(maps: Any, masks: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    maps = torch.as_tensor(maps).float()
    if maps.dim() >= 3 and maps.shape[1] == 1 and (masks is None or torch.as_tensor(masks).dim() == maps.dim()):
        maps = maps[:, 0]
    if maps.dim() < 2:
        raise ValueError(f"maps must be [B, *spatial] (one map per sample), got shape {tuple(maps.shape)}")
    bad = (~torch.isfinite(maps.reshape(maps.shape[0], -1))).any(dim=1)
    if bad.any():
        raise ValueError(f"the map(s) of sample(s) {bad.nonzero().flatten().tolist()} contain NaN or inf")
    if masks is None:
        return maps, None
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != maps.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match the maps of shape {tuple(maps.shape)}: "
            "bring the maps to the mask's grid first (e.g. monai_softcam.networks.upsample_map)"
        )
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    return maps, masks


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _empty_to_nan(values: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``values`` (``[B]`` or ``[B, k]``) with the rows of the samples whose mask is empty set to NaN."""
    empty = ~_flat(masks).any(dim=1)
    return values.masked_fill(empty.reshape(-1, *[1] * (values.dim() - 1)), float("nan"))


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den, and 0 where den is 0."""
    return torch.where(den > 0, num / den.clamp(min=torch.finfo(num.dtype).tiny), torch.zeros_like(num))


def _relu_minmax(maps: torch.Tensor) -> torch.Tensor:
    a = _flat(maps).clamp(min=0)
    lo, hi = a.min(dim=1, keepdim=True).values, a.max(dim=1, keepdim=True).values
    return _ratio(a - lo, (hi - lo).expand_as(a))


def activation_precision(maps: Any, masks: Any) -> torch.Tensor:
    """Share of the map's positive mass that lies inside the annotation (the paper's metric).

    ``a = minmax(relu(map))`` (scaled to [0, 1] per sample), ``AP = sum(a * mask) / sum(a)``.
    In [0, 1], **higher is better**: 1 when all evidence is inside the annotation.
    """
    maps, masks = _check_maps(maps, masks)
    a, m = _relu_minmax(maps), _flat(masks).float()
    return _empty_to_nan(_ratio((a * m).sum(1), a.sum(1)), masks)


def activation_sensitivity(maps: Any, masks: Any) -> torch.Tensor:
    """How much of the annotation the map covers (the paper's metric; penalises missed regions).

    ``a = minmax(relu(map))``, ``AS = sum(a * mask) / sum(mask)``. In [0, 1], **higher is
    better**: 1 when the map is at its maximum over the whole annotation.
    """
    maps, masks = _check_maps(maps, masks)
    a, m = _relu_minmax(maps), _flat(masks).float()
    return _empty_to_nan((a * m).sum(1) / m.sum(1).clamp(min=1), masks)


def energy_pointing_game(maps: Any, masks: Any) -> torch.Tensor:
    """Energy-based pointing game (Wang et al., Score-CAM): ``sum(relu(map) * mask) / sum(relu(map))``.

    Like :func:`activation_precision` but on the unscaled positive map (no min-max shift). In
    [0, 1], **higher is better**.
    """
    maps, masks = _check_maps(maps, masks)
    e, m = _flat(maps).clamp(min=0), _flat(masks).float()
    return _empty_to_nan(_ratio((e * m).sum(1), e.sum(1)), masks)


def pointing_game(maps: Any, masks: Any, tolerance: int = 0) -> torch.Tensor:
    """Pointing game (Zhang et al.): 1 when the map's maximum lies inside the annotation (grown by
    ``tolerance`` pixels on every side), else 0. Ties go to the first maximum in memory order.
    **Higher is better** (the mean over samples is the hit rate)."""
    maps, masks = _check_maps(maps, masks)
    grown = masks
    if tolerance > 0:
        pool = (F.max_pool2d, F.max_pool3d)[maps.dim() - 3] if maps.dim() in (3, 4) else None
        if pool is None:
            raise ValueError("pointing_game tolerance needs 2D or 3D maps")
        grown = pool(masks[:, None].float(), 2 * tolerance + 1, stride=1, padding=tolerance)[:, 0] > 0
    best = _flat(maps).argmax(dim=1)
    hit = _flat(grown).gather(1, best[:, None])[:, 0].float()
    return _empty_to_nan(hit, masks)


def _pool_fns(spatial_dims: int) -> tuple[Callable, Callable]:
    if spatial_dims == 2:
        return F.avg_pool2d, F.max_pool2d
    if spatial_dims == 3:
        return F.avg_pool3d, F.max_pool3d
    raise ValueError(f"maps must be 2D or 3D, got {spatial_dims} spatial dimensions")


def topk_localisation_precision(maps: Any, masks: Any, k: int = 30, patch_size: int = 33, stride: int = 8) -> torch.Tensor:
    """Top-k localisation precision (the paper's metric), for every k from 1 to ``k``: ``[B, k]``.

    Patches of ``patch_size`` on a grid of step ``stride`` are scored by their mean evidence; the
    highest-scoring patch is taken, patches overlapping it are suppressed, and so on ``k`` times.
    Column ``j`` is the fraction of the first ``j + 1`` patches that overlap the annotation (any
    annotated pixel inside). When fewer than ``j + 1`` non-overlapping patches fit in the image,
    the value is that of all the patches found. In [0, 1], **higher is better**.
    """
    maps, masks = _check_maps(maps, masks)
    dims = maps.dim() - 1
    avg, mx = _pool_fns(dims)
    if any(s < patch_size for s in maps.shape[1:]):
        raise ValueError(f"patch_size {patch_size} is larger than the maps' spatial size {tuple(maps.shape[1:])}")
    scores = _flat(avg(maps[:, None], patch_size, stride=stride)[:, 0]).clone()
    hits = _flat(mx(masks[:, None].float(), patch_size, stride=stride)[:, 0] > 0)
    grid = avg(maps[:1, None], patch_size, stride=stride).shape[2:]
    starts = torch.stack(torch.meshgrid(*[torch.arange(n, device=maps.device) * stride for n in grid], indexing="ij"), -1)
    starts = starts.reshape(-1, dims)
    found = torch.zeros(maps.shape[0], device=maps.device)
    good = torch.zeros(maps.shape[0], device=maps.device)
    out = []
    rows = torch.arange(maps.shape[0], device=maps.device)
    for _ in range(int(k)):
        best = scores.argmax(dim=1)
        valid = torch.isfinite(scores[rows, best])
        found += valid.float()
        good += (valid & hits[rows, best]).float()
        overlap = ((starts[None] - starts[best][:, None]).abs() < patch_size).all(dim=-1)
        scores.masked_fill_(overlap, float("-inf"))
        out.append(good / found.clamp(min=1))
    return _empty_to_nan(torch.stack(out, dim=1), masks)


def activation_consistency(maps: Any, positive: Any) -> torch.Tensor:
    """Whether the sign of the evidence agrees with the truth (the paper's metric).

    For a sample of the explained class (``positive`` True, e.g. diseased): the share of positive
    evidence, ``sum(relu(map)) / sum(|map|)``; for the others (healthy): the share of negative
    evidence, ``sum(relu(-map)) / sum(|map|)``. In [0, 1], **higher is better**. Meaningful for
    signed maps (SoftCAM); maps that are non-negative by construction (Grad-CAM) score 0 on
    the negative samples.
    """
    maps, _ = _check_maps(maps)
    m = _flat(maps)
    positive = torch.as_tensor(positive, device=m.device).reshape(-1).bool()
    if positive.numel() != m.shape[0]:
        raise ValueError(f"positive needs one flag per map ({m.shape[0]}), got {positive.numel()}")
    pos, neg = m.clamp(min=0).sum(1), (-m).clamp(min=0).sum(1)
    return _ratio(torch.where(positive, pos, neg), pos + neg)


def gini(maps: Any) -> torch.Tensor:
    """Sparseness as the Gini index of ``|map|`` (Hurley & Rickard; Chalasani et al.):
    ``G = 1 - 2 * sum_k (v_k / ||v||_1) * (n - k + 1/2) / n`` over the ``n`` values sorted
    ascending. 0 for a constant (or all-zero) map, ``1 - 1/n`` for a single non-zero value.
    **Higher is sparser**; whether sparser is better depends on the task (a lesion vs a diffuse
    finding)."""
    maps, _ = _check_maps(maps)
    v = _flat(maps).abs().sort(dim=1).values
    n = v.shape[1]
    k = torch.arange(1, n + 1, device=v.device, dtype=v.dtype)
    total = v.sum(1, keepdim=True)
    g = 1 - 2 * (_ratio(v, total.expand_as(v)) * (n - k + 0.5) / n).sum(1)
    return torch.where(total[:, 0] > 0, g, torch.zeros_like(g))


def completeness_error(logits: Any, maps: Any) -> torch.Tensor:
    """SoftCAM's completeness check: ``max_c |logits[b, c] - mean(maps[b, c])|`` per sample, for
    ``maps`` ``[B, C, *spatial]`` at the network's resolution. 0 (to float precision) for SoftCAM:
    **lower is better**; anything above ~1e-4 means the maps are not the model's logits."""
    logits = torch.as_tensor(logits).float()
    maps = torch.as_tensor(maps).float()
    if maps.shape[:2] != logits.shape:
        raise ValueError(f"maps [B, C, ...] {tuple(maps.shape)} do not match logits [B, C] {tuple(logits.shape)}")
    return (logits - maps.flatten(2).mean(dim=2)).abs().amax(dim=1)


def explanation_values(
    maps: Any,
    masks: Any,
    positive: Any,
    *,
    topk: int = 5,
    patch_size: int = 33,
    stride: int = 8,
    pointing_tolerance: int = 0,
) -> dict[str, torch.Tensor]:
    """Every map-only explanation metric of one batch: one ``[B]`` float32 tensor per name.

    Args:
        maps: ``[B, *s]``, the map of the explained class of each sample, on the grid it was
            computed on (a post-hoc map on the image grid; SoftCAM's map on the network's grid).
        masks: the annotation, ``[B, *S]`` or ``[B, 1, *S]`` (bool, or > 0.5 inside), or None.
        positive: ``[B]`` flags, True for the samples of the explained class (for consistency).
        topk, patch_size, stride: of :func:`topk_localisation_precision`, reported at ``k = topk``;
            the patch is reduced to the maps' smallest side where it would not fit.
        pointing_tolerance: of :func:`pointing_game`.

    Returns ``consistency`` and ``gini``, measured on ``maps`` as given; with masks also
    ``activation_precision``, ``activation_sensitivity``, ``energy_pointing_game``,
    ``pointing_game`` and ``topk_precision``, measured on the masks' grid (maps on another grid
    are brought there by :func:`~monai_softcam.networks.upsample_map`), NaN where a mask is empty.
    """
    maps = torch.as_tensor(maps).float()
    values = {"consistency": activation_consistency(maps, positive), "gini": gini(maps)}
    if masks is None:
        return values
    masks = torch.as_tensor(masks, device=maps.device)
    grid = tuple(masks.shape[-(maps.dim() - 1) :])
    if tuple(maps.shape[1:]) != grid:
        if maps.dim() not in (3, 4) or masks.dim() not in (maps.dim(), maps.dim() + 1) or masks.shape[0] != maps.shape[0]:
            raise ValueError(f"maps of shape {tuple(maps.shape)} cannot be brought to the grid of the masks {tuple(masks.shape)}")
        maps = upsample_map(maps, grid)  # the samples ride in the channel axis
    values["activation_precision"] = activation_precision(maps, masks)
    values["activation_sensitivity"] = activation_sensitivity(maps, masks)
    values["energy_pointing_game"] = energy_pointing_game(maps, masks)
    values["pointing_game"] = pointing_game(maps, masks, pointing_tolerance)
    size = min(int(patch_size), *maps.shape[1:])
    values["topk_precision"] = topk_localisation_precision(maps, masks, topk, size, stride)[:, -1]
    return values


def _tile_order(maps: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles of ``patch_size`` (the last ones may be smaller) ranked by mean evidence, highest first:
    (order [B, T], tile index of every pixel [*spatial])."""
    spatial = maps.shape[1:]
    tiles_per_axis = [int(np.ceil(s / patch_size)) for s in spatial]
    axes = [torch.arange(s, device=maps.device) // patch_size for s in spatial]
    index = axes[0]
    for axis, n in zip(axes[1:], tiles_per_axis[1:]):
        index = index[..., None] * n + axis
    flat_index = index.reshape(-1)
    count = int(np.prod(tiles_per_axis))
    sums = torch.zeros(maps.shape[0], count, device=maps.device).index_add_(1, flat_index, _flat(maps))
    sizes = torch.bincount(flat_index, minlength=count).float()
    return (sums / sizes).argsort(dim=1, descending=True), index


def deletion_curve(
    model: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    maps: Any,
    target: Any,
    patch_size: int = 33,
    steps: int = 14,
    baseline: float = 0.0,
    insertion: bool = False,
    batch_size: int = 32,
) -> torch.Tensor:
    """Faithfulness curves (the paper's deletion; and insertion): ``[B, steps + 1]``.

    The image is cut into non-overlapping tiles of ``patch_size``, ranked by the map's mean
    evidence in them. Deletion sets the ``i`` top tiles to ``baseline`` (0 = the mean intensity
    after normalisation); insertion starts from an image of ``baseline`` and restores them. Point
    ``i`` (``i = 0..steps``) is the relative confidence ``min(p_i, p) / p``, where ``p`` is the
    model's probability of ``target`` on the untouched image and ``p_i`` after ``i`` tiles.
    ``model`` returns logits (or SoftCAM's output dict); probabilities are its softmax (sigmoid
    for one output). See :func:`curve_auc` for the area.
    """
    images = torch.as_tensor(images)
    maps, _ = _check_maps(maps)
    if maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"maps {tuple(maps.shape)} must be [B, *spatial] of the images {tuple(images.shape)}")
    target = torch.as_tensor(target, device=images.device).reshape(-1).long()
    order, tile_of_pixel = _tile_order(maps.to(images.device), patch_size)
    steps = min(int(steps), order.shape[1])

    def probability(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([probabilities(split_output(model(chunk))[0].float()) for chunk in batch.split(batch_size)])

    base = probability(images)
    rows = torch.arange(len(target), device=images.device)
    p0 = base[rows, target] if base.shape[1] > 1 else base[:, 0]
    points = []
    fill = torch.full_like(images, baseline)
    for i in range(0 if insertion else 1, steps + 1):
        chosen = torch.zeros(order.shape, dtype=torch.bool, device=images.device)
        chosen.scatter_(1, order[:, :i], True)
        pixels = chosen[:, tile_of_pixel][:, None]  # [B, 1, *spatial]
        probs = probability(torch.where(pixels, images, fill) if insertion else torch.where(pixels, fill, images))
        points.append(probs[rows, target] if probs.shape[1] > 1 else probs[:, 0])
    p = torch.stack(points)
    relative = torch.minimum(p, p0[None]) / p0.clamp(min=1e-12)[None]  # [points, B]
    if not insertion:
        relative = torch.cat([torch.ones_like(p0)[None], relative])
    return relative.T.cpu()


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under ``[B, n]`` curves sampled at evenly spaced points of [0, 1] (trapezoid rule).
    Deletion: **lower is better** (confidence drops fast when the top-ranked evidence is removed);
    insertion: **higher is better**."""
    curves = torch.as_tensor(curves).float()
    if curves.shape[1] < 2:
        raise ValueError("a curve needs at least two points")
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def bootstrap_ci(values: Any, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of the finite ``values`` (seeded)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=generator)
    means = v[idx].mean(dim=1)
    alpha = (1 - level) / 2
    return float(means.quantile(alpha)), float(means.quantile(1 - alpha))


def paired_difference(a: Any, b: Any, level: float = 0.95, resamples: int = 2000, permutations: int = 10000,
                      seed: int = 0) -> dict[str, float]:  # fmt: skip
    """The paired comparison of two methods on the same images: ``d_i = a_i - b_i`` over the images
    where both are finite.

    Returns ``mean`` (of ``d``), ``ci_low``/``ci_high`` (percentile bootstrap of the mean of ``d``,
    seeded), ``n`` and ``p_value``: a two-sided sign-flip permutation test of ``mean(d) = 0``
    (each ``d_i`` keeps or flips its sign at random, ``permutations`` times; ``p = (1 + #{|mean*| >=
    |mean(d)|}) / (1 + permutations)``), which assumes only that ``d`` is symmetric about 0 under the
    null hypothesis. Positive ``mean``: ``a`` scores higher.
    """
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per image each, got {a.numel()} and {b.numel()}")
    d = (a - b)[torch.isfinite(a) & torch.isfinite(b)]
    if d.numel() == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "p_value": float("nan")}
    low, high = bootstrap_ci(d, level=level, resamples=resamples, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (permutations, d.numel()), generator=generator, dtype=torch.float64) * 2 - 1
    observed = d.mean().abs()
    extreme = int(((signs * d).mean(dim=1).abs() >= observed - 1e-12).sum())
    return {"mean": float(d.mean()), "ci_low": low, "ci_high": high, "n": int(d.numel()),
            "p_value": (1 + extreme) / (1 + permutations)}  # fmt: skip


def summarize(values: Any, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean, bootstrap CI, ``n`` (samples with a value) and ``n_excluded`` (NaN: e.g. empty masks)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    finite = torch.isfinite(v)
    low, high = bootstrap_ci(v, level=level, seed=seed)
    mean = float(v[finite].mean()) if finite.any() else float("nan")
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(finite.sum()), "n_excluded": int((~finite).sum())}


def explanation_output(output: Any, batch: Any) -> tuple[Any, Any, Any, Any]:
    """``(evidence_maps, masks or None, labels, logits or None)`` from a MONAI evaluator's output and
    batch (decollated lists of dicts, or batched dicts). Masks come from the batch (the data), the
    rest from the output; evidence maps missing (a black box) gives ``None`` maps."""
    def column(source: Any, key: str) -> Any:
        if isinstance(source, dict):
            return source.get(key)
        if isinstance(source, (list, tuple)) and source and all(isinstance(d, dict) and key in d for d in source):
            return [d[key] for d in source]
        return None

    labels = column(output, "label")
    return column(output, "evidence_maps"), column(batch, "mask"), labels, column(output, "logits")


class ExplanationMetrics(Metric):
    """Ignite metric over an evaluation: localisation, consistency, sparseness and completeness of
    SoftCAM's evidence maps, each reported as its mean under its own name (those of
    :func:`explanation_values`, ``completeness_error`` when the logits are given, and
    ``mean_abs_evidence``, the mean of ``|map|`` over the cells in logit units: how *large* the
    maps are, not how good; Gini says how concentrated they are whatever their size).

    Args:
        output_transform: maps ``(engine.state.output, engine.state.batch)`` to ``(evidence_maps,
            masks, labels, logits)``: maps ``[B, C, *s]`` at the network's resolution, masks
            ``[B, 1, *S]`` on the image grid (or None), labels ``[B]``, logits ``[B, C]`` (or
            None); batched or lists per sample. The default, :func:`explanation_output`, reads a
            MONAI evaluator's ``evidence_maps``, ``label`` and ``logits`` outputs and the batch's ``mask``.
        explained_class: the class whose map is assessed (e.g. 1, the lesion class); None: each
            sample's own label. Consistency: that class's samples are the positive ones.
        topk, patch_size, stride, pointing_tolerance: of :func:`topk_localisation_precision` (reported
            as ``topk_precision``, at ``k = topk``) and :func:`pointing_game`.
        prefix: prepended to every name.

    Consistency and Gini are measured on the maps at the network's resolution, the localisation
    metrics on the maps upsampled to the masks' grid. Localisation metrics use only samples with
    a non-empty mask; ``explanation_excluded`` counts the others. A model without evidence maps (a
    black box) reports nothing. Per-sample values of the last run are kept in ``self.values``.
    """

    def __init__(
        self,
        output_transform: Callable = explanation_output,
        explained_class: int | None = None,
        topk: int = 5,
        patch_size: int = 33,
        stride: int = 8,
        pointing_tolerance: int = 0,
        prefix: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        self.explained_class = explained_class
        self.topk, self.patch_size, self.stride = int(topk), int(patch_size), int(stride)
        self.pointing_tolerance = int(pointing_tolerance)
        self.prefix = prefix
        self.values: dict[str, torch.Tensor] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        self._values: dict[str, list[torch.Tensor]] = {}

    def iteration_completed(self, engine: Engine) -> None:
        self.update(self._output_transform(engine.state.output, engine.state.batch))

    def update(self, output: Sequence[Any]) -> None:
        maps, masks, labels, logits = output
        if maps is None:
            return
        maps = _stack(maps).float()
        labels = _stack(labels).long().reshape(-1).to(maps.device)
        classes = labels if self.explained_class is None else torch.full_like(labels, int(self.explained_class))
        chosen = maps[torch.arange(maps.shape[0], device=maps.device), classes]  # [B, *s]
        values = explanation_values(
            chosen, None if masks is None else _stack(masks).to(maps.device), labels == classes, topk=self.topk,
            patch_size=self.patch_size, stride=self.stride, pointing_tolerance=self.pointing_tolerance,
        )  # fmt: skip
        if logits is not None:
            values["completeness_error"] = completeness_error(_stack(logits).to(maps.device), maps)
        # how large the maps are (logit units per cell), not how good: a penalty that shrinks maps lowers it
        values["mean_abs_evidence"] = chosen.abs().flatten(1).mean(1)
        for name, value in values.items():
            self._values.setdefault(name, []).append(value.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        # all ranks' samples, in rank order (uneven shards are padded for the exchange and cut back)
        self.values = {name: evenly_divisible_all_gather(torch.cat(parts)) for name, parts in self._values.items()}
        results = {f"{self.prefix}{name}": summarize(v)["mean"] for name, v in self.values.items()}
        if "activation_precision" in self.values:
            results[f"{self.prefix}explanation_excluded"] = summarize(self.values["activation_precision"])["n_excluded"]
        return results

    def completed(self, engine: Engine, name: str) -> None:
        engine.state.metrics.update(self.compute())
