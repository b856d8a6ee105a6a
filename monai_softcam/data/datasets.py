"""Datasets with optional caching of the deterministic preprocessing, the inference dataset that can leave out
an input that fails to read, and intensity statistics."""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset, list_data_collate
from tqdm import tqdm

from ..utils import as_flag, find_user_error

__all__ = ["CACHE_MODES", "SKIPPED", "SkipBadDataset", "collate_skipping", "intensity_stats", "make_dataset"]

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


#: the key under which :class:`SkipBadDataset` and :func:`collate_skipping` pass on the inputs left out
SKIPPED = "skipped_inputs"


class SkipBadDataset(Dataset):
    """A MONAI ``Dataset`` (inference) that, with ``skip_bad``, returns an input that fails to read, decode or
    preprocess as ``{SKIPPED: {"image": path, "problem": why}}`` instead of raising, so that the run leaves it
    out and lists it (:func:`collate_skipping`; :class:`~monai_softcam.handlers.outputs.SkippedInputs`). Without
    ``skip_bad`` it is a plain ``Dataset``: the first bad input stops the run, naming the file.

    Only a problem of the input is skipped: running out of memory (``MemoryError``) still stops the run."""

    def __init__(self, data: Sequence[dict[str, Any]], transform: Callable | None = None, skip_bad: Any = False):
        super().__init__(data, transform)
        self.skip_bad = as_flag(skip_bad, "skip_bad")

    def _transform(self, index: int) -> Any:
        if not self.skip_bad:
            return super()._transform(index)
        try:
            return super()._transform(index)
        except MemoryError:
            raise
        except Exception as err:  # the input's own problem, whatever the decoder or transform raised
            return {SKIPPED: {"image": str(self.data[index].get("image", index)), "problem": _why(err)}}


def _why(error: BaseException) -> str:
    """The message of what went wrong: the user error in ``error``'s chain, else its innermost cause (below
    MONAI's "applying transform" wrappers)."""
    user_error = find_user_error(error)
    if user_error is not None:
        return str(user_error)
    while error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def collate_skipping(items: Sequence[Any]) -> dict[str, Any]:
    """The inference loader's ``collate_fn``: MONAI's ``list_data_collate`` of the inputs that were read, with
    the ones left out by :class:`SkipBadDataset` under :data:`SKIPPED` (a batch may hold none that were read)."""
    skipped = [item[SKIPPED] for item in items if isinstance(item, dict) and SKIPPED in item]
    good = [item for item in items if not (isinstance(item, dict) and SKIPPED in item)]
    batch = list_data_collate(good) if good else {}
    if skipped:
        batch[SKIPPED] = skipped
    return batch
