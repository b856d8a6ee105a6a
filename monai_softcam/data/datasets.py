"""Datasets with optional caching of the deterministic preprocessing, and intensity statistics."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from tqdm import tqdm

__all__ = ["CACHE_MODES", "intensity_stats", "make_dataset"]

CACHE_MODES = ("memory", "disk", "none")


def make_dataset(
    data: Sequence[dict[str, Any]],
    transform: Callable,
    cache: str = "memory",
    cache_dir: str | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 0,
    name: str = "",
) -> Dataset:
    """A MONAI dataset that keeps the deterministic part of ``transform`` (everything before its
    first random transform) computed once:

    * ``"memory"``: ``CacheDataset`` (``cache_rate`` of the items in RAM; decoded once at start);
    * ``"disk"``: ``PersistentDataset`` (files in ``cache_dir/name``, reused by later runs; ``name``
      keeps the splits apart);
    * ``"none"``: plain ``Dataset`` (decoded every epoch; least memory).
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if cache == "memory":
        return CacheDataset(
            data, transform, cache_rate=cache_rate, num_workers=max(1, int(num_workers)), progress=False
        )
    if cache == "disk":
        if not cache_dir:
            raise ValueError("cache 'disk' needs a cache_dir")
        folder = os.path.join(cache_dir, name)
        os.makedirs(folder, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=folder)
    return Dataset(data, transform)


def intensity_stats(
    data: Sequence[dict[str, Any]], load: Callable, image_key: str = "image", progress: bool = True
) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over all pixels of all images (as ``load`` returns them,
    i.e. before normalisation), accumulated in float64."""
    total = squares = None
    count = 0
    iterator: Any = data
    if progress:
        iterator = tqdm(data, desc="intensity statistics", unit="img")
    for item in iterator:
        image = torch.as_tensor(load(dict(item))[image_key]).double()
        flat = image.reshape(image.shape[0], -1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        squares = (flat**2).sum(1) if squares is None else squares + (flat**2).sum(1)
        count += flat.shape[1]
    if not count:
        raise ValueError("no images to compute intensity statistics from")
    mean = total / count
    std = (squares / count - mean**2).clamp(min=0).sqrt()
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
