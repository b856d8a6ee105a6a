"""MONAI transforms for SoftCAM: input preparation shared by training and inference, and evidence-map outputs."""

from __future__ import annotations

import gzip
import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    LoadImaged,
    MapTransform,
    NormalizeIntensityd,
    Resized,
    Transform,
)

from .data.datalist import IMAGE_EXTENSIONS
from .visualize import evidence_gallery, upsample_map

__all__ = [
    "AdaptChannelsd",
    "ReadImaged",
    "SaveEvidenceMapsd",
    "ScaleByDtyped",
    "UpsampleEvidenced",
    "preprocessing",
]


def _source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) if isinstance(value, torch.Tensor) else {}
    return str(meta.get("filename_or_obj", key))


class ReadImaged(LoadImaged):
    """``LoadImaged`` whose failures name the file: a missing, corrupt or unsupported image raises
    ``ValueError("cannot read image file <path> ...")`` instead of a reader-specific error."""

    def __call__(self, data, reader=None):  # type: ignore[override]
        try:
            return super().__call__(data, reader)
        except Exception as err:
            paths = [str(data[k]) for k in self.keys if k in data]
            raise ValueError(f"cannot read image file {', '.join(paths)}: {err}") from err


class ScaleByDtyped(MapTransform):
    """Map unsigned-integer images to [0, 1] by their type's range (8- and 16-bit PNG, JPEG, TIFF).

    Must follow ``LoadImaged(..., dtype=None)`` so that the file's own type is still known. Floats
    and signed integers (e.g. CT in Hounsfield units) only become float32; their scale is left to the
    intensity normalisation.
    """

    _UNSIGNED = (torch.uint8, torch.uint16, torch.uint32, torch.uint64)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key] if isinstance(d[key], torch.Tensor) else torch.as_tensor(np.asarray(d[key]))
            scale = float(torch.iinfo(img.dtype).max) if img.dtype in self._UNSIGNED else 1.0
            d[key] = img.float() / scale
        return d


