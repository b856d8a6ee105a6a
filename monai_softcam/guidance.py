r"""Evidence guidance: a penalty on evidence where an annotation says it should not be.

A SoftCAM logit is the mean of its evidence map, ``logit_c = (1/N) sum_u A_c(u)`` over the ``N`` cells
``u`` of the map grid, so a penalty on the map's cells acts on the decision itself: one forward pass, no
double backpropagation. The annotation ``m`` (a lesion mask or drawn boxes, binary or soft, on the input's
voxels) meets the map through its **coverage** ``cov(u)``: the fraction of cell ``u``'s area (volume) that
the annotation covers, ``cov(u) = sum_p W(u, p) m(p)`` with the per-axis overlaps of
:func:`~monai_softcam.regions.axis_overlap` (the rule of :mod:`~monai_softcam.regions`: the map grid
stretched over the input, cell ``j`` of ``m`` along an axis of ``n`` voxels spanning voxel coordinates
``[j n/m - 1/2, (j + 1) n/m - 1/2]``, also where ``n`` is not a multiple of ``m``). For a binary mask it is
the exact area fraction; for a soft one the area-weighted mean of the mask over the cell.

For image ``b`` of a batch, class evidence maps ``A_b`` of ``K`` classes:

* ``"outside"`` (evidence for the annotated class ``c`` only where the annotation is)::

      g_b = (1/N) sum_u ReLU(D_bc(u)) * (1 - cov_b(u)),    D_c = A_c - (1/(K-1)) sum_{k != c} A_k

  counted for the images whose label is ``c`` and whose annotation is non-empty. ``D_c``
  (:func:`margin_evidence`) is the evidence for ``c`` *against the other classes*: its mean is ``logit_c``
  minus the mean of the other logits (for two classes, ``A_1 - A_0``, whose mean is the log-odds of class
  1). ``g_b`` is the positive part of the share of that margin that the cells outside the annotation give
  (the ``"outside"`` region of :func:`~monai_softcam.regions.region_evidence`, negative evidence clipped):
  the term pushes the decision's reasons for ``c`` into the annotation. Evidence against ``c`` is left
  alone; images of other classes contribute nothing. The margin, not ``A_c`` alone, is penalised because
  a softmax decides on differences of logits: a penalty on ``A_c`` alone is undone by evidence *against*
  the other class in the same cells (measured on the shortcut demo, :doc:`/results/guidance`: with
  ``ReLU(A_1)`` the marker's evidence moved into ``-A_0``, and the decision kept its maximum there).

* ``"avoid"`` (no evidence of any sign, for any class, on a confounder: a ruler, a text label, a marker)::

      g_b = (1/(K N)) sum_k sum_u |A_bk(u)| * cov_b(u)

  counted for every image whose (confounder) mask is non-empty, whatever its label.

With one output (a sigmoid model, ``K = 1``) the map argues for class 1 and against class 0: ``D_1 = A_0``,
``D_0 = -A_0``.

The term is ``G = lambda_g * mean_{b in E} g_b``: the mean over the batch's *counted* images ``E`` (those
``eligible`` and, as above, of the annotated class in ``"outside"`` mode, with a non-empty mask), so an
image's weight does not depend on how many images of the batch carry no annotation. A batch with no
counted image gives exactly 0, still a function of the maps (its gradient is zero). ``g_b`` is in logit
units, like the evidence, and does not depend on the map's size.

The same term guides a black box through its class activation map (:func:`black_box_cam`: for global
average pooling and a linear layer, ``CAM_k(u) = sum_f w_kf F_f(u) + b_k``, whose mean over the cells is
the logit); for a ResNet it is the SoftCAM network's evidence map with the same weights, and the two
terms are the same function of the backbone. :func:`right_reasons_term` is the input-gradient baseline of
Ross et al. (2017), which needs double backpropagation. :func:`guidance_subset` chooses the annotated
training items whose annotations are used (the run-fixed ``guidance#fraction``).

In the bundle (``train.yaml``'s ``guidance`` section, :doc:`/guide/guidance`): :func:`guided_datalist` gives
the training items their annotations (those of the subset; the others an empty mask),
:func:`prepare_guided_batch` hands ``{"label", "mask"}`` to the loss as its target, :class:`GuidanceInferer`
gives the loss what the method needs (the evidence maps, a black box's CAM, or the input that requires
gradients), and :class:`~monai_softcam.losses.SoftCAMLoss` adds :class:`EvidenceGuidance` as its
``guidance`` term.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import logging
import math
import os
from typing import Any, Hashable, Iterable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.inferers import Inferer

from .data.datalist import SplitLists
from .networks.outputs import EVIDENCE_MAPS, LOGITS, split_output
from .networks.softcam import BlackBox
from .regions import axis_overlap
from .utils import ConfigError

__all__ = [
    "GUIDANCE_METHODS",
    "GUIDANCE_MODES",
    "INPUTS",
    "EvidenceGuidance",
    "GuidanceInferer",
    "black_box_cam",
    "guidance_subset",
    "guidance_term",
    "guided_datalist",
    "margin_evidence",
    "mask_coverage",
    "prepare_guided_batch",
    "right_reasons_term",
]

logger = logging.getLogger("monai_softcam")

#: ``"outside"``: evidence for the annotated class outside its annotation; ``"avoid"``: any evidence on a confounder
GUIDANCE_MODES = ("outside", "avoid")
#: ``"evidence"``: on the evidence maps (a black box's CAM); ``"input_gradients"``: Ross et al.'s input-gradient baseline
GUIDANCE_METHODS = ("evidence", "input_gradients")
#: the key of a training output that holds the input the loss differentiates (``"input_gradients"``)
INPUTS = "inputs"
#: masks may overshoot [0, 1] by this much (interpolation rounding); values are then clipped
_MASK_SLACK = 1e-6


def _check_mode(mode: Any) -> str:
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode must be one of {list(GUIDANCE_MODES)}, got {mode!r}")
    return mode


def _check_method(method: Any) -> str:
    if method not in GUIDANCE_METHODS:
        raise ValueError(f"guidance method must be one of {list(GUIDANCE_METHODS)}, got {method!r}")
    return method


def _check_lambda(lambda_g: Any) -> float:
    if isinstance(lambda_g, bool) or not isinstance(lambda_g, (int, float)) or not lambda_g >= 0:
        raise ValueError(f"guidance lambda must be a number >= 0, got {lambda_g!r}")
    return float(lambda_g)


def _check_masks(masks: torch.Tensor, batch: int, spatial_dims: int) -> torch.Tensor:
    """``masks`` ``[B, 1, *spatial]`` checked (shape, values in [0, 1]) and clipped; the channel dropped."""
    masks = torch.as_tensor(masks)
    if masks.dim() != spatial_dims + 2 or masks.shape[0] != batch or masks.shape[1] != 1:
        expected = "[" + ", ".join([str(batch), "1"] + ["H", "W", "D"][:spatial_dims]) + "]"
        raise ValueError(f"masks must be {expected} (one mask per image, on its voxels), got {tuple(masks.shape)}")
    masks = masks[:, 0].float() if not masks.is_floating_point() else masks[:, 0]
    if masks.numel() and not (
        bool(torch.isfinite(masks).all()) and masks.min() >= -_MASK_SLACK and masks.max() <= 1 + _MASK_SLACK
    ):
        raise ValueError(
            f"masks must hold values in [0, 1] (binary or soft), got values in "
            f"[{float(masks.min()):g}, {float(masks.max()):g}]"
        )
    return masks.clamp(0.0, 1.0)


def _check_eligible(eligible: Any, batch: int, device: torch.device) -> torch.Tensor:
    if eligible is None:
        return torch.ones(batch, dtype=torch.bool, device=device)
    eligible = torch.as_tensor(eligible, device=device).reshape(-1)
    if eligible.numel() != batch:
        raise ValueError(f"eligible must hold one flag per image ({batch}), got {eligible.numel()}")
    return eligible.bool()


def _stretch_weights(cells: int, voxels: int, device: torch.device) -> torch.Tensor:
    """``W[j, p]`` of :func:`~monai_softcam.regions.axis_overlap` for a grid of ``cells`` stretched over ``voxels``
    (the bundle's rule, :func:`~monai_softcam.transforms.spatial.map_grid_affine`: scale ``n/m``, shift
    ``n/(2m) - 1/2``)."""
    scale = voxels / cells
    return torch.from_numpy(axis_overlap(cells, voxels, scale, scale / 2 - 0.5)).to(device)


def mask_coverage(masks: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """The fraction of every cell of a map grid that each image's annotation covers: ``[B, *grid]`` (float64).

    Args:
        masks: ``[B, 1, *spatial]`` binary or soft masks (values in [0, 1]) on the input's voxels, the
            axes in the order of the map's axes.
        grid: the map grid (``maps.shape[2:]``), stretched over the input as
            :func:`~monai_softcam.networks.outputs.upsample_maps` stretches it.

    Separable and exact: the mask contracted along every axis with the cell-voxel overlaps of
    :func:`~monai_softcam.regions.axis_overlap` (the coverage of :func:`~monai_softcam.regions.cell_coverage`,
    batched, for soft masks too). No gradient flows to the masks.

    Example::

        >>> import torch
        >>> masks = torch.zeros(1, 1, 32, 32)
        >>> masks[0, 0, :12, :16] = 1  # three quarters of the first 16-pixel cell along the first axis
        >>> mask_coverage(masks, (2, 2))[0].tolist()
        [[0.75, 0.0], [0.0, 0.0]]
    """
    grid = [int(g) for g in grid]
    masks = _check_masks(masks, int(torch.as_tensor(masks).shape[0]), len(grid)).detach()
    out = masks.double()
    for cells, voxels in zip(grid, masks.shape[1:]):
        # the next input axis is always axis 1 (after the batch); the map axes pile up at the end in order
        out = torch.tensordot(out, _stretch_weights(cells, voxels, out.device), dims=([1], [1]))
    return out.clamp(0.0, 1.0)


def margin_evidence(maps: torch.Tensor, annotated_class: int) -> torch.Tensor:
    """The evidence for ``annotated_class`` against the other classes, ``[B, *grid]``: ``D_c = A_c - mean_{k != c}
    A_k`` (two classes: ``A_c - A_other``; one output: ``A_0`` for class 1, ``-A_0`` for class 0). Its mean over
    the cells is ``logit_c`` minus the mean of the other logits: the map of what a softmax decides on.

    Example::

        >>> import torch
        >>> maps = torch.tensor([[[[1.0, 2.0]], [[3.0, 2.0]]]])  # [1, 2 classes, 1, 2]
        >>> margin_evidence(maps, 1)
        tensor([[[2., 0.]]])
    """
    classes = maps.shape[1]
    if isinstance(annotated_class, bool) or not isinstance(annotated_class, int):
        raise ValueError(f"annotated_class must be a class index, got {annotated_class!r}")
    if not 0 <= annotated_class < max(classes, 2):
        raise ValueError(f"annotated_class {annotated_class} is not one of the classes 0..{max(classes, 2) - 1}")
    if classes == 1:
        return maps[:, 0] if annotated_class == 1 else -maps[:, 0]
    others = (maps.sum(dim=1) - maps[:, annotated_class]) / (classes - 1)
    return maps[:, annotated_class] - others


def guidance_term(
    maps: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    eligible: torch.Tensor | None = None,
    mode: str = "outside",
    annotated_class: int = 1,
    lambda_g: float = 1.0,
) -> torch.Tensor:
    """The guidance term ``lambda_g * mean_{counted b} g_b`` of the module's formulas (a scalar).

    Args:
        maps: evidence maps ``[B, K, *grid]`` (2D or 3D grid): a SoftCAM network's, or a black box's CAM
            (:func:`black_box_cam`).
        labels: class indices ``[B]`` (or ``[B, 1]``); read in ``"outside"`` mode only.
        masks: ``[B, 1, *spatial]`` annotations (``"outside"``) or confounder masks (``"avoid"``) on the
            input's voxels, binary or soft; an all-zero mask means none.
        eligible: ``[B]`` flags: whose annotations are used (the :func:`guidance_subset` items); None: all.
        mode: ``"outside"`` or ``"avoid"`` (:data:`GUIDANCE_MODES`).
        annotated_class: the class whose annotation the masks are (``"outside"``); 1 (the lesion class of
            two) by default.
        lambda_g: the weight, >= 0.

    Example::

        >>> import torch
        >>> maps = torch.zeros(1, 2, 2, 2)
        >>> maps[0, 1, 0, 0] = 4.0  # evidence for class 1 in one cell of four, half of it annotated
        >>> masks = torch.zeros(1, 1, 8, 8)
        >>> masks[0, 0, :2, :4] = 1
        >>> guidance_term(maps, torch.tensor([1]), masks)
        tensor(0.5000)
    """
    _check_mode(mode)
    lambda_g = _check_lambda(lambda_g)
    if maps.dim() not in (4, 5):
        raise ValueError(f"maps must be [B, K, *grid] with a 2D or 3D grid, got shape {tuple(maps.shape)}")
    batch, grid = maps.shape[0], maps.shape[2:]
    coverage = mask_coverage(masks, grid).to(device=maps.device, dtype=maps.dtype)
    counted = _counted(eligible, torch.as_tensor(masks, device=maps.device), labels, mode, annotated_class, batch)
    if mode == "outside":
        evidence = margin_evidence(maps, annotated_class)
        per_image = (evidence.clamp(min=0) * (1 - coverage)).flatten(1).mean(dim=1)
    else:
        per_image = (maps.abs() * coverage[:, None]).flatten(1).mean(dim=1)
    # where(): an uncounted image adds exactly 0 and no gradient, whatever its maps hold
    total = torch.where(counted, per_image, torch.zeros_like(per_image)).sum()
    return lambda_g * total / counted.sum().clamp(min=1).to(total.dtype)


class EvidenceGuidance(nn.Module):
    """The guidance term of the module's formulas as a loss component.

    Args:
        lambda_g: weight of the term, >= 0 (0: inactive).
        mode: ``"outside"`` (evidence for ``annotated_class`` outside its annotation) or ``"avoid"`` (evidence
            of any sign for any class on a confounder mask).
        annotated_class: the class whose annotation the masks are (``"outside"`` mode).
        method: ``"evidence"`` (:func:`guidance_term` on the evidence maps, or a black box's CAM) or
            ``"input_gradients"`` (:func:`right_reasons_term`, the baseline).

    ``forward(output, labels, masks, eligible=None)``: the term, a scalar. ``output`` is the evidence maps
    ``[B, K, *grid]`` or a model output holding them (``{"logits", "evidence_maps"}``); for
    ``"input_gradients"``, the output of :class:`GuidanceInferer` (it holds the input, :data:`INPUTS`).
    :meth:`from_settings` builds it from a config's ``guidance`` section (``{lambda, mode, annotated_class,
    method}``; the data side's ``mask_column`` and ``fraction`` are :func:`guided_datalist`'s business).

    Example::

        >>> import torch
        >>> guidance = EvidenceGuidance(lambda_g=0.1, mode="avoid")
        >>> masks = torch.ones(2, 1, 8, 8)
        >>> guidance(torch.ones(2, 3, 2, 2), torch.tensor([0, 1]), masks)
        tensor(0.1000)
    """

    def __init__(
        self, lambda_g: float = 0.0, mode: str = "outside", annotated_class: int = 1, method: str = "evidence"
    ) -> None:
        super().__init__()
        self.lambda_g = _check_lambda(lambda_g)
        self.mode = _check_mode(mode)
        self.annotated_class = annotated_class
        self.method = _check_method(method)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> "EvidenceGuidance":
        """From a ``guidance`` settings section: ``lambda`` (default 0), ``mode``, ``annotated_class``, ``method``."""
        settings = dict(settings or {})
        return cls(
            settings.get("lambda", 0.0),
            settings.get("mode", "outside"),
            settings.get("annotated_class", 1),
            settings.get("method", "evidence"),
        )

    @property
    def active(self) -> bool:
        """Whether the term can be non-zero (``lambda_g > 0``)."""
        return self.lambda_g > 0

    def forward(
        self, output: Any, labels: torch.Tensor, masks: torch.Tensor, eligible: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The guidance term of ``output`` with this module's settings."""
        settings = dict(mode=self.mode, annotated_class=self.annotated_class, lambda_g=self.lambda_g)
        if self.method == "input_gradients":
            if not isinstance(output, Mapping) or INPUTS not in output:
                raise ValueError(
                    "input-gradient guidance needs the input that requires gradients in the model output "
                    f"({INPUTS!r}): run the network through monai_softcam.guidance.GuidanceInferer"
                )
            return right_reasons_term(split_output(output)[0], output[INPUTS], labels, masks, eligible, **settings)
        maps = output if isinstance(output, torch.Tensor) else split_output(output)[1]
        if maps is None:
            raise ValueError(
                "evidence guidance needs evidence maps: a SoftCAM network built with return_maps=True, or a black "
                "box run through monai_softcam.guidance.GuidanceInferer (its class activation maps)"
            )
        return guidance_term(maps, labels, masks, eligible, **settings)

    def extra_repr(self) -> str:
        """The weight, mode, annotated class and method, for the module's repr."""
        return (
            f"lambda_g={self.lambda_g}, mode={self.mode!r}, annotated_class={self.annotated_class}, "
            f"method={self.method!r}"
        )


