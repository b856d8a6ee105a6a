"""Summaries of per-image metric values: means with seeded percentile-bootstrap confidence intervals
(:func:`~monai_softcam.metrics.statistics.summarize`, :func:`~monai_softcam.metrics.statistics.bootstrap_ci`;
weighted for pooled ratios) and the paired comparison of two methods on the same images
(:func:`~monai_softcam.metrics.statistics.paired_difference`: bootstrap CI and a sign-flip permutation test).
Non-finite values (an empty mask's NaN) are left out and counted."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["bootstrap_ci", "paired_difference", "summarize"]


def _finite(values: Any, weights: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The finite values (float64) and their weights (ones without ``weights``)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    w = torch.ones_like(v) if weights is None else torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.shape != v.shape:
        raise ValueError(f"one weight per value: got {w.numel()} weights for {v.numel()} values")
    keep = torch.isfinite(v) & torch.isfinite(w)
    return v[keep], w[keep]


def _weighted_mean(v: torch.Tensor, w: torch.Tensor, dim: int = -1) -> torch.Tensor:
    total = w.sum(dim)
    return torch.where(total > 0, (v * w).sum(dim) / total.clamp(min=1e-300), torch.full_like(total, float("nan")))


def bootstrap_ci(
    values: Any, level: float = 0.95, resamples: int = 2000, seed: int = 0, weights: Any = None
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of the finite ``values`` (seeded);
    with ``weights``, of the weighted mean (a pooled ratio such as ``sum(hits) / sum(found)``:
    values ``hits / found``, weights ``found``), images resampled with their weights."""
    v, w = _finite(values, weights)
    if v.numel() == 0:
        return float("nan"), float("nan")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, v.numel(), (resamples, v.numel()), generator=generator)
    means = _weighted_mean(v[idx], w[idx], dim=1)
    means = means[torch.isfinite(means)]
    if means.numel() == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    return float(means.quantile(alpha)), float(means.quantile(1 - alpha))


def paired_difference(
    a: Any, b: Any, level: float = 0.95, resamples: int = 2000, permutations: int = 10000, seed: int = 0
) -> dict[str, float]:
    """The paired comparison of two methods on the same images: ``d_i = a_i - b_i`` over the images
    where both are finite.

    Returns ``mean`` (of ``d``), ``ci_low``/``ci_high`` (percentile bootstrap of the mean of ``d``,
    seeded), ``n`` and ``p_value``: a two-sided sign-flip permutation test of ``mean(d) = 0``
    (each ``d_i`` keeps or flips its sign at random, ``permutations`` times; ``p = (1 + #{|mean*| >=
    |mean(d)|}) / (1 + permutations)``), which assumes only that ``d`` is symmetric about 0 under the
    null hypothesis. Positive ``mean``: ``a`` scores higher.
    """
    a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired values need one value per image each, got {a.numel()} and {b.numel()}")
    d = (a - b)[torch.isfinite(a) & torch.isfinite(b)]
    if d.numel() == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0, "p_value": float("nan")}
    low, high = bootstrap_ci(d, level=level, resamples=resamples, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (permutations, d.numel()), generator=generator, dtype=torch.float64) * 2 - 1
    observed = d.mean().abs()
    extreme = int(((signs * d).mean(dim=1).abs() >= observed - 1e-12).sum())
    return {
        "mean": float(d.mean()),
        "ci_low": low,
        "ci_high": high,
        "n": int(d.numel()),
        "p_value": (1 + extreme) / (1 + permutations),
    }


def summarize(values: Any, level: float = 0.95, seed: int = 0, weights: Any = None) -> dict[str, float]:
    """Mean (weighted by ``weights`` if given: see :func:`bootstrap_ci`), bootstrap CI, ``n``
    (samples with a value) and ``n_excluded`` (NaN: e.g. empty masks)."""
    v = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    finite = torch.isfinite(v)
    low, high = bootstrap_ci(v, level=level, seed=seed, weights=weights)
    kept, w = _finite(v, weights)
    mean = float(_weighted_mean(kept, w)) if kept.numel() else float("nan")
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(finite.sum()), "n_excluded": int((~finite).sum())}
