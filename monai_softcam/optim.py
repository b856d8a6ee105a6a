"""Learning-rate schedule of the SoftCAM paper."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ClippedCosineLR"]


class ClippedCosineLR(LRScheduler):
    """Cosine decay from each group's initial lr to ``eta_min`` over ``t_max`` steps, then held at ``eta_min``.

    ``lr(t) = eta_min + (lr0 - eta_min) * (1 + cos(pi * min(t, t_max) / t_max)) / 2``; step it once per
    epoch. The paper used ``t_max = 50`` epochs and ``eta_min = 1e-4`` from ``lr0 = 1e-3``.

    Args:
        optimizer: the wrapped optimizer.
        t_max: number of steps of the cosine part (>= 1).
        eta_min: the floor, reached at ``t_max`` and kept afterwards.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, t_max: int, eta_min: float = 0.0, last_epoch: int = -1
    ) -> None:
        if int(t_max) < 1:
            raise ValueError(f"t_max must be >= 1, got {t_max}")
        self.t_max = int(t_max)
        self.eta_min = float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Each group's lr at step ``last_epoch``: the clipped cosine of the class docstring."""
        t = min(max(self.last_epoch, 0), self.t_max)
        factor = (1 + math.cos(math.pi * t / self.t_max)) / 2
        return [self.eta_min + (base - self.eta_min) * factor for base in self.base_lrs]
