"""Sampling strategies of the paper: instance-balanced, class-balanced and progressively-balanced.

* ``instance``: every image once per epoch, shuffled (the usual, and the default);
* ``class``: images drawn with replacement so that every class is equally likely;
* ``progressive``: class-balanced at the first epoch, moving towards instance-balanced: at epoch
  ``t`` (1-based) the weights are ``decay**(t-1) * class_balanced + (1 - decay**(t-1)) * instance``
  (Kang et al., 2020; the paper's decay is 0.9).

Under ``torch.distributed`` each process draws its own share of the epoch (``len / world_size``
samples) from a generator seeded by (seed, epoch, rank).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, RandomSampler

__all__ = ["BalancedSampler", "SAMPLING_MODES", "make_sampler"]

#: the training samplers' modes (:func:`make_sampler`)
SAMPLING_MODES = ("instance", "class", "progressive")


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class BalancedSampler(DistributedSampler):
    """Weighted sampling with replacement for ``mode`` ``"class"`` or ``"progressive"`` (see module doc).

    It is a ``DistributedSampler`` so that MONAI's trainer calls ``set_epoch(epoch)`` at every
    epoch, which also makes a resumed run continue the progressive schedule where it stopped.

    Args:
        labels: the class of every item of the dataset.
        mode: ``"class"`` or ``"progressive"``.
        decay: the progressive schedule's rate.
        seed: base seed of the draws.
    """

    def __init__(self, labels: Sequence[int], mode: str = "class", decay: float = 0.9, seed: int = 0) -> None:
        if mode not in ("class", "progressive"):
            raise ValueError(f"BalancedSampler mode must be 'class' or 'progressive', got {mode!r}")
        if not 0 <= decay <= 1:
            raise ValueError(f"decay must be in [0, 1], got {decay}")
        world, rank = _world()
        self.labels = torch.as_tensor(list(labels), dtype=torch.long)
        super().__init__(self.labels, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.mode = mode
        self.decay = float(decay)
        counts = Counter(self.labels.tolist())
        self._class_balanced = torch.tensor([1.0 / counts[int(c)] for c in self.labels], dtype=torch.float64)
        self._class_balanced /= self._class_balanced.sum()
        self.epoch = 1

    def weights(self, epoch: int | None = None) -> torch.Tensor:
        """Sampling probability of every item at ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        instance = torch.full_like(self._class_balanced, 1.0 / len(self.labels))
        if self.mode == "class":
            return self._class_balanced
        alpha = self.decay ** max(epoch - 1, 0)
        return alpha * self._class_balanced + (1 - alpha) * instance

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + self.rank)
        return iter(torch.multinomial(self.weights(), self.num_samples, replacement=True, generator=g).tolist())


def make_sampler(
    mode: str, datalist: Sequence[dict[str, Any]], distributed: bool = False, decay: float = 0.9, seed: int = 0
):
    """The training sampler for a sampling ``mode`` (see :data:`SAMPLING_MODES`).

    ``instance`` gives a ``RandomSampler`` (what a data loader with ``shuffle=True`` makes itself)
    or, when ``distributed``, a shuffling ``DistributedSampler`` over the data list; the balanced
    modes give a :class:`BalancedSampler`.
    """
    if mode not in SAMPLING_MODES:
        raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {mode!r}")
    if mode == "instance":
        indices = list(range(len(datalist)))
        return DistributedSampler(indices, shuffle=True, seed=seed) if distributed else RandomSampler(indices)
    return BalancedSampler([item["label"] for item in datalist], mode=mode, decay=decay, seed=seed)
