"""How an evidence map is shown over its image (pure numbers; the Slicer module applies them).

Evidence maps are signed (logit units): positive where the image argues for the class, negative
where it argues against it. They are shown with a diverging colour map centred at 0 (blue < 0 <
red, zero a neutral near-white), with a window symmetric about 0 so that the colours of two classes, or of
two images, mean the same thing. A threshold above 0 keeps only the evidence *for* the class:
voxels whose evidence is at least ``threshold`` x the largest absolute value (Slicer thresholds a
single range of values).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DIVERGING_COLORS", "SEQUENTIAL_COLORS", "OverlayDisplay", "overlay_display"]

#: Slicer colour nodes: a diverging one for signed maps, a sequential one otherwise. Slicer's only
#: built-in diverging table with a neutral middle is DivergingBlueRed (Base/Logic/Resources/ColorFiles/
#: DivergingBlueRed.txt: 255 entries, index 127 = (247, 246, 246)); with window 2 x peak and level 0,
#: zero evidence falls on that middle. (ColdToHotRainbow's middle, index 128, is green (143, 255, 112):
#: it tinted the whole image.) Node IDs: vtkMRMLColorLogic::GetFileColorNodeID ("vtkMRMLColorTableNode"
#: + "File" + file name).
DIVERGING_COLORS = "vtkMRMLColorTableNodeFileDivergingBlueRed.txt"
SEQUENTIAL_COLORS = "vtkMRMLColorTableNodeFileInferno.txt"


@dataclass
class OverlayDisplay:
    color_node_id: str
    window: float
    level: float
    threshold: tuple[float, float] | None  # (lower, upper) of the shown values, None = all


def overlay_display(maps: dict[str, np.ndarray], threshold: float = 0.0, signed: bool = True) -> OverlayDisplay:
    """Display settings shared by all the maps of a result (one scale for every class).

    Args:
        maps: class -> map array.
        threshold: in [0, 1], the fraction of the largest absolute evidence below which voxels are hidden.
        signed: diverging colours centred at 0 (evidence maps); False: sequential colours over [min, max].
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    values = [np.asarray(m, dtype=np.float64) for m in maps.values()]
    finite = [v[np.isfinite(v)] for v in values]
    peak = max((float(np.abs(v).max()) for v in finite if v.size), default=0.0) or 1.0
    if signed:
        display = OverlayDisplay(DIVERGING_COLORS, window=2.0 * peak, level=0.0, threshold=None)
        if threshold > 0:
            display.threshold = (threshold * peak, peak)
        return display
    low = min((float(v.min()) for v in finite if v.size), default=0.0)
    high = max((float(v.max()) for v in finite if v.size), default=1.0)
    span = (high - low) or 1.0
    display = OverlayDisplay(SEQUENTIAL_COLORS, window=span, level=(low + high) / 2, threshold=None)
    if threshold > 0:
        display.threshold = (low + threshold * span, high)
    return display
