"""Datasets with optional caching of the deterministic preprocessing, and intensity statistics."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Sequence

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from tqdm import tqdm

from ..utils import MissingInputError, atomic_open, is_main_process

__all__ = ["CACHE_MODES", "intensity_stats", "make_dataset", "resolve_intensity_stats"]

logger = logging.getLogger("monai_softcam")

CACHE_MODES = ("memory", "disk", "none")


def make_dataset(
    data: Sequence[dict[str, Any]],
    transform: Callable,
    cache: str = "memory",
    cache_dir: str | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 0,
) -> Dataset:
    """A MONAI dataset that keeps the deterministic part of ``transform`` (everything before its
    first random transform) computed once:

    * ``"memory"``: ``CacheDataset`` (``cache_rate`` of the items in RAM; decoded once at start);
    * ``"disk"``: ``PersistentDataset`` (files in ``cache_dir``, reused by later runs);
    * ``"none"``: plain ``Dataset`` (decoded every epoch; least memory).
    """
    if cache not in CACHE_MODES:
        raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
    if cache == "memory":
        return CacheDataset(data, transform, cache_rate=cache_rate, num_workers=max(1, int(num_workers)), progress=False)
    if cache == "disk":
        if not cache_dir:
            raise ValueError("cache 'disk' needs a cache_dir")
        os.makedirs(cache_dir, exist_ok=True)
        return PersistentDataset(data, transform, cache_dir=cache_dir)
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


def resolve_intensity_stats(
    mean: Any, std: Any, stats_file: str, data: Sequence[dict[str, Any]] | None = None, load: Callable | None = None
) -> tuple[Any, Any]:
    """``(mean, std)`` as configured, or, when either is ``"auto"``, the training split's statistics.

    With ``data`` and ``load`` (training) they are computed with a progress bar, printed, and saved
    to ``stats_file`` (beside the model, so that evaluation and inference use the same values).
    Without them (inference) they are read from ``stats_file``.
    """
    if "auto" not in (mean, std):
        return mean, std
    if data is None or load is None:
        if not os.path.isfile(stats_file):
            raise MissingInputError(
                f"intensity_mean/std are 'auto' but {stats_file} does not exist: train first, or give the values"
            )
        with open(stats_file) as f:
            saved = json.load(f)
        return saved["mean"], saved["std"]
    computed_mean, computed_std = intensity_stats(data, load)
    print(f"intensity statistics of the training split ({len(data)} images): mean {computed_mean}, std {computed_std}")
    if is_main_process():
        with atomic_open(stats_file, "w") as f:
            json.dump({"mean": computed_mean, "std": computed_std, "images": len(data)}, f, indent=2)
        logger.info("saved intensity statistics to %s", stats_file)
    return (computed_mean if mean == "auto" else mean), (computed_std if std == "auto" else std)
