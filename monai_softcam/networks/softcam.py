"""SoftCAM networks and their black-box counterparts.

SoftCAM (Djoumessi & Berens, MIDL 2026) replaces global pooling + fully connected layer with a
1x1 convolution that emits one *evidence map* per class; the class logit is that map's spatial
mean. The explanation is therefore the decision itself, computed in the same forward pass.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

from .backbones import Backbone, build_backbone, check_spatial_dims
from .outputs import EVIDENCE_MAPS, LOGITS
from .pretrained import load_pretrained_backbone
from .vgg import CLASSIC_POOL_SIZE, VGGFeatures, classic_pool, vgg_classifier, vgg_fc_settings

__all__ = ["BLACK_BOX_HEADS", "BlackBox", "EvidenceHead", "SoftCAM", "LOGITS", "EVIDENCE_MAPS"]


def _check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return num_classes


class EvidenceHead(nn.Module):
    """The class-evidence layer: a 1x1 convolution giving one map per class, and its spatial mean.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the feature map it reads.
        num_classes: number of evidence maps (one per class).

    ``forward(features)`` returns ``(logits [B, C], evidence_maps [B, C, *spatial])`` with
    ``logits[b, c] == evidence_maps[b, c].mean()`` (completeness).
    """

    def __init__(self, spatial_dims: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.evidence = Conv[Conv.CONV, spatial_dims](in_channels, num_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, evidence_maps)``: the 1x1 convolution's maps and their spatial means."""
        maps = self.evidence(features)
        logits = maps.flatten(2).mean(dim=2)
        return logits, maps


def _format_shape(shape: list[int]) -> str:
    """``(1, 3, 64)`` as Python prints a tuple, in TorchScript too (where a shape is a list)."""
    inner = ", ".join([str(s) for s in shape])
    return "(" + inner + ("," if len(shape) == 1 else "") + ")"


