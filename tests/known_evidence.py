"""A network whose evidence is known, for geometry tests: the evidence for class 1 is the local
mean intensity (average pooling, ``stride``) minus ``offset``, for class 0 its negative; logits
are the maps' means, as in SoftCAM. A bright object therefore lights up class 1 exactly where it is."""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BrightnessEvidence(torch.nn.Module):
    def __init__(self, spatial_dims: int = 2, stride: int = 4, offset: float = 0.0, **kwargs) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.stride = stride
        self.offset = torch.nn.Parameter(torch.tensor(float(offset)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        evidence = pool(x.mean(1, keepdim=True), self.stride) - self.offset
        maps = torch.cat([-evidence, evidence], 1)
        return {"logits": maps.flatten(2).mean(-1), "evidence_maps": maps}
