"""Evidence maps of inputs larger than the network was trained on: a sliding window.

:class:`~monai_softcam.inferers.EvidenceSlidingWindowInferer` runs the network on windows of the training size
(``roi_size``) over the whole input, with MONAI's ``sliding_window_inference``; each window's evidence maps are
upsampled to the window's voxels, and the windows are blended into one map per class on the input's own grid.
The whole input's logits are *defined* as the spatial mean of that stitched map, so SoftCAM's completeness
(logit = mean of the map) holds for the whole input by construction.

Blending: with ``mode="constant"`` (default) every voxel's evidence is the plain mean of the
windows covering it; ``"gaussian"`` weights each window's centre more than its border. A voxel
seen by one window keeps that window's evidence exactly, so where the input fits in one window the
stitched map is the direct map upsampled to the input (tested). Where windows overlap, the
stitched logit is in general *not* the mean of the windows' own logits (overlapped voxels count
once, border voxels are seen with less context): it is the mean of what is shown.

Resolution: by default (``maps="grid"``) the stitched map comes at the network's own resolution over the whole input,
    ``n * grid / roi`` cells (rounded half up) along an axis of ``n`` voxels (12 cells per 384 px for ResNet).
    Each window's cells are held flat over their voxels, the windows are blended, and each output cell is the
    mean of the stitched voxels it covers (area pooling). Where the input fits one window this is the direct map
    exactly. The map is small enough to save as it is, stretched over the input as
    :func:`~monai_softcam.transforms.spatial.map_grid_affine` places it. ``maps="input"`` returns the stitched
    map on the input's voxels (windows upsampled bi/trilinearly). The logits are the mean of the stitched voxel
    map in both cases; the grid map's mean equals them when the input is a multiple of the cell size, and is
    close otherwise.

Memory: the input, the stitched maps (classes x input voxels, plus MONAI's weight map, on
``device``), and ``sw_batch_size`` windows at a time on ``sw_device``: the network's activations
grow with the window batch only; what grows with the input is the input itself and the stitched
maps (measured in ``benchmarks/sliding_window.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer, SimpleInferer, sliding_window_inference

from .networks.outputs import upsample_map
from .utils import as_flag

__all__ = ["EvidenceSlidingWindowInferer", "loader_batch_size", "make_inferer"]


def loader_batch_size(batch_size: int, sliding_window: Any = False) -> int:
    """Inference's batch size: ``batch_size``, or 1 with ``sliding_window`` (inputs keep their own
    sizes, which do not stack into one batch)."""
    return 1 if as_flag(sliding_window, "sliding_window") else int(batch_size)


def make_inferer(
    image_size: Sequence[int],
    sliding_window: Any = False,
    sw_batch_size: int = 4,
    overlap: float | Sequence[float] = 0.25,
    mode: str = "constant",
    progress: bool = True,
) -> Inferer:
    """Inference's inferer: MONAI's ``SimpleInferer`` on inputs resized to ``image_size``, or with
    ``sliding_window`` (a yes/no value) an :class:`EvidenceSlidingWindowInferer` with windows of
    ``image_size`` over inputs of any size."""
    if not as_flag(sliding_window, "sliding_window"):
        return SimpleInferer()
    return EvidenceSlidingWindowInferer(image_size, sw_batch_size, overlap, mode, progress=progress)


class EvidenceSlidingWindowInferer(Inferer):
    """Sliding-window SoftCAM inference returning ``{"logits": [B, C], "evidence_maps": [B, C, *grid]}``.

    Args:
        roi_size: the window (the network's training input size), one entry per spatial axis.
        sw_batch_size: windows run together (the memory knob).
        overlap: fraction of a window shared with its neighbour, per axis or one value.
        mode: ``"constant"`` (plain mean where windows overlap) or ``"gaussian"``.
        sw_device: where windows run (default: the input's device).
        device: where the stitched map is kept (default: the input's device; ``"cpu"`` saves GPU memory).
        progress: show a progress bar over the windows.
        maps: ``"grid"`` (the network's resolution stretched over the input) or ``"input"``
            (one value per input voxel); see the module docstring.
    """

    def __init__(
        self,
        roi_size: Sequence[int],
        sw_batch_size: int = 4,
        overlap: float | Sequence[float] = 0.25,
        mode: str = "constant",
        sw_device: torch.device | str | None = None,
        device: torch.device | str | None = None,
        progress: bool = False,
        maps: str = "grid",
    ) -> None:
        super().__init__()
        if maps not in ("grid", "input"):
            raise ValueError(f"maps must be 'grid' or 'input', got {maps!r}")
        self.maps = maps
        self.roi_size = [int(s) for s in roi_size]
        if sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be >= 1, got {sw_batch_size}")
        self.sw_batch_size = int(sw_batch_size)
        self.overlap = overlap
        self.mode = mode
        self.sw_device = sw_device
        self.device = device
        self.progress = progress

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if inputs.dim() != len(self.roi_size) + 2:
            raise ValueError(
                f"input of shape {tuple(inputs.shape)} does not match a {len(self.roi_size)}D window {self.roi_size}"
            )

        grid: list[int] = []  # the network's map grid for one window

        def window_maps(window: torch.Tensor) -> torch.Tensor:
            out = network(window, *args, **kwargs)
            if not isinstance(out, dict) or "evidence_maps" not in out:
                raise TypeError(
                    "sliding-window evidence needs a network returning evidence maps (SoftCAM, return_maps=True)"
                )
            maps = out["evidence_maps"]
            grid[:] = [int(s) for s in maps.shape[2:]]
            if self.maps == "grid":  # each cell held over its voxels: pooling them back gives the cell
                return F.interpolate(maps.float(), size=window.shape[2:], mode="nearest-exact").to(maps.dtype)
            return torch.stack([upsample_map(m, window.shape[2:]) for m in maps]).to(maps.dtype)

        maps = sliding_window_inference(
            inputs,
            roi_size=self.roi_size,
            sw_batch_size=self.sw_batch_size,
            predictor=window_maps,
            overlap=self.overlap,
            mode=self.mode,
            sw_device=self.sw_device,
            device=self.device,
            progress=self.progress,
        )
        logits = maps.flatten(2).mean(-1)
        if self.maps == "grid":
            size = [max(1, int(n * g / r + 0.5)) for n, g, r in zip(inputs.shape[2:], grid, self.roi_size)]
            maps = F.interpolate(maps, size=size, mode="area")
        return {"logits": logits, "evidence_maps": maps}
