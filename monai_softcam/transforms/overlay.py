"""The overlay picture of a 2D case: the input beside every class's evidence map on it, drawn and
encoded off the inference loop (in a :class:`~monai_softcam.utils.BackgroundWriter`)."""

from __future__ import annotations

import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from ..utils import BackgroundWriter, as_flag, atomic_open
from ..visualize import evidence_gallery
from .spatial import map_grid_affine, resample_maps

__all__ = ["SaveOverlayd", "overlay_picture"]


def overlay_picture(
    image: torch.Tensor,
    image_affine: np.ndarray | None,
    maps: torch.Tensor,
    maps_affine: np.ndarray,
    class_names: Sequence[str],
    probs: torch.Tensor | None = None,
    overlay_size: int | None = 512,
) -> Any:
    """The overlay of one 2D case as a PIL image: ``image`` (``[C, *spatial]``, on its own grid,
    placed by ``image_affine``; None: no geometry) shrunk (anti-aliased) so that its longer side is
    ``overlay_size`` (None: kept), beside every class's ``maps`` (``[C, *grid]``, placed by
    ``maps_affine``) sampled on that picture's pixels through both affines, so that a 2000-px input
    costs what a 512-px picture costs; captions give ``probs``."""
    shape = [int(s) for s in image.shape[1:]]
    picture = torch.as_tensor(image).float()
    picture_affine = image_affine
    if overlay_size is not None and max(shape) > overlay_size:
        small = [max(1, round(n * overlay_size / max(shape))) for n in shape]
        picture = F.interpolate(picture[None], size=small, mode="bilinear", antialias=True, align_corners=False)[0]
        if picture_affine is not None:
            picture_affine = map_grid_affine(picture_affine, shape, small)
    same_grid = tuple(maps.shape[1:]) == tuple(picture.shape[1:]) == tuple(shape)
    if picture_affine is not None and not same_grid:
        maps = resample_maps(maps, maps_affine, picture_affine, picture.shape[1:])
    # without geometry (or on the picture's pixels already) the maps are stretched over the picture
    return evidence_gallery([picture], [maps], class_names, probs=None if probs is None else [probs], tile=None)


def _save_overlay(path: str, *args: Any) -> None:
    picture = overlay_picture(*args)
    with atomic_open(path, "wb") as f:
        picture.save(f, format="PNG", compress_level=1)  # 4x faster than level 6, as small on X-rays


class SaveOverlayd(MapTransform):
    """For 2D cases, write ``<folder>/<name>_overlay.png`` (:func:`overlay_picture`): the input
    beside every class's map on it, with the class probabilities (``pred_key``), into the case's
    folder that :class:`~monai_softcam.transforms.evidence.SaveEvidenceMapsd` made (``<key>_dir``).

    With a ``writer``, the picture is drawn and encoded in its thread, off the inference loop; the run waits for
    it before it ends (:class:`~monai_softcam.handlers.outputs.WaitForWriter`) and a failure names the file.
    Without one, it is written at once. Files are written whole or not at all.

    Args:
        keys: the evidence-map key (``[C, *grid]`` MetaTensor with its affine), after ``SaveEvidenceMapsd``.
        class_names: one name per class (the captions).
        image_key: the input image on its own grid (after ``Invertd``): the overlay's picture.
        pred_key: class probabilities (shown in the captions).
        overlay_size: the longer side of each tile in pixels; None keeps the input's size.
        enabled: False writes nothing (the bundle's ``overlays``; the command line's ``false`` is no).
        writer: the :class:`~monai_softcam.utils.BackgroundWriter` that draws and writes, or None.
    """

    def __init__(
        self,
        keys: KeysCollection,
        class_names: Sequence[str],
        image_key: str = "image",
        pred_key: str = "pred",
        overlay_size: int | None = 512,
        enabled: bool = True,
        writer: BackgroundWriter | None = None,
    ) -> None:
        super().__init__(keys)
        self.class_names = [str(c) for c in class_names]
        self.image_key = image_key
        self.pred_key = pred_key
        self.overlay_size = overlay_size
        self.enabled = as_flag(enabled, "overlays")
        self.writer = writer

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            maps, image = d[key], d.get(self.image_key)
            if maps.dim() != 3 or image is None:  # 2D cases only
                continue
            folder = d.get(f"{key}_dir")
            if folder is None:
                raise ValueError(f"SaveOverlayd needs {key}_dir: put it after SaveEvidenceMapsd")
            path = os.path.join(folder, f"{os.path.basename(folder)}_overlay.png")
            image_affine = np.asarray(image.affine, dtype=np.float64) if isinstance(image, MetaTensor) else None
            maps_affine = np.asarray(maps.affine, dtype=np.float64) if isinstance(maps, MetaTensor) else np.eye(4)
            plain = lambda x: x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)  # noqa: E731
            probs = d.get(self.pred_key)
            args = (
                plain(image).detach().cpu(),
                image_affine,
                plain(maps).detach().cpu(),
                maps_affine,
                self.class_names,
                None if probs is None else plain(probs).detach().cpu(),
                self.overlay_size,
            )
            if self.writer is None:
                _save_overlay(path, *args)
            else:
                self.writer.submit(path, _save_overlay, path, *args)
        return d
