"""The paper's explanation protocol (``protocol: paper``), after the SoftCAM reference's evaluation code
(its notebooks' ``tools`` module), each docstring giving the formula:

* :func:`~monai_softcam.metrics.paper.paper_upsample`: cubic upsampling through the reference's point grid (16
  -> 60 -> 512);
* :func:`~monai_softcam.metrics.paper.paper_map_grid`: the grid every map is resized to first (``s``: 16 at 512 px);
* :func:`~monai_softcam.metrics.paper.paper_activation_precision` and
  :func:`~monai_softcam.metrics.paper.paper_activation_sensitivity`: activation precision and sensitivity on those
  maps and dilated masks;
* :func:`~monai_softcam.metrics.paper.paper_consistency`: the share of cells of the right sign;
* :func:`~monai_softcam.metrics.paper.paper_topk_counts`: top-k from the point values of the map on the point
  grid, only values above a threshold, counts pooled over patches (and the true-positive-only variant), and
  :func:`~monai_softcam.metrics.paper.paper_topk_curve`: its curve over k;
* :func:`~monai_softcam.metrics.paper.dilate_masks` with :func:`~monai_softcam.metrics.paper.paper_dilation`:
  the reference's 9 x 9 dilation at 512 px;
* :func:`~monai_softcam.metrics.paper.paper_values`: all of them for one batch.

The paper's deletion is :func:`~monai_softcam.metrics.faithfulness.deletion_curve` with ``rank="max",
score="correct"``. Conventions as :mod:`monai_softcam.metrics.localisation`."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import renamed_keywords
from .localisation import _empty_to_nan, _finite_maps, _flat, _pool_fns, activation_precision, activation_sensitivity

__all__ = [
    "cubic_resize",
    "dilate_masks",
    "paper_activation_precision",
    "paper_activation_sensitivity",
    "paper_consistency",
    "paper_dilation",
    "paper_map_grid",
    "paper_point_grid",
    "paper_topk_counts",
    "paper_topk_curve",
    "paper_topk_points",
    "paper_upsample",
    "paper_values",
]


@renamed_keywords(patch_size="patch")
def paper_point_grid(spatial: Sequence[int], patch: int, stride: int) -> tuple[int, ...]:
    """The reference's grid of patch positions: ``(S - patch) // stride + 1`` points along each
    axis of size ``S`` (60 at 512 px, with its 33 px patches on a stride of 8); point ``i`` stands for
    the patch that starts at pixel ``i * stride``."""
    grid = tuple((int(s) - int(patch)) // int(stride) + 1 for s in spatial)
    if min(grid) < 1:
        raise ValueError(f"patches of {patch} px do not fit in images of {tuple(spatial)} px")
    return grid


def paper_dilation(size: int) -> int:
    """The reference's mask dilation (a 9 x 9 kernel at 512 px) scaled to an image side of ``size``:
    the odd width ``2 * round(4 * size / 512) + 1`` (1: no dilation)."""
    return 2 * round(4 * int(size) / 512) + 1


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
    return activation_precision(*_upsampled_with_masks(maps, masks, point_grid, dilation))


def _upsampled_with_masks(
    maps: Any, masks: Any, point_grid: Sequence[int], dilation: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(U(map), D(mask))`` of the paper's activation metrics: the maps upsampled to the masks' grid
    (:func:`paper_upsample`, through ``point_grid``) and the masks (``[B, (1,) *S]``) dilated by ``dilation``."""
    masks = torch.as_tensor(masks)
    if masks.dim() >= 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    return paper_upsample(maps, masks.shape[1:], point_grid), dilate_masks(masks, dilation)


