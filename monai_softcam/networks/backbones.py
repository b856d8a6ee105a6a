"""Registry of convolutional backbones (feature extractors) for SoftCAM and its black-box twin.

Every backbone is built for ``spatial_dims`` 2 or 3 and any number of input channels, and ends
on its last convolutional stage (output stride 32 with the defaults), with the global pooling
and classifier of the original network removed. The trunks are MONAI networks (ResNet,
DenseNet, SE-ResNet, EfficientNet) plus a VGG written in this package.

The state-dict keys of a trunk equal those of the MONAI network it was cut from (and, for
ResNet and VGG, those of torchvision), so weights trained elsewhere load without renaming; see
:mod:`monai_softcam.networks.pretrained`.

Example::

    >>> from monai_softcam.networks import build_backbone, available_backbones
    >>> "resnet50" in available_backbones()
    True
    >>> bb = build_backbone("resnet50", spatial_dims=3, in_channels=1)
    >>> bb.out_channels
    2048
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
from monai.networks.nets import DenseNet, EfficientNetBN, ResNet, SEResNet50
from monai.networks.nets.resnet import ResNetBlock, ResNetBottleneck, get_inplanes
from monai.utils import ensure_tuple_rep

from .vgg import VGGFeatures, vgg_fc_block

__all__ = [
    "Backbone",
    "BackboneSpec",
    "available_backbones",
    "build_backbone",
    "check_spatial_dims",
    "get_backbone_spec",
    "register_backbone",
]


class Backbone(nn.Module):
    """A feature extractor: ``features`` (convolutional trunk) followed by ``neck`` (identity except for VGG).

    Args:
        features: the convolutional trunk, output ``[B, F, *spatial]``.
        out_channels: number of channels after ``neck`` (what a classification head sees).
        neck: optional per-location layers between trunk and head (VGG's FC6/FC7 as 1x1 convs).
        name: registry name, kept for error messages and checkpoints.
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        min_input_size: smallest spatial size the trunk accepts, one number for every axis or one
            per axis. The registered backbones use their output stride (32 with the defaults): a
            smaller input would give an empty output grid (VGG, DenseNet) or one cell that sees mostly
            padding.
    """

    def __init__(
        self,
        features: nn.Module,
        out_channels: int,
        neck: nn.Module | None = None,
        name: str = "",
        spatial_dims: int = 2,
        in_channels: int = 3,
        min_input_size: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        self.features = features
        self.neck = neck if neck is not None else nn.Identity()
        self.out_channels = int(out_channels)
        self.name = name
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.min_input_size = min_input_size

    def min_input_shape(self) -> list[int]:
        """``min_input_size`` as one integer per spatial axis (a ValueError if it has another length)."""
        sizes = [int(s) for s in ensure_tuple_rep(self.min_input_size, self.spatial_dims)]
        if any(s < 1 for s in sizes):
            raise ValueError(
                f"min_input_size of backbone {self.name!r} must be >= 1 per axis, got {self.min_input_size!r}"
            )
        return sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[B, out_channels, *grid]``: ``neck(features(x))``."""
        return self.neck(self.features(x))


@dataclass(frozen=True)
class BackboneSpec:
    """How to build one registered backbone.

    Attributes:
        name: registry key, e.g. ``"resnet50"``.
        builder: ``builder(spatial_dims, in_channels, **kwargs) -> Backbone``.
        description: one line for listings.
    """

    name: str
    builder: Callable[..., Backbone]
    description: str = ""


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(name: str, builder: Callable[..., Backbone], description: str = "") -> None:
    """Add a backbone to the registry (e.g. a user's own trunk). Names are case-insensitive."""
    key = name.lower()
    if key in _REGISTRY:
        raise ValueError(f"backbone {name!r} is already registered")
    _REGISTRY[key] = BackboneSpec(key, builder, description)


def available_backbones() -> list[str]:
    """Names accepted by :func:`build_backbone`, sorted."""
    return sorted(_REGISTRY)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look up a registered backbone; a ValueError lists the allowed names for an unknown one."""
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise ValueError(f"backbone must be one of {available_backbones()}, got {name!r}")
    return _REGISTRY[name.lower()]


def check_spatial_dims(spatial_dims: Any) -> int:
    """Return ``spatial_dims`` if it is 2 or 3, else raise a ValueError naming the allowed values."""
    if isinstance(spatial_dims, bool) or spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def _check_in_channels(in_channels: Any) -> int:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be an integer >= 1, got {in_channels!r}")
    return in_channels


def build_backbone(name: str, spatial_dims: int = 2, in_channels: int = 3, **kwargs: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: one of :func:`available_backbones`.
        spatial_dims: 2 or 3.
        in_channels: number of input channels (>= 1).
        kwargs: architecture options passed to the builder (e.g. ``widen_factor`` or
            ``conv1_t_stride`` for ResNet, ``dropout`` for VGG's FC6/FC7).
    """
    spec = get_backbone_spec(name)
    spatial_dims = check_spatial_dims(spatial_dims)
    in_channels = _check_in_channels(in_channels)
    backbone = spec.builder(spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
    backbone.name = spec.name
    backbone.spatial_dims, backbone.in_channels = spatial_dims, in_channels
    return backbone


# ----------------------------------------------------------------------------------------------
# builders


def _resnet_builder(block: type, layers: list[int]) -> Callable[..., Backbone]:
    def build(
        spatial_dims: int,
        in_channels: int,
        conv1_t_stride: int | Sequence[int] = 2,
        no_max_pool: bool = False,
        widen_factor: float = 1.0,
    ) -> Backbone:
        # conv1_t_stride=2 + max-pool gives output stride 32 as in torchvision (MONAI defaults to 1, i.e. 16);
        # bias_downsample=False matches torchvision's downsample convolution so ImageNet weights load.
        net = ResNet(
            block,
            layers,
            get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            widen_factor=widen_factor,
            feed_forward=False,
            bias_downsample=False,
        )
        stem = [("conv1", net.conv1), ("bn1", net.bn1), ("act", net.act)]
        if not no_max_pool:
            stem.append(("maxpool", net.maxpool))
        stages = [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, 5)]
        features = nn.Sequential(OrderedDict(stem + stages))
        out_channels = int(get_inplanes()[3] * widen_factor) * block.expansion
        # output stride: first convolution x max-pool (2) x layers 2-4 (2 each)
        stride = [int(s) * (1 if no_max_pool else 2) * 8 for s in ensure_tuple_rep(conv1_t_stride, spatial_dims)]
        return Backbone(features, out_channels, min_input_size=stride)

    return build


def _densenet_builder(block_config: tuple[int, ...], growth_rate: int = 32, init_features: int = 64):
    def build(spatial_dims: int, in_channels: int, dropout_prob: float = 0.0) -> Backbone:
        net = DenseNet(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=1,
            init_features=init_features,
            growth_rate=growth_rate,
            block_config=block_config,
            dropout_prob=dropout_prob,
        )
        features = net.features
        # the trunk ends on a batch norm; the original network applies ReLU before pooling, so do we
        features.add_module("relu5", nn.ReLU(inplace=True))
        # output stride 32 (the trunk itself needs 29 px: three 2x2 average pools after a stride-4 stem)
        return Backbone(features, net.class_layers.out.in_features, min_input_size=32)

    return build


def _seresnet50_builder(spatial_dims: int, in_channels: int) -> Backbone:
    net = SEResNet50(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1)
    features = nn.Sequential(OrderedDict((f"layer{i}", getattr(net, f"layer{i}")) for i in range(5)))
    return Backbone(features, net.last_linear.in_features, min_input_size=32)  # output stride 32


def _efficientnet_builder(model_name: str) -> Callable[..., Backbone]:
    def build(spatial_dims: int, in_channels: int) -> Backbone:
        net = EfficientNetBN(
            model_name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=1
        )
        # MONAI's own attribute names, so MONAI EfficientNet state dicts load as they are
        features = nn.Sequential(
            OrderedDict(
                [
                    ("_conv_stem_padding", net._conv_stem_padding),
                    ("_conv_stem", net._conv_stem),
                    ("_bn0", net._bn0),
                    ("_swish0", net._swish),
                    ("_blocks", net._blocks),
                    ("_conv_head_padding", net._conv_head_padding),
                    ("_conv_head", net._conv_head),
                    ("_bn1", net._bn1),
                    ("_swish1", net._swish),
                ]
            )
        )
        return Backbone(features, net._conv_head.out_channels, min_input_size=32)  # output stride 32

    return build


def _vgg_builder(config: str, batch_norm: bool) -> Callable[..., Backbone]:
    def build(spatial_dims: int, in_channels: int, fc_width: int = 4096, dropout: float = 0.5) -> Backbone:
        features = VGGFeatures(config, spatial_dims=spatial_dims, in_channels=in_channels, batch_norm=batch_norm)
        neck = vgg_fc_block(spatial_dims, features.out_channels, width=fc_width, dropout=dropout)
        # output stride 32; five 2x2 max-pools leave an empty grid below 32 px
        return Backbone(features, fc_width, neck=neck, min_input_size=32)

    return build


_RESNETS = {
    "resnet10": (ResNetBlock, [1, 1, 1, 1]),
    "resnet18": (ResNetBlock, [2, 2, 2, 2]),
    "resnet34": (ResNetBlock, [3, 4, 6, 3]),
    "resnet50": (ResNetBottleneck, [3, 4, 6, 3]),
    "resnet101": (ResNetBottleneck, [3, 4, 23, 3]),
    "resnet152": (ResNetBottleneck, [3, 8, 36, 3]),
}
for _name, (_block, _layers) in _RESNETS.items():
    register_backbone(_name, _resnet_builder(_block, _layers), f"MONAI ResNet ({_name}), stride 32")

_DENSENETS = {"densenet121": (6, 12, 24, 16), "densenet169": (6, 12, 32, 32), "densenet201": (6, 12, 48, 32)}
for _name, _cfg in _DENSENETS.items():
    register_backbone(_name, _densenet_builder(_cfg), f"MONAI DenseNet ({_name}), stride 32")

register_backbone("seresnet50", _seresnet50_builder, "MONAI SE-ResNet-50, stride 32")

for _i in range(5):
    _name = f"efficientnet-b{_i}"
    register_backbone(_name, _efficientnet_builder(_name), f"MONAI EfficientNet-B{_i}, stride 32")

for _cfg_name in ("vgg11", "vgg13", "vgg16", "vgg19"):
    for _bn in (False, True):
        _name = _cfg_name + ("_bn" if _bn else "")
        register_backbone(_name, _vgg_builder(_cfg_name, _bn), f"VGG ({_name}) with 1x1 FC6/FC7, stride 32")
