"""This project's per-sample explanation metrics (``protocol: default``): does a map point at the
annotation (activation precision and sensitivity, the pointing games, top-k localisation precision),
does it separate the classes (consistency), is it sparse (Gini), is it the model's logit (completeness).

Conventions shared by every function (2D and 3D alike):

* ``maps``: ``[B, *spatial]``, one map per sample (the map of the explained class, on the grid of
  the image or the mask; bring SoftCAM's coarse maps there first, e.g. with
  :func:`monai_softcam.networks.outputs.upsample_map`). Signed maps are allowed; each metric says how it
  treats negative values. A ``[B, 1, *spatial]`` channel is accepted and dropped.
* ``masks``: the annotation, same shape as ``maps`` (bool, or numbers where > 0.5 is inside).
* The result is one value per sample, ``[B]`` (``[B, k]`` for top-k precision), float32.

Bad input has fixed rules:

* a map holding NaN or inf raises a ``ValueError`` naming the samples;
* masks of another shape than the maps raise a ``ValueError`` giving both shapes;
* an **empty mask** (no annotated pixel, e.g. a healthy image) makes the localisation metrics of
  that sample ``NaN``: it is excluded from means, and
  :func:`~monai_softcam.metrics.statistics.summarize` counts it (``n_excluded``);
* a map with no evidence where a metric needs some (all zeros, or nothing positive) scores the
  worst value of that metric (0), because it points at nothing."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..utils import renamed_keywords

__all__ = [
    "activation_consistency",
    "activation_precision",
    "activation_sensitivity",
    "completeness_error",
    "energy_pointing_game",
    "gini",
    "pointing_game",
    "topk_localisation_precision",
]


def _finite_maps(maps: Any) -> torch.Tensor:
    """``maps`` as float ``[B, *spatial]``, or a ValueError naming the samples with NaN or inf."""
    maps = torch.as_tensor(maps).float()
    if maps.dim() < 2:
        raise ValueError(f"maps must be [B, *spatial] (one map per sample), got shape {tuple(maps.shape)}")
    bad = (~torch.isfinite(maps.reshape(maps.shape[0], -1))).any(dim=1)
    if bad.any():
        raise ValueError(f"the map(s) of sample(s) {bad.nonzero().flatten().tolist()} contain NaN or inf")
    return maps


def _check_maps(maps: Any, masks: Any = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    maps = torch.as_tensor(maps).float()
    if maps.dim() >= 3 and maps.shape[1] == 1 and (masks is None or torch.as_tensor(masks).dim() == maps.dim()):
        maps = maps[:, 0]
    maps = _finite_maps(maps)
    if masks is None:
        return maps, None
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.shape != maps.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not match the maps of shape {tuple(maps.shape)}: "
            "bring the maps to the mask's grid first (e.g. with networks.upsample_map)"
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


@renamed_keywords(patch_size="patch")
def topk_localisation_precision(maps: Any, masks: Any, k: int = 30, patch: int = 33, stride: int = 8) -> torch.Tensor:
    """Top-k localisation precision (the paper's metric), for every k from 1 to ``k``: ``[B, k]``.

    Patches of ``patch`` on a grid of step ``stride`` are scored by their mean evidence; the
    highest-scoring patch is taken, patches overlapping it are suppressed, and so on ``k`` times.
    Column ``j`` is the fraction of the first ``j + 1`` patches that overlap the annotation (any
    annotated pixel inside). When fewer than ``j + 1`` non-overlapping patches fit in the image,
    the value is that of all the patches found. In [0, 1], **higher is better**.
    """
    maps, masks = _check_maps(maps, masks)
    dims = maps.dim() - 1
    avg, mx = _pool_fns(dims)
    if any(s < patch for s in maps.shape[1:]):
        raise ValueError(f"patch {patch} is larger than the maps' spatial size {tuple(maps.shape[1:])}")
    scores = _flat(avg(maps[:, None], patch, stride=stride)[:, 0]).clone()
    hits = _flat(mx(masks[:, None].float(), patch, stride=stride)[:, 0] > 0)
    grid = avg(maps[:1, None], patch, stride=stride).shape[2:]
    starts = torch.stack(
        torch.meshgrid(*[torch.arange(n, device=maps.device) * stride for n in grid], indexing="ij"), -1
    )
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
        overlap = ((starts[None] - starts[best][:, None]).abs() < patch).all(dim=-1)
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
