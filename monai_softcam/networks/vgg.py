"""VGG for 2D and 3D, written for this package (MONAI has no VGG).

The convolutional part follows Simonyan & Zisserman (2015), configurations A, B, D and E
(VGG-11/13/16/19), with optional batch normalisation. Layers are numbered exactly as in the
widely used torchvision ``features`` module, so a torchvision ImageNet ``state_dict`` maps onto
it key for key (see :mod:`monai_softcam.networks.pretrained`).

The fully connected FC6/FC7 layers are replaced, as in the SoftCAM paper, by two 1x1 convolutions
(:func:`~monai_softcam.networks.vgg.vgg_fc_block`) so that the network stays fully convolutional and keeps a
spatial grid up to the class-evidence layer. The black-box baseline keeps the classic head instead
(:func:`~monai_softcam.networks.vgg.vgg_classifier`: FC6/FC7 as fully connected layers on a 7x7 adaptive average
pool, as torchvision's VGG and the paper's reference code)."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm, Pool

__all__ = [
    "AdaptiveAvgPool",
    "CLASSIC_POOL_SIZE",
    "VGG_CONFIGS",
    "VGGFeatures",
    "classic_pool",
    "vgg_classifier",
    "vgg_fc_block",
    "vgg_fc_settings",
]

#: side of the adaptive average pool before the classic head's FC6 (7x7 in 2D, 7x7x7 in 3D)
CLASSIC_POOL_SIZE = 7

# "M" is a 2x2 max-pool; numbers are 3x3 convolution widths.
VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGGFeatures(nn.Sequential):
    """The convolutional trunk of VGG (output stride 32, 512 channels).

    Args:
        config: one of ``VGG_CONFIGS`` keys (``"vgg11"``, ``"vgg13"``, ``"vgg16"``, ``"vgg19"``).
        spatial_dims: 2 or 3.
        in_channels: number of input channels.
        batch_norm: insert batch normalisation after every convolution (the ``_bn`` variants).

    Example::

        >>> import torch
        >>> trunk = VGGFeatures("vgg16", spatial_dims=2, in_channels=3)
        >>> trunk(torch.zeros(1, 3, 496, 496)).shape
        torch.Size([1, 512, 15, 15])
    """

    def __init__(self, config: str, spatial_dims: int = 2, in_channels: int = 3, batch_norm: bool = False) -> None:
        if config not in VGG_CONFIGS:
            raise ValueError(f"config must be one of {sorted(VGG_CONFIGS)}, got {config!r}")
        conv_type = Conv[Conv.CONV, spatial_dims]
        pool_type = Pool[Pool.MAX, spatial_dims]
        norm_type = Norm[Norm.BATCH, spatial_dims]
        layers: list[nn.Module] = []
        channels = in_channels
        for width in VGG_CONFIGS[config]:
            if width == "M":
                layers.append(pool_type(kernel_size=2, stride=2))
                continue
            layers.append(conv_type(channels, width, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(norm_type(width))
            layers.append(nn.ReLU(inplace=True))
            channels = int(width)
        super().__init__(*layers)
        self.out_channels = channels
        for m in self.modules():
            if isinstance(m, conv_type):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, norm_type):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def vgg_fc_block(spatial_dims: int, in_channels: int = 512, width: int = 4096, dropout: float = 0.5) -> nn.Sequential:
    """FC6/FC7 of VGG as two 1x1 convolutions, each followed by ReLU and dropout (the paper's VGG head).

    Applied to a feature map it acts per location; applied to a globally pooled ``1x1`` map it is
    exactly a pair of fully connected layers on 512 features, which is how the black box with
    ``head="gap"`` uses it (the default VGG black box uses :func:`vgg_classifier` instead). The
    convolutions keep PyTorch's default initialisation, as the paper's reference builds them
    (``modules/models.py``: plain ``nn.Conv2d``), not torchvision's ``N(0, 0.01)`` of its linear FC6/FC7.
    """
    conv_type = Conv[Conv.CONV, spatial_dims]
    block = nn.Sequential(
        conv_type(in_channels, width, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        conv_type(width, width, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    return block


def vgg_fc_settings(block: nn.Module) -> tuple[int, int, float]:
    """``(in_channels, width, dropout)`` of a block built by :func:`vgg_fc_block` (a ValueError otherwise)."""
    layers = list(block.children()) if isinstance(block, nn.Sequential) else []
    if len(layers) != 6 or not isinstance(layers[0], (nn.Conv2d, nn.Conv3d)) or not isinstance(layers[2], nn.Dropout):
        raise ValueError(f"expected VGG's FC6/FC7 block (vgg_fc_block), got {type(block).__name__}")
    return int(layers[0].in_channels), int(layers[0].out_channels), float(layers[2].p)


def vgg_classifier(in_features: int, width: int = 4096, dropout: float = 0.5) -> nn.Sequential:
    """FC6/FC7 of the classic VGG head as fully connected layers: ``Linear -> ReLU -> Dropout`` twice.

    It reads the flattened ``7x7`` (3D: ``7x7x7``) adaptive average pool of the trunk, so
    ``in_features = 512 * 7**spatial_dims`` (25,088 in 2D, 175,616 in 3D: FC6 alone has
    ``in_features * width`` weights, 719 M in 3D at ``width=4096``). Module indices 0 and 3 are
    torchvision's ``classifier.0`` (FC6) and ``classifier.3`` (FC7); FC8, torchvision's
    ``classifier.6``, is the black box's class layer ``fc``. Initialised as torchvision's VGG:
    weights ``N(0, 0.01)``, zero biases.
    """
    block = nn.Sequential(
        nn.Linear(in_features, width),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(width, width),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    for m in block.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    return block


def _pool_matrix(n: int, size: int, like: torch.Tensor) -> torch.Tensor:
    """``[size, n]``: row ``i`` averages the cells ``floor(i n / size) <= j < ceil((i + 1) n / size)``,
    the window of PyTorch's adaptive average pool."""
    i = torch.arange(size, device=like.device).unsqueeze(1)
    j = torch.arange(n, device=like.device).unsqueeze(0)
    inside = (j >= (i * n) // size) & (j < ((i + 1) * n + size - 1) // size)
    weights = inside.to(like.dtype)
    return weights / weights.sum(dim=1, keepdim=True)


class AdaptiveAvgPool(nn.Module):
    """``nn.AdaptiveAvgPool2d(size)`` / ``nn.AdaptiveAvgPool3d(size)`` as one averaging matrix per axis.

    The same windows as PyTorch's adaptive pool (a box, one interval per axis, so the mean over it
    is the mean of the per-axis means); only the order of the float sums differs (~1e-7). Written so
    because PyTorch's ONNX exporter converts ``aten._adaptive_avg_pool3d`` only for an output of 1
    and the 2D one with a window fixed at the export's size (a model exported with free spatial axes
    can fail or differ at other sizes); matrix products export for any size.
    """

    def __init__(self, size: int, spatial_dims: int = 2) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        self.size = int(size)
        self.spatial_dims = int(spatial_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``x`` to ``size`` per spatial axis, one matrix product per axis."""
        s = self.size
        y = torch.matmul(x, _pool_matrix(x.shape[-1], s, x).t())  # last axis (W)
        y = torch.matmul(_pool_matrix(x.shape[-2], s, x), y)  # H
        if self.spatial_dims == 3:
            b, c, d = x.shape[0], x.shape[1], x.shape[2]
            y = torch.matmul(_pool_matrix(d, s, x), y.reshape(b, c, d, s * s)).reshape(b, c, s, s, s)  # D
        return y

    def extra_repr(self) -> str:
        """``size`` and ``spatial_dims``, for the module's repr."""
        return f"size={self.size}, spatial_dims={self.spatial_dims}"


def classic_pool(spatial_dims: int, size: int = CLASSIC_POOL_SIZE) -> nn.Module:
    """The classic VGG head's adaptive average pool: ``size x size`` in 2D, ``size x size x size`` in 3D
    (:class:`AdaptiveAvgPool`: torchvision's ``nn.AdaptiveAvgPool2d(7)`` values, and it exports to ONNX)."""
    return AdaptiveAvgPool(size, spatial_dims)
