"""Pictures of evidence maps: signed overlays on the image, and galleries of several cases.

:func:`~monai_softcam.visualize.render_gallery` draws every gallery of the project (one row of tiles per
:class:`~monai_softcam.visualize.GalleryCase`); :func:`~monai_softcam.visualize.evidence_gallery` is its form
for SoftCAM's maps of every class.

Evidence maps are signed (positive = evidence for the class, negative = against), so they are
shown with a diverging colour code centred at 0: red for positive, blue for negative, the
opacity growing with ``|value| / limit``. The raw values are never clipped at 0 or min-max
scaled; ``limit`` only sets the colour scale (by default the largest ``|value|``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from .networks.outputs import upsample_map

__all__ = ["GalleryCase", "display_slice", "evidence_gallery", "mask_outline", "overlay", "render_gallery"]

_POSITIVE = np.array([220, 30, 30], dtype=np.float32)
_NEGATIVE = np.array([30, 90, 230], dtype=np.float32)


def _to_numpy(x: torch.Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Boolean outline (inner boundary pixels) of a 2D mask."""
    mask = mask.astype(bool)
    interior = mask.copy()
    interior[1:, :] &= mask[:-1, :]
    interior[:-1, :] &= mask[1:, :]
    interior[:, 1:] &= mask[:, :-1]
    interior[:, :-1] &= mask[:, 1:]
    return mask & ~interior


