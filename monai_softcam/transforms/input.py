"""Input preparation: each file read by the reader its format needs (failures naming the file), channels adapted to
the task, boxes drawn as masks; :func:`~monai_softcam.transforms.input.load_input` chains them with the resize."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, MapTransform, Transform

from ..data.readers import default_readers, quiet_reader_setup, read_checked
from ..data.rules import InputRules
from ..utils import ConfigError, InputError
from .spatial import FIT_MODES, FitToSized

__all__ = ["AdaptChannelsd", "BoxesToMaskd", "ReadImaged", "load_input"]


def _source(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) if isinstance(value, torch.Tensor) else {}
    return str(meta.get("filename_or_obj", key))


class ReadImaged(LoadImaged):
    """``LoadImaged`` (``image_only``, ``ensure_channel_first``) that picks each file's reader by its name
    (:func:`~monai_softcam.data.readers.reader_for`), checks every file by the task's
    :class:`~monai_softcam.data.rules.InputRules` (its header before decoding, its pixels after:
    size, dimensions, truncation, alpha, NaN/Inf) and whose failures name the file: a missing, corrupt,
    unsupported or refused image raises ``InputError("cannot read image file <path>: ...")`` (a ValueError).

    Args:
        rules: the checks (default: ``InputRules()``, a 2D task); the other arguments are ``LoadImaged``'s.
    """

    def __init__(self, *args: Any, rules: InputRules | None = None, **kwargs: Any) -> None:
        with quiet_reader_setup():
            super().__init__(*args, **kwargs)
        self.rules = rules if rules is not None else InputRules()

    def __call__(self, data, reader=None):  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            path = d[key]
            try:
                d[key] = read_checked(self._loader, path, self.rules, reader)
            except Exception as err:
                raise InputError(f"cannot read image file {path}: {err}") from err
        return d


class AdaptChannelsd(MapTransform):
    """Give images the network's number of input channels.

    * ``channels`` 3 and a grey image (1 channel): replicated to 3 channels (as the paper did);
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
            have = int(img.shape[0])  # an RGBA photo lost its uniform alpha when read (InputRules.conform)
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
    rules: InputRules | None = None,
) -> Compose:
    """Load an image (and its mask or boxes) and bring it to the network's grid; no normalisation.

    Read (DICOM, PNG/JPEG/TIFF 8/16-bit, NRRD, NIfTI, ...; photographs and projection X-rays come in [0, 1], see
    :mod:`monai_softcam.data.readers`) -> channels first -> boxes to mask (:class:`BoxesToMaskd`) -> resize:
    ``"stretch"`` to ``image_size`` exactly, or ``"crop"`` (as the paper: scale so that the shortest side fits,
    then a centred crop of ``image_size``), ``"border"`` (fundus photographs: the black border cut, then stretched,
    as the paper's EyePACS preprocessing), see :class:`~monai_softcam.transforms.spatial.FitToSized`, or
    ``"none"`` (the input's own size, for sliding-window inference). The image is interpolated (bi/trilinear),
    the mask nearest. The image keeps its own channels here (a cache holds a grey image once, not three times);
    :func:`~monai_softcam.transforms.intensity.normalize_input` adapts them.

    ``image_size`` has one entry per spatial axis (so it also fixes 2D vs 3D). Every spatial step
    is invertible, so evidence maps can be brought back to the input's own grid with ``Invertd``.
    ``frame`` and ``window`` are the DICOM reader's options (:func:`~monai_softcam.data.readers.default_readers`):
    the frame 2D configs take from multi-frame files, and mapping to [0, 1] by the file's VOI LUT/window.
    ``rules``: the checks every file passes (:class:`~monai_softcam.data.rules.InputRules`; default: those of a
    task of ``len(image_size)`` spatial dimensions).
    """
    size = [int(s) for s in image_size]
    if resize not in (*FIT_MODES, "none"):
        raise ConfigError(f"resize must be one of {', '.join(FIT_MODES)} or none, got {resize!r}")
    keys = [image_key, mask_key]
    modes = ["bilinear" if len(size) == 2 else "trilinear", "nearest"]
    steps: list[Transform] = [
        ReadImaged(
            keys=keys,
            reader=default_readers(len(size), frame, window),
            rules=rules if rules is not None else InputRules(spatial_dims=len(size)),
            image_only=True,
            ensure_channel_first=True,
            allow_missing_keys=True,
        ),
        BoxesToMaskd(keys=boxes_key, image_key=image_key, mask_key=mask_key),
    ]
    if resize != "none":
        steps.append(FitToSized(keys=keys, spatial_size=size, fit=resize, mode=modes, allow_missing_keys=True))
    return Compose(steps)
