"""MONAI transforms for SoftCAM: input preparation shared by training and inference, and evidence-map outputs."""

from __future__ import annotations

import gzip
import json
import os
from typing import Any, Hashable, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Activationsd,
    Compose,
    CopyItemsd,
    FlattenSubKeysd,
    InvertibleTransform,
    LoadImage,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    RandomizableTransform,
    Transform,
)

from .data.readers import IMAGE_EXTENSIONS, SimpleITKReader, default_readers, image_stem, quiet_reader_setup, reader_for
from .regions import region_evidence, voxel_size
from .utils import ConfigError, InputError, MissingInputError, as_flag, atomic_open
from .visualize import evidence_gallery

__all__ = [
    "AdaptChannelsd",
    "BoxesToMaskd",
    "RandColorJitterd",
    "ReadImaged",
    "RegionEvidenced",
    "SaveEvidenceMapsd",
    "FitToSized",
    "EvidenceGridd",
    "MAP_GRID_EXTENSION",
    "ResampleEvidenced",
    "load_input",
    "map_grid_affine",
    "map_to_input_index",
    "normalize_input",
    "preprocessing",
    "resample_maps",
    "fraction_of",
    "output_postprocessing",
]

#: key of the JSON comment (NIfTI header extension) that places a saved map on its input's voxels
MAP_GRID_EXTENSION = "softcam_map_grid"


def _source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) if isinstance(value, torch.Tensor) else {}
    return str(meta.get("filename_or_obj", key))