class _Classifier(nn.Module):
    """Shared construction and input checks of :class:`SoftCAM` and :class:`BlackBox`.

    ``forward`` checks its input first (also after ``torch.jit.script``): the number of dimensions
    and of channels, and that every spatial size reaches the backbone's ``min_input_size`` (for the
    registered backbones their output stride: one cell of the output grid); a ValueError names what
    was expected and what came. In a TorchScript model the same message arrives as a
    ``torch.jit.Error`` whose text contains ``builtins.ValueError: <message>``.
    """

    def __init__(
        self,
        backbone: str,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        pretrained: str | None,
        backbone_kwargs: dict[str, Any] | None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.num_classes = _check_num_classes(num_classes)
        self.backbone: Backbone = build_backbone(backbone, spatial_dims, in_channels, **(backbone_kwargs or {}))
        self.in_channels = in_channels
        self.backbone_name = self.backbone.name
        # what the input checks need, as plain attributes so that forward stays scriptable
        self._description = (
            f"{type(self).__name__}({self.backbone_name}, spatial_dims={self.spatial_dims}, in_channels={in_channels})"
        )
        self._expected_shape = "[" + ", ".join(["B", str(in_channels)] + ["H", "W", "D"][: self.spatial_dims]) + "]"
        self._min_size: list[int] = self.backbone.min_input_shape()
        if pretrained:
            load_pretrained_backbone(self.backbone, pretrained)

    def _check_input(self, x: torch.Tensor) -> None:
        ndim = self.spatial_dims + 2
        if x.dim() != ndim or x.shape[1] != self.in_channels:
            problem = f"{x.dim()} dimensions, expected {ndim}"
            if x.dim() == ndim:
                problem = f"{x.shape[1]} input channels, expected {self.in_channels}"
            raise ValueError(
                f"{self._description} expects input x of shape {self._expected_shape} ({ndim} dimensions), "
                f"got {_format_shape(list(x.shape))}: {problem}"
            )
        spatial = list(x.shape[2:])
        too_small = False
        for i in range(len(spatial)):  # (TorchScript has no zip(strict=...))
            if spatial[i] < self._min_size[i]:
                too_small = True
        if too_small:
            if min(self._min_size) == max(self._min_size):
                needed = f"every spatial size must be >= {self._min_size[0]}"
            else:
                needed = f"the spatial sizes must be >= {_format_shape(self._min_size)}"
            raise ValueError(
                f"input x is too small for {self.backbone_name}: {needed}, got {_format_shape(spatial)} "
                f"(the backbone's minimum: one cell of its output grid)"
            )


class SoftCAM(_Classifier):
    """A self-explaining classifier: backbone -> class-evidence layer -> spatial mean.

    Args:
        backbone: a registered backbone name (see :func:`~monai_softcam.networks.backbones.available_backbones`).
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        num_classes: number of classes (>= 1).
        pretrained: optional path to a LOCAL weight file for the backbone (torchvision ImageNet
            format or MONAI format); the evidence layer is always initialised fresh.
        return_maps: when False (default) ``forward`` returns the logits ``[B, C]`` only, so the
            model is a plain classifier wherever MONAI expects one; when True it returns
            ``{"logits": [B, C], "evidence_maps": [B, C, *spatial]}`` from the same forward pass.
        maps_only: ``forward`` returns the evidence maps ``[B, C, *spatial]`` alone, one tensor whose
            spatial mean is the logits (what the Model Zoo's checks and a TorchScript export see;
            :class:`~monai_softcam.networks.outputs.EvidenceOutputs` turns it back into the dict).
            Overrides ``return_maps``.
        backbone_kwargs: architecture options for the backbone builder.

    The logits are exactly the spatial means of the evidence maps (completeness); the maps are
    signed (positive evidence argues for the class) and must not be ReLU'd or rescaled except
    for display.

    Example::

        >>> import torch
        >>> net = SoftCAM("resnet50", spatial_dims=2, in_channels=3, num_classes=2, return_maps=True)
        >>> out = net(torch.zeros(1, 3, 512, 512))
        >>> out["evidence_maps"].shape
        torch.Size([1, 2, 16, 16])
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        pretrained: str | None = None,
        return_maps: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        maps_only: bool = False,
    ) -> None:
        super().__init__(backbone, spatial_dims, in_channels, num_classes, pretrained, backbone_kwargs)
        self.head = EvidenceHead(self.spatial_dims, self.backbone.out_channels, self.num_classes)
        self.return_maps = return_maps
        self.maps_only = maps_only

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Check ``x``; the logits, the ``{"logits", "evidence_maps"}`` dict or the maps alone (see the class)."""
        self._check_input(x)
        logits, maps = self.head(self.backbone(x))
        if self.maps_only:
            return maps
        if self.return_maps:
            return {"logits": logits, "evidence_maps": maps}  # LOGITS, EVIDENCE_MAPS (TorchScript needs literals)
        return logits


#: the black-box heads, ``"classic"`` (VGG only) and ``"gap"``
BLACK_BOX_HEADS = ("classic", "gap")


class BlackBox(_Classifier):
    """The black-box counterpart of :class:`SoftCAM`: same trunk, a conventional classification head.

    Args:
        head: ``"gap"``: global average pooling -> the backbone's neck (VGG's FC6/FC7, applied to the
            pooled ``1x1`` map, i.e. as fully connected layers on 512 features; identity for the
            other backbones) -> linear layer ``fc``. ``"classic"`` (VGG backbones only): the head of
            torchvision's VGG and of the paper's reference black box: 7x7 adaptive average pool (7x7x7
            in 3D) -> flatten -> FC6 (``512 * 7**spatial_dims -> fc_width``) -> ReLU -> Dropout -> FC7
            (``fc_width -> fc_width``) -> ReLU -> Dropout -> FC8 ``fc`` (``fc_width -> num_classes``);
            the backbone's 1x1 neck is then removed (``backbone.neck`` is an identity and
            ``backbone.out_channels`` the trunk's 512). ``None`` (default): ``"classic"`` for a VGG
            backbone, ``"gap"`` for every other. ``fc_width`` and ``dropout`` are the VGG builder's
            ``backbone_kwargs``; in 3D at the default width FC6 alone holds 719 M weights. The pool is
            :class:`~monai_softcam.networks.vgg.AdaptiveAvgPool` (the values of
            ``nn.AdaptiveAvgPool2d/3d(7)``, and it exports to ONNX, also with free spatial axes).

    The other arguments are those of :class:`SoftCAM`.

    The modules are ``backbone.features`` (the trunk Grad-CAM reads), ``pool``, ``classifier``
    (FC6/FC7 of the classic head, an identity for ``"gap"``) and ``fc`` (the class layer). The
    classic head's keys ``classifier.0``/``classifier.3`` are torchvision's FC6/FC7 keys and ``fc``
    is torchvision's ``classifier.6`` (FC8). All of the head is initialised fresh, also with
    ``pretrained`` (which loads the trunk), as in the paper's reference code.

    A black box has no evidence maps (its explanations need a post-hoc method), so
    ``return_maps=True`` returns ``{"logits": [B, C]}``: the same output form as SoftCAM's, so that
    one workflow serves both.

    Example::

        >>> import torch
        >>> bb = BlackBox("vgg16", num_classes=2)
        >>> bb.head_type, bb.classifier[0].in_features
        ('classic', 25088)
        >>> bb(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        spatial_dims: int = 2,
        in_channels: int = 3,
        num_classes: int = 2,
        pretrained: str | None = None,
        return_maps: bool = False,
        backbone_kwargs: dict[str, Any] | None = None,
        maps_only: bool = False,  # accepted for one signature with SoftCAM: a black box has no maps
        head: str | None = None,
    ) -> None:
        super().__init__(backbone, spatial_dims, in_channels, num_classes, pretrained, backbone_kwargs)
        is_vgg = isinstance(self.backbone.features, VGGFeatures)
        if head is None:
            head = "classic" if is_vgg else "gap"
        if head not in BLACK_BOX_HEADS:
            raise ValueError(f"head must be one of {list(BLACK_BOX_HEADS)} or None, got {head!r}")
        if head == "classic" and not is_vgg:
            raise ValueError(
                f"head='classic' (7x7 pool + FC6/FC7/FC8) needs a VGG backbone, got {self.backbone_name!r}; "
                "use head='gap' (the default for it)"
            )
        self.head_type: str = head
        if head == "classic":
            trunk_channels, width, dropout = vgg_fc_settings(self.backbone.neck)
            # the 1x1 FC6/FC7 of SoftCAM's VGG are replaced by the fully connected ones below
            self.backbone.neck = nn.Identity()
            self.backbone.out_channels = trunk_channels
            self.pool: nn.Module = classic_pool(self.spatial_dims, CLASSIC_POOL_SIZE)
            # fc (FC8) before classifier (FC6/FC7): the children run from the output backwards, as
            # metrics.sanity.layer_groups expects
            self.fc = nn.Linear(width, self.num_classes)
            pooled_features = trunk_channels * CLASSIC_POOL_SIZE**self.spatial_dims  # 512 * 7 * 7 (* 7 in 3D)
            self.classifier: nn.Module = vgg_classifier(pooled_features, width, dropout)
        else:
            self.pool = Pool[Pool.ADAPTIVEAVG, self.spatial_dims](1)
            self.fc = nn.Linear(self.backbone.out_channels, self.num_classes)
            self.classifier = nn.Identity()
        self.return_maps = return_maps

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """Check ``x``; the logits of the conventional head (in a ``{"logits"}`` dict with ``return_maps``)."""
        self._check_input(x)
        pooled = self.pool(self.backbone.features(x))
        logits = self.fc(self.classifier(self.backbone.neck(pooled).flatten(1)))
        if self.return_maps:
            return {"logits": logits}  # LOGITS (TorchScript needs literals)
        return logits
