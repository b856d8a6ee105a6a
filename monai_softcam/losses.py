"""The SoftCAM loss: cross-entropy on the logits plus an ElasticNet penalty on the evidence maps (and, in a guided
run, the guidance term of :mod:`monai_softcam.guidance`)."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from .guidance import EvidenceGuidance
from .networks.outputs import split_output

__all__ = ["EvidencePenalty", "PENALTY_PRESETS", "SoftCAMLoss"]

#: Starting points from the paper (ResNet-50 values; the paper tuned them per dataset/backbone on
#: validation data, e.g. Lasso 5e-5 fundus, 9e-4 OCT; Ridge 7e-5 ResNet, 2e-4 VGG).
PENALTY_PRESETS: dict[str, dict[str, float]] = {
    "none": {"lambda1": 0.0, "lambda2": 0.0},
    "dense": {"lambda1": 0.0, "lambda2": 7e-5},  # ridge: more complete maps
    "sparse": {"lambda1": 5e-5, "lambda2": 0.0},  # lasso: few, focused regions
}


class EvidencePenalty(nn.Module):
    r"""ElasticNet penalty on class-evidence maps, as the paper defines it, applied to EVERY sample of the batch.

    For evidence maps :math:`A \in \mathbb{R}^{B \times C \times N}` (``N`` spatial positions):

    .. math::

        P(A) = \frac{1}{B} \sum_{b=1}^{B} \Big( \lambda_1 \sum_{c,n} |A_{bcn}|
               + \lambda_2 \, R_b \Big), \qquad
        R_b = \sqrt{\sum_{c,n} A_{bcn}^2} \ \ (\text{default}) \quad\text{or}\quad
        R_b = \sum_{c,n} A_{bcn}^2 \ \ (\text{squared\_l2=True})

    i.e. the per-sample L1 norm and L2 norm (unsquared, as in the reference's ``train.py``) over all classes
    and positions, averaged over the batch. The reference adds ``lambda1 * ||A_0||_1 + lambda2 * ||A_0||_2``
    of the first image of each batch only (``activations[0]``); the batch mean of every sample's term equals
    that in expectation over the batches, with less noise, and does not depend on the batch size, so the
    paper's lambdas carry over unchanged. ``squared_l2=True`` (the ridge form) is on another scale: its
    gradient is ``2 ||A_b||_2`` times the unsquared one, so the paper's lambda2 would penalise far more.

    Args:
        lambda1: weight of the L1 (lasso, sparsity) term, >= 0.
        lambda2: weight of the L2 (density) term, >= 0.
        squared_l2: use the squared L2 norm (ridge) rather than the paper's plain norm.

    Presets: ``EvidencePenalty.preset("dense")`` (lambda2 = 7e-5, the paper's ResNet value),
    ``EvidencePenalty.preset("sparse")`` (lambda1 = 5e-5), ``"none"``.

    Example::

        >>> import torch
        >>> EvidencePenalty(lambda1=1.0)(torch.ones(2, 3, 4, 4))
        tensor(48.)
    """

    def __init__(self, lambda1: float = 0.0, lambda2: float = 0.0, squared_l2: bool = False) -> None:
        super().__init__()
        for name, value in (("lambda1", lambda1), ("lambda2", lambda2)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        self.lambda1 = float(lambda1)
        self.lambda2 = float(lambda2)
        self.squared_l2 = squared_l2

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "EvidencePenalty":
        """Build from a named preset (``"dense"``, ``"sparse"``, ``"none"``), optionally overriding lambdas."""
        if name not in PENALTY_PRESETS:
            raise ValueError(f"penalty preset must be one of {sorted(PENALTY_PRESETS)}, got {name!r}")
        return cls(**{**PENALTY_PRESETS[name], **overrides})

    @property
    def active(self) -> bool:
        return self.lambda1 > 0 or self.lambda2 > 0

    def forward(self, evidence_maps: torch.Tensor) -> torch.Tensor:
        """Batch mean of ``lambda1 * L1 + lambda2 * L2`` (L2 squared if ``squared_l2``) of each sample's evidence maps."""
        flat = evidence_maps.flatten(1)  # [B, C * N]
        total = flat.new_zeros(flat.shape[0])
        if self.lambda1 > 0:
            total = total + self.lambda1 * flat.abs().sum(dim=1)
        if self.lambda2 > 0:
            squares = flat.pow(2).sum(dim=1)
            total = total + self.lambda2 * (squares if self.squared_l2 else squares.sqrt())
        return total.mean()

    def extra_repr(self) -> str:
        """The lambdas and ``squared_l2``, for the module's repr."""
        return f"lambda1={self.lambda1}, lambda2={self.lambda2}, squared_l2={self.squared_l2}"


def _class_indices(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    if target.dim() == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.dim() != 1:
        raise ValueError(
            f"target must hold one class index per sample ([B] or [B, 1]), got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() and not torch.equal(target, target.round()):
        raise ValueError("target must hold integer class indices, got fractional values")
    target = target.long()
    bad = target[(target < 0) | (target >= max(num_classes, 2))]
    if bad.numel():
        allowed = f"0..{max(num_classes, 2) - 1}"
        raise ValueError(f"target has labels {sorted(set(bad.tolist()))} outside the classes {allowed}")
    return target


class SoftCAMLoss(nn.Module):
    """Cross-entropy on the logits + :class:`EvidencePenalty` on the evidence maps of the same forward pass.

    Args:
        lambda1: L1 weight of the evidence penalty (ignored when ``preset`` is given, unless overriding).
        lambda2: L2 weight of the evidence penalty.
        preset: optional penalty preset name (``"dense"``, ``"sparse"``, ``"none"``); explicit non-zero
            ``lambda1``/``lambda2`` override the preset's values.
        squared_l2: see :class:`EvidencePenalty`.
        class_weights: optional per-class weights for the cross-entropy.
        label_smoothing: cross-entropy label smoothing.
        guidance: evidence guidance (:class:`~monai_softcam.guidance.EvidenceGuidance`, or a config's
            ``guidance`` section for :meth:`~monai_softcam.guidance.EvidenceGuidance.from_settings`); None or
            lambda 0: none.

    ``forward(output, target)`` takes the model output (the ``{"logits", "evidence_maps"}`` dict of a
    :class:`~monai_softcam.networks.softcam.SoftCAM` built with ``return_maps=True``, a ``(logits, maps)``
    tuple, or logits alone when the penalty is zero) and integer class targets ``[B]`` or ``[B, 1]`` (with
    guidance: ``{"label": those, "mask": [B, 1, *spatial] annotations}``, as
    :func:`~monai_softcam.guidance.prepare_guided_batch` makes them). With one output class it uses binary
    cross-entropy on that logit. :meth:`terms` gives the terms apart; :meth:`forward` keeps the last batch's
    (detached) in ``last_terms``, which :class:`~monai_softcam.handlers.training.LossTermsLogger` logs.

    Example::

        >>> import torch
        >>> loss = SoftCAMLoss(preset="sparse")
        >>> maps = torch.zeros(4, 2, 8, 8, requires_grad=True)
        >>> out = {"logits": maps.mean((2, 3)), "evidence_maps": maps}
        >>> round(loss(out, torch.tensor([0, 1, 1, 0])).item(), 4)
        0.6931
    """

    def __init__(
        self,
        lambda1: float = 0.0,
        lambda2: float = 0.0,
        preset: str | None = None,
        squared_l2: bool = False,
        class_weights: list[float] | torch.Tensor | None = None,
        label_smoothing: float = 0.0,
        guidance: EvidenceGuidance | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        overrides = {k: v for k, v in (("lambda1", lambda1), ("lambda2", lambda2)) if v}
        if preset is not None:
            self.penalty = EvidencePenalty.preset(preset, squared_l2=squared_l2, **overrides)
        else:
            self.penalty = EvidencePenalty(lambda1, lambda2, squared_l2)
        weights = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_smoothing = label_smoothing
        self.guidance = guidance if isinstance(guidance, EvidenceGuidance) else EvidenceGuidance.from_settings(guidance)
        self.last_terms: dict[str, torch.Tensor] = {}

    def terms(self, output: Any, target: Any) -> dict[str, torch.Tensor]:
        """The loss's terms, ``{"ce": cross-entropy (binary for one class), "penalty": the evidence penalty (0 when
        inactive)}``, with ``"guidance"`` when guidance is active; :meth:`forward` is their sum."""
        logits, maps = split_output(output)
        masks = None
        if isinstance(target, Mapping):
            target, masks = target["label"], target.get("mask")
        target = _class_indices(torch.as_tensor(target, device=logits.device), logits.shape[1])
        terms = self._fit_terms(logits, maps, target)
        if self.guidance.active:
            if masks is None:
                raise ValueError(
                    f"SoftCAMLoss has guidance ({self.guidance.extra_repr()}) but the target holds no masks: the "
                    "training batches must carry the annotations, as {'label': ..., 'mask': ...} "
                    "(monai_softcam.guidance.guided_datalist and prepare_guided_batch)"
                )
            terms["guidance"] = self.guidance(output, target, masks)
        return terms

    def _fit_terms(
        self, logits: torch.Tensor, maps: torch.Tensor | None, target: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        if logits.shape[1] == 1:
            ce = F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))
        else:
            ce = F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=self.label_smoothing)
        if not self.penalty.active:
            return {"ce": ce, "penalty": torch.zeros_like(ce)}
        if maps is None:
            raise ValueError(
                "SoftCAMLoss has a non-zero evidence penalty but the model output has no evidence maps: "
                "build the SoftCAM network with return_maps=True"
            )
        return {"ce": ce, "penalty": self.penalty(maps)}

    def forward(self, output: Any, target: Any) -> torch.Tensor:
        """Cross-entropy (binary for one class) plus the evidence penalty, plus guidance when active (:meth:`terms`)."""
        terms = self.terms(output, target)
        self.last_terms = {name: value.detach() for name, value in terms.items()}
        return sum(terms.values())  # type: ignore[return-value]
