"""Geometry: the resize to the network's input (invertible, so that outputs go back to the input's grid)
and the affines between an input, its resized image and the evidence-map grid."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform, RandomizableTransform

from ..utils import ConfigError

__all__ = [
    "FIT_MODES",
    "FitToSized",
    "RandResizedCropd",
    "fundus_border_box",
    "fraction_of",
    "map_grid_affine",
    "map_to_input_index",
    "resample_maps",
]

#: how :class:`FitToSized` brings an image to the network's size
FIT_MODES = ("stretch", "crop", "border")


def fundus_border_box(image: Any) -> tuple[int, int, int, int]:
    """``(left, upper, right, lower)`` (columns and rows, right and lower exclusive) of the part of a fundus
    photograph inside its black border, by the rule of the paper's preprocessing (the EyePACS crop of
    github:kdjoumessi/interpretable-sparse-activation, ``external/crop.py``; ``tests/test_reference_oracle.py``
    compares the two on a fixed image).

    ``image``: ``[C, columns, rows]`` (MONAI's 2D layout) with values in [0, 1], C = 1 or 3. On the 8-bit image
    blurred by PIL's ``BLUR`` filter, when it is more than 1.2 times as wide as high: the background level of each
    channel is the maximum of the left and right strips (1/32 of the width each); the box holds every pixel
    brighter than that plus 10 in some channel. A box under 0.8 times the height either way, or a photograph not
    that wide, gives the centred square of the height instead (the whole image when it is higher than wide)."""
    from PIL import Image, ImageFilter  # heavy: Pillow, loaded when a border crop runs

    shape = tuple(image.shape)
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise ConfigError(f"resize border is for 2D photographs of 1 or 3 channels, got an image of shape {shape}")
    w, h = shape[1:]
    if w > 1.2 * h:  # only then is the border looked for
        pixels = torch.as_tensor(image).detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        rows_cols = np.ascontiguousarray(pixels.transpose(2, 1, 0))  # [rows, columns, C]
        grey = rows_cols.shape[2] == 1
        picture = Image.fromarray(rows_cols[..., 0], "L") if grey else Image.fromarray(rows_cols, "RGB")
        blurred = np.asarray(picture.filter(ImageFilter.BLUR)).reshape(rows_cols.shape).astype(np.int64)
        strip = w // 32
        background = np.maximum(blurred[:, :strip].max(axis=(0, 1)), blurred[:, -((w + 31) // 32) :].max(axis=(0, 1)))
        rows, cols = np.nonzero((blurred > background + 10).any(axis=2))
        if rows.size:
            left, upper, right, lower = int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1
            if right - left >= 0.8 * h and lower - upper >= 0.8 * h:
                return left, upper, right, lower
    margin = (w - h) // 2
    return max(margin, 0), 0, min(w - margin, w), h


class FitToSized(MapTransform, InvertibleTransform):
    """Bring images to ``spatial_size``: ``fit="stretch"`` scales every axis to its size;
    ``fit="crop"`` scales keeping the aspect ratio so that the image covers ``spatial_size``, then
    crops its centre (torchvision's ``Resize(s)`` + ``CenterCrop(s)``, the paper's preparation);
    ``fit="border"`` (2D fundus photographs) cuts the black border first (:func:`fundus_border_box`, found on the
    first key's image and applied to every key) and stretches the rest, as the paper's EyePACS preprocessing.

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
        if fit not in FIT_MODES:
            raise ConfigError(f"resize must be one of {', '.join(FIT_MODES)}, got {fit!r}")
        if fit == "border" and len(spatial_size) != 2:
            raise ConfigError("resize border (the fundus border crop) is for 2D images")
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
        box = None  # fit="border": (starts, lengths) on the input, from the first key's image
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            orig = [int(s) for s in img.shape[1:]]
            if self.fit == "border":
                if box is None:
                    left, upper, right, lower = fundus_border_box(img)
                    box = ([left, upper], [right - left, lower - upper])
                starts, lengths = box
                window = img[(slice(None),) + tuple(slice(a, a + n) for a, n in zip(starts, lengths))]
                out = self._interpolate(window, self.spatial_size, mode)
                # output index -> input index, per axis: start + (i + 0.5) * length / size - 0.5
                factors = [n / t for n, t in zip(lengths, self.spatial_size)]
                offsets = [a + 0.5 * f - 0.5 for a, f in zip(starts, factors)]
                extra: dict[str, Any] = {"box": [starts, lengths]}
            else:
                scaled, starts = self._plan(orig)
                out = self._interpolate(img, scaled, mode)
                out = out[(slice(None),) + tuple(slice(a, a + t) for a, t in zip(starts, self.spatial_size))]
                # output index -> input index, per axis: (i + start + 0.5) * orig / scaled - 0.5
                factors = [o / s for o, s in zip(orig, scaled)]
                offsets = [(a + 0.5) * f - 0.5 for a, f in zip(starts, factors)]
                extra = {"scaled": scaled, "starts": starts}
            if isinstance(img, MetaTensor):
                out, affine = _follow_affine(img, out, factors, offsets)
                extra.update(mode=mode, affine=affine.tolist())
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
            if "box" in extra:  # the border crop: the window back to its size, zeros where the border was
                starts, lengths = extra["box"]
                full = torch.zeros((img.shape[0], *orig), dtype=torch.float32)
                window = tuple(slice(a, a + n) for a, n in zip(starts, lengths))
                full[(slice(None),) + window] = self._interpolate(torch.as_tensor(img).float(), lengths, extra["mode"])
            else:
                full = torch.zeros((img.shape[0], *extra["scaled"]), dtype=torch.float32)
                window = tuple(slice(a, a + t) for a, t in zip(extra["starts"], img.shape[1:]))
                full[(slice(None),) + window] = torch.as_tensor(img).float()
                full = self._interpolate(full, orig, extra["mode"])
            restored = MetaTensor(full, meta=dict(img.meta), applied_operations=list(img.applied_operations))
            inverse_affine = np.linalg.inv(np.asarray(extra["affine"]))
            restored.affine = img.affine @ torch.as_tensor(inverse_affine, dtype=img.affine.dtype)
            d[key] = restored
        return d


def _follow_affine(
    img: MetaTensor, out: torch.Tensor, factors: Sequence[float], offsets: Sequence[float]
) -> tuple[MetaTensor, np.ndarray]:
    """``out`` as a MetaTensor with ``img``'s metadata and an affine that follows the resampling: output index
    ``i`` along each axis is input index ``factor * i + offset``; also that index map (4 x 4)."""
    affine = np.eye(4)
    for axis, (f, b) in enumerate(zip(factors, offsets)):
        affine[axis, axis], affine[axis, 3] = f, b
    out = MetaTensor(out, meta=dict(img.meta), applied_operations=list(img.applied_operations))
    out.affine = img.affine @ torch.as_tensor(affine, dtype=img.affine.dtype)
    return out, affine


class RandResizedCropd(RandomizableTransform, MapTransform):
    """The paper's random resized crop (torchvision's ``RandomResizedCrop``, which the reference's
    ``data/fundus_transforms.py`` and ``data/oct_transforms.py`` apply first), on 2D images ``[C, columns, rows]``:
    with probability ``prob``, a window is drawn and resampled to the image's own size (``mode`` per key:
    bilinear for images, nearest for masks). Every key gets the same window.

    The window is drawn as torchvision draws it: up to ten tries of an area ``scale`` times the image's (uniform)
    and an aspect ratio width/height in ``ratio`` (uniform in log), kept when it fits inside the image, placed
    uniformly; when no try fits, the centre part whose aspect is ``ratio`` clamped to the image's (the whole image
    when its aspect is inside ``ratio``). ``tests/test_reference_oracle.py`` compares the window statistics with
    torchvision's own draw.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        scale: Sequence[float] = (0.87, 1.15),
        ratio: Sequence[float] = (0.7, 1.3),
        mode: Sequence[str] | str = "bilinear",
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1] or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"scale and ratio must be increasing positive ranges, got {scale} and {ratio}")
        self.mode = [mode] * len(self.keys) if isinstance(mode, str) else list(mode)

    def window(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, window width, window height)`` for an image of ``width`` x ``height``, drawn as described
        above (the caller decides whether to crop at all)."""
        area = width * height
        log_low, log_high = np.log(self.ratio[0]), np.log(self.ratio[1])
        for _ in range(10):
            target = area * self.R.uniform(*self.scale)
            aspect = float(np.exp(self.R.uniform(log_low, log_high)))
            w, h = int(round(np.sqrt(target * aspect))), int(round(np.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return int(self.R.randint(0, width - w + 1)), int(self.R.randint(0, height - h + 1)), w, h
        aspect = width / height
        w, h = width, height
        if aspect < self.ratio[0]:
            h = int(round(width / self.ratio[0]))
        elif aspect > self.ratio[1]:
            w = int(round(height * self.ratio[1]))
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        box = None
        for key, mode in self.key_iterator(d, self.mode):
            img = d[key]
            if img.dim() != 3:
                raise ConfigError(
                    f"RandResizedCropd is for 2D images [C, columns, rows], got {key!r} of {tuple(img.shape)}"
                )
            if box is None:
                box = self.window(int(img.shape[1]), int(img.shape[2]))
            left, top, w, h = box
            out = FitToSized._interpolate(img[:, left : left + w, top : top + h], img.shape[1:], mode)
            if isinstance(img, MetaTensor):  # output index -> input index, per axis: start + (i + 0.5) * n / size - 0.5
                factors = [n / size for n, size in zip((w, h), img.shape[1:])]
                offsets = [start + 0.5 * f - 0.5 for start, f in zip((left, top), factors)]
                out, _ = _follow_affine(img, out, factors, offsets)
            d[key] = out
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