class ReadImaged(LoadImaged):
    """``LoadImaged`` (``image_only``) that picks each file's reader by its name (:func:`~monai_softcam.data.readers.reader_for`)
    and whose failures name the file: a missing, corrupt or unsupported image raises
    ``InputError("cannot read image file <path>: ...")`` (a ValueError)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        with quiet_reader_setup():
            super().__init__(*args, **kwargs)

    def __call__(self, data, reader=None):  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            try:
                d[key] = self._loader(path, reader or reader_for(self._loader, path))
            except Exception as err:
                raise InputError(f"cannot read image file {path}: {err}") from err
        return d


class AdaptChannelsd(MapTransform):
    """Give images the network's number of input channels.

    * ``channels`` 3 and a grey image (1 channel): replicated to 3 channels (as the paper did);
    * an RGBA image: the alpha channel is dropped;
    * ``channels`` 1 and an RGB image: converted to grey (channel mean) only if ``allow_rgb_to_grey``.

    Anything else raises an InputError (a ValueError) naming the file and both channel counts.
    """

    def __init__(self, keys: KeysCollection, channels: int, allow_rgb_to_grey: bool = False) -> None:
        super().__init__(keys)
        self.channels = int(channels)
        self.allow_rgb_to_grey = allow_rgb_to_grey

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            have = int(img.shape[0])
            if have == 4 and self.channels in (1, 3):
                img, have = img[:3], 3
            if have == self.channels:
                pass
            elif have == 1 and self.channels == 3:
                img = img.repeat(3, *([1] * (img.dim() - 1)))
            elif have == 3 and self.channels == 1 and self.allow_rgb_to_grey:
                img = img.mean(dim=0, keepdim=True)
            else:
                raise InputError(
                    f"{_source(data, key)}: image has {have} channel(s) but the network expects {self.channels}"
                )
            d[key] = img
        return d


class BoxesToMaskd(MapTransform):
    """Turn bounding boxes (``[x, y, width, height]`` in pixels of the loaded image, ``x`` along its
    first axis = image column) into a mask on the image's grid, merged with an existing mask.

    Placed right after loading, before any resizing, so that the mask then follows the image
    through every spatial transform. Every item gets a mask (empty without boxes), and the boxes
    key is removed. A box reaching outside the image raises an InputError (a ValueError) naming the file.
    """

    def __init__(self, keys: KeysCollection = "boxes", image_key: str = "image", mask_key: str = "mask") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            boxes = d.pop(key)
            image = d[self.image_key]
            spatial = tuple(int(n) for n in image.shape[1:])
            if self.mask_key in d:
                mask = torch.as_tensor(d[self.mask_key]) > 0
                if tuple(mask.shape[1:]) != spatial:
                    raise InputError(
                        f"{_source(d, self.mask_key)}: mask of size {tuple(mask.shape[1:])} does not match "
                        f"the image {_source(d, self.image_key)} of size {spatial}"
                    )
                mask = mask[:1].clone()
            else:
                mask = torch.zeros((1, *spatial), dtype=torch.bool)
            for box in boxes:
                x, y, w, h = (float(v) for v in box)
                if x + w > spatial[0] + 0.5 or y + h > spatial[1] + 0.5:
                    raise InputError(
                        f"{_source(d, self.image_key)}: box [x={x:g}, y={y:g}, width={w:g}, height={h:g}] "
                        f"lies outside the image of {spatial[0]} x {spatial[1]} pixels"
                    )
                mask[0, int(np.floor(x)) : int(np.ceil(x + w)), int(np.floor(y)) : int(np.ceil(y + h))] = True
            meta = dict(image.meta) if isinstance(image, MetaTensor) else {}
            d[self.mask_key] = MetaTensor(mask.float(), meta=meta)
        return d


def load_input(
    image_size: Sequence[int],
    resize: str = "stretch",
    image_key: str = "image",
    mask_key: str = "mask",
    boxes_key: str = "boxes",
    frame: int | None = None,
    window: bool = False,
) -> Compose:
    """Load an image (and its mask or boxes) and bring it to the network's grid; no normalisation.

    Read (DICOM, PNG/JPEG/TIFF 8/16-bit, NRRD, NIfTI, ...; photographs and projection X-rays come in
    [0, 1], see :mod:`monai_softcam.data.readers`) -> channels first -> boxes to mask
    (:class:`BoxesToMaskd`) -> resize: ``"stretch"`` to ``image_size`` exactly, or ``"crop"``
    (as the paper: scale so that the shortest side fits, then a centred crop of ``image_size``), see
    :class:`FitToSized`, or ``"none"`` (the input's own size, for sliding-window inference). The
    image is interpolated (bi/trilinear), the mask nearest. The
    image keeps its own channels here (a cache holds a grey image once, not three times);
    :func:`normalize_input` adapts them.

    ``image_size`` has one entry per spatial axis (so it also fixes 2D vs 3D). Every spatial step
    is invertible, so evidence maps can be brought back to the input's own grid with ``Invertd``.
    ``frame`` and ``window`` are the DICOM reader's options (:func:`~monai_softcam.data.readers.default_readers`):
    the frame 2D configs take from multi-frame files, and mapping to [0, 1] by the file's VOI LUT/window.
    """
    size = [int(s) for s in image_size]
    if resize not in ("stretch", "crop", "none"):
        raise ConfigError(f"resize must be 'stretch', 'crop' or 'none', got {resize!r}")
    keys = [image_key, mask_key]
    modes = ["bilinear" if len(size) == 2 else "trilinear", "nearest"]
    steps: list[Transform] = [
        ReadImaged(
            keys=keys,
            reader=default_readers(len(size), frame, window),
            image_only=True,
            ensure_channel_first=True,
            allow_missing_keys=True,
        ),
        BoxesToMaskd(keys=boxes_key, image_key=image_key, mask_key=mask_key),
    ]
    if resize != "none":
        steps.append(FitToSized(keys=keys, spatial_size=size, fit=resize, mode=modes, allow_missing_keys=True))
    return Compose(steps)


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


def normalize_input(
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    in_channels: int = 1,
    spatial_dims: int = 2,
    image_key: str = "image",
    allow_rgb_to_grey: bool = False,
) -> Compose:
    """Channel adaptation (:class:`AdaptChannelsd`: e.g. grey replicated to 3 channels, as the
    paper) then per-channel ``(x - mean) / std`` (one value serves every channel)."""
    mean_t = [float(m) for m in (mean if isinstance(mean, Sequence) else [mean])]
    std_t = [float(s) for s in (std if isinstance(std, Sequence) else [std])]
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be > 0, got {std_t}")
    if len(mean_t) not in (1, in_channels) or len(std_t) not in (1, in_channels):
        raise ValueError(f"mean/std need 1 or {in_channels} values, got {len(mean_t)} and {len(std_t)}")
    shape = (-1,) + (1,) * spatial_dims
    return Compose(
        [
            AdaptChannelsd(keys=image_key, channels=in_channels, allow_rgb_to_grey=allow_rgb_to_grey),
            NormalizeIntensityd(
                keys=image_key,
                subtrahend=np.asarray(mean_t * (in_channels // len(mean_t))).reshape(shape),
                divisor=np.asarray(std_t * (in_channels // len(std_t))).reshape(shape),
            ),
        ]
    )


def fraction_of(size: Sequence[int], fraction: float) -> list[float]:
    """``fraction`` of every side of ``size`` (e.g. a translation range of 20 % of the image)."""
    return [float(fraction) * int(s) for s in size]


def output_postprocessing(num_classes: int) -> Compose:
    """The network's output ``{"logits", "evidence_maps"}`` as the engines' ``pred`` (class
    probabilities: softmax, or sigmoid for one class), ``logits`` and ``evidence_maps``."""
    return Compose(
        [
            FlattenSubKeysd(keys="pred"),
            CopyItemsd(keys="logits", names="pred"),
            Activationsd(keys="pred", softmax=int(num_classes) > 1, sigmoid=int(num_classes) == 1),
        ]
    )


def preprocessing(
    image_size: Sequence[int],
    in_channels: int = 1,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    resize: str = "stretch",
    allow_rgb_to_grey: bool = False,
    frame: int | None = None,
    window: bool = False,
) -> Compose:
    """The whole deterministic preparation (evaluation, inference): :func:`load_input` then
    :func:`normalize_input`. Training puts its augmentations between the two."""
    return Compose(
        [
            load_input(image_size, resize, frame=frame, window=window),
            normalize_input(mean, std, in_channels, len(image_size), allow_rgb_to_grey=allow_rgb_to_grey),
        ]
    )


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Random brightness, contrast, saturation and hue of images in [0, 1] (before normalisation).

    Each factor is a range ``[low, high]`` or a number ``d`` meaning ``[1 - d, 1 + d]`` (hue: a
    number ``d`` in [0, 0.5] meaning a shift of the hue angle in ``[-d, d]`` turns). Brightness
    multiplies, contrast scales around the image mean, saturation blends with the grey image
    (colour only), and hue rotates the chroma in YIQ space (colour only; close to an HSV hue shift).
    Values are clipped to [0, 1]. Applied as a whole with probability ``prob``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        prob: float = 0.5,
        brightness: float | Sequence[float] = 0.0,
        contrast: float | Sequence[float] = 0.0,
        saturation: float | Sequence[float] = 0.0,
        hue: float = 0.0,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.ranges = {
            name: _factor_range(name, value)
            for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))
        }
        if not 0 <= float(hue) <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.hue = float(hue)
        self._factors: dict[str, float] = {}

    def randomize(self, data: Any = None) -> None:
        """Decide whether to transform and draw the brightness, contrast, saturation and hue factors."""
        super().randomize(None)
        self._factors = {name: float(self.R.uniform(lo, hi)) for name, (lo, hi) in self.ranges.items()}
        self._factors["hue"] = float(self.R.uniform(-self.hue, self.hue))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            d[key] = self._jitter(d[key])
        return d

    def _jitter(self, img: torch.Tensor) -> torch.Tensor:
        f = self._factors
        out = img * f["brightness"]
        out = (out - out.mean()) * f["contrast"] + out.mean()
        if out.shape[0] == 3:
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=out.dtype, device=out.device)
            grey = (out * weights.view(3, *([1] * (out.dim() - 1)))).sum(0, keepdim=True)
            out = grey + (out - grey) * f["saturation"]
            if f["hue"]:
                out = _rotate_hue(out, f["hue"])
        return out.clamp(0.0, 1.0)


def _factor_range(name: str, value: float | Sequence[float]) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0 or a [low, high] range, got {value}")
        return max(0.0, 1.0 - float(value)), 1.0 + float(value)
    low, high = (float(v) for v in value)
    if not 0 <= low <= high:
        raise ValueError(f"{name} range must satisfy 0 <= low <= high, got {list(value)}")
    return low, high


def _rotate_hue(rgb: torch.Tensor, turns: float) -> torch.Tensor:
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=rgb.dtype)
    angle = 2 * np.pi * turns
    c, s = float(np.cos(angle)), float(np.sin(angle))
    rotation = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=rgb.dtype)
    matrix = torch.linalg.inv(to_yiq) @ rotation @ to_yiq
    flat = rgb.reshape(3, -1)
    return (matrix.to(rgb.device) @ flat).reshape(rgb.shape)


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
    """The matrix from map index to input voxel index: ``inv(input_affine) @ map_affine`` (float64),
    for a map placed by :class:`EvidenceGridd` and its input brought back to its own grid by ``Invertd``."""
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


class _WithReference(MapTransform):
    """A map transform that reads a reference image (``ref_key``) beside its keys."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image") -> None:
        super().__init__(keys)
        self.ref_key = ref_key


