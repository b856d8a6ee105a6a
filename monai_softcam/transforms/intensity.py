"""Intensities: the task's normalisation (:func:`~monai_softcam.transforms.intensity.normalize_input`) and the
colour augmentation of training."""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import Compose, MapTransform, NormalizeIntensityd, RandomizableTransform

from .input import AdaptChannelsd

__all__ = ["RandColorJitterd", "normalize_input"]


def normalize_input(
    mean: Sequence[float] | float,
    std: Sequence[float] | float,
    in_channels: int = 1,
    spatial_dims: int = 2,
    image_key: str = "image",
    allow_rgb_to_grey: bool = False,
) -> Compose:
    """Channel adaptation (:class:`~monai_softcam.transforms.input.AdaptChannelsd`: e.g. grey replicated to 3
    channels, as the paper) then per-channel ``(x - mean) / std`` (one value serves every channel)."""
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