@renamed_keywords(patch_size="patch")
def paper_topk_counts(
    maps: Any, masks: Any, k: int, patch: int, stride: int, threshold: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k localisation as the reference computes it: ``(hits, found)``, two ``[B]`` counts (the last column of
    :func:`paper_topk_curve`).

    * The map is resized cubically (:func:`cubic_resize`) to the point grid of the masks
      (:func:`paper_point_grid`): each point value scores the ``patch`` patch that starts at
      ``stride * point``.
    * Points are visited from the highest value down, while the value is ``> threshold`` and fewer
      than ``k`` are chosen; a point is chosen unless an earlier visited point suppressed it. Every
      visited point suppresses a block of ``p x p`` points, ``p = ceil(patch / stride) - 1``
      (4 at 33/8 px): rows ``r - p//2 .. r + p - p//2 - 1``, columns ``c - (p - p//2 - 1) .. c +
      p//2`` (the reference's ``dx = -2, dy = 2`` offsets; the further axis of a 3D map like the
      columns). Points that are visited but not chosen suppress too. As in the reference, which
      suppresses flat indices, a 2D block that leaves the grid at a side wraps into the next (or
      previous) row; in 3D (no reference) it is cut at the border.
    * ``found`` = the chosen points, ``hits`` = those whose patch covers an annotated pixel.

    The precision pools the counts over images: ``sum(hits) / sum(found)`` (the reference's mean
    over all chosen patches of all images), so an image contributes in proportion to its patches
    above the threshold; with ``threshold`` in the map's raw units (the reference: 1, in SoftCAM's
    logit units per cell). The reference indexes fundus masks as ``mask[x, y]`` (transposed) and
    chest X-ray masks as ``mask[y, x]``; here masks are indexed like the maps, ``mask[row, col]``.
    """
    hits, found = paper_topk_curve(maps, masks, k, patch, stride, threshold)
    return hits[:, -1], found[:, -1]


def paper_topk_curve(
    maps: Any, masks: Any, k: int, patch: int, stride: int, threshold: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The counts of :func:`paper_topk_counts` for every ``k' = 1 .. k`` at once: ``(hits, found)``, two
    ``[B, k]`` tensors, column ``k' - 1`` for the top ``k'`` (the reference's curve, ``get_topk_precision``, is
    ``k' = 1 .. 29``). The points are chosen greedily, so the top ``k'`` are the first ``k'`` chosen for ``k``."""
    maps = _finite_maps(maps)  # on their own grid: a 1-cell axis is an axis, not a channel
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    masks = masks > 0.5 if masks.is_floating_point() else masks.bool()
    if masks.shape[0] != maps.shape[0] or masks.dim() != maps.dim():
        raise ValueError(f"masks {tuple(masks.shape)} do not fit the maps {tuple(maps.shape)}: one mask per map")
    dims = maps.dim() - 1
    grid = paper_point_grid(masks.shape[1:], patch, stride)
    values = _flat(cubic_resize(maps, grid)).cpu().numpy()
    _, mx = _pool_fns(dims)
    covered = _flat(mx(masks[:, None].float(), int(patch), stride=int(stride))[:, 0] > 0).cpu().numpy()
    offsets = _suppression_block(patch, stride, dims)
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    hits, found = np.zeros((maps.shape[0], k)), np.zeros((maps.shape[0], k))
    for b in range(maps.shape[0]):
        chosen = _choose_points(values[b], grid, k, threshold, offsets)
        upto = np.minimum(np.arange(1, k + 1), len(chosen))  # the top k' are the first k' chosen
        found[b] = upto
        hits[b] = np.concatenate([[0.0], np.cumsum(covered[b, chosen])])[upto]
    return torch.as_tensor(hits, dtype=torch.float32), torch.as_tensor(found, dtype=torch.float32)