class AdaptChannelsd(MapTransform):
    """Give images the network's number of input channels.

    * ``channels`` 3 and a grey image (1 channel): replicated to 3 channels (as the paper did);
    * an RGBA image: the alpha channel is dropped;
    * ``channels`` 1 and an RGB image: converted to grey (channel mean) only if ``allow_rgb_to_grey``.

    Anything else raises a ValueError naming the file and both channel counts.
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
                raise ValueError(
                    f"{_source(data, key)}: image has {have} channel(s) but the network expects {self.channels}"
                )
            d[key] = img
        return d


def preprocessing(
    image_size: Sequence[int],
    in_channels: int = 1,
    mean: Sequence[float] | float = 0.0,
    std: Sequence[float] | float = 1.0,
    image_key: str = "image",
    mask_key: str | None = None,
    allow_rgb_to_grey: bool = False,
) -> Compose:
    """Deterministic input preparation, shared by training, evaluation and inference.

    Load (keeping the file's integer type) -> channels first -> integers to [0, 1] by type range ->
    channel adaptation (:class:`AdaptChannelsd`) -> resize to ``image_size`` (area-averaging for
    the image, nearest for the mask) -> per-channel ``(x - mean) / std``.

    ``image_size`` has one entry per spatial axis (so it also fixes 2D vs 3D). Every step is
    invertible or intensity-only, so evidence maps can be brought back to the input's own grid
    with ``monai.transforms.Invertd``.
    """
    keys = [image_key] + ([mask_key] if mask_key else [])
    size = [int(s) for s in image_size]
    spatial_dims = len(size)
    mean_t = [float(m) for m in (mean if isinstance(mean, Sequence) else [mean])]
    std_t = [float(s) for s in (std if isinstance(std, Sequence) else [std])]
    if any(s <= 0 for s in std_t):
        raise ValueError(f"std must be > 0, got {std_t}")
    if len(mean_t) not in (1, in_channels) or len(std_t) not in (1, in_channels):
        raise ValueError(f"mean/std need 1 or {in_channels} values, got {len(mean_t)} and {len(std_t)}")
    steps: list[Transform] = [
        ReadImaged(keys=keys, image_only=True, ensure_channel_first=True, dtype=None, allow_missing_keys=True),
        ScaleByDtyped(keys=keys, allow_missing_keys=True),
        AdaptChannelsd(keys=image_key, channels=in_channels, allow_rgb_to_grey=allow_rgb_to_grey),
        Resized(keys=image_key, spatial_size=size, mode="area"),
    ]
    if mask_key:
        steps.append(Resized(keys=mask_key, spatial_size=size, mode="nearest", allow_missing_keys=True))
    norm_shape = (-1,) + (1,) * spatial_dims
    steps.append(
        NormalizeIntensityd(
            keys=image_key,
            subtrahend=np.asarray(mean_t * (in_channels // len(mean_t))).reshape(norm_shape),
            divisor=np.asarray(std_t * (in_channels // len(std_t))).reshape(norm_shape),
        )
    )
    return Compose(steps)


class UpsampleEvidenced(MapTransform):
    """Upsample evidence maps ``[C, *grid]`` to the grid of ``ref_key`` (the preprocessed image).

    The result is a MetaTensor carrying the reference's metadata and transform history, so that
    ``Invertd(keys, orig_keys=ref_key)`` can then bring it back to the input's own grid and geometry.
    Values are interpolated, never rescaled: the maps stay signed and in logit units.
    """

    def __init__(self, keys: KeysCollection, ref_key: str = "image") -> None:
        super().__init__(keys)
        self.ref_key = ref_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        for key in self.key_iterator(d):
            maps = torch.as_tensor(d[key]).float()
            up = upsample_map(maps, ref.shape[1:])
            if isinstance(ref, MetaTensor):
                up = MetaTensor(up, meta=dict(ref.meta), applied_operations=list(ref.applied_operations))
            d[key] = up
        return d


class SaveEvidenceMapsd(MapTransform):
    """Write each case's evidence maps, one NIfTI file per class, with the geometry of its input.

    For input ``<dir>/<name>.<ext>`` it writes ``<output_dir>/<name>/<name>_evidence_<class>.nii.gz``
    (raw signed values, float32, the affine of the map's metadata, i.e. the input's after
    ``Invertd``) and, for 2D inputs, ``<name>_overlay.png``: the input beside the evidence map of
    every class drawn on it, with the class probabilities (``pred`` key). Files are written whole
    or not at all.

    Args:
        keys: the evidence-map key (a ``[C, *spatial]`` MetaTensor on the input's grid).
        output_dir: folder receiving one sub-folder per case.
        class_names: one name per class (used in file names).
        image_key: the input image on the same grid (for the PNG overlay).
        pred_key: class probabilities (shown in the overlay's captions).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_dir: str,
        class_names: Sequence[str],
        image_key: str = "image",
        pred_key: str = "pred",
    ) -> None:
        super().__init__(keys)
        self.output_dir = output_dir
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self.pred_key = pred_key
        self._names: dict[str, str] = {}  # source path -> case name, unique within this run

    def _unique_name(self, source: str) -> str:
        if source not in self._names:
            base = name = _case_name(source)
            taken = set(self._names.values())
            k = 2
            while name in taken:  # same file name in different folders: never overwrite another case
                name, k = f"{base}_{k}", k + 1
            self._names[source] = name
        return self._names[source]

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        import nibabel as nib

        from .utils import atomic_open

        d = dict(data)
        for key in self.key_iterator(d):
            maps = d[key]
            if maps.shape[0] != len(self.class_names):
                raise ValueError(f"{len(self.class_names)} class names for {maps.shape[0]} evidence maps")
            name = self._unique_name(_source(d, key))
            folder = os.path.join(self.output_dir, name)
            affine = np.asarray(maps.affine) if isinstance(maps, MetaTensor) else np.eye(4)
            arr = maps.detach().cpu().float().numpy()
            for c, cls in enumerate(self.class_names):
                img = nib.Nifti1Image(arr[c], affine)
                img.header.set_xyzt_units("mm")
                with atomic_open(os.path.join(folder, f"{name}_evidence_{cls}.nii.gz"), "wb") as f:
                    f.write(gzip.compress(img.to_bytes(), compresslevel=6))
            if arr.ndim == 3 and self.image_key in d:
                probs = [d[self.pred_key]] if self.pred_key in d else None
                picture = evidence_gallery([d[self.image_key]], [maps], self.class_names, probs=probs, tile=None)
                with atomic_open(os.path.join(folder, f"{name}_overlay.png"), "wb") as f:
                    picture.save(f, format="PNG")
            d[f"{key}_dir"] = folder
        return d


def _case_name(path: str) -> str:
    base = os.path.basename(path)
    for ext in sorted(IMAGE_EXTENSIONS, key=len, reverse=True):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return os.path.splitext(base)[0]