class EvidenceGridd(_WithReference):
    """Place evidence maps ``[C, *grid]`` on the physical grid of ``ref_key`` (the preprocessed image).

    The maps keep their own resolution (12 x 12 for a 384-px ResNet input): the result is a
    MetaTensor with the reference's metadata and the affine of :func:`map_grid_affine`, i.e. each
    cell where :func:`~monai_softcam.networks.outputs.upsample_map` puts it on the network's input.
    The reference's affine already undoes the resize or crop (:class:`FitToSized` composes it), so
    the map lands on the input in world coordinates, and a viewer interpolates it in place. Values
    are never rescaled: the maps stay signed, in logit units, and their mean is the logit.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        ref_affine = ref.affine if isinstance(ref, MetaTensor) else torch.eye(4, dtype=torch.float64)
        for key in self.key_iterator(d):
            maps = torch.as_tensor(d[key]).float()
            meta = dict(ref.meta) if isinstance(ref, MetaTensor) else {}
            gridded = MetaTensor(maps, meta=meta)
            affine = map_grid_affine(ref_affine, ref.shape[1:], maps.shape[1:])
            gridded.affine = affine.to(torch.as_tensor(ref_affine).dtype)
            d[key] = gridded
        return d


class ResampleEvidenced(_WithReference):
    """Evidence maps placed by :class:`EvidenceGridd`, sampled on the voxels of ``ref_key`` (the
    input image brought back to its own grid by ``Invertd``): the full-resolution maps, for tools
    that need one value per input voxel (:func:`resample_maps`). With ``enabled`` false (a yes/no
    value: the bundle's ``full_resolution_maps``) the maps stay compact."""

    def __init__(self, keys: KeysCollection, ref_key: str = "image", enabled: Any = True) -> None:
        super().__init__(keys, ref_key)
        self.enabled = as_flag(enabled, "full_resolution_maps")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            maps = d[key]
            full = resample_maps(maps, maps.affine, ref.affine, ref.shape[1:])
            d[key] = MetaTensor(full, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
        return d


class SaveEvidenceMapsd(MapTransform):
    """Write each case's evidence maps, one NIfTI file per class, placed on its input in world space.

    For input ``<dir>/<name>.<ext>`` it writes ``<output_dir>/<name>/<name>_evidence_<class>.nii.gz``:
    raw signed values (float32, logit units) on the maps' own grid with their affine (compact maps
    from :class:`EvidenceGridd`: a few hundred bytes each; or full-resolution ones from
    :class:`ResampleEvidenced`). Each file also carries, in a JSON comment extension of its header
    (key :data:`MAP_GRID_EXTENSION`), the input's voxel grid (``input_shape``) and the matrix from
    map index to input voxel index (``map_to_input_index``), so that a tool holding the input by
    its voxels (the Slicer module) puts the map on it exactly, whatever geometry the input file had.

    For 2D inputs it also writes (unless ``overlays=False``) ``<name>_overlay.png``: the input
    beside every class's map on it, with the class probabilities (``pred`` key), at most
    ``overlay_size`` pixels a side per tile (None: the input's own size). Files are written whole or not at all.

    Args:
        keys: the evidence-map key (a ``[C, *grid]`` MetaTensor with its affine).
        output_dir: folder receiving one sub-folder per case.
        class_names: one name per class (used in file names).
        image_key: the input image on its own grid (after ``Invertd``): the overlay's picture and
            the grid of the header extension.
        pred_key: class probabilities (shown in the overlay's captions).
        overlay_size: the longer side of each overlay tile in pixels; None keeps the input's size.
        overlays: False writes no overlay PNG (the maps only).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        class_names: Sequence[str],
        image_key: str = "image",
        pred_key: str = "pred",
        overlay_size: int | None = 512,
        overlays: bool = True,
    ) -> None:
        super().__init__(keys)
        self.output_dir = output_dir
        self.overlays = as_flag(overlays, "overlays")
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self.pred_key = pred_key
        self.overlay_size = overlay_size
        self._names: dict[str, str] = {}  # source path -> case name, unique within this run

    def _unique_name(self, source: str) -> str:
        if source not in self._names:
            base = name = image_stem(os.path.basename(source))
            taken = set(self._names.values())
            k = 2
            while name in taken:  # same file name in different folders: never overwrite another case
                name, k = f"{base}_{k}", k + 1
            self._names[source] = name
        return self._names[source]

    @staticmethod
    def _grid_extension(affine: np.ndarray, image: Any) -> Any:
        """The header extension placing the map on ``image``'s voxels (None without an image)."""
        if not isinstance(image, MetaTensor):
            return None
        to_input = map_to_input_index(affine, image.affine)
        content = {
            MAP_GRID_EXTENSION: {
                "input_shape": [int(s) for s in image.shape[1:]],
                "map_to_input_index": np.round(to_input, 10).tolist(),
            }
        }
        return nib.nifti1.Nifti1Extension("comment", json.dumps(content).encode())

    def _overlay_grid(self, image: Any, maps: Any, affine: np.ndarray) -> tuple[list, list]:
        """``([picture], [maps on it])`` for the overlay: the image shrunk (anti-aliased) so that
        its longer side is ``overlay_size``, and the maps sampled on that picture's pixels through
        both affines, so that a 2000-px input costs what a 512-px picture costs."""
        shape = [int(s) for s in image.shape[1:]]
        picture = torch.as_tensor(image).float()
        picture_affine = image.affine if isinstance(image, MetaTensor) else None
        if self.overlay_size is not None and max(shape) > self.overlay_size:
            small = [max(1, round(n * self.overlay_size / max(shape))) for n in shape]
            picture = F.interpolate(picture[None], size=small, mode="bilinear", antialias=True, align_corners=False)[0]
            if picture_affine is not None:
                picture_affine = map_grid_affine(picture_affine, shape, small)
        same_grid = tuple(maps.shape[1:]) == tuple(picture.shape[1:]) == tuple(image.shape[1:])
        if picture_affine is None or same_grid:
            return [picture], [maps]  # maps already on the picture's pixels (or no geometry: stretched)
        return [picture], [resample_maps(maps, affine, picture_affine, picture.shape[1:])]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            maps = d[key]
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            name = self._unique_name(_source(d, key))
            folder = os.path.join(self.output_dir, name)
            affine = np.asarray(maps.affine, dtype=np.float64) if isinstance(maps, MetaTensor) else np.eye(4)
            image = d.get(self.image_key)
            extension = self._grid_extension(affine, image)
            arr = maps.detach().cpu().float().numpy()
            for c, cls in enumerate(self.class_names):
                img = nib.Nifti1Image(arr[c], affine)
                img.header.set_xyzt_units("mm")
                if extension is not None:
                    img.header.extensions.append(extension)
                with atomic_open(os.path.join(folder, f"{name}_evidence_{cls}.nii.gz"), "wb") as f:
                    f.write(gzip.compress(img.to_bytes(), compresslevel=6))
            if self.overlays and arr.ndim == 3 and image is not None:
                probs = [d[self.pred_key]] if self.pred_key in d else None
                pictures, on_pictures = self._overlay_grid(image, maps, affine)
                picture = evidence_gallery(pictures, on_pictures, self.class_names, probs=probs, tile=None)
                with atomic_open(os.path.join(folder, f"{name}_overlay.png"), "wb") as f:
                    picture.save(f, format="PNG", compress_level=1)  # 4x faster than level 6, as small on X-rays
            d[f"{key}_dir"] = folder
        return d


class _LabelReader(SimpleITKReader):
    """:class:`SimpleITKReader` keeping the stored values of every format (PNG labels stay 0, 1, 2, ...,
    not intensities in [0, 1]); one value per voxel."""

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        import SimpleITK  # heavy: SimpleITK, loaded when a label map needs it

        path, image = img
        channels = image.GetNumberOfComponentsPerPixel()
        if channels > 1:
            raise ValueError(f"{path}: a label map has one value per voxel; this file has {channels} channels")
        _, meta = super().get_data(img)
        stored = SimpleITK.GetArrayFromImage(image)  # (z,) y, x
        return np.ascontiguousarray(np.transpose(stored, list(range(stored.ndim))[::-1])), meta


class RegionEvidenced(MapTransform):
    """Each region of a label map's exact share of every class's logit, from the compact evidence maps.

    The label map lies on the input's voxel grid (as the bundle reads the input: same size and
    voxel order; e.g. a NIfTI/NRRD with the image's geometry, or a PNG of the image's size), one
    integer per voxel, 0 for voxels in no region (``"outside"``). Rows come from
    :func:`~monai_softcam.regions.region_evidence` on the map grid (the cells weighted by the part
    of them each region covers, so that the shares add up to each logit exactly) and are stored
    under ``output_key`` as a list of dicts, each with the input's path under ``image``.

    Placed after ``Invertd`` (``image_key`` on the input's own grid) and before any resampling of the
    maps (``keys``: the maps placed by :class:`EvidenceGridd`, whose affine and the image's give the
    map-to-voxel matrix, :func:`map_to_input_index`).

    Args:
        keys: the evidence-map key (``[C, *grid]`` MetaTensor).
        regions: a label-map file (one input), or a folder holding one label map per input named
            after the input's stem (``<stem>.nii.gz``, ``<stem>.nrrd``, ``<stem>.png``, ...; for a
            DICOM series folder, the folder's name); None: no regions, the transform does nothing.
        class_names: one name per class.
        image_key: the input image on its own grid.
        output_key: where the rows go.
        label_names: label value -> region name (default: ``outside`` for 0, ``label_<L>`` for others).
        inputs: the data list (``{"image": path}`` items): when given, every input's label map is
            looked up here, before anything runs, so that a missing one stops the run at once.

    Errors (:class:`~monai_softcam.utils.InputError`, naming the files): a label map that is
    missing for an input, ambiguous, unreadable, not integer, or not on the input's grid.
    """

    def __init__(
        self,
        keys: KeysCollection,
        regions: str | None,
        class_names: Sequence[str],
        image_key: str = "image",
        output_key: str = "regions",
        label_names: Mapping[int, str] | None = None,
        inputs: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__(keys)
        self.regions = None if regions is None else os.fspath(regions)
        if self.regions is not None and not os.path.exists(self.regions):
            raise MissingInputError(f"regions: {self.regions} does not exist (a label-map file, or a folder of them)")
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self.output_key = output_key
        self.label_names = {int(k): str(v) for k, v in (label_names or {}).items()}
        self._folder_files: dict[str, list[str]] | None = None
        self._sources: set[str] = set()
        self._loaders: dict[int, LoadImage] = {}
        if inputs is not None and self.regions is not None:
            sources = [str(item["image"]) for item in inputs]
            if os.path.isfile(self.regions) and len(set(sources)) > 1:
                raise ConfigError(self._one_file_message(len(set(sources))))
            for source in sources:
                self.label_map_for(source)

    def _one_file_message(self, count: int) -> str:
        return (
            f"regions is one label map ({self.regions}) but the input has {count} images: give a folder holding "
            "one label map per input, named after each input (<stem>.nii.gz, <stem>.nrrd, <stem>.png, ...)"
        )

    def label_map_for(self, source: str) -> str:
        """The label map of the input ``source`` (a file path, or a DICOM series folder)."""
        if os.path.isfile(self.regions):
            return self.regions
        if self._folder_files is None:
            found: dict[str, list[str]] = {}
            for name in sorted(os.listdir(self.regions)):
                path = os.path.join(self.regions, name)
                if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path):
                    found.setdefault(image_stem(name), []).append(path)
            self._folder_files = found
        stem = image_stem(os.path.basename(os.path.normpath(source)))
        candidates = [p for p in self._folder_files.get(stem, []) if os.path.abspath(p) != os.path.abspath(source)]
        if not candidates:
            raise InputError(
                f"no label map for input {source} in the regions folder {self.regions} "
                f"(expected {stem}.nii.gz, {stem}.nrrd, {stem}.png or another image format named {stem})"
            )
        if len(candidates) > 1:
            raise InputError(
                f"several label maps for input {source} in the regions folder {self.regions}: "
                f"{', '.join(os.path.basename(p) for p in candidates)}; keep one"
            )
        return candidates[0]

    def _read(self, path: str, spatial_dims: int) -> np.ndarray:
        if spatial_dims not in self._loaders:
            with quiet_reader_setup():
                self._loaders[spatial_dims] = LoadImage(
                    reader=[*default_readers(spatial_dims), _LabelReader()], image_only=True, dtype=None
                )
        loader = self._loaders[spatial_dims]
        try:
            array = np.asarray(loader(path, reader_for(loader, path)))
        except Exception as err:
            raise InputError(f"cannot read label map {path}: {err}") from err
        if array.ndim == spatial_dims + 1 and array.shape[-1] == 1:  # e.g. a 2D label map saved as x, y, 1
            array = array[..., 0]
        return array

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.regions is None:
            return dict(data)
        d = dict(data)
        image = d[self.image_key]
        source = _source(d, self.image_key)
        if os.path.isfile(self.regions):
            self._sources.add(source)
            if len(self._sources) > 1:
                raise ConfigError(self._one_file_message(len(self._sources)))
        rows: list[dict[str, Any]] = []
        for key in self.key_iterator(d):
            maps = d[key]
            if not isinstance(maps, MetaTensor):
                raise ValueError(f"{key}: RegionEvidenced needs the maps placed by EvidenceGridd (a MetaTensor)")
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            spatial = tuple(int(n) for n in image.shape[1:])
            path = self.label_map_for(source)
            labels = self._read(path, len(spatial))
            if tuple(labels.shape) != spatial:
                raise InputError(
                    f"label map {path} of shape {tuple(labels.shape)} is not on the grid of the input {source} "
                    f"of shape {spatial}: a label map has one label per input voxel"
                )
            image_affine = image.affine if isinstance(image, MetaTensor) else torch.eye(4, dtype=torch.float64)
            to_input = map_to_input_index(maps.affine, image_affine)
            arr = torch.as_tensor(maps).detach().cpu().double().numpy()
            try:
                found = region_evidence(
                    dict(zip(self.class_names, arr)),
                    labels,
                    to_input,
                    self.label_names,
                    voxel_volume=voxel_size(np.asarray(image_affine, dtype=np.float64), len(spatial)),
                )
            except ValueError as err:
                raise InputError(f"label map {path} for input {source}: {err}") from err
            rows += [{"image": source, **row} for row in found]
        d[self.output_key] = rows
        return d