def _suppression_block(patch: int, stride: int, dims: int) -> np.ndarray:
    """The offsets of the block of points a visited point suppresses (see :func:`paper_topk_counts`)."""
    p = max(1, int(np.ceil(patch / stride)) - 1)
    ranges = [np.arange(-(p // 2), p - p // 2)] + [np.arange(-(p - p // 2 - 1), p // 2 + 1)] * (dims - 1)
    return np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, dims)


def _choose_points(values: np.ndarray, grid: Sequence[int], k: int, threshold: float, offsets: np.ndarray) -> list[int]:
    """The flat indices of the points chosen on one map's point values (flat, on ``grid``), in the order chosen."""
    suppressed = np.zeros(values.shape[0], dtype=bool)
    chosen: list[int] = []
    for index in np.argsort(-values, kind="stable"):
        if len(chosen) >= k or not values[index] > threshold:
            break
        if not suppressed[index]:
            chosen.append(int(index))
        block = np.array(np.unravel_index(index, grid)) + offsets
        if len(grid) == 2:  # the reference's flat indices: a block that leaves a side wraps into the next/previous row
            flat = block[:, 0] * grid[1] + block[:, 1]
            suppressed[flat[(flat >= 0) & (flat < values.shape[0])]] = True
        else:
            block = block[((block >= 0) & (block < np.array(grid))).all(axis=1)]
            suppressed[np.ravel_multi_index(tuple(block.T), tuple(grid))] = True
    return chosen


def paper_topk_points(point_values: Any, k: int, patch: int = 33, stride: int = 8, threshold: float = 1.0) -> list[int]:
    """The points :func:`paper_topk_counts` chooses on one map's values on the point grid (``[*grid]``, e.g. 60 x 60
    at 512 px): their flat indices, in the order chosen (the reference's ``topK_patches``)."""
    values = torch.as_tensor(point_values).float()
    offsets = _suppression_block(int(patch), int(stride), values.dim())
    return _choose_points(values.reshape(-1).numpy(), tuple(values.shape), int(k), float(threshold), offsets)


def paper_map_grid(shape: Sequence[int], size: int | None) -> tuple[int, ...]:
    """The grid the reference brings every map to before its metrics (``get_posthoc_explanation``: ``s = 16``, a
    cubic resize; SoftCAM's maps at 512 px are already 16 x 16): ``size`` along the first axis of a map of spatial
    ``shape``, the other axes in proportion (``max(1, round(size * n / shape[0]))``). None: the map's own grid."""
    shape = tuple(int(n) for n in shape)
    if size is None:
        return shape
    return tuple(max(1, round(int(size) * n / shape[0])) for n in shape)


def paper_activation_sensitivity(maps: Any, masks: Any, point_grid: Sequence[int]) -> torch.Tensor:
    """Activation sensitivity as the reference computes it (``calculate_mass_within``): ``a = minmax(relu(U(map)))``
    as in :func:`paper_activation_precision`, ``AS = sum(a * mask) / sum(mask)``: how much of the annotation the
    map covers. In [0, 1], **higher is better**; NaN where the mask is empty."""
    return activation_sensitivity(*_upsampled_with_masks(maps, masks, point_grid, 1))


def paper_consistency(maps: Any, positive: Any, grid: Sequence[int] | None = None) -> torch.Tensor:
    """Consistency as the reference counts it (``get_local_to_global_positive_41``): the map resized cubically to
    ``grid`` (:func:`paper_map_grid`; None: as it is), then the share of its cells with evidence of the right sign:
    above 0 on the samples of the explained class (``positive`` True), below 0 on the others. It counts cells where
    :func:`~monai_softcam.metrics.localisation.activation_consistency` weighs them by their evidence. In [0, 1],
    **higher is better**."""
    maps = _finite_maps(maps)
    if grid is not None:
        maps = cubic_resize(maps, grid)
    m = _flat(maps)
    positive = torch.as_tensor(positive, device=m.device).reshape(-1).bool()
    if positive.numel() != m.shape[0]:
        raise ValueError(f"positive needs one flag per map ({m.shape[0]}), got {positive.numel()}")
    right = torch.where(positive[:, None], m > 0, m < 0)
    return right.float().mean(1)


@renamed_keywords(patch_size="patch", threshold="paper_threshold")
def paper_values(
    maps: Any,
    masks: Any,
    predicted: Any = None,
    *,
    topk: int = 5,
    patch: int = 33,
    stride: int = 8,
    paper_threshold: float = 1.0,
    dilation: int = 1,
    curve: int = 0,
    map_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """The map-only metrics of the paper's protocol for one batch, ``[B]`` each (NaN where the mask
    is empty), on the maps resized cubically to :func:`paper_map_grid` (``map_size``; None: as they are):

    * ``paper_activation_precision``: :func:`paper_activation_precision`;
    * ``paper_activation_sensitivity``: :func:`paper_activation_sensitivity`;
    * ``paper_topk_precision``: ``hits / found`` of :func:`paper_topk_counts` at ``k = topk``, with
      the masks dilated (NaN when no patch is above ``paper_threshold``); pooled over images by
      weighting with ``paper_topk_patches`` (``found``), see :data:`~monai_softcam.metrics.explanation.WEIGHTS`;
    * ``paper_topk_precision_tp``: the same on the images the model assigns to the explained class
      (``predicted`` True: the reference's true-positive-only variant), NaN on the others or when
      ``predicted`` is None;
    * with ``curve`` > 0, the top-k curve: ``paper_topk_precision@k``, ``paper_topk_precision_tp@k`` and
      ``paper_topk_patches@k`` for ``k = 1 .. curve`` (:func:`paper_topk_curve`; the reference's 1 .. 29).

    ``maps``: ``[B, *s]`` on the grid they were computed on; ``masks``: ``[B, (1,) *S]`` on the
    image grid; ``dilation``: the kernel of :func:`dilate_masks` (:func:`paper_dilation`).
    """
    maps = _finite_maps(maps)  # on their own grid: a 1-cell axis is an axis, not a channel
    masks = torch.as_tensor(masks, device=maps.device)
    if masks.dim() == maps.dim() + 1 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != maps.dim() or masks.shape[0] != maps.shape[0]:
        raise ValueError(f"masks {tuple(masks.shape)} do not fit the maps {tuple(maps.shape)}: one mask per map")
    maps = cubic_resize(maps, paper_map_grid(maps.shape[1:], map_size))
    masks = dilate_masks(masks, dilation)
    patch = min(int(patch), *masks.shape[1:])
    grid = paper_point_grid(masks.shape[1:], patch, stride)
    hits, found = paper_topk_curve(maps, masks, max(int(topk), int(curve)), patch, int(stride), float(paper_threshold))
    hits, found = hits.to(maps.device), found.to(maps.device)
    nan = torch.full_like(found, float("nan"))
    precision = torch.where(found > 0, hits / found.clamp(min=1), nan)
    if predicted is None:
        tp = nan
    else:
        predicted = torch.as_tensor(predicted, device=maps.device).reshape(-1, 1).bool()
        tp = torch.where(predicted, precision, nan)
    up, _ = _upsampled_with_masks(maps, masks, grid, 1)  # masks dilated above; one upsampling for both
    values = {
        "paper_activation_precision": activation_precision(up, masks),
        "paper_activation_sensitivity": activation_sensitivity(up, masks),
        "paper_topk_precision": precision[:, int(topk) - 1],
        "paper_topk_precision_tp": tp[:, int(topk) - 1],
        "paper_topk_patches": found[:, int(topk) - 1],
    }
    for k in range(1, int(curve) + 1):
        values[f"paper_topk_precision@{k}"] = precision[:, k - 1]
        values[f"paper_topk_precision_tp@{k}"] = tp[:, k - 1]
        values[f"paper_topk_patches@{k}"] = found[:, k - 1]
    return {name: _empty_to_nan(v, masks) for name, v in values.items()}
