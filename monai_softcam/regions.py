"""Region evidence: each region's exact share of every SoftCAM logit (numpy only).

A SoftCAM logit is exactly the mean of its class's evidence map over the ``N`` cells of the map grid:
``logit_c = (1/N) sum_cells A_c(cell)``. Give every cell to the regions of a label map by the
fraction of the cell's area (volume) each region covers, ``frac_R(cell)``; the regions partition
every cell, so

    logit_c = sum_R share_R,c      with      share_R,c = (1/N) sum_cells frac_R(cell) * A_c(cell)

exactly (up to float rounding). The sums are taken on the map grid, each cell weighted by its
coverage, never on an upsampled map (where they would not add up to the logit).

The regions are the label values of a label map on the input's voxel grid, label 0 being
``"outside"`` (voxels in no segment) unless named otherwise. Where a cell reaches beyond the input
(which the bundle's resizes never do, but a map grid in general may), that part belongs to no
label: :func:`region_evidence` reports it as the region :data:`BEYOND_INPUT` (label None), so that
the shares still add up to the logit. Input voxels outside every cell (the border a ``"crop"``
resize leaves out) contribute nothing; a region's ``in_view`` says which part of it the map sees.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = [
    "BEYOND_INPUT",
    "OUTSIDE",
    "axis_overlap",
    "cell_coverage",
    "region_evidence",
    "shares_by_class",
    "voxel_size",
]

#: the default name of label 0 (voxels in no segment)
OUTSIDE = "outside"
#: the region of the parts of cells that lie beyond the input's voxels (no label)
BEYOND_INPUT = "beyond_input"
#: rounding slack: coverage sums of 1 - 1e-9 and more count as complete
_TOLERANCE = 1e-9
#: voxels of a label map handled at once (float64 masks of 32 MB)
_SLAB_VOXELS = 1 << 22


def _diagonal(map_to_input_index: Any, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) per axis of a diagonal map-index -> input-index matrix; a ValueError otherwise."""
    matrix = np.asarray(map_to_input_index, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < dims + 1:
        raise ValueError(
            f"map_to_input_index must be a square (d+1) x (d+1) or 4 x 4 matrix for a {dims}D grid, "
            f"got shape {matrix.shape}"
        )
    block = matrix[:dims, :dims]
    scale = np.diag(block).copy()
    if not np.all(np.isfinite(matrix[:dims])) or np.any(np.abs(scale) < 1e-12):
        raise ValueError(f"map_to_input_index has a zero or non-finite scale: {np.round(block, 6).tolist()}")
    off = block - np.diag(scale)
    if np.abs(off).max(initial=0.0) > 1e-8 * np.abs(scale).max():
        raise ValueError(
            "map_to_input_index is not diagonal (the map's cells are rotated or sheared against the "
            f"input's voxels): {np.round(block, 6).tolist()}; region evidence needs the map grid "
            "aligned with the voxel grid"
        )
    return scale, matrix[:dims, -1].copy()


def axis_overlap(cells: int, voxels: int, scale: float, shift: float) -> np.ndarray:
    """``W[j, p]``: the fraction of map cell ``j`` (of ``cells`` along an axis) that input voxel ``p``
    (of ``voxels``) covers, i.e. ``length(cell_j ∩ [p - 0.5, p + 0.5]) / length(cell_j)``.

    Cell ``j`` has its centre at input index ``scale * j + shift`` and a length of ``|scale|``
    voxels, so it spans ``[scale * j + shift - |scale|/2, scale * j + shift + |scale|/2]``; with the
    bundle's stretch (``scale = n/m``, ``shift = n/(2m) - 1/2``) that is ``[j n/m - 1/2, (j+1) n/m - 1/2]``
    and the cells tile the voxels exactly. A row sums to less than 1 where the cell reaches beyond
    the voxels."""
    width = abs(float(scale))
    centres = float(scale) * np.arange(cells, dtype=np.float64) + float(shift)
    low, high = centres - width / 2, centres + width / 2
    p = np.arange(voxels, dtype=np.float64)
    overlap = np.minimum(high[:, None], p[None, :] + 0.5) - np.maximum(low[:, None], p[None, :] - 0.5)
    return np.clip(overlap, 0.0, None) / width


def _as_labels(labels: Any) -> np.ndarray:
    array = np.asarray(labels)
    if array.dtype.kind == "b":
        return array.astype(np.int64)
    if array.dtype.kind in "iu":
        return array
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError("a label map holds whole numbers (one label per voxel); this one has fractional values")
        return array.astype(np.int64)
    raise ValueError(f"a label map holds integers, got an array of {array.dtype}")


def _check_shapes(labels: np.ndarray, map_shape: Sequence[int], input_shape: Sequence[int] | None) -> None:
    if input_shape is not None and tuple(labels.shape) != tuple(int(n) for n in input_shape):
        raise ValueError(
            f"label map of shape {tuple(labels.shape)} is not on the input's voxel grid of shape "
            f"{tuple(int(n) for n in input_shape)}"
        )
    if labels.ndim != len(map_shape):
        raise ValueError(
            f"label map of shape {tuple(labels.shape)} ({labels.ndim}D) and map grid of shape "
            f"{tuple(map_shape)} ({len(map_shape)}D) differ in dimensions"
        )


def _contract(mask: np.ndarray, weights: Sequence[np.ndarray]) -> np.ndarray:
    """``mask`` (input voxels) contracted with ``W[j, p]`` along every axis: an array on the map grid."""
    out = mask
    for w in weights:  # always the (next) input axis in front; the map axes pile up at the end in order
        out = np.tensordot(out, w, axes=([0], [1]))
    return out


def cell_coverage(
    labels: Any, map_shape: Sequence[int], map_to_input_index: Any, input_shape: Sequence[int] | None = None
) -> dict[int, np.ndarray]:
    """For each label value ``L`` of ``labels``, ``frac_L``: the fraction of every map cell that
    voxels of label ``L`` cover (an array of ``map_shape``).

    Args:
        labels: integer label map on the input's voxel grid (2D or 3D; the axes in the order of the
            map's axes, i.e. as the bundle reads the input: (x, y[, z]); whole-number floats are taken).
        map_shape: the map grid, e.g. ``(12, 12)``.
        map_to_input_index: the ``(d+1) x (d+1)`` (or 4 x 4) matrix from map index to input voxel
            index (the ``map_to_input_index`` the bundle stores in each map file); it must be
            diagonal (scale and shift per axis), else a ValueError.
        input_shape: when given, ``labels`` must have this shape (a ValueError naming both).

    Separable: per axis, ``W[j, p] = length(cell_j ∩ voxel_p) / length(cell_j)`` (:func:`axis_overlap`),
    and ``frac_L = (labels == L)`` contracted with ``W`` along every axis. Voxels outside every cell
    contribute nothing. Parts of cells beyond the input's voxels belong to no label: there the
    coverages of all labels sum to less than 1 (``1 - sum_L frac_L`` is that part); where the
    cells lie within the input (every resize of the bundle) they sum to 1.
    """
    labels = _as_labels(labels)
    map_shape = tuple(int(m) for m in map_shape)
    _check_shapes(labels, map_shape, input_shape)
    scale, shift = _diagonal(map_to_input_index, labels.ndim)
    weights = [axis_overlap(m, n, s, t) for m, n, s, t in zip(map_shape, labels.shape, scale, shift)]
    values = np.unique(labels)
    coverage = {int(value): np.zeros(map_shape) for value in values}
    # slabs along the last axis (the contraction is linear): memory stays bounded for large volumes
    step = max(1, _SLAB_VOXELS // max(1, int(np.prod(labels.shape[:-1]))))
    for start in range(0, labels.shape[-1], step):
        slab = labels[..., start : start + step]
        slab_weights = [*weights[:-1], weights[-1][:, start : start + step]]
        for value in values:
            coverage[int(value)] += _contract((slab == value).astype(np.float64), slab_weights)
    return coverage


def voxel_size(affine: Any, spatial_dims: int) -> float:
    """The area (2D: mm², the first two axes) or volume (3D: mm³) of one voxel of an index-to-world
    ``affine`` (3x3 or 4x4)."""
    matrix = np.asarray(affine, dtype=np.float64)
    columns = np.zeros((3, spatial_dims))
    rows = min(3, matrix.shape[0] - 1)
    columns[:rows] = matrix[:rows, :spatial_dims]
    if spatial_dims == 2:
        return float(np.linalg.norm(np.cross(columns[:, 0], columns[:, 1])))
    if spatial_dims == 3:
        return float(abs(np.linalg.det(columns)))
    raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")


def region_evidence(
    maps: Mapping[str, Any],
    labels: Any,
    map_to_input_index: Any,
    label_names: Mapping[int, str] | None = None,
    voxel_volume: float | None = None,
    input_shape: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """Each region's evidence for each class: one row (a dict) per region present and class.

    Args:
        maps: class name -> its evidence map on the map grid (``A_c``, logit units), all of one shape.
        labels: integer label map on the input's voxel grid (see :func:`cell_coverage`).
        map_to_input_index: the diagonal map-index -> input-index matrix (see :func:`cell_coverage`).
        label_names: label value -> region name; label 0 defaults to ``"outside"``, others to ``"label_<L>"``.
        voxel_volume: the area (2D, mm²) or volume (3D, mm³) of one input voxel (:func:`voxel_size`);
            None leaves ``size_mm`` NaN.
        input_shape: when given, ``labels`` must have this shape (a ValueError naming both).

    Each row, with ``frac_R`` the region's coverage of each cell and ``N`` the number of cells:

    * ``region``, ``label`` (None for :data:`BEYOND_INPUT`), ``class``;
    * ``evidence_sum`` = ``sum_cells frac_R * A_c`` (logit units x cells);
    * ``share_of_logit`` = ``evidence_sum / N``: the region's part of the logit. For every class the
      shares of all regions add up to ``logit`` (the mean of the map) exactly, up to float rounding
      (:func:`shares_by_class`);
    * ``logit`` = the mean of the map;
    * ``mean_density`` = ``evidence_sum / cells``: mean evidence per cell of the region (NaN for a
      region the map does not see);
    * ``cells`` = ``sum_cells frac_R``: the region's size in cells;
    * ``voxels``: its number of input voxels; ``size_mm``: ``voxels * voxel_volume`` (mm² or mm³);
    * ``in_view``: the part of the region's voxels that the map covers (1 when the map covers the
      whole input, as a stretch does; less for a region reaching into a border that a crop left out).

    Every label named in ``label_names`` has rows, with zero evidence when it has no voxels (an
    empty segment). Rows come by label value (named empty ones after the present ones), then
    :data:`BEYOND_INPUT` (only where cells reach beyond the input's
    voxels), each with one row per class in the order of ``maps``.
    """
    arrays = {str(name): np.asarray(values, dtype=np.float64) for name, values in maps.items()}
    if not arrays:
        raise ValueError("no evidence maps given")
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"evidence maps of different shapes: {sorted(shapes)}")
    (map_shape,) = shapes
    labels = _as_labels(labels)
    coverage = cell_coverage(labels, map_shape, map_to_input_index, input_shape)
    scale, _ = _diagonal(map_to_input_index, labels.ndim)
    cell_voxels = float(np.prod(np.abs(scale)))  # one cell's size in input voxels
    values, counts = np.unique(labels, return_counts=True)
    voxel_counts = dict(zip(values.tolist(), counts.tolist()))
    names = {0: OUTSIDE, **{int(k): str(v) for k, v in (label_names or {}).items()}}
    regions: list[tuple[str, int | None, np.ndarray, int]] = [
        (names.get(label, f"label_{label}"), label, frac, voxel_counts[label]) for label, frac in coverage.items()
    ]
    for label, name in sorted(names.items()):  # a named region without voxels (an empty segment): zeros
        if label not in coverage and label != 0:
            regions.append((name, label, np.zeros(map_shape), 0))
    uncovered = 1.0 - sum(coverage.values()) if coverage else np.ones(map_shape)
    if np.abs(uncovered).max(initial=0.0) > _TOLERANCE:
        regions.append((BEYOND_INPUT, None, np.clip(uncovered, 0.0, None), 0))
    n_cells = int(np.prod(map_shape))
    rows = []
    for region, label, frac, voxels in regions:
        cells = float(frac.sum())
        for name, evidence in arrays.items():
            total = float((frac * evidence).sum())
            rows.append(
                {
                    "region": region,
                    "label": label,
                    "class": name,
                    "evidence_sum": total,
                    "share_of_logit": total / n_cells,
                    "logit": float(evidence.mean()),
                    "mean_density": total / cells if cells > _TOLERANCE else float("nan"),
                    "cells": cells,
                    "voxels": int(voxels),
                    "size_mm": float(voxels * voxel_volume) if voxel_volume is not None else float("nan"),
                    "in_view": min(1.0, cells * cell_voxels / voxels) if voxels else float("nan"),
                }
            )
    return rows


def shares_by_class(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Class -> the sum of ``share_of_logit`` over the regions of ``rows`` (one case's rows): the
    class's logit, up to float rounding."""
    totals: dict[str, float] = {}
    for row in rows:
        totals[row["class"]] = totals.get(row["class"], 0.0) + float(row["share_of_logit"])
    return totals