def overlay(
    image: torch.Tensor | np.ndarray,
    evidence: torch.Tensor | np.ndarray,
    limit: float | None = None,
    alpha: float = 0.7,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """RGB uint8 picture of a 2D ``image`` (grey or ``[3, H, W]``) with a signed 2D ``evidence`` map on top.

    ``evidence`` must have the image's spatial size (see :func:`~monai_softcam.networks.outputs.upsample_map`). ``mask`` (optional)
    is drawn as a yellow outline.
    """
    img = _to_numpy(image)
    if img.ndim == 3:  # channels first
        img = img.mean(axis=0) if img.shape[0] != 3 else np.moveaxis(img, 0, -1)
    lo, hi = float(np.min(img)), float(np.max(img))
    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    rgb = (np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img) * 255.0
    ev = _to_numpy(evidence)
    scale = float(limit) if limit else float(np.abs(ev).max())
    if scale > 0:
        weight = np.clip(np.abs(ev) / scale, 0, 1)[..., None] * alpha
        colour = np.where(ev[..., None] >= 0, _POSITIVE, _NEGATIVE)
        rgb = rgb * (1 - weight) + colour * weight
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    if mask is not None:
        out[mask_outline(np.asarray(mask))] = (255, 220, 0)
    return out


def display_slice(evidence: torch.Tensor) -> int:
    """For a 3D map ``[*, X, Y, Z]``: index along the last axis holding the largest ``|evidence|``."""
    return int(evidence.abs().reshape(-1, evidence.shape[-1]).amax(dim=0).argmax())


@dataclass
class GalleryCase:
    """One row of a gallery: the image, then one tile per map.

    Attributes:
        image: ``[C_in, *spatial]`` (2D, or 3D shown at one slice along the last axis).
        title: caption of the image's tile.
        groups: the maps, in groups of ``(caption, map)`` with each map ``[*spatial]`` on the
            image's grid. The maps of one group share a colour scale (the group's largest
            ``|value|``), so that they can be compared with each other (e.g. the classes of one
            SoftCAM model); each group has its own.
        mask: optional ground truth ``[*spatial]`` (bool, or > 0 inside), drawn as an outline.

    A 3D case is shown at the slice where the maps of its first group are strongest
    (:func:`display_slice`; the middle slice without maps).
    """

    image: torch.Tensor
    title: str
    groups: list[list[tuple[str, torch.Tensor]]] = field(default_factory=list)
    mask: torch.Tensor | None = None


def _case_tiles(case: GalleryCase) -> tuple[list[np.ndarray], list[str]]:
    image = torch.as_tensor(case.image).float()
    groups = [[(text, torch.as_tensor(m).float()) for text, m in group] for group in case.groups if group]
    mask = None if case.mask is None else torch.as_tensor(case.mask)
    mask = None if mask is None else (mask if mask.dtype == torch.bool else mask > 0)
    limits = [float(max(m.abs().max() for _, m in group)) or None for group in groups]
    if image.dim() == 4:  # 3D: one slice along the last axis
        z = display_slice(torch.stack([m for _, m in groups[0]])) if groups else image.shape[-1] // 2
        image, mask = image[..., z], None if mask is None else mask[..., z]
        groups = [[(text, m[..., z]) for text, m in group] for group in groups]
    mask_np = None if mask is None else mask.cpu().numpy()
    tiles = [overlay(image, torch.zeros(image.shape[1:]), mask=mask_np)]
    captions = [case.title]
    for group, limit in zip(groups, limits):
        for text, m in group:
            tiles.append(overlay(image, m, limit=limit, mask=mask_np))
            captions.append(text)
    return tiles, captions


def render_gallery(
    cases: Sequence[GalleryCase], tile: int | None = 160, cases_per_row: int = 1, caption_chars: int | None = None
) -> Any:
    """A PIL image with one strip of tiles per case (the image, then each of its maps, every tile
    captioned above), ``cases_per_row`` strips side by side.

    Args:
        cases: the cases, see :class:`GalleryCase`.
        tile: the longer side of each tile in pixels (the aspect ratio is kept); None keeps the image's own size.
        cases_per_row: cases placed side by side in each row of the sheet.
        caption_chars: captions longer than this are cut (None: never).
    """
    from PIL import Image, ImageDraw  # Pillow: only for pictures

    strips = []
    caption_h = 14
    for case in cases:
        tiles, captions = _case_tiles(case)
        # MONAI arrays are (x, y): transpose so that x runs along the picture's width
        pics = [Image.fromarray(np.ascontiguousarray(np.swapaxes(arr, 0, 1))) for arr in tiles]
        if tile is not None:  # the longer side to ``tile``, keeping the aspect ratio
            w, h = pics[0].size
            size = (max(1, round(w * tile / max(w, h))), max(1, round(h * tile / max(w, h))))
            pics = [p.resize(size, Image.BILINEAR) for p in pics]
        width, height = pics[0].size
        strip = Image.new("RGB", (width * len(pics), height + caption_h), "white")
        draw = ImageDraw.Draw(strip)
        for k, (pic, text) in enumerate(zip(pics, captions)):
            strip.paste(pic, (k * width, caption_h))
            draw.text((k * width + 3, 1), text if caption_chars is None else text[:caption_chars], fill="black")
        strips.append(strip)
    if not strips:
        return Image.new("RGB", (tile or 64, tile or 64), "white")
    gap = 6
    lines = [strips[i : i + cases_per_row] for i in range(0, len(strips), max(1, cases_per_row))]
    sheet_w = max(sum(r.width for r in line) + gap * (len(line) - 1) for line in lines)
    sheet_h = sum(max(r.height for r in line) for line in lines) + gap * (len(lines) - 1)
    sheet = Image.new("RGB", (sheet_w, sheet_h), "white")
    y = 0
    for line in lines:
        x = 0
        for strip in line:
            sheet.paste(strip, (x, y))
            x += strip.width + gap
        y += max(r.height for r in line) + gap
    return sheet


def evidence_gallery(
    images: Sequence[torch.Tensor],
    evidence_maps: Sequence[torch.Tensor],
    class_names: Sequence[str],
    labels: Sequence[int] | None = None,
    probs: Sequence[torch.Tensor] | None = None,
    masks: Sequence[torch.Tensor | None] | None = None,
    tile: int | None = 160,
    cases_per_row: int = 1,
):
    """A PIL image with one row per case: the image (with the ground-truth outline if a mask is
    given), then the evidence map of every class, each captioned with its probability
    (:func:`render_gallery` with one group of maps per case).

    Args:
        images: ``[C_in, *spatial]`` tensors (2D, or 3D shown at the slice of strongest evidence).
        evidence_maps: ``[num_classes, *grid]`` raw maps of the same cases.
        class_names: one name per class.
        labels: optional true classes (shown in the first caption).
        probs: optional class probabilities ``[num_classes]``.
        masks: optional ground-truth masks ``[1, *spatial]``.
        tile: the longer side of each tile in pixels (aspect ratio kept); None keeps the image's own size.
        cases_per_row: cases placed side by side in each row of the sheet.

    The colour scale is shared by all classes of a case (the case's largest ``|evidence|``), so the
    classes' maps can be compared with each other.
    """
    cases = []
    for i, (image, maps) in enumerate(zip(images, evidence_maps)):
        image = torch.as_tensor(image).float()
        maps = upsample_map(torch.as_tensor(maps).float(), image.shape[1:])
        mask = None if masks is None or masks[i] is None else torch.as_tensor(masks[i])[0] > 0
        captions = [
            f"{name}{'' if probs is None else f' p={float(probs[i][c]):.2f}'}" for c, name in enumerate(class_names)
        ]
        title = "image" if labels is None else f"label: {class_names[int(labels[i])]}"
        cases.append(GalleryCase(image, title, [list(zip(captions, maps))], mask))
    return render_gallery(cases, tile=tile, cases_per_row=cases_per_row)