def black_box_cam(network: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """A black box's logits and class activation maps from one forward pass: ``{"logits", "evidence_maps"}``,
    the output form of SoftCAM, so that :func:`guidance_term` (and the SoftCAM loss) take it as they are.

    Args:
        network: a :class:`~monai_softcam.networks.softcam.BlackBox` with the ``"gap"`` head on a trunk that
            feeds it directly (``backbone.neck`` an identity: every backbone but VGG), or a wrapper holding
            one as ``.module`` (DistributedDataParallel: the wrapper runs, so gradients are synchronised).
        x: the input batch.

    ``CAM_k(u) = sum_f w_kf F_f(u) + b_k`` (Zhou et al., 2016) on the trunk's output ``F`` (captured by a
    forward hook on ``backbone.features``, removed again) with the class layer ``fc``: its mean over the
    cells is the logit, and gradients flow to the backbone through ``F`` and to ``fc``. For a ResNet with the
    weights of a SoftCAM network it is that network's evidence map (``tests/test_equivalence.py``). A head
    that is not linear after the pooling (VGG's FC6/FC7, the classic head) has no such map: a ValueError.
    """
    inner = getattr(network, "module", network)
    if not isinstance(inner, BlackBox):
        raise ValueError(f"black_box_cam needs a BlackBox network, got {type(inner).__name__}")
    if (
        inner.head_type != "gap"
        or not isinstance(inner.backbone.neck, nn.Identity)
        or not isinstance(inner.classifier, nn.Identity)
    ):
        raise ValueError(
            f"black_box_cam needs a black box whose class layer reads the pooled trunk directly (the 'gap' head on "
            f"a backbone without a neck, e.g. a ResNet); {inner.backbone_name} with head {inner.head_type!r} has "
            "non-linear layers after the pooling, so its logits are not the mean of a map"
        )
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        captured.append(output)

    handle = inner.backbone.features.register_forward_hook(keep)
    try:
        logits, _ = split_output(network(x))
    finally:
        handle.remove()
    features = captured[-1]
    cam = torch.einsum("kf,bf...->bk...", inner.fc.weight, features)
    if inner.fc.bias is not None:
        cam = cam + inner.fc.bias.reshape(1, -1, *([1] * (features.dim() - 2)))
    return {LOGITS: logits, EVIDENCE_MAPS: cam}


def _counted(
    eligible: Any, masks: torch.Tensor, labels: torch.Tensor, mode: str, annotated_class: int, batch: int
) -> torch.Tensor:
    """``[B]`` flags of the images a term counts: ``eligible``, with a non-empty mask and, in ``"outside"``
    mode, of the annotated class."""
    device = masks.device
    counted = _check_eligible(eligible, batch, device) & (masks.flatten(1).amax(dim=1) > 0)
    if mode == "outside":
        labels = torch.as_tensor(labels, device=device).reshape(-1)
        if labels.numel() != batch:
            raise ValueError(f"labels must hold one class per image ({batch}), got {labels.numel()}")
        counted = counted & (labels.long() == annotated_class)
    return counted


def right_reasons_term(
    logits: torch.Tensor,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    eligible: torch.Tensor | None = None,
    mode: str = "outside",
    annotated_class: int = 1,
    lambda_g: float = 1.0,
) -> torch.Tensor:
    """The "right for the right reasons" term of Ross et al. (2017), the input-gradient baseline of guidance.

    Args:
        logits: ``[B, K]`` logits of any classifier, computed from ``inputs``.
        inputs: the input batch ``[B, C, *spatial]`` that requires gradients (:class:`GuidanceInferer` makes it so).
        labels, masks, eligible, mode, annotated_class, lambda_g: as for :func:`guidance_term`, with the same
            images counted; ``"outside"`` penalises input gradients outside the annotation (weight ``1 - m``),
            ``"avoid"`` inside the confounder mask (weight ``m``).

    With ``S = sum_b sum_k log p_bk`` (log-softmax; for one output, ``log s(z) + log s(-z)``) and its input
    gradient ``d = dS/dx``, image ``b`` gives ``g_b = sum_p w_bp sum_ch d_bch(p)^2 / sum_p w_bp`` (the mean
    over the penalised voxels of the squared gradient summed over the input channels; 0 where no voxel is
    penalised, e.g. an annotation covering the whole image in ``"outside"`` mode), and the term is
    ``lambda_g * mean_{counted b} g_b`` as in :func:`guidance_term`. It needs the gradient of a gradient
    (``create_graph=True``): a second backward pass through the network. In training mode batch
    normalisation couples the images of a batch; as in Ross et al.'s code, the gradient of the batch's sum
    is used.
    """
    _check_mode(mode)
    lambda_g = _check_lambda(lambda_g)
    if not inputs.requires_grad:
        raise ValueError("right_reasons_term needs logits computed from inputs that require gradients")
    batch = inputs.shape[0]
    masks = _check_masks(masks, batch, inputs.dim() - 2).to(device=inputs.device, dtype=inputs.dtype)
    if logits.shape[1] == 1:
        log_probs = F.logsigmoid(logits) + F.logsigmoid(-logits)
    else:
        log_probs = F.log_softmax(logits, dim=1)
    (gradient,) = torch.autograd.grad(log_probs.sum(), inputs, create_graph=True)
    weights = masks if mode == "avoid" else 1 - masks
    penalised = weights.flatten(1).sum(dim=1)
    per_image = (gradient.pow(2).sum(dim=1) * weights).flatten(1).sum(dim=1)
    per_image = per_image / torch.where(penalised > 0, penalised, torch.ones_like(penalised))
    counted = _counted(eligible, masks, labels, mode, annotated_class, batch)
    total = torch.where(counted, per_image, torch.zeros_like(per_image)).sum()
    return lambda_g * total / counted.sum().clamp(min=1).to(total.dtype)


class GuidanceInferer(Inferer):
    """The training inferer of a guided run: it gives the loss what ``guidance``'s method needs.

    * inactive guidance (``None``, or lambda 0): the network's output, as MONAI's ``SimpleInferer``;
    * ``"evidence"``: a SoftCAM network's output (its maps); a black box's logits and class activation maps
      (:func:`black_box_cam`);
    * ``"input_gradients"``: ``{"logits", "evidence_maps" (if any), "inputs"}``, with ``inputs`` a copy of the
      batch that requires gradients, so the loss can differentiate the logits with respect to it.
    """

    def __init__(self, guidance: EvidenceGuidance | Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(guidance, EvidenceGuidance):
            guidance = EvidenceGuidance.from_settings(guidance)
        self.guidance = guidance

    def __call__(self, inputs: torch.Tensor, network: Any, *args: Any, **kwargs: Any) -> Any:
        """The network's output for ``inputs``, in the form the guidance term reads."""
        if not self.guidance.active:
            return network(inputs, *args, **kwargs)
        if self.guidance.method == "input_gradients":
            x = inputs.as_subclass(torch.Tensor).detach().requires_grad_(True)
            logits, maps = split_output(network(x, *args, **kwargs))
            output = {LOGITS: logits, INPUTS: x}
            return output if maps is None else {**output, EVIDENCE_MAPS: maps}
        if isinstance(getattr(network, "module", network), BlackBox):
            return black_box_cam(network, inputs)
        return network(inputs, *args, **kwargs)


def prepare_guided_batch(
    batchdata: Mapping[str, Any], device: Any = None, non_blocking: bool = False, **kwargs: Any
) -> tuple[torch.Tensor, Any]:
    """The trainer's ``prepare_batch`` of a guided run: ``(image, {"label", "mask"})`` on ``device`` when the batch
    holds masks (:func:`guided_datalist`'s items), else ``(image, label)`` as MONAI's default."""

    def move(value: Any) -> torch.Tensor:
        return torch.as_tensor(value).to(device=device, non_blocking=non_blocking, **kwargs)

    image, label = move(batchdata["image"]), move(batchdata["label"])
    if "mask" not in batchdata:
        return image, label
    return image, {"label": label, "mask": move(batchdata["mask"])}


def _csv_columns(path: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return next(csv.reader(f), [])


def guided_datalist(splits: SplitLists, settings: Mapping[str, Any] | None, seed: int | None = 0) -> list[dict]:
    """The training split's items for a run with ``guidance`` ``settings`` (``train.yaml``'s section).

    Without guidance (lambda 0) the items carry no annotations (``splits.datalist("train", annotations=False)``).
    With it, the annotations come from ``settings["mask_column"]`` (the CSV column of mask files: a lesion
    mask for ``"outside"``, a confounder mask for ``"avoid"``; the spec's boxes are then left out) or, when that
    is null, from the data spec's own masks and boxes. The **eligible** items are those with an annotation
    (and, in ``"outside"`` mode, of ``annotated_class``); :func:`guidance_subset` draws ``fraction`` of them
    with the run's ``seed``. Those keep their annotation; every other item gets an empty mask (no boxes), which
    the term does not count. The numbers are logged.

    Raises:
        ConfigError: naming ``guidance#mask_column`` when there is nothing to guide with: no annotation
            source, a column the training CSV does not have, or no eligible item in it.
    """
    settings = dict(settings or {})
    guidance = EvidenceGuidance.from_settings(settings)
    if not guidance.active:
        return splits.datalist("train", annotations=False)
    spec, column = splits.spec, settings.get("mask_column")
    asked = f"guidance (guidance#lambda {guidance.lambda_g:g}, mode {guidance.mode!r})"
    if column:
        path = spec.csv_path("train", splits.dataset_dir)
        columns = _csv_columns(path) if os.path.isfile(path) else None
        if columns is not None and column not in columns:
            raise ConfigError(
                f"guidance#mask_column: {asked} needs the annotation column {column!r}, which {path} does not "
                f"have; its columns are {columns}"
            )
        spec = dataclasses.replace(spec, mask_column=column, box_columns=None, boxes_csv=None)
    elif not spec.has_annotations:
        raise ConfigError(
            f"guidance#mask_column: {asked} needs annotations, and none is set: give guidance#mask_column (the "
            "training CSV's column of mask files), or data#mask_column / data#box_columns"
        )
    items = dataclasses.replace(splits, spec=spec).datalist("train", annotations=True)
    eligible = [
        item["image"]
        for item in items
        if ("mask" in item or item.get("boxes"))
        and (guidance.mode == "avoid" or item.get("label") == guidance.annotated_class)
    ]
    fraction = float(settings.get("fraction", 1.0))
    chosen = guidance_subset(eligible, fraction, 0 if seed is None else int(seed))
    if not chosen:
        whose = "training image" if guidance.mode == "avoid" else f"training image of class {guidance.annotated_class}"
        raise ConfigError(
            f"guidance#mask_column: {asked} has nothing to guide with: no {whose} carries an annotation in "
            f"{spec.annotation_source(splits.dataset_dir)} (or guidance#fraction is 0)"
        )
    for item in items:  # every item has "boxes" (the spec has annotations), so every item gets a mask
        if item["image"] not in chosen:
            item.pop("mask", None)
            item["boxes"] = []
    logger.info(
        "guidance: the annotations of %d of the %d eligible training images (guidance#fraction %g, seed %s) from %s",
        len(chosen),
        len(eligible),
        fraction,
        seed,
        spec.annotation_source(splits.dataset_dir),
    )
    return items


def _rank_key(seed: int, item: Hashable) -> bytes:
    return hashlib.sha256(f"{seed}\0{item!r}".encode()).digest()


def guidance_subset(item_ids: Iterable[Hashable], fraction: float, seed: int = 0) -> set:
    """The annotated training items whose annotations guidance uses: a seeded subset fixed for the run.

    Args:
        item_ids: the ids of the eligible training items (those with a non-empty annotation), e.g. their
            image paths; duplicates count once.
        fraction: the share to use, in [0, 1] (the ``guidance#fraction`` setting).
        seed: the run's seed.

    ``round(fraction * n)`` items (half up), at least one when ``fraction > 0`` and any item is given;
    0 gives none, 1 all. Items are ranked by a SHA-256 hash of ``(seed, repr(id))``, so the subset depends
    only on the ids, the seed and the fraction (not on their order, the process or the Python version),
    and a larger fraction keeps every item of a smaller one (nested subsets for a fraction sweep).

    Example::

        >>> sorted(guidance_subset(range(10), 0.3, seed=0)) == sorted(guidance_subset(reversed(range(10)), 0.3))
        True
    """
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not math.isfinite(fraction)
        or not 0 <= fraction <= 1
    ):
        raise ValueError(f"guidance#fraction must be a number in [0, 1], got {fraction!r}")
    items = list(dict.fromkeys(item_ids))
    if fraction == 0 or not items:
        return set()
    count = max(1, math.floor(fraction * len(items) + 0.5))
    ranked = sorted(items, key=lambda item: _rank_key(int(seed), item))
    return set(ranked[:count])
