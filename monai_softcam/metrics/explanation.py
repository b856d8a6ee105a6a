"""Explanation metrics: does a map point at the annotation, is it faithful to the model, is it sparse?

Conventions shared by every function (2D and 3D alike):

* ``maps``: ``[B, *spatial]``, one map per sample (the map of the explained class, on the grid of
  the image or the mask; bring SoftCAM's coarse maps there first, e.g. with
  :func:`monai_softcam.networks.outputs.upsample_map`). Signed maps are allowed; each metric says how it
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

**Two protocols.** The functions above are this project's protocol (``protocol: default``):
maps brought to the mask grid bi/trilinearly, masks as annotated, top-k patches ranked by their
mean. The ``paper_*`` functions follow the SoftCAM reference's evaluation code (its notebooks'
``tools`` module; ``protocol: paper``), each docstring giving the formula:

* :func:`paper_upsample`: cubic upsampling through the reference's point grid (16 -> 60 -> 512);
* :func:`paper_activation_precision`: activation precision on those maps and dilated masks;
* :func:`paper_topk_counts`: top-k from the point values of the map on the point grid, only values
  above a threshold, counts pooled over patches (and the true-positive-only variant);
* :func:`dilate_masks` with :func:`paper_dilation`: the reference's 9 x 9 dilation at 512 px;
* :func:`deletion_curve` with ``rank="max", score="correct"`` (or ``"relative"`` for more than
  two classes): the reference's deletion.

:meth:`ExplanationSettings.for_image_size` scales the reference's 512 px numbers (and Zhang et
al.'s pointing tolerance at 224 px) to any image size: the one set of settings of the bundle's
metric and of the explanation report. Pooled metrics (``paper_topk_precision``, ``paper_topk_precision_tp``)
are per-image ratios whose summary is weighted by :data:`WEIGHTS` (the pooled ratio).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    "ExplanationSettings",
    "HIGHER_IS_BETTER",
    "activation_consistency",
    "activation_precision",
    "activation_sensitivity",
    "DESCRIPTIVE",
    "PROTOCOLS",
    "WEIGHTS",
    "bootstrap_ci",
    "completeness_error",
    "cubic_resize",
    "dilate_masks",
    "deletion_curve",
    "curve_auc",
    "energy_pointing_game",
    "explanation_output",
    "explanation_values",
    "gini",
    "is_paired",
    "paired_difference",
    "paper_activation_precision",
    "paper_dilation",
    "paper_point_grid",
    "paper_topk_counts",
    "paper_upsample",
    "paper_values",
    "pointing_game",
    "summarize",
    "topk_localisation_precision",
]

#: every reported explanation metric and its direction (True when higher is better)
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
    "paper_activation_precision": True,
    "paper_topk_precision": True,
    "paper_topk_precision_tp": True,
    "paper_deletion_auc": False,
}

#: per-image values that describe rather than score (no direction), kept beside the metrics
DESCRIPTIVE = {"paper_topk_patches": "patches above the threshold among the top k (weight of the pooled top-k)"}

#: pooled metrics, whose summary is the mean weighted by this per-image value (a ratio of sums)
WEIGHTS = {"paper_topk_precision": "paper_topk_patches", "paper_topk_precision_tp": "paper_topk_patches"}


def is_paired(name: str) -> bool:
    """Whether metric ``name`` has per-image paired differences (:func:`paired_difference`): every
    metric but the pooled ones (:data:`WEIGHTS`, one ratio of sums over the images) and the
    descriptive values (:data:`DESCRIPTIVE`)."""
    return name not in WEIGHTS and name not in DESCRIPTIVE


#: the metric names of each protocol (``consistency`` and ``gini`` belong to both)
PROTOCOLS = {
    "default": (
        "consistency",
        "gini",
        "activation_precision",
        "activation_sensitivity",
        "energy_pointing_game",
        "pointing_game",
        "topk_precision",
        "deletion_auc",
        "insertion_auc",
    ),
    "paper": (
        "consistency",
        "gini",
        "paper_activation_precision",
        "paper_topk_precision",
        "paper_topk_precision_tp",
        "paper_topk_patches",
        "paper_deletion_auc",
    ),
}


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


def topk_localisation_precision(
    maps: Any, masks: Any, k: int = 30, patch_size: int = 33, stride: int = 8
) -> torch.Tensor:
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
        overlap = ((starts[None] - starts[best][:, None]).abs() < patch_size).all(dim=-1)
        scores.masked_fill_(overlap, float("-inf"))
        out.append(good / found.clamp(min=1))
    return _empty_to_nan(torch.stack(out, dim=1), masks)


def paper_point_grid(spatial: Sequence[int], patch_size: int, stride: int) -> tuple[int, ...]:
    """The reference's grid of patch positions: ``(S - patch_size) // stride + 1`` points along each
    axis of size ``S`` (60 at 512 px, with its 33 px patches on a stride of 8); point ``i`` stands for
    the patch that starts at pixel ``i * stride``."""
    grid = tuple((int(s) - int(patch_size)) // int(stride) + 1 for s in spatial)
    if min(grid) < 1:
        raise ValueError(f"patches of {patch_size} px do not fit in images of {tuple(spatial)} px")
    return grid


def paper_dilation(size: int) -> int:
    """The reference's mask dilation (a 9 x 9 kernel at 512 px) scaled to an image side of ``size``:
    the odd width ``2 * round(4 * size / 512) + 1`` (1: no dilation)."""
    return 2 * round(4 * int(size) / 512) + 1


@dataclass(frozen=True)
class ExplanationSettings:
    """The settings of the explanation metrics, one name per concept.

    Args:
        explained_class: the class whose maps are assessed (with two classes the positive one, 1);
            None: each image's own label.
        topk: the ``k`` of the reported top-k localisation precision.
        patch: the side of a top-k patch and of a deletion patch, in pixels.
        stride: the step of the top-k patch grid.
        pointing_tolerance: pixels around the annotation that still count as a hit (pointing game).
        protocol: ``default`` (this project's metrics), ``paper`` (the reference's) or ``both``.
        paper_threshold: the paper's top-k threshold, in SoftCAM's units (logit contribution per cell).
        dilation: the paper's mask dilation kernel (odd; 1: none).

    :meth:`for_image_size` gives the paper's settings at 512 px scaled to an image size.
    """

    explained_class: int | None = 1
    topk: int = 5
    patch: int = 33
    stride: int = 8
    pointing_tolerance: int = 15
    protocol: str = "default"
    paper_threshold: float = 1.0
    dilation: int = 9

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS and self.protocol != "both":
            raise ValueError(f"protocol must be 'default', 'paper' or 'both', got {self.protocol!r}")

    @classmethod
    def for_image_size(cls, image_size: Sequence[int], num_classes: int = 2, **given: Any) -> "ExplanationSettings":
        """The paper's settings at 512 px (top-k patches of 33 px on a stride-8 grid, deletion of
        33 px patches, a 9 x 9 mask dilation) and Zhang et al.'s pointing tolerance of 15 px at 224
        px, scaled to the first side ``s`` of ``image_size``, so that they cover the same fraction of
        every preset's images: patch ``max(3, round(33 s / 512))``, stride ``max(1, round(8 s /
        512))``, tolerance ``round(15 s / 224)``, dilation :func:`paper_dilation`. The explained
        class is 1 with two classes (the positive one), else each image's label. ``given`` settings
        (not None) replace the scaled ones."""
        side = int(image_size[0])
        scaled = {
            "explained_class": 1 if int(num_classes) <= 2 else None,
            "patch": max(3, round(33 * side / 512)),
            "stride": max(1, round(8 * side / 512)),
            "pointing_tolerance": round(15 * side / 224),
            "dilation": paper_dilation(side),
        }
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"ExplanationSettings has no setting(s) {sorted(unknown)}")
        return cls(**{**scaled, **{k: v for k, v in given.items() if v is not None}})

    @classmethod
    def for_task(cls, task: Any, **given: Any) -> "ExplanationSettings":
        """:meth:`for_image_size` for a :class:`~monai_softcam.task.Task`'s image size and classes."""
        return cls.for_image_size(task.image_size, task.num_classes, **given)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``dataclasses.asdict``)."""
        return asdict(self)


def cubic_resize(maps: Any, size: Sequence[int]) -> torch.Tensor:
    """``[B, *s]`` maps resized to ``[B, *size]``: bicubic in 2D (``align_corners=False``, which is
    OpenCV's ``INTER_CUBIC``, the reference's ``cv2.resize``: the test suite compares the two),
    trilinear in 3D (PyTorch has no tricubic; the reference is 2D only). Up or down alike."""
    maps = torch.as_tensor(maps).float()
    size = tuple(int(s) for s in size)
    if tuple(maps.shape[1:]) == size:
        return maps
    mode = {3: "bicubic", 4: "trilinear"}.get(maps.dim())
    if mode is None:
        raise ValueError(f"maps must be [B, *spatial] in 2D or 3D, got shape {tuple(maps.shape)}")
    return F.interpolate(maps[:, None], size=size, mode=mode, align_corners=False)[:, 0]


def paper_upsample(maps: Any, size: Sequence[int], point_grid: Sequence[int]) -> torch.Tensor:
    """The reference's way from a map to the image grid ``size``: a map coarser than ``point_grid``
    along any axis is resized cubically to the point grid first, then to ``size`` (SoftCAM's maps:
    16 -> 60 -> 512 px); a finer map (a pixel attribution) is resized to ``size`` directly. Cubic
    interpolation over- and undershoots between cells; the reference keeps that, and so does this."""
    maps = torch.as_tensor(maps).float()
    if any(s < g for s, g in zip(maps.shape[1:], point_grid)):
        maps = cubic_resize(maps, point_grid)
    return cubic_resize(maps, size)


def dilate_masks(masks: Any, kernel: int) -> torch.Tensor:
    """Boolean ``[B, *S]`` masks grown by a ``kernel``-wide (odd) square or cube of ones: what
    ``cv2.dilate`` does with ``np.ones((k, k))``, the reference's dilation (tested against OpenCV)."""
    masks = torch.as_tensor(masks)
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    kernel = int(kernel)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"the dilation kernel must be an odd width >= 1, got {kernel}")
    if kernel == 1:
        return masks
    _, mx = _pool_fns(masks.dim() - 1)
    return mx(masks[:, None].float(), kernel, stride=1, padding=kernel // 2)[:, 0] > 0


def paper_activation_precision(maps: Any, masks: Any, point_grid: Sequence[int], dilation: int = 1) -> torch.Tensor:
    """Activation precision as the reference computes it: ``a = minmax(relu(U(map)))``,
    ``AP = sum(a * D(mask)) / sum(a)``, where ``U`` is :func:`paper_upsample` from the map's own grid
    to the mask's (cubic, through ``point_grid``) and ``D`` :func:`dilate_masks` by ``dilation``.
    ``maps`` are on the grid they were computed on (SoftCAM's cells, a layer's grid, or pixels);
    ``masks`` on the image grid. In [0, 1], **higher is better**; NaN where the mask is empty."""
    masks = torch.as_tensor(masks)
    if masks.dim() >= 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    up = paper_upsample(maps, masks.shape[1:], point_grid)
    return activation_precision(up, dilate_masks(masks, dilation))


def paper_topk_counts(
    maps: Any, masks: Any, k: int, patch_size: int, stride: int, threshold: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k localisation as the reference computes it: ``(hits, found)``, two ``[B]`` counts.

    * The map is resized cubically (:func:`cubic_resize`) to the point grid of the masks
      (:func:`paper_point_grid`): each point value scores the ``patch_size`` patch that starts at
      ``stride * point``.
    * Points are visited from the highest value down, while the value is ``> threshold`` and fewer
      than ``k`` are chosen; a point is chosen unless an earlier visited point suppressed it. Every
      visited point suppresses a block of ``p x p`` points, ``p = ceil(patch_size / stride) - 1``
      (4 at 33/8 px): rows ``r - p//2 .. r + p - p//2 - 1``, columns ``c - (p - p//2 - 1) .. c +
      p//2`` (the reference's ``dx = -2, dy = 2`` offsets; the further axis of a 3D map like the
      columns). The reference lets a block that leaves the grid wrap into the next row; here it is
      cut at the border.
    * ``found`` = the chosen points, ``hits`` = those whose patch covers an annotated pixel.

    The precision pools the counts over images: ``sum(hits) / sum(found)`` (the reference's mean
    over all chosen patches of all images), so an image contributes in proportion to its patches
    above the threshold; with ``threshold`` in the map's raw units (the reference: 1, in SoftCAM's
    logit units per cell). The reference indexes fundus masks as ``mask[x, y]`` (transposed) and
    chest X-ray masks as ``mask[y, x]``; here masks are indexed like the maps, ``mask[row, col]``.
    """
    maps = _finite_maps(maps)  # on their own grid: a 1-cell axis is an axis, not a channel
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    if masks.shape[0] != maps.shape[0] or masks.dim() != maps.dim():
        raise ValueError(f"masks {tuple(masks.shape)} do not fit the maps {tuple(maps.shape)}: one mask per map")
    dims = maps.dim() - 1
    grid = paper_point_grid(masks.shape[1:], patch_size, stride)
    values = _flat(cubic_resize(maps, grid)).cpu().numpy()
    _, mx = _pool_fns(dims)
    covered = _flat(mx(masks[:, None].float(), int(patch_size), stride=int(stride))[:, 0] > 0).cpu().numpy()
    p = max(1, int(np.ceil(patch_size / stride)) - 1)
    ranges = [np.arange(-(p // 2), p - p // 2)] + [np.arange(-(p - p // 2 - 1), p // 2 + 1)] * (dims - 1)
    offsets = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, dims)
    shape = np.array(grid)
    hits, found = np.zeros(maps.shape[0]), np.zeros(maps.shape[0])
    for b in range(maps.shape[0]):
        suppressed = np.zeros(values.shape[1], dtype=bool)
        chosen: list[int] = []
        for index in np.argsort(-values[b], kind="stable"):
            if len(chosen) >= k or not values[b, index] > threshold:
                break
            if not suppressed[index]:
                chosen.append(int(index))
            block = np.array(np.unravel_index(index, grid)) + offsets
            block = block[((block >= 0) & (block < shape)).all(axis=1)]
            suppressed[np.ravel_multi_index(tuple(block.T), grid)] = True
        found[b], hits[b] = len(chosen), covered[b, chosen].sum()
    return torch.as_tensor(hits, dtype=torch.float32), torch.as_tensor(found, dtype=torch.float32)


def paper_values(
    maps: Any,
    masks: Any,
    predicted: Any = None,
    *,
    topk: int = 5,
    patch_size: int = 33,
    stride: int = 8,
    threshold: float = 1.0,
    dilation: int = 1,
) -> dict[str, torch.Tensor]:
    """The map-only metrics of the paper's protocol for one batch, ``[B]`` each (NaN where the mask
    is empty):

    * ``paper_activation_precision``: :func:`paper_activation_precision`;
    * ``paper_topk_precision``: ``hits / found`` of :func:`paper_topk_counts` at ``k = topk``, with
      the masks dilated (NaN when no patch is above ``threshold``); pooled over images by
      weighting with ``paper_topk_patches`` (``found``), see :data:`WEIGHTS`;
    * ``paper_topk_precision_tp``: the same on the images the model assigns to the explained class
      (``predicted`` True: the reference's true-positive-only variant), NaN on the others or when
      ``predicted`` is None.

    ``maps``: ``[B, *s]`` on the grid they were computed on; ``masks``: ``[B, (1,) *S]`` on the
    image grid; ``dilation``: the kernel of :func:`dilate_masks` (:func:`paper_dilation`).
    """
    maps = _finite_maps(maps)  # on their own grid: a 1-cell axis is an axis, not a channel
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != maps.dim() or masks.shape[0] != maps.shape[0]:
        raise ValueError(f"masks {tuple(masks.shape)} do not fit the maps {tuple(maps.shape)}: one mask per map")
    masks = dilate_masks(masks, dilation)
    patch = min(int(patch_size), *masks.shape[1:])
    grid = paper_point_grid(masks.shape[1:], patch, stride)
    hits, found = paper_topk_counts(maps, masks, int(topk), patch, int(stride), float(threshold))
    hits, found = hits.to(maps.device), found.to(maps.device)
    precision = torch.where(found > 0, hits / found.clamp(min=1), torch.full_like(found, float("nan")))
    if predicted is None:
        tp = torch.full_like(precision, float("nan"))
    else:
        predicted = torch.as_tensor(predicted, device=maps.device).reshape(-1).bool()
        tp = torch.where(predicted, precision, torch.full_like(precision, float("nan")))
    values = {
        "paper_activation_precision": paper_activation_precision(maps, masks, grid),
        "paper_topk_precision": precision,
        "paper_topk_precision_tp": tp,
        "paper_topk_patches": found,
    }
    return {name: _empty_to_nan(v, masks) for name, v in values.items()}


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
    protocol: str = "default",
    predicted: Any = None,
    paper_threshold: float = 1.0,
    dilation: int = 1,
) -> dict[str, torch.Tensor]:
    """Every map-only explanation metric of one batch: one ``[B]`` float32 tensor per name.

    Args:
        maps: ``[B, *s]``, the map of the explained class of each sample, on the grid it was
            computed on (SoftCAM's map on the network's grid; a post-hoc map on its layer's grid
            or the image grid).
        masks: the annotation, ``[B, *S]`` or ``[B, 1, *S]`` (bool, or > 0.5 inside), or None.
        positive: ``[B]`` flags, True for the samples of the explained class (for consistency).
        topk: the ``k`` of :func:`topk_localisation_precision` (and of the paper's
            :func:`paper_topk_counts`) that is reported.
        patch_size: the side of a top-k patch, reduced to the maps' smallest side where it would not fit.
        stride: the step of the top-k patch grid.
        pointing_tolerance: of :func:`pointing_game`.
        protocol: ``"default"``, ``"paper"`` or ``"both"``: which metrics (:data:`PROTOCOLS`).
        predicted: ``[B]`` flags, True where the model assigns the sample to the explained class
            (the paper's true-positive-only top-k), or None.
        paper_threshold: the paper's top-k threshold in the maps' raw units (:func:`paper_values`).
        dilation: the masks' dilation kernel of the paper's protocol.

    Returns ``consistency`` and ``gini``, measured on ``maps`` as given; with masks also
    (default protocol) ``activation_precision``, ``activation_sensitivity``,
    ``energy_pointing_game``, ``pointing_game`` and ``topk_precision``, measured on the masks'
    grid (maps on another grid are brought there by :func:`~monai_softcam.networks.outputs.upsample_map`),
    and (paper protocol) those of :func:`paper_values`; NaN where a mask is empty.
    """
    if protocol not in ("default", "paper", "both"):
        raise ValueError(f"protocol must be 'default', 'paper' or 'both', got {protocol!r}")
    maps = torch.as_tensor(maps).float()
    values = {"consistency": activation_consistency(maps, positive), "gini": gini(maps)}
    if masks is None:
        return values
    masks = torch.as_tensor(masks, device=maps.device)
    if protocol in ("paper", "both"):
        values.update(
            paper_values(
                maps,
                masks,
                predicted,
                topk=topk,
                patch_size=patch_size,
                stride=stride,
                threshold=paper_threshold,
                dilation=dilation,
            )
        )
    if protocol == "paper":
        return values
    grid = tuple(masks.shape[-(maps.dim() - 1) :])
    if tuple(maps.shape[1:]) != grid:
        if (
            maps.dim() not in (3, 4)
            or masks.dim() not in (maps.dim(), maps.dim() + 1)
            or masks.shape[0] != maps.shape[0]
        ):
            raise ValueError(
                f"maps of shape {tuple(maps.shape)} cannot be brought to the grid of the masks {tuple(masks.shape)}"
            )
        maps = upsample_map(maps, grid)  # the samples ride in the channel axis
    values["activation_precision"] = activation_precision(maps, masks)
    values["activation_sensitivity"] = activation_sensitivity(maps, masks)
    values["energy_pointing_game"] = energy_pointing_game(maps, masks)
    values["pointing_game"] = pointing_game(maps, masks, pointing_tolerance)
    size = min(int(patch_size), *maps.shape[1:])
    values["topk_precision"] = topk_localisation_precision(maps, masks, topk, size, stride)[:, -1]
    return values


def _tile_order(maps: torch.Tensor, patch_size: int, rank: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles of ``patch_size`` from the first pixel on (the last ones may be smaller) ranked by the
    ``rank`` (``"mean"`` or ``"max"``) of the map in them, highest first: (order [B, T], tile index
    of every pixel [*spatial])."""
    spatial = maps.shape[1:]
    tiles_per_axis = [int(np.ceil(s / patch_size)) for s in spatial]
    axes = [torch.arange(s, device=maps.device) // patch_size for s in spatial]
    index = axes[0]
    for axis, n in zip(axes[1:], tiles_per_axis[1:]):
        index = index[..., None] * n + axis
    flat_index = index.reshape(-1)
    count = int(np.prod(tiles_per_axis))
    flat = _flat(maps)
    if rank == "max":
        scores = torch.full((maps.shape[0], count), float("-inf"), device=maps.device)
        scores = scores.scatter_reduce(1, flat_index.expand_as(flat), flat, reduce="amax")
    elif rank == "mean":
        sums = torch.zeros(maps.shape[0], count, device=maps.device).index_add_(1, flat_index, flat)
        scores = sums / torch.bincount(flat_index, minlength=count).float()
    else:
        raise ValueError(f"rank must be 'mean' or 'max', got {rank!r}")
    return scores.argsort(dim=1, descending=True, stable=True), index


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
    rank: str = "mean",
    score: str = "relative",
) -> torch.Tensor:
    """Faithfulness curves (the paper's deletion; and insertion): ``[B, steps + 1]``.

    The image is cut into non-overlapping tiles of ``patch_size`` from its first pixel on, ranked
    by the map's ``rank`` (``"mean"``, or ``"max"`` as the reference) in them. Deletion sets the
    ``i`` top tiles to ``baseline`` (0 = the mean intensity after normalisation); insertion starts
    from an image of ``baseline`` and restores them. Point ``i`` (``i = 0..steps``) is, with ``p``
    the model's probability of ``target`` on the untouched image and ``p_i`` after ``i`` tiles:

    * ``score="relative"``: the relative confidence ``min(p_i, p) / p`` (1 at ``i = 0`` for deletion);
    * ``score="correct"``: 1 if the model still assigns the image to ``target`` (arg-max; for one
      output, ``p_i > 0.5`` for target 1), else 0. Its mean over images is the accuracy after
      ``i`` tiles, the reference's binary deletion.

    ``model`` returns logits (or SoftCAM's output dict); probabilities are its softmax (sigmoid
    for one output). ``maps`` are on the images' grid. See :func:`curve_auc` for the area.

    The reference's multi-class score divides by the top-1 probability after deletion, whatever
    class it belongs to; here it is ``target``'s probability throughout. Its tile rows start at
    the top of the fundus' field of view; here the tiles start at the first pixel.
    """
    if score not in ("relative", "correct"):
        raise ValueError(f"score must be 'relative' or 'correct', got {score!r}")
    images = torch.as_tensor(images)
    maps, _ = _check_maps(maps)
    if maps.shape != (images.shape[0], *images.shape[2:]):
        raise ValueError(f"maps {tuple(maps.shape)} must be [B, *spatial] of the images {tuple(images.shape)}")
    target = torch.as_tensor(target, device=images.device).reshape(-1).long()
    order, tile_of_pixel = _tile_order(maps.to(images.device), patch_size, rank)
    steps = min(int(steps), order.shape[1])
    rows = torch.arange(len(target), device=images.device)

    def point(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            probs = torch.cat(
                [probabilities(split_output(model(chunk))[0].float()) for chunk in batch.split(batch_size)]
            )
        if score == "correct":
            assigned = probs.argmax(dim=1) if probs.shape[1] > 1 else (probs[:, 0] > 0.5).long()
            return (assigned == target).float()
        return probs[rows, target] if probs.shape[1] > 1 else probs[:, 0]

    base = point(images)
    points = []
    fill = torch.full_like(images, baseline)
    for i in range(0 if insertion else 1, steps + 1):
        chosen = torch.zeros(order.shape, dtype=torch.bool, device=images.device)
        chosen.scatter_(1, order[:, :i], True)
        pixels = chosen[:, tile_of_pixel][:, None]  # [B, 1, *spatial]
        points.append(point(torch.where(pixels, images, fill) if insertion else torch.where(pixels, fill, images)))
    p = torch.stack(points)  # [points, B]
    if score == "correct":
        curve = p if insertion else torch.cat([base[None], p])
    else:
        curve = torch.minimum(p, base[None]) / base.clamp(min=1e-12)[None]
        if not insertion:
            curve = torch.cat([torch.ones_like(base)[None], curve])
    return curve.T.cpu()


def curve_auc(curves: torch.Tensor) -> torch.Tensor:
    """Area under ``[B, n]`` curves sampled at evenly spaced points of [0, 1] (trapezoid rule).
    Deletion: **lower is better** (confidence drops fast when the top-ranked evidence is removed);
    insertion: **higher is better**."""
    curves = torch.as_tensor(curves).float()
    if curves.shape[1] < 2:
        raise ValueError("a curve needs at least two points")
    return torch.trapezoid(curves, dx=1.0 / (curves.shape[1] - 1), dim=1)


def _finite(values: Any, weights: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The finite values (float64) and their weights (ones without ``weights``)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    w = torch.ones_like(v) if weights is None else torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.shape != v.shape:
        raise ValueError(f"one weight per value: got {w.numel()} weights for {v.numel()} values")
    keep = torch.isfinite(v) & torch.isfinite(w)
    return v[keep], w[keep]


def _weighted_mean(v: torch.Tensor, w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    total = w.sum(dim)
    return torch.where(total > 0, (v * w).sum(dim) / total.clamp(min=1e-300), torch.full_like(total, float("nan")))


def bootstrap_ci(
    values: Any, level: float = 0.95, resamples: int = 2000, seed: int = 0, weights: Any = None
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of the finite ``values`` (seeded);
    with ``weights``, of the weighted mean (a pooled ratio such as ``sum(hits) / sum(found)``:
    values ``hits / found``, weights ``found``), images resampled with their weights."""
    v, w = _finite(values, weights)
    if v.numel() == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=generator)
    means = _weighted_mean(v[idx], w[idx], dim=1)
    means = means[torch.isfinite(means)]
    if means.numel() == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(means.quantile(alpha)), float(means.quantile(1 - alpha))


def paired_difference(
    a: Any, b: Any, level: float = 0.95, resamples: int = 2000, permutations: int = 10000, seed: int = 0
) -> dict[str, float]:
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
    return {
        "mean": float(d.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": int(d.numel()),
        "p_value": (1 + extreme) / (1 + permutations),
    }


def summarize(values: Any, level: float = 0.95, seed: int = 0, weights: Any = None) -> dict[str, float]:
    """Mean (weighted by ``weights`` if given: see :func:`bootstrap_ci`), bootstrap CI, ``n``
    (samples with a value) and ``n_excluded`` (NaN: e.g. empty masks)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    finite = torch.isfinite(v)
    low, high = bootstrap_ci(v, level=level, seed=seed, weights=weights)
    kept, w = _finite(v, weights)
    mean = float(_weighted_mean(kept, w)) if kept.numel() else float("nan")
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
        topk: the ``k`` of the reported :func:`topk_localisation_precision` (``topk_precision``).
        patch_size: the side of a top-k patch.
        stride: the step of the top-k patch grid.
        pointing_tolerance: of :func:`pointing_game`.
        protocol: ``"default"``, ``"paper"`` (the reference's metrics, :func:`paper_values`) or
            ``"both"``; see :data:`PROTOCOLS`. The paper's pooled top-k precisions are reported as
            the pooled ratio (:data:`WEIGHTS`); the true-positive-only one needs the logits.
        paper_threshold: the paper's top-k threshold (raw map units: SoftCAM's logit units per cell).
        dilation: the paper's mask dilation kernel (:func:`paper_dilation`).
        settings: an :class:`ExplanationSettings` (the bundle's ``explanation``): when given, it
            sets all of the above (``patch`` is ``patch_size``).
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
        protocol: str = "default",
        paper_threshold: float = 1.0,
        dilation: int = 1,
        settings: ExplanationSettings | None = None,
        prefix: str = "",
        device: str | torch.device = "cpu",
    ) -> None:
        if settings is not None:
            explained_class, topk, patch_size, stride = (
                settings.explained_class,
                settings.topk,
                settings.patch,
                settings.stride,
            )
            pointing_tolerance, protocol = settings.pointing_tolerance, settings.protocol
            paper_threshold, dilation = settings.paper_threshold, settings.dilation
        if protocol not in PROTOCOLS and protocol != "both":
            raise ValueError(f"protocol must be 'default', 'paper' or 'both', got {protocol!r}")
        self.protocol, self.paper_threshold, self.dilation = protocol, float(paper_threshold), int(dilation)
        self.explained_class = explained_class
        self.topk, self.patch_size, self.stride = int(topk), int(patch_size), int(stride)
        self.pointing_tolerance = int(pointing_tolerance)
        self.prefix = prefix
        self.values: dict[str, torch.Tensor] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        """Start afresh: no per-sample values collected."""
        self._values: dict[str, list[torch.Tensor]] = {}

    def iteration_completed(self, engine: Engine) -> None:
        """Update with ``output_transform(engine.state.output, engine.state.batch)``: the batch holds the masks."""
        self.update(self._output_transform(engine.state.output, engine.state.batch))

    def update(self, output: Sequence[Any]) -> None:
        """Collect the per-sample values of one batch (nothing without evidence maps)."""
        maps, masks, labels, logits = output
        if maps is None:
            return
        maps = _stack(maps).float()
        labels = _stack(labels).long().reshape(-1).to(maps.device)
        classes = labels if self.explained_class is None else torch.full_like(labels, int(self.explained_class))
        chosen = maps[torch.arange(maps.shape[0], device=maps.device), classes]  # [B, *s]
        predicted = None
        if logits is not None:
            logits = _stack(logits).to(maps.device).float()
            assigned = logits.argmax(dim=1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
            predicted = assigned == classes
        values = explanation_values(
            chosen,
            None if masks is None else _stack(masks).to(maps.device),
            labels == classes,
            topk=self.topk,
            patch_size=self.patch_size,
            stride=self.stride,
            pointing_tolerance=self.pointing_tolerance,
            protocol=self.protocol,
            predicted=predicted,
            paper_threshold=self.paper_threshold,
            dilation=self.dilation,
        )
        if logits is not None:
            values["completeness_error"] = completeness_error(logits, maps)
        # how large the maps are (logit units per cell), not how good: a penalty that shrinks maps lowers it
        values["mean_abs_evidence"] = chosen.abs().flatten(1).mean(1)
        for name, value in values.items():
            self._values.setdefault(name, []).append(value.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        """Gather all ranks' values into ``values`` and return each metric's mean (prefixed), with
        ``explanation_excluded`` when localisation was measured."""
        # all ranks' samples, in rank order (uneven shards are padded for the exchange and cut back)
        self.values = {name: evenly_divisible_all_gather(torch.cat(parts)) for name, parts in self._values.items()}
        weight = lambda name: self.values.get(WEIGHTS[name]) if name in WEIGHTS else None  # noqa: E731
        results = {
            f"{self.prefix}{name}": summarize(v, weights=weight(name))["mean"] for name, v in self.values.items()
        }
        localisation = next(
            (n for n in ("activation_precision", "paper_activation_precision") if n in self.values), None
        )
        if localisation:
            results[f"{self.prefix}explanation_excluded"] = summarize(self.values[localisation])["n_excluded"]
        return results

    def completed(self, engine: Engine, name: str) -> None:
        """Put every metric in ``engine.state.metrics``."""
        engine.state.metrics.update(self.compute())
