"""Learning-rate schedule of the SoftCAM paper."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["ClippedCosineLR"]


class ClippedCosineLR(LRScheduler):
    """A cosine decay over ``t_max`` steps, clipped at ``eta_min``; step it once per epoch.

    ``lr(t) = max(end + (lr0 - end) * (1 + cos(pi * min(t, t_max) / t_max)) / 2, eta_min)``, where ``end`` is
    where the cosine would arrive (``cosine_end``; ``None``: ``eta_min``, a cosine from ``lr0`` to ``eta_min``).

    The paper's reference (``modules/scheduler.py``, ``ClippedCosineAnnealingLR`` of github:kdjoumessi/SoftCAM,
    with ``configs/default.yaml``: ``T_max = 50``, ``min_lr = 1e-4``, lr0 = 1e-3) runs PyTorch's cosine towards
    0 and holds the lr at ``min_lr`` from the first epoch it would fall below it: ``cosine_end=0.0`` and
    ``eta_min=1e-4`` here (the paper presets; ``tests/test_reference_oracle.py`` compares the two epoch by
    epoch). The bundle's default is the cosine that ends at ``eta_min`` itself.

    Args:
        optimizer: the wrapped optimizer.
        t_max: number of steps of the cosine part (>= 1).
        eta_min: the floor, reached at or before ``t_max`` and kept afterwards.
        cosine_end: where the cosine would end at ``t_max`` (<= ``eta_min``); None: ``eta_min``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        t_max: int,
        eta_min: float = 0.0,
        last_epoch: int = -1,
        cosine_end: float | None = None,
    ) -> None:
        if int(t_max) < 1:
            raise ValueError(f"t_max must be >= 1, got {t_max}")
        self.t_max = int(t_max)
        self.eta_min = float(eta_min)
        self.cosine_end = self.eta_min if cosine_end is None else float(cosine_end)
        if not 0 <= self.cosine_end <= self.eta_min:
            raise ValueError(f"cosine_end must be in [0, eta_min = {self.eta_min}], got {cosine_end}")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        """Each group's lr at step ``last_epoch``: the clipped cosine of the class docstring."""
        t = min(max(self.last_epoch, 0), self.t_max)
        factor = (1 + math.cos(math.pi * t / self.t_max)) / 2
        end = self.cosine_end
        return [max(end + (base - end) * factor, self.eta_min) for base in self.base_lrs]
