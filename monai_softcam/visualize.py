"""Pictures of evidence maps: signed overlays on the image, and galleries of several cases.

Evidence maps are signed (positive = evidence for the class, negative = against), so they are
shown with a diverging colour code centred at 0: red for positive, blue for negative, the
opacity growing with ``|value| / limit``. The raw values are never clipped at 0 or min-max
scaled; ``limit`` only sets the colour scale (by default the largest ``|value|``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .networks.outputs import upsample_map

__all__ = ["display_slice", "evidence_gallery", "mask_outline", "overlay"]

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

    ``evidence`` must have the image's spatial size (see :func:`upsample_map`). ``mask`` (optional)
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
    given), then the evidence map of every class, each captioned with its probability.

    Args:
        images: ``[C_in, *spatial]`` tensors (2D, or 3D shown at the slice of strongest evidence).
        evidence_maps: ``[num_classes, *grid]`` raw maps of the same cases.
        class_names: one name per class.
        labels: optional true classes (shown in the first caption).
        probs: optional class probabilities ``[num_classes]``.
        masks: optional ground-truth masks ``[1, *spatial]``.
        tile: side of each square tile in pixels; None keeps the image's own size.
        cases_per_row: cases placed side by side in each row of the sheet.

    The colour scale is shared by all classes of a case (the case's largest ``|evidence|``), so the
    classes' maps can be compared with each other.
    """
    from PIL import Image, ImageDraw

    rows = []
    caption_h = 14
    for i, (image, maps) in enumerate(zip(images, evidence_maps)):
        image = torch.as_tensor(image).float()
        maps = upsample_map(torch.as_tensor(maps).float(), image.shape[1:])
        mask = None if masks is None or masks[i] is None else torch.as_tensor(masks[i])[0] > 0
        if image.dim() == 4:  # 3D: show one axial slice
            z = display_slice(maps)
            image, maps = image[..., z], maps[..., z]
            mask = None if mask is None else mask[..., z]
        limit = float(maps.abs().max()) or 1.0
        mask_np = None if mask is None else mask.cpu().numpy()
        tiles = [overlay(image, torch.zeros_like(maps[0]), mask=mask_np)]
        tiles += [overlay(image, maps[c], limit=limit, mask=mask_np) for c in range(maps.shape[0])]
        captions = ["image" if labels is None else f"label: {class_names[int(labels[i])]}"]
        for c, name in enumerate(class_names):
            p = "" if probs is None else f" p={float(probs[i][c]):.2f}"
            captions.append(f"{name}{p}")
        # MONAI arrays are (x, y): transpose so that x runs along the picture's width
        pics = [Image.fromarray(np.ascontiguousarray(np.swapaxes(arr, 0, 1))) for arr in tiles]
        if tile is not None:
            pics = [p.resize((tile, tile), Image.BILINEAR) for p in pics]
        width, height = pics[0].size
        row = Image.new("RGB", (width * len(pics), height + caption_h), "white")
        draw = ImageDraw.Draw(row)
        for k, (pic, text) in enumerate(zip(pics, captions)):
            row.paste(pic, (k * width, caption_h))
            draw.text((k * width + 3, 1), text, fill="black")
        rows.append(row)
    if not rows:
        return Image.new("RGB", (tile or 64, tile or 64), "white")
    gap = 6
    lines = [rows[i : i + cases_per_row] for i in range(0, len(rows), max(1, cases_per_row))]
    sheet_w = max(sum(r.width for r in line) + gap * (len(line) - 1) for line in lines)
    sheet_h = sum(max(r.height for r in line) for line in lines) + gap * (len(lines) - 1)
    sheet = Image.new("RGB", (sheet_w, sheet_h), "white")
    y = 0
    for line in lines:
        x = 0
        for row in line:
            sheet.paste(row, (x, y))
            x += row.width + gap
        y += max(r.height for r in line) + gap
    return sheet
