"""Region evidence for an inference result in Slicer: each segment's exact share of every logit.

The segments come as a label map on the source volume's grid (a segmentation exported to a
labelmap volume with that volume as reference: ``slicer.util.arrayFromVolume`` gives it in
(K, J, I) order, 0 where no segment is). The sums are taken on the map grid the bundle saved
(:attr:`~SoftCAMLib.inference.InferenceResult.grid_maps`), each cell weighted by the part of it a
segment covers, so that the shares of all segments and the outside add up to each logit exactly;
the arithmetic is the bundle's own (:func:`monai_softcam.regions.region_evidence`), the same
numbers as the ``regions.csv`` of ``run inference --regions``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .inference import InferenceResult
from .volume import VolumeError

__all__ = ["region_table"]


def _ijk_order(labels_kji: np.ndarray, spatial_dims: int) -> np.ndarray:
    """(K, J, I) -> the bundle's (I, J[, K]) voxel order (a 2D image is its single slice)."""
    return labels_kji[0].T if spatial_dims == 2 else np.transpose(labels_kji, (2, 1, 0))


def region_table(
    result: InferenceResult, labels_kji: Any, label_names: Mapping[int, str] | None = None
) -> list[dict[str, Any]]:
    """One row per region (label value) and class, as the bundle's ``regions.csv`` without its
    ``image`` column: ``region``, ``label``, ``class``, ``evidence_sum``, ``share_of_logit`` (these
    add up over the regions to ``logit``), ``logit``, ``mean_density``, ``cells``, ``voxels``,
    ``size_mm`` (mm² for a 2D image, mm³ for a volume, from the volume's IJK-to-RAS matrix) and
    ``in_view``; see :func:`monai_softcam.regions.region_evidence`.

    Args:
        result: an inference result read from the bundle's files (:func:`~SoftCAMLib.run_inference`),
            which keeps the maps on their own grid.
        labels_kji: integer label map in (K, J, I) order on the result's volume grid (the shape of
            ``result.maps[c]``); 0 is ``"outside"``.
        label_names: label value -> region name (e.g. the segment names).

    A label map of another shape raises a :class:`~SoftCAMLib.VolumeError` naming both shapes.
    """
    from monai_softcam.regions import (  # optional: installed on first use (Resources/requirements.txt)
        region_evidence,
        voxel_size,
    )

    if not result.grid_maps or result.map_to_input_index is None:
        raise VolumeError(
            f"the result for '{result.volume_name}' has no maps on their own grid (read it with run_inference)"
        )
    labels_kji = np.asarray(labels_kji)
    shape = tuple(next(iter(result.maps.values())).shape)
    if labels_kji.shape != shape:
        raise VolumeError(
            f"label map of (K, J, I) shape {labels_kji.shape} is not on the grid of volume "
            f"'{result.volume_name}' of (K, J, I) shape {shape}"
        )
    spatial_dims = next(iter(result.grid_maps.values())).ndim
    labels = _ijk_order(labels_kji, spatial_dims)
    return region_evidence(
        {name: result.grid_maps[name] for name in result.class_names},
        labels,
        result.map_to_input_index,
        label_names,
        voxel_volume=voxel_size(result.ijk_to_ras, spatial_dims),
    )
