"""Geometry: the resize to the network's input (invertible, so that outputs go back to the input's grid)
and the affines between an input, its resized image and the evidence-map grid."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform

from ..utils import ConfigError

__all__ = ["FitToSized", "fraction_of", "map_grid_affine", "map_to_input_index", "resample_maps"]


class FitToSized(MapTransform, InvertibleTransform):
    """Bring images to ``spatial_size``: ``fit="stretch"`` scales every axis to its size;
    ``fit="crop"`` scales keeping the aspect ratio so that the image covers ``spatial_size``, then
    crops its centre (torchvision's ``Resize(s)`` + ``CenterCrop(s)``, the paper's preparation).

    Interpolation is per key (``"bilinear"``/``"trilinear"`` for images, ``"nearest"`` for masks);
    shrinking 2D images bilinearly is anti-aliased (a constant image stays constant, borders
    included). Invertible, with the affine following, so that ``Invertd`` returns evidence maps on
    the input's own grid and geometry (a cropped border comes back as zeros).
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        fit: str = "stretch",
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if fit not in ("stretch", "crop"):
            raise ConfigError(f"resize must be 'stretch' or 'crop', got {fit!r}")
        self.spatial_size = [int(s) for s in spatial_size]
        self.fit = fit
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)

    @staticmethod
    def _interpolate(img: torch.Tensor, size: Sequence[int], mode: str) -> torch.Tensor:
        size = [int(s) for s in size]
        if list(img.shape[1:]) == size:
            return torch.as_tensor(img).float().clone()
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        if mode == "bilinear" and any(s < o for s, o in zip(size, img.shape[1:])):
            kwargs["antialias"] = True
        return F.interpolate(torch.as_tensor(img)[None].float(), size=size, mode=mode, **kwargs)[0]

    def _plan(self, orig: list[int]) -> tuple[list[int], list[int]]:
        if self.fit == "stretch":
            return list(self.spatial_size), [0] * len(orig)
        scale = max(t / o for t, o in zip(self.spatial_size, orig))
        scaled = [max(t, int(round(o * scale))) for o, t in zip(orig, self.spatial_size)]
        return scaled, [(s - t) // 2 for s, t in zip(scaled, self.spatial_size)]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            orig = [int(s) for s in img.shape[1:]]
            scaled, starts = self._plan(orig)
            out = self._interpolate(img, scaled, mode)
            out = out[(slice(None),) + tuple(slice(a, a + t) for a, t in zip(starts, self.spatial_size))]
            if isinstance(img, MetaTensor):
                # output index -> input index, per axis: (i + start + 0.5) * orig / scaled - 0.5
                affine = np.eye(4)
                for axis, (o, s, a) in enumerate(zip(orig, scaled, starts)):
                    affine[axis, axis] = o / s
                    affine[axis, 3] = (a + 0.5) * o / s - 0.5
                out = MetaTensor(out, meta=dict(img.meta), applied_operations=list(img.applied_operations))
                out.affine = img.affine @ torch.as_tensor(affine, dtype=img.affine.dtype)
                extra = {"scaled": scaled, "starts": starts, "mode": mode, "affine": affine.tolist()}
                self.push_transform(out, orig_size=orig, extra_info=extra)
            d[key] = out
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Undo the resize: put each image back in the scaled grid (zeros outside the crop), resize to the original
        size and restore the affine."""
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            info = self.pop_transform(img)
            extra, orig = info["extra_info"], info["orig_size"]
            full = torch.zeros((img.shape[0], *extra["scaled"]), dtype=torch.float32)
            window = tuple(slice(a, a + t) for a, t in zip(extra["starts"], img.shape[1:]))
            full[(slice(None),) + window] = torch.as_tensor(img).float()
            restored = MetaTensor(
                self._interpolate(full, orig, extra["mode"]),
                meta=dict(img.meta),
                applied_operations=list(img.applied_operations),
            )
            inverse_affine = np.linalg.inv(np.asarray(extra["affine"]))
            restored.affine = img.affine @ torch.as_tensor(inverse_affine, dtype=img.affine.dtype)
            d[key] = restored
        return d


def fraction_of(size: Sequence[int], fraction: float) -> list[float]:
    """``fraction`` of every side of ``size`` (e.g. a translation range of 20 % of the image)."""
    return [float(fraction) * int(s) for s in size]


def map_grid_affine(image_affine: Any, image_shape: Sequence[int], map_shape: Sequence[int]) -> torch.Tensor:
    """The affine of a map grid stretched over an image grid, as
    :func:`~monai_softcam.networks.outputs.upsample_map` stretches it.

    Map cell ``j`` of ``m`` along an axis of ``n`` voxels has its centre at voxel coordinate
    ``(j + 0.5) * n / m - 0.5`` (the cells tile the image exactly, also when ``n`` is not a multiple
    of ``m``), so the map's index-to-world matrix is ``image_affine @ S`` with ``S`` that per-axis
    scale and shift. ``image_affine`` is the image's ``(d+1) x (d+1)`` or 4x4 index-to-world matrix.
    """
    affine = torch.as_tensor(np.asarray(image_affine, dtype=np.float64))
    if len(image_shape) != len(map_shape):
        raise ValueError(f"image grid {tuple(image_shape)} and map grid {tuple(map_shape)} differ in dimensions")
    scale = torch.eye(affine.shape[0], dtype=torch.float64)
    for axis, (n, m) in enumerate(zip(image_shape, map_shape)):
        scale[axis, axis] = n / m
        scale[axis, -1] = 0.5 * n / m - 0.5
    return affine @ scale


def map_to_input_index(map_affine: Any, input_affine: Any) -> np.ndarray:
    """The matrix from map index to input voxel index: ``inv(input_affine) @ map_affine`` (float64), for a map
    placed by :class:`~monai_softcam.transforms.evidence.EvidenceGridd` and its input brought back to its own
    grid by ``Invertd``."""
    return np.linalg.inv(np.asarray(input_affine, dtype=np.float64)) @ np.asarray(map_affine, dtype=np.float64)


def resample_maps(maps: torch.Tensor, map_affine: Any, ref_affine: Any, ref_shape: Sequence[int]) -> torch.Tensor:
    """Maps ``[C, *grid]`` with index-to-world ``map_affine`` sampled on the voxels of a reference
    grid (``ref_affine``, ``ref_shape``): bi/trilinear, the map's values held flat over the outer
    half of its border cells (as :func:`~monai_softcam.networks.outputs.upsample_map`), zero where
    the map does not reach (e.g. a border the resize cropped away). Where the reference is the
    image the map was stretched over, the result equals ``upsample_map`` up to float rounding."""
    maps = torch.as_tensor(maps).float()
    dims = maps.dim() - 1
    ref_to_map = np.linalg.inv(np.asarray(map_affine, dtype=np.float64)) @ np.asarray(ref_affine, dtype=np.float64)
    shape = [int(n) for n in ref_shape]
    axes = [
        torch.arange(n, dtype=torch.float64).reshape([-1 if a == i else 1 for a in range(dims)])
        for i, n in enumerate(shape)
    ]
    # each reference voxel's map index, per map axis (built by broadcasting: no voxel list)
    index = [
        sum(float(ref_to_map[i, j]) * axes[j] for j in range(dims)) + float(ref_to_map[i, -1]) for i in range(dims)
    ]
    index = [torch.broadcast_to(x, shape) for x in index]
    inside = torch.ones(shape, dtype=torch.bool)
    normalised = []
    for q, cells in zip(index, maps.shape[1:]):
        inside &= (q >= -0.5 - 1e-6) & (q <= cells - 0.5 + 1e-6)
        normalised.append(((2.0 * q + 1.0) / cells - 1.0).float())  # align_corners=False coordinates
    grid = torch.stack(normalised[::-1], dim=-1)[None]  # grid_sample: last axis first
    sampled = F.grid_sample(maps[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
    return sampled * inside.to(sampled.dtype)
