"""The explanation metrics as one set: their names and directions, their settings, the values of
one batch, and the Ignite metric of the bundle's evaluation.

* :data:`~monai_softcam.metrics.explanation.HIGHER_IS_BETTER`,
  :data:`~monai_softcam.metrics.explanation.PROTOCOLS`, :data:`~monai_softcam.metrics.explanation.WEIGHTS`,
  :data:`~monai_softcam.metrics.explanation.DESCRIPTIVE`: every reported metric, its direction, its protocol,
  how it is summarised;
* :class:`~monai_softcam.metrics.explanation.ExplanationSettings`: the one vocabulary of settings (patch,
  stride, top-k, tolerance, dilation, threshold, protocol, deletion), scaled to an image size by
  :meth:`ExplanationSettings.for_image_size`;
* :func:`~monai_softcam.metrics.explanation.explanation_values`: every map-only metric of one batch, one ``[B]``
  tensor per name; the bundle's :class:`~monai_softcam.metrics.explanation.ExplanationMetrics` and the
  explanation report both use it, so a metric has one name and one value wherever it is reported.

The metric families live in their own modules: this project's protocol
(:mod:`~monai_softcam.metrics.localisation`: maps brought to the mask grid bi/trilinearly, masks as annotated,
top-k patches ranked by their mean), the paper's (:mod:`~monai_softcam.metrics.paper`), deletion and insertion
(:mod:`~monai_softcam.metrics.faithfulness`), confidence intervals and paired tests
(:mod:`~monai_softcam.metrics.statistics`) and the randomisation sanity check
(:mod:`~monai_softcam.metrics.sanity`). Pooled metrics (``paper_topk_precision``, ``paper_topk_precision_tp``)
are per-image ratios whose summary is weighted by :data:`~monai_softcam.metrics.explanation.WEIGHTS` (the pooled
ratio)."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch
from ignite.engine import Engine
from ignite.metrics import Metric
from monai.utils import evenly_divisible_all_gather

from ..networks.outputs import upsample_maps
from .classification import _stack
from .localisation import (
    activation_consistency,
    activation_precision,
    activation_sensitivity,
    completeness_error,
    energy_pointing_game,
    gini,
    pointing_game,
    topk_localisation_precision,
)
from .paper import paper_consistency, paper_dilation, paper_map_grid, paper_values
from .statistics import summarize

__all__ = [
    "CURVE_METRICS",
    "DESCRIPTIVE",
    "ExplanationMetrics",
    "ExplanationSettings",
    "HIGHER_IS_BETTER",
    "LEGACY_NAMES",
    "PROTOCOLS",
    "WEIGHTS",
    "base_metric",
    "explanation_output",
    "explanation_values",
    "higher_is_better",
    "is_paired",
    "weight_of",
]

#: every reported explanation metric and its direction (True when higher is better)
HIGHER_IS_BETTER = {
    "activation_precision": True,
    "activation_sensitivity": True,
    "pointing_game": True,
    "energy_pointing_game": True,
    "topk_precision": True,
    "consistency": True,
    "gini": True,
    "completeness_error": False,
    "deletion_auc": False,
    "insertion_auc": True,
    "paper_activation_precision": True,
    "paper_activation_sensitivity": True,
    "paper_consistency": True,
    "paper_topk_precision": True,
    "paper_topk_precision_tp": True,
    "paper_deletion_auc": False,
}

#: per-image values that describe rather than score (no direction), kept beside the metrics
DESCRIPTIVE = {"paper_topk_patches": "patches above the threshold among the top k (weight of the pooled top-k)"}

#: the metrics reported as a curve over k (``<name>@k``, k = 1 .. ``topk_curve``) besides their value at ``topk``
CURVE_METRICS = ("paper_topk_precision", "paper_topk_precision_tp", "paper_topk_patches")

#: pooled metrics, whose summary is the mean weighted by this per-image value (a ratio of sums)
WEIGHTS = {"paper_topk_precision": "paper_topk_patches", "paper_topk_precision_tp": "paper_topk_patches"}


def base_metric(name: str) -> str:
    """The metric a reported name is a point of: ``paper_topk_precision@7`` (the top-k curve at k = 7) is a point of
    ``paper_topk_precision``; any other name is its own."""
    return name.split("@", 1)[0]


def higher_is_better(name: str) -> bool | None:
    """The direction of a reported name (:data:`HIGHER_IS_BETTER` of its :func:`base_metric`; None: descriptive)."""
    return HIGHER_IS_BETTER.get(base_metric(name))


def weight_of(name: str) -> str | None:
    """The per-image value that weights a pooled name's summary (:data:`WEIGHTS`; a curve point's weight is the
    same point of its weight: ``paper_topk_patches@7`` for ``paper_topk_precision@7``), None for the others."""
    base = base_metric(name)
    return WEIGHTS[base] + name[len(base) :] if base in WEIGHTS else None


def is_paired(name: str) -> bool:
    """Whether metric ``name`` has per-image paired differences (:func:`~monai_softcam.metrics.statistics.paired_difference`): every
    metric but the pooled ones (:data:`WEIGHTS`, one ratio of sums over the images) and the
    descriptive values (:data:`DESCRIPTIVE`), curve points included."""
    return base_metric(name) not in WEIGHTS and base_metric(name) not in DESCRIPTIVE


#: the metric names of each protocol (``consistency`` and ``gini`` belong to both)
PROTOCOLS = {
    "default": (
        "consistency",
        "gini",
        "activation_precision",
        "activation_sensitivity",
        "energy_pointing_game",
        "pointing_game",
        "topk_precision",
        "deletion_auc",
        "insertion_auc",
    ),
    "paper": (
        "consistency",
        "gini",
        "paper_consistency",
        "paper_activation_precision",
        "paper_activation_sensitivity",
        "paper_topk_precision",
        "paper_topk_precision_tp",
        "paper_topk_patches",
        "paper_deletion_auc",
    ),
}


#: the settings' old names, which still work (with a FutureWarning) where flat keywords are accepted
LEGACY_NAMES = {"patch_size": "patch", "topk_patch": "patch", "deletion_patch": "patch", "topk_stride": "stride"}


@dataclass(frozen=True)
class ExplanationSettings:
    """The settings of the explanation metrics, one name per concept: the one vocabulary of the bundle's metric
    (:class:`ExplanationMetrics`, the bundle's ``explanation`` section) and of the explanation report
    (:func:`~monai_softcam.explanation_report.report.explanation_report`).

    Args:
        explained_class: the class whose maps are assessed (with two classes the positive one, 1);
            None: each image's own label.
        topk: the ``k`` of the reported top-k localisation precision.
        patch: the side of a top-k patch and of a deletion patch, in pixels (reduced to the image's
            smallest side where it would not fit).
        stride: the step of the top-k patch grid.
        pointing_tolerance: pixels around the annotation that still count as a hit (pointing game).
        protocol: ``default`` (this project's metrics), ``paper`` (the reference's) or ``both``.
        paper_threshold: the paper's top-k threshold, in SoftCAM's units (logit contribution per cell).
        dilation: the paper's mask dilation kernel (odd; 1: none).
        deletion_steps: the patches deleted (or inserted) one after the other (the report's curves).
        deletion_baseline: the value a deleted patch gets (0: the mean intensity after normalisation).
        healthy_class: the class whose images the paper's deletion leaves out.
        topk_curve: the paper's top-k curve, ``k = 1 .. topk_curve`` (the reference's 29; 0: none).
        paper_map_size: the side of the grid every map is resized to (cubic) before the paper's metrics, along
            the image's first axis (the reference's ``s`` = 16 at 512 px, which :meth:`for_image_size` scales;
            :func:`~monai_softcam.metrics.paper.paper_map_grid`): SoftCAM's maps at the paper's sizes are already on
            it, post-hoc maps are brought to it. None (the default here): each map on its own grid.

    :meth:`for_image_size` gives the paper's settings at 512 px scaled to an image size. A value
    out of range is a ``ValueError`` naming the setting.
    """

    explained_class: int | None = 1
    topk: int = 5
    patch: int = 33
    stride: int = 8
    pointing_tolerance: int = 15
    protocol: str = "default"
    paper_threshold: float = 1.0
    dilation: int = 9
    deletion_steps: int = 14
    deletion_baseline: float = 0.0
    healthy_class: int = 0
    topk_curve: int = 29
    paper_map_size: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS and self.protocol != "both":
            raise ValueError(f"protocol must be 'default', 'paper' or 'both', got {self.protocol!r}")
        checked = (("topk", 1), ("patch", 1), ("stride", 1), ("pointing_tolerance", 0), ("deletion_steps", 1))
        checked += (("topk_curve", 0),) + ((("paper_map_size", 1),) if self.paper_map_size is not None else ())
        for name, low in checked:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"explanation setting {name} must be an integer >= {low}, got {value!r}")
        if (
            isinstance(self.dilation, bool)
            or not isinstance(self.dilation, int)
            or self.dilation < 1
            or not self.dilation % 2
        ):
            raise ValueError(f"explanation setting dilation must be an odd integer >= 1, got {self.dilation!r}")
        for name in ("paper_threshold", "deletion_baseline"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"explanation setting {name} must be a finite number, got {value!r}")

    @classmethod
    def for_image_size(cls, image_size: Sequence[int], num_classes: int = 2, **given: Any) -> "ExplanationSettings":
        """The paper's settings at 512 px (top-k patches of 33 px on a stride-8 grid, deletion of
        33 px patches, a 9 x 9 mask dilation, maps on a 16-cell grid) and Zhang et al.'s pointing tolerance of 15 px at 224
        px, scaled to the first side ``s`` of ``image_size``, so that they cover the same fraction of
        every preset's images: patch ``max(3, round(33 s / 512))``, stride ``max(1, round(8 s /
        512))``, tolerance ``round(15 s / 224)``, dilation :func:`~monai_softcam.metrics.paper.paper_dilation`,
        map grid ``max(1, round(16 s / 512))``.
        The explained class is 1 with two classes (the positive one), else each image's label.
        ``given`` settings (not None) replace the scaled ones."""
        side = int(image_size[0])
        scaled = {
            "explained_class": 1 if int(num_classes) <= 2 else None,
            "patch": max(3, round(33 * side / 512)),
            "stride": max(1, round(8 * side / 512)),
            "pointing_tolerance": round(15 * side / 224),
            "dilation": paper_dilation(side),
            "paper_map_size": max(1, round(16 * side / 512)),
        }
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"ExplanationSettings has no setting(s) {sorted(unknown)}")
        return cls(**{**scaled, **{k: v for k, v in given.items() if v is not None}})

    @classmethod
    def for_task(cls, task: Any, **given: Any) -> "ExplanationSettings":
        """:meth:`for_image_size` for a :class:`~monai_softcam.task.Task`'s image size and classes."""
        return cls.for_image_size(task.image_size, task.num_classes, **given)

    @classmethod
    def resolve(
        cls, settings: "ExplanationSettings | None", legacy: dict[str, Any], owner: str, **defaults: Any
    ) -> "ExplanationSettings":
        """``settings`` (or ``cls(**defaults)``) with the flat keywords of an older API applied:
        each given one (not None) is a setting or one of its :data:`LEGACY_NAMES`, and is applied
        with a ``FutureWarning`` that names ``owner``; an unknown keyword is a ``TypeError``."""
        given = {k: v for k, v in legacy.items() if v is not None}
        base = settings if settings is not None else cls(**defaults)
        if not given:
            return base
        unknown = sorted(k for k in given if k not in LEGACY_NAMES and k not in cls.__dataclass_fields__)
        if unknown:
            raise TypeError(f"{owner}() got unexpected keyword argument(s) {unknown}")
        values: dict[str, Any] = {}
        for old, value in given.items():
            name = LEGACY_NAMES.get(old, old)
            if name in values and values[name] != value:
                raise ValueError(f"{owner}(): {old}={value!r} contradicts {name}={values[name]!r}")
            values[name] = value
        warnings.warn(
            f"{owner}({', '.join(f'{k}=...' for k in sorted(given))}) is deprecated: pass "
            f"settings=ExplanationSettings({', '.join(f'{k}=...' for k in sorted(values))})",
            FutureWarning,
            stacklevel=3,
        )
        return replace(base, **values)

    def paper_keywords(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~monai_softcam.metrics.paper.paper_values` these settings give."""
        return {
            "topk": self.topk,
            "patch": self.patch,
            "stride": self.stride,
            "paper_threshold": self.paper_threshold,
            "dilation": self.dilation,
            "curve": self.topk_curve,
            "map_size": self.paper_map_size,
        }

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (``dataclasses.asdict``)."""
        return asdict(self)


def explanation_values(
    maps: Any, masks: Any, positive: Any, settings: ExplanationSettings, predicted: Any = None
) -> dict[str, torch.Tensor]:
    """Every map-only explanation metric of one batch: one ``[B]`` float32 tensor per name.

    Args:
        maps: ``[B, *s]``, the map of the explained class of each sample, on the grid it was
            computed on (SoftCAM's map on the network's grid; a post-hoc map on its layer's grid
            or the image grid).
        masks: the annotation, ``[B, *S]`` or ``[B, 1, *S]`` (bool, or > 0.5 inside), or None.
        positive: ``[B]`` flags, True for the samples of the explained class (for consistency).
        settings: the metrics' settings (``topk``, ``patch``, ``stride``, ``pointing_tolerance``,
            ``protocol``, ``paper_threshold`` in the maps' raw units, ``dilation``).
        predicted: ``[B]`` flags, True where the model assigns the sample to the explained class
            (the paper's true-positive-only top-k), or None.

    Returns ``consistency`` and ``gini``, measured on ``maps`` as given; with masks also
    (default protocol) ``activation_precision``, ``activation_sensitivity``,
    ``energy_pointing_game``, ``pointing_game`` and ``topk_precision``, measured on the masks'
    grid (maps on another grid are brought there by :func:`~monai_softcam.networks.outputs.upsample_map`),
    and (paper protocol) those of :func:`~monai_softcam.metrics.paper.paper_values`; NaN where a mask is empty.
    """
    protocol = settings.protocol
    maps = torch.as_tensor(maps).float()
    values = {"consistency": activation_consistency(maps, positive), "gini": gini(maps)}
    if protocol in ("paper", "both"):
        grid = paper_map_grid(maps.shape[1:], settings.paper_map_size)
        values["paper_consistency"] = paper_consistency(maps, positive, grid)
    if masks is None:
        return values
    masks = torch.as_tensor(masks, device=maps.device)
    if protocol in ("paper", "both"):
        values.update(paper_values(maps, masks, predicted, **settings.paper_keywords()))
    if protocol == "paper":
        return values
    grid = tuple(masks.shape[-(maps.dim() - 1) :])
    if tuple(maps.shape[1:]) != grid:
        if (
            maps.dim() not in (3, 4)
            or masks.dim() not in (maps.dim(), maps.dim() + 1)
            or masks.shape[0] != maps.shape[0]
        ):
            raise ValueError(
                f"maps of shape {tuple(maps.shape)} cannot be brought to the grid of the masks {tuple(masks.shape)}"
            )
        maps = upsample_maps(maps[:, None], grid)[:, 0]
    values["activation_precision"] = activation_precision(maps, masks)
    values["activation_sensitivity"] = activation_sensitivity(maps, masks)
    values["energy_pointing_game"] = energy_pointing_game(maps, masks)
    values["pointing_game"] = pointing_game(maps, masks, settings.pointing_tolerance)
    size = min(int(settings.patch), *maps.shape[1:])
    values["topk_precision"] = topk_localisation_precision(maps, masks, settings.topk, size, settings.stride)[:, -1]
    return values


def explanation_output(output: Any, batch: Any) -> tuple[Any, Any, Any, Any]:
    """``(evidence_maps, masks or None, labels, logits or None)`` from a MONAI evaluator's output and
    batch (decollated lists of dicts, or batched dicts). Masks come from the batch (the data), the
    rest from the output; evidence maps missing (a black box) gives ``None`` maps."""

    def column(source: Any, key: str) -> Any:
        if isinstance(source, dict):
            return source.get(key)
        if isinstance(source, (list, tuple)) and source and all(isinstance(d, dict) and key in d for d in source):
            return [d[key] for d in source]
        return None

    labels = column(output, "label")
    return column(output, "evidence_maps"), column(batch, "mask"), labels, column(output, "logits")


class ExplanationMetrics(Metric):
    """Ignite metric over an evaluation: localisation, consistency, sparseness and completeness of
    SoftCAM's evidence maps, each reported as its mean under its own name (those of
    :func:`explanation_values`, ``completeness_error`` when the logits are given, and
    ``mean_abs_evidence``, the mean of ``|map|`` over the cells in logit units: how *large* the
    maps are, not how good; Gini says how concentrated they are whatever their size).

    Args:
        output_transform: maps ``(engine.state.output, engine.state.batch)`` to ``(evidence_maps,
            masks, labels, logits)``: maps ``[B, C, *s]`` at the network's resolution, masks
            ``[B, 1, *S]`` on the image grid (or None), labels ``[B]``, logits ``[B, C]`` (or
            None); batched or lists per sample. The default, :func:`explanation_output`, reads a
            MONAI evaluator's ``evidence_maps``, ``label`` and ``logits`` outputs and the batch's ``mask``.
        settings: an :class:`ExplanationSettings` (the bundle's ``explanation``): the explained
            class (its samples are the positive ones of consistency; None: each sample's own
            label), top-k, patch, stride, pointing tolerance, protocol, the paper's threshold
            (raw map units: SoftCAM's logit units per cell) and dilation. The paper's pooled top-k
            precisions are reported as the pooled ratio (:data:`WEIGHTS`); the true-positive-only
            one needs the logits. None: ``ExplanationSettings(explained_class=None,
            pointing_tolerance=0, dilation=1)``.
        prefix: prepended to every name.
        legacy: the older flat keywords (``explained_class``, ``topk``, ``patch_size``, ``stride``,
            ``pointing_tolerance``, ``protocol``, ``paper_threshold``, ``dilation``), applied over
            ``settings`` with a ``FutureWarning`` (:meth:`ExplanationSettings.resolve`).

    Consistency and Gini are measured on the maps at the network's resolution, the localisation
    metrics on the maps upsampled to the masks' grid. Localisation metrics use only samples with
    a non-empty mask; ``explanation_excluded`` counts the others. A model without evidence maps (a
    black box) reports nothing. Per-sample values of the last run are kept in ``self.values``.
    """

    def __init__(
        self,
        output_transform: Callable = explanation_output,
        settings: ExplanationSettings | None = None,
        prefix: str = "",
        device: str | torch.device = "cpu",
        **legacy: Any,
    ) -> None:
        self.settings = ExplanationSettings.resolve(
            settings, legacy, "ExplanationMetrics", explained_class=None, pointing_tolerance=0, dilation=1
        )
        self.prefix = prefix
        self.values: dict[str, torch.Tensor] = {}
        super().__init__(output_transform=output_transform, device=device, skip_unrolling=True)

    def reset(self) -> None:
        """Start afresh: no per-sample values collected."""
        self._values: dict[str, list[torch.Tensor]] = {}

    def iteration_completed(self, engine: Engine) -> None:
        """Update with ``output_transform(engine.state.output, engine.state.batch)``: the batch holds the masks."""
        self.update(self._output_transform(engine.state.output, engine.state.batch))

    def update(self, output: Sequence[Any]) -> None:
        """Collect the per-sample values of one batch (nothing without evidence maps)."""
        maps, masks, labels, logits = output
        if maps is None:
            return
        maps = _stack(maps).float()
        labels = _stack(labels).long().reshape(-1).to(maps.device)
        explained = self.settings.explained_class
        classes = labels if explained is None else torch.full_like(labels, int(explained))
        chosen = maps[torch.arange(maps.shape[0], device=maps.device), classes]  # [B, *s]
        predicted = None
        if logits is not None:
            logits = _stack(logits).to(maps.device).float()
            assigned = logits.argmax(dim=1) if logits.shape[1] > 1 else (logits[:, 0] > 0).long()
            predicted = assigned == classes
        masks = None if masks is None else _stack(masks).to(maps.device)
        values = explanation_values(chosen, masks, labels == classes, self.settings, predicted=predicted)
        if logits is not None:
            values["completeness_error"] = completeness_error(logits, maps)
        # how large the maps are (logit units per cell), not how good: a penalty that shrinks maps lowers it
        values["mean_abs_evidence"] = chosen.abs().flatten(1).mean(1)
        for name, value in values.items():
            self._values.setdefault(name, []).append(value.detach().float().cpu())

    def compute(self) -> dict[str, float]:
        """Gather all ranks' values into ``values`` and return each metric's mean (prefixed), with
        ``explanation_excluded`` when localisation was measured."""
        # all ranks' samples, in rank order (uneven shards are padded for the exchange and cut back)
        self.values = {name: evenly_divisible_all_gather(torch.cat(parts)) for name, parts in self._values.items()}
        weight = lambda name: self.values.get(weight_of(name)) if weight_of(name) else None  # noqa: E731
        results = {
            f"{self.prefix}{name}": summarize(v, weights=weight(name))["mean"] for name, v in self.values.items()
        }
        localisation = next(
            (n for n in ("activation_precision", "paper_activation_precision") if n in self.values), None
        )
        if localisation:
            results[f"{self.prefix}explanation_excluded"] = summarize(self.values[localisation])["n_excluded"]
        return results

    def completed(self, engine: Engine, name: str) -> None:
        """Put every metric in ``engine.state.metrics``."""
        engine.state.metrics.update(self.compute())
