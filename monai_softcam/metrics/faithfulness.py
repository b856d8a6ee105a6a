"""Faithfulness of a map to the model: deletion and insertion curves
(:func:`~monai_softcam.metrics.faithfulness.deletion_curve`, in this project's form and the paper's: tiles
ranked by their max, scored by accuracy) and their area (:func:`~monai_softcam.metrics.faithfulness.curve_auc`).
Maps are ``[B, *spatial]`` on the images' grid."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from ..networks.outputs import probabilities, split_output
from ..utils import renamed_keywords
from .localisation import _check_maps, _flat

__all__ = ["curve_auc", "deletion_curve"]


def _tile_order(maps: torch.Tensor, patch: int, rank: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Tiles of ``patch`` from the first pixel on (the last ones may be smaller) ranked by the
    ``rank`` (``"mean"`` or ``"max"``) of the map in them, highest first: (order [B, T], tile index
    of every pixel [*spatial])."""
    spatial = maps.shape[1:]
    tiles_per_axis = [int(np.ceil(s / patch)) for s in spatial]
    axes = [torch.arange(s, device=maps.device) // patch for s in spatial]
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


@renamed_keywords(patch_size="patch")
def deletion_curve(
    model: Callable[[torch.Tensor], Any],
    images: torch.Tensor,
    maps: Any,
    target: Any,
    patch: int = 33,
    steps: int = 14,
    baseline: float = 0.0,
    insertion: bool = False,
    batch_size: int = 32,
    rank: str = "mean",
    score: str = "relative",
) -> torch.Tensor:
    """Faithfulness curves (the paper's deletion; and insertion): ``[B, steps + 1]``.

    The image is cut into non-overlapping tiles of ``patch`` from its first pixel on, ranked
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
    order, tile_of_pixel = _tile_order(maps.to(images.device), patch, rank)
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
